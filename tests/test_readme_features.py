"""README features, each checked by its outcome rather than by a flag: the
player with ``rest_auth_token``, the SIP INFO keyframe request, parsed RTCP
PLIs at the ``periodic_fir_request`` interval, ``/stream/terminate``,
``ip_local`` vs ``ip``, ``sip_port``, ``sipTransport: "TCP"``, push mute and
unmute as heard at the RTMP server, ``rtmpTransponderFullUrl``, passwords
never logged on a call that authenticates, and the library example as written.

Media sources send what the generator never makes (352x288 moving H.264 and
a 440 Hz tone), so no assertion here can be met by placeholder frames."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from sipstream import CallEvent
from sipstream._core import SessionDescription
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, loopback_call, wait_until
from .media_checks import assert_real_video, assert_tone, dominant_hz, real_frames_grow
from .peers import avcheck
from .peers.chromium import new_page, track_tone
from .peers.fixtures import *  # noqa: F401,F403  (kamailio, sipp, chromium fixtures, failure logs)
from .peers.media import SOURCE_HEIGHT, SOURCE_WIDTH, read_pcap, rtp_parse
from .peers.util import free_port, sip_options_ping
from .test_hooks import HookReceiver
from .test_peers_rtmp_smoke import nginx_rtmp, nginx_rtmp_factory  # noqa: F401
from .test_rtmp_relay import _relay_status
from .test_sip_kamailio import alice_call

README = Path(__file__).resolve().parent.parent / "README.md"
WIDTH, HEIGHT, TONE_HZ = SOURCE_WIDTH, SOURCE_HEIGHT, 440.0


# ------------------------------------------------------------ rest_auth_token
async def _player_stats(page: Any) -> dict[str, Any]:
    return await page.evaluate("() => JSON.parse(JSON.stringify(window.sipstreamStats || null))")


async def _wait_player(page: Any, predicate: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = await _player_stats(page) or {}
        if predicate(stats):
            return stats
        await asyncio.sleep(0.25)
    raise AssertionError(f"player never got there in {timeout} s: {stats}; console: {page.console_log[-10:]}")


async def test_rest_auth_token_player_plays_with_the_token_and_requests_without_it_get_401(
    server_with: Any, callee: LoopbackCallee, chromium: Any
) -> None:
    token = "tok-" + secrets.token_hex(12)
    srv, _ = await server_with(rest_auth_token=token)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        await Rest(srv.base_url, http).start_call(loopback_call(callee, "ta1", "tas1"))

    # Without the token (or with a wrong one) REST and WHEP answer 401; the page itself is public.
    async with aiohttp.ClientSession() as anon:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            async with anon.get(srv.base_url + "/rest-api/call/find_all", headers=headers) as res:
                assert res.status == 401, headers
                assert res.headers.get("WWW-Authenticate", "").startswith("Bearer")
            async with anon.post(srv.base_url + "/rest-api/stream/find", json={"name": "tas1"},
                                 headers=headers) as res:
                assert res.status == 401
            async with anon.post(srv.base_url + "/whep/tas1", data="v=0\r\n",
                                 headers={"Content-Type": "application/sdp", **headers}) as res:
                assert res.status == 401
        async with anon.get(srv.base_url + "/player?stream=tas1") as res:
            assert res.status == 200
    assert srv.whep.sessions == {}

    # The player without a token is refused by WHEP and REST alike.
    page = await new_page(chromium)
    await page.goto(srv.base_url + "/player?stream=tas1", wait_until="domcontentloaded")
    refused = await _wait_player(page, lambda s: s.get("error") and s.get("streamStatus"), 20)
    assert "needs a valid token" in refused["error"], refused
    assert refused["streamStatus"] == "unknown (no access to the REST API)", refused
    await page.close()

    # With ?token= it plays the far end's picture and tone, and REST answers it too.
    page = await new_page(chromium)
    await page.goto(srv.base_url + f"/player?stream=tas1&token={token}", wait_until="domcontentloaded")
    first = await _wait_player(page, lambda s: s.get("framesDecoded", 0) > 0 and s.get("audioSamplesReceived", 0) > 0,
                               30)
    t0 = time.monotonic()
    rms, hz = await track_tone(page, "#video")  # about 1 s of what the player's audio track carries
    later = await _wait_player(page, lambda s: time.monotonic() - t0 >= 3.0, 30)
    elapsed = time.monotonic() - t0
    assert later["streamStatus"] == "PUBLISHING" and later.get("error") is None, later
    assert (later["frameWidth"], later["frameHeight"]) == (WIDTH, HEIGHT), later
    assert (later["framesDecoded"] - first["framesDecoded"]) / elapsed >= 10, (first, later)  # source: 25 fps
    assert rms > 0.02 and abs(hz - TONE_HZ) < 15, (rms, hz)  # the tone, not the generator's silence
    assert len(srv.whep.sessions) == 1
    await page.close()


# --------------------------------------------------- SIP INFO keyframe request
class NoFeedbackCallee(LoopbackCallee):
    """A far end that answers without ``a=rtcp-fb``: it takes keyframe
    requests only as SIP INFO (picture_fast_update), not as RTCP PLI/FIR."""

    def _reply(self, req: Any, dest: tuple[str, int], status: int, reason: str,
               extra: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        super()._reply(req, dest, status, reason, extra, re.sub(rb"a=rtcp-fb:[^\r\n]*\r\n", b"", body))


async def test_keyframe_request_to_a_far_end_without_rtcp_feedback_is_a_sip_info_picture_fast_update(
    server: Server, rest: Rest
) -> None:
    callee = NoFeedbackCallee(width=WIDTH, height=HEIGHT, loop_seconds=2.0)
    await callee.start()
    try:
        await rest.start_call(loopback_call(callee, "kf1", "kfs1"))
        answer = callee.requests[0].body.decode()  # our offer listed feedback; the answer did not
        assert "a=rtcp-fb" in answer
        stream = server.gateway.streams["kfs1"]
        await real_frames_grow(stream, "video", count=5)
        stream.request_keyframe("test: a viewer joined")
        await wait_until(lambda: any("media_control" in c for c, _ in callee.infos), 10, "an INFO keyframe request")
        (content_type, body), = [(c, b) for c, b in callee.infos if "media_control" in c]
        assert content_type == "application/media_control+xml"
        root = ET.fromstring(body.strip())
        assert root.tag == "media_control"
        assert root.find("./vc_primitive/to_encoder/picture_fast_update") is not None, body
        assert callee.keyframe_requests == 0  # no RTCP PLI/FIR went to a far end that did not negotiate them
    finally:
        await callee.stop()


# ------------------------------------------------------------ /stream/terminate
async def test_stream_terminate_hangs_up_the_call_and_unpublishes_its_stream(
    server: Server, rest: Rest, callee: LoopbackCallee
) -> None:
    await rest.start_call(loopback_call(callee, "st1", "sts1"))
    await rest.start_call(loopback_call(callee, "st2", "sts2"))
    stream = server.gateway.streams["sts1"]
    await real_frames_grow(stream, "video", count=5)
    subscription = stream.subscribe("audio")
    byes = callee.received.count("BYE")

    assert (await rest.post("/rest-api/stream/terminate", {"name": "sts1"}))[0] == 200
    call = await rest.wait_status("st1", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH" and call["info"] == "Normal call clearing", call
    await wait_until(lambda: callee.received.count("BYE") == byes + 1, 5, "the BYE at the callee")
    code, streams = await rest.post("/rest-api/stream/find", {"name": "sts1"})
    assert code == 200 and streams[0]["status"] == "UNPUBLISHED", streams
    while await asyncio.wait_for(subscription.get(), 5) is not None:  # its subscribers see the end
        pass
    # by mediaSessionId too; the other call was untouched until then
    assert (await rest.find_call("st2"))[1][0]["status"] == "ESTABLISHED"
    msid = (await rest.post("/rest-api/stream/find", {"name": "sts2"}))[1][0]["mediaSessionId"]
    assert (await rest.post("/rest-api/stream/terminate", {"mediaSessionId": msid}))[0] == 200
    assert (await rest.wait_status("st2", {"FINISH", "FAILED"}))["status"] == "FINISH"
    # an ended or unknown stream is not found
    assert (await rest.post("/rest-api/stream/terminate", {"name": "sts1"}))[0] == 404
    assert (await rest.post("/rest-api/stream/terminate", {"name": "nope"}))[0] == 404


# ------------------------------------------------------------------- sip_port
async def test_sip_port_is_where_the_ua_listens_and_what_the_callee_sees(
    server_with: Any, callee: LoopbackCallee
) -> None:
    port = free_port(udp=True, tcp=True)
    srv, rest = await server_with(sip_port=port)
    await rest.start_call(loopback_call(callee, "sp1", "sps1"))
    invite = next(r for r in callee.requests if r.method == "INVITE")
    via = invite.header("Via") or ""
    assert re.match(rf"SIP/2\.0/UDP 127\.0\.0\.1:{port};", via), via
    assert f"@127.0.0.1:{port}" in (invite.header("Contact") or ""), invite.header("Contact")
    # The UA answers on that port, and the port is taken by it.
    assert (await asyncio.to_thread(sip_options_ping, "127.0.0.1", port, 2.0) or "").startswith("SIP/2.0 200")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, pytest.raises(OSError):
        probe.bind(("127.0.0.1", port))
    await real_frames_grow(srv.gateway.streams["sps1"], "video", count=5)


# ------------------------------------------------------------------- ip_local
class _Nat(asyncio.DatagramProtocol):
    """Forwards what reaches ip:port (the advertised address) to ip_local:port,
    as the NAT in front of a server with a private ip_local would."""

    def __init__(self, to: tuple[str, int]) -> None:
        self.to = to
        self.forwarded = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.to)
        self.forwarded += 1


async def test_ip_is_advertised_in_sdp_while_ip_local_is_bound(server_with: Any, callee: LoopbackCallee) -> None:
    advertised, local = "127.0.0.2", "127.0.0.1"
    srv, _ = await server_with(ip=advertised, ip_local=local)
    async with aiohttp.ClientSession() as http:
        rest = Rest(f"http://{local}:{srv.settings.http_port}", http)  # HTTP is bound to ip_local
        await rest.start_call(loopback_call(callee, "il1", "ils1"))
        offer_text = next(r for r in callee.requests if r.method == "INVITE").body.decode()
        offer = SessionDescription.parse(offer_text)
        assert f"c=IN IP4 {advertised}" in offer_text and local not in offer_text, offer_text
        assert all((m.connection or offer.connection) == advertised for m in offer.media)
        # Nothing of ours is bound to the advertised address (else these binds would fail): the
        # media sockets are on ip_local, and media reaches them through the "NAT" only.
        loop = asyncio.get_running_loop()
        nats = []
        try:
            for m in offer.media:
                for port in (m.port, m.port + 1):
                    transport, nat = await loop.create_datagram_endpoint(
                        lambda port=port: _Nat((local, port)), local_addr=(advertised, port))
                    nats.append((transport, nat))
            stream = srv.gateway.streams["ils1"]
            await assert_real_video(stream, size=(WIDTH, HEIGHT))
            await assert_tone(stream, TONE_HZ)
            assert all(nat.forwarded > 0 for _, nat in nats[::2])  # RTP of both tracks came through
        finally:
            for transport, _ in nats:
                transport.close()
        assert (await rest.post("/rest-api/call/terminate", {"callId": "il1"}))[0] == 200
        await rest.wait_status("il1", {"FINISH"})


# ------------------------------------------------- periodic_fir_request + PLI
async def test_periodic_fir_request_sends_the_callee_a_pli_for_its_video_at_that_interval(
    kamailio: Any, sipp_uas_factory: Any, server_with: Any, rtp_pcaps: Any
) -> None:
    interval = 2
    bob = sipp_uas_factory("uas_answer")
    srv, rest = await server_with(periodic_fir_request=interval)
    video_ssrc = rtp_parse(read_pcap(rtp_pcaps[1])[0].payload).ssrc  # what sipp sends as bob's video
    assert (await rest.post("/rest-api/call/startup", alice_call(kamailio, "pf1", "pfs1")))[0] == 200
    call = await rest.wait_status("pf1", {"ESTABLISHED", "FAILED", "FINISH"}, timeout=20)
    assert call["status"] == "ESTABLISHED", call
    await real_frames_grow(srv.gateway.streams["pfs1"], "video", count=10)
    assert bob.media is not None
    start, window = time.monotonic(), 5 * interval
    await asyncio.sleep(window)  # the measurement window itself
    feedback = [(t, fb) for t, fb in bob.media.video_rtcp_sink.feedback() if start <= t <= start + window]
    plis = [(t, fb) for t, fb in feedback if fb[:2] == (206, 1)]
    assert all(media == video_ssrc and sender != 0 for _, (_, _, sender, media) in plis), [hex(f[3]) for _, f in plis]
    assert 3 <= len(plis) <= window // interval + 1, plis  # about one per interval, and not more often
    gaps = np.diff([t for t, _ in plis])
    assert gaps.min() >= interval * 0.75, gaps
    assert not [fb for _, fb in bob.media.audio_rtcp_sink.feedback() if fb[0] == 206]  # for the video only
    assert (await rest.post("/rest-api/call/terminate", {"callId": "pf1"}))[0] == 200
    await rest.wait_status("pf1", {"FINISH"})


# ------------------------------------------------------------ sipTransport TCP
async def test_sip_transport_tcp_in_call_startup_carries_the_call_over_tcp(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any
) -> None:
    bob = sipp_uas_factory("uas_answer")
    body = alice_call(kamailio, "tc1", "tcs1", sipTransport="TCP")  # the proxy URI itself says nothing of TCP
    assert (await rest.post("/rest-api/call/startup", body))[0] == 200
    call = await rest.wait_status("tc1", {"ESTABLISHED", "FAILED", "FINISH"}, timeout=20)
    assert call["status"] == "ESTABLISHED", call
    await real_frames_grow(server.gateway.streams["tcs1"], "video", count=10)
    assert (await rest.post("/rest-api/call/terminate", {"callId": "tc1"}))[0] == 200
    await rest.wait_status("tc1", {"FINISH"})
    assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    # Kamailio logs each request's transport: everything from alice (us) came over TCP.
    ours = re.findall(r"REQ (\w+) \S+ from [\d.]+:\d+/(\w+) \(From sip:alice@", kamailio.log_text())
    assert {"REGISTER", "INVITE", "ACK", "BYE"} <= {m for m, _ in ours}, ours
    assert {p.lower() for _, p in ours} == {"tcp"}, ours


# ------------------------------------------------------- passwords never logged
async def test_sip_password_is_never_logged_or_returned_on_a_call_that_authenticates(
    kamailio: Any, sipp_uas_factory: Any, server_with: Any, caplog: Any, capfd: Any
) -> None:
    password = kamailio.users["alice"]
    caplog.set_level(logging.DEBUG)
    hooks = HookReceiver()
    await hooks.start()
    try:
        srv, rest = await server_with(**{"app.defaultApp": f"{hooks.base}/apps/defaultApp"})
        events: list[Any] = []

        async def collect() -> None:
            async for event in srv.gateway.events():
                events.append(event)

        collector = asyncio.create_task(collect())
        bob = sipp_uas_factory("uas_answer")
        answers = [await rest.post("/rest-api/call/startup", alice_call(kamailio, "pw1", "pws1"))]
        call = await rest.wait_status("pw1", {"ESTABLISHED", "FAILED", "FINISH"}, timeout=20)
        assert call["status"] == "ESTABLISHED" and kamailio.registered("alice"), call  # it did authenticate
        for path, body in (("/rest-api/call/find", {"callId": "pw1"}), ("/rest-api/call/find_all", None),
                           ("/rest-api/stream/find", {"name": "pws1"}), ("/rest-api/stream/find_all", None)):
            answers.append(await rest.post(path, body))
        assert (await rest.post("/rest-api/call/terminate", {"callId": "pw1"}))[0] == 200
        answers.append(await rest.post("/rest-api/call/find", {"callId": "pw1"}))
        await hooks.wait_until(lambda: "FINISH" in hooks.statuses("/apps/defaultApp/CallStatusEvent"), 15)
        collector.cancel()
        assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    finally:
        await hooks.stop()
    assert any(r.name.startswith("sipstream") for r in caplog.records)  # the capture did see our logs
    captured = capfd.readouterr()
    seen = {
        "logs": caplog.text + "".join(repr(r.args) for r in caplog.records),
        "REST answers": json.dumps(answers),
        "hooks": "".join(raw for _, _, raw in hooks.received),
        "events": repr(events) + json.dumps([e.call for e in events if isinstance(e, CallEvent)]),
        "stdout/stderr": captured.out + captured.err,
    }
    assert all(seen[k] for k in ("logs", "REST answers", "hooks", "events"))  # each was really captured
    for where, text in seen.items():
        assert password not in text, f"the SIP password appears in the {where}"


# ------------------------------------------------------------- RTMP push mute
def _rms_windows(path: Path, window_s: float = 0.25) -> tuple[np.ndarray, np.ndarray, int]:
    """(RMS of each ``window_s`` of the recording's audio, the samples, the rate)."""
    _, x, rate = avcheck.audio_samples(path)
    n = int(window_s * rate)
    count = len(x) // n
    return np.sqrt((x[:count * n].reshape(count, n) ** 2).mean(axis=1)), x, rate


async def test_push_mute_silences_what_the_rtmp_server_gets_and_unmute_brings_the_tone_back(
    server: Server, rest: Rest, callee: LoopbackCallee, nginx_rtmp: Any
) -> None:
    await rest.start_call(loopback_call(callee, "pm1", "pms1"))
    code, relay = await rest.post("/rest-api/push/startup", {"streamName": "pms1", "rtmpUrl": nginx_rtmp.url})
    assert code == 200, relay
    msid = relay["mediaSessionId"]
    await _relay_status(rest, relay["streamName"], {"PUBLISHING"}, 20)
    # Three phases of about 3 s each: tone, muted, tone again.
    await asyncio.sleep(3)
    assert (await rest.post("/rest-api/push/mute", {"mediaSessionId": msid}))[0] == 200
    await asyncio.sleep(3)
    assert (await rest.post("/rest-api/push/unmute", {"mediaSessionId": msid}))[0] == 200
    await asyncio.sleep(3)
    assert (await rest.post("/rest-api/push/terminate", {"mediaSessionId": msid}))[0] == 200
    path = await asyncio.to_thread(nginx_rtmp.wait_recording_stable, "rtmp_pms1", 15)
    assert path is not None

    rms, x, rate = await asyncio.to_thread(_rms_windows, path)
    loud, quiet = rms > 0.3 * rms.max(), rms < 0.01 * rms.max()
    assert rms.max() > 0.02, rms  # there is a tone at all (the generator's silence would be 0)
    # the longest run of silent windows: the muted phase
    best, start = (0, 0), None
    for i, q in enumerate([*quiet, False]):
        if q and start is None:
            start = i
        elif not q and start is not None:
            best, start = max(best, (i - start, start)), None
    length, first = best
    assert length * 0.25 >= 1.5, f"no muted stretch: RMS per 0.25 s {np.round(rms, 3).tolist()}"
    before, after = loud[:first], loud[first + length:]
    assert before.sum() * 0.25 >= 1.0 and after.sum() * 0.25 >= 1.0, np.round(rms, 3).tolist()
    n = int(0.25 * rate)
    for part in (np.flatnonzero(before), first + length + np.flatnonzero(after)):
        tone = np.concatenate([x[i * n:(i + 1) * n] for i in part])
        assert abs(dominant_hz(tone, rate) - TONE_HZ) < 5  # the far end's tone, before and after


# ---------------------------------------------------- rtmpTransponderFullUrl
async def test_rtmp_transponder_full_url_publishes_at_exactly_rtmp_url(
    server: Server, rest: Rest, callee: LoopbackCallee, nginx_rtmp: Any
) -> None:
    await rest.start_call(loopback_call(callee, "fu1", "fus1"))
    target = nginx_rtmp.stream_url("exactly_here")
    code, relay = await rest.post("/rest-api/push/startup", {"streamName": "fus1", "rtmpUrl": target,
                                                             "rtmpTransponderFullUrl": "true"})
    assert code == 200, relay
    await _relay_status(rest, relay["streamName"], {"PUBLISHING"}, 20)
    path = await asyncio.to_thread(nginx_rtmp.wait_recording, "exactly_here", 15, 100_000)
    assert path is not None, nginx_rtmp.log_text()[-3000:]
    assert (await rest.post("/rest-api/push/terminate", {"mediaSessionId": relay["mediaSessionId"]}))[0] == 200
    assert await asyncio.to_thread(nginx_rtmp.wait_recording_stable, "exactly_here", 15) == path
    assert nginx_rtmp.published("exactly_here") == 1
    assert nginx_rtmp.published("rtmp_fus1") == 0 and nginx_rtmp.recordings("rtmp_fus1") == []
    info = await asyncio.to_thread(avcheck.probe, str(path))
    assert info["video"]["codec_name"] == "h264"
    assert (info["video"]["width"], info["video"]["height"]) == (WIDTH, HEIGHT)
    assert info["audio"]["codec_name"] == "aac"


# ------------------------------------------------------- the library example
def _readme_python_block(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading):]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no python block under {heading!r} in README.md"
    return match.group(1)


def test_readme_library_example_runs_as_written(kamailio: Any, sipp_uas_factory: Any, tmp_path: Path) -> None:
    """The README's first "As a library" block, with only the PBX made real:
    this test's Kamailio as proxy and registrar, bob (sipp) answering and
    hanging up after 3 s, and alice's account."""
    bob = sipp_uas_factory("uas_answer_then_bye", hangup_after_s=3)
    code = _readme_python_block("## As a library")
    for old, new in (
        ('callee="10005"', 'callee="bob"'),
        ('sip_login="10006"', 'sip_login="alice"'),
        ('sip_password="secret"', f'sip_password="{kamailio.users["alice"]}"'),
        ('sip_domain="pbx.example.com"',
         f'sip_domain="{kamailio.domain}", sip_outbound_proxy="{kamailio.host}", sip_port={kamailio.port}'),
    ):
        assert code.count(old) == 1, f"README example changed: {old!r} not found once"
        code = code.replace(old, new)
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSTREAM_")}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(re.search(r"\bESTABLISHED\b", line) for line in lines), result.stdout
    assert re.search(r"\bFINISH\b.*Normal call clearing", lines[-1]), result.stdout
    assert bob.wait(15) == 0, bob.diagnostics()[-3000:]
    assert kamailio.registered("alice")
