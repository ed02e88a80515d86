"""Settings precedence and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from sipstream import Settings, SettingsError


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


def test_webrtc_port_is_checked_against_the_media_range() -> None:
    assert Settings.load(environ={}).webrtc_port == 31000
    with pytest.raises(SettingsError, match="webrtc_port"):
        Settings.load(environ={}, overrides={"webrtc_port": 31500})
    with pytest.raises(SettingsError, match="webrtc_port"):
        Settings.load(environ={}, overrides={"webrtc_port": 70000})
    assert Settings.load(environ={}, overrides={"webrtc_port": 0}).webrtc_port == 0


def test_ice_tcp_is_off_by_default_and_its_port_is_checked() -> None:
    settings = Settings.load(environ={})
    assert settings.ice_tcp_transport is False and settings.webrtc_tcp_port == 31000
    on = Settings.load(environ={}, overrides={"ice_tcp_transport": "true", "webrtc_tcp_port": "31002"})
    assert on.ice_tcp_transport is True and on.webrtc_tcp_port == 31002
    with pytest.raises(SettingsError, match="webrtc_tcp_port"):
        Settings.load(environ={}, overrides={"webrtc_tcp_port": 70000})
    with pytest.raises(SettingsError, match="webrtc_tcp_port"):
        Settings.load(environ={}, overrides={"ice_tcp_transport": True, "webrtc_tcp_port": 9091})


def test_rtsp_port_defaults_to_5554_and_its_settings_are_checked() -> None:
    settings = Settings.load(environ={})
    assert settings.rtsp_port == 5554 and settings.rtsp_auth is False
    assert Settings.load(environ={"SIPSTREAM_RTSP_PORT": "0"}).rtsp_port == 0
    with pytest.raises(SettingsError, match="rtsp_port"):
        Settings.load(environ={}, overrides={"rtsp_port": 70000})
    with pytest.raises(SettingsError, match="rtsp_port"):
        Settings.load(environ={}, overrides={"rtsp_port": 9091})  # the HTTP port
    with pytest.raises(SettingsError, match="rtsp_auth"):
        Settings.load(environ={}, overrides={"rtsp_auth": "true", "rtsp_user": "u"})
    with pytest.raises(SettingsError, match="rtsp_user"):
        Settings.load(environ={}, overrides={"rtsp_auth": "true", "rtsp_user": 'a"b', "rtsp_password": "p"})
    with pytest.raises(SettingsError, match="rtsp_session_timeout_s"):
        Settings.load(environ={}, overrides={"rtsp_session_timeout_s": 0})
    # RTSP's UDP pair: an even RTP port (RTCP on the next), clear of WebRTC's port and the media range
    assert settings.rtsp_udp_port == 5556
    assert Settings.load(environ={"SIPSTREAM_RTSP_UDP_PORT": "0"}).rtsp_udp_port == 0
    for bad in (5555, 65534 + 2, -2):
        with pytest.raises(SettingsError, match="rtsp_udp_port"):
            Settings.load(environ={}, overrides={"rtsp_udp_port": bad})
    with pytest.raises(SettingsError, match="webrtc_port"):
        Settings.load(environ={}, overrides={"rtsp_udp_port": 30_000, "webrtc_port": 30_001})
    with pytest.raises(SettingsError, match="media port range"):
        Settings.load(environ={}, overrides={"rtsp_udp_port": 31_500})
    on = Settings.load(environ={}, overrides={"rtsp_auth": "true", "rtsp_user": "u", "rtsp_password": "secret-pw"})
    assert "secret-pw" not in repr(on)
