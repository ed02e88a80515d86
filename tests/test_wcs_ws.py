"""The WCS Web SDK's WebSocket protocol (egress/wcs.py): Chromium speaking it
as the SDK's Player does plays a call's stream, from the loopback callee and
through Kamailio + sipp; every message and bad input, from a Python client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from sipstream.api.auth import playback_token
from sipstream.egress import wcs
from sipstream.testing import LoopbackCallee

from .conftest import free_tcp_port, loopback_call, wait_until
from .media_checks import PLAYBACK_MEASURE_S, assert_real_playback
from .peers.chromium import wcs_play
from .peers.fixtures import *  # noqa: F401,F403  (kamailio, sipp fixtures, failure logs)
from .peers.fixtures import require_chromium
from .test_sip_kamailio import alice_call
from .test_webrtc_engine import recvonly_offer

SECRET = "s" * 40


def ws_settings(**extra: Any) -> dict[str, Any]:
    return {"ws_port": free_tcp_port(), **extra}


class Client:
    """A WebSocket client of the protocol: every frame it got, by message."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def send(self, message: str, data: Any = None) -> None:
        await self.ws.send_str(json.dumps({"message": message, "data": [data]}))

    async def next(self, message: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The next frame named ``message`` (whose data[0] has ``match``'s items)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - loop.time()))
            assert msg.type == WSMsgType.TEXT, f"waiting for {message}: {msg}"
            frame = json.loads(msg.data)
            assert isinstance(frame.get("data"), list), frame  # every server frame has a data array
            self.frames.append(frame)
            if frame["message"] == "ping":
                await self.send("pong", None)
                continue
            first = frame["data"][0] if frame["data"] else None
            if frame["message"] == message and all(
                    isinstance(first, dict) and first.get(k) == v for k, v in match.items()):
                return frame

    async def closed(self, timeout: float = 10.0) -> aiohttp.WSMessage:
        """Reads until the server closes; returns the close message."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return msg


async def connect(http: aiohttp.ClientSession, port: int, **fields: Any) -> Client:
    client = Client(await http.ws_connect(f"ws://127.0.0.1:{port}/"))
    await client.send("connection", {"appKey": "defaultApp", "mediaProviders": ["WebRTC"], **fields})
    return client


def play_request(media_session_id: str, name: str, sdp: str, **extra: Any) -> dict[str, Any]:
    return {"mediaSessionId": media_session_id, "name": name, "published": False, "hasVideo": True,
            "hasAudio": True, "status": "PENDING", "record": False, "width": 0, "height": 0,
            "mediaProvider": "WebRTC", "sdp": sdp, **extra}


# ------------------------------------------------------------ Chromium
async def test_chromium_speaking_the_sdk_protocol_plays_a_call(server_with: Any, callee: LoopbackCallee) -> None:
    require_chromium()
    server, rest = await server_with(**ws_settings())
    await rest.start_call(loopback_call(callee, "wcs1", "wcss1"))
    seen: list[float] = []

    async def watch_viewers() -> None:  # the WebSocket's viewer is counted as such
        while True:
            async with rest.http.get(f"{server.base_url}/metrics") as res:
                text = await res.text()
            for line in text.splitlines():
                if line.startswith('sipstream_viewers{protocol="wcs",state="connected"}'):
                    seen.append(float(line.split()[-1]))
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_viewers())
    try:
        stats = await wcs_play(server.base_url + "/health", f"ws://127.0.0.1:{server.settings.ws_port}/", "wcss1",
                               seconds=25, measure_s=PLAYBACK_MEASURE_S)
    finally:
        watcher.cancel()
    assert stats["offerHasCandidates"] is False, stats  # as the SDK sends it: no trickle, ever
    assert stats["userData"]["status"] == "ESTABLISHED" and stats["userData"]["sessionId"], stats["userData"]
    assert stats["messages"][:2] == ["getUserData", "getVersion"], stats["messages"]
    answer = stats["answer"].splitlines()
    assert any(line.startswith("a=candidate:") for line in answer) and "a=end-of-candidates" in answer, answer
    assert_real_playback(stats)
    assert stats["videoCodec"] == "video/H264" and stats["audioCodec"] == "audio/PCMU"
    assert [s["status"] for s in stats["statuses"]] == ["PLAYING", "STOPPED"], stats["statuses"]
    assert stats["statuses"][1]["info"] == "Stopped by user"
    assert 1.0 in seen, seen
    await wait_until(lambda: not server.whep.sessions, 5, "the viewer ended by stopStream")


@pytest.mark.peers
async def test_chromium_plays_a_kamailio_sipp_call_over_the_websocket(
    server_with: Any, kamailio: Any, sipp_uas_factory: Any
) -> None:
    require_chromium()
    server, rest = await server_with(**ws_settings())
    sipp_uas_factory("uas_answer")
    assert (await rest.post("/rest-api/call/startup", alice_call(kamailio, "wcsk1", "wcsks1")))[0] == 200
    await rest.wait_status("wcsk1", {"ESTABLISHED"}, timeout=20)
    stats = await wcs_play(server.base_url + "/health", f"ws://127.0.0.1:{server.settings.ws_port}/", "wcsks1",
                           seconds=25, measure_s=PLAYBACK_MEASURE_S)
    assert_real_playback(stats)
    assert stats["statuses"][0]["status"] == "PLAYING", stats["statuses"]


# ------------------------------------------------- the protocol, from Python
async def test_connection_play_stop_and_close(server_with: Any, callee: LoopbackCallee) -> None:
    server, rest = await server_with(**ws_settings())
    await rest.start_call(loopback_call(callee, "wcs2", "wcss2"))
    port = server.settings.ws_port
    async with aiohttp.ClientSession() as http:
        client = await connect(http, port, sipLogin="alice", sipPassword="never-echoed", authToken="x",
                               custom={"token": "y"})
        user = (await client.next("getUserData"))["data"][0]
        assert user["status"] == "ESTABLISHED" and user["sipLogin"] == "alice" and user["appKey"] == "defaultApp"
        assert "sipPassword" not in user and "custom" not in user and user["authToken"] != "x", user
        version = await client.next("getVersion")
        assert version["data"][0].startswith("sipstream-")

        # an unknown stream fails as WCS says it
        await client.send("playStream", play_request("m0", "nope", "v=0\r\n"))
        failed = (await client.next("notifyStreamStatusEvent", mediaSessionId="m0"))["data"][0]
        assert failed["status"] == "FAILED" and failed["info"] == "Stream not found", failed

        # an offer is answered whole; stopStream ends the viewer with STOPPED
        await client.send("playStream", play_request("m1", "wcss2", await recvonly_offer("audio", "video")))
        answer = (await client.next("setRemoteSDP"))["data"]
        assert answer[0] == "m1" and answer[2] is True and "a=end-of-candidates" in answer[1].splitlines()
        [viewer] = server.whep.sessions.values()
        assert viewer.protocol == "wcs" and viewer.stream.name == "wcss2"
        code, streams = await rest.post("/rest-api/stream/find", {"name": "wcss2"})
        assert streams[0]["viewers"] == 1
        await client.send("stopStream", {"mediaSessionId": "m1", "name": "wcss2"})
        stopped = (await client.next("notifyStreamStatusEvent", mediaSessionId="m1"))["data"][0]
        assert stopped["status"] == "STOPPED" and stopped["info"] == "Stopped by user"
        assert not server.whep.sessions

        # a socket that closes takes its viewers with it
        await client.send("playStream", play_request("m2", "wcss2", await recvonly_offer("audio", "video")))
        await client.next("setRemoteSDP")
        assert len(server.whep.sessions) == 1
        await client.ws.close()
        await wait_until(lambda: not server.whep.sessions and not server.wcs.sessions, 5,
                         "the closed socket's viewer ended")


async def test_a_stream_that_ends_stops_its_players_and_unconnected_ones_time_out(
    server_with: Any, callee: LoopbackCallee
) -> None:
    server, rest = await server_with(**ws_settings(webrtc_connect_timeout_s=1.5))
    await rest.start_call(loopback_call(callee, "wcs3", "wcss3"))
    async with aiohttp.ClientSession() as http:
        client = await connect(http, server.settings.ws_port)
        await client.next("getUserData")
        # nobody does ICE for this one: the engine gives up, the client hears why
        await client.send("playStream", play_request("t1", "wcss3", await recvonly_offer("audio", "video")))
        await client.next("setRemoteSDP")
        failed = (await client.next("notifyStreamStatusEvent", mediaSessionId="t1"))["data"][0]
        assert failed["status"] == "FAILED" and failed["info"] == "Failed by ICE timeout", failed
        # the call ends: its players are told
        await client.send("playStream", play_request("t2", "wcss3", await recvonly_offer("audio", "video")))
        await client.next("setRemoteSDP")
        assert (await rest.post("/rest-api/call/terminate", {"callId": "wcs3"}))[0] == 200
        stopped = (await client.next("notifyStreamStatusEvent", mediaSessionId="t2"))["data"][0]
        assert stopped["status"] == "STOPPED" and stopped["info"] == "Stopped by publisher stop", stopped
        assert not server.whep.sessions


async def test_bad_frames_get_an_error_and_the_session_lives_on(server_with: Any, callee: LoopbackCallee) -> None:
    server, rest = await server_with(**ws_settings())
    await rest.start_call(loopback_call(callee, "wcs4", "wcss4"))
    async with aiohttp.ClientSession() as http:
        client = Client(await http.ws_connect(f"ws://127.0.0.1:{server.settings.ws_port}/"))
        # before `connection`, nothing else is taken
        await client.send("playStream", play_request("b0", "wcss4", "v=0"))
        assert "connection first" in (await client.next("fail"))["data"][0]["info"]
        await client.send("connection", {"appKey": "defaultApp"})
        await client.next("getUserData")
        for raw, why in (("{not json", "not JSON"), ('{"message": "ping"}', "data must be an array"),
                         ('["connection"]', "expected {"), ("[" * 30000 + "]" * 30000, "not JSON"),
                         ('{"message": "whatIsThis", "data": []}', "unknown message"),
                         ('{"message": "connection", "data": [{}]}', "already established")):
            await client.ws.send_str(raw)
            assert why in (await client.next("fail"))["data"][0]["info"], raw[:40]
        await client.ws.send_bytes(b"\x00\x01")
        assert "binary" in (await client.next("fail"))["data"][0]["info"]
        for bad, why in (({"name": "wcss4", "sdp": "v=0"}, "mediaSessionId: expected a string"),
                         ({"mediaSessionId": "x" * 1000, "name": "wcss4", "sdp": "v=0"}, "mediaSessionId: expected"),
                         ({"mediaSessionId": "a\nb", "name": "wcss4", "sdp": "v=0"}, "mediaSessionId: control"),
                         ({"mediaSessionId": "b1", "name": "wcss4", "sdp": 42}, "sdp: expected a string"),
                         ("not an object", "data[0] must be an object")):
            await client.send("playStream", bad)
            assert why in (await client.next("fail"))["data"][0]["info"], bad
        # an offer that is not SDP, and one with no codec in common
        await client.send("playStream", play_request("b2", "wcss4", "v=0\r\nm=nonsense\r\n"))
        failed = (await client.next("notifyStreamStatusEvent", mediaSessionId="b2"))["data"][0]
        assert failed["status"] == "FAILED" and failed["info"].startswith("Failed by SDP error"), failed
        vp8_only = "\r\n".join([
            "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
            "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
            "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass",
            "m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=mid:0", "a=recvonly", "a=rtcp-mux",
            "a=rtpmap:96 VP8/90000", ""])
        await client.send("playStream", play_request("b3", "wcss4", vp8_only))
        failed = (await client.next("notifyStreamStatusEvent", mediaSessionId="b3"))["data"][0]
        assert failed["info"] == "No common codecs", failed
        # publishing and SIP calls are refused cleanly
        await client.send("publishStream", play_request("b4", "mine", "v=0"))
        failed = (await client.next("notifyStreamStatusEvent", mediaSessionId="b4"))["data"][0]
        assert failed["status"] == "FAILED" and "not supported" in failed["info"]
        await client.send("call", {"callId": "c1", "callee": "bob"})
        failed = (await client.next("fail"))["data"][0]
        assert failed["callId"] == "c1" and "REST" in failed["info"]
        await client.send("pushLogs", {"logs": "ignored"})  # the SDK's own: no answer
        # still alive and serving
        await client.send("playStream", play_request("b5", "wcss4", await recvonly_offer("audio", "video")))
        assert (await client.next("setRemoteSDP"))["data"][0] == "b5"
        # nothing came for pushLogs: after the call's fail, the answer
        last = [f for f in client.frames if f["message"] != "ping"][-2:]
        assert [f["message"] for f in last] == ["fail", "setRemoteSDP"] and last[0]["data"][0]["callId"] == "c1"
        # a frame over ws_max_message_bytes closes the session (1009)
        await client.ws.send_str(json.dumps({"message": "pushLogs", "data": [{"logs": "x" * (1 << 20)}]}))
        closed = await client.closed()
        assert client.ws.close_code == 1009, closed
        await wait_until(lambda: not server.whep.sessions and not server.wcs.sessions, 5, "the session's end")


async def test_too_many_bad_frames_close_the_session(server_with: Any) -> None:
    server, _ = await server_with(**ws_settings())
    async with aiohttp.ClientSession() as http:
        client = await connect(http, server.settings.ws_port)
        await client.next("getUserData")
        for _ in range(wcs.MAX_BAD_FRAMES):
            await client.ws.send_str("nonsense")
        await client.closed()
        assert client.ws.close_code == 1008


async def test_pings_drop_a_silent_client_and_keep_a_live_one(server_with: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wcs, "CONNECTION_TIMEOUT_S", 0.5)
    server, _ = await server_with(**ws_settings(ws_ping_interval_s=0.1, ws_max_missed_pings=3))
    port = server.settings.ws_port
    async with aiohttp.ClientSession() as http:
        live = await connect(http, port)
        await live.next("getUserData")
        # the live one reads and answers (Client.next pongs) all along
        reading = asyncio.create_task(live.next("never", timeout=1.5))
        silent = await connect(http, port)
        pings = 0
        while True:  # it reads the pings but never answers them
            msg = await silent.ws.receive(timeout=5)
            if msg.type != WSMsgType.TEXT:
                break
            pings += json.loads(msg.data)["message"] == "ping"
        assert silent.ws.close_code == 1001 and pings == 3, (silent.ws.close_code, pings)
        # the live one is still there after 15 intervals
        with pytest.raises(asyncio.TimeoutError):
            await reading
        assert sum(f["message"] == "ping" for f in live.frames) >= 5 and not live.ws.closed
        # a client that never sends `connection` is closed
        mute = Client(await http.ws_connect(f"ws://127.0.0.1:{port}/", autoping=False))
        await mute.closed(timeout=5)
        assert mute.ws.close_code == 1008
        await live.ws.close()
    await wait_until(lambda: not server.wcs.sessions, 5, "every session forgotten")


async def test_a_thousand_sessions_then_503(server_with: Any) -> None:
    server, _ = await server_with(**ws_settings(ws_max_sessions=1000, ws_ping_interval_s=60))
    port = server.settings.ws_port
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        clients = await asyncio.gather(*(connect(http, port) for _ in range(1000)))
        await asyncio.gather(*(c.next("getUserData") for c in clients))
        assert len(server.wcs.sessions) == 1000
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"ws://127.0.0.1:{port}/")
        assert refused.value.status == 503
        # plain HTTP on the port is told what it is
        async with http.get(f"http://127.0.0.1:{port}/") as res:
            assert res.status in (426, 503)
        await asyncio.gather(*(c.ws.close() for c in clients))
    await wait_until(lambda: not server.wcs.sessions, 10, "every session forgotten")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/") as res:
            assert res.status == 426 and "WCS WebSocket" in await res.text()


# ------------------------------------------------------------------ auth
async def test_tokens_and_the_apps_connect_hook(server_with: Any, callee: LoopbackCallee) -> None:
    # the API token, or a playback token for the stream
    server, rest = await server_with(**ws_settings(rest_auth_token="api-token", playback_token_secret=SECRET))
    rest.http.headers["Authorization"] = "Bearer api-token"
    await rest.start_call(loopback_call(callee, "wcs5", "wcss5"))
    port = server.settings.ws_port
    offer = await recvonly_offer("audio", "video")
    async with aiohttp.ClientSession() as http:
        admin = await connect(http, port, authToken="api-token")
        await admin.next("getUserData")
        await admin.send("playStream", play_request("a1", "wcss5", offer))
        await admin.next("setRemoteSDP")

        viewer = await connect(http, port)  # no token: may connect, may play only with one
        await viewer.next("getUserData")
        await viewer.send("playStream", play_request("a2", "wcss5", offer))
        failed = (await viewer.next("notifyStreamStatusEvent", mediaSessionId="a2"))["data"][0]
        assert failed["status"] == "FAILED" and failed["info"] == "Not authorized"
        other = playback_token(SECRET, "another-stream")
        await viewer.send("playStream", play_request("a3", "wcss5", offer, custom={"token": other}))
        assert (await viewer.next("notifyStreamStatusEvent", mediaSessionId="a3"))["data"][0]["status"] == "FAILED"
        good = playback_token(SECRET, "wcss5")
        await viewer.send("playStream", play_request("a4", "wcss5", offer, custom={"token": good}))
        assert (await viewer.next("setRemoteSDP"))["data"][0] == "a4"

    # with the API token only, a connection without it is closed
    server, _ = await server_with(**ws_settings(rest_auth_token="api-token"))
    async with aiohttp.ClientSession() as http:
        refused = await connect(http, server.settings.ws_port, authToken="wrong")
        await refused.closed()
        assert refused.ws.close_code == 1008
        accepted = await connect(http, server.settings.ws_port, custom={"token": "api-token"})
        await accepted.next("getUserData")

    # an app's connect hook decides
    posted: list[dict[str, Any]] = []

    async def connect_hook(request: web.Request) -> web.Response:
        body = await request.json()
        posted.append(body)
        return web.Response(status=200 if body.get("custom", {}).get("user") == "ok" else 403)

    app = web.Application()
    app.router.add_post("/apps/myapp/connect", connect_hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_tcp_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    try:
        server, _ = await server_with(**ws_settings(rest_auth_token="api-token"),
                                      **{"app.myapp": f"http://127.0.0.1:{hook_port}/apps/myapp"})
        async with aiohttp.ClientSession() as http:
            ok = await connect(http, server.settings.ws_port, appKey="myapp", custom={"user": "ok"},
                               sipPassword="secret-of-alice")
            user = (await ok.next("getUserData"))["data"][0]
            assert user["appKey"] == "myapp"
            no = await connect(http, server.settings.ws_port, appKey="myapp", custom={"user": "no"})
            closed = await no.closed()
            assert no.ws.close_code == 1008 and closed.extra == "Rejected by the app: HTTP 403", closed
        assert len(posted) == 2 and all("sipPassword" not in body and body["sessionId"] for body in posted), posted
    finally:
        await runner.cleanup()


# ------------------------------------------------------ wss and ICE-TCP
async def test_wss_and_transport_tcp(server_with: Any, callee: LoopbackCallee, tmp_path: Any) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server, rest = await server_with(ws_port=0, wss_port=free_tcp_port(), wss_cert=str(cert), wss_key=str(key),
                                     ice_tcp_transport=True, webrtc_tcp_port=0)
    assert set(server.wcs.ports) == {"wss"}  # ws off, wss on
    await rest.start_call(loopback_call(callee, "wcs6", "wcss6"))
    trust = ssl.create_default_context(cafile=str(cert))
    offer = await recvonly_offer("audio", "video")
    async with aiohttp.ClientSession() as http:
        client = Client(await http.ws_connect(f"wss://127.0.0.1:{server.settings.wss_port}/", ssl=trust))
        await client.send("connection", {"appKey": "defaultApp"})
        await client.next("getUserData")
        # "transport": "TCP": only the passive ICE-TCP candidate is offered
        await client.send("playStream", play_request("p1", "wcss6", offer, transport="TCP"))
        answer = (await client.next("setRemoteSDP"))["data"][1].splitlines()
        candidates = [line for line in answer if line.startswith("a=candidate:")]
        assert candidates and all(" tcp " in c and "tcptype passive" in c for c in candidates), candidates
        assert "a=end-of-candidates" in answer
        # by default both
        await client.send("playStream", play_request("p2", "wcss6", offer))
        answer = (await client.next("setRemoteSDP"))["data"][1].splitlines()
        kinds = {line.split()[2].lower() for line in answer if line.startswith("a=candidate:")}
        assert kinds == {"udp", "tcp"}, answer
