"""Who may do what on the HTTP port: the API's bearer token
(``rest_auth_token``, compared in constant time) and signed, expiring
playback tokens per stream (``playback_token_secret``: JWT HS256, as
LiveKit's access tokens), which let a viewer play one stream and nothing
else. Mint them with ``playback_token``."""

from __future__ import annotations

import hmac
import time

import jwt

ALGORITHM = "HS256"
ANY_STREAM = "*"


def playback_token(secret: str, stream: str, ttl_s: float = 3600.0, now: float | None = None) -> str:
    """A token that plays ``stream`` (``*``: any stream) for ``ttl_s`` seconds."""
    issued = int(time.time() if now is None else now)
    return jwt.encode({"stream": stream, "iat": issued, "exp": issued + int(ttl_s)}, secret, algorithm=ALGORITHM)


def playback_allowed(token: str, stream: str, secret: str) -> bool:
    """``token`` is signed with ``secret``, unexpired, and names ``stream``."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "stream"]})
    except jwt.PyJWTError:
        return False
    return claims.get("stream") in (stream, ANY_STREAM)


def bearer(authorization: str) -> str:
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def api_token_ok(authorization: str, token: str) -> bool:
    sent = authorization.encode("utf-8", "replace")  # any bytes: a 401, never a 500
    return hmac.compare_digest(sent, f"Bearer {token}".encode())
