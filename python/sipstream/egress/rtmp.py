"""RTMP relay (WCS "push" / transponder): a stream sent to an RTMP server
with PyAV — FFmpeg's FLV muxer and RTMP protocol. H.264 is copied (the
first keyframe's SPS/PPS become the FLV sequence header); audio is decoded
(PCMU, PCMA, opus), resampled and encoded to AAC. A refused or dropped
connection is retried with capped backoff; the call is never affected."""

from __future__ import annotations

import asyncio
import concurrent.futures
import fractions
import logging
import secrets
import time
import urllib.parse
from typing import Any

import av

from ..media.stream import MediaFrame, Stream
from .mux import AUDIO_DECODERS, BATCH_WINDOW_S, AvWriter, BatchItem, TrackClock, first_frames, next_frames

log = logging.getLogger(__name__)

AAC_RATE = 48000
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
        writer = AvWriter(self.target, "flv", open_timeout=self.open_timeout, video_time_base=_MS,
                          aac_rate=AAC_RATE)
        video = stream.subscribe("video") if stream.has_video else None
        audio = stream.subscribe("audio") if stream.has_audio else None
        try:
            await loop.run_in_executor(self._executor, writer.open)
            start = await first_frames(video, audio, black_for_audio_only=True)
            if start is None:
                return  # the stream ended before it had media
            first, audio_first, black = start
            await loop.run_in_executor(
                self._executor, writer.start, first.data if first else None,
                audio_first.codec if audio_first and audio_first.codec in AUDIO_DECODERS else None,
            )
            self._set("PUBLISHING")
            clock = TrackClock(min(f.pts_us for f in (first, audio_first) if f is not None))
            pending: list[MediaFrame] = [f for f in (first, audio_first) if f is not None]
            next_black_us = 1_000_000
            while True:
                batch: list[BatchItem] = []
                for frame in pending:
                    us = clock.us(frame)
                    if black is not None and frame.kind == "audio" and us >= next_black_us:
                        # RTMP players expect video: an audio-only call gets the
                        # generator's black picture, one keyframe per second.
                        batch.append(("video", "H264", black, next_black_us, True))
                        next_black_us += 1_000_000
                    flag = frame.keyframe if frame.kind == "video" else self.muted
                    batch.append((frame.kind, frame.codec, frame.data, us, flag))
                # One hop to the relay's thread per batch, not per frame.
                await loop.run_in_executor(self._executor, writer.write_batch, batch)
                self.frames_sent += len(batch)
                await asyncio.sleep(BATCH_WINDOW_S)
                pending = await next_frames(video, audio)
                if not pending:
                    return  # stream ended
        finally:
            for sub in (video, audio):
                if sub is not None:
                    sub.close()
            await loop.run_in_executor(self._executor, writer.close)


class DuplicateRelay(Exception):
    """The stream is already relayed to that target."""


class TooManyRelays(Exception):
    """``max_relays`` relays are running."""


def rtmp_target(rtmp_url: str, stream_name: str) -> str:
    """``rtmp_url/stream_name``, the name percent-escaped: it cannot add a
    path, a query or an application to the URL."""
    return f"{rtmp_url.rstrip('/')}/{urllib.parse.quote(stream_name, safe='')}"


class RtmpRelays:
    """Every relay of the server, by mediaSessionId; at most ``max_relays``
    at a time (each holds a thread and an FFmpeg muxer)."""

    def __init__(self, max_retries: int = 10, max_relays: int = 100) -> None:
        self.max_retries = max_retries
        self.max_relays = max_relays
        self.relays: dict[str, RtmpRelay] = {}

    @property
    def full(self) -> bool:
        self._forget_finished()
        return len(self.relays) >= self.max_relays

    def start(self, stream: Stream, rtmp_url: str, full_url: bool = False, muted: bool = False) -> RtmpRelay:
        validate_rtmp_url(rtmp_url)
        name = f"rtmp_{stream.name}"
        target = rtmp_url if full_url else rtmp_target(rtmp_url, name)
        if self.full:
            raise TooManyRelays(f"max_relays ({self.max_relays}) relays are running")
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
