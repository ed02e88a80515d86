"""Every call situation a PBX or carrier produces, one sipp scenario each,
through Kamailio: the SIP messages sipp saw, and the statuses and reasons
sipstream reports over REST."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from sipstream.server import Server

from .conftest import Rest, make_settings, wait_until
from .media_checks import real_frames_grow
from .peers.fixtures import *  # noqa: F401,F403  (kamailio, sipp fixtures, failure logs)
from .peers.sipp import sip_header
from .test_hooks import HookReceiver
from .test_sip_kamailio import alice_call

# alice_call() sends appKey "defaultApp": every test's statuses are also
# checked as CallStatusEvents POSTed to this app's REST hooks.
APP = "defaultApp"
CALL_HOOK = f"/apps/{APP}/CallStatusEvent"
STREAM_HOOK = f"/apps/{APP}/StreamStatusEvent"


@pytest.fixture
async def hooks() -> Any:
    receiver = HookReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
async def server(hooks: HookReceiver) -> Any:
    """The conftest server, with defaultApp's hooks going to ``hooks``."""
    srv = Server(make_settings(**{f"app.{APP}": f"{hooks.base}/apps/{APP}"}))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def hook_statuses(hooks: HookReceiver, call_id: str, final: set[str]) -> list[str]:
    """The call's statuses as its CallStatusEvent hooks reported them, once the last is final."""
    await hooks.wait_until(lambda: bool(set(hooks.statuses(CALL_HOOK, value=call_id)[-1:]) & final))
    return hooks.statuses(CALL_HOOK, value=call_id)


def in_order(seen: list[str], expected: list[str]) -> bool:
    """``expected`` is a subsequence of ``seen``."""
    rest = iter(seen)
    return all(status in rest for status in expected)

pytestmark = pytest.mark.peers


async def _finish(rest: Rest, call_id: str, bob: Any, hooks: HookReceiver | None = None,
                  expected: tuple[str, ...] = ("ESTABLISHED",)) -> None:
    """Hang up; bob saw it; with ``hooks``, the hook statuses went through ``expected`` to FINISH."""
    assert (await rest.post("/rest-api/call/terminate", {"callId": call_id}))[0] == 200
    await rest.wait_status(call_id, {"FINISH"})
    assert await asyncio.to_thread(bob.wait, 20) == 0, bob.diagnostics()[-4000:]
    if hooks is not None:
        statuses = await hook_statuses(hooks, call_id, {"FINISH"})
        assert in_order(statuses, [*expected, "FINISH"]) and statuses.count("FINISH") == 1, statuses


@pytest.mark.parametrize(("code", "status", "info"), [
    (486, "BUSY", "486 Busy Here"),
    (600, "BUSY", "600 Busy Everywhere"),
    (403, "FAILED", "403 Forbidden"),
    (480, "FAILED", "480 Temporarily Unavailable"),
    (503, "FAILED", "503 Service Unavailable"),
    (488, "FAILED", "No common codecs"),
    (408, "FAILED", "Failed by request timeout"),
])
async def test_final_errors_map_to_wcs_statuses(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any, hooks: HookReceiver,
    code: int, status: str, info: str
) -> None:
    bob = sipp_uas_factory("uas_reject", code=code, ring=True)
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "e1", "es1"))
    call = await rest.wait_status("e1", {"BUSY", "FAILED", "FINISH"}, timeout=20)
    assert (call["status"], call["info"]) == (status, info)
    assert call["sipStatus"] == code
    statuses = await hook_statuses(hooks, "e1", {"BUSY", "FAILED", "FINISH"})
    assert in_order(statuses, ["TRYING", "RING", status]) and "ESTABLISHED" not in statuses, statuses
    final = hooks.events("CallStatusEvent", "e1")[-1][1]
    assert (final["info"], final["sipStatus"]) == (info, code)
    assert "FAILED" in hooks.statuses(STREAM_HOOK, "name", "es1")
    assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    assert bob.received("ACK")
    assert server.gateway.ports.in_use == 0


async def test_early_media_starts_the_stream_before_the_answer(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any, hooks: HookReceiver
) -> None:
    bob = sipp_uas_factory("uas_early_media", answer_after_ms=3000)
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "m1", "ms1"))
    call = await rest.wait_status("m1", {"RING_MEDIA"}, timeout=20)
    assert call["sipStatus"] == 183
    stream = server.gateway.streams["ms1"]
    # bob's early RTP itself arrived (not the generator's placeholders) ...
    await real_frames_grow(stream, "audio", count=25, timeout=2.5)
    await real_frames_grow(stream, "video", count=10, timeout=2.5)
    assert stream.status == "PUBLISHING"
    code, calls = await rest.find_call("m1")
    assert calls[0]["status"] == "RING_MEDIA"  # ... while the call still rang
    await rest.wait_status("m1", {"ESTABLISHED"}, timeout=10)
    await _finish(rest, "m1", bob, hooks, ("RING_MEDIA", "ESTABLISHED"))
    # the stream was PUBLISHING (hook) while the call still rang
    stream_events = [(p, b["status"]) for p, b, _ in hooks.received if p == STREAM_HOOK]
    call_events = [(p, b["status"]) for p, b, _ in hooks.received if p == CALL_HOOK and b["callId"] == "m1"]
    everything = [(p, b["status"]) for p, b, _ in hooks.received]
    assert (STREAM_HOOK, "PUBLISHING") in stream_events and (CALL_HOOK, "ESTABLISHED") in call_events
    assert everything.index((STREAM_HOOK, "PUBLISHING")) < everything.index((CALL_HOOK, "ESTABLISHED"))


async def test_far_end_hold_and_resume(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any, hooks: HookReceiver
) -> None:
    bob = sipp_uas_factory("uas_hold", hold_after_ms=1000, resume_after_ms=1500)
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "o1", "os1"))
    await rest.wait_status("o1", {"ESTABLISHED"}, timeout=20)
    await rest.wait_status("o1", {"HOLD"}, timeout=10)
    await rest.wait_status("o1", {"ESTABLISHED"}, timeout=10)
    await _finish(rest, "o1", bob, hooks, ("ESTABLISHED", "HOLD", "ESTABLISHED"))
    answers = bob.received_messages("200")
    assert any("a=recvonly" in m or "a=inactive" in m for m in answers)


async def test_media_follows_a_reinvite_to_new_ports(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any
) -> None:
    bob = sipp_uas_factory("uas_media_change", change_after_ms=1000, telephone_event=101)
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "c1", "cs1"))
    await rest.wait_status("c1", {"ESTABLISHED"}, timeout=20)
    await wait_until(lambda: bool(bob.sent_messages("ACK")))  # bob's re-INVITE to new ports was answered
    # After the re-INVITE, what we send (here RFC 4733 DTMF) goes to the new ports.
    assert (await rest.post("/rest-api/call/send_dtmf", {"callId": "c1", "dtmf": "4"}))[0] == 200
    await wait_until(lambda: any(p.pt == 101 for p in bob.media.changed.audio_sink.rtp()))
    moved = [p for p in bob.media.changed.audio_sink.rtp() if p.pt == 101]
    assert moved and all(p.payload[0] == 4 for p in moved)
    await _finish(rest, "c1", bob)


async def test_session_refresh_by_update_is_answered_with_session_expires(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any
) -> None:
    bob = sipp_uas_factory("uas_update_session_timer", session_expires=90, update_after_ms=1000)
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "u1", "us1"))
    await rest.wait_status("u1", {"ESTABLISHED"}, timeout=20)
    await asyncio.sleep(2.0)
    call = (await rest.find_call("u1"))[1][0]
    assert call["status"] == "ESTABLISHED"
    await _finish(rest, "u1", bob)


async def test_dtmf_info_and_keyframe_info_reach_the_callee(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any, hooks: HookReceiver
) -> None:
    bob = sipp_uas_factory("uas_info_dtmf")
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "i1", "is1"))
    await rest.wait_status("i1", {"ESTABLISHED"}, timeout=20)
    assert (await rest.post("/rest-api/call/send_dtmf", {"callId": "i1", "dtmf": "7#", "type": "INFO"}))[0] == 200
    await _finish(rest, "i1", bob, hooks)
    infos = bob.received_messages("INFO")
    bodies = [m for m in infos if "application/dtmf-relay" in m]
    assert len(bodies) == 2 and "Signal=7" in bodies[0] and "Signal=#" in bodies[1]


async def test_rfc2833_dtmf_reaches_the_callee_as_telephone_events(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any
) -> None:
    bob = sipp_uas_factory("uas_answer", media="sink", telephone_event=101)
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "f1", "fs1"))
    await rest.wait_status("f1", {"ESTABLISHED"}, timeout=20)
    assert (await rest.post("/rest-api/call/send_dtmf", {"callId": "f1", "dtmf": "9"}))[0] == 200
    await wait_until(lambda: sum(1 for p in bob.media.audio_sink.rtp() if p.pt == 101 and p.payload[1] & 0x80) >= 3)
    packets = [p for p in bob.media.audio_sink.rtp() if p.pt == 101]
    events = [struct.unpack("!BBH", p.payload[:4]) for p in packets]
    assert events and all(e == 9 for e, _, _ in events)
    assert sum(1 for _, flags, _ in events if flags & 0x80) == 3
    # rtp_session_init_always: silent PCMU primed the far end right after the answer.
    assert any(p.pt == 0 and p.payload == b"\xff" * 160 for p in bob.media.audio_sink.rtp())
    await _finish(rest, "f1", bob)


async def test_no_rtp_hangs_up_with_failed_by_rtp_activity(
    kamailio: Any, sipp_uas_factory: Any, server_with: Any, hooks: HookReceiver
) -> None:
    bob = sipp_uas_factory("uas_no_rtp")
    _, rest = await server_with(rtp_activity_timeout_s=2, **{f"app.{APP}": f"{hooks.base}/apps/{APP}"})
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "n1", "ns1"))
    await rest.wait_status("n1", {"ESTABLISHED"}, timeout=20)
    call = await rest.wait_status("n1", {"FAILED"}, timeout=15)
    assert call["info"] == "Failed by RTP activity"
    assert in_order(await hook_statuses(hooks, "n1", {"FAILED"}), ["ESTABLISHED", "FAILED"])
    assert hooks.events("CallStatusEvent", "n1")[-1][1]["info"] == "Failed by RTP activity"
    assert await asyncio.to_thread(bob.wait, 15) == 0, bob.diagnostics()[-3000:]
    assert bob.received("BYE")


async def test_options_inside_the_dialog_is_answered(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any, hooks: HookReceiver
) -> None:
    bob = sipp_uas_factory("uas_options_in_dialog", options_after_ms=800)
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "p1", "ps1"))
    await rest.wait_status("p1", {"ESTABLISHED"}, timeout=20)
    await asyncio.sleep(1.5)
    await _finish(rest, "p1", bob, hooks)


async def test_challenged_bye_is_resent_with_credentials(
    server: Server, rest: Rest, kamailio: Any, sipp_uas_factory: Any
) -> None:
    bob = sipp_uas_factory("uas_challenge_bye")
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "b1", "bs1"))
    await rest.wait_status("b1", {"ESTABLISHED"}, timeout=20)
    await _finish(rest, "b1", bob)
    byes = bob.received_messages("BYE")
    assert len(byes) == 2 and "Authorization: Digest" in byes[1]


async def test_sipstream_refreshes_the_session_when_it_is_the_refresher(
    kamailio: Any, sipp_uas_factory: Any, server_with: Any, hooks: HookReceiver
) -> None:
    """RFC 4028 with us as refresher: bob answers Session-Expires: 4;refresher=uac
    (sip_min_se_s lowered to 4 for the test) and fails unless our refresh
    comes within 3.5 s; we send an UPDATE every 2 s while the call lasts."""
    bob = sipp_uas_factory("uas_expect_refresh", session_expires=4, refresh_wait_ms=3500)
    _, rest = await server_with(sip_min_se_s=4, **{f"app.{APP}": f"{hooks.base}/apps/{APP}"})
    await rest.post("/rest-api/call/startup", alice_call(kamailio, "t1", "ts1"))
    await rest.wait_status("t1", {"ESTABLISHED"}, timeout=20)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while len(bob.received_messages("UPDATE")) < 2:  # one every 2 s
        assert loop.time() < deadline, bob.diagnostics()[-3000:]
        await asyncio.sleep(0.1)
    assert (await rest.find_call("t1"))[1][0]["status"] == "ESTABLISHED"
    await _finish(rest, "t1", bob, hooks)
    # RFC 4028 §7.4: each refresh carries the interval negotiated (4 s), not our initial offer
    updates = bob.received_messages("UPDATE")
    assert all(sip_header(m, "Session-Expires") == "4;refresher=uac" for m in updates), updates
