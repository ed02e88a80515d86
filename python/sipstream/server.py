"""The bundled server: a Gateway plus its HTTP API, run until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from aiohttp import web

from .api.hooks import RestHooks
from .api.limits import LimitedRunner
from .api.rest import create_app
from .egress.hls import HlsServer
from .egress.rtsp import RtspServer
from .egress.wcs import WcsServer
from .egress.whep import WhepEndpoint
from .gateway import Gateway
from .settings import Settings
from .tls import server_context

log = logging.getLogger(__name__)


class Listener(Protocol):
    """A playback port the server opens after HTTP and closes before it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway = Gateway(settings)
        self.whep = WhepEndpoint(settings.ip, settings.max_viewers, settings.webrtc_port, settings.bind_ip,
                                 settings.webrtc_connect_timeout_s,
                                 settings.webrtc_tcp_port if settings.ice_tcp_transport else None,
                                 settings.max_viewers_per_client,
                                 plain_udp_port=settings.rtsp_udp_port if settings.rtsp_port else None)
        self._runner: LimitedRunner | None = None
        self.hooks: RestHooks | None = None
        # the playback ports besides HTTP: each has start() and stop()
        self.listeners: list[Listener] = []
        self.wcs: WcsServer | None = None
        if settings.ws_port or (settings.wss_port and settings.wss_cert):
            self.wcs = WcsServer(self.gateway, self.whep, settings)
            self.listeners.append(self.wcs)
        self.hls: HlsServer | None = None
        if settings.hls_port:
            self.hls = HlsServer(self.gateway, settings)
            self.listeners.append(self.hls)
        self.rtsp: RtspServer | None = None
        if settings.rtsp_port:
            self.rtsp = RtspServer(self.gateway, self.whep, settings)
            self.listeners.append(self.rtsp)

    @property
    def base_url(self) -> str:
        scheme = "https" if self.settings.https_cert else "http"
        return f"{scheme}://{self.settings.ip}:{self.settings.http_port}"

    async def start(self) -> None:
        hooks = RestHooks(self.gateway)  # checks the hook settings before anything opens
        s = self.settings
        tls = server_context(s.https_cert, s.https_key, "https_cert/https_key") if s.https_cert else None
        self.whep.start()
        await self.gateway.start()
        self.hooks = hooks
        await hooks.start()
        self._runner = LimitedRunner(create_app(self.gateway, self.whep, hooks=hooks), access_log=None,
                                     shutdown_timeout=min(2.0, s.shutdown_timeout_s / 4),
                                     max_connections=s.http_max_connections,
                                     header_timeout_s=s.http_header_timeout_s,
                                     keepalive_timeout=s.http_keepalive_timeout_s)
        if self.hls is not None:
            self.gateway.metrics.attach_hls(self.hls)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.bind_ip, self.settings.http_port, ssl_context=tls)
        await site.start()
        log.info("HTTP on %s (player: %s/player)", self.base_url, self.base_url)
        for listener in self.listeners:
            await listener.start()

    async def stop(self) -> None:
        """HTTP and viewers first, then calls, recordings and SIP, then the
        hooks of what ended: within ``shutdown_timeout_s`` in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout_s
        for listener in reversed(self.listeners):
            await listener.stop()
        if self._runner is not None:
            await self._runner.cleanup()  # ends WHEP sessions; bounded by the runner's shutdown_timeout
            self._runner = None
        # A short grace lets the FINISH of calls hung up reach their hooks.
        hooks_grace = min(1.0, self.settings.shutdown_timeout_s / 8)
        await self.gateway.stop(timeout=max(0.5, deadline - loop.time() - hooks_grace))
        if self.hooks is not None:
            await self.hooks.close(drain_s=max(0.1, min(hooks_grace, deadline - loop.time())))
            self.hooks = None

async def serve_forever(server: Server, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM, then hang up live calls and exit."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()
