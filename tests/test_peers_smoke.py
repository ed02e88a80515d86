"""Smoke tests of the test peers (tests/peers), without sipstream.

Kamailio + sipp tests are marked ``peers``; they skip when a binary is missing.
because Chromium gathers no loopback ICE candidates; they skip if not root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.peers import media
from tests.peers.fixtures import *  # noqa: F401,F403  (fixtures + failure-report hook)
from tests.peers.rtp import RtpSink
from tests.peers.sipp import sip_body, sip_header
from tests.peers.util import sip_options_ping, sip_request

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# Kamailio
# ---------------------------------------------------------------------------
@pytest.mark.peers
def test_kamailio_answers_udp_and_tcp(kamailio):
    assert sip_options_ping(kamailio.host, kamailio.port) is not None
    r = sip_request(kamailio.host, kamailio.port, "OPTIONS", kamailio.uri, "sip:probe@127.0.0.1",
                    kamailio.uri, transport="tcp")
    assert r and r.startswith("SIP/2.0 200"), r


@pytest.mark.peers
def test_kamailio_challenges(kamailio):
    d = kamailio.domain
    r = sip_request(kamailio.host, kamailio.port, "REGISTER", f"sip:{d}", f"sip:bob@{d}", f"sip:bob@{d}")
    assert r.startswith("SIP/2.0 401"), r
    assert 'WWW-Authenticate: Digest realm="sipstream.test"' in r
    r = sip_request(kamailio.host, kamailio.port, "INVITE", f"sip:bob@{d}", f"sip:alice@{d}", f"sip:bob@{d}")
    assert r.startswith("SIP/2.0 407"), r
    assert 'Proxy-Authenticate: Digest realm="sipstream.test"' in r


@pytest.mark.peers
def test_bob_registers_with_digest(kamailio, sipp_uas):
    assert kamailio.registered("bob")
    reg = sipp_uas.register_messages()
    assert "SIP/2.0 401" in reg and "Authorization: Digest" in reg and "SIP/2.0 200" in reg
    assert sipp_uas.poll() is None  # UAS sipp still waiting for the INVITE


@pytest.mark.peers
def test_call_via_proxy_answer_media_bye(kamailio, sipp_uas, sipp_uac_factory):
    audio_sink, video_sink = RtpSink(), RtpSink()
    try:
        uac = sipp_uac_factory("bob", "uac_call", call_ms=4000,
                               audio_port=audio_sink.port, video_port=video_sink.port)
        assert uac.wait(30) == 0, uac.diagnostics()
        assert sipp_uas.wait(10) == 0, sipp_uas.diagnostics()
    finally:
        audio_sink.close()
        video_sink.close()

    # signalling: proxied with record-route, digest for alice, BYE reached bob
    msgs = sipp_uas.messages()
    assert f"Record-Route: <sip:127.0.0.1:{kamailio.port};lr" in msgs
    assert sipp_uas.received("INVITE") and sipp_uas.received("ACK") and sipp_uas.received("BYE")
    assert "SIP/2.0 407" in uac.messages() and "Proxy-Authorization: Digest" in uac.messages()

    # media, sent by sipp itself (no Python sender exists): bob's SDP answer
    # advertises sipp's -mp / -mp + 2 ports and the RTP comes from exactly those
    answer = uac.messages()
    assert f"m=audio {sipp_uas.audio_port} RTP/AVP 0" in answer
    assert f"m=video {sipp_uas.video_port} RTP/AVP 96" in answer
    assert {a for _, a, _ in audio_sink.packets} == {("127.0.0.1", sipp_uas.audio_port)}
    assert {a for _, a, _ in video_sink.packets} == {("127.0.0.1", sipp_uas.video_port)}
    # PCMU from sipp's rtp_stream engine: 20 ms packets of the 440 Hz tone
    arx = audio_sink.rtp()
    assert len(arx) > 150 and all(p.pt == 0 and len(p.payload) == 160 for p in arx)
    assert len({p.ssrc for p in arx}) == 1
    assert all((b.seq - a.seq) & 0xFFFF == 1 and (b.ts - a.ts) & 0xFFFFFFFF == 160
               for a, b in zip(arx, arx[1:], strict=False))
    pcm = media.ulaw_to_pcm16(np.frombuffer(b"".join(p.payload for p in arx), np.uint8))
    assert abs(media.dominant_frequency(pcm) - 440) < 5
    # H.264 from sipp's play_pcap_video: the test pattern, decodable, frames in order
    vrx = video_sink.rtp()
    assert all(p.pt == 96 for p in vrx)
    aus = media.h264_depacketize(vrx)
    n, errors, frames = media.decode_h264_access_units([media.annexb(a[1]) for a in aus], with_frames=True)
    assert not errors and n >= 75, (n, errors[:3])
    counters = [media.read_frame_counter(f[:240]) for f in frames]
    assert counters == list(range(counters[0], counters[0] + len(counters)))


@pytest.mark.peers
def test_callee_hangs_up(kamailio, sipp_uas_factory, sipp_uac_factory):
    uas = sipp_uas_factory("uas_answer_then_bye", hangup_after_s=2)
    uac = sipp_uac_factory("bob", "uac_call_wait_bye", call_ms=20000)
    assert uac.wait(30) == 0, uac.diagnostics()
    assert uas.wait(10) == 0, uas.diagnostics()
    assert "BYE sip:alice@" in uac.messages()        # BYE arrived at the caller via the proxy
    assert uas.received("200")


@pytest.mark.peers
def test_ring_no_answer_then_cancel(kamailio, sipp_uas_factory, sipp_uac_factory):
    uas = sipp_uas_factory("uas_ring_no_answer")
    uac = sipp_uac_factory("bob", "uac_cancel", call_ms=1000)
    assert uac.wait(30) == 0, uac.diagnostics()
    assert uas.wait(10) == 0, uas.diagnostics()
    assert uas.received("CANCEL") and uas.received("ACK")
    assert "SIP/2.0 487" in uac.messages()


@pytest.mark.peers
def test_unregistered_callee_is_404(kamailio, sipp_uac_factory):
    uac = sipp_uac_factory("carol", "uac_call", call_ms=100)
    assert uac.wait(30) != 0
    assert "SIP/2.0 404 Not Found" in uac.messages()


# ---------------------------------------------------------------------------
# call situations: each bob scenario against a sipp stand-in for sipstream
# ---------------------------------------------------------------------------
@pytest.fixture
def caller_sinks():
    """The stand-in caller's audio/video RTP sockets (what bob's sipp sends)."""
    a, v = RtpSink(), RtpSink()
    yield a, v
    a.close()
    v.close()


def _call(sipp_uac_factory, scenario, sinks=None, **kw):
    if sinks is not None:
        kw.setdefault("audio_port", sinks[0].port)
        kw.setdefault("video_port", sinks[1].port)
    return sipp_uac_factory("bob", scenario, **kw)


def _both_ok(uac, uas, uac_rc=0, uas_rc=0):
    assert uac.wait(30) == uac_rc, uac.diagnostics()
    assert uas.wait(10) == uas_rc, uas.diagnostics()


def _in_dialog_from_bob(sent, kamailio_port):
    """bob's in-dialog request: route set, his tag in From, the caller's in To."""
    assert sip_header(sent, "Route").startswith(f"<sip:127.0.0.1:{kamailio_port};lr")
    assert "SIPpTag01" in sip_header(sent, "From") and "tag=" in sip_header(sent, "To")
    assert sip_header(sent, "From").startswith("<sip:bob@") and sip_header(sent, "To").startswith("<sip:alice@")


@pytest.mark.peers
@pytest.mark.parametrize("code", [486, 600, 403, 404, 480, 488, 503, 408])
def test_reject(kamailio, sipp_uas_factory, sipp_uac_factory, code):
    from tests.peers.sipp import REASONS

    ring = code in (486, 480)                   # some with a 180 and a delay first
    uas = sipp_uas_factory("uas_reject", code=code, ring=ring, reject_delay_ms=300 if ring else 0)
    assert uas.media is None
    uac = _call(sipp_uac_factory, "uac_call_expect_error", expect_code=code)
    _both_ok(uac, uas)
    final = uac.received_messages(str(code))[0]
    assert final.startswith(f"SIP/2.0 {code} {REASONS[code]}")   # 503 too: kamailio.cfg keeps it
    assert bool(uac.received_messages("180")) == ring
    assert uas.received("ACK")


@pytest.mark.peers
def test_early_media(kamailio, sipp_uas_factory, sipp_uac_factory, caller_sinks):
    import time

    audio, video = caller_sinks
    uas = sipp_uas_factory("uas_early_media", answer_after_ms=2500)
    t0 = time.monotonic()
    uac = _call(sipp_uac_factory, "uac_call", caller_sinks, call_ms=500)
    _both_ok(uac, uas)
    # media began right after the 183, long before the 200 (>= 2.5 s after t0)
    assert audio.packets and audio.packets[0][0] - t0 < 1.5, audio.packets[:1]
    assert video.packets and video.packets[0][0] - t0 < 1.5
    p183 = uac.received_messages("183")[0]
    p200 = uac.received_messages("200")[-2]                       # INVITE's 200 (last: BYE's)
    assert sip_header(p183, "Content-Type") == "application/sdp"
    assert f"m=audio {uas.audio_port} RTP/AVP 0" in sip_body(p183)
    assert sip_body(p183) == sip_body(p200)                          # same SDP, same o= version
    assert len(audio.rtp()) > 100


@pytest.mark.peers
def test_hold_and_resume(kamailio, sipp_uas_factory, sipp_uac_factory, caller_sinks):
    audio, _ = caller_sinks
    uas = sipp_uas_factory("uas_hold", hold_after_ms=500, resume_after_ms=500)
    uac = _call(sipp_uac_factory, "uac_call_responder", caller_sinks, call_ms=800)
    _both_ok(uac, uas)
    hold, resume = uas.sent_messages("INVITE")
    for req, cseq, direction, version in ((hold, 101, "sendonly", "2353687638"),
                                          (resume, 102, "sendrecv", "2353687639")):
        _in_dialog_from_bob(req, kamailio.port)
        assert sip_header(req, "CSeq") == f"{cseq} INVITE"
        assert sip_body(req).count(f"a={direction}") == 2 and f" {version} IN IP4" in sip_body(req)
    assert [sip_header(m, "CSeq") for m in uac.received_messages("ACK")] == ["101 ACK", "102 ACK"]
    answers = uas.received_messages("200")
    assert "a=recvonly" in sip_body(answers[0])                      # the hold answer
    # bob's media keeps flowing while on hold (he holds: sendonly) and after
    assert audio.packets[-1][0] - audio.packets[0][0] > 1.4


@pytest.mark.peers
def test_hold_fails_on_a_sendrecv_answer(kamailio, sipp_uas_factory, sipp_uac_factory):
    uas = sipp_uas_factory("uas_hold", hold_after_ms=300, resume_after_ms=300)
    uac = _call(sipp_uac_factory, "uac_call_responder", call_ms=500, reinvite_direction="sendrecv")
    _both_ok(uac, uas, uas_rc=1)                                     # check_it on the answer


@pytest.mark.peers
def test_media_change(kamailio, sipp_uas_factory, sipp_uac_factory, caller_sinks):
    import socket

    audio, _ = caller_sinks
    uas = sipp_uas_factory("uas_media_change", change_after_ms=500)
    moved = uas.media.changed
    assert moved.audio_sink and moved.video_sink and moved.audio_rtcp_sink and moved.video_rtcp_sink
    uac = _call(sipp_uac_factory, "uac_call_responder", caller_sinks, call_ms=800)
    _both_ok(uac, uas)
    (reinvite,) = uas.sent_messages("INVITE")
    _in_dialog_from_bob(reinvite, kamailio.port)
    body = sip_body(reinvite)
    assert f"m=audio {moved.audio_port} RTP/AVP 0" in body and f"m=video {moved.video_port} RTP/AVP 96" in body
    assert f"m=audio {uas.audio_port} " not in body
    assert audio.packets[-1][0] - audio.packets[0][0] > 1.0          # bob's media went on after it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:      # the new ports are the test's
        s.sendto(b"\x80\x00\x00\x01" + bytes(8) + b"x", ("127.0.0.1", moved.audio_port))
    assert moved.audio_sink.wait_for(lambda k: len(k.rtp()) == 1, 2)


@pytest.mark.peers
def test_options_in_dialog(kamailio, sipp_uas_factory, sipp_uac_factory):
    uas = sipp_uas_factory("uas_options_in_dialog", options_after_ms=300)
    uac = _call(sipp_uac_factory, "uac_call_responder", call_ms=500)
    _both_ok(uac, uas)
    (options,) = uas.sent_messages("OPTIONS")
    _in_dialog_from_bob(options, kamailio.port)
    assert sip_header(options, "CSeq") == "101 OPTIONS"
    assert uac.received_messages("OPTIONS") and uas.received("BYE")


@pytest.mark.peers
def test_update_session_timer(kamailio, sipp_uas_factory, sipp_uac_factory):
    uas = sipp_uas_factory("uas_update_session_timer", update_after_ms=300, session_expires=120)
    uac = _call(sipp_uac_factory, "uac_call_responder", call_ms=500)
    _both_ok(uac, uas)
    ok = uac.received_messages("200")[0]
    assert sip_header(ok, "Session-Expires") == "120;refresher=uas"
    assert sip_header(ok, "Require") == "timer" and sip_header(ok, "Supported") == "timer"
    (update,) = uas.sent_messages("UPDATE")
    _in_dialog_from_bob(update, kamailio.port)
    assert sip_header(update, "Session-Expires") == "120;refresher=uac" and not sip_body(update)
    assert sip_header(uas.received_messages("200")[0], "Session-Expires")


@pytest.mark.peers
def test_update_session_timer_needs_session_expires_in_the_200(kamailio, sipp_uas_factory, sipp_uac_factory):
    uas = sipp_uas_factory("uas_update_session_timer", update_after_ms=300)
    # a caller whose 200 to the UPDATE has no Session-Expires
    uac = _call(sipp_uac_factory, "uac_call_responder", call_ms=500,
                values={"UPDATE_200_HEADER": "X-Session-Expires: none"})
    _both_ok(uac, uas, uas_rc=1)                                     # check_it on Session-Expires


@pytest.mark.peers
@pytest.mark.parametrize("method", ["update", "invite"])
def test_expect_refresh(kamailio, sipp_uas_factory, sipp_uac_factory, method):
    uas = sipp_uas_factory("uas_expect_refresh", session_expires=90, refresh_wait_ms=3000)
    uac = _call(sipp_uac_factory, f"uac_call_refresh_{method}", call_ms=500)
    _both_ok(uac, uas)
    ok = uac.received_messages("200")
    assert sip_header(ok[0], "Session-Expires") == "90;refresher=uac" and sip_header(ok[0], "Require") == "timer"
    assert sip_header(ok[1], "Session-Expires") == "90;refresher=uac"          # the refresh's 200
    assert ("m=audio" in sip_body(ok[1])) == (method == "invite")
    assert uas.received(method.upper()) if method == "update" else len(uas.received_messages("INVITE")) == 2


@pytest.mark.peers
def test_expect_refresh_fails_without_a_refresh(kamailio, sipp_uas_factory, sipp_uac_factory):
    uas = sipp_uas_factory("uas_expect_refresh", refresh_wait_ms=800)
    uac = _call(sipp_uac_factory, "uac_call_wait_bye", call_ms=10000)
    _both_ok(uac, uas, uas_rc=97)                                    # bob hangs up, then fails
    assert "no session refresh" in uac.received_messages("BYE")[0]


@pytest.mark.peers
def test_info_dtmf(kamailio, sipp_uas_factory, sipp_uac_factory):
    uas = sipp_uas_factory("uas_info_dtmf")
    uac = _call(sipp_uac_factory, "uac_call_info", call_ms=300)
    _both_ok(uac, uas)
    infos = uas.received_messages("INFO")
    assert [sip_header(m, "Content-Type") for m in infos] == [
        "application/dtmf-relay", "application/dtmf-relay", "application/media_control+xml"]
    assert [sip_body(m).splitlines()[0] for m in infos[:2]] == ["Signal=1", "Signal=#"]
    assert "picture_fast_update" in sip_body(infos[2])
    assert [m.split("\n")[0].strip() for m in uac.received_messages("200")][-4:] == ["SIP/2.0 200 OK"] * 4


@pytest.mark.peers
def test_no_rtp(kamailio, sipp_uas_factory, sipp_uac_factory, caller_sinks):
    audio, video = caller_sinks
    uas = sipp_uas_factory("uas_no_rtp")
    assert uas.media_mode == "sink" and uas.media.audio_sink is not None
    uac = _call(sipp_uac_factory, "uac_call", caller_sinks, call_ms=1000)
    _both_ok(uac, uas)
    assert not audio.packets and not video.packets
    assert f"m=audio {uas.audio_port} RTP/AVP 0" in sip_body(uac.received_messages("200")[0])


@pytest.mark.peers
def test_sink_mode_advertises_the_tests_ports(kamailio, sipp_uas_factory, sipp_uac_factory, caller_sinks):
    import socket

    audio, video = caller_sinks
    uas = sipp_uas_factory("uas_answer", media="sink", telephone_event=101)
    uac = _call(sipp_uac_factory, "uac_call", caller_sinks, call_ms=1000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:       # stands in for sipstream's RTP
        for seq in range(3):
            s.sendto(bytes([0x80, 101, 0, seq]) + bytes(8) + b"\x01\x0a\x00\xa0", ("127.0.0.1", uas.audio_port))
    _both_ok(uac, uas)
    body = sip_body(uac.received_messages("200")[0])
    assert f"m=audio {uas.audio_port} RTP/AVP 0 101" in body and f"m=video {uas.video_port} RTP/AVP 96" in body
    assert "a=rtpmap:101 telephone-event/8000" in body and "a=fmtp:101 0-16" in body
    assert uas.media_port not in (uas.audio_port, uas.video_port)
    assert [p.pt for p in uas.media.audio_sink.rtp()] == [101] * 3
    assert not audio.packets and not video.packets                  # sipp sends nothing
    assert uas.media.video_rtcp_sink.port == uas.video_port + 1


@pytest.mark.peers
@pytest.mark.parametrize("qop", [False, True])
def test_challenge_bye(kamailio, sipp_uas_factory, sipp_uac_factory, qop):
    uas = sipp_uas_factory("uas_challenge_bye", bye_auth_qop=qop)
    uac = _call(sipp_uac_factory, "uac_call_bye_auth", call_ms=300)
    _both_ok(uac, uas)
    challenge = uac.received_messages("401")[0]
    assert sip_header(challenge, "WWW-Authenticate").startswith('Digest realm="sipstream.test", nonce="')
    assert ('qop="auth"' in challenge) == qop
    first, second = uas.received_messages("BYE")
    assert sip_header(first, "Authorization") is None
    assert sip_header(second, "Authorization").startswith('Digest username="alice"')


@pytest.mark.peers
def test_challenge_bye_fails_on_a_wrong_digest(kamailio, sipp_uas_factory, sipp_uac_factory):
    uas = sipp_uas_factory("uas_challenge_bye", bye_auth_password="not-alices")
    uac = _call(sipp_uac_factory, "uac_call_bye_auth", call_ms=300)
    _both_ok(uac, uas, uac_rc=1, uas_rc=97)
    assert uac.received_messages("403")


# ---------------------------------------------------------------------------
# generated media
# ---------------------------------------------------------------------------
def test_pcmu_raw_is_the_tone(tmp_path):
    p = tmp_path / "a.ulaw"
    info = media.make_pcmu_raw(p, seconds=2, freq=440)
    raw = p.read_bytes()
    assert len(raw) == info["samples"] == 16000
    assert abs(media.dominant_frequency(media.ulaw_to_pcm16(np.frombuffer(raw, np.uint8))) - 440) < 2


def test_h264_pcap_decodes(tmp_path):
    p = tmp_path / "v.pcap"
    info = media.make_h264_pcap(p, seconds=4, fps=25, gop=25)
    assert info["frames"] == 100 and info["keyframes"] == 4 and info["max_payload"] <= 1200
    pk = media.read_pcap(p)
    assert len(pk) == info["packets"]
    assert all(x.dst == media.PCAP_DST_VIDEO and x.src == media.PCAP_SRC for x in pk)
    assert all(b.ts >= a.ts for a, b in zip(pk, pk[1:], strict=False))
    rtp = [media.rtp_parse(x.payload) for x in pk]
    assert all(r.pt == 96 for r in rtp)
    assert all((b.seq - a.seq) & 0xFFFF == 1 for a, b in zip(rtp, rtp[1:], strict=False))
    assert any(r.payload[0] & 0x1F == 28 for r in rtp), "expected FU-A fragments"
    aus = media.h264_depacketize(rtp)
    assert len(aus) == 100
    assert all(b[0] - a[0] == 3600 for a, b in zip(aus, aus[1:], strict=False))   # 90 kHz / 25 fps
    for i, (_, nals) in enumerate(aus):
        t = media.nal_types(nals)
        if i % 25 == 0:
            assert t[:2] == [7, 8] and 5 in t, t               # SPS/PPS in band before each IDR
        else:
            assert 5 not in t
    sps = aus[0][1][0]
    assert sps[1:4] == bytes([0x42, 0xC0, 0x1F])              # constrained baseline, level 3.1
    # marker bit exactly on the last packet of each AU
    assert sum(r.marker for r in rtp) == 100 and rtp[-1].marker
    n, errors, frames = media.decode_h264_access_units([media.annexb(a[1]) for a in aus], with_frames=True)
    assert n == 100 and not errors
    assert [media.read_frame_counter(f[:240]) for f in frames] == list(range(100))


def test_pcmu_pcap_is_a_tone(tmp_path):
    p = tmp_path / "a.pcap"
    info = media.make_pcmu_pcap(p, seconds=2, freq=440)
    pk = media.read_pcap(p)
    assert len(pk) == info["packets"] == 100
    assert abs((pk[1].ts - pk[0].ts) - 0.02) < 1e-6
    rtp = [media.rtp_parse(x.payload) for x in pk]
    assert all(r.pt == 0 and len(r.payload) == 160 for r in rtp)
    assert all(b.ts - a.ts == 160 for a, b in zip(rtp, rtp[1:], strict=False))
    pcm = media.ulaw_to_pcm16(np.frombuffer(b"".join(r.payload for r in rtp), np.uint8))
    assert abs(media.dominant_frequency(pcm) - 440) < 5
    assert 12000 < np.abs(pcm).max() < 20000     # amplitude 0.5 full scale


def test_ulaw_roundtrip():
    x = np.arange(-32768, 32768, 7, dtype=np.int32).astype(np.int16)
    y = media.ulaw_to_pcm16(media.pcm16_to_ulaw(x))
    err = np.abs(x.astype(np.int32) - y.astype(np.int32))
    assert np.all(err <= np.maximum(np.abs(x.astype(np.int32)) // 16, 8) + 132)


# ---------------------------------------------------------------------------
# Chromium
# ---------------------------------------------------------------------------
async def test_chromium_runs_js_on_local_page(chromium):
    from aiohttp import web

    from tests.peers.chromium import page_stats
    from tests.peers.util import free_port

    html = ("<html><body><script>let n = 0; setInterval(() => { n++; "
            "window.sipstreamStats = {ticks: n, ua: navigator.userAgent}; }, 50);</script></body></html>")
    async def player(request):
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/player", player)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port(udp=False)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        s = await page_stats(f"http://127.0.0.1:{port}/player", "window.sipstreamStats", timeout=10,
                             context=chromium, until="s => s && s.ticks >= 5")
    finally:
        await runner.cleanup()
    assert s["ticks"] >= 5 and "HeadlessChrome" in s["ua"]
