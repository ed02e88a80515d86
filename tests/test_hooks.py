"""REST hooks (SPEC.md §2, WCS REST hooks): CallStatusEvent and
StreamStatusEvent POSTed to ``<app url>/<EventName>`` over real HTTP on
127.0.0.1, in order per call, never holding a call up."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sipstream.api.hooks import RestHooks
from sipstream.gateway import CallEvent, StreamEvent
from sipstream.server import Server
from sipstream.settings import SettingsError
from sipstream.sip.call import CallStatus
from sipstream.testing import LoopbackCallee

from .conftest import Rest, free_tcp_port, loopback_call, make_settings, wait_until

HOOK_LOG = "sipstream.api.hooks"
PASSWORD = "s3cret-sip-pw"


class HookReceiver:
    """A WCS-style application backend on 127.0.0.1 that records every hook,
    echoes the body (as EchoApp does) and can hold answers back."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], str]] = []  # (path, json, raw)
        self.content_types: list[str] = []
        self.delay_s = 0.0
        self.hold: Callable[[str, dict[str, Any]], bool] = lambda path, body: False
        self.release = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.text()
        body = json.loads(raw)
        self.received.append((request.path, body, raw))
        self.content_types.append(request.content_type)
        self._arrived.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                try:
                    await asyncio.wait_for(self.release.wait(), self.delay_s)
                except TimeoutError:
                    pass
            if self.hold(request.path, body):
                await self.release.wait()
        finally:
            self.in_flight -= 1
        return web.json_response(body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def events(self, path_part: str = "", call_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return [
            (path, body) for path, body, _ in self.received
            if path_part in path and (call_id is None or body.get("callId") == call_id)
        ]

    def statuses(self, path: str, key: str = "callId", value: str | None = None) -> list[str]:
        return [b["status"] for p, b, _ in self.received if p == path and (value is None or b.get(key) == value)]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not predicate():
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), 0.1)
                except TimeoutError:
                    pass

        await asyncio.wait_for(loop(), timeout)


@pytest.fixture
async def receiver() -> AsyncIterator[HookReceiver]:
    r = HookReceiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def start_server(**overrides: Any) -> Server:
    srv = Server(make_settings(**overrides))
    await srv.start()
    return srv


async def run_call(rest: Rest, callee: LoopbackCallee, call_id: str, stream: str, **extra: Any) -> None:
    """Place a call to the loopback callee, wait for ESTABLISHED, hang up, wait for FINISH."""
    await rest.start_call(loopback_call(callee, call_id, stream, **extra))
    assert (await rest.post("/rest-api/call/terminate", {"callId": call_id}))[0] == 200
    await rest.wait_status(call_id, {"FINISH"})


def in_order(seen: list[str], expected: list[str]) -> bool:
    """``expected`` appears in ``seen`` as a subsequence."""
    it = iter(seen)
    return all(status in it for status in expected)


# ------------------------------------------------------------ whole calls
async def test_call_and_stream_events_reach_the_app_in_order(
    receiver: HookReceiver, callee: LoopbackCallee
) -> None:
    srv = await start_server(**{"app.EchoApp": f"{receiver.base}/apps/EchoApp"})
    try:
        async with aiohttp.ClientSession() as http:
            rest = Rest(srv.base_url, http)
            await run_call(rest, callee, "h1", "hs1", appKey="EchoApp", sipPassword=PASSWORD)
        call_path, stream_path = "/apps/EchoApp/CallStatusEvent", "/apps/EchoApp/StreamStatusEvent"
        await receiver.wait_until(lambda: "FINISH" in receiver.statuses(call_path)
                                  and "UNPUBLISHED" in receiver.statuses(stream_path))
        calls = receiver.statuses(call_path, "callId", "h1")
        assert calls[0] == "TRYING", calls
        assert calls[-1] == "FINISH", calls
        assert in_order(calls, ["TRYING", "ESTABLISHED", "FINISH"]), calls
        assert set(calls) <= {"TRYING", "RING", "SESSION_PROGRESS", "ESTABLISHED", "FINISH"}, calls
        assert len(calls) == len(set(calls)), f"a status was sent twice: {calls}"
        for path, body in receiver.events("CallStatusEvent"):
            assert path == call_path
            for field in ("callId", "status", "sipStatus", "info", "caller", "callee", "streamName",
                          "hasAudio", "hasVideo", "incoming", "appKey", "mediaProvider"):
                assert field in body, field
            assert body["callId"] == "h1" and body["callee"] == "demo" and body["streamName"] == "hs1"
            assert body["appKey"] == "EchoApp" and body["incoming"] is False
        established = next(b for _, b in receiver.events("CallStatusEvent") if b["status"] == "ESTABLISHED")
        assert established["sipStatus"] == 200
        finish = receiver.events("CallStatusEvent")[-1][1]
        assert finish["info"] == "Normal call clearing"

        streams = receiver.statuses(stream_path, "name", "hs1")
        assert in_order(streams, ["PUBLISHING", "UNPUBLISHED"]), streams
        assert streams[-1] == "UNPUBLISHED"
        for _, body in receiver.events("StreamStatusEvent"):
            assert body["name"] == "hs1" and body["published"] is True and "mediaSessionId" in body

        # The SIP password is in no hook body, under any key.
        for _, body, raw in receiver.received:
            assert PASSWORD not in raw and "sipPassword" not in body
        assert set(receiver.content_types) == {"application/json"}
        assert srv.hooks is not None
        assert srv.hooks.sent == len(receiver.received) and srv.hooks.failed == 0 and srv.hooks.dropped == 0
    finally:
        await srv.stop()


async def test_app_key_routing_unknown_key_sends_nothing_empty_key_uses_default_app(
    receiver: HookReceiver, callee: LoopbackCallee
) -> None:
    srv = await start_server(**{
        "app.EchoApp": f"{receiver.base}/apps/EchoApp",
        "app.defaultApp": f"{receiver.base}/apps/Default/",  # a trailing slash is fine
    })
    try:
        async with aiohttp.ClientSession() as http:
            rest = Rest(srv.base_url, http)
            await run_call(rest, callee, "unk", "rs1", appKey="NoSuchApp")
            await run_call(rest, callee, "dflt", "rs2")  # no appKey
            await run_call(rest, callee, "echo", "rs3", appKey="EchoApp")
        await receiver.wait_until(lambda: "FINISH" in receiver.statuses("/apps/EchoApp/CallStatusEvent"))
        await receiver.wait_until(lambda: "FINISH" in receiver.statuses("/apps/Default/CallStatusEvent"))
        assert receiver.events(call_id="unk") == []
        assert not [b for _, b in receiver.events("StreamStatusEvent") if b["name"] == "rs1"]
        assert {b["callId"] for _, b in receiver.events("/apps/Default/CallStatusEvent")} == {"dflt"}
        assert {b["name"] for _, b in receiver.events("/apps/Default/StreamStatusEvent")} == {"rs2"}
        assert {b["callId"] for _, b in receiver.events("/apps/EchoApp/CallStatusEvent")} == {"echo"}
        assert {b["name"] for _, b in receiver.events("/apps/EchoApp/StreamStatusEvent")} == {"rs3"}
        assert srv.hooks is not None and srv.hooks.unrouted > 0
    finally:
        await srv.stop()


async def test_a_hook_that_sleeps_does_not_delay_the_call_and_is_cut_by_the_timeout(
    receiver: HookReceiver, callee: LoopbackCallee, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=HOOK_LOG)
    receiver.delay_s = 30.0
    # a timeout well beyond the time a loopback call takes to be answered,
    # even on a loaded machine, so the call is ESTABLISHED before it expires
    srv = await start_server(rest_hook_timeout_s=6, **{"app.EchoApp": f"{receiver.base}/apps/EchoApp"})
    try:
        assert srv.hooks is not None
        async with aiohttp.ClientSession() as http:
            rest = Rest(srv.base_url, http)
            code, _ = await rest.post("/rest-api/call/startup", loopback_call(callee, "slow", "ss1", appKey="EchoApp"))
            assert code == 200
            await rest.wait_status("slow", {"ESTABLISHED"}, timeout=10)
            # The call got there while its first hook (TRYING) was still being held:
            # nothing has come back from the hook yet.
            assert srv.hooks.sent == 0 and srv.hooks.failed == 0
            assert receiver.statuses("/apps/EchoApp/CallStatusEvent") == ["TRYING"]
            # The held POST is cut after rest_hook_timeout_s and the next event goes out.
            await wait_until(lambda: srv.hooks is not None and srv.hooks.failed >= 1, timeout=15)
            await receiver.wait_until(lambda: len(receiver.statuses("/apps/EchoApp/CallStatusEvent")) >= 2)
            second = receiver.statuses("/apps/EchoApp/CallStatusEvent")[1]
            assert second in ("RING", "ESTABLISHED"), second
            assert (await rest.post("/rest-api/call/terminate", {"callId": "slow"}))[0] == 200
            await rest.wait_status("slow", {"FINISH"}, timeout=10)
        assert srv.hooks.sent == 0
        warnings = [r.getMessage() for r in caplog.records if r.name == HOOK_LOG and r.levelno == logging.WARNING]
        assert any(f"{receiver.base}/apps/EchoApp/" in m and "no answer within 6 s" in m for m in warnings), warnings
    finally:
        await srv.stop()


async def test_a_dead_hook_is_logged_without_its_password_and_the_call_goes_on(
    callee: LoopbackCallee, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=HOOK_LOG)
    closed_port = free_tcp_port()  # bound then closed: nothing listens there
    srv = await start_server(**{"app.EchoApp": f"http://hookuser:hookpw42@127.0.0.1:{closed_port}/apps/EchoApp"})
    try:
        assert srv.hooks is not None
        async with aiohttp.ClientSession() as http:
            rest = Rest(srv.base_url, http)
            await run_call(rest, callee, "dead", "ds1", appKey="EchoApp", sipPassword=PASSWORD)
        await wait_until(lambda: srv.hooks is not None and srv.hooks.failed >= 4)
        assert srv.hooks.sent == 0
        warnings = [r.getMessage() for r in caplog.records if r.name == HOOK_LOG and r.levelno == logging.WARNING]
        # One warning per app per interval, naming the URL and the reason.
        assert len(warnings) == 1, warnings
        assert f"127.0.0.1:{closed_port}/apps/EchoApp/" in warnings[0]
        assert "ClientConnectorError" in warnings[0] or "Cannot connect" in warnings[0]
        assert "hookpw42" not in caplog.text and PASSWORD not in caplog.text
    finally:
        await srv.stop()


async def test_disable_rest_requests_sends_nothing(receiver: HookReceiver, callee: LoopbackCallee) -> None:
    srv = await start_server(disable_rest_requests="true", **{"app.EchoApp": f"{receiver.base}/apps/EchoApp"})
    try:
        async with aiohttp.ClientSession() as http:
            rest = Rest(srv.base_url, http)
            await run_call(rest, callee, "off", "os1", appKey="EchoApp")
        # Enabled, the call's hooks would have arrived long before this.
        await asyncio.sleep(2.0)
        assert receiver.received == []
        assert srv.hooks is not None and not srv.hooks.enabled and srv.hooks.sent == 0
    finally:
        await srv.stop()


async def test_call_events_follows_one_call_to_its_end(callee: LoopbackCallee) -> None:
    srv = await start_server()
    try:
        seen: list[tuple[str, str]] = []

        async def follow() -> None:
            async for event in srv.gateway.call_events("ce1"):
                seen.append((event.name, event.payload["status"]))

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0)
        async with aiohttp.ClientSession() as http:
            rest = Rest(srv.base_url, http)
            await rest.post("/rest-api/call/startup", loopback_call(callee, "other", "os9"))
            await run_call(rest, callee, "ce1", "cs1")
        await asyncio.wait_for(follower, 5)  # ends by itself after FINISH
        calls = [s for n, s in seen if n == "CallStatusEvent"]
        streams = [s for n, s in seen if n == "StreamStatusEvent"]
        assert calls[0] == "TRYING" and calls[-1] == "FINISH" and "ESTABLISHED" in calls
        assert in_order(streams, ["PUBLISHING", "UNPUBLISHED"])
    finally:
        await srv.stop()


# ------------------------------------- delivery rules, with a scripted gateway
class ScriptedGateway:
    """Just enough of a Gateway for RestHooks: settings and events()."""

    def __init__(self, **overrides: Any) -> None:
        self.settings = make_settings(**overrides)
        self.calls: dict[str, Any] = {}
        self._queues: list[asyncio.Queue[Any]] = []

    def emit(self, event: Any) -> None:
        for queue in self._queues:
            queue.put_nowait(event)

    async def events(self) -> AsyncIterator[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.remove(queue)


def call_event(call_id: str, status: str, app_key: str = "EchoApp") -> CallEvent:
    body = {"callId": call_id, "status": status, "streamName": f"stream-{call_id}", "info": ""}
    return CallEvent(call_id, CallStatus(status), "", body, app_key)


def stream_event(call_id: str, status: str, app_key: str = "EchoApp") -> StreamEvent:
    name = f"stream-{call_id}"
    return StreamEvent(name, status, {"name": name, "status": status, "callIdForTest": call_id}, app_key)


async def test_one_call_in_order_while_other_calls_go_on_and_concurrency_is_bounded(
    receiver: HookReceiver,
) -> None:
    gw = ScriptedGateway(rest_max_connections=2, **{"app.EchoApp": f"{receiver.base}/apps/EchoApp"})
    # Call A's first hook is held until released.
    receiver.hold = lambda path, body: body.get("callId") == "A" and body["status"] == "TRYING"
    hooks = RestHooks(gw)  # type: ignore[arg-type]
    await hooks.start()
    try:
        for status in ("TRYING", "RING", "ESTABLISHED"):
            gw.emit(call_event("A", status))
        gw.emit(stream_event("A", "PUBLISHING"))
        for status in ("TRYING", "ESTABLISHED", "FINISH"):
            gw.emit(call_event("B", status))
        await receiver.wait_until(lambda: receiver.statuses("/apps/EchoApp/CallStatusEvent", "callId", "B")
                                  == ["TRYING", "ESTABLISHED", "FINISH"])
        # B went through while A waits behind its held TRYING.
        assert receiver.statuses("/apps/EchoApp/CallStatusEvent", "callId", "A") == ["TRYING"]
        receiver.release.set()
        await receiver.wait_until(lambda: len(receiver.received) == 7)
        order_a = [(p.rsplit("/", 1)[1], b["status"]) for p, b, _ in receiver.received
                   if b.get("callId") == "A" or b.get("callIdForTest") == "A"]
        assert order_a == [("CallStatusEvent", "TRYING"), ("CallStatusEvent", "RING"),
                           ("CallStatusEvent", "ESTABLISHED"), ("StreamStatusEvent", "PUBLISHING")]

        # Many calls at once: never more than rest_max_connections POSTs in flight.
        receiver.delay_s, receiver.release = 0.2, asyncio.Event()
        receiver.max_in_flight = 0
        for i in range(10):
            gw.emit(call_event(f"M{i}", "TRYING"))
        await receiver.wait_until(lambda: hooks.sent == 17)
        assert 1 < receiver.max_in_flight <= 2
        assert hooks.failed == 0 and hooks.dropped == 0
    finally:
        await hooks.close()


async def test_a_full_queue_drops_the_oldest_and_warns_once_per_burst(
    receiver: HookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=HOOK_LOG)
    gw = ScriptedGateway(rest_max_connections=1, rest_hook_queue_size=5,
                         **{"app.EchoApp": f"{receiver.base}/apps/EchoApp"})
    receiver.hold = lambda path, body: True
    hooks = RestHooks(gw)  # type: ignore[arg-type]
    await hooks.start()
    try:
        gw.emit(call_event("C0", "TRYING"))
        await receiver.wait_until(lambda: len(receiver.received) == 1)  # in flight, held
        for i in range(1, 21):
            gw.emit(call_event(f"C{i}", "TRYING"))
        await wait_until(lambda: hooks.dropped + hooks.queued == 20)
        assert hooks.queued == 5 and hooks.dropped == 15
        receiver.hold = lambda path, body: False
        receiver.release.set()
        await wait_until(lambda: hooks.sent == 6)
        # The newest five were kept, in order.
        assert [b["callId"] for _, b, _ in receiver.received] == ["C0", "C16", "C17", "C18", "C19", "C20"]
        messages = [r.getMessage() for r in caplog.records if r.name == HOOK_LOG]
        assert sum("dropping the oldest" in m for m in messages) == 1, messages
        assert any("15 events dropped" in m for m in messages), messages
    finally:
        await hooks.close()


async def test_close_cancels_pending_deliveries_and_leaves_no_task(receiver: HookReceiver) -> None:
    gw = ScriptedGateway(**{"app.EchoApp": f"{receiver.base}/apps/EchoApp"})
    receiver.hold = lambda path, body: True
    hooks = RestHooks(gw)  # type: ignore[arg-type]
    await hooks.start()
    for i in range(5):
        gw.emit(call_event(f"X{i}", "TRYING"))
        gw.emit(call_event(f"X{i}", "ESTABLISHED"))
    await receiver.wait_until(lambda: len(receiver.received) == 5)
    session = hooks._session
    assert session is not None
    await asyncio.wait_for(hooks.close(), 2)
    assert session.closed
    assert gw._queues == []  # unsubscribed from the gateway
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("rest-hook")]
    assert leftovers == []
    assert hooks.sent == 0 and hooks.queued == 0
    gw.emit(call_event("late", "TRYING"))  # after close: ignored, nothing raised
    await hooks.close()  # twice is fine


def test_bad_hook_settings_fail_at_start_with_the_key_named() -> None:
    for overrides, key in (
        ({"rest_max_connections": 0}, "rest_max_connections"),
        ({"rest_hook_timeout_s": 0}, "rest_hook_timeout_s"),
        ({"rest_hook_queue_size": 0}, "rest_hook_queue_size"),
        ({"app.EchoApp": "ftp://127.0.0.1/x"}, "app.EchoApp"),
        ({"app.EchoApp": "not a url"}, "app.EchoApp"),
    ):
        gw = ScriptedGateway(**overrides)
        with pytest.raises(SettingsError, match=key):
            RestHooks(gw)  # type: ignore[arg-type]
