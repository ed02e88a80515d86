"""Call control over REST against the loopback callee: hold/unhold by
re-INVITE, DTMF as RFC 4733 events and as SIP INFO, RTP inactivity,
session priming, and input errors."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from sipstream.testing import LoopbackCallee

from .conftest import Rest, loopback_call


async def _established(rest: Rest, callee: LoopbackCallee, call_id: str) -> None:
    await rest.start_call(loopback_call(callee, call_id, call_id + "-s"))


async def test_hold_and_unhold_send_reinvites_and_change_status(rest: Rest, callee: LoopbackCallee) -> None:
    await _established(rest, callee, "h1")
    invites = callee.received.count("INVITE")
    assert (await rest.post("/rest-api/call/hold", {"callId": "h1"}))[0] == 200
    call = await rest.wait_status("h1", {"HOLD"})
    assert call["status"] == "HOLD"
    assert (await rest.post("/rest-api/call/unhold", {"callId": "h1"}))[0] == 200
    await rest.wait_status("h1", {"ESTABLISHED"})
    assert callee.received.count("INVITE") == invites + 2
    assert "ACK" in callee.received


async def test_dtmf_over_sip_info_sends_dtmf_relay(rest: Rest, callee: LoopbackCallee) -> None:
    await _established(rest, callee, "d1")
    code, _ = await rest.post("/rest-api/call/send_dtmf", {"callId": "d1", "dtmf": "1#", "type": "INFO"})
    assert code == 200
    relays = [body for ctype, body in callee.infos if ctype == "application/dtmf-relay"]
    assert [b.splitlines()[0] for b in relays] == ["Signal=1", "Signal=#"]


async def test_dtmf_rfc2833_sends_telephone_events_with_end_packets(rest: Rest, callee: LoopbackCallee) -> None:
    await _established(rest, callee, "d2")
    code, _ = await rest.post("/rest-api/call/send_dtmf", {"callId": "d2", "dtmf": "5*", "type": "RFC2833"})
    assert code == 200

    def events_ended() -> int:  # end packets of both digits, 3 each
        return sum(1 for p in callee.rtp_received if p.payload_type == 101 and p.payload[1] & 0x80)

    for _ in range(100):
        if events_ended() >= 6:
            break
        await asyncio.sleep(0.05)
    events = [p for p in callee.rtp_received if p.payload_type == 101]
    decoded = [struct.unpack("!BBH", p.payload) for p in events]
    assert {e for e, _, _ in decoded} == {5, 10}
    for digit in (5, 10):
        packets = [(p, d) for p, d in zip(events, decoded, strict=True) if d[0] == digit]
        assert packets[0][0].marker  # first packet of the event
        assert len({p.timestamp for p, _ in packets}) == 1  # one timestamp per event
        ends = [d for _, d in packets if d[1] & 0x80]
        assert len(ends) == 3 and ends[0][2] >= 800  # end bit, three times, duration >= 100 ms at 8 kHz
        durations = [d[2] for _, d in packets]
        assert durations == sorted(durations)


async def test_call_control_errors(rest: Rest, callee: LoopbackCallee) -> None:
    code, body = await rest.post("/rest-api/call/hold", {"callId": "none"})
    assert code == 404
    code, body = await rest.post("/rest-api/call/send_dtmf", {"callId": "none", "dtmf": "1"})
    assert code == 404
    await _established(rest, callee, "e1")
    code, body = await rest.post("/rest-api/call/send_dtmf", {"callId": "e1", "dtmf": "1x"})
    assert code == 400 and "dtmf" in body["error"]
    code, body = await rest.post("/rest-api/call/send_dtmf", {"callId": "e1", "dtmf": "1", "type": "SMOKE"})
    assert code == 400 and "type" in body["error"]
    code, body = await rest.post("/rest-api/call/startup", loopback_call(callee, "e2", "e2s", sipTransport="SCTP"))
    assert code == 400 and "sipTransport" in body["error"]


async def test_session_is_primed_with_silence_after_the_answer(rest: Rest, callee: LoopbackCallee) -> None:
    await _established(rest, callee, "p1")
    for _ in range(100):
        if sum(1 for p in callee.rtp_received if p.payload_type == 0) >= 3:
            break
        await asyncio.sleep(0.05)
    silence = [p for p in callee.rtp_received if p.payload_type == 0]
    assert len(silence) >= 3 and all(p.payload == b"\xff" * 160 for p in silence)


async def test_no_rtp_ends_the_call_failed_by_rtp_activity(server_with: Any, callee: LoopbackCallee) -> None:
    _, rest = await server_with(rtp_activity_timeout_s=1.5)
    await _established(rest, callee, "q1")
    # The callee goes silent: stop its media task without hanging up.
    for leg in callee.calls.values():
        assert leg.task is not None
        leg.task.cancel()
    call = await rest.wait_status("q1", {"FAILED"}, timeout=10)
    assert call["info"] == "Failed by RTP activity"
    for _ in range(50):  # FAILED is shown as the BYE goes out
        if "BYE" in callee.received:
            break
        await asyncio.sleep(0.02)
    assert "BYE" in callee.received


async def test_calls_of_one_account_share_its_registration_and_unregister_after_the_last(
    rest: Rest, callee: LoopbackCallee
) -> None:
    def registers() -> list[str]:
        return [r.header("Expires") or "" for r in callee.requests if r.method == "REGISTER"]

    for call_id in ("r1", "r2"):
        body = loopback_call(callee, call_id, call_id + "-s", sipRegisterRequired="true", sipPassword="pw")
        assert (await rest.post("/rest-api/call/startup", body))[0] == 200
        await rest.wait_status(call_id, {"ESTABLISHED"})
    assert registers() == ["3600"]  # the second call reused the registration
    await rest.post("/rest-api/call/terminate", {"callId": "r1"})
    await rest.wait_status("r1", {"FINISH"})
    # r2 still uses the registration. An early un-REGISTER would follow r1's
    # BYE at once: wait for that BYE, then give it 2 s to show up.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while callee.received.count("BYE") < 1:
        assert loop.time() < deadline, callee.received
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)
    assert registers() == ["3600"], "un-REGISTER while a call still uses the registration"
    await rest.post("/rest-api/call/terminate", {"callId": "r2"})
    await rest.wait_status("r2", {"FINISH"})
    deadline = loop.time() + 10
    while "0" not in registers():
        assert loop.time() < deadline, "no un-REGISTER after the last call"
        await asyncio.sleep(0.1)
    last_bye = max(i for i, r in enumerate(callee.requests) if r.method == "BYE")
    unregister = next(i for i, r in enumerate(callee.requests) if r.method == "REGISTER" and r.header("Expires") == "0")
    assert unregister > last_bye  # after r2's BYE
    assert registers() == ["3600", "0"]  # one un-REGISTER, after the last call
