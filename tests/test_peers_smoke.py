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
    assert all(b.ts >= a.ts for a, b in zip(pk, pk[1:]))
    rtp = [media.rtp_parse(x.payload) for x in pk]
    assert all(r.pt == 96 for r in rtp)
    assert all((b.seq - a.seq) & 0xFFFF == 1 for a, b in zip(rtp, rtp[1:]))
    assert any(r.payload[0] & 0x1F == 28 for r in rtp), "expected FU-A fragments"
    aus = media.h264_depacketize(rtp)
    assert len(aus) == 100
    assert all(b[0] - a[0] == 3600 for a, b in zip(aus, aus[1:]))   # 90 kHz / 25 fps
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
    assert all(b.ts - a.ts == 160 for a, b in zip(rtp, rtp[1:]))
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
