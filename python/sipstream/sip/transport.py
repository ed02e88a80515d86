"""SIP over UDP and TCP on one port: RFC 3261 client transactions with
retransmission timers (UDP only), TCP framing by Content-Length, limits on
TCP connections (how many, how long idle, how long a message may take), and
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
# Inbound TCP limits, defaults of SipTransport.open(). Kamailio closes a
# connection idle for tcp_connection_lifetime (120 s) and holds at most
# tcp_max_connections (2048); Asterisk's chan_sip gives a TCP client
# tcpauthtimeout (30 s) to pass digest authentication and admits
# tcpauthlimit (100) unauthenticated ones. A gateway that only answers
# OPTIONS and in-dialog requests needs fewer connections than a proxy: 1,000;
# 10 s for a new connection's first message (a client that connects sends at
# once; Asterisk's 30 s include a challenge round trip we do not make);
# 10 s to finish a message once its first byte came (64 KiB take
# milliseconds); and Kamailio's 120 s once idle.
MAX_TCP_CONNECTIONS = 1000
TCP_FIRST_MESSAGE_TIMEOUT = 10.0
TCP_MESSAGE_TIMEOUT = 10.0
TCP_IDLE_TIMEOUT = 120.0
# At most one log line per this many seconds for UDP socket errors (ICMP).
_UDP_ERROR_LOG_INTERVAL = 10.0
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
    transactions: int = 0  # client transactions started
    retransmissions: int = 0
    tcp_connections: int = 0
    tcp_rejected: int = 0  # inbound connections closed at once: the cap was reached
    tcp_timeouts: int = 0  # connections closed for a slow message or for idling
    udp_errors: int = 0  # errors reported on the UDP socket (ICMP unreachable)


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

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner.received(data, Endpoint(str(addr[0]), int(addr[1]), "UDP"))

    def error_received(self, exc: Exception) -> None:
        self.owner._udp_error(exc)


class _Connection:
    """One TCP connection: frames messages by Content-Length (RFC 3261 §18.3)
    and closes itself when a message is too slow to arrive or it idles.

    One timer per connection holds the earliest deadline; it is moved only
    when a deadline comes nearer (a message starts), and otherwise re-armed
    when it fires early, so a busy connection costs no timer churn."""

    def __init__(
        self,
        owner: SipTransport,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Endpoint,
        inbound: bool,
    ) -> None:
        self.owner = owner
        self.peer = peer
        self.reader = reader
        self.writer = writer
        self.inbound = inbound
        self.task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.opened = self._loop.time()
        self.last_activity = self.opened
        self.messages = 0  # complete, parseable SIP messages received
        self.message_started: float | None = None  # first byte of an unfinished message
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._arm()

    def write(self, data: bytes) -> None:
        self.last_activity = self._loop.time()
        self.writer.write(data)

    def _deadline(self) -> tuple[float, str] | None:
        """The earliest time this connection should close, and why."""
        owner = self.owner
        deadlines: list[tuple[float, str]] = []
        if self.message_started is not None:
            deadlines.append((self.message_started + owner.tcp_message_timeout, "message not finished"))
        if self.inbound and self.messages == 0:
            deadlines.append((self.opened + owner.tcp_first_message_timeout, "no SIP message after connecting"))
        elif self.inbound:
            deadlines.append((self.last_activity + owner.tcp_idle_timeout, "idle"))
        elif owner.tcp_outbound_idle_timeout is not None:
            deadlines.append((self.last_activity + owner.tcp_outbound_idle_timeout, "idle"))
        return min(deadlines) if deadlines else None

    def _arm(self) -> None:
        deadline = self._deadline()
        if deadline is None or self._closed:
            return
        if self._timer is not None:
            if self._timer.when() <= deadline[0]:
                return  # fires first and re-arms
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline[0], self._expired)

    def _expired(self) -> None:
        self._timer = None
        deadline = self._deadline()
        if deadline is None or self._closed:
            return
        now = self._loop.time()
        if now < deadline[0]:
            self._arm()
            return
        if deadline[1] == "idle" and self.owner._connection_in_use(self):
            self.last_activity = now  # a call or a transaction still needs it
            self._arm()
            return
        self.owner.stats.tcp_timeouts += 1
        log.debug("SIP TCP %s:%d closed: %s", self.peer.host, self.peer.port, deadline[1])
        self.close()

    def close(self) -> None:
        """Close at once: abort, so a peer that reads nothing cannot hold the
        socket open with our unsent data."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.writer.transport.abort()

    async def _read(self, buffer: bytes) -> bytes | None:
        chunk = await self.reader.read(65536)
        if not chunk:
            return None
        buffer += chunk
        if self.message_started is None and buffer.strip(b"\r\n"):
            self.message_started = self._loop.time()
            self._arm()
        return buffer

    def _message_done(self, rest: bytes, parsed: bool) -> None:
        now = self._loop.time()
        if parsed:
            self.messages += 1
            self.last_activity = now
        # Pipelined bytes after the message start the next one's clock.
        self.message_started = now if rest.strip(b"\r\n") else None
        self._arm()

    async def run(self) -> None:
        buffer: bytes | None = b""
        try:
            while buffer is not None:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_MESSAGE:
                        raise ValueError("header block larger than 64 KiB")
                    buffer = await self._read(buffer)
                    continue
                head = buffer[: end + 4]
                if not head.strip(b"\r\n"):  # CRLF keep-alive (RFC 5626)
                    buffer = buffer[end + 4 :]
                    if self.messages:  # keeps an established connection, not a new one
                        self.last_activity = self._loop.time()
                    continue
                match = _CONTENT_LENGTH.search(head)
                length = int(match.group(1)) if match else 0
                if end + 4 + length > MAX_MESSAGE:
                    raise ValueError(f"message of {end + 4 + length} bytes is larger than 64 KiB")
                while buffer is not None and len(buffer) < end + 4 + length:
                    buffer = await self._read(buffer)
                if buffer is None:
                    return
                message, buffer = buffer[: end + 4 + length], buffer[end + 4 + length :]
                self._message_done(buffer, self.owner.received(message, self.peer))
        except (ConnectionError, ValueError) as exc:
            log.info("SIP TCP %s:%d closed: %s", self.peer.host, self.peer.port, exc)
        finally:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.owner._forget_connection(self)
            self.writer.close()


class SipTransport:
    """The UA's SIP port: a UDP socket and a TCP listener on the same port.
    Requests go to ``on_request``; responses complete client transactions,
    matched by Via branch and CSeq method.

    TCP limits: at most ``max_tcp_connections`` inbound connections (more are
    closed as soon as accepted); an inbound connection must deliver a SIP
    message within ``tcp_first_message_timeout`` and then closes after
    ``tcp_idle_timeout`` without one (RFC 5626 CRLF keep-alives count); any
    message must arrive whole within ``tcp_message_timeout`` of its first
    byte. Connections we opened are closed when idle only if
    ``tcp_outbound_idle_timeout`` is set, and then never while a client
    transaction or a ``hold_connection`` uses them: the proxy sends a call's
    in-dialog requests back over them."""

    def __init__(
        self,
        t1: float = 0.5,
        timeout: float = 32.0,
        *,
        max_tcp_connections: int = MAX_TCP_CONNECTIONS,
        tcp_first_message_timeout: float = TCP_FIRST_MESSAGE_TIMEOUT,
        tcp_message_timeout: float = TCP_MESSAGE_TIMEOUT,
        tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
        tcp_outbound_idle_timeout: float | None = None,
    ) -> None:
        self.t1 = t1
        self.t2 = 4.0
        self.timeout = timeout
        self.max_tcp_connections = max_tcp_connections
        self.tcp_first_message_timeout = tcp_first_message_timeout
        self.tcp_message_timeout = tcp_message_timeout
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_outbound_idle_timeout = tcp_outbound_idle_timeout
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
        self._inbound = 0  # accepted TCP connections open now
        self._rejected_before_burst: int | None = None  # set while at the cap
        self._holds: dict[tuple[str, str, int], int] = {}
        self._udp_error_logged = -_UDP_ERROR_LOG_INTERVAL
        self._udp_errors_logged = 0

    # ------------------------------------------------------------ lifecycle
    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        t1: float,
        timeout: float,
        *,
        max_tcp_connections: int = MAX_TCP_CONNECTIONS,
        tcp_first_message_timeout: float = TCP_FIRST_MESSAGE_TIMEOUT,
        tcp_message_timeout: float = TCP_MESSAGE_TIMEOUT,
        tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
        tcp_outbound_idle_timeout: float | None = None,
    ) -> SipTransport:
        """Bind UDP and TCP on ``host:port`` (an ephemeral port free for both
        when 0). The TCP limits are described on the class."""
        self = cls(
            t1=t1,
            timeout=timeout,
            max_tcp_connections=max_tcp_connections,
            tcp_first_message_timeout=tcp_first_message_timeout,
            tcp_message_timeout=tcp_message_timeout,
            tcp_idle_timeout=tcp_idle_timeout,
            tcp_outbound_idle_timeout=tcp_outbound_idle_timeout,
        )
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
            self._udp = udp
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
            conn.close()
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
        peer = writer.get_extra_info("peername")
        if self._inbound >= self.max_tcp_connections or peer is None:
            writer.transport.abort()
            if peer is not None:
                self._reject_over_cap()
            return
        if self._rejected_before_burst is not None:
            log.warning(
                "SIP TCP: accepting connections again; %d were refused at the cap of %d",
                self.stats.tcp_rejected - self._rejected_before_burst, self.max_tcp_connections,
            )
            self._rejected_before_burst = None
        conn = _Connection(self, reader, writer, Endpoint(str(peer[0]), int(peer[1]), "TCP"), inbound=True)
        self._connections[(conn.peer.host, conn.peer.port)] = conn
        self._inbound += 1
        self.stats.tcp_connections += 1
        conn.task = asyncio.current_task()
        await conn.run()

    def _reject_over_cap(self) -> None:
        """Count a refused connection; log once per burst of them, not per
        connection, so a flood cannot flood the log too."""
        if self._rejected_before_burst is None:
            self._rejected_before_burst = self.stats.tcp_rejected
            log.warning(
                "SIP TCP: %d inbound connections open, the most allowed; closing new ones "
                "until some end (counted in stats.tcp_rejected)", self._inbound,
            )
        self.stats.tcp_rejected += 1

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
        peer = Endpoint(destination.host, destination.port, "TCP")
        conn = _Connection(self, reader, writer, peer, inbound=False)
        self._connections[(destination.host, destination.port)] = conn
        self.stats.tcp_connections += 1
        conn.task = asyncio.create_task(conn.run())
        return conn

    def _forget_connection(self, conn: _Connection) -> None:
        if self._connections.get((conn.peer.host, conn.peer.port)) is conn:
            del self._connections[(conn.peer.host, conn.peer.port)]
        if conn.inbound:
            self._inbound -= 1

    def hold_connection(self, destination: Endpoint) -> None:
        """Keep the TCP connection to ``destination`` (open now or later) from
        being closed as idle until ``release_connection``: a call holds the
        one its dialog uses. Holds are counted; UDP destinations are ignored."""
        if destination.transport == "TCP":
            key = (destination.transport, destination.host, destination.port)
            self._holds[key] = self._holds.get(key, 0) + 1

    def release_connection(self, destination: Endpoint) -> None:
        """Undo one ``hold_connection``; the connection may then idle out."""
        key = (destination.transport, destination.host, destination.port)
        count = self._holds.get(key, 0) - 1
        if count > 0:
            self._holds[key] = count
        else:
            self._holds.pop(key, None)

    def _connection_in_use(self, conn: _Connection) -> bool:
        host, port = conn.peer.host, conn.peer.port
        if ("TCP", host, port) in self._holds:
            return True
        return any(
            tx.destination.transport == "TCP" and tx.destination.host == host and tx.destination.port == port
            for tx in self._transactions.values()
        )

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
        self.stats.transactions += 1
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
    def received(self, data: bytes, source: Endpoint) -> bool:
        """Dispatch one datagram or framed TCP message; False when it was
        not a SIP message (a keep-alive, or malformed)."""
        self.stats.received += 1
        if not data.strip(b"\r\n"):
            return False  # keep-alive (RFC 5626 CRLF ping)
        try:
            message = SipMessage.parse(data)
        except SipParseError as exc:
            self.stats.malformed += 1
            log.debug("dropped malformed SIP from %s:%d: %s", source.host, source.port, exc)
            return False
        if message.is_request:
            self._dispatch_request(message, source)
        else:
            self._dispatch_response(message, source)
        return True

    def _udp_error(self, exc: Exception) -> None:
        """An error reported on the UDP socket, in practice an ICMP port or
        host unreachable reflected as ECONNREFUSED/EHOSTUNREACH. It never ends
        a transaction: RFC 3261 §17.1.1.2 and §17.1.2.2 allow treating it as a
        transport error, but the socket is unconnected, so the error does not
        say which destination it came from (another request's, or a reply to
        a spoofed packet), and a proxy that is restarting refuses for a moment
        and then answers. Retransmission goes on, and the transaction fails
        only at Timer B/F. (Linux reports nothing on an unconnected socket
        unless IP_RECVERR is set; other systems do.)"""
        self.stats.udp_errors += 1
        now = asyncio.get_running_loop().time()
        if now - self._udp_error_logged >= _UDP_ERROR_LOG_INTERVAL:
            log.info(
                "SIP UDP socket error (%d since the last report; transactions keep retransmitting): %s",
                self.stats.udp_errors - self._udp_errors_logged, exc,
            )
            self._udp_error_logged = now
            self._udp_errors_logged = self.stats.udp_errors

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
