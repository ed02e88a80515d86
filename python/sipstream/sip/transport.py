"""SIP over UDP and TCP on one port: RFC 3261 client transactions with
retransmission timers (UDP only), TCP framing by Content-Length, and
dispatch of incoming requests and stray responses.

Parsing is done by the Rust core; this module only moves bytes and timers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from .._core import SipMessage, SipParseError, Via

log = logging.getLogger(__name__)

MAGIC_COOKIE = "z9hG4bK"
MAX_MESSAGE = 65535
CONNECT_TIMEOUT = 5.0
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


class Endpoint(NamedTuple):
    """Where a message goes or came from."""

    host: str
    port: int
    transport: str = "UDP"  # "UDP" | "TCP"


RequestHandler = Callable[[SipMessage, Endpoint], Awaitable[None]]


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


class TransactionTimeout(Exception):
    """No final response before Timer B/F fired."""


class TransportError(Exception):
    """The network refused the request (connection refused, unresolvable host)."""


@dataclass
class TransportStats:
    received: int = 0
    sent: int = 0
    malformed: int = 0
    stray_responses: int = 0
    retransmissions: int = 0
    tcp_connections: int = 0


@dataclass
class ClientTransaction:
    """One request awaiting its final response (RFC 3261 §17.1)."""

    request: SipMessage
    destination: Endpoint
    on_provisional: Callable[[SipMessage], None] | None = None
    final: asyncio.Future[SipMessage] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    provisional_seen: bool = False


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.owner.received(data, Endpoint(str(addr[0]), int(addr[1]), "UDP"))

    def error_received(self, exc: Exception) -> None:
        log.info("SIP UDP socket error: %s", exc)


class _Connection:
    """One TCP connection: frames messages by Content-Length (RFC 3261 §18.3)."""

    def __init__(self, owner: SipTransport, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self.owner = owner
        self.peer = Endpoint(str(peer[0]), int(peer[1]), "TCP")
        self.reader = reader
        self.writer = writer
        self.task: asyncio.Task[None] | None = None

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def run(self) -> None:
        buffer = b""
        try:
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_MESSAGE:
                        raise ValueError("header block larger than 64 KiB")
                    chunk = await self.reader.read(65536)
                    if not chunk:
                        return
                    buffer += chunk
                    continue
                head = buffer[: end + 4]
                if not head.strip(b"\r\n"):  # CRLF keep-alive (RFC 5626)
                    buffer = buffer[end + 4 :]
                    continue
                match = _CONTENT_LENGTH.search(head)
                length = int(match.group(1)) if match else 0
                if end + 4 + length > MAX_MESSAGE:
                    raise ValueError(f"message of {end + 4 + length} bytes is larger than 64 KiB")
                while len(buffer) < end + 4 + length:
                    chunk = await self.reader.read(65536)
                    if not chunk:
                        return
                    buffer += chunk
                message, buffer = buffer[: end + 4 + length], buffer[end + 4 + length :]
                self.owner.received(message, self.peer)
        except (ConnectionError, ValueError) as exc:
            log.info("SIP TCP %s:%d closed: %s", self.peer.host, self.peer.port, exc)
        finally:
            self.owner._forget_connection(self)
            self.writer.close()


class SipTransport:
    """The UA's SIP port: a UDP socket and a TCP listener on the same port.
    Requests go to ``on_request``; responses complete client transactions,
    matched by Via branch and CSeq method."""

    def __init__(self, t1: float = 0.5, timeout: float = 32.0) -> None:
        self.t1 = t1
        self.t2 = 4.0
        self.timeout = timeout
        self.stats = TransportStats()
        self.on_request: RequestHandler | None = None
        # A retransmitted 2xx to an INVITE arrives after its transaction ended;
        # the dialog layer re-sends its ACK.
        self.on_stray_response: Callable[[SipMessage, Endpoint], None] | None = None
        self.local_address = Endpoint("0.0.0.0", 0)
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.base_events.Server | None = None
        self._connections: dict[tuple[str, int], _Connection] = {}
        self._transactions: dict[tuple[str, str], ClientTransaction] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lifecycle
    @classmethod
    async def open(cls, host: str, port: int, t1: float, timeout: float) -> SipTransport:
        """Bind UDP and TCP on ``host:port`` (an ephemeral port free for both when 0)."""
        self = cls(t1=t1, timeout=timeout)
        loop = asyncio.get_running_loop()
        for attempt in range(20):
            udp, _ = await loop.create_datagram_endpoint(lambda: _Datagram(self), local_addr=(host, port))
            bound = udp.get_extra_info("sockname")[1]
            try:
                self._server = await asyncio.start_server(self._accepted, host, bound)
            except OSError:
                udp.close()
                if port or attempt == 19:
                    raise
                continue
            self._udp = udp  # type: ignore[assignment]
            self.local_address = Endpoint(host, bound)
            return self
        raise OSError("no port free for both UDP and TCP")  # pragma: no cover - loop returns or raises

    def close(self) -> None:
        for tx in list(self._transactions.values()):
            if not tx.final.done():
                tx.final.set_exception(TransportError("transport closed"))
        self._transactions.clear()
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._connections.values()):
            conn.writer.close()
            if conn.task is not None:
                conn.task.cancel()
        self._connections.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    # ----------------------------------------------------------------- TCP
    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        self._connections[(conn.peer.host, conn.peer.port)] = conn
        self.stats.tcp_connections += 1
        conn.task = asyncio.current_task()  # type: ignore[assignment]
        await conn.run()

    async def _connect(self, destination: Endpoint) -> _Connection:
        conn = self._connections.get((destination.host, destination.port))
        if conn is not None:
            return conn
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(destination.host, destination.port), CONNECT_TIMEOUT
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise TransportError(
                f"cannot connect to {destination.host}:{destination.port} over TCP: {exc or 'timeout'}"
            ) from None
        conn = _Connection(self, reader, writer)
        self._connections[(destination.host, destination.port)] = conn
        self.stats.tcp_connections += 1
        conn.task = asyncio.create_task(conn.run())
        return conn

    def _forget_connection(self, conn: _Connection) -> None:
        for key, value in list(self._connections.items()):
            if value is conn:
                del self._connections[key]

    # -------------------------------------------------------------- sending
    def send(self, message: SipMessage, destination: Endpoint) -> None:
        """Send without waiting; over TCP a missing connection is opened first."""
        data = message.to_bytes()
        self.stats.sent += 1
        if destination.transport == "TCP":
            conn = self._connections.get((destination.host, destination.port))
            if conn is not None:
                conn.write(data)
            else:
                self._spawn(self._connect_and_write(destination, data))
            return
        if self._udp is None:
            raise TransportError("transport closed")
        self._udp.sendto(data, (destination.host, destination.port))

    async def _connect_and_write(self, destination: Endpoint, data: bytes) -> None:
        try:
            (await self._connect(destination)).write(data)
        except TransportError as exc:
            log.info("SIP send failed: %s", exc)

    async def request(
        self,
        request: SipMessage,
        destination: Endpoint,
        on_provisional: Callable[[SipMessage], None] | None = None,
    ) -> SipMessage:
        """Send ``request`` reliably and return its final response.

        Raises TransactionTimeout after Timer B (INVITE) or Timer F, and
        TransportError when a TCP connection cannot be made."""
        via = request.header("Via")
        if via is None:
            raise ValueError("request has no Via header")
        branch = Via.parse(via).branch() or ""
        method = request.method or ""
        if destination.transport == "TCP":
            await self._connect(destination)
        tx = ClientTransaction(request, destination, on_provisional)
        key = (branch, method)
        self._transactions[key] = tx
        retransmit = asyncio.create_task(self._retransmit(tx))
        try:
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(tx.final), self.timeout)
                except asyncio.TimeoutError:
                    # An INVITE that got a provisional response waits for its
                    # final one without Timer B (RFC 3261 §17.1.1.2); the call
                    # ends it with CANCEL and then abandon().
                    if method == "INVITE" and tx.provisional_seen:
                        continue
                    raise TransactionTimeout(
                        f"no final response to {method} from {destination.host}:{destination.port}"
                    ) from None
        finally:
            retransmit.cancel()
            self._transactions.pop(key, None)

    def abandon(self, request: SipMessage) -> None:
        """Give up on a pending request (RFC 3261 §9.1: an INVITE whose CANCEL
        brought no final response within 64*T1)."""
        via = request.header("Via")
        branch = (Via.parse(via).branch() or "") if via else ""
        tx = self._transactions.get((branch, request.method or ""))
        if tx is not None and not tx.final.done():
            tx.final.set_exception(TransactionTimeout(f"{request.method} abandoned after CANCEL"))

    async def _retransmit(self, tx: ClientTransaction) -> None:
        """Timer A/E on UDP: resend with doubling interval; INVITE stops after a
        provisional response, non-INVITE continues at T2 (RFC 3261 §17.1)."""
        self.send(tx.request, tx.destination)
        if tx.destination.transport != "UDP":
            return
        interval = self.t1
        is_invite = tx.request.method == "INVITE"
        while not tx.final.done():
            await asyncio.sleep(interval)
            if tx.final.done():
                return
            if tx.provisional_seen:
                if is_invite:
                    return
                interval = self.t2
            else:
                interval = interval * 2 if is_invite else min(interval * 2, self.t2)
            self.send(tx.request, tx.destination)
            self.stats.retransmissions += 1

    # ------------------------------------------------------------ receiving
    def received(self, data: bytes, source: Endpoint) -> None:
        self.stats.received += 1
        if not data.strip(b"\r\n"):
            return  # keep-alive (RFC 5626 CRLF ping)
        try:
            message = SipMessage.parse(data)
        except SipParseError as exc:
            self.stats.malformed += 1
            log.debug("dropped malformed SIP from %s:%d: %s", source.host, source.port, exc)
            return
        if message.is_request:
            self._dispatch_request(message, source)
        else:
            self._dispatch_response(message, source)

    def _dispatch_response(self, response: SipMessage, source: Endpoint) -> None:
        via = response.header("Via")
        cseq = response.cseq
        branch = ""
        if via is not None:
            try:
                branch = Via.parse(via).branch() or ""
            except ValueError:
                pass
        tx = self._transactions.get((branch, cseq[1] if cseq else ""))
        if tx is None:
            self.stats.stray_responses += 1
            if self.on_stray_response is not None:
                self.on_stray_response(response, source)
            return
        status = response.status or 0
        if status < 200:
            tx.provisional_seen = True
            if tx.on_provisional is not None:
                tx.on_provisional(response)
        elif not tx.final.done():
            tx.final.set_result(response)

    def _dispatch_request(self, request: SipMessage, source: Endpoint) -> None:
        if self.on_request is not None:
            self._spawn(self.on_request(request, source))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("error handling SIP message", exc_info=task.exception())
