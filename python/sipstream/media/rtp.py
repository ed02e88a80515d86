"""The SIP leg's RTP/RTCP sockets for one call, feeding the Rust receive path
(``MediaReceiver``) and publishing whole frames into the call's stream.

Packets still cross into Python once each here; moving the socket loop
into Rust is the media-core work (issue 4)."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from collections.abc import Callable
from typing import Any

from .._core import MediaReceiver, build_fir, build_pli, build_receiver_report, build_rtp, is_rtcp
from .negotiation import Negotiated
from .stream import Stream

log = logging.getLogger(__name__)


_DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
DTMF_DIGITS = frozenset(_DTMF_EVENTS)
# One 20 ms frame of silence per codec (opus: a comfort-noise/DTX frame).
_SILENCE = {"PCMU": b"\xff" * 160, "PCMA": b"\xd5" * 160, "opus": b"\xf8\xff\xfe"}


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession, rtcp: bool) -> None:
        self.session = session
        self.rtcp = rtcp
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.rtcp or is_rtcp(data):
            self.session.rtcp_packets += 1
            return
        self.session.on_rtp(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP socket error: %s", exc)


class RtpSession:
    """Owns four bound sockets: audio RTP/RTCP, video RTP/RTCP."""

    def __init__(self, sockets: list[socket.socket], stream: Stream, receive_buffer: int, send_buffer: int) -> None:
        self._sockets = sockets
        self.base_port = sockets[0].getsockname()[1]
        self.stream = stream
        self.receive_buffer = receive_buffer
        self.send_buffer = send_buffer
        self.receiver: MediaReceiver | None = None
        self.negotiated: Negotiated | None = None
        self.ssrc = random.getrandbits(32)
        self.rtcp_packets = 0
        self._fir_seq = 0
        self._endpoints: list[_Socket] = []
        self._pending: list[bytes] = []
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

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for index, sock in enumerate(self._sockets):
            for option, size in ((socket.SO_RCVBUF, self.receive_buffer), (socket.SO_SNDBUF, self.send_buffer)):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, size)
                except OSError as exc:
                    log.warning("cannot set socket buffer to %d: %s", size, exc)
            sock.setblocking(False)
            _, protocol = await loop.create_datagram_endpoint(
                lambda rtcp=bool(index % 2): _Socket(self, rtcp), sock=sock
            )
            self._endpoints.append(protocol)

    def configure(self, negotiated: Negotiated, payload_types: dict[int, tuple[str, int]]) -> None:
        """Apply the answer; packets that came before it (early media) are replayed."""
        self.negotiated = negotiated
        self.receiver = MediaReceiver(payload_types)
        pending, self._pending = self._pending, []
        for packet in pending:
            self.on_rtp(packet)

    def on_rtp(self, data: bytes) -> None:
        receiver = self.receiver
        if receiver is None:
            if len(self._pending) < 500:
                self._pending.append(data)
            return
        for frame in receiver.push(data):
            self.stream.publish(frame)
        if receiver.needs_keyframe():
            self.stream.request_keyframe("loss")

    def request_keyframe(self) -> None:
        """RTCP PLI or FIR toward the far end's video RTCP port; SIP INFO
        picture_fast_update when the far end negotiated no RTCP feedback."""
        negotiated = self.negotiated
        receiver = self.receiver
        if negotiated is None or negotiated.video is None or receiver is None or len(self._endpoints) < 4:
            return
        video = negotiated.video
        if not video.rtcp_fb & {"nack pli", "ccm fir"} and self.on_keyframe_info is not None:
            self.on_keyframe_info()
            return
        media_ssrc = receiver.video_ssrc or 0
        packet = build_receiver_report(self.ssrc)
        if "ccm fir" in video.rtcp_fb and "nack pli" not in video.rtcp_fb:
            self._fir_seq = (self._fir_seq + 1) & 0xFF
            packet += build_fir(self.ssrc, media_ssrc, self._fir_seq)
        else:
            packet += build_pli(self.ssrc, media_ssrc)
        transport = self._endpoints[3].transport
        if transport is not None:
            transport.sendto(packet, (video.address, video.rtcp_port))

    @property
    def packets_received(self) -> int:
        return self.receiver.packets if self.receiver is not None else len(self._pending)

    def _send_audio(self, payload_type: int, marker: bool, timestamp: int, payload: bytes) -> None:
        audio = self.negotiated.audio if self.negotiated else None
        transport = self._endpoints[0].transport if self._endpoints else None
        if audio is None or transport is None:
            return
        packet = build_rtp(payload_type, self._audio_seq, timestamp & 0xFFFFFFFF, self.ssrc, marker, payload)
        self._audio_seq = (self._audio_seq + 1) & 0xFFFF
        transport.sendto(packet, (audio.address, audio.port))

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

    def stats(self) -> dict[str, int]:
        r = self.receiver
        if r is None:
            return {"packets": 0, "bytes": 0, "lost": 0, "malformed": 0, "rtcpPackets": self.rtcp_packets}
        return {"packets": r.packets, "bytes": r.bytes, "lost": r.lost, "malformed": r.malformed,
                "unknownPayloadType": r.unknown_payload_type, "rtcpPackets": self.rtcp_packets}

    def close(self) -> None:
        for endpoint in self._endpoints:
            if endpoint.transport is not None:
                endpoint.transport.close()
        for sock in self._sockets:
            sock.close()
        self._endpoints.clear()
        self.stream.on_keyframe_request = None
