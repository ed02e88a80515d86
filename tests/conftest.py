"""Shared fixtures: an in-process sipstream server on loopback ports, the
built-in loopback callee, and a small REST client."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from sipstream import Settings
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .peers.media import SOURCE_FPS, SOURCE_HEIGHT, SOURCE_WIDTH
from .peers.util import free_port


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under ``CI=true`` (the test command's default) a skipped test fails:
    CI proves every claim or says which peer is missing. Each phase's report
    is also kept on the item (``rep_setup``, ``rep_call``) for the peer
    fixtures, which print their logs only when the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("CI", "").lower() == "true":
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true, which allows no skip: {reason}"


def free_tcp_port() -> int:
    """A free TCP port for a test server to listen on, outside the ranges
    the kernel hands out for port 0 (see ``peers.util.free_port``)."""
    return free_port(udp=False, tcp=True)


# Media port ranges for test servers: 200 ports each, below the kernel's
# ephemeral range (32768-60999 here) so no peer's random port lands in one.
# The ranges cycle; a server lives for one test, so a range is free again
# long before it comes back.
MEDIA_PORTS_FIRST, MEDIA_PORTS_END, MEDIA_PORTS_EACH = 10000, 32600, 200
_media_ranges = itertools.cycle(range(MEDIA_PORTS_FIRST, MEDIA_PORTS_END, MEDIA_PORTS_EACH))


def media_range() -> tuple[int, int]:
    """A media port range no other server of the last ~110 uses."""
    base = next(_media_ranges)
    return base, base + MEDIA_PORTS_EACH - 1


class Rest:
    """POSTs JSON to the server's REST API and returns (status, json-or-text)."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.http = http

    async def get(self, path: str) -> Any:
        """GET ``path``'s JSON (asserting a 200)."""
        async with self.http.get(self.base_url + path) as res:
            assert res.status == 200, await res.text()
            return await res.json()

    async def post(self, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else __import__("json").dumps(body))
        async with self.http.post(self.base_url + path, data=data,
                                  headers={"Content-Type": "application/json"}) as res:
            text = await res.text()
            try:
                return res.status, await res.json(content_type=None) if text else None
            except ValueError:
                return res.status, text

    async def find_call(self, call_id: str) -> tuple[int, Any]:
        return await self.post("/rest-api/call/find", {"callId": call_id})

    async def wait_status(self, call_id: str, statuses: set[str], timeout: float = 15.0) -> dict[str, Any]:
        """Poll /call/find until the call reaches one of ``statuses``."""
        deadline = asyncio.get_running_loop().time() + timeout
        seen = None
        while asyncio.get_running_loop().time() < deadline:
            code, body = await self.find_call(call_id)
            if code == 200:
                seen = body[0]
                if seen["status"] in statuses:
                    return seen
            await asyncio.sleep(0.1)
        raise AssertionError(f"call {call_id} never reached {statuses}; last seen {seen}")

    async def start_call(self, body: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
        """POST /call/startup with ``body`` and wait until the call is
        ESTABLISHED (failing at once if it ends instead); the Call object."""
        code, answer = await self.post("/rest-api/call/startup", body)
        assert code == 200, answer
        call = await self.wait_status(body["callId"], {"ESTABLISHED", "FAILED", "FINISH", "BUSY"}, timeout)
        assert call["status"] == "ESTABLISHED", call
        return call

    async def wait_gone(self, call_id: str, kept_s: float, timeout: float = 20.0) -> None:
        """Poll /call/find until the ended call is gone (404): not before about
        ``kept_s`` (``call_keep_finished_s``; half of it as margin, since the
        call ended a little before this is called), and within ``timeout``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (await self.find_call(call_id))[0] != 404:
            assert loop.time() - start < timeout, f"call {call_id} still listed after {timeout} s"
            await asyncio.sleep(0.1)
        assert loop.time() - start >= kept_s / 2, f"call {call_id} forgotten before call_keep_finished_s"


async def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "the condition",
                     interval: float = 0.05) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(interval)


def make_settings(**overrides: Any) -> Settings:
    first, last = media_range()
    values: dict[str, Any] = {
        "http_port": free_tcp_port(), "ip": "127.0.0.1", "media_port_from": first, "media_port_to": last,
        "call_keep_finished_s": 2, "sip_transaction_timeout_s": 4, "sip_t1_ms": 100,
        "webrtc_port": 0,
        "ws_port": 0, "hls_port": 0, "rtsp_port": 0,  # off unless a test asks (never the default 8080/8082/5554)
        "rtsp_udp_port": 0,  # and RTSP's UDP pair, when asked for, any free one
        "rest_rate_limit": 0,  # tests poll and post faster than a client should; test_operability tests it
    }
    values.update(overrides)
    return Settings.load(environ={}, overrides=values)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server(make_settings())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def server_with() -> AsyncIterator[Any]:
    """``await server_with(**settings)`` -> (Server, Rest) for a test that
    needs settings of its own; everything is stopped at teardown."""
    made: list[tuple[Server, aiohttp.ClientSession]] = []

    async def make(**overrides: Any) -> tuple[Server, Rest]:
        srv = Server(make_settings(**overrides))
        await srv.start()
        http = aiohttp.ClientSession()
        made.append((srv, http))
        return srv, Rest(srv.base_url, http)

    yield make
    for srv, http in made:
        await http.close()
        await srv.stop()


@pytest.fixture
async def rest(server: Server) -> AsyncIterator[Rest]:
    async with aiohttp.ClientSession() as http:
        yield Rest(server.base_url, http)


@pytest.fixture
async def callee() -> AsyncIterator[LoopbackCallee]:
    c = LoopbackCallee(width=SOURCE_WIDTH, height=SOURCE_HEIGHT, fps=SOURCE_FPS, loop_seconds=2.0)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


def loopback_call(callee: LoopbackCallee, call_id: str, stream: str, **extra: Any) -> dict[str, Any]:
    body = {
        "callId": call_id, "callee": "demo", "toStream": stream, "hasAudio": "true", "hasVideo": "true",
        "sipLogin": "caller", "sipDomain": "127.0.0.1", "sipPort": str(callee.port),
        "sipRegisterRequired": "false",
    }
    body.update(extra)
    return body
