"""Digest authentication against a challenging registrar/callee written here
with hashlib (independent of the Rust digest code): SHA-256 and MD5, qop=auth
with nonce counts, a stale=true nonce retried without failing, 401 at
REGISTER and 407 at INVITE. Then the same against a real registrar: Kamailio
in its second configuration (qop=auth, SHA-256)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import pytest
from sipstream._core import SipMessage
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest
from .media_checks import assert_real_video, assert_tone
from .peers.fixtures import kamailio_sha256  # noqa: F401  (fixture)
from .peers.kamailio import Kamailio, digest_fields, register
from .peers.media import SOURCE_FPS, SOURCE_HEIGHT, SOURCE_WIDTH
from .test_sip_kamailio import alice_call

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


# ------------------------------------------------- Kamailio, qop=auth + SHA-256
@pytest.fixture
async def bob(kamailio_sha256: Kamailio) -> Any:
    """The loopback callee registered at Kamailio as bob (sipp knows only MD5,
    so the REGISTER is the test's own, answered with hashlib)."""
    callee = LoopbackCallee(width=SOURCE_WIDTH, height=SOURCE_HEIGHT, fps=SOURCE_FPS, loop_seconds=2.0)
    await callee.start()
    try:
        await asyncio.to_thread(register, kamailio_sha256, "bob", callee.port)
        yield callee
    finally:
        await callee.stop()


async def test_register_and_invite_authenticate_with_qop_auth_and_sha256_at_kamailio(
    server: Server, rest: Rest, kamailio_sha256: Kamailio, bob: LoopbackCallee
) -> None:
    assert (await rest.post("/rest-api/call/startup", alice_call(kamailio_sha256, "q1", "qs1")))[0] == 200
    call = await rest.wait_status("q1", {"ESTABLISHED", "FAILED", "FINISH"}, timeout=20)
    assert call["status"] == "ESTABLISHED" and call["sipStatus"] == 200, call
    assert kamailio_sha256.registered("alice")
    # What Kamailio received from us: SHA-256 digests with qop=auth, a nonce count and a client nonce.
    for method in ("REGISTER", "INVITE"):
        sent = [digest_fields(c) for c in kamailio_sha256.credentials(method) if 'username="alice"' in c]
        assert sent, f"no {method} credentials from alice in kamailio's log"
        for f in sent:
            assert f["algorithm"] == "SHA-256" and f["qop"] == "auth", f
            assert re.fullmatch(r"[0-9a-f]{8}", f["nc"]) and f["cnonce"], f
            assert re.fullmatch(r"[0-9a-f]{64}", f["response"]), f  # a SHA-256 digest, not MD5's 32
    # And the call carries bob's media, not the generator's placeholders.
    stream = server.gateway.streams["qs1"]
    await assert_real_video(stream)
    await assert_tone(stream, 440.0)
    assert (await rest.post("/rest-api/call/terminate", {"callId": "q1"}))[0] == 200
    await rest.wait_status("q1", {"FINISH"})


@pytest.mark.parametrize("register_first", ["true", "false"])
async def test_wrong_password_fails_with_authentication_failed_at_sha256_kamailio(
    server: Server, rest: Rest, kamailio_sha256: Kamailio, bob: LoopbackCallee, register_first: str
) -> None:
    body = alice_call(kamailio_sha256, "q2", "qs2", sipPassword="not-the-secret", sipRegisterRequired=register_first)
    assert (await rest.post("/rest-api/call/startup", body))[0] == 200
    call = await rest.wait_status("q2", {"FAILED", "FINISH", "ESTABLISHED"}, timeout=20)
    assert call["status"] == "FAILED" and call["info"] == "Authentication failed", call
    assert call["sipStatus"] in (401, 407)
    method = "REGISTER" if register_first == "true" else "INVITE"
    # We did answer the SHA-256 challenge (with the wrong secret), once.
    sent = [digest_fields(c) for c in kamailio_sha256.credentials(method) if 'username="alice"' in c]
    assert len(sent) == 1 and sent[0]["algorithm"] == "SHA-256" and sent[0]["qop"] == "auth", sent
    assert "INVITE" not in bob.received
