"""The server side of TLS for every port that has it: HTTPS (``https_cert``),
WSS (``wss_cert``) and HLS (over the HTTP port's certificate)."""

from __future__ import annotations

import ssl

from .settings import SettingsError


def server_context(cert: str, key: str, names: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context for the PEM files ``cert`` and ``key``;
    ``names`` (e.g. "https_cert/https_key") says which settings gave them
    when they cannot be loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"{names}: cannot load {cert} / {key}: {exc}") from None
    return context
