"""Calls through Kamailio (registrar + digest-authenticating, record-routing
proxy) to sipp registered as bob, who streams H.264 + PCMU from generated
pcaps; Chromium plays the resulting stream."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sipstream import CallEvent
from sipstream.server import Server

from .conftest import Rest
from .media_checks import PLAYBACK_MEASURE_S, assert_real_playback, assert_real_video
from .peers.chromium import whep_play
from .peers.fixtures import *  # noqa: F401,F403  (kamailio, sipp fixtures, failure logs)
from .peers.fixtures import require_chromium
from .peers.media import H264_PCAP_SSRC
from .peers.rtp import rtcp_feedback

pytestmark = pytest.mark.peers


def alice_call(kamailio: Any, call_id: str, stream: str, callee: str = "bob", **extra: Any) -> dict[str, Any]:
    body = {
        "callId": call_id, "callee": callee, "toStream": stream, "hasAudio": "true", "hasVideo": "true",
        "sipLogin": "alice", "sipAuthenticationName": "alice", "sipPassword": "alice-secret",
        "sipDomain": "sipstream.test", "sipOutboundProxy": "127.0.0.1", "sipPort": str(kamailio.port),
        "sipRegisterRequired": "true", "appKey": "defaultApp", "visibleName": "Alice",
    }
    body.update(extra)
    return body


class StatusLog:
    """Every status a call goes through, from the gateway's event stream."""

    def __init__(self, server: Server) -> None:
        self.events: list[CallEvent] = []
        self._task = asyncio.create_task(self._collect(server))

    async def _collect(self, server: Server) -> None:
        async for event in server.gateway.events():
            self.events.append(event)

    def statuses(self, call_id: str) -> list[str]:
        return [e.status.value for e in self.events if isinstance(e, CallEvent) and e.call_id == call_id]

    def close(self) -> None:
        self._task.cancel()


@pytest.fixture
async def status_log(server: Server):
    log = StatusLog(server)
    await asyncio.sleep(0)
    yield log
    log.close()


async def test_call_through_kamailio_with_auth_plays_in_chromium_and_bye_reaches_sipp(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any, status_log: StatusLog
) -> None:
    bob = sipp_uas_factory("uas_answer")
    assert (await rest.post("/rest-api/call/startup", alice_call(kamailio, "k1", "ks1")))[0] == 200
    call = await rest.wait_status("k1", {"ESTABLISHED"}, timeout=20)
    assert call["sipStatus"] == 200 and call["caller"] == "alice" and call["callee"] == "bob"
    statuses = status_log.statuses("k1")
    assert statuses[0] == "TRYING" and "RING" in statuses and statuses[-1] == "ESTABLISHED", statuses
    assert kamailio.registered("alice")

    require_chromium()
    stats = await whep_play(server.base_url + "/health", server.base_url + "/whep/ks1", seconds=25,
                            measure_s=PLAYBACK_MEASURE_S)
    assert_real_playback(stats)
    assert stats["videoCodec"] == "video/H264" and stats["audioCodec"] == "audio/PCMU"
    # The viewer's join became an RTCP PLI (PT 206, FMT 1) toward bob's video
    # RTCP port, about bob's video SSRC (the pcap's).
    feedback = rtcp_feedback(bob.media.video_rtcp_sink.rtcp())
    plis = [media_ssrc for pt, fmt, _, media_ssrc in feedback if (pt, fmt) == (206, 1)]
    assert plis and set(plis) == {H264_PCAP_SSRC}, feedback

    assert (await rest.post("/rest-api/call/terminate", {"callId": "k1"}))[0] == 200
    call = await rest.wait_status("k1", {"FINISH"})
    assert call["info"] == "Normal call clearing"
    assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    assert bob.received("BYE")
    await rest.wait_gone("k1", server.settings.call_keep_finished_s)


async def test_terminate_before_answer_sends_cancel(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any
) -> None:
    bob = sipp_uas_factory("uas_ring_no_answer")
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "k2", "ks2"))
    await rest.wait_status("k2", {"RING"}, timeout=20)
    assert (await rest.post("/rest-api/call/terminate", {"callId": "k2"}))[0] == 200
    call = await rest.wait_status("k2", {"FINISH", "FAILED"})
    assert call["status"] == "FINISH" and call["sipStatus"] == 487
    assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    assert bob.received("CANCEL")


async def test_callee_hangs_up_and_the_call_finishes(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any
) -> None:
    bob = sipp_uas_factory("uas_answer_then_bye", hangup_after_s=2)
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "k3", "ks3"))
    await rest.wait_status("k3", {"ESTABLISHED"}, timeout=20)
    call = await rest.wait_status("k3", {"FINISH"}, timeout=20)
    assert call["info"] == "Normal call clearing"
    assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    code, streams = await rest.post("/rest-api/stream/find", {"name": "ks3"})
    assert streams[0]["status"] == "UNPUBLISHED"


async def test_unregistered_callee_fails_with_the_proxy_reason(server: Server, rest: Rest, kamailio: Any) -> None:
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "k4", "ks4", callee="carol"))
    call = await rest.wait_status("k4", {"FAILED"}, timeout=20)
    assert call["sipStatus"] == 404 and call["info"].startswith("404")
    assert server.gateway.ports.in_use == 0


@pytest.mark.parametrize("register", ["true", "false"])
async def test_wrong_password_fails_with_authentication_failed(
    server: Server, rest: Rest, kamailio: Any, register: str
) -> None:
    body = alice_call(kamailio, "k5", "ks5", sipPassword="wrong", sipRegisterRequired=register)
    await rest.post("/rest-api/call/startup", body)
    call = await rest.wait_status("k5", {"FAILED"}, timeout=20)
    assert call["info"] == "Authentication failed"
    assert call["sipStatus"] in (401, 407)
    # One retry, never a loop: at most two challenges for the request.
    method = "REGISTER" if register == "true" else "INVITE"
    attempts = kamailio.log_text().count(f"{method} sip:") if hasattr(kamailio, "log_text") else 0
    assert attempts <= 4


async def test_call_over_tcp_to_the_proxy(server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any) -> None:
    bob = sipp_uas_factory("uas_answer")
    body = alice_call(kamailio, "t1", "ts1", sipOutboundProxy=f"127.0.0.1:{kamailio.port};transport=tcp")
    assert (await rest.post("/rest-api/call/startup", body))[0] == 200
    call = await rest.wait_status("t1", {"ESTABLISHED"}, timeout=20)
    assert call["sipStatus"] == 200
    assert server.gateway.ua is not None and server.gateway.ua.transport.stats.tcp_connections >= 1
    await assert_real_video(server.gateway.streams["ts1"])
    assert (await rest.post("/rest-api/call/terminate", {"callId": "t1"}))[0] == 200
    await rest.wait_status("t1", {"FINISH"})
    assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    assert bob.received("BYE")
    assert "/tcp" in kamailio.log_text() or "TCP" in kamailio.log_text()



async def test_no_answer_within_invite_timeout_cancels_and_fails(
    kamailio: Any, sipp_uas_factory: Any, server_with: Any
) -> None:
    bob = sipp_uas_factory("uas_ring_no_answer")
    _, rest = await server_with(sip_invite_timeout_s=2)
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "n1", "ns1"))
    await rest.wait_status("n1", {"RING"}, timeout=10)
    call = await rest.wait_status("n1", {"FAILED", "FINISH"}, timeout=10)
    assert call["status"] == "FAILED" and call["info"] == "Failed by request timeout"
    assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    assert bob.received("CANCEL")
