"""HLS and Apple Low-Latency HLS playback of live streams, at WCS's URL
``http://HOST:hls_port/<stream>/<stream>.m3u8`` (RFC 8216bis).

A stream is muxed only while someone plays it: the first playlist request
starts its ``HlsMuxer``, and ``hls_idle_timeout_s`` without a request stops
it. The muxer takes the stream's frames in batches (like recordings and RTMP
relays), copies H.264, encodes the audio to AAC with ``AvWriter`` and cuts
CMAF parts of about ``hls_part_s`` and segments of about ``hls_segment_s``
that start with a keyframe, which it asks the far end for. The playlist is
written here: ``EXT-X-PART``, ``EXT-X-PRELOAD-HINT``, blocking reloads
(``_HLS_msn``/``_HLS_part``), ``EXT-X-PROGRAM-DATE-TIME``. The last
``hls_segments`` segments are kept in memory (and in ``hls_dir`` when set,
for a web server of your own); the end of the stream writes
``EXT-X-ENDLIST``, kept a little while for players to see."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import fractions
import hmac
import io
import logging
import math
import os
import re
import secrets
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
from aiohttp import web

from ..api import auth
from ..api.limits import LimitedRunner
from ..media.stream import MediaFrame, Stream
from ..settings import Settings
from ..tls import server_context
from .cmaf import AudioTrack, Part, Segmenter, Track, VideoTrack, avcc_sample, init_segment, parameter_sets
from .mux import (
    AUDIO_DECODERS,
    BATCH_WINDOW_S,
    AvWriter,
    BatchItem,
    TrackClock,
    aac_rate_for,
    first_frames,
    next_frames,
)

log = logging.getLogger(__name__)

_US = 1_000_000
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
# An ended stream's last playlist (with EXT-X-ENDLIST) is served this long, then forgotten.
ENDED_KEEP_S = 10.0
# Segments (besides the one being built) whose parts the playlist lists;
# parts of one more are kept for players that are a little behind.
PART_SEGMENTS = 2
# Players start this many segments from the end of a live playlist
# (Chromium's native player fails with fewer), so the first playlist waits for them.
START_SEGMENTS = 3
# A viewer: an address that asked for a stream within this long (metrics).
VIEWER_WINDOW_S = 10.0
_NUMBER = re.compile(r"[0-9]{1,9}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class HlsError(Exception):
    """A request the HLS port refuses: ``status`` and a short reason."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class HlsConfig:
    part_us: int
    segment_us: int
    segments: int  # complete segments in the playlist
    target_duration: int  # EXT-X-TARGETDURATION: no segment is longer

    @classmethod
    def from_settings(cls, settings: Settings) -> HlsConfig:
        # A segment may wait for a late keyframe up to half its duration more.
        target = math.ceil(settings.hls_segment_s * 1.5)
        return cls(round(settings.hls_part_s * _US), round(settings.hls_segment_s * _US), settings.hls_segments,
                   target)

    @property
    def part_target_s(self) -> float:
        return self.part_us / _US

    @property
    def block_timeout_s(self) -> float:
        """How long a blocking reload or a preload-hinted part is held (RFC 8216bis §6.2.5.2)."""
        return 3.0 * self.target_duration


@dataclasses.dataclass
class Segment:
    msn: int
    start_us: int
    duration_us: int
    independent: bool
    program_date: float  # wall-clock time of its first sample (EXT-X-PROGRAM-DATE-TIME)
    data: bytes
    part_count: int
    parts: list[Part] | None  # None once its parts are forgotten


def _date(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


class _Disk:
    """The muxer's files in its own directory under ``hls_dir``, written
    whole (a temporary name, then renamed) so a web server never serves half
    a file."""

    def __init__(self, root: Path, stream_name: str) -> None:
        name = _UNSAFE.sub("_", stream_name).lstrip(".") or "_"
        if name != stream_name:  # two names that read the same here stay apart
            name += "-" + hmac.new(b"hls", stream_name.encode(), "sha256").hexdigest()[:8]
        self.directory = root / name
        if self.directory.resolve().parent != root.resolve():
            raise PermissionError(f"{self.directory} would leave hls_dir {root}")
        self.files: set[str] = set()

    def write(self, name: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / f".{name}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, self.directory / name)
        self.files.add(name)

    def remove(self, name: str) -> None:
        self.files.discard(name)
        (self.directory / name).unlink(missing_ok=True)

    def clear(self) -> None:
        for name in list(self.files):
            self.remove(name)
        try:
            self.directory.rmdir()
        except OSError:
            pass  # not empty (files of someone else's) or already gone: left as it is


class _PacketSink:
    """Stands in for ``AvWriter``'s container: its tracks are a real (never
    written) mp4 container's, so that FFmpeg encodes the AAC, but the packets
    come here and go to the segmenter, which writes the boxes itself."""

    def __init__(self) -> None:
        self._container: Any = av.open(io.BytesIO(), mode="w", format="mp4")
        self.segmenter: Segmenter | None = None
        self.video_track: VideoTrack | None = None
        self.audio_track: AudioTrack | None = None

    def add_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._container.add_stream(*args, **kwargs)

    def add_stream_from_template(self, *args: Any, **kwargs: Any) -> Any:
        return self._container.add_stream_from_template(*args, **kwargs)

    def mux(self, packets: Any) -> None:
        assert self.segmenter is not None
        for packet in [packets] if isinstance(packets, av.Packet) else packets:
            if packet.pts is None or packet.pts < 0:
                continue  # the AAC encoder's priming frame, before the stream's start
            kind = packet.stream.type
            track = self.video_track if kind == "video" else self.audio_track if kind == "audio" else None
            if track is None:
                continue
            # the packet's time base in the track's (AvWriter gives 1/90000 and 1/rate: 1)
            ticks = (packet.time_base or fractions.Fraction(1, track.timescale)) * track.timescale
            dts = int(packet.pts * ticks)
            if track is self.video_track:
                self.segmenter.add(track, avcc_sample(bytes(packet)), dts, 0, packet.is_keyframe)
            else:
                self.segmenter.add(track, bytes(packet), dts, int((packet.duration or 1024) * ticks), True)

    def close(self) -> None:
        self._container.close()


class HlsMuxer:
    """One stream's HLS: its segments, parts and playlist, from the first
    request until idle or until the stream ends."""

    def __init__(self, stream: Stream, config: HlsConfig, hls_dir: Path | None = None) -> None:
        self.stream = stream
        self.config = config
        self.generation = secrets.token_hex(4)  # in every URI: a new muxer never reuses a cached one
        self.init: bytes | None = None
        self.has_video = False
        self.segments: deque[Segment] = deque()
        self.parts: list[Part] = []  # of the segment being built
        self.next_msn = 0
        self.started_wall = 0.0  # wall-clock time of the stream's first sample
        self.ended = False
        self.ended_at = 0.0
        self.failure = ""
        self.last_request = time.monotonic()
        self.waiting = 0  # requests held until a part or segment exists
        self._changed = asyncio.Event()
        self._rendered: dict[str, str] = {}  # the playlist by query, until it changes
        self._task: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"hls-{stream.name}")
        self._writer: AvWriter | None = None
        self._sink: _PacketSink | None = None
        self._disk = _Disk(hls_dir, stream.name) if hls_dir is not None else None
        self._keyframe_asked_msn = -1

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._end()

    def forget(self) -> None:
        """Remove what it wrote to ``hls_dir``."""
        if self._disk is not None:
            disk = self._disk
            try:
                self._executor.submit(disk.clear)
            except RuntimeError:  # the executor is shut down: clear from here
                disk.clear()
        self._executor.shutdown(wait=False)

    def touch(self) -> None:
        self.last_request = time.monotonic()

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.ended_at = time.monotonic()
        self._notify()

    def _notify(self) -> None:
        self._rendered.clear()
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition()`` holds (checked whenever a part is added)
        or the muxer ends; whether it holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.waiting += 1  # a player waiting is not idle
        try:
            while not condition():
                if self.ended or loop.time() >= deadline:
                    return condition()
                try:
                    await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    pass
            return True
        finally:
            self.waiting -= 1
            self.touch()

    # ------------------------------------------------------------------ run
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stream = self.stream
        video = stream.subscribe("video") if stream.has_video else None
        audio = stream.subscribe("audio") if stream.has_audio else None
        subscriptions = [s for s in (video, audio) if s is not None]
        try:
            start = await first_frames(video, audio, black_for_audio_only=False)
            if start is None:
                self.failure = "the stream ended before it had media"
                return
            first, audio_first, _ = start
            starts = sorted((f for f in (first, audio_first) if f is not None), key=lambda f: f.pts_us)
            clock = TrackClock(starts[0].pts_us)
            self.started_wall = time.time() - (time.monotonic() - starts[0].arrival)
            if audio is not None and audio_first is not None and audio_first.codec not in AUDIO_DECODERS:
                audio.close()  # no codec AAC could be made from
                audio, audio_first = None, None
            await loop.run_in_executor(self._executor, self._open, first.data if first else None,
                                       audio_first.codec if audio_first else None)
            self._published()
            pending: list[MediaFrame] = starts if audio is not None else [f for f in starts if f.kind == "video"]
            while pending:
                batch: list[BatchItem] = [
                    (f.kind, f.codec, f.data, clock.us(f), f.keyframe if f.kind == "video" else False)
                    for f in pending
                    # The generator's black frames (320x240, before a late video
                    # track starts) would change the picture size under the players.
                    if not (f.kind == "video" and f.generated)]
                await loop.run_in_executor(self._executor, self._write, batch)
                self._published()
                await asyncio.sleep(BATCH_WINDOW_S)
                pending = await next_frames(video, audio)
            await loop.run_in_executor(self._executor, self._close)
            self._published()
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self.failure = str(getattr(exc, "strerror", None) or exc)
            log.warning("HLS of %s failed: %s", stream.name, self.failure)
        finally:
            for sub in subscriptions:
                sub.close()
            self._end()

    def _open(self, keyframe: bytes | None, audio_codec: str | None) -> None:
        """On the muxer's thread: the tracks, the init segment, the segmenter."""
        sink = _PacketSink()
        writer = AvWriter("", "mp4")
        writer.container = sink
        writer.start(keyframe, audio_codec)
        tracks: list[Track] = []
        if keyframe is not None:
            sps, pps = parameter_sets(keyframe)
            sink.video_track = VideoTrack(sps, pps)
            tracks.append(sink.video_track)
        if audio_codec is not None:
            _, _, layout = AUDIO_DECODERS[audio_codec]
            sink.audio_track = AudioTrack(aac_rate_for(audio_codec), 2 if layout == "stereo" else 1,
                                          track_id=len(tracks) + 1)
            tracks.append(sink.audio_track)
        if not tracks:
            raise ValueError("the stream has neither H.264 video nor audio")
        c = self.config
        sink.segmenter = Segmenter(tracks, c.part_us, c.segment_us, c.target_duration * _US)
        self._writer, self._sink = writer, sink
        self.has_video = sink.video_track is not None
        self.init = init_segment(tracks)
        if self._disk is not None:
            self._disk.write(self.init_name, self.init)

    def _write(self, batch: list[BatchItem]) -> None:
        assert self._writer is not None
        self._writer.write_batch(batch)

    def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()  # the AAC encoder's last frames reach the segmenter
        if self._sink is not None and self._sink.segmenter is not None:
            self._sink.segmenter.finish()

    def _published(self) -> None:
        """Take the parts the segmenter cut; ask for the next segment's keyframe."""
        if self._sink is None or self._sink.segmenter is None:
            return
        segmenter = self._sink.segmenter
        done, segmenter.done = segmenter.done, []
        for part in done:
            self._add_part(part)
        if (self.has_video and self.next_msn != self._keyframe_asked_msn
                and segmenter.segment_age_us >= segmenter.segment_us - self.config.part_us):
            self._keyframe_asked_msn = self.next_msn
            self.stream.request_keyframe("HLS segment")
        if done:
            if self._disk is not None:
                files = [(self.part_name(p.msn, p.index), p.data) for p in done]
                files += [(self.segment_name(s.msn), s.data) for s in self.segments if s.msn in
                          {p.msn for p in done if p.last}]
                files.append((self.playlist_name, self.playlist().encode()))
                self._executor.submit(self._mirror, files)
            self._notify()

    def _add_part(self, part: Part) -> None:
        self.parts.append(part)
        if not part.last:
            return
        parts, self.parts = self.parts, []
        self.segments.append(Segment(
            part.msn, parts[0].start_us, sum(p.duration_us for p in parts), parts[0].independent,
            self.started_wall + parts[0].start_us / _US, b"".join(p.data for p in parts), len(parts), parts))
        self.next_msn = part.msn + 1
        while len(self.segments) > self.config.segments:
            old = self.segments.popleft()
            if self._disk is not None:
                names = [self.segment_name(old.msn)] + [self.part_name(old.msn, i) for i in range(old.part_count)]
                self._executor.submit(self._unmirror, names)
        for segment in list(self.segments)[:-(PART_SEGMENTS + 1)]:
            segment.parts = None

    def _mirror(self, files: list[tuple[str, bytes]]) -> None:
        """On the muxer's thread: new parts, segments and the playlist, the playlist last."""
        assert self._disk is not None
        try:
            for name, data in files:
                self._disk.write(name, data)
        except OSError as exc:
            log.warning("HLS of %s: cannot write to %s: %s", self.stream.name, self._disk.directory, exc)

    def _unmirror(self, names: list[str]) -> None:
        assert self._disk is not None
        for name in names:
            self._disk.remove(name)

    # ---------------------------------------------------------------- names
    @property
    def playlist_name(self) -> str:
        return f"{self.stream.name}.m3u8"

    @property
    def init_name(self) -> str:
        return f"init-{self.generation}.mp4"

    def segment_name(self, msn: int) -> str:
        return f"seg-{self.generation}-{msn}.m4s"

    def part_name(self, msn: int, index: int) -> str:
        return f"part-{self.generation}-{msn}.{index}.m4s"

    # --------------------------------------------------------------- state
    @property
    def ready(self) -> bool:
        """It has the segments a player starts with (or all it will have)."""
        return len(self.segments) >= START_SEGMENTS or self.ended and bool(self.segments)

    def has_part(self, msn: int, index: int | None) -> bool:
        """The playlist holds part ``index`` of segment ``msn`` or a later
        one (``index`` None: the whole segment ``msn`` or a later one)."""
        if msn < self.next_msn:
            return True
        if index is None or msn > self.next_msn:
            return False
        return len(self.parts) > index

    def part(self, msn: int, index: int) -> Part | None:
        if msn == self.next_msn:
            return self.parts[index] if index < len(self.parts) else None
        for segment in self.segments:
            if segment.msn == msn and segment.parts is not None:
                return segment.parts[index] if index < len(segment.parts) else None
        return None

    def segment(self, msn: int) -> Segment | None:
        return next((s for s in self.segments if s.msn == msn), None)

    def playlist(self, query: str = "") -> str:
        """The media playlist; ``query`` (``?token=…``) is added to every URI.
        Rendered once per change for every player (and token) asking."""
        text = self._rendered.get(query)
        if text is None:
            if len(self._rendered) > 100:
                self._rendered.clear()
            text = self._rendered[query] = self._render(query)
        return text

    def _render(self, query: str) -> str:
        c = self.config
        segments = list(self.segments)
        independent = all(s.independent for s in segments) and (not self.parts or self.parts[0].independent)
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:9",
            f"#EXT-X-TARGETDURATION:{c.target_duration}",
            f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={3 * c.part_target_s:.3f}",
            f"#EXT-X-PART-INF:PART-TARGET={c.part_target_s:.3f}",
        ]
        if independent:
            lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        lines += [
            f"#EXT-X-MEDIA-SEQUENCE:{segments[0].msn if segments else self.next_msn}",
            f'#EXT-X-MAP:URI="{self.init_name}{query}"',
        ]

        def parts(items: list[Part]) -> None:
            for p in items:
                lines.append(f'#EXT-X-PART:DURATION={p.duration_us / _US:.5f},'
                             f'URI="{self.part_name(p.msn, p.index)}{query}"' + (",INDEPENDENT=YES"
                                                                                   if p.independent else ""))

        listed = {s.msn for s in segments[-PART_SEGMENTS:]}
        for segment in segments:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date(segment.program_date)}")
            if segment.msn in listed and segment.parts is not None:
                parts(segment.parts)
            lines.append(f"#EXTINF:{segment.duration_us / _US:.5f},")
            lines.append(f"{self.segment_name(segment.msn)}{query}")
        if self.parts:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date(self.started_wall + self.parts[0].start_us / _US)}")
            parts(self.parts)
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        else:
            hint = self.part_name(self.next_msn, len(self.parts))
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint}{query}"')
        return "\n".join(lines) + "\n"


_CORS = {
    # Public media with no cookies: any page may play it (as CDNs serve HLS).
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization",
    "Access-Control-Max-Age": "600",
}
_FILE = re.compile(r"(?:init-(?P<init>[0-9a-f]{8})\.mp4"
                   r"|seg-(?P<seg>[0-9a-f]{8})-(?P<seg_msn>[0-9]{1,9})\.m4s"
                   r"|part-(?P<part>[0-9a-f]{8})-(?P<part_msn>[0-9]{1,9})\.(?P<part_index>[0-9]{1,4})\.m4s)")


class HlsServer:
    """The HLS port: playlists, init segments, segments and parts of every
    stream being played, at most ``hls_max_streams`` muxed at once."""

    def __init__(self, gateway: Any, settings: Settings) -> None:
        self.gateway = gateway
        self.settings = settings
        self.config = HlsConfig.from_settings(settings)
        self.hls_dir = Path(settings.hls_dir).absolute() if settings.hls_dir else None
        self.muxers: dict[str, HlsMuxer] = {}
        self.requests: Counter[tuple[str, int]] = Counter()  # (kind, status) -> count
        self._viewers: dict[tuple[str, str], float] = {}  # (stream, address) -> last request
        self._runner: LimitedRunner | None = None
        self._site: web.TCPSite | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def port(self) -> int:
        """The port it listens on (the setting's, or the one the OS chose)."""
        server = self._site._server if self._site is not None else None  # aiohttp keeps it there
        sockets = getattr(server, "sockets", None)
        return int(sockets[0].getsockname()[1]) if sockets else self.settings.hls_port

    @property
    def streams_muxed(self) -> int:
        return sum(1 for m in self.muxers.values() if m.running)

    def viewers(self) -> dict[str, int]:
        """Addresses that asked for each stream within ``VIEWER_WINDOW_S``."""
        horizon = time.monotonic() - VIEWER_WINDOW_S
        counts: Counter[str] = Counter(stream for (stream, _), seen in self._viewers.items() if seen >= horizon)
        return dict(counts)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        app = web.Application()
        app.router.add_route("OPTIONS", "/{stream}/{file}", self._preflight)
        app.router.add_get("/{stream}/{file}", self._get)
        self._runner = LimitedRunner(app, access_log=None, shutdown_timeout=min(2.0, s.shutdown_timeout_s / 4),
                                     max_connections=s.http_max_connections,
                                     header_timeout_s=s.http_header_timeout_s,
                                     keepalive_timeout=s.http_keepalive_timeout_s)
        await self._runner.setup()
        # HLS is served over HTTPS too when the HTTP port has a certificate
        tls = server_context(s.https_cert, s.https_key, "https_cert/https_key") if s.https_cert else None
        self._site = web.TCPSite(self._runner, s.bind_ip, s.hls_port, ssl_context=tls)
        await self._site.start()
        self._watchdog = asyncio.create_task(self._watch())
        scheme = "https" if s.https_cert else "http"
        log.info("HLS on %s://%s:%d/<stream>/<stream>.m3u8", scheme, s.ip, self.port)

    async def stop(self) -> None:
        """Every muxer ended, then the port closed: a quarter of
        ``shutdown_timeout_s`` for each at most. Requests held for a part are
        answered as their muxer ends."""
        self._closing = True
        grace = min(2.0, self.settings.shutdown_timeout_s / 4)
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        muxers, self.muxers = list(self.muxers.values()), {}
        ending = set(self._retiring) | {asyncio.ensure_future(m.stop()) for m in muxers}
        if ending:
            await asyncio.wait(ending, timeout=grace)
        for muxer in muxers:
            muxer.forget()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _retire(self, muxer: HlsMuxer) -> None:
        """Stop ``muxer`` (it may be writing its last part) and forget it."""
        async def retire() -> None:
            await muxer.stop()
            muxer.forget()

        task = asyncio.create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _watch(self) -> None:
        """Stop muxers nobody asked anything of for ``hls_idle_timeout_s``;
        forget ended ones after ``ENDED_KEEP_S``."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for name, muxer in list(self.muxers.items()):
                if (muxer.running and not muxer.waiting
                        and now - muxer.last_request > self.settings.hls_idle_timeout_s):
                    log.info("HLS of %s stopped: no request for %.0f s", name, self.settings.hls_idle_timeout_s)
                    await muxer.stop()
                    muxer.ended_at = now - ENDED_KEEP_S  # nobody plays it: forget it now
                if not muxer.running and now - muxer.ended_at >= ENDED_KEEP_S and self.muxers.get(name) is muxer:
                    del self.muxers[name]
                    muxer.forget()
            horizon = now - VIEWER_WINDOW_S
            for key in [k for k, seen in self._viewers.items() if seen < horizon]:
                del self._viewers[key]

    # ------------------------------------------------------------ requests
    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=_CORS)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        name, file = request.match_info["stream"], request.match_info["file"]
        kind = "playlist" if file.endswith(".m3u8") else "media"
        try:
            token = self._authorize(request, name)
            if file == f"{name}.m3u8":
                response = await self._playlist(request, name, token)
            else:
                response = await self._media(name, file)
        except HlsError as exc:
            headers = dict(_CORS)
            if exc.retry_after is not None:
                headers["Retry-After"] = str(exc.retry_after)
            response = web.Response(status=exc.status, text=str(exc) + "\n", headers=headers)
        if response.status < 400:
            self._viewers[(name, request.remote or "")] = time.monotonic()
        self.requests[(kind, response.status)] += 1
        return response

    def _authorize(self, request: web.Request, name: str) -> str:
        """Who may play: anyone, unless ``playback_token_secret`` or
        ``rest_auth_token`` is set; then a token for the stream (or the API
        token) in ``?token=`` or ``Authorization: Bearer``. Returns the query
        token to carry in the playlist's URIs ("" when there is none)."""
        s = self.settings
        if not s.playback_token_secret and not s.rest_auth_token:
            return ""
        query_token = request.query.get("token", "")
        token = query_token or auth.bearer(request.headers.get("Authorization", ""))
        if not token:
            raise HlsError(401, "a token is needed: ?token= or Authorization: Bearer")
        sent = token.encode("utf-8", "replace")
        if s.rest_auth_token and hmac.compare_digest(sent, s.rest_auth_token.encode()):
            return query_token
        if s.playback_token_secret and auth.playback_allowed(token, name, s.playback_token_secret):
            return query_token
        raise HlsError(403, "the token does not play this stream")

    def _muxer_for_playlist(self, name: str) -> HlsMuxer:
        """The stream's muxer, started for this request when it has none."""
        muxer = self.muxers.get(name)
        live = self.gateway.streams.get(name)
        live = live if live is not None and not live.ended else None
        if muxer is not None and (live is None or muxer.stream is live):
            return muxer
        if live is None:
            raise HlsError(404, f"no stream {name!r}")
        if self._closing:
            raise HlsError(503, "the server is stopping", retry_after=5)
        if self.streams_muxed >= self.settings.hls_max_streams:
            raise HlsError(503, f"hls_max_streams ({self.settings.hls_max_streams}) streams are played over HLS",
                           retry_after=5)
        if muxer is not None:  # the muxer of an earlier stream of that name
            self._retire(muxer)
        try:
            muxer = HlsMuxer(live, self.config, self.hls_dir)
        except OSError as exc:
            log.warning("HLS of %s: %s", name, exc)
            raise HlsError(503, "the stream cannot be written to hls_dir", retry_after=5) from None
        self.muxers[name] = muxer
        muxer.start()
        log.info("HLS of %s started", name)
        return muxer

    async def _playlist(self, request: web.Request, name: str, token: str) -> web.Response:
        msn, part = _delivery_directives(request.query)
        muxer = self._muxer_for_playlist(name)
        muxer.touch()
        c = self.config
        if msn is None:
            # a player needs a whole segment to start from
            await muxer.wait_for(lambda: muxer.ready, max(10.0, c.block_timeout_s))
            if not muxer.ready:
                raise HlsError(503, muxer.failure or "the stream has no segment yet", retry_after=1)
        else:
            if not muxer.ready and not muxer.ended:
                await muxer.wait_for(lambda: muxer.ready, max(10.0, c.block_timeout_s))
            # RFC 8216bis §6.2.5.2: too far ahead is a 400 at once.
            advance = math.ceil(3 / c.part_target_s) if c.part_target_s < 1 else 3
            parts_ahead = (part or 0) - len(muxer.parts) if msn == muxer.next_msn else (part or 0)
            if msn > muxer.next_msn + 1 or (msn >= muxer.next_msn and parts_ahead >= advance):
                raise HlsError(400, f"_HLS_msn={msn} _HLS_part={part} is too far ahead of "
                                    f"segment {muxer.next_msn} part {len(muxer.parts)}")
            if not await muxer.wait_for(lambda: muxer.has_part(msn, part), c.block_timeout_s):
                if not muxer.ended:
                    raise HlsError(503, f"segment {msn} part {part} did not come within "
                                        f"{c.block_timeout_s:.0f} s", retry_after=1)
        muxer.touch()
        query = "?token=" + urllib.parse.quote(token, safe="") if token else ""
        # A blocking reload's answer is the same for every player asking for
        # that part: a CDN may keep it a little; a plain reload must be fresh.
        cache = "no-cache" if msn is None or muxer.ended else f"public, max-age={c.target_duration}"
        return web.Response(text=muxer.playlist(query), content_type=PLAYLIST_TYPE,
                            headers={**_CORS, "Cache-Control": cache})

    async def _media(self, name: str, file: str) -> web.Response:
        match = _FILE.fullmatch(file)
        muxer = self.muxers.get(name)
        if match is None or muxer is None:
            raise HlsError(404, "not found")
        muxer.touch()
        generation = match.group("init") or match.group("seg") or match.group("part")
        if generation != muxer.generation:
            raise HlsError(404, "not found (an earlier playback of the stream)")
        data: bytes | None = None
        if match.group("init"):
            data = muxer.init
        elif match.group("seg"):
            segment = muxer.segment(int(match.group("seg_msn")))
            data = segment.data if segment is not None else None
        else:
            msn, index = int(match.group("part_msn")), int(match.group("part_index"))
            if msn == muxer.next_msn and index == len(muxer.parts):
                # the preload hint: held until the part exists (or its segment ended sooner)
                await muxer.wait_for(lambda: muxer.next_msn > msn or len(muxer.parts) > index,
                                     self.config.block_timeout_s)
            found = muxer.part(msn, index)
            data = found.data if found is not None else None
        if data is None:
            raise HlsError(404, "not found")
        muxer.touch()
        content_type = "video/mp4" if muxer.has_video else "audio/mp4"
        # Every URI names its muxer's generation: its content never changes.
        return web.Response(body=data, content_type=content_type,
                            headers={**_CORS, "Cache-Control": "public, max-age=3600, immutable"})


def _delivery_directives(query: Any) -> tuple[int | None, int | None]:
    """``_HLS_msn`` and ``_HLS_part`` (RFC 8216bis §6.2.5.2): non-negative
    decimal integers, and no part without a segment; a 400 otherwise."""
    values: list[int | None] = []
    for key in ("_HLS_msn", "_HLS_part"):
        raw = query.getall(key, [])
        if not raw:
            values.append(None)
            continue
        if len(raw) > 1 or not _NUMBER.fullmatch(raw[0]):
            raise HlsError(400, f"{key} must be one non-negative integer, got {raw!r}"[:200])
        values.append(int(raw[0]))
    msn, part = values
    if part is not None and msn is None:
        raise HlsError(400, "_HLS_part needs _HLS_msn")
    return msn, part

