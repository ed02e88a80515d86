"""``sipstream serve`` runs the gateway; ``sipstream demo`` shows the whole
job on one machine: server + built-in loopback callee + one REST call."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

import aiohttp

from . import __version__, logs
from .server import Server, serve_forever
from .settings import Settings, SettingsError

log = logging.getLogger("sipstream")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipstream", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("serve", "run the gateway"), ("demo", "run the gateway with a built-in callee")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--http-port", type=int, help="REST/WHEP/player port (default 9091)")
        p.add_argument("--ip", help="address to advertise and bind (default 127.0.0.1)")
        p.add_argument("--config", help="flashphoner.properties-style settings file")
        p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        settings = Settings.load(args.config, overrides={"http_port": args.http_port, "ip": args.ip})
    except SettingsError as exc:
        print(f"sipstream: {exc}", file=sys.stderr)
        return 2
    logs.configure(args.log_level, settings.log_format)
    runner = _demo(settings) if args.command == "demo" else serve_forever(Server(settings))
    try:
        asyncio.run(runner)
    except SettingsError as exc:  # found at start, e.g. an unreadable https_cert
        print(f"sipstream: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sipstream: {exc}", file=sys.stderr)
        return 1
    return 0


async def _demo(settings: Settings) -> None:
    from .testing import LoopbackCallee

    callee = LoopbackCallee(host=settings.ip)
    await callee.start()
    server = Server(settings)
    ready = asyncio.Event()
    task = asyncio.create_task(serve_forever(server, ready))
    await ready.wait()
    body = {
        "callId": "demo-call", "callee": "demo", "toStream": "demo",
        "hasAudio": "true", "hasVideo": "true",
        "sipLogin": "sipstream", "sipDomain": f"{callee.host}:{callee.port}",
        "sipPort": str(callee.port), "sipRegisterRequired": "false", "appKey": "defaultApp",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.base_url}/rest-api/call/startup", json=body) as res:
            if res.status != 200:
                log.error("call/startup answered %d: %s", res.status, await res.text())
    more = ""
    if settings.ws_port:
        more += f"  Web SDK: ws://{settings.ip}:{settings.ws_port} (stream \"demo\")\n"
    if settings.hls_port:
        scheme = "https" if settings.https_cert else "http"
        more += f"  HLS:     {scheme}://{settings.ip}:{settings.hls_port}/demo/demo.m3u8\n"
    if settings.rtsp_port:
        more += f"  RTSP:    rtsp://{settings.ip}:{settings.rtsp_port}/demo\n"
    print(
        f"\nsipstream demo is running.\n"
        f"  player:  {server.base_url}/player?stream=demo\n"
        f"  console: {server.base_url}/console\n"
        f"{more}"
        f"  call:    curl -s -X POST {server.base_url}/rest-api/call/find -H 'Content-Type: application/json' "
        f"-d '{json.dumps({'callId': 'demo-call'})}'\n"
        f"Press Ctrl+C to stop.\n",
        flush=True,
    )
    try:
        await task
    finally:
        await callee.stop()


if __name__ == "__main__":
    sys.exit(main())
