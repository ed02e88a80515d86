"""What the RFC 3261 grammar allows in the parts of a request that come from
REST fields: user parts, hosts, display names, URIs. Anything else is
refused before a call starts, so that no field can add a header, a URI
parameter, a tag or a header of a URI to what we send (SIP injection).

Each check raises ``ValueError`` with a message naming the field."""

from __future__ import annotations

import ipaddress
import re

from .._core import SipUri

# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved ).
# ";" and "?" are user-unreserved too, but written raw they end the user part
# for many parsers (and let a field add URI parameters or headers), so they
# are refused; "%XX" escapes are kept as written.
_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,/]|%[0-9A-Fa-f]{2})+")
# hostname = *( domainlabel "." ) toplabel [ "." ]; a label is 1-63
# characters (RFC 1035), the name at most 253.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")
_TRANSPORTS = ("udp", "tcp")
MAX_USER = 128
MAX_HOST = 253


def check_text(value: str, field: str, max_length: int) -> str:
    """Any field: encodable as UTF-8 (no lone surrogates), no control
    characters (CR, LF and NUL among them), at most ``max_length`` long."""
    if len(value) > max_length:
        raise ValueError(f"{field} is longer than {max_length} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field} is not valid Unicode text") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{field} contains a control character")
    return value


def check_user(value: str, field: str) -> str:
    """A SIP user part: login, callee number."""
    check_text(value, field, MAX_USER)
    if not _USER.fullmatch(value):
        raise ValueError(f"{field} may hold only letters, digits, %XX escapes and -_.!~*'()&=+$,/ "
                         f"(RFC 3261 user part)")
    return value


def check_host(value: str, field: str) -> str:
    """A host name, an IPv4 address or a bracketed IPv6 reference."""
    check_text(value, field, MAX_HOST)
    if value.startswith("[") and value.endswith("]"):
        try:
            ipaddress.IPv6Address(value[1:-1])
        except ValueError:
            raise ValueError(f"{field}: {value!r} is not an IPv6 address") from None
        return value
    name = value[:-1] if value.endswith(".") else value
    if not name or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{field}: {value!r} is not a host name (letters, digits and '-', "
                         f"labels of 1-63 characters) or an IP address")
    return value


def check_hostport(value: str, field: str) -> str:
    """``host[:port]``, as in ``sipDomain``."""
    host, port = _split_port(value, field)
    check_host(host, field)
    return value if port is None else f"{host}:{port}"


def _split_port(value: str, field: str) -> tuple[str, int | None]:
    if value.startswith("["):
        host, _, rest = value.partition("]")
        host += "]"
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"{field}: {value!r} has garbage after the IPv6 address")
        port_text = rest[1:]
    else:
        host, sep, port_text = value.partition(":")
        if not sep:
            return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{field}: {value!r} has no valid port")
    return host, int(port_text)


def check_uri(value: str, field: str, user_required: bool = False) -> SipUri:
    """A ``sip:`` URI without URI headers, with a UDP or TCP transport, if
    any. ``sips:`` and ``;transport=tls`` need TLS, which does not exist yet:
    refused rather than silently sent in the clear."""
    check_text(value, field, MAX_USER + MAX_HOST + 64)
    if value.lower().startswith("sips:"):
        raise ValueError(f"{field}: sips: URIs need SIP over TLS, which is not supported")
    try:
        uri = SipUri.parse(value)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None
    if uri.scheme != "sip":
        raise ValueError(f"{field}: only sip: URIs are supported")
    if uri.headers is not None:
        raise ValueError(f"{field}: URI headers ('?...') are not allowed")
    if uri.user is not None:
        check_user(uri.user, field)
    elif user_required:
        raise ValueError(f"{field}: the URI has no user part")
    check_host(uri.host, field)
    for name, param in uri.params.items():
        if not re.fullmatch(r"[A-Za-z0-9\-_.!~*'()]+", name) or (
                param is not None and not re.fullmatch(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]*", param)):
            raise ValueError(f"{field}: URI parameter {name!r} is not allowed")
    transport = uri.params.get("transport")
    if transport is not None and transport.lower() not in _TRANSPORTS:
        raise ValueError(f"{field}: transport={transport} is not supported (UDP or TCP)")
    return uri


def check_callee(value: str, field: str = "callee") -> str:
    """A bare user or number, ``user@host[:port]``, or a ``sip:`` URI."""
    if value.lower().startswith(("sip:", "sips:")):
        check_uri(value, field, user_required=False)
    elif value.lower().startswith("tel:"):
        check_text(value, field, MAX_USER)
        if not re.fullmatch(r"tel:\+?[0-9\-.()]+", value, re.IGNORECASE):
            raise ValueError(f"{field}: a tel: URI holds only a number")
    elif "@" in value:
        user, _, hostport = value.rpartition("@")
        check_user(user, field)
        check_hostport(hostport, field)
    else:
        check_user(value, field)
    return value


def check_proxy(value: str, field: str = "sipOutboundProxy") -> str:
    """``host[:port]``, with URI parameters (``;transport=tcp``, ``;lr``) or
    without, and with a ``sip:`` scheme or without."""
    check_uri(value if value.lower().startswith(("sip:", "sips:")) else "sip:" + value, field)
    return value


def quoted_display_name(name: str) -> str:
    """RFC 3261 quoted-string: ``"`` and ``\\`` escaped, so that a display
    name cannot close the quotes and add a URI or a tag."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
