"""A named live stream: the frames of one call, for its viewers and for
Python consumers (RTMP relays, recorders, ``pcm()``, ``subscribe()``).

The stream's hub is in Rust (``StreamFeed``, fed by the call's receive path):
it counts the frames, notes the codecs and picture size, keeps the latest
group of pictures for snapshots, and packetizes the frames for the WebRTC
engine, all without Python. Frames reach Python only while something here
is subscribed (``has_subscribers``): then this object unwraps their RTP
timestamps into presentation times and keeps each subscriber's queue bounded
(a slow subscriber skips to the next keyframe rather than growing memory or
delaying the others)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._core import Frame, StreamFeed

log = logging.getLogger(__name__)

QUEUE_FRAMES = {"audio": 200, "video": 120}
KINDS = ("audio", "video")


@dataclass(slots=True)
class MediaFrame:
    kind: str
    codec: str
    data: bytes
    pts: int  # unwrapped RTP timestamp, in 1/clock_rate units
    clock_rate: int
    keyframe: bool
    arrival: float = 0.0  # time.monotonic() when the frame was complete
    pts_us: int = 0  # presentation time on the call's common A/V clock (RTCP SR based), µs
    generated: bool = False  # placeholder from the media core's generator (silence, black frame)


class _Unwrapper:
    """32-bit RTP timestamps → a 64-bit count that follows the signed
    difference to the previous one, so wraps and slightly late frames both work."""

    __slots__ = ("_raw", "_value")

    def __init__(self) -> None:
        self._raw: int | None = None
        self._value = 0

    def __call__(self, ts: int) -> int:
        if self._raw is not None:
            delta = (ts - self._raw) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            self._value += delta
        else:
            self._value = ts
        self._raw = ts
        return self._value


class Subscription:
    """One consumer's view of one track of a stream."""

    def __init__(self, stream: Stream, kind: str) -> None:
        self.stream = stream
        self.kind = kind
        self.queue: asyncio.Queue[MediaFrame | None] = asyncio.Queue(QUEUE_FRAMES.get(kind, 100))
        self.waiting_keyframe = kind == "video"
        self.dropped = 0

    def offer(self, frame: MediaFrame | None) -> None:
        if frame is None:
            self._put_end()
            return
        if self.waiting_keyframe:
            if not frame.keyframe:
                return
            self.waiting_keyframe = False
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped += self.queue.qsize()
            self._drain()
            if self.kind == "video":
                self.waiting_keyframe = True
                self.stream.request_keyframe("subscriber overflow")

    def _drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()

    def _put_end(self) -> None:
        if self.queue.full():
            self._drain()
        self.queue.put_nowait(None)

    async def get(self) -> MediaFrame | None:
        """The next frame, or None when the stream has ended."""
        return await self.queue.get()

    def close(self) -> None:
        self.stream.unsubscribe(self)


class Stream:
    def __init__(
        self,
        name: str,
        has_audio: bool,
        has_video: bool,
        keyframe_interval_s: float = 1.0,
    ) -> None:
        self.name = name
        self.media_session_id = str(uuid.uuid4())
        self.has_audio = has_audio
        self.has_video = has_video
        self.status = "PENDING"
        self.info = ""
        self.created = time.time()
        self.keyframe_requests = 0
        self.on_keyframe_request: Callable[[], None] | None = None
        self.on_change: Callable[[Stream], None] | None = None
        # told when has_subscribers flips: frames to Python on or off
        self.on_subscribers: Callable[[bool], None] | None = None
        self.recording: Any = None  # egress.recorder.Recording, while one is attached
        # the receive path's counters of the call that feeds this stream (set by the gateway)
        self.media_stats: Callable[[], dict[str, Any]] | None = None
        # The hub, in Rust: fed by the call's receive path without Python.
        self.feed = StreamFeed()
        # the codecs negotiated, until the hub has seen frames of them
        self._codecs: dict[str, str | None] = {"audio": None, "video": None}
        self._keyframe_interval = keyframe_interval_s
        self._last_keyframe_request = -1e9
        self._trailing_keyframe: asyncio.TimerHandle | None = None
        self._subscribers: dict[str, list[Subscription]] = {"audio": [], "video": []}
        self._unwrap = {"audio": _Unwrapper(), "video": _Unwrapper()}

    # ----------------------------------------------------- what the hub knows
    @property
    def frames(self) -> dict[str, int]:
        return dict(zip(KINDS, self.feed.stats()["frames"], strict=True))

    @property
    def generated(self) -> dict[str, int]:
        """Of the frames, placeholders from the media core's generator (black
        pictures, silence) while a track had no RTP."""
        return dict(zip(KINDS, self.feed.stats()["generated"], strict=True))

    @property
    def keyframes(self) -> int:
        return int(self.feed.stats()["keyframes"])

    @property
    def width(self) -> int:
        return int(self.feed.stats()["width"])

    @property
    def height(self) -> int:
        return int(self.feed.stats()["height"])

    @property
    def audio_codec(self) -> str | None:
        return self.feed.stats()["audio_codec"] or self._codecs["audio"]

    @audio_codec.setter
    def audio_codec(self, codec: str | None) -> None:
        self._codecs["audio"] = codec

    @property
    def video_codec(self) -> str | None:
        return self.feed.stats()["video_codec"] or self._codecs["video"]

    @video_codec.setter
    def video_codec(self, codec: str | None) -> None:
        self._codecs["video"] = codec

    def hub_changed(self) -> None:
        """The hub saw the first frame, a new codec or picture size."""
        if self.status == "PENDING":
            self.set_status("PUBLISHING")
        else:
            self._changed()

    # ------------------------------------------------------------ publishing
    def publish(self, frame: Frame) -> None:
        """Hand ``frame`` to the Python subscribers (frames reach Python only
        while there are some). Each attribute of ``frame`` is read once
        (``data`` is copied into a new bytes object per read)."""
        kind = frame.kind
        subscribers = self._subscribers.get(kind)
        if not subscribers:
            return
        codec = frame.codec
        if codec == "telephone-event":
            return
        pts = self._unwrap[kind](frame.timestamp)
        media = MediaFrame(kind, codec, frame.data, pts, frame.clock_rate, frame.keyframe,
                           time.monotonic(), frame.pts_us, frame.generated)
        for sub in subscribers:
            sub.offer(media)

    def set_status(self, status: str, info: str = "") -> None:
        if self.status == status and self.info == info:
            return
        self.status = status
        self.info = info
        self._changed()

    @property
    def gop(self) -> list[bytes]:
        """The access units from the latest keyframe on (empty before the first)."""
        return self.feed.gop()

    def changed(self) -> None:
        """Tell the listener that something shown in ``to_json`` changed."""
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:
                log.exception("stream %s: change listener failed", self.name)

    def close(self, status: str = "UNPUBLISHED", info: str = "") -> None:
        self.feed.close()  # its WebRTC viewers end with it
        if self._trailing_keyframe is not None:
            self._trailing_keyframe.cancel()
            self._trailing_keyframe = None
        self.set_status(status, info)
        for subs in self._subscribers.values():
            for sub in list(subs):
                sub.offer(None)
            subs.clear()

    @property
    def ended(self) -> bool:
        return self.status in ("UNPUBLISHED", "FAILED")

    # ----------------------------------------------------------- consuming
    @property
    def has_subscribers(self) -> bool:
        return any(self._subscribers.values())

    def subscribe(self, kind: str) -> Subscription:
        sub = Subscription(self, kind)
        if self.ended:
            sub.offer(None)
            return sub
        first = not self.has_subscribers
        self._subscribers[kind].append(sub)
        if first and self.on_subscribers is not None:
            self.on_subscribers(True)
        if kind == "video":
            self.request_keyframe("new subscriber")
        return sub

    def pcm(self) -> Any:
        """The audio as numpy int16 PCM: a :class:`~sipstream.media.pcm.PcmReader`
        (``async with stream.pcm() as audio: async for chunk in audio: ...``)."""
        from .pcm import PcmReader

        return PcmReader(self)

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.kind, [])
        if sub in subs:
            subs.remove(sub)
            if not self.has_subscribers and self.on_subscribers is not None:
                self.on_subscribers(False)

    def request_keyframe(self, reason: str) -> None:
        """Ask the source for a keyframe, at most once per interval. A request
        within the interval is made when it ends (once): a viewer that joins
        just after another still gets its picture within the interval."""
        now = time.monotonic()
        wait = self._last_keyframe_request + self._keyframe_interval - now
        if wait > 0:
            if self._trailing_keyframe is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    return  # no loop to wait on (a synchronous caller)
                self._trailing_keyframe = loop.call_later(wait, self._request_trailing_keyframe, reason)
            return
        self._last_keyframe_request = now
        self.keyframe_requests += 1
        log.debug("stream %s: keyframe request (%s)", self.name, reason)
        if self.on_keyframe_request is not None:
            self.on_keyframe_request()

    def _request_trailing_keyframe(self, reason: str) -> None:
        self._trailing_keyframe = None
        if not self.ended:
            self.request_keyframe(reason)

    @property
    def viewers(self) -> int:
        """WebRTC viewers attached to the hub."""
        return int(self.feed.viewers)

    def _track_stats(self) -> dict[str, Any]:
        """Per track, what its source's receive path counts (SPEC.md §2)."""
        if self.media_stats is None or self.ended:
            return {}
        stats = self.media_stats()
        out: dict[str, Any] = {}
        for kind in ("audio", "video"):
            track = stats.get(kind)
            if track:
                out[kind] = {
                    "codec": track.get("codec"), "packets": track.get("packets", 0),
                    "bytes": track.get("bytes", 0), "lost": track.get("lost", 0),
                    "jitterMs": track.get("jitter_ms", 0.0), "fps": track.get("fps", 0.0),
                    "bitrateBps": track.get("bitrate_bps", 0),
                }
        return out

    def to_json(self) -> dict[str, Any]:
        hub = self.feed.stats()  # one read of the hub for every field below
        return {
            "name": self.name,
            "mediaSessionId": self.media_session_id,
            "published": True,
            "status": self.status,
            "info": self.info,
            "hasAudio": self.has_audio,
            "hasVideo": self.has_video,
            "audioCodec": hub["audio_codec"] or self._codecs["audio"],
            "videoCodec": hub["video_codec"] or self._codecs["video"],
            "width": hub["width"],
            "height": hub["height"],
            "record": self.recording is not None and self.recording.active,
            "recordName": self.recording.file_name if self.recording is not None else None,
            "mediaProvider": "SIP",
            "viewers": self.viewers,
            "stats": {
                "audioFrames": hub["frames"][0],
                "videoFrames": hub["frames"][1],
                "generatedAudioFrames": hub["generated"][0],
                "generatedVideoFrames": hub["generated"][1],
                "keyframes": hub["keyframes"],
                "keyframeRequests": self.keyframe_requests,
                **self._track_stats(),
            },
        }

