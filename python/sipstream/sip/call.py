"""One outgoing SIP call: the INVITE client transaction with digest retries,
the dialog it creates (route set, re-INVITE/UPDATE both ways, hold, session
timers, INFO), CANCEL before answer, BYE in both directions, and the WCS call
statuses it goes through."""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from .._core import NameAddr, SessionDescription, SipMessage, SipUri
from .account import SipAccount, resolve
from .transport import Endpoint, TransactionTimeout, TransportError, new_branch, new_tag
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

    @property
    def is_connected(self) -> bool:
        return self in (CallStatus.ESTABLISHED, CallStatus.HOLD)


NORMAL_CLEARING = "Normal call clearing"
REQUEST_TIMEOUT = "Failed by request timeout"
RTP_ACTIVITY = "Failed by RTP activity"
AUTH_FAILED = "Authentication failed"

# Final SIP statuses that mean "busy" to WCS clients.
_BUSY = {486, 600}
_DEFAULT_SESSION_EXPIRES = 1800
_MIN_SE = 90
PICTURE_FAST_UPDATE = (
    '<?xml version="1.0" encoding="utf-8" ?><media_control><vc_primitive><to_encoder>'
    "<picture_fast_update></picture_fast_update></to_encoder></vc_primitive></media_control>"
)


def failure_info(status: int, reason: str) -> str:
    if status in (488, 415, 606):
        return "No common codecs"
    if status == 408:
        return REQUEST_TIMEOUT
    return f"{status} {reason}".strip()


def sdp_direction(sdp: str) -> str:
    """The direction of the first active m-section ("sendrecv" when unreadable)."""
    try:
        session = SessionDescription.parse(sdp)
    except ValueError:
        return "sendrecv"
    for media in session.media:
        if media.port != 0:
            return media.direction
    return "inactive"


_ANSWER_DIRECTION = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive", "sendrecv": "sendrecv"}


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
        session_expires: int = _DEFAULT_SESSION_EXPIRES,
        min_se: int = _MIN_SE,
    ) -> None:
        self.ua = ua
        self.account = account
        self.callee = callee
        self.local_sdp = SessionDescription.parse(offer)
        self.on_status = on_status
        self.on_remote_sdp = on_remote_sdp
        self.invite_timeout = invite_timeout
        self.session_expires = session_expires
        self.min_se = min_se  # RFC 4028 Min-SE: 90 s; lower only in tests
        self.sip_call_id = secrets.token_hex(12) + "@sipstream"
        self.local_tag = new_tag()
        self.remote_tag: str | None = None
        self.request_uri = account.request_uri(callee)
        self.remote_target = self.request_uri
        self.route_set: list[str] = []
        self.cseq = 0
        self.status = CallStatus.PENDING
        self.sip_status: int | None = None
        self.transport = account.next_hop().transport
        self.on_hold = False  # we put the far end on hold
        self.remote_hold = False  # the far end put us on hold
        self._invite: SipMessage | None = None
        self._invite_destination: Endpoint | None = None
        self._ack: SipMessage | None = None
        self._ack_destination: Endpoint | None = None
        self._provisional = asyncio.Event()
        self._invite_done = asyncio.Event()  # the INVITE transaction ended, whatever its outcome
        self._cancel_requested = False
        self._cancel_reason = ""
        self._final_status = CallStatus.FINISH
        self._registered = False
        self._ended = asyncio.Event()
        self._remote_sdp_seen = False
        self._session_timer: asyncio.TimerHandle | None = None
        self._we_refresh = False
        self._session_interval = session_expires  # as negotiated by the last 2xx
        self._dialog_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unacked: dict[int, asyncio.Task[None]] = {}  # our 2xx to re-INVITEs awaiting ACK

    # ----------------------------------------------------------- statuses
    def _set_status(self, status: CallStatus, info: str = "") -> None:
        if self.status.is_final or (status == self.status and not info):
            return
        self.status = status
        self.on_status(status, self.sip_status, info)
        if status.is_final:
            self._ended.set()
            self._stop_session_timer()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --------------------------------------------------------------- run
    async def run(self) -> None:
        """Place the call; returns when it is established or has failed."""
        self.ua.register_call(self)
        try:
            if self.account.register_required:
                await self.ua.acquire_registration(self.account)
                self._registered = True
            if self._cancel_requested:
                self._set_status(self._final_status, self._cancel_reason or NORMAL_CLEARING)
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
        self._invite_destination = await resolve(self.account.next_hop())
        extra: list[tuple[str, str]] = []
        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + self.invite_timeout, self._invite_timed_out)
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
                    self._set_status(self._final_status, self._cancel_reason or NORMAL_CLEARING)
                elif status in _BUSY:
                    self._set_status(CallStatus.BUSY, failure_info(status, response.reason or ""))
                else:
                    self._set_status(CallStatus.FAILED, failure_info(status, response.reason or ""))
                return
            raise SipFailure(AUTH_FAILED, self.sip_status)
        finally:
            timer.cancel()
            self._invite_done.set()

    def _invite_timed_out(self) -> None:
        if self.status.is_connected or self.ended:
            return
        log.info("call %s: no answer within %.0f s, cancelling", self.sip_call_id, self.invite_timeout)
        self._spawn(self.hangup(REQUEST_TIMEOUT, CallStatus.FAILED))

    def _build_invite(self, extra: list[tuple[str, str]]) -> SipMessage:
        headers = [
            ("Via", self.ua.via(new_branch(), self.transport)),
            ("Max-Forwards", "70"),
            ("From", self.ua.from_header(self.account, self.local_tag)),
            ("To", f"<{self.request_uri}>"),
            ("Call-ID", self.sip_call_id),
            ("CSeq", f"{self.cseq} INVITE"),
            ("Contact", self.ua.contact(self.account, self.transport)),
            ("Allow", ALLOW),
            ("Supported", "replaces, timer"),
            ("Session-Expires", str(self.session_expires)),
            ("Min-SE", str(self.min_se)),
            ("User-Agent", USER_AGENT),
            ("Content-Type", "application/sdp"),
            *extra,
        ]
        return SipMessage.request("INVITE", self.request_uri, headers, self.local_sdp.to_string().encode())

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
        self.remote_tag = response.to_tag if to else None
        contact = response.header("Contact")
        if contact:
            self.remote_target = NameAddr.parse(contact).uri
        self.route_set = list(reversed(response.header_all("Record-Route")))
        await self._send_ack(self.cseq)
        if self._cancel_requested:
            # 200 crossed our CANCEL: the call exists, so end it with BYE.
            await self._bye(self._cancel_reason or NORMAL_CLEARING, self._final_status)
            return
        if response.body:
            self._remote_sdp_seen = True
            self.on_remote_sdp(response.body.decode("utf-8", "replace"), False)
        self._start_session_timer(response, we_are_uac=True)
        self._set_status(CallStatus.ESTABLISHED)

    # -------------------------------------------------------------- dialog
    async def _dialog_destination(self) -> Endpoint:
        first = self.route_set[0] if self.route_set else f"<{self.remote_target}>"
        uri = SipUri.parse(NameAddr.parse(first).uri)
        transport = (uri.params.get("transport") or self.transport).upper()
        return await resolve(Endpoint(uri.host, uri.port or 5060, transport))

    def _dialog_headers(self, method: str, cseq: int) -> list[tuple[str, str]]:
        to = f"<{self.request_uri}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")
        headers = [
            ("Via", self.ua.via(new_branch(), self.transport)),
            ("Max-Forwards", "70"),
            ("From", self.ua.from_header(self.account, self.local_tag)),
            ("To", to),
            ("Call-ID", self.sip_call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        headers += [("Route", r) for r in self.route_set]
        return headers

    async def _send_ack(self, cseq: int) -> None:
        headers = self._dialog_headers("ACK", cseq)
        headers += [("Contact", self.ua.contact(self.account, self.transport)), ("User-Agent", USER_AGENT)]
        self._ack = SipMessage.request("ACK", self.remote_target, headers)
        self._ack_destination = await self._dialog_destination()
        self.ua.transport.send(self._ack, self._ack_destination)

    async def _dialog_request(
        self, method: str, extra: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> SipMessage:
        """An in-dialog request with digest retries; returns the final response."""
        auth = Authenticator(self.account)
        credentials: list[tuple[str, str]] = []
        destination = await self._dialog_destination()
        for _ in range(3):
            self.cseq += 1
            headers = self._dialog_headers(method, self.cseq)
            headers += [("User-Agent", USER_AGENT), *(extra or []), *credentials]
            request = SipMessage.request(method, self.remote_target, headers, body)
            response = await self.ua.transport.request(request, destination)
            if response.status in (401, 407):
                credentials = [auth.answer(response, method, self.remote_target)]
                continue
            if method == "INVITE" and (response.status or 0) >= 300:
                self._ack_in_dialog_failure(request, response, destination)
            return response
        raise SipFailure(AUTH_FAILED, 401)

    def _ack_in_dialog_failure(self, request: SipMessage, response: SipMessage, destination: Endpoint) -> None:
        headers = [(n, v) for n, v in request.headers if n in ("Via", "From", "Call-ID", "Route", "Max-Forwards")]
        headers += [("To", response.header("To") or ""), ("CSeq", f"{self.cseq} ACK")]
        self.ua.transport.send(SipMessage.request("ACK", self.remote_target, headers), destination)

    def handle_stray_response(self, response: SipMessage) -> None:
        cseq = response.cseq
        if cseq is None or cseq[1] != "INVITE":
            return
        status = response.status or 0
        if 200 <= status < 300 and self._ack is not None and self._ack_destination is not None:
            self.ua.transport.send(self._ack, self._ack_destination)  # 2xx retransmission
        elif status >= 300 and self._invite is not None:
            self._ack_non_2xx(response)

    async def _bye(self, info: str, status: CallStatus = CallStatus.FINISH) -> None:
        self._set_status(status, info)
        try:
            await self._dialog_request("BYE")
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

    async def hangup(self, info: str = NORMAL_CLEARING, status: CallStatus = CallStatus.FINISH) -> None:
        """CANCEL before the answer, BYE after it; the call ends as ``status``."""
        if self.ended:
            return
        if self.status.is_connected:
            await self._bye(info, status)
            await self._cleanup()
            return
        self._cancel_requested = True
        self._cancel_reason = info
        self._final_status = status
        if self._invite is None:
            return  # still registering: run() sees the flag
        if not self._provisional.is_set():
            # RFC 3261 §9.1: no CANCEL before a provisional response. The call
            # ends now for its owner; the INVITE transaction goes on in the
            # background: a provisional response gets our CANCEL, a late 2xx
            # our ACK and BYE (see _answered), a failure our ACK.
            self._set_status(status, info)
            self._spawn(self._cancel_after_provisional())
            return
        await self._cancel()

    async def _cancel_after_provisional(self) -> None:
        waits = [asyncio.ensure_future(e.wait()) for e in (self._provisional, self._invite_done)]
        try:
            await asyncio.wait(waits, timeout=self.ua.transport.timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        if self._provisional.is_set() and not self._invite_done.is_set():
            await self._cancel()

    # ---------------------------------------------------- hold and re-INVITE
    def _next_sdp(self, direction: str) -> bytes:
        """Our SDP with ``direction`` on every m-section and a new o= version."""
        self.local_sdp.session_version += 1
        for media in self.local_sdp.media:
            media.direction = direction
        return self.local_sdp.to_string().encode()

    async def set_hold(self, hold: bool) -> None:
        """Put the far end on hold (re-INVITE a=sendonly) or resume it (sendrecv)."""
        if not self.status.is_connected:
            raise SipFailure(f"call is {self.status.value}, not established")
        async with self._dialog_lock:
            body = self._next_sdp("sendonly" if hold else "sendrecv")
            response = await self._dialog_request(
                "INVITE",
                [("Contact", self.ua.contact(self.account, self.transport)), ("Allow", ALLOW),
                 ("Content-Type", "application/sdp")],
                body,
            )
            status = response.status or 0
            if not 200 <= status < 300:
                raise SipFailure(f"re-INVITE refused: {status} {response.reason or ''}".strip(), status)
            await self._send_ack(self.cseq)
            if response.body:
                self.on_remote_sdp(response.body.decode("utf-8", "replace"), False)
            self.on_hold = hold
            self._update_hold_status()

    def _update_hold_status(self) -> None:
        if self.status.is_connected:
            self._set_status(CallStatus.HOLD if self.on_hold or self.remote_hold else CallStatus.ESTABLISHED)

    async def send_info(self, content_type: str, body: str) -> None:
        if not self.status.is_connected:
            raise SipFailure(f"call is {self.status.value}, not established")
        response = await self._dialog_request("INFO", [("Content-Type", content_type)], body.encode())
        if not 200 <= (response.status or 0) < 300:
            raise SipFailure(f"INFO refused: {response.status} {response.reason or ''}".strip(), response.status)

    def request_picture_fast_update(self) -> None:
        """SIP INFO keyframe request, for far ends without RTCP feedback."""
        if self.status.is_connected:
            self._spawn(self._info_quietly("application/media_control+xml", PICTURE_FAST_UPDATE))

    async def _info_quietly(self, content_type: str, body: str) -> None:
        try:
            await self.send_info(content_type, body)
        except (SipFailure, TransactionTimeout, TransportError) as exc:
            log.info("call %s: INFO %s failed: %s", self.sip_call_id, content_type, exc)

    # --------------------------------------------------- session timers
    def _start_session_timer(self, message: SipMessage, we_are_uac: bool) -> None:
        """RFC 4028: refresh at half the interval when we are the refresher,
        else hang up if no refresh comes before the session expires."""
        self._stop_session_timer()
        header = message.header("Session-Expires")
        if not header:
            return
        value, _, params = header.partition(";")
        try:
            interval = max(self.min_se, int(value.strip()))
        except ValueError:
            return
        refresher = "uac"
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key.lower() == "refresher":
                refresher = val.strip().lower()
        self._we_refresh = (refresher == "uac") == we_are_uac
        self._session_interval = interval
        loop = asyncio.get_running_loop()
        if self._we_refresh:
            self._session_timer = loop.call_later(interval / 2, lambda: self._spawn(self._refresh_session()))
        else:
            self._session_timer = loop.call_later(interval - min(32, interval / 3), self._session_expired)

    def _stop_session_timer(self) -> None:
        if self._session_timer is not None:
            self._session_timer.cancel()
            self._session_timer = None

    async def _refresh_session(self) -> None:
        if not self.status.is_connected:
            return
        try:
            async with self._dialog_lock:
                response = await self._dialog_request(
                    "UPDATE",
                    [("Contact", self.ua.contact(self.account, self.transport)),
                     # RFC 4028 §7.4: a refresh carries the current interval
                     ("Session-Expires", f"{self._session_interval};refresher=uac"), ("Supported", "timer")],
                )
        except (SipFailure, TransactionTimeout, TransportError) as exc:
            log.info("call %s: session refresh failed: %s", self.sip_call_id, exc)
            await self.hangup(REQUEST_TIMEOUT, CallStatus.FAILED)
            return
        if (response.status or 0) == 481 or (response.status or 0) == 408:
            await self.hangup(REQUEST_TIMEOUT, CallStatus.FAILED)
        elif 200 <= (response.status or 0) < 300:
            self._start_session_timer(response, we_are_uac=True)

    def _session_expired(self) -> None:
        log.info("call %s: session expired without refresh", self.sip_call_id)
        self._spawn(self.hangup(REQUEST_TIMEOUT, CallStatus.FAILED))

    # ------------------------------------------------- incoming in-dialog
    def handle_ack(self, request: SipMessage) -> None:
        """The ACK to our 2xx of a re-INVITE stops its retransmissions."""
        cseq = request.cseq
        if cseq is not None and cseq[0] in self._unacked:
            self._unacked.pop(cseq[0]).cancel()

    async def _retransmit_2xx(self, response: SipMessage, destination: Endpoint) -> None:
        """RFC 3261 §13.3.1.4: over UDP, resend a 2xx to INVITE (T1 doubling
        up to T2) until its ACK arrives or 64*T1 passed."""
        transport = self.ua.transport
        interval, waited = transport.t1, 0.0
        while waited < 64 * transport.t1:
            await asyncio.sleep(interval)
            waited += interval
            transport.send(response, destination)
            interval = min(interval * 2, transport.t2)

    async def handle_request(self, request: SipMessage, source: Endpoint) -> None:
        method = request.method or ""
        if method == "BYE":
            self.ua.respond(request, source, 200, "OK")
            self._set_status(CallStatus.FINISH, NORMAL_CLEARING)
            await self._cleanup()
        elif method in ("INVITE", "UPDATE"):
            self._answer_session_update(request, source)
        elif method in ("OPTIONS", "INFO", "NOTIFY"):
            self.ua.respond(request, source, 200, "OK", [("Allow", ALLOW)])
        elif method == "CANCEL":
            self.ua.respond(request, source, 481, "Call/Transaction Does Not Exist")
        elif method == "PRACK":
            self.ua.respond(request, source, 200, "OK")
        else:
            self.ua.respond(request, source, 501, "Not Implemented", [("Allow", ALLOW)])

    def _answer_session_update(self, request: SipMessage, source: Endpoint) -> None:
        """re-INVITE or UPDATE from the far end: hold/resume, a media change,
        or a session refresh. Our answer mirrors the offered direction."""
        extra = [("Contact", self.ua.contact(self.account, self.transport)), ("Allow", ALLOW)]
        session_expires = request.header("Session-Expires")
        if session_expires:
            value, _, params = session_expires.partition(";")
            refresher = "uac"
            for param in params.split(";"):
                key, _, val = param.strip().partition("=")
                if key.lower() == "refresher" and val.strip():
                    refresher = val.strip().lower()
            extra += [("Session-Expires", f"{value.strip()};refresher={refresher}"), ("Require", "timer")]
        body = b""
        if request.body:
            offer = request.body.decode("utf-8", "replace")
            direction = sdp_direction(offer)
            self.on_remote_sdp(offer, False)
            self.remote_hold = direction in ("sendonly", "inactive")
            ours = "sendonly" if self.on_hold else "sendrecv"
            answer = _ANSWER_DIRECTION.get(direction, "sendrecv")
            if ours == "sendonly" and answer == "sendrecv":
                answer = "sendonly"
            elif ours == "sendonly" and answer == "recvonly":
                answer = "inactive"
            body = self._next_sdp(answer)
            extra.append(("Content-Type", "application/sdp"))
        elif request.method == "INVITE":
            # An offerless re-INVITE: we offer, they answer in the ACK.
            body = self.local_sdp.to_string().encode()
            extra.append(("Content-Type", "application/sdp"))
        response = self.ua.respond(request, source, 200, "OK", extra, body, to_tag=self.local_tag)
        cseq = request.cseq
        if request.method == "INVITE" and source.transport == "UDP" and cseq is not None:
            task = asyncio.ensure_future(self._retransmit_2xx(response, source))
            self._unacked[cseq[0]] = task
            number = cseq[0]
            task.add_done_callback(lambda _t: self._unacked.pop(number, None))
        if session_expires:
            # The far end sent the refresh; restart the watch (we are its UAS).
            self._start_session_timer(request, we_are_uac=False)
        self._update_hold_status()

    async def _cleanup(self) -> None:
        self._stop_session_timer()
        for task in list(self._unacked.values()):
            task.cancel()
        self.ua.forget_call(self)
        if self._registered:
            self._registered = False
            await self.ua.release_registration(self.account)
