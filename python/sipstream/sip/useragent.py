"""The SIP user agent: builds requests, answers requests outside a dialog,
routes in-dialog requests to their call, and keeps registrations (shared by
every call of the same account, refreshed before expiry, removed after)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import __version__
from .._core import NameAddr, SipMessage, digest_authorization, parse_challenge
from .account import SipAccount, resolve
from .grammar import quoted_display_name
from .transport import Endpoint, SipTransport, TransactionTimeout, TransportError, new_branch, new_tag

if TYPE_CHECKING:
    from .call import OutgoingCall

log = logging.getLogger(__name__)

USER_AGENT = f"sipstream/{__version__}"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
KNOWN_METHODS = {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE",
                 "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"}


class SipFailure(Exception):
    """A request ended without success; ``info`` is the WCS-style reason."""

    def __init__(self, info: str, sip_status: int | None = None) -> None:
        super().__init__(info)
        self.info = info
        self.sip_status = sip_status


class Authenticator:
    """Answers 401/407 challenges for one account. A second challenge for
    the same nonce (not stale) means the credentials are wrong."""

    def __init__(self, account: SipAccount) -> None:
        self.account = account
        self._nonces: dict[str, int] = {}
        self.header: tuple[str, str] | None = None

    def answer(self, response: SipMessage, method: str, uri: str) -> tuple[str, str]:
        status = response.status
        challenge_header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        reply_header = "Authorization" if status == 401 else "Proxy-Authorization"
        raw = response.header(challenge_header)
        if raw is None:
            raise SipFailure("Authentication failed", status)
        try:
            challenge = parse_challenge(raw)
        except ValueError as exc:
            raise SipFailure(f"Authentication failed: {exc}", status) from None
        nonce = challenge.get("nonce", "")
        stale = challenge.get("stale", "").lower() == "true"
        if self.header is not None and not stale and nonce in self._nonces:
            raise SipFailure("Authentication failed", status)
        if len(self._nonces) > 8:
            raise SipFailure("Authentication failed", status)
        nc = self._nonces.get(nonce, 0) + 1
        self._nonces[nonce] = nc
        value = digest_authorization(
            self.account.auth_user, self.account.password, method, uri, challenge,
            secrets.token_hex(8), nc,
        )
        self.header = (reply_header, value)
        return self.header


@dataclass
class Registration:
    account: SipAccount
    users: int = 0
    expires: int = 0
    call_id: str = field(default_factory=lambda: secrets.token_hex(12))
    from_tag: str = field(default_factory=new_tag)
    cseq: int = 0
    refresh_task: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class UserAgent:
    def __init__(self, transport: SipTransport, advertised_ip: str, register_expires: int = 3600) -> None:
        self.transport = transport
        self.advertised_ip = advertised_ip
        self.register_expires = register_expires
        self.calls: dict[str, OutgoingCall] = {}
        self._registrations: dict[tuple[str, ...], Registration] = {}
        transport.on_request = self._on_request
        transport.on_stray_response = self._on_stray_response

    # ------------------------------------------------------------ identity
    @property
    def local_port(self) -> int:
        return self.transport.local_address[1]

    def via(self, branch: str, transport: str = "UDP") -> str:
        return f"SIP/2.0/{transport} {self.advertised_ip}:{self.local_port};branch={branch};rport"

    def contact(self, account: SipAccount, transport: str = "UDP") -> str:
        suffix = ";transport=tcp" if transport == "TCP" else ""
        return f"<sip:{account.login}@{self.advertised_ip}:{self.local_port}{suffix}>"

    def from_header(self, account: SipAccount, tag: str) -> str:
        display = quoted_display_name(account.visible_name) + " " if account.visible_name else ""
        return f"{display}<{account.aor}>;tag={tag}"

    # ------------------------------------------------------- registration
    async def acquire_registration(self, account: SipAccount) -> None:
        """Register ``account`` unless one of our calls already did."""
        key = account.registration_key()
        reg = self._registrations.get(key)
        if reg is None:
            reg = self._registrations[key] = Registration(account)
        reg.users += 1
        try:
            async with reg.lock:
                if reg.expires == 0:
                    await self._register(reg, self.register_expires)
        except BaseException:
            await self.release_registration(account)
            raise

    async def release_registration(self, account: SipAccount) -> None:
        key = account.registration_key()
        reg = self._registrations.get(key)
        if reg is None:
            return
        reg.users -= 1
        if reg.users > 0:
            return
        del self._registrations[key]
        if reg.refresh_task is not None:
            reg.refresh_task.cancel()
        if reg.expires:
            try:
                await self._register(reg, 0)
            except (SipFailure, TransactionTimeout, TransportError) as exc:
                log.info("un-REGISTER of %s failed: %s", account.aor, exc)

    async def _register(self, reg: Registration, expires: int) -> None:
        account = reg.account
        destination = await resolve(account.next_hop())
        uri = f"sip:{account.domain}"
        auth = Authenticator(account)
        extra: list[tuple[str, str]] = []
        for _ in range(4):
            reg.cseq += 1
            headers = [
                ("Via", self.via(new_branch(), destination.transport)),
                ("Max-Forwards", "70"),
                ("From", f"<{account.aor}>;tag={reg.from_tag}"),
                ("To", f"<{account.aor}>"),
                ("Call-ID", reg.call_id),
                ("CSeq", f"{reg.cseq} REGISTER"),
                ("Contact", self.contact(account, destination.transport) + f";expires={expires}"),
                ("Expires", str(expires)),
                ("Allow", ALLOW),
                ("User-Agent", USER_AGENT),
                *extra,
            ]
            response = await self.transport.request(SipMessage.request("REGISTER", uri, headers), destination)
            status = response.status or 0
            if status in (401, 407):
                extra = [auth.answer(response, "REGISTER", uri)]
                continue
            if 200 <= status < 300:
                reg.expires = self._granted_expires(response, expires)
                if expires and reg.refresh_task is None:
                    reg.refresh_task = asyncio.create_task(self._refresh(reg))
                log.info("registered %s for %d s", account.aor, reg.expires)
                return
            raise SipFailure(f"Registration failed: {status} {response.reason or ''}".strip(), status)
        raise SipFailure("Authentication failed")

    @staticmethod
    def _granted_expires(response: SipMessage, asked: int) -> int:
        for contact in response.header_all("Contact"):
            try:
                value = NameAddr.parse(contact).params.get("expires")
            except ValueError:
                continue
            if value and value.isdigit():
                return int(value)
        header = response.header("Expires")
        return int(header) if header and header.isdigit() else asked

    async def _refresh(self, reg: Registration) -> None:
        while True:
            await asyncio.sleep(max(5.0, reg.expires * 0.8))
            try:
                async with reg.lock:
                    await self._register(reg, self.register_expires)
            except (SipFailure, TransactionTimeout, TransportError) as exc:
                log.warning("REGISTER refresh of %s failed: %s", reg.account.aor, exc)

    # ---------------------------------------------------------- responses
    def respond(self, request: SipMessage, source: Endpoint, status: int, reason: str,
                extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                to_tag: str | None = None) -> SipMessage:
        headers: list[tuple[str, str]] = [("Via", v) for v in request.header_all("Via")]
        for name in ("From", "To", "Call-ID", "CSeq"):
            value = request.header(name)
            if value is None:
                continue
            if name == "To" and to_tag and ";tag=" not in value:
                value += f";tag={to_tag}"
            headers.append((name, value))
        headers.append(("Server", USER_AGENT))
        headers.extend(extra or [])
        # RFC 3581 (rport) and TCP alike: answer where the request came from.
        response = SipMessage.response(status, reason, headers, body)
        self.transport.send(response, source)
        return response

    # ----------------------------------------------------------- requests
    async def _on_request(self, request: SipMessage, source: Endpoint) -> None:
        method = request.method or ""
        call = self.calls.get(request.call_id or "")
        if method == "ACK":
            if call is not None:
                call.handle_ack(request)
            return
        missing = [h for h in ("Via", "From", "To", "Call-ID", "CSeq") if request.header(h) is None]
        if missing:
            if request.header("Via") is not None:
                self.respond(request, source, 400, f"Missing {missing[0]}")
            return
        if call is not None:
            await call.handle_request(request, source)
            return
        if method == "OPTIONS":
            self.respond(request, source, 200, "OK", [("Allow", ALLOW), ("Accept", "application/sdp")],
                         to_tag=new_tag())
        elif method == "INVITE":
            self.respond(request, source, 480, "Temporarily Unavailable", to_tag=new_tag())
        elif method not in KNOWN_METHODS:
            self.respond(request, source, 501, "Not Implemented", [("Allow", ALLOW)])
        elif method == "REGISTER":
            self.respond(request, source, 405, "Method Not Allowed", [("Allow", ALLOW)])
        else:
            self.respond(request, source, 481, "Call/Transaction Does Not Exist")

    def _on_stray_response(self, response: SipMessage, source: Endpoint) -> None:
        call = self.calls.get(response.call_id or "")
        if call is not None:
            call.handle_stray_response(response)

    def register_call(self, call: OutgoingCall) -> None:
        self.calls[call.sip_call_id] = call

    def forget_call(self, call: OutgoingCall) -> None:
        self.calls.pop(call.sip_call_id, None)

    async def close(self, timeout: float = 32.0) -> None:
        """Remove our registrations (for at most ``timeout``), then close."""
        async def unregister_all() -> None:
            for reg in list(self._registrations.values()):
                reg.users = 1
                await self.release_registration(reg.account)

        try:
            await asyncio.wait_for(unregister_all(), timeout)
        except asyncio.TimeoutError:
            log.info("un-REGISTER not answered within %.1f s at shutdown", timeout)
        finally:
            for reg in self._registrations.values():
                if reg.refresh_task is not None:
                    reg.refresh_task.cancel()
            self._registrations.clear()
            self.transport.close()


OnStatus = Callable[[str, int | None, str], None]
