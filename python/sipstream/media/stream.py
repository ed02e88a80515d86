"""A named live stream: the frames of one call fanned out to any number of
subscribers (WebRTC viewers today; RTMP relays and recorders later).

Frames arrive whole from the Rust receive path; this hub only unwraps RTP
timestamps into presentation times, tracks the picture size, and keeps each
subscriber's queue bounded (a slow subscriber skips to the next keyframe
rather than growing memory or delaying the others)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._core import Frame, StreamFeed, h264_sps_resolution

log = logging.getLogger(__name__)

QUEUE_FRAMES = {"audio": 200, "video": 120}
# The latest group of pictures kept for snapshots: frames from the last
# keyframe on, at most this many and this large (beyond, the snapshot is
# of a slightly older picture; memory stays bounded per call).
GOP_FRAMES = 300
GOP_BYTES = 1 << 20


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
        self.audio_codec: str | None = None
        self.video_codec: str | None = None
        self.width = 0
        self.height = 0
        self.created = time.time()
        self.frames = {"audio": 0, "video": 0}
        # of which placeholders from the media core's generator (black
        # pictures, silence) while a track has no RTP
        self.generated = {"audio": 0, "video": 0}
        self.keyframes = 0
        self.keyframe_requests = 0
        self.on_keyframe_request: Callable[[], None] | None = None
        self.on_change: Callable[[Stream], None] | None = None
        self.recording: Any = None  # egress.recorder.Recording, while one is attached
        # The Rust side of the stream: its frames packetized for WebRTC
        # viewers, fed by the call's receive path without Python.
        self.feed = StreamFeed()
        self._gop: list[bytes] = []
        self._gop_bytes = 0
        self._keyframe_interval = keyframe_interval_s
        self._last_keyframe_request = -1e9
        self._subscribers: dict[str, list[Subscription]] = {"audio": [], "video": []}
        self._unwrap = {"audio": _Unwrapper(), "video": _Unwrapper()}

    # ------------------------------------------------------------ publishing
    def publish(self, frame: Frame) -> None:
        # Called for every frame of every call: each attribute of ``frame`` is
        # read once (``data`` is copied into a new bytes object per read), and
        # a MediaFrame is only made when someone subscribed.
        kind = frame.kind
        subscribers = self._subscribers.get(kind)
        if subscribers is None:
            return
        codec = frame.codec
        if codec == "telephone-event":
            return
        pts = self._unwrap[kind](frame.timestamp)
        keyframe = frame.keyframe
        generated = frame.generated
        self.frames[kind] += 1
        if generated:
            self.generated[kind] += 1
        data = None
        if kind == "video":
            self.video_codec = codec
            data = frame.data
            if keyframe:
                self.keyframes += 1
                self._update_resolution(data)
                self._gop = [data]
                self._gop_bytes = len(data)
            elif self._gop and len(self._gop) < GOP_FRAMES and self._gop_bytes + len(data) <= GOP_BYTES:
                self._gop.append(data)
                self._gop_bytes += len(data)
        else:
            self.audio_codec = codec
        if self.status == "PENDING":
            self.set_status("PUBLISHING")
        if subscribers:
            media = MediaFrame(kind, codec, frame.data if data is None else data, pts, frame.clock_rate, keyframe,
                               time.monotonic(), frame.pts_us, generated)
            for sub in subscribers:
                sub.offer(media)

    def _update_resolution(self, annexb: bytes) -> None:
        for nal in split_annexb(annexb):
            if nal and nal[0] & 0x1F == 7:
                size = h264_sps_resolution(nal)
                if size is not None and size != (self.width, self.height):
                    self.width, self.height = size
                    self._changed()
                return

    def set_status(self, status: str, info: str = "") -> None:
        if self.status == status and self.info == info:
            return
        self.status = status
        self.info = info
        self._changed()

    @property
    def gop(self) -> list[bytes]:
        """The access units from the latest keyframe on (empty before the first)."""
        return list(self._gop)

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
        self._gop = []
        self.set_status(status, info)
        for subs in self._subscribers.values():
            for sub in list(subs):
                sub.offer(None)
            subs.clear()

    @property
    def ended(self) -> bool:
        return self.status in ("UNPUBLISHED", "FAILED")

    # ----------------------------------------------------------- consuming
    def subscribe(self, kind: str) -> Subscription:
        sub = Subscription(self, kind)
        if self.ended:
            sub.offer(None)
            return sub
        self._subscribers[kind].append(sub)
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

    def request_keyframe(self, reason: str) -> None:
        """Ask the source for a keyframe, at most once per interval."""
        now = time.monotonic()
        if now - self._last_keyframe_request < self._keyframe_interval:
            return
        self._last_keyframe_request = now
        self.keyframe_requests += 1
        log.debug("stream %s: keyframe request (%s)", self.name, reason)
        if self.on_keyframe_request is not None:
            self.on_keyframe_request()

    @property
    def viewers(self) -> int:
        return len(self._subscribers["video"]) if self.has_video else len(self._subscribers["audio"])

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mediaSessionId": self.media_session_id,
            "published": True,
            "status": self.status,
            "info": self.info,
            "hasAudio": self.has_audio,
            "hasVideo": self.has_video,
            "audioCodec": self.audio_codec,
            "videoCodec": self.video_codec,
            "width": self.width,
            "height": self.height,
            "record": self.recording is not None and self.recording.active,
            "recordName": self.recording.file_name if self.recording is not None else None,
            "mediaProvider": "SIP",
            "viewers": self.viewers,
            "stats": {
                "audioFrames": self.frames["audio"],
                "videoFrames": self.frames["video"],
                "generatedAudioFrames": self.generated["audio"],
                "generatedVideoFrames": self.generated["video"],
                "keyframes": self.keyframes,
                "keyframeRequests": self.keyframe_requests,
            },
        }


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B access unit (3- or 4-byte start codes)."""
    nals = []
    for chunk in data.split(b"\x00\x00\x01"):
        chunk = chunk.rstrip(b"\x00") if chunk.endswith(b"\x00") else chunk
        if chunk:
            nals.append(chunk)
    return nals
