"""The SIP leg's RTP/RTCP sockets for one call. Receiving is Rust's
(``MediaIo``: epoll + recvmmsg on a reactor thread shared by many calls,
jitter buffer, RTCP reports and feedback); Python gets whole frames in
batches, for all the calls of an event loop at once (``MediaReadyQueue``),
and publishes them into each call's stream. Python only sends the
rare packets of call control: DTMF events and session priming."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from .._core import Frame, MediaConfig, MediaIo, MediaReadyQueue, build_rtp
from .negotiation import Negotiated
from .stream import Stream

log = logging.getLogger(__name__)


_DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
DTMF_DIGITS = frozenset(_DTMF_EVENTS)
# One 20 ms frame of silence per codec (opus: a comfort-noise/DTX frame).
_SILENCE = {"PCMU": b"\xff" * 160, "PCMA": b"\xd5" * 160, "opus": b"\xf8\xff\xfe"}


class _ReadyCalls:
    """The calls of one event loop that share a ``MediaReadyQueue``: one
    wake-up and one Rust crossing for all calls with frames waiting, rather
    than one per call."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue = MediaReadyQueue()
        self.sessions: dict[int, RtpSession] = {}
        loop.add_reader(self.queue.fileno(), self._on_ready)

    def _on_ready(self) -> None:
        for token, frames, has_events in self.queue.drain():
            session = self.sessions.get(token)
            if session is None:
                continue  # closed since its frames were queued
            try:
                session._deliver(frames, has_events)
            except Exception:
                log.exception("stream %s: publishing frames failed", session.stream.name)

    def remove(self, token: int) -> None:
        self.sessions.pop(token, None)
        if not self.sessions:
            self.loop.remove_reader(self.queue.fileno())
            _ready_calls.pop(self.loop, None)


_ready_calls: WeakKeyDictionary[asyncio.AbstractEventLoop, _ReadyCalls] = WeakKeyDictionary()


def _ready_calls_of(loop: asyncio.AbstractEventLoop) -> _ReadyCalls:
    ready = _ready_calls.get(loop)
    if ready is None:
        ready = _ready_calls[loop] = _ReadyCalls(loop)
    return ready


class RtpSession:
    """Owns four bound sockets: audio RTP/RTCP, video RTP/RTCP."""

    def __init__(self, sockets: list[socket.socket], stream: Stream, receive_buffer: int, send_buffer: int,
                 offered: dict[int, tuple[str, int]] | None = None, jitter_buffer: bool = False,
                 generate_after_ms: int | None = None) -> None:
        self._sockets = sockets
        self.base_port = int(sockets[0].getsockname()[1])
        self.stream = stream
        self.receive_buffer = receive_buffer
        self.send_buffer = send_buffer
        self.offered = offered or {}
        self.jitter_buffer = jitter_buffer
        # generate_av_start_delay: silence / black frames for a negotiated
        # track that has not started or stopped (None: off).
        self.generate_after_ms = generate_after_ms
        self.negotiated: Negotiated | None = None
        self.ssrc = random.getrandbits(32)
        self._io: MediaIo | None = None
        self._ready: _ReadyCalls | None = None
        self._audio_seq = random.getrandbits(16)
        self._audio_ts = random.getrandbits(32)
        self.on_keyframe_info: Callable[[], None] | None = None
        stream.on_keyframe_request = self.request_keyframe

    @property
    def audio_port(self) -> int:
        return self.base_port

    @property
    def video_port(self) -> int:
        return self.base_port + 2

    def _config(self, payload_types: dict[int, tuple[str, int]], negotiated: Negotiated | None) -> MediaConfig:
        audio = negotiated.audio if negotiated else None
        video = negotiated.video if negotiated else None
        return MediaConfig(
            payload_types,
            audio_rtp=(audio.address, audio.port) if audio else None,
            audio_rtcp=(audio.address, audio.rtcp_port) if audio else None,
            audio_rtcp_fb=sorted(audio.rtcp_fb) if audio else [],
            video_rtp=(video.address, video.port) if video else None,
            video_rtcp=(video.address, video.rtcp_port) if video else None,
            video_rtcp_fb=sorted(video.rtcp_fb) if video else [],
            jitter_buffer=self.jitter_buffer,
            generate_av_start_delay_ms=self.generate_after_ms if negotiated else None,
            ssrc=self.ssrc,
        )

    async def start(self) -> None:
        """Hand the sockets to the Rust I/O thread (it receives from now on,
        early media included); Python keeps them only to send."""
        for sock in self._sockets:
            sock.setblocking(False)
        ready = _ready_calls_of(asyncio.get_running_loop())
        self._io = MediaIo([s.fileno() for s in self._sockets], self._config(self.offered, None),
                           self.receive_buffer, self.send_buffer, ready.queue)
        self._ready = ready
        ready.sessions[self._io.token] = self
        self._io.set_feed(self.stream.feed)
        # frames cross into Python only while something there subscribed
        self._io.set_python_frames(self.stream.has_subscribers)
        self.stream.on_subscribers = self._io.set_python_frames

    def _deliver(self, frames: list[Frame], has_events: bool) -> None:
        io = self._io
        if io is None:
            return
        publish = self.stream.publish
        for frame in frames:
            publish(frame)
        if not has_events:
            return
        for event in io.drain_events():
            if event.type == "stream_changed":
                self.stream.hub_changed()
            elif event.type == "keyframe_needed":
                if self.on_keyframe_info is not None:
                    self.on_keyframe_info()
            else:
                log.info("stream %s: media event %s (%s)", self.stream.name, event.type, event.kind)

    def configure(self, negotiated: Negotiated, payload_types: dict[int, tuple[str, int]]) -> None:
        """Apply an answer (or a later re-INVITE): codecs, addresses, feedback."""
        self.negotiated = negotiated
        if self._io is not None:
            self._io.reconfigure(self._config(payload_types, negotiated))

    def request_keyframe(self) -> None:
        """RTCP PLI or FIR from the I/O thread, or a keyframe_needed event
        (SIP INFO picture_fast_update) when the far end has no RTCP feedback."""
        if self._io is not None and self.negotiated is not None and self.negotiated.video is not None:
            self._io.request_keyframe()

    @property
    def packets_received(self) -> int:
        """Datagrams from the far end (a stranger's, dropped by strict RTP,
        do not count: they must not keep a dead call alive)."""
        if self._io is None:
            return 0
        stats = self._io.stats()
        return int(stats["packets"]) - int(stats.get("foreign_source", 0))

    def _send_audio(self, payload_type: int, marker: bool, timestamp: int, payload: bytes) -> None:
        audio = self.negotiated.audio if self.negotiated else None
        if audio is None or self._io is None:
            return
        packet = build_rtp(payload_type, self._audio_seq, timestamp & 0xFFFFFFFF, self.ssrc, marker, payload)
        self._audio_seq = (self._audio_seq + 1) & 0xFFFF
        try:
            self._sockets[0].sendto(packet, (audio.address, audio.port))
        except OSError as exc:
            log.debug("RTP send to %s:%d failed: %s", audio.address, audio.port, exc)
            return
        # counted in our RTCP sender reports, whose echo gives the RTT
        self._io.note_rtp_sent("audio", timestamp & 0xFFFFFFFF, len(payload))

    def send_initial_packets(self, count: int = 3) -> None:
        """rtp_session_init_always: a few silent audio packets toward the far
        end right after the answer, so NATs and SBCs that latch on the first
        packet start sending."""
        audio = self.negotiated.audio if self.negotiated else None
        if audio is None:
            return
        codec = audio.main_codec
        silence = _SILENCE.get(codec.name)
        if silence is None:
            return
        step = codec.clock_rate // 50
        for _ in range(count):
            self._send_audio(codec.payload_type, False, self._audio_ts, silence)
            self._audio_ts += step

    async def send_dtmf(self, digits: str, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """RFC 4733 telephone-events on the audio stream: one event per digit,
        updates every 20 ms, the end packet sent three times."""
        audio = self.negotiated.audio if self.negotiated else None
        event_codec = next((c for c in audio.codecs if c.name == "telephone-event"), None) if audio else None
        if event_codec is None:
            raise ValueError("the far end did not negotiate telephone-event (RFC 4733)")
        rate = event_codec.clock_rate
        step = rate // 50
        for digit in digits:
            if self._io is None:
                return  # the call ended: the rest of the digits are not sent
            event = _DTMF_EVENTS[digit.upper()]
            start = self._audio_ts
            duration = 0
            updates = max(1, duration_ms // 20)
            for i in range(updates):
                duration += step
                self._send_audio(event_codec.payload_type, i == 0, start,
                                 struct.pack("!BBH", event, 10, min(duration, 0xFFFF)))
                await asyncio.sleep(0.02)
            for _ in range(3):
                self._send_audio(event_codec.payload_type, False, start,
                                 struct.pack("!BBH", event, 0x80 | 10, min(duration, 0xFFFF)))
            self._audio_ts = start + duration + gap_ms * rate // 1000
            await asyncio.sleep(gap_ms / 1000)

    def stats(self) -> dict[str, Any]:
        return self._io.stats() if self._io is not None else {}

    def close(self) -> None:
        io, self._io = self._io, None
        ready, self._ready = self._ready, None
        if io is not None:
            if ready is not None:
                ready.remove(io.token)
            io.close()
        for sock in self._sockets:
            sock.close()
        self.stream.on_keyframe_request = None
        self.stream.on_subscribers = None
