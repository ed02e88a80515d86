"""A loopback SIP callee for demos and tests: answers any INVITE and streams
an H.264 test pattern (moving bar, IDR every second) and a 440 Hz tone in
the codecs the offer allows (PCMU, PCMA or opus). It answers PLI/FIR by
jumping to the next IDR of its pre-encoded loop."""

from __future__ import annotations

import asyncio
import fractions
import logging
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from .._core import (
    MediaDescription,
    RtpPacket,
    SessionDescription,
    SipMessage,
    build_rtp,
    h264_packetize,
    is_rtcp,
    parse_rtcp,
)

log = logging.getLogger(__name__)

_AUDIO_PREFERENCE = ("PCMU", "PCMA", "opus")


def encode_test_pattern(width: int, height: int, fps: int, seconds: float, flash: bool = False) -> list[bytes]:
    """Annex-B access units; the first of every ``fps`` frames is an IDR with
    SPS/PPS. With ``flash`` the first frame is white (an A/V sync mark)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.options = {
        "profile": "baseline", "preset": "veryfast", "tune": "zerolatency",
        "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0:repeat-headers=1",
    }
    units: list[bytes] = []
    count = int(seconds * fps)
    for index in range(count):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, :, 0] = np.linspace(40, 200, width, dtype=np.uint8)[None, :]
        image[:, :, 2] = np.linspace(200, 40, height, dtype=np.uint8)[:, None]
        x = (index * width // count) % width
        image[:, x : x + max(4, width // 20)] = 255
        if flash and index == 0:
            image[:] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        units += [bytes(p) for p in ctx.encode(frame)]
    units += [bytes(p) for p in ctx.encode(None)]
    return units


def encode_tone(codec: str, seconds: float, freq: float = 440.0, beep: bool = False) -> tuple[list[bytes], int, int]:
    """(20 ms payloads, clock rate, samples per payload) of a sine tone; with
    ``beep`` only its first 100 ms sound (an A/V sync mark), then silence."""
    if codec == "opus":
        rate, name = 48000, "libopus"
    else:
        rate, name = 8000, "pcm_mulaw" if codec == "PCMU" else "pcm_alaw"
    ctx: Any = av.CodecContext.create(name, "w")  # an audio encoder: PyAV types it as the base class
    ctx.sample_rate = rate
    ctx.layout = "stereo" if codec == "opus" else "mono"
    ctx.format = "s16"
    if codec == "opus":
        ctx.bit_rate = 32000
    step = rate // 50
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)
    if beep:
        samples[t >= 0.1] = 0
    payloads: list[bytes] = []
    channels = 2 if codec == "opus" else 1
    for start in range(0, len(samples) - step + 1, step):
        chunk = samples[start : start + step]
        data = np.repeat(chunk, channels).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout=ctx.layout.name)
        frame.sample_rate = rate
        frame.pts = start
        payloads += [bytes(p) for p in ctx.encode(frame)]
    return payloads, rate, step


@dataclass
class Impairment:
    """A bad network on the callee's sending side: loss, reordering, jitter
    (seeded, so a test run is repeatable)."""

    loss: float = 0.01
    reorder: float = 0.02
    jitter_ms: float = 30.0
    seed: int = 1
    lost: int = 0
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def delay(self) -> float | None:
        """Seconds to hold a packet, or None to drop it."""
        if self._rng.random() < self.loss:
            self.lost += 1
            return None
        delay = self._rng.uniform(0, self.jitter_ms / 1000)
        if self._rng.random() < self.reorder:
            delay += self.jitter_ms / 1000
        return delay


_NTP_EPOCH = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)


def _sender_report(ssrc: int, ntp: float, rtp_ts: int) -> bytes:
    """An RTCP SR with no report blocks (RFC 3550 §6.4.1); counts left at 0."""
    seconds = int(ntp)
    fraction = int((ntp - seconds) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, seconds & 0xFFFFFFFF, fraction, rtp_ts, 0, 0)


@dataclass
class _Leg:
    """One answered call: where to send, with which payload types."""

    call_id: str
    audio: tuple[str, int, tuple[str, int]] | None  # (codec, pt, destination)
    video: tuple[int, tuple[str, int]] | None  # (pt, destination)
    sockets: list[socket.socket] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    keyframe_requested: bool = False
    bye_received: bool = False
    answer: bytes = b""
    rtcp: dict[str, tuple[str, int]] = field(default_factory=dict)  # kind -> RTCP destination


class LoopbackCallee(asyncio.DatagramProtocol):
    def __init__(self, host: str = "127.0.0.1", port: int = 0, width: int = 640, height: int = 360,
                 fps: int = 25, loop_seconds: float = 4.0, impairment: Impairment | None = None,
                 sync_marks: bool = False, send_audio: bool = True, video_delay_ms: float = 0.0,
                 sender_reports: bool = False) -> None:
        self.host = host
        # Video leaves this much later than it was "captured" (its RTP time),
        # as behind a slow encoder; only RTCP sender reports let the receiver
        # put it back in sync with the audio.
        self.video_delay_ms = video_delay_ms
        # RTCP SR for each track once a second, mapping its RTP clock to one
        # wall clock (NTP), the first before any RTP.
        self.sender_reports = sender_reports
        self.send_audio = send_audio  # False: negotiate audio but never send it
        # A white frame and a 1 kHz beep at the same instant once per loop; the
        # loop then ignores PLIs so video never jumps ahead of audio.
        self.sync_marks = sync_marks
        self.impairment = impairment
        self.port = port
        self.width, self.height, self.fps = width, height, fps
        self.loop_seconds = loop_seconds
        self.calls: dict[str, _Leg] = {}
        self.received: list[str] = []  # methods seen, for tests
        self.requests: list[SipMessage] = []  # every request, for tests
        self.infos: list[tuple[str, str]] = []  # (Content-Type, body) of INFO requests
        self.rtp_received: list[RtpPacket] = []  # RTP sent to our audio port (DTMF, priming)
        self.keyframe_requests = 0  # RTCP PLI/FIR received
        self.sender_reports_received = 0  # RTCP SRs from the caller (answered with an RR)
        self._transport: asyncio.DatagramTransport | None = None
        self._video: list[bytes] = []
        self._audio: dict[str, tuple[list[bytes], int, int]] = {}

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._video = await loop.run_in_executor(
            None, encode_test_pattern, self.width, self.height, self.fps, self.loop_seconds, self.sync_marks
        )
        for codec in _AUDIO_PREFERENCE:
            self._audio[codec] = await loop.run_in_executor(
                None, encode_tone, codec, self.loop_seconds, 1000.0 if self.sync_marks else 440.0, self.sync_marks
            )
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, self.port))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        for leg in list(self.calls.values()):
            self._end(leg)
        if self._transport is not None:
            self._transport.close()

    # ------------------------------------------------------------- SIP
    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            msg = SipMessage.parse(data)
        except ValueError:
            return
        if not msg.is_request:
            return
        self.received.append(msg.method or "")
        self.requests.append(msg)
        source = (addr[0], addr[1])
        method = msg.method
        if method == "INVITE":
            self._on_invite(msg, source)
        elif method == "BYE":
            self._reply(msg, source, 200, "OK")
            leg = self.calls.get(msg.call_id or "")
            if leg is not None:
                leg.bye_received = True
                self._end(leg)
        elif method == "CANCEL":
            self._reply(msg, source, 200, "OK")
        elif method != "ACK":
            if method == "INFO":
                self.infos.append((msg.header("Content-Type") or "", msg.body.decode("utf-8", "replace")))
            self._reply(msg, source, 200, "OK")

    def _reply(self, req: SipMessage, dest: tuple[str, int], status: int, reason: str,
               extra: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        headers = [("Via", v) for v in req.header_all("Via")]
        to = req.header("To") or ""
        if ";tag=" not in to:
            to += ";tag=" + (req.call_id or "x")[:8].replace("@", "")
        headers += [("From", req.header("From") or ""), ("To", to), ("Call-ID", req.call_id or ""),
                    ("CSeq", req.header("CSeq") or "")]
        headers += extra or []
        assert self._transport is not None
        self._transport.sendto(SipMessage.response(status, reason, headers, body).to_bytes(), dest)

    def _on_invite(self, req: SipMessage, source: tuple[str, int]) -> None:
        call_id = req.call_id or ""
        leg = self.calls.get(call_id)
        if leg is not None:
            if ";tag=" in (req.header("To") or ""):
                # re-INVITE (hold, resume, refresh): same media, direction mirrored.
                direction = next((d for d in ("sendonly", "inactive", "recvonly") if f"a={d}" in req.body.decode()),
                                 "sendrecv")
                mirrored = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction, direction)
                body = leg.answer.replace(b"a=sendrecv", f"a={mirrored}".encode())
                self._reply(req, source, 200, "OK", [("Contact", f"<sip:callee@{self.host}:{self.port}>"),
                                                     ("Content-Type", "application/sdp")], body)
            return  # else a retransmission of the first INVITE
        try:
            offer = SessionDescription.parse(req.body.decode())
        except ValueError:
            self._reply(req, source, 488, "Not Acceptable Here")
            return
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
        for sock in sockets:
            sock.bind((self.host, 0))
            sock.setblocking(False)
        audio = video = None
        answer_media = []
        for media in offer.media:
            address = media.connection or offer.connection or source[0]
            if media.kind == "audio" and audio is None:
                codec = next((c for name in _AUDIO_PREFERENCE for c in media.codecs if c.name == name), None)
                if codec is not None:
                    audio = (codec.name, codec.payload_type, (address, media.port))
                    rtcp_audio = (address, media.port if media.rtcp_mux else media.rtcp_port or media.port + 1)
                    events = [c for c in media.codecs if c.name == "telephone-event"][:1]
                    answer_media.append(("audio", sockets[0], sockets[1], [codec, *events]))
            elif media.kind == "video" and video is None:
                codec = next((c for c in media.codecs if c.name == "H264"), None)
                if codec is not None:
                    video = (codec.payload_type, (address, media.port))
                    rtcp_video = (address, media.port if media.rtcp_mux else media.rtcp_port or media.port + 1)
                    answer_media.append(("video", sockets[2], sockets[3], [codec]))
        if not answer_media:
            for sock in sockets:
                sock.close()
            self._reply(req, source, 488, "Not Acceptable Here")
            return
        leg = _Leg(call_id, audio, video, sockets)
        if audio is not None:
            leg.rtcp["audio"] = rtcp_audio
        if video is not None:
            leg.rtcp["video"] = rtcp_video
        self.calls[call_id] = leg
        answer = SessionDescription(
            self.host,
            [MediaDescription(kind, rtp.getsockname()[1], "RTP/AVP", codecs, rtcp_port=rtcp.getsockname()[1])
             for kind, rtp, rtcp, codecs in answer_media],
            session_id=1, session_version=1, connection=self.host,
        )
        sdp = answer.to_string()
        leg.answer = sdp.encode()
        contact = [("Contact", f"<sip:callee@{self.host}:{self.port}>")]
        self._reply(req, source, 100, "Trying")
        self._reply(req, source, 180, "Ringing", contact)
        self._reply(req, source, 200, "OK", contact + [("Content-Type", "application/sdp")], sdp.encode())
        leg.task = asyncio.get_running_loop().create_task(self._send_media(leg))

    def _end(self, leg: _Leg) -> None:
        self.calls.pop(leg.call_id, None)
        if leg.task is not None:
            leg.task.cancel()
        for sock in leg.sockets:
            sock.close()
        leg.sockets = []

    # ----------------------------------------------------------- media
    async def _send_media(self, leg: _Leg) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        ssrc_a, ssrc_v = random.getrandbits(32), random.getrandbits(32)
        seq_a, seq_v = random.getrandbits(16), random.getrandbits(16)
        ts_a0, ts_v0 = random.getrandbits(32), random.getrandbits(32)
        audio_index = video_index = 0
        video_src = 0
        next_audio = start
        next_video = start + self.video_delay_ms / 1000
        next_report = start
        wall_start = time.time()
        rtcp_sock = leg.sockets[3]
        while leg.sockets:
            now = loop.time()
            if self.sender_reports and now >= next_report:
                # what each track's RTP clock reads at this wall-clock instant
                ntp = wall_start + (now - start) + _NTP_EPOCH
                audio_rate = self._audio[leg.audio[0]][1] if leg.audio is not None else 8000
                for kind, ssrc, ts0, rate, sock in (("audio", ssrc_a, ts_a0, audio_rate, leg.sockets[1]),
                                                    ("video", ssrc_v, ts_v0, 90000, leg.sockets[3])):
                    if kind in leg.rtcp:
                        rtp_ts = (ts0 + round((now - start) * rate)) & 0xFFFFFFFF
                        self._send_now(sock, _sender_report(ssrc, ntp, rtp_ts), leg.rtcp[kind])
                next_report += 1.0
            self._read_rtcp(leg, rtcp_sock)
            self._answer_sender_reports(leg, ssrc_a)
            self._read_audio(leg.sockets[0])
            if leg.audio is not None and now >= next_audio and not self.send_audio:
                next_audio += 0.02
            elif leg.audio is not None and now >= next_audio:
                codec, pt, dest = leg.audio
                payloads, rate, step = self._audio[codec]
                payload = payloads[audio_index % len(payloads)]
                ts = (ts_a0 + audio_index * step) & 0xFFFFFFFF
                self._sendto(leg.sockets[0], build_rtp(pt, seq_a, ts, ssrc_a, audio_index == 0, payload), dest)
                seq_a = (seq_a + 1) & 0xFFFF
                audio_index += 1
                next_audio += 0.02
            if leg.video is not None and now >= next_video:
                pt, dest = leg.video
                if leg.keyframe_requested:
                    leg.keyframe_requested = False
                    if not self.sync_marks:
                        video_src = 0
                au = self._video[video_src % len(self._video)]
                ts = (ts_v0 + video_index * 90000 // self.fps) & 0xFFFFFFFF
                payloads = h264_packetize(au, 1200)
                for i, payload in enumerate(payloads):
                    packet = build_rtp(pt, seq_v, ts, ssrc_v, i == len(payloads) - 1, payload)
                    self._sendto(leg.sockets[2], packet, dest)
                    seq_v = (seq_v + 1) & 0xFFFF
                video_index += 1
                video_src += 1
                next_video += 1 / self.fps
            await asyncio.sleep(max(0.0, min(next_audio, next_video) - loop.time()))

    def _sendto(self, sock: socket.socket, packet: bytes, dest: tuple[str, int]) -> None:
        impairment = self.impairment
        if impairment is not None:
            delay = impairment.delay()
            if delay is None:
                return  # lost
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self._send_now, sock, packet, dest)
                return
        self._send_now(sock, packet, dest)

    @staticmethod
    def _send_now(sock: socket.socket, packet: bytes, dest: tuple[str, int]) -> None:
        if sock.fileno() < 0:
            return  # the call ended while the packet was delayed
        try:
            sock.sendto(packet, dest)
        except OSError as exc:
            log.debug("callee send failed: %s", exc)

    def _read_audio(self, sock: socket.socket) -> None:
        while len(self.rtp_received) < 10000:
            try:
                data = sock.recv(2048)
            except (BlockingIOError, OSError):
                return
            try:
                self.rtp_received.append(RtpPacket.parse(data))
            except ValueError:
                continue

    def _answer_sender_reports(self, leg: _Leg, ssrc: int) -> None:
        """Each SR on the audio RTCP port gets an RR at once whose report
        block echoes it (LSR, DLSR 0), as a far end does, for the sender's RTT."""
        sock = leg.sockets[1]
        while sock.fileno() >= 0:
            try:
                data, source = sock.recvfrom(2048)
            except (BlockingIOError, OSError):
                return
            if len(data) < 28 or data[1] != 200:
                continue
            sender, ntp_hi, ntp_lo = struct.unpack("!III", data[4:16])
            self.sender_reports_received += 1
            lsr = ((ntp_hi & 0xFFFF) << 16) | (ntp_lo >> 16)
            block = struct.pack("!IIIIII", sender, 0, 0, 0, lsr, 0)
            self._send_now(sock, struct.pack("!BBHI", 0x81, 201, 7, ssrc) + block, source)

    def _read_rtcp(self, leg: _Leg, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(2048)
            except (BlockingIOError, OSError):
                return
            if not is_rtcp(data):
                continue
            try:
                packets = parse_rtcp(data)
            except ValueError:
                continue
            if any(pt == 206 and fmt in (1, 4) for pt, fmt, _ in packets):
                leg.keyframe_requested = True
                self.keyframe_requests += 1
