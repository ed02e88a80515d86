"""One outgoing SIP call: the INVITE client transaction with digest retries,
the dialog it creates, CANCEL before answer, BYE in both directions, and the
WCS call statuses it goes through."""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from collections.abc import Callable

from .._core import NameAddr, SipMessage, SipUri
from .account import SipAccount, resolve
from .transport import Address, TransactionTimeout, TransportError, new_branch, new_tag
from .useragent import ALLOW, USER_AGENT, Authenticator, SipFailure, UserAgent

log = logging.getLogger(__name__)


class CallStatus(str, enum.Enum):
    PENDING = "PENDING"
    TRYING = "TRYING"
    RING = "RING"
    RING_MEDIA = "RING_MEDIA"
    SESSION_PROGRESS = "SESSION_PROGRESS"
    ESTABLISHED = "ESTABLISHED"
    HOLD = "HOLD"
    BUSY = "BUSY"
    FINISH = "FINISH"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (CallStatus.BUSY, CallStatus.FINISH, CallStatus.FAILED)


NORMAL_CLEARING = "Normal call clearing"
REQUEST_TIMEOUT = "Failed by request timeout"

# Final SIP statuses that mean "busy" to WCS clients.
_BUSY = {486, 600}


def failure_info(status: int, reason: str) -> str:
    if status == 488 or status == 415:
        return "No common codecs"
    if status == 408:
        return REQUEST_TIMEOUT
    return f"{status} {reason}".strip()


class OutgoingCall:
    """Drives one call. The owner supplies the SDP offer and reacts to
    ``on_status(status, sip_status, info)`` and ``on_remote_sdp(sdp, early)``."""

    def __init__(
        self,
        ua: UserAgent,
        account: SipAccount,
        callee: str,
        offer: str,
        on_status: Callable[[CallStatus, int | None, str], None],
        on_remote_sdp: Callable[[str, bool], None],
        invite_timeout: float = 60.0,
    ) -> None:
        self.ua = ua
        self.account = account
        self.callee = callee
        self.offer = offer
        self.on_status = on_status
        self.on_remote_sdp = on_remote_sdp
        self.invite_timeout = invite_timeout
        self.sip_call_id = secrets.token_hex(12) + "@sipstream"
        self.local_tag = new_tag()
        self.remote_tag: str | None = None
        self.request_uri = account.request_uri(callee)
        self.remote_target = self.request_uri
        self.route_set: list[str] = []
        self.cseq = 0
        self.status = CallStatus.PENDING
        self.sip_status: int | None = None
        self._invite: SipMessage | None = None
        self._invite_destination: Address | None = None
        self._ack: SipMessage | None = None
        self._ack_destination: Address | None = None
        self._provisional = asyncio.Event()
        self._cancel_requested = False
        self._registered = False
        self._ended = asyncio.Event()
        self._remote_sdp_seen = False

    # ----------------------------------------------------------- statuses
    def _set_status(self, status: CallStatus, info: str = "") -> None:
        if self.status.is_final or (status == self.status and not info):
            return
        self.status = status
        self.on_status(status, self.sip_status, info)
        if status.is_final:
            self._ended.set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    # --------------------------------------------------------------- run
    async def run(self) -> None:
        """Place the call; returns when it is established or has failed."""
        self.ua.register_call(self)
        try:
            if self.account.register_required:
                await self.ua.acquire_registration(self.account)
                self._registered = True
            if self._cancel_requested:
                self._set_status(CallStatus.FINISH, NORMAL_CLEARING)
                return
            await self._invite_with_auth()
        except SipFailure as exc:
            self.sip_status = exc.sip_status or self.sip_status
            self._set_status(CallStatus.FAILED, exc.info)
        except TransactionTimeout:
            self._set_status(CallStatus.FAILED, REQUEST_TIMEOUT)
        except TransportError as exc:
            self._set_status(CallStatus.FAILED, f"Failed by error: {exc}")
        finally:
            if self.ended:
                await self._cleanup()

    async def _invite_with_auth(self) -> None:
        auth = Authenticator(self.account)
        self._invite_destination = await resolve(*self.account.next_hop())
        extra: list[tuple[str, str]] = []
        deadline = asyncio.get_running_loop().time() + self.invite_timeout
        timer = asyncio.get_running_loop().call_at(deadline, self._invite_timed_out)
        try:
            for _ in range(4):
                self.cseq += 1
                self._invite = self._build_invite(extra)
                self._set_status(CallStatus.TRYING)
                response = await self.ua.transport.request(
                    self._invite, self._invite_destination, self._on_provisional
                )
                status = response.status or 0
                self.sip_status = status
                if status >= 300:
                    self._ack_non_2xx(response)
                if status in (401, 407) and not self._cancel_requested:
                    extra = [auth.answer(response, "INVITE", self.request_uri)]
                    continue
                if 200 <= status < 300:
                    await self._answered(response)
                elif self._cancel_requested or status == 487:
                    self._set_status(CallStatus.FINISH, self._cancel_reason or NORMAL_CLEARING)
                elif status in _BUSY:
                    self._set_status(CallStatus.BUSY, failure_info(status, response.reason or ""))
                else:
                    self._set_status(CallStatus.FAILED, failure_info(status, response.reason or ""))
                return
            raise SipFailure("Authentication failed", self.sip_status)
        finally:
            timer.cancel()

    _cancel_reason: str = ""

    def _invite_timed_out(self) -> None:
        if self.status in (CallStatus.ESTABLISHED, CallStatus.HOLD) or self.ended:
            return
        log.info("call %s: no answer within %.0f s, cancelling", self.sip_call_id, self.invite_timeout)
        self._cancel_reason = REQUEST_TIMEOUT
        asyncio.get_running_loop().create_task(self.hangup(REQUEST_TIMEOUT))

    def _build_invite(self, extra: list[tuple[str, str]]) -> SipMessage:
        headers = [
            ("Via", self.ua.via(new_branch())),
            ("Max-Forwards", "70"),
            ("From", self.ua.from_header(self.account, self.local_tag)),
            ("To", f"<{self.request_uri}>"),
            ("Call-ID", self.sip_call_id),
            ("CSeq", f"{self.cseq} INVITE"),
            ("Contact", self.ua.contact(self.account)),
            ("Allow", ALLOW),
            ("Supported", "replaces"),
            ("User-Agent", USER_AGENT),
            ("Content-Type", "application/sdp"),
            *extra,
        ]
        return SipMessage.request("INVITE", self.request_uri, headers, self.offer.encode())

    def _on_provisional(self, response: SipMessage) -> None:
        status = response.status or 0
        self.sip_status = status
        self._provisional.set()
        if status == 100:
            return
        if response.body and not self._remote_sdp_seen:
            self._remote_sdp_seen = True
            self.on_remote_sdp(response.body.decode("utf-8", "replace"), True)
            self._set_status(CallStatus.RING_MEDIA)
        elif status == 180:
            if self.status != CallStatus.RING_MEDIA:
                self._set_status(CallStatus.RING)
        elif self.status == CallStatus.TRYING:
            self._set_status(CallStatus.SESSION_PROGRESS)

    def _ack_non_2xx(self, response: SipMessage) -> None:
        """RFC 3261 §17.1.1.3: the ACK of a failure is part of the INVITE transaction."""
        assert self._invite is not None and self._invite_destination is not None
        headers = [
            ("Via", self._invite.header("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", self._invite.header("From") or ""),
            ("To", response.header("To") or ""),
            ("Call-ID", self.sip_call_id),
            ("CSeq", f"{self.cseq} ACK"),
        ]
        headers += [("Route", r) for r in self._invite.header_all("Route")]
        self.ua.transport.send(SipMessage.request("ACK", self.request_uri, headers), self._invite_destination)

    async def _answered(self, response: SipMessage) -> None:
        to = response.header("To")
        self.remote_tag = NameAddr.parse(to).tag() if to else None
        contact = response.header("Contact")
        if contact:
            self.remote_target = NameAddr.parse(contact).uri
        self.route_set = list(reversed(response.header_all("Record-Route")))
        await self._send_ack()
        if self._cancel_requested:
            # 200 crossed our CANCEL: the call exists, so end it with BYE.
            await self._bye(self._cancel_reason or NORMAL_CLEARING)
            return
        if response.body:
            self._remote_sdp_seen = True
            self.on_remote_sdp(response.body.decode("utf-8", "replace"), False)
        self._set_status(CallStatus.ESTABLISHED)

    # -------------------------------------------------------------- dialog
    async def _dialog_destination(self) -> Address:
        first = self.route_set[0] if self.route_set else f"<{self.remote_target}>"
        uri = SipUri.parse(NameAddr.parse(first).uri)
        return await resolve(uri.host, uri.port or 5060)

    def _dialog_headers(self, method: str, cseq: int, branch: str) -> list[tuple[str, str]]:
        to = f"<{self.request_uri}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")
        headers = [
            ("Via", self.ua.via(branch)),
            ("Max-Forwards", "70"),
            ("From", self.ua.from_header(self.account, self.local_tag)),
            ("To", to),
            ("Call-ID", self.sip_call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        headers += [("Route", r) for r in self.route_set]
        return headers

    async def _send_ack(self) -> None:
        headers = self._dialog_headers("ACK", self.cseq, new_branch())
        headers += [("Contact", self.ua.contact(self.account)), ("User-Agent", USER_AGENT)]
        self._ack = SipMessage.request("ACK", self.remote_target, headers)
        self._ack_destination = await self._dialog_destination()
        self.ua.transport.send(self._ack, self._ack_destination)

    def handle_stray_response(self, response: SipMessage) -> None:
        cseq = response.cseq
        if cseq is None or cseq[1] != "INVITE":
            return
        status = response.status or 0
        if 200 <= status < 300 and self._ack is not None and self._ack_destination is not None:
            self.ua.transport.send(self._ack, self._ack_destination)  # 2xx retransmission
        elif status >= 300 and self._invite is not None:
            self._ack_non_2xx(response)

    async def _bye(self, info: str) -> None:
        self.cseq += 1
        headers = self._dialog_headers("BYE", self.cseq, new_branch())
        headers.append(("User-Agent", USER_AGENT))
        request = SipMessage.request("BYE", self.remote_target, headers)
        self._set_status(CallStatus.FINISH, info)
        try:
            destination = await self._dialog_destination()
            auth = Authenticator(self.account)
            for _ in range(3):
                response = await self.ua.transport.request(request, destination)
                if response.status in (401, 407):
                    self.cseq += 1
                    headers = self._dialog_headers("BYE", self.cseq, new_branch())
                    headers += [("User-Agent", USER_AGENT), auth.answer(response, "BYE", self.remote_target)]
                    request = SipMessage.request("BYE", self.remote_target, headers)
                    continue
                break
        except (TransactionTimeout, TransportError, SipFailure) as exc:
            log.info("call %s: BYE got no answer: %s", self.sip_call_id, exc)

    async def _cancel(self) -> None:
        invite = self._invite
        if invite is None or self._invite_destination is None:
            return
        headers = [
            ("Via", invite.header("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", invite.header("From") or ""),
            ("To", invite.header("To") or ""),
            ("Call-ID", self.sip_call_id),
            ("CSeq", f"{self.cseq} CANCEL"),
            ("User-Agent", USER_AGENT),
        ]
        headers += [("Route", r) for r in invite.header_all("Route")]
        try:
            await self.ua.transport.request(SipMessage.request("CANCEL", self.request_uri, headers),
                                            self._invite_destination)
        except (TransactionTimeout, TransportError) as exc:
            log.info("call %s: CANCEL got no answer: %s", self.sip_call_id, exc)
        try:
            await asyncio.wait_for(self._ended.wait(), self.ua.transport.timeout)
        except asyncio.TimeoutError:
            log.info("call %s: no final response after CANCEL, giving up", self.sip_call_id)
            self.ua.transport.abandon(invite)

    async def hangup(self, info: str = NORMAL_CLEARING) -> None:
        """CANCEL before the answer, BYE after it."""
        if self.ended:
            return
        if self.status in (CallStatus.ESTABLISHED, CallStatus.HOLD):
            await self._bye(info)
            await self._cleanup()
            return
        self._cancel_requested = True
        self._cancel_reason = info
        if self._invite is None:
            return  # still registering: run() sees the flag
        # RFC 3261 §9.1: CANCEL only once a provisional response arrived.
        waits = [asyncio.ensure_future(e.wait()) for e in (self._provisional, self._ended)]
        await asyncio.wait(waits, timeout=self.ua.transport.timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
        if self.ended:
            return
        if not self._provisional.is_set():
            self._set_status(CallStatus.FAILED, REQUEST_TIMEOUT)
            if self._invite is not None:
                self.ua.transport.abandon(self._invite)
            return
        await self._cancel()

    # ------------------------------------------------- incoming in-dialog
    def handle_ack(self, request: SipMessage) -> None:
        """ACKs to our 2xx answers of re-INVITEs need nothing more."""

    async def handle_request(self, request: SipMessage, source: Address) -> None:
        method = request.method or ""
        if method == "BYE":
            self.ua.respond(request, source, 200, "OK")
            self._set_status(CallStatus.FINISH, NORMAL_CLEARING)
            await self._cleanup()
        elif method in ("INVITE", "UPDATE"):
            # Session refresh or media change: keep our offer as the answer.
            if request.body:
                self.on_remote_sdp(request.body.decode("utf-8", "replace"), False)
            self.ua.respond(request, source, 200, "OK",
                            [("Contact", self.ua.contact(self.account)), ("Content-Type", "application/sdp")],
                            self.offer.encode())
        elif method in ("OPTIONS", "INFO", "NOTIFY"):
            self.ua.respond(request, source, 200, "OK", [("Allow", ALLOW)])
        elif method == "CANCEL":
            self.ua.respond(request, source, 481, "Call/Transaction Does Not Exist")
        else:
            self.ua.respond(request, source, 501, "Not Implemented", [("Allow", ALLOW)])

    async def _cleanup(self) -> None:
        self.ua.forget_call(self)
        if self._registered:
            self._registered = False
            await self.ua.release_registration(self.account)
