"""Settings precedence and validation; the WHEP offer's ICE candidate filter."""

from __future__ import annotations

from pathlib import Path

import pytest
from sipstream import Settings, SettingsError
from sipstream.egress.whep import reachable_candidates_only


def test_settings_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "flashphoner.properties"
    config.write_text(
        "# comment\n! also a comment\n\nhttp_port=9000\nrtp_in_buffer=true\nmedia_port_from=32000\n"
        "media_port_to=33000\napp.defaultApp=http://127.0.0.1:8081/apps/EchoApp\n"
    )
    settings = Settings.load(config, environ={"SIPSTREAM_HTTP_PORT": "9100", "SIPSTREAM_CALL_KEEP_FINISHED_S": "3"},
                             overrides={"http_port": 9200, "ip": None})
    assert settings.http_port == 9200
    assert settings.call_keep_finished_s == 3.0
    assert settings.rtp_in_buffer is True
    assert (settings.media_port_from, settings.media_port_to) == (32000, 33000)
    assert settings.apps == {"defaultApp": "http://127.0.0.1:8081/apps/EchoApp"}


def test_unknown_keys_warn_and_bad_values_fail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "a.properties"
    config.write_text("no_such_key=1\n")
    Settings.load(config, environ={})
    assert "no_such_key" in caplog.text
    config.write_text("rtp_in_buffer=perhaps\n")
    with pytest.raises(SettingsError, match="rtp_in_buffer"):
        Settings.load(config, environ={})
    config.write_text("just a line\n")
    with pytest.raises(SettingsError, match=":1:"):
        Settings.load(config, environ={})
    with pytest.raises(SettingsError, match="media_port"):
        Settings.load(environ={}, overrides={"media_port_from": 40000, "media_port_to": 30000})


OFFER = "\r\n".join([
    "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "a=candidate:1 1 udp 2113937151 192.0.2.2 41919 typ host generation 0",
    "a=candidate:2 1 udp 2113942271 fd00::2 59697 typ host generation 0",
    "a=candidate:3 1 udp 2113942271 0d9c7bc3-aaaa.local 5000 typ host",
    "a=candidate:4 1 udp 2113942271 127.0.0.1 5001 typ host",
    "a=rtpmap:96 H264/90000", "",
])


def test_whep_offer_keeps_only_candidates_our_address_can_reach() -> None:
    on_loopback = reachable_candidates_only(OFFER, "127.0.0.1")
    assert "127.0.0.1 5001" in on_loopback
    assert "192.0.2.2" not in on_loopback and "fd00::2" not in on_loopback and ".local" not in on_loopback
    assert "a=rtpmap:96 H264/90000" in on_loopback
    public = reachable_candidates_only(OFFER, "203.0.113.5")
    assert "192.0.2.2 41919" in public and "fd00::2" not in public
