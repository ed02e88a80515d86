"""A SIP account as given to /call/startup, and where its requests go."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

from .._core import SipUri
from .transport import Address, TransportError


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

    @property
    def auth_user(self) -> str:
        return self.auth_name or self.login

    @property
    def aor(self) -> str:
        """Address of record: ``sip:login@domain``."""
        return f"sip:{self.login}@{self.domain}"

    def registration_key(self) -> tuple[str, str, str, str, int]:
        return (self.login, self.domain, self.auth_user, self.outbound_proxy, self.port)

    def request_uri(self, callee: str) -> str:
        """``callee`` may be a bare user/number or a full SIP URI."""
        if callee.startswith(("sip:", "sips:", "tel:")):
            return callee
        if "@" in callee:
            return f"sip:{callee}"
        return f"sip:{callee}@{self.domain}"

    def next_hop(self) -> tuple[str, int]:
        """The outbound proxy when given, else the domain; a port written in
        either wins over ``sipPort``."""
        target = self.outbound_proxy or self.domain
        if not target.startswith(("sip:", "sips:")):
            target = "sip:" + target
        uri = SipUri.parse(target)
        return uri.host, uri.port or self.port or 5060


async def resolve(host: str, port: int) -> Address:
    """Resolve ``host`` to an IPv4 address (no SRV yet)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise TransportError(f"cannot resolve {host}: {exc.strerror}") from None
    if not infos:
        raise TransportError(f"cannot resolve {host}")
    addr = infos[0][4]
    return str(addr[0]), int(addr[1])
