"""A SIP account as given to /call/startup, and where its requests go."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import socket

from .._core import SipUri
from .transport import Endpoint, TransportError


@dataclasses.dataclass(frozen=True)
class SipAccount:
    login: str
    domain: str
    password: str = dataclasses.field(default="", repr=False)
    auth_name: str = ""
    outbound_proxy: str = ""
    port: int = 5060
    visible_name: str = ""
    register_required: bool = False
    transport: str = ""  # "UDP" | "TCP"; empty: from the proxy URI, else UDP

    @property
    def auth_user(self) -> str:
        return self.auth_name or self.login

    @property
    def aor(self) -> str:
        """Address of record: ``sip:login@domain``."""
        return f"sip:{self.login}@{self.domain}"

    def registration_key(self) -> tuple[str, ...]:
        """Calls share a registration only with the same full credential: a
        call with a wrong password must not ride on another call's REGISTER.
        The password enters as a digest, never as itself."""
        secret = hashlib.sha256(self.password.encode()).hexdigest()
        return (self.login, self.domain, self.auth_user, secret, self.outbound_proxy, str(self.port), self.transport)

    def request_uri(self, callee: str) -> str:
        """``callee`` may be a bare user/number or a full SIP URI."""
        if callee.startswith(("sip:", "sips:", "tel:")):
            return callee
        if "@" in callee:
            return f"sip:{callee}"
        return f"sip:{callee}@{self.domain}"

    def next_hop(self) -> Endpoint:
        """The outbound proxy when given, else the domain; a port written in
        either wins over ``sipPort``, a ``;transport=`` over ``sipTransport``."""
        target = self.outbound_proxy or self.domain
        if not target.startswith(("sip:", "sips:")):
            target = "sip:" + target
        uri = SipUri.parse(target)
        transport = (uri.params.get("transport") or self.transport or "UDP").upper()
        return Endpoint(uri.host, uri.port or self.port or 5060, transport)


async def resolve(hop: Endpoint) -> Endpoint:
    """Resolve the host of ``hop`` to an IPv4 address (no SRV yet)."""
    loop = asyncio.get_running_loop()
    kind = socket.SOCK_STREAM if hop.transport == "TCP" else socket.SOCK_DGRAM
    try:
        infos = await loop.getaddrinfo(hop.host, hop.port, family=socket.AF_INET, type=kind)
    except socket.gaierror as exc:
        raise TransportError(f"cannot resolve {hop.host}: {exc.strerror}") from None
    except UnicodeError:  # IDNA: a label over 63 characters, say
        raise TransportError(f"cannot resolve {hop.host}: not a valid host name") from None
    if not infos:
        raise TransportError(f"cannot resolve {hop.host}")
    addr = infos[0][4]
    return Endpoint(str(addr[0]), int(addr[1]), hop.transport)
