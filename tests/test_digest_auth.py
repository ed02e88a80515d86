"""Digest authentication against a challenging registrar/callee written here
with hashlib (independent of the Rust digest code): SHA-256 and MD5, qop=auth
with nonce counts, a stale=true nonce retried without failing, 401 at
REGISTER and 407 at INVITE."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import pytest
from sipstream._core import SipMessage

from .conftest import Rest

REALM = "auth.test"
PASSWORD = "s3cret"


def _h(algorithm: str, text: str) -> str:
    return (hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5)(text.encode()).hexdigest()


class Challenger(asyncio.DatagramProtocol):
    """Challenges every REGISTER/INVITE once per nonce; the first nonce is
    answered stale=true; accepts a correct response, refuses the INVITE with 486."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self.transport: asyncio.DatagramTransport | None = None
        self.verified: list[tuple[str, str]] = []  # (method, nc)
        self.failures: list[str] = []
        self.nonces = iter(["n-stale", "n-fresh", "n-invite"])
        self.nonce = next(self.nonces)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def _reply(self, req: SipMessage, addr: Any, status: int, reason: str, extra: list[tuple[str, str]]) -> None:
        headers = [("Via", v) for v in req.header_all("Via")]
        headers += [(n, req.header(n) or "") for n in ("From", "To", "Call-ID", "CSeq")]
        assert self.transport is not None
        self.transport.sendto(SipMessage.response(status, reason, headers + extra).to_bytes(), addr)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        req = SipMessage.parse(data)
        if not req.is_request or req.method == "ACK":
            return
        header = "Authorization" if req.method == "REGISTER" else "Proxy-Authorization"
        challenge_header = "WWW-Authenticate" if req.method == "REGISTER" else "Proxy-Authenticate"
        code = 401 if req.method == "REGISTER" else 407
        credentials = req.header(header)
        stale = ""
        if credentials:
            fields = dict(re.findall(r'(\w+)="?([^",]*)"?', credentials))
            if fields.get("nonce") == "n-stale":
                self.nonce = next(self.nonces)
                stale = ", stale=true"
            elif self._valid(req.method or "", fields):
                self.verified.append((req.method or "", fields.get("nc", "")))
                if req.method == "REGISTER":
                    self._reply(req, addr, 200, "OK", [("Contact", req.header("Contact") or "")])
                else:
                    self._reply(req, addr, 486, "Busy Here", [])
                return
            else:
                self.failures.append(credentials)
        challenge = (f'Digest realm="{REALM}", nonce="{self.nonce}", qop="auth", '
                     f'algorithm={self.algorithm}, opaque="op1"{stale}')
        self._reply(req, addr, code, "Unauthorized", [(challenge_header, challenge)])

    def _valid(self, method: str, f: dict[str, str]) -> bool:
        a = self.algorithm
        ha1 = _h(a, f"{f['username']}:{REALM}:{PASSWORD}")
        ha2 = _h(a, f"{method}:{f['uri']}")
        expected = _h(a, f"{ha1}:{f['nonce']}:{f['nc']}:{f['cnonce']}:auth:{ha2}")
        return (f.get("response") == expected and f.get("algorithm") == a and f.get("opaque") == "op1"
                and f.get("nonce") == self.nonce)


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
async def test_digest_register_and_invite_with_stale_nonce_retry(rest: Rest, algorithm: str) -> None:
    loop = asyncio.get_running_loop()
    transport, challenger = await loop.create_datagram_endpoint(lambda: Challenger(algorithm),
                                                                local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        body = {"callId": "a1", "callee": "bob", "toStream": "as1", "sipLogin": "alice", "sipPassword": PASSWORD,
                "sipDomain": "auth.test", "sipOutboundProxy": "127.0.0.1", "sipPort": str(port),
                "sipRegisterRequired": "true", "hasVideo": "false"}
        assert (await rest.post("/rest-api/call/startup", body))[0] == 200
        call = await rest.wait_status("a1", {"BUSY", "FAILED"})
        assert call["status"] == "BUSY", call  # authenticated INVITE reached the callee's 486
        for _ in range(20):  # the un-REGISTER after the call is authenticated too
            if len(challenger.verified) == 3:
                break
            await asyncio.sleep(0.05)
        assert challenger.failures == []
        assert [m for m, _ in challenger.verified] == ["REGISTER", "INVITE", "REGISTER"]
        assert all(nc == "00000001" for _, nc in challenger.verified)
    finally:
        transport.close()
