"""The measured process of benches/test_bench_viewers.py: a sipstream
Server (REST, WHEP, SIP) with one call to the loopback callee, whose stream
``bench`` the viewers watch. ``rust`` serves them with the WebRTC engine
(python/sipstream/egress/whep.py), ``aiortc`` with the old path
(benches/aiortc_whep.py). The benchmark starts it on the measured core and
reads its CPU time and RSS from /proc.

    python benches/viewer_server.py rust|aiortc CALLEE_PORT MEDIA_PORT_FROM

Prints one JSON line when the call is up ({"url": the WHEP URL}), then
answers commands, one a line on stdin, with one JSON line each on stdout:
``stats`` (WHEP sessions and the engine's stats, as /health has them) and
``reset`` (the engine's latency histogram starts afresh). End of input
stops the server (the call is hung up)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any

import aiohttp
from sipstream.server import Server
from sipstream.settings import Settings

STREAM = "bench"
CALL_ID = "viewers-bench"
MEDIA_PORTS = 200


def _aiortc_endpoint(ip: str, max_viewers: int) -> Any:
    """The aiortc path (imported only for it), with the two methods the
    Server and /health call besides its WHEP interface."""
    from aiortc_whep import WhepEndpoint, limit_ice_to

    class AiortcWhep(WhepEndpoint):
        def start(self) -> None:
            pass

        def stats(self) -> dict[str, Any]:
            return {"viewers": len(self.sessions),
                    "connected": sum(1 for s in self.sessions.values() if s.pc.connectionState == "connected")}

    limit_ice_to(ip)
    return AiortcWhep(ip, max_viewers)


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start_call(base_url: str, callee_port: int) -> None:
    body = {
        "callId": CALL_ID, "callee": "demo", "toStream": STREAM, "hasAudio": "true", "hasVideo": "true",
        "sipLogin": "caller", "sipDomain": "127.0.0.1", "sipPort": str(callee_port), "sipRegisterRequired": "false",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/rest-api/call/startup", json=body) as res:
            if res.status != 200:
                raise RuntimeError(f"call/startup answered {res.status}: {await res.text()}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        status = None
        while loop.time() < deadline:
            async with http.post(f"{base_url}/rest-api/call/find", json={"callId": CALL_ID}) as res:
                if res.status == 200:
                    status = (await res.json(content_type=None))[0]["status"]
                    if status == "ESTABLISHED":
                        return
                    if status in ("FAILED", "FINISH", "BUSY"):
                        break
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the call to the loopback callee did not come up (last status {status})")


async def main(mode: str, callee_port: int, media_port_from: int) -> None:
    settings = Settings.load(environ={}, overrides={
        "http_port": _free_tcp_port(), "ip": "127.0.0.1", "webrtc_port": 0, "max_viewers": 100_000,
        "max_viewers_per_client": 0, "rtsp_port": 0,
        "media_port_from": media_port_from, "media_port_to": media_port_from + MEDIA_PORTS - 1,
        "call_keep_finished_s": 1,
    })
    server = Server(settings)
    if mode == "aiortc":
        server.whep = _aiortc_endpoint(settings.ip, settings.max_viewers)  # type: ignore[assignment]
    elif mode != "rust":
        raise SystemExit(f"unknown mode {mode!r}: rust or aiortc")
    await server.start()
    try:
        await _start_call(server.base_url, callee_port)
        await asyncio.sleep(1.0)  # media flowing, the first keyframe in
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(json.dumps({"url": f"{server.base_url}/whep/{STREAM}"}), flush=True)
        while line := await reader.readline():
            command = line.decode().strip()
            if command == "stats":
                reply: dict[str, Any] = {"viewers": len(server.whep.sessions), "webrtc": server.whep.stats()}
            elif command == "reset" and mode == "rust":
                server.whep.engine.reset_latency()
                reply = {"ok": True}
            else:
                reply = {"error": f"unknown command {command!r}"}
            print(json.dumps(reply), flush=True)
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
