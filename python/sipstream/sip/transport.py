"""SIP over UDP: one socket per user agent, RFC 3261 client transactions with
retransmission timers, and dispatch of incoming requests and stray responses.

Parsing is done by the Rust core; this module only moves bytes and timers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .._core import SipMessage, SipParseError, Via

log = logging.getLogger(__name__)

Address = tuple[str, int]
RequestHandler = Callable[[SipMessage, Address], Awaitable[None]]

MAGIC_COOKIE = "z9hG4bK"
MAX_DATAGRAM = 65535


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


class TransactionTimeout(Exception):
    """No final response before Timer B/F fired."""


class TransportError(Exception):
    """The network refused the request (ICMP error, unresolvable host)."""


@dataclass
class TransportStats:
    received: int = 0
    sent: int = 0
    malformed: int = 0
    stray_responses: int = 0
    retransmissions: int = 0


@dataclass
class ClientTransaction:
    """One request awaiting its final response (RFC 3261 §17.1)."""

    request: SipMessage
    destination: Address
    branch: str
    on_provisional: Callable[[SipMessage], None] | None = None
    final: asyncio.Future[SipMessage] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    provisional_seen: bool = False


class SipTransport(asyncio.DatagramProtocol):
    """The UA's UDP socket. Requests go to ``on_request``; responses complete
    client transactions, matched by Via branch and CSeq method."""

    def __init__(self, t1: float = 0.5, timeout: float = 32.0) -> None:
        self.t1 = t1
        self.t2 = 4.0
        self.timeout = timeout
        self.stats = TransportStats()
        self.on_request: RequestHandler | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._transactions: dict[tuple[str, str], ClientTransaction] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.local_address: Address = ("0.0.0.0", 0)

    # ------------------------------------------------------------ lifecycle
    @classmethod
    async def open(cls, host: str, port: int, t1: float, timeout: float) -> SipTransport:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: cls(t1=t1, timeout=timeout), local_addr=(host, port)
        )
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sockname = transport.get_extra_info("sockname")
        self.local_address = (sockname[0], sockname[1])

    def close(self) -> None:
        for tx in list(self._transactions.values()):
            if not tx.final.done():
                tx.final.set_exception(TransportError("transport closed"))
        self._transactions.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -------------------------------------------------------------- sending
    def send(self, message: SipMessage, destination: Address) -> None:
        if self._transport is None:
            raise TransportError("transport closed")
        self._transport.sendto(message.to_bytes(), destination)
        self.stats.sent += 1

    async def request(
        self,
        request: SipMessage,
        destination: Address,
        on_provisional: Callable[[SipMessage], None] | None = None,
    ) -> SipMessage:
        """Send ``request`` reliably and return its final response.

        Raises TransactionTimeout after Timer B (INVITE) or Timer F."""
        via = request.header("Via")
        if via is None:
            raise ValueError("request has no Via header")
        branch = Via.parse(via).branch() or ""
        method = request.method or ""
        tx = ClientTransaction(request, destination, branch, on_provisional)
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
                        f"no final response to {method} from {destination[0]}:{destination[1]}"
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
        """Timer A/E: resend with doubling interval; INVITE stops after a
        provisional response, non-INVITE continues at T2 (RFC 3261 §17.1)."""
        interval = self.t1
        is_invite = tx.request.method == "INVITE"
        self.send(tx.request, tx.destination)
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
    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:  # type: ignore[override]
        source: Address = (str(addr[0]), int(addr[1]))  # type: ignore[call-overload]
        self.stats.received += 1
        if not data.strip(b"\r\n"):
            return  # keep-alive (RFC 5626 CRLF ping)
        try:
            message = SipMessage.parse(data)
        except SipParseError as exc:
            self.stats.malformed += 1
            log.info("dropped malformed SIP from %s:%d: %s", source[0], source[1], exc)
            return
        if message.is_request:
            self._dispatch_request(message, source)
        else:
            self._dispatch_response(message, source)

    def _dispatch_response(self, response: SipMessage, source: Address) -> None:
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

    # A retransmitted 2xx to an INVITE arrives after its transaction ended;
    # the dialog layer re-sends its ACK.
    on_stray_response: Callable[[SipMessage, Address], None] | None = None

    def _dispatch_request(self, request: SipMessage, source: Address) -> None:
        if self.on_request is None:
            return
        task = asyncio.create_task(self.on_request(request, source))
        self._tasks.add(task)
        task.add_done_callback(self._request_done)

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("error handling SIP request", exc_info=task.exception())

    def error_received(self, exc: Exception) -> None:
        log.info("SIP socket error: %s", exc)
