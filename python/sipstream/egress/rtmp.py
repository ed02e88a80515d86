"""RTMP relay (WCS "push" / transponder): a stream sent to an RTMP server
with PyAV — FFmpeg's FLV muxer and RTMP protocol. H.264 is copied (the
first keyframe's SPS/PPS become the FLV sequence header); audio is decoded
(PCMU, PCMA, opus), resampled and encoded to AAC. A refused or dropped
connection is retried with capped backoff; the call is never affected."""

from __future__ import annotations

import asyncio
import concurrent.futures
import fractions
import io
import logging
import secrets
import time
import urllib.parse
from typing import Any

import av
import numpy as np

from .._core import black_keyframe
from ..media.stream import MediaFrame, Stream, Subscription

log = logging.getLogger(__name__)

AAC_RATE = 48000
_DECODERS = {
    "PCMU": ("pcm_mulaw", 8000, "mono"),
    "PCMA": ("pcm_alaw", 8000, "mono"),
    "opus": ("libopus", 48000, "stereo"),
}
_MS = fractions.Fraction(1, 1000)


def safe_url(url: str) -> str:
    """``url`` without the password of ``rtmp://user:pass@host/app``, for logs and answers."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def validate_rtmp_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("rtmp", "rtmps", "rtmpt") or not parts.hostname:
        raise ValueError(f"rtmpUrl must look like rtmp://host[:port]/app, got {safe_url(url)!r}")
    return url


class _Muxer:
    """The blocking half of a relay: runs on the relay's own thread."""

    def __init__(self, url: str, has_audio: bool, has_video: bool, open_timeout: float) -> None:
        self.url = url
        self.has_audio = has_audio
        self.has_video = has_video
        self.open_timeout = open_timeout
        self.container: Any = None
        self.video: Any = None
        self.audio: Any = None
        self._decoder: Any = None
        self._resampler: Any = None
        self._audio_codec = ""
        self._audio_samples = 0
        self._audio_start_ms: int | None = None
        self._last_video_ms = -1

    def open(self) -> None:
        self.container = av.open(self.url, mode="w", format="flv", timeout=(self.open_timeout, 10.0))

    def start(self, keyframe: bytes | None, audio_codec: str | None) -> None:
        """Add the streams and write the FLV header."""
        assert self.container is not None
        if keyframe is not None:
            template = av.open(io.BytesIO(keyframe), format="h264")
            try:
                self.video = self.container.add_stream_from_template(template.streams.video[0])
            finally:
                template.close()
            self.video.time_base = _MS
        if audio_codec is not None:
            name, rate, layout = _DECODERS[audio_codec]
            self._audio_codec = audio_codec
            self._decoder = av.CodecContext.create(name, "r")
            self._decoder.sample_rate = rate
            self._decoder.layout = layout
            channels = "stereo" if layout == "stereo" else "mono"
            self.audio = self.container.add_stream("aac", rate=AAC_RATE)
            self.audio.layout = channels
            self.audio.bit_rate = 64000 if channels == "mono" else 96000
            # The fast coder costs a fraction of FFmpeg's default twoloop
            # search, which matters at many relays per core.
            self.audio.codec_context.options = {"aac_coder": "fast"}
            self._resampler = av.AudioResampler(format="fltp", layout=channels, rate=AAC_RATE)

    def write_video(self, data: bytes, ms: int, keyframe: bool) -> None:
        if self.video is None:
            return
        ms = max(ms, self._last_video_ms + 1)  # FLV needs increasing timestamps
        self._last_video_ms = ms
        packet = av.Packet(data)
        packet.stream = self.video
        packet.pts = packet.dts = ms
        packet.time_base = _MS
        packet.is_keyframe = keyframe
        self.container.mux(packet)

    def write_audio(self, data: bytes, ms: int, muted: bool) -> None:
        if self.audio is None:
            return
        if self._audio_start_ms is None:
            self._audio_start_ms = ms
        for frame in self._decoder.decode(av.Packet(data)):
            if muted:
                silent = np.zeros_like(frame.to_ndarray())
                replacement = av.AudioFrame.from_ndarray(silent, format=frame.format.name, layout=frame.layout.name)
                replacement.sample_rate = frame.sample_rate
                frame = replacement
            frame.pts = None
            for out in self._resampler.resample(frame):
                # Audio time is counted in samples from the track's start, so
                # it never drifts against its own clock.
                out.pts = self._audio_start_ms * AAC_RATE // 1000 + self._audio_samples
                out.time_base = fractions.Fraction(1, AAC_RATE)
                self._audio_samples += out.samples
                for packet in self.audio.encode(out):
                    self.container.mux(packet)

    def write_batch(self, batch: list[tuple[str, bytes, int, bool]]) -> None:
        """(kind, data, ms, keyframe-or-muted) in order."""
        for kind, data, ms, flag in batch:
            if kind == "video":
                self.write_video(data, ms, flag)
            else:
                self.write_audio(data, ms, flag)

    def close(self) -> None:
        container, self.container = self.container, None
        if container is None:
            return
        try:
            if self.audio is not None:
                for packet in self.audio.encode(None):
                    container.mux(packet)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            log.debug("flushing AAC failed: %s", exc)
        try:
            container.close()
        except (av.error.FFmpegError, OSError) as exc:
            log.debug("closing FLV failed: %s", exc)


class RtmpRelay:
    """One ``/push/startup``: ``stream`` relayed to ``target`` until stopped
    or until the stream ends."""

    def __init__(self, stream: Stream, rtmp_url: str, target: str, *, name: str,
                 max_retries: int = 10, open_timeout: float = 5.0) -> None:
        self.stream = stream
        self.rtmp_url = rtmp_url
        self.target = target
        self.name = name
        self.media_session_id = secrets.token_hex(16)
        self.muted = False
        self.status = "NEW"
        self.info = ""
        self.attempts = 0
        self.max_retries = max_retries
        self.open_timeout = open_timeout
        self.frames_sent = 0
        self._task: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"rtmp-{name}")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)
        if self.status not in ("FAILED",):
            self._set("STOPPED")

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def _set(self, status: str, info: str = "") -> None:
        if (status, info) != (self.status, self.info):
            suffix = f" ({info})" if info else ""
            log.info("relay %s -> %s: %s%s", self.stream.name, safe_url(self.target), status, suffix)
        self.status, self.info = status, info

    def to_json(self) -> dict[str, Any]:
        return {
            "mediaSessionId": self.media_session_id,
            "streamName": self.name,
            "rtmpUrl": safe_url(self.rtmp_url),
            "width": self.stream.width,
            "height": self.stream.height,
            "muted": self.muted,
            "soundEnabled": False,
            "options": {},
            "status": self.status,
            "info": self.info,
            "attempts": self.attempts,
        }

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 1.0
        try:
            while not self.stream.ended:
                self.attempts += 1
                self._set("CONNECTING" if self.attempts == 1 else "RECONNECTING", self.info)
                started = time.monotonic()
                try:
                    await self._relay_once(loop)
                    if self.stream.ended:
                        break
                    reason = "connection closed"
                except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
                    reason = str(exc) or type(exc).__name__
                if time.monotonic() - started > 30:
                    delay, self.attempts = 1.0, 1  # it had been working: start counting again
                if self.attempts > self.max_retries:
                    self._set("FAILED", f"RTMP server unreachable after {self.max_retries} attempts: {reason}")
                    return
                self._set("RECONNECTING", reason)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            self._set("STOPPED", "stream ended")
        except asyncio.CancelledError:
            raise

    async def _relay_once(self, loop: asyncio.AbstractEventLoop) -> None:
        stream = self.stream
        muxer = _Muxer(self.target, stream.has_audio, True, self.open_timeout)
        video = stream.subscribe("video") if stream.has_video else None
        audio = stream.subscribe("audio") if stream.has_audio else None
        try:
            await loop.run_in_executor(self._executor, muxer.open)
            first = await self._first_keyframe(video) if video is not None else None
            audio_first = await audio.get() if audio is not None else None
            # Both tracks start together: audio from before the first keyframe is dropped.
            while first is not None and audio is not None and audio_first is not None \
                    and audio_first.pts_us < first.pts_us - 10_000:
                audio_first = await audio.get()
            if (video is not None and first is None) or (audio is not None and audio_first is None):
                return  # the stream ended before it had media
            black = None
            if video is None and audio_first is not None:
                # RTMP players expect video: an audio-only call gets a black
                # picture, one keyframe per second (the media core's generator frame).
                black = black_keyframe()
                first = MediaFrame("video", "H264", black, 0, 90000, True, audio_first.arrival, audio_first.pts_us)
            await loop.run_in_executor(
                self._executor, muxer.start, first.data if first else None,
                audio_first.codec if audio_first and audio_first.codec in _DECODERS else None,
            )
            self._set("PUBLISHING")
            clock = _TrackClock(min(f.pts_us for f in (first, audio_first) if f is not None))
            pending: list[MediaFrame] = [f for f in (first, audio_first) if f is not None]
            next_black_ms = 1000
            while True:
                batch: list[tuple[str, bytes, int, bool]] = []
                for frame in pending:
                    ms = clock.ms(frame)
                    if black is not None and frame.kind == "audio" and ms >= next_black_ms:
                        batch.append(("video", black, next_black_ms, True))
                        next_black_ms += 1000
                    batch.append((frame.kind, frame.data, ms, frame.keyframe if frame.kind == "video" else self.muted))
                # One hop to the relay's thread per batch, not per frame.
                await loop.run_in_executor(self._executor, muxer.write_batch, batch)
                self.frames_sent += len(batch)
                pending = await _next_frames(video, audio)
                if not pending:
                    return  # stream ended
        finally:
            for sub in (video, audio):
                if sub is not None:
                    sub.close()
            await loop.run_in_executor(self._executor, muxer.close)

    @staticmethod
    async def _first_keyframe(video: Subscription) -> MediaFrame | None:
        """The first real keyframe: a generated black one that fills in before
        the video starts would sit a few ms before it and confuse players."""
        while True:
            frame = await video.get()
            if frame is None or (frame.keyframe and not frame.generated):
                return frame


class _TrackClock:
    """Relay milliseconds from the media core's common A/V clock (``pts_us``,
    aligned by RTCP sender reports), starting at 0 with the relay."""

    def __init__(self, t0_us: int) -> None:
        self.t0_us = t0_us

    def ms(self, frame: MediaFrame) -> int:
        return max(0, (frame.pts_us - self.t0_us) // 1000)


async def _next_frames(video: Subscription | None, audio: Subscription | None) -> list[MediaFrame]:
    """Whatever frames are ready next, from either track; [] when the stream ended."""
    subs = [s for s in (video, audio) if s is not None]
    ready = [s for s in subs if not s.queue.empty()]
    if not ready:
        waits = {asyncio.ensure_future(s.queue.get()): s for s in subs}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        frames = [t.result() for t in done]
        # A get() cancelled after it took an item would lose it; asyncio.Queue
        # hands items over only to completed getters, so this cannot happen.
    else:
        frames = []
    for sub in subs:  # and everything else already waiting
        while not sub.queue.empty():
            frames.append(sub.queue.get_nowait())
    if any(f is None for f in frames):
        return []
    result = [f for f in frames if f is not None]
    result.sort(key=lambda f: f.pts_us)
    return result


class DuplicateRelay(Exception):
    """The stream is already relayed to that target."""


class RtmpRelays:
    """Every relay of the server, by mediaSessionId."""

    def __init__(self, max_retries: int = 10) -> None:
        self.max_retries = max_retries
        self.relays: dict[str, RtmpRelay] = {}

    def start(self, stream: Stream, rtmp_url: str, full_url: bool = False, muted: bool = False) -> RtmpRelay:
        validate_rtmp_url(rtmp_url)
        name = f"rtmp_{stream.name}"
        target = rtmp_url if full_url else f"{rtmp_url.rstrip('/')}/{name}"
        self._forget_finished()
        if any(r.stream is stream and r.target == target for r in self.relays.values()):
            raise DuplicateRelay(f"stream {stream.name!r} is already relayed to {safe_url(target)}")
        relay = RtmpRelay(stream, rtmp_url, target, name=name, max_retries=self.max_retries)
        relay.muted = muted
        self.relays[relay.media_session_id] = relay
        relay.start()
        return relay

    def _forget_finished(self) -> None:
        for msid, relay in list(self.relays.items()):
            if relay.done:
                del self.relays[msid]

    def find(self, stream_name: str | None = None, rtmp_url: str | None = None) -> list[RtmpRelay]:
        self._forget_finished()
        return [
            r for r in self.relays.values()
            if (stream_name is None or stream_name in (r.name, r.stream.name))
            and (rtmp_url is None or rtmp_url in (r.rtmp_url, safe_url(r.rtmp_url), r.target))
        ]

    def get(self, media_session_id: str) -> RtmpRelay | None:
        self._forget_finished()
        return self.relays.get(media_session_id)

    async def stop(self, media_session_id: str) -> bool:
        relay = self.relays.pop(media_session_id, None)
        if relay is None:
            return False
        await relay.stop()
        return True

    async def close(self) -> None:
        relays, self.relays = list(self.relays.values()), {}
        await asyncio.gather(*(r.stop() for r in relays), return_exceptions=True)
