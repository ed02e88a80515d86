"""Parse and receive-path micro-benchmarks, each next to the peer it is
compared with in the same run (SPEC.md §8). Run: ``make bench``.

- SIP: ``SipMessage.parse`` of a realistic INVITE with SDP, headers read
  from Python.
- RTP: one H.264 access unit (FU-A packets) through sipstream's
  ``MediaReceiver`` against aiortc's Python path (``RtpPacket.parse`` +
  H.264 depayload), both ending in a complete Annex-B frame; both per
  packet (``MediaReceiver.push`` / ``RtpPacket.parse``).

Timer: this process's CPU time, pinned to one core (benches/conftest.py).
"""

from __future__ import annotations

import os

import pytest
from sipstream._core import MediaReceiver, SipMessage, build_rtp, h264_packetize

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1234;received=10.0.0.2\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@10.0.0.1:5060>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n"
    b"User-Agent: bench\r\n"
    b"Content-Type: application/sdp\r\n"
)
_SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
)
INVITE += b"Content-Length: %d\r\n\r\n" % len(_SDP) + _SDP


def _sip_headers() -> tuple[str | None, str | None, tuple[int, str] | None]:
    msg = SipMessage.parse(INVITE)
    return msg.call_id, msg.header("Via"), msg.cseq


def test_sip_parse_sipstream(benchmark: pytest.FixtureRequest) -> None:
    call_id, via, cseq = benchmark(_sip_headers)  # type: ignore[operator]
    assert call_id == "a84b4c76e66710@pc33.example.com" and cseq == (314159, "INVITE")


# One 720p-sized IDR access unit (~40 KB) as RTP FU-A packets.
_AU = (b"\x00\x00\x00\x01\x67\x42\xc0\x1f\xda\x01\x40\x16\xe8\x06\xd0\xa1\x35" + b"\x00\x00\x00\x01\x65"
       + os.urandom(40_000).replace(b"\x00\x00", b"\x01\x01"))
_PACKETS = [build_rtp(96, i, 3000, 42, i == n - 1, p)
            for n, payloads in [(len(h264_packetize(_AU, 1200)), h264_packetize(_AU, 1200))]
            for i, p in enumerate(payloads)]


def _sipstream_receive() -> int:
    receiver = MediaReceiver({96: ("H264", 90000)})
    frames = []
    for packet in _PACKETS:
        frames += receiver.push(packet)
    return len(frames[0].data)


def test_rtp_h264_receive_sipstream(benchmark: pytest.FixtureRequest) -> None:
    size = benchmark(_sipstream_receive)  # type: ignore[operator]
    assert size > 40_000


def test_rtp_h264_receive_aiortc(benchmark: pytest.FixtureRequest) -> None:
    from aiortc.codecs.h264 import H264PayloadDescriptor
    from aiortc.rtp import RtpPacket

    def aiortc_receive() -> int:
        frame = b""
        for data in _PACKETS:
            packet = RtpPacket.parse(data)
            _, payload = H264PayloadDescriptor.parse(packet.payload)
            frame += payload
        return len(frame)

    size = benchmark(aiortc_receive)  # type: ignore[operator]
    assert size > 40_000
