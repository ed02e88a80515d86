"""Limits on the HTTP port: how many connections at once, how long a client
may take to send a request's headers (slowloris), how long an idle
keep-alive connection stays open. aiohttp has the keep-alive timeout; the
connection cap and the header deadline are added here, on its connection
manager."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a NUL in a header, a bad
    request line) at ERROR with a traceback, and answers it 400. That is a
    client's mistake, not the server's: one INFO line, without the bytes
    (which may hold a header's secret)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            why = (exc.message or type(exc).__name__).splitlines()[0].rstrip(": ")
            record.msg, record.args = "%s (answered %d: %s)", (record.getMessage(), exc.code or 400, why)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("aiohttp.server").addFilter(_MalformedRequestFilter())


class LimitedServer(web.Server):
    """aiohttp's connection manager, with ``max_connections`` and a deadline
    of ``header_timeout_s`` for a connection's first request headers (later
    requests on it are bounded by the keep-alive timeout: an idle or slowly
    trickling connection waits for a message and is closed by it)."""

    def __init__(self, *args: Any, max_connections: int, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.refused = 0
        self._last_refusal_log = 0.0
        self._waiting: dict[RequestHandler, asyncio.TimerHandle] = {}
        self._inner_factory = self.request_factory
        self.request_factory = self._request_with_headers  # read by each handler at its start

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if len(self._connections) >= self.max_connections:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_refusal_log >= 10:  # once per burst, not per connection
                self._last_refusal_log = now
                log.warning("HTTP: %d connections open (http_max_connections); refusing new ones "
                            "(%d refused so far)", len(self._connections), self.refused)
            transport.abort()
            return
        super().connection_made(handler, transport)
        self._waiting[handler] = self._loop.call_later(self.header_timeout_s, self._too_slow, handler, transport)

    def _too_slow(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if self._waiting.pop(handler, None) is not None:
            log.info("HTTP: closing a connection that sent no request headers within %.0f s",
                     self.header_timeout_s)
            transport.abort()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        timer = self._waiting.pop(handler, None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(handler, exc)

    def _request_with_headers(self, message: Any, payload: Any, protocol: RequestHandler, writer: Any,
                              task: asyncio.Task[None]) -> Any:
        timer = self._waiting.pop(protocol, None)  # its headers arrived in time
        if timer is not None:
            timer.cancel()
        return self._inner_factory(message, payload, protocol, writer, task)


class LimitedRunner(web.AppRunner):
    """An ``AppRunner`` whose connections are managed by ``LimitedServer``."""

    def __init__(self, app: web.Application, *, max_connections: int, header_timeout_s: float,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        limited = LimitedServer(server.request_handler, request_factory=server.request_factory,
                                handler_cancellation=server.handler_cancellation,
                                loop=server._loop, max_connections=self.max_connections,
                                header_timeout_s=self.header_timeout_s, **server._kwargs)
        return limited


class RateLimiter:
    """A token bucket per client address: ``rate`` requests a second on
    average (0: no limit), bursts of ``burst``. At most ``max_clients`` buckets are kept;
    beyond, the ones idle longest are forgotten (they were full anyway)."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, last refill)

    def allow(self, client: str, now: float | None = None) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)  # re-inserted: most recent last
        if len(self._buckets) > self.max_clients:
            for stale in list(self._buckets)[: len(self._buckets) - self.max_clients]:
                del self._buckets[stale]
        return allowed

    def retry_after(self, client: str) -> int:
        tokens, _ = self._buckets.get(client, (0.0, 0.0))
        return max(1, int((1.0 - tokens) / self.rate + 0.999))
