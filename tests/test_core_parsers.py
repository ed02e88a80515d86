"""The Rust parsers as Python sees them: clear ValueErrors for bad input,
never a crash; round trips for what the user agent builds."""

from __future__ import annotations

import random

import pytest
from sipstream._core import (
    H264Depacketizer,
    MediaReceiver,
    NameAddr,
    RtpPacket,
    RtpParseError,
    SdpParseError,
    SessionDescription,
    SipMessage,
    SipParseError,
    build_rtp,
    digest_authorization,
    h264_packetize,
    parse_challenge,
)

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n"
    b"f: \"Alice\" <sip:alice@example.com>;tag=abc\r\n"
    b"t: <sip:bob@example.com>\r\n"
    b"i: call-1@example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"m: <sip:alice@10.0.0.1>\r\n"
    b"c: application/sdp\r\n"
    b"l: 10\r\n\r\n"
    b"v=0\r\no=- 0"
)


def test_sip_compact_forms_and_comma_joined_via_are_expanded() -> None:
    msg = SipMessage.parse(INVITE)
    assert msg.method == "INVITE" and msg.uri == "sip:bob@example.com"
    assert msg.header_all("Via") == [
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1", "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2"]
    assert msg.call_id == "call-1@example.com" and msg.cseq == (1, "INVITE")
    assert NameAddr.parse(msg.header("From") or "").tag() == "abc"
    assert msg.body == b"v=0\r\no=- 0"


def test_sip_truncated_at_every_offset_raises_or_parses_never_crashes() -> None:
    for cut in range(len(INVITE)):
        try:
            SipMessage.parse(INVITE[:cut])
        except SipParseError as exc:
            assert str(exc)  # says what was wrong


def test_sip_garbage_raises_sip_parse_error_with_position() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
        try:
            SipMessage.parse(data)
        except SipParseError:
            pass
    with pytest.raises(SipParseError, match="byte"):
        SipMessage.parse(b"INVITE sip:x SIP/2.0\r\nContent-Length: 99\r\n\r\nshort")


def test_sip_build_sets_content_length() -> None:
    msg = SipMessage.request("OPTIONS", "sip:x@y", [("Via", "SIP/2.0/UDP h;branch=z9hG4bKx"), ("CSeq", "1 OPTIONS")],
                             b"abc")
    again = SipMessage.parse(msg.to_bytes())
    assert again.header("Content-Length") == "3" and again.body == b"abc"


def test_digest_rfc2617_example() -> None:
    challenge = parse_challenge('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                                'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    value = digest_authorization("Mufasa", "Circle Of Life", "GET", "/dir/index.html", challenge, "0a4f113b", 1)
    assert 'response="6629fae49393a05397450978507c4ef1"' in value


def test_sdp_errors_are_sdp_parse_errors() -> None:
    with pytest.raises(SdpParseError):
        SessionDescription.parse("v=0\r\nm=audio notaport RTP/AVP 0\r\n")


def test_rtp_too_short_is_rtp_parse_error() -> None:
    with pytest.raises(RtpParseError):
        RtpPacket.parse(b"\x80\x00")


def test_h264_fu_a_reassembles_and_loss_drops_the_access_unit() -> None:
    idr = b"\x00\x00\x00\x01" + bytes([0x65]) + bytes(range(256)) * 20
    payloads = h264_packetize(idr, 1200)
    assert len(payloads) > 2
    depack = H264Depacketizer()
    units = []
    for i, p in enumerate(payloads):
        units += depack.push(p, 65530 + i & 0xFFFF, 9000, i == len(payloads) - 1)
    assert len(units) == 1 and units[0].keyframe and units[0].data == idr
    lossy = H264Depacketizer()
    out = []
    for i, p in enumerate(payloads):
        if i == 1:
            continue  # a middle fragment is lost
        out += lossy.push(p, 100 + i, 18000, i == len(payloads) - 1)
    assert out == [] and lossy.needs_keyframe


def test_media_receiver_counts_garbage_and_unknown_payload_types() -> None:
    receiver = MediaReceiver({0: ("PCMU", 8000)})
    assert receiver.push(b"\x01\x02") == []
    assert receiver.push(build_rtp(99, 1, 0, 5, False, b"x")) == []
    frames = receiver.push(build_rtp(0, 2, 160, 5, False, b"\xff" * 160))
    assert [f.codec for f in frames] == ["PCMU"] and frames[0].data == b"\xff" * 160
    assert receiver.malformed == 1 and receiver.unknown_payload_type == 1
