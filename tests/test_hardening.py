"""Hostile and broken input, as an attacker or a careless client sends it
(issue 12): every bad field is a 400 before anything starts, nothing a field
holds changes the SIP we send, no call is left PENDING for ever, the HTTP
API refuses cross-site and rebound requests, and shutdown is bounded."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from sipstream import gateway as gateway_module
from sipstream._core import NameAddr, SipMessage
from sipstream.api.rest import RELAYS
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, loopback_call, wait_until

# -------------------------------------------------------------- a raw UAS


class RawUas(asyncio.DatagramProtocol):
    """A far end on a UDP port that records every request and answers only
    as told: ``answer_invite`` 200 OK with an SDP, or nothing at all;
    ``answer_bye`` or not."""

    def __init__(self, answer_invite: bool = False, answer_bye: bool = True) -> None:
        self.answer_invite = answer_invite
        self.answer_bye = answer_bye
        self.requests: list[SipMessage] = []
        self.raw: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.last_source: tuple[str, int] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def methods(self) -> list[str]:
        return [r.method or "" for r in self.requests]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            message = SipMessage.parse(data)
        except ValueError:
            return
        if not message.is_request:
            return
        self.raw.append(data)
        self.requests.append(message)
        self.last_source = addr
        if message.method == "INVITE" and self.answer_invite:
            sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                   "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
            self.reply(message, 200, "OK", sdp.encode(), [("Contact", f"<sip:uas@127.0.0.1:{self.port}>"),
                                                          ("Content-Type", "application/sdp")])
        elif message.method == "BYE" and self.answer_bye:
            self.reply(message, 200, "OK")
        elif message.method == "CANCEL":
            self.reply(message, 200, "OK")

    def reply(self, request: SipMessage, status: int, reason: str, body: bytes = b"",
              extra: list[tuple[str, str]] | None = None) -> None:
        headers = [("Via", v) for v in request.header_all("Via")]
        to = request.header("To") or ""
        if ";tag=" not in to:
            to += ";tag=uas1"
        headers += [("From", request.header("From") or ""), ("To", to),
                    ("Call-ID", request.header("Call-ID") or ""), ("CSeq", request.header("CSeq") or "")]
        assert self.transport is not None and self.last_source is not None
        self.transport.sendto(SipMessage.response(status, reason, headers + (extra or []), body).to_bytes(),
                              self.last_source)


@pytest.fixture
async def uas() -> Any:
    made: list[RawUas] = []

    async def make(**kwargs: Any) -> RawUas:
        u = RawUas(**kwargs)
        await u.start()
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


def raw_call(uas: RawUas, call_id: str, **extra: Any) -> dict[str, Any]:
    body = {"callId": call_id, "callee": "bob", "toStream": call_id, "sipLogin": "alice",
            "sipDomain": "127.0.0.1", "sipPort": str(uas.port), "hasAudio": "true", "hasVideo": "false"}
    body.update(extra)
    return body


# ------------------------------------------------ 1. fields checked first

LONG_LABEL = "a" * 64 + ".example.com"
BAD_FIELDS = [
    ("sipDomain", LONG_LABEL),
    ("sipOutboundProxy", LONG_LABEL),
    ("sipDomain", "h" * 60_000),
    ("callee", "\ud800"),
    ("sipLogin", "\ud800"),
    ("visibleName", "\ud800"),
    ("callee", "bob\x00"),
    ("callee", "x" * 60_000),
    ("callee", "bob;transport=tcp"),
    ("callee", "bob?Subject=hi"),
    ("callee", "sip:bob@127.0.0.1?Route=%3Csip:evil%3E"),
    ("callee", "sips:bob@127.0.0.1"),
    ("callee", "sip:bob@127.0.0.1;transport=tls"),
    ("sipOutboundProxy", "sip:127.0.0.1;transport=tls"),
    ("sipLogin", 'alice"'),
    ("sipLogin", "al ice"),
    ("sipLogin", "alice>"),
    ("sipDomain", "exa mple.com"),
    ("sipDomain", "example.com>"),
    ("sipAuthenticationName", 'a"b'),
    ("callId", "abc\r\nINFO call x: forged"),
    ("toStream", "-rf"),
    ("toStream", "a/b"),
    ("toStream", "a?b"),
    ("rtmpStream", "x?app=other"),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_FIELDS)])
async def test_a_bad_field_is_a_400_naming_it_and_nothing_starts(
    server: Server, rest: Rest, callee: LoopbackCallee, field: str, value: str
) -> None:
    body = {**loopback_call(callee, "bad", "bad-stream"), field: value}
    if field == "rtmpStream":
        body["rtmpUrl"] = "rtmp://127.0.0.1:1/live"
    code, answer = await rest.post("/rest-api/call/startup", raw=json.dumps(body).encode())
    assert code == 400, answer
    assert field in answer["error"], answer
    assert server.gateway.calls == {} and server.gateway.ports.in_use == 0


async def test_bad_requests_leave_no_call_behind_and_a_full_server_keeps_taking_calls(
    server_with: Any, callee: LoopbackCallee
) -> None:
    """Four such requests used to lock a 4-call server out until restart."""
    server, rest = await server_with(max_calls=4)
    for i, (field, value) in enumerate(BAD_FIELDS[:8]):
        body = {**loopback_call(callee, f"b{i}", f"bs{i}"), field: value}
        code, _ = await rest.post("/rest-api/call/startup", raw=json.dumps(body).encode())
        assert code == 400
    for i in range(4):
        await rest.start_call(loopback_call(callee, f"ok{i}", f"oks{i}"))
    assert len(server.gateway.calls) == 4


async def test_a_call_task_that_raises_ends_failed_and_gives_everything_back(
    server: Server, rest: Rest, callee: LoopbackCallee, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    """The class of defect, not an example: whatever the call task raises,
    the call reaches a final status, is logged, and frees ports and name."""
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a defect in offer building")

    monkeypatch.setattr(gateway_module, "build_offer", broken)
    code, _ = await rest.post("/rest-api/call/startup", loopback_call(callee, "boom", "boom-s"))
    assert code == 200
    call = await rest.wait_status("boom", {"FAILED", "FINISH"}, timeout=5)
    assert call["status"] == "FAILED" and call["info"].startswith("Failed by error"), call
    assert any("boom" in r.getMessage() and r.exc_info for r in caplog.records)
    assert server.gateway.ports.in_use == 0
    monkeypatch.undo()
    await rest.start_call(loopback_call(callee, "boom2", "boom-s"))  # the stream name is free again


# ------------------------------------------------------- 7. SIP injection

async def test_a_display_name_is_quoted_and_cannot_add_a_uri_or_tag(
    server: Server, rest: Rest, uas: Any
) -> None:
    far = await uas()
    evil = 'Eve" <sip:boss@127.0.0.1>;tag=forged;x="'
    assert (await rest.post("/rest-api/call/startup", raw_call(far, "inj", visibleName=evil)))[0] == 200
    await wait_until(lambda: "INVITE" in far.methods(), 5, "the INVITE")
    invite = far.requests[0]
    sent_from = NameAddr.parse(invite.header("From") or "")
    assert sent_from.uri == "sip:alice@127.0.0.1"
    assert sent_from.display is not None and "boss" in sent_from.display
    assert sent_from.params.get("tag") != "forged"
    assert invite.uri == "sip:bob@127.0.0.1"
    await rest.post("/rest-api/call/terminate", {"callId": "inj"})


# --------------------------------------------- 6. CSRF and DNS rebinding

async def test_json_endpoints_refuse_bodies_that_are_not_json(rest: Rest, callee: LoopbackCallee) -> None:
    """A web page can POST text/plain or a form anywhere without a preflight."""
    body = json.dumps(loopback_call(callee, "csrf", "csrf-s"))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        async with rest.http.post(rest.base_url + "/rest-api/call/startup", data=body,
                                  headers={"Content-Type": content_type}) as res:
            assert res.status == 415, content_type
            assert "application/json" in (await res.json())["error"]
    code, _ = await rest.post("/rest-api/call/find", {"callId": "csrf"})
    assert code == 404  # nothing was started


async def test_a_rebound_host_name_is_refused_and_ip_and_listed_names_are_served(server_with: Any) -> None:
    server, rest = await server_with(allowed_hosts="gw.example.test")
    url = rest.base_url + "/rest-api/call/find_all"
    for host, expected in (("evil.example", 400), (f"evil.example:{server.settings.http_port}", 400),
                           ("127.0.0.1", 404), ("localhost:1", 404), ("gw.example.test", 404),
                           ("[::1]:80", 404)):
        async with rest.http.get(url, headers={"Host": host}) as res:
            assert res.status == expected, host


async def test_cross_origin_requests_need_a_listed_origin_and_never_get_credentials(server_with: Any) -> None:
    _, rest = await server_with(cors_origins="https://app.example.test")
    url = rest.base_url + "/rest-api/call/find_all"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    async with rest.http.options(url, headers={"Origin": "https://evil.example", **preflight}) as res:
        assert "Access-Control-Allow-Origin" not in res.headers
    async with rest.http.options(url, headers={"Origin": "https://app.example.test", **preflight}) as res:
        assert res.headers["Access-Control-Allow-Origin"] == "https://app.example.test"
        assert "Access-Control-Allow-Credentials" not in res.headers
    async with rest.http.post(url, data="{}", headers={"Origin": "https://evil.example",
                                                       "Content-Type": "application/json"}) as res:
        assert res.status == 403
    async with rest.http.post(url, data="{}", headers={"Origin": rest.base_url,  # the player's own origin
                                                       "Content-Type": "application/json"}) as res:
        assert res.status == 404


# ------------------------------------------------------------ 8. no 500s

async def test_deeply_nested_json_is_a_400_on_every_endpoint(server: Server, rest: Rest) -> None:
    deep = b"[" * 30_000 + b"]" * 30_000  # within max_body_bytes
    deep_object = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    paths = [r.resource.canonical for r in server._runner.app.router.routes()  # type: ignore[union-attr]
             if r.method in ("POST", "*") and r.resource is not None and "rest-api" in r.resource.canonical
             and "{" not in r.resource.canonical]
    assert len(paths) > 15
    for path in paths:
        for body in (deep, deep_object):
            code, answer = await rest.post(path, raw=body)
            assert code == 400, (path, code, answer)


async def test_mutated_whep_offers_are_answered_with_4xx_never_500(
    server: Server, rest: Rest, callee: LoopbackCallee, caplog: pytest.LogCaptureFixture
) -> None:
    import random

    from .test_webrtc_engine import post_offer, recvonly_offer

    await rest.start_call(loopback_call(callee, "mut", "mut-s"))
    offer = await recvonly_offer("audio", "video")
    rng = random.Random(12)
    codes: dict[int, int] = {}
    for i in range(300):
        data = bytearray(offer.encode())
        for _ in range(rng.randint(1, 8)):
            op = rng.random()
            at = rng.randrange(len(data))
            if op < 0.4:
                data[at] = rng.randrange(256)
            elif op < 0.7:
                del data[at:at + rng.randint(1, 40)]
            else:
                data[at:at] = data[rng.randrange(len(data)):][:rng.randint(1, 60)]
        status, text, location = await post_offer(rest, "mut-s", data.decode("utf-8", "replace"))
        codes[status] = codes.get(status, 0) + 1
        assert status < 500, (i, status, text)
        if status == 201 and location:
            async with rest.http.delete(rest.base_url + location) as res:
                assert res.status == 200
    assert codes.get(400, 0) > 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# ------------------------------------------------------------- 9. shutdown

async def test_shutdown_is_bounded_when_peers_never_answer(uas: Any, server_with: Any) -> None:
    """One far end never answers the INVITE, another never answers the BYE:
    SIGTERM's stop still ends within shutdown_timeout_s."""
    silent = await uas(answer_invite=False)
    rude = await uas(answer_invite=True, answer_bye=False)
    server, rest = await server_with(shutdown_timeout_s=3, sip_transaction_timeout_s=32, sip_t1_ms=500)
    assert (await rest.post("/rest-api/call/startup", raw_call(silent, "sil")))[0] == 200
    await rest.start_call(raw_call(rude, "rude"))
    await wait_until(lambda: "INVITE" in silent.methods(), 5, "the silent INVITE")
    started = time.monotonic()
    await server.stop()
    took = time.monotonic() - started
    assert took < 3 + 1.5, took
    assert "BYE" in rude.methods()
    assert all(c.status.is_final for c in server.gateway.calls.values())


# ------------------------------------------------------- 10. smaller ones

async def test_terminate_before_any_provisional_response_ends_the_call_at_once(
    server: Server, rest: Rest, uas: Any
) -> None:
    """No CANCEL before a provisional response (RFC 3261 §9.1), but the call
    is over at once for the API, and a late 180 gets our CANCEL."""
    far = await uas(answer_invite=False)
    assert (await rest.post("/rest-api/call/startup", raw_call(far, "early")))[0] == 200
    await wait_until(lambda: "INVITE" in far.methods(), 5, "the INVITE")
    assert (await rest.post("/rest-api/call/terminate", {"callId": "early"}))[0] == 200
    call = await rest.wait_status("early", {"FINISH", "FAILED"}, timeout=2)
    assert call["status"] == "FINISH" and call["info"] == "Normal call clearing", call
    far.reply(far.requests[0], 180, "Ringing")
    await wait_until(lambda: "CANCEL" in far.methods(), 5, "the CANCEL after the late 180")


async def test_dtmf_is_capped_and_stops_with_its_call(server: Server, rest: Rest, callee: LoopbackCallee) -> None:
    await rest.start_call(loopback_call(callee, "dt", "dts"))
    code, answer = await rest.post("/rest-api/call/send_dtmf", {"callId": "dt", "dtmf": "1" * 65})
    assert code == 400 and "64" in answer["error"]
    sending = asyncio.ensure_future(rest.post("/rest-api/call/send_dtmf", {"callId": "dt", "dtmf": "1" * 60}))
    await asyncio.sleep(0.5)
    await rest.post("/rest-api/call/terminate", {"callId": "dt"})
    await rest.wait_status("dt", {"FINISH"})
    # 60 digits take about 10 s to send; after the call ended the rest are not
    await asyncio.wait_for(sending, 3)


async def test_relays_are_capped_and_the_stream_name_cannot_change_the_rtmp_url(
    server_with: Any, callee: LoopbackCallee
) -> None:
    server, rest = await server_with(max_relays=1)
    await rest.start_call(loopback_call(callee, "r1", "r1s"))
    await rest.start_call(loopback_call(callee, "r2", "r 2&x=y"))
    code, relay = await rest.post("/rest-api/push/startup", {"streamName": "r1s", "rtmpUrl": "rtmp://127.0.0.1:9/live"})
    assert code == 200, relay
    code, answer = await rest.post("/rest-api/push/startup", {"streamName": "r 2&x=y",
                                                              "rtmpUrl": "rtmp://127.0.0.1:9/live"})
    assert code == 503 and "max_relays" in answer["error"]
    await rest.post("/rest-api/push/terminate", {"mediaSessionId": relay["mediaSessionId"]})
    code, relay = await rest.post("/rest-api/push/startup", {"streamName": "r 2&x=y",
                                                             "rtmpUrl": "rtmp://127.0.0.1:9/live"})
    assert code == 200, relay
    relays = server._runner.app[RELAYS].relays  # type: ignore[union-attr]
    assert [r.target for r in relays.values()] == ["rtmp://127.0.0.1:9/live/rtmp_r%202%26x%3Dy"]


async def test_a_wrong_password_does_not_ride_on_another_calls_registration() -> None:
    from sipstream.sip.account import SipAccount

    right = SipAccount("alice", "example.com", "right")
    wrong = SipAccount("alice", "example.com", "wrong")
    assert right.registration_key() != wrong.registration_key()
    assert "right" not in repr(right.registration_key())


# --------------------------------------------------- 2. WHEP sessions

async def test_whep_sessions_are_limited_per_client_and_end_with_their_stream(
    server_with: Any, callee: LoopbackCallee
) -> None:
    from .test_webrtc_engine import post_offer, recvonly_offer

    server, rest = await server_with(max_viewers_per_client=2)
    await rest.start_call(loopback_call(callee, "wl", "wls"))
    offer = await recvonly_offer("audio", "video")
    for _ in range(2):
        status, _, _ = await post_offer(rest, "wls", offer)
        assert status == 201
    status, text, _ = await post_offer(rest, "wls", offer)
    assert status == 503 and "per_client" in text
    # nobody connects; the stream ends: so do its sessions, at once
    await rest.post("/rest-api/call/terminate", {"callId": "wl"})
    await rest.wait_status("wl", {"FINISH"})
    await wait_until(lambda: not server.whep.sessions, 5, "the stream's sessions ended with it")


# ------------------------------------------------ 4. the HTTP port's limits

async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), within) == b""
    except ConnectionResetError:
        return True


async def test_idle_and_slow_http_connections_are_capped_and_timed_out(server_with: Any) -> None:
    server, rest = await server_with(http_max_connections=20, http_header_timeout_s=1.5)
    port = server.settings.http_port

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)

    conns = [await connect() for _ in range(40)]
    # the 20 over the cap are closed at once, the others when they have sent
    # no request headers for http_header_timeout_s
    for reader, _ in conns[20:]:
        assert await closed_by_server(reader, 1)
    for reader, _ in conns[:20]:
        assert await closed_by_server(reader, 4)
    # a slowloris: a byte of headers every half second
    reader, writer = await connect()
    started = time.monotonic()
    line = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    try:
        for byte in line + b"a" * 40:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.5)
            if reader.at_eof():
                break
    except ConnectionError:
        pass
    assert time.monotonic() - started < 6
    for _, w in conns:
        w.close()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/health") as res:
            assert res.status == 200


# ------------------------------------------------------------- 5. fds

async def test_running_out_of_fds_is_a_503_that_says_so_and_http_keeps_working(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    from .conftest import free_tcp_port, media_range

    http_port = free_tcp_port()
    first, last = media_range()
    callee = LoopbackCallee()
    await callee.start()
    env = {**os.environ, "SIPSTREAM_MEDIA_PORT_FROM": str(first), "SIPSTREAM_MEDIA_PORT_TO": str(last),
           "SIPSTREAM_WEBRTC_PORT": "0", "SIPSTREAM_WS_PORT": "0", "SIPSTREAM_HLS_PORT": "0",
           "SIPSTREAM_RTSP_PORT": "0"}
    proc = subprocess.Popen(["prlimit", "--nofile=160:160", sys.executable, "-m", "sipstream", "serve",
                             "--http-port", str(http_port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "server.log", "wb"))
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with aiohttp.ClientSession() as http:
            rest = Rest(base, http)
            for _ in range(100):
                try:
                    async with http.get(base + "/health") as res:
                        if res.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            answers = []
            for i in range(20):
                code, answer = await rest.post("/rest-api/call/startup", loopback_call(callee, f"fd{i}", f"fds{i}"))
                answers.append((code, answer))
                if code != 200:
                    break
            code, answer = answers[-1]
            assert code == 503 and "file descriptors" in answer["error"], answers
            assert len(answers) > 3
            async with http.get(base + "/health") as res:
                assert res.status == 200
    finally:
        proc.terminate()
        proc.wait(10)
        await callee.stop()


async def test_a_request_without_host_header_is_served(server: Server) -> None:
    """HTTP/1.0 probes send no Host; only browsers (which always do) can be rebound."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.http_port)
    writer.write(b"GET /health HTTP/1.0\r\n\r\n")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.") and b" 200 " in status_line, status_line


async def test_a_malformed_request_is_a_400_and_one_info_line(server: Server,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A NUL in a header: aiohttp answers 400 and would log an ERROR with a
    traceback and the header's bytes; it is the client's mistake."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.http_port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer zq7xv\x00wk9\r\n\r\n")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert b" 400 " in status_line, status_line
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records and all(r.levelname == "INFO" and r.exc_info is None for r in records), records
    assert "answered 400" in records[0].getMessage() and "zq7xv" not in caplog.text, caplog.text


async def test_recorders_are_capped(server_with: Any, callee: LoopbackCallee, tmp_path: Any) -> None:
    _, rest = await server_with(max_recorders=1, record_dir=str(tmp_path))
    await rest.start_call(loopback_call(callee, "rc1", "rcs1"))
    await rest.start_call(loopback_call(callee, "rc2", "rcs2"))
    assert (await rest.post("/rest-api/recorder/startup", {"streamName": "rcs1"}))[0] == 200
    code, answer = await rest.post("/rest-api/recorder/startup", {"streamName": "rcs2"})
    assert code == 503 and "max_recorders" in answer["error"], answer
    assert (await rest.post("/rest-api/recorder/terminate", {"streamName": "rcs1"}))[0] == 200
    assert (await rest.post("/rest-api/recorder/startup", {"streamName": "rcs2"}))[0] == 200
