"""Server settings: a flashphoner.properties-style file, SIPSTREAM_<KEY>
environment variables and CLI flags, in that order of precedence (last wins).

Every key is declared once in ``_FIELDS`` with its type and default; unknown
keys warn, bad values fail at start with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class SettingsError(ValueError):
    """A setting has a value of the wrong type or out of range."""


def parse_bool(value: Any, name: str) -> bool:
    """WCS sends booleans as strings ("true"); accept both forms."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise SettingsError(f"{name}: expected a boolean (true/false), got {value!r}")


def parse_int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool):
        raise SettingsError(f"{name}: expected an integer, got {value!r}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {value!r}") from None
    if lo is not None and number < lo or hi is not None and number > hi:
        raise SettingsError(f"{name}: {number} is out of range [{lo}, {hi}]")
    return number


def parse_float(value: Any, name: str, lo: float = 0.0) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise SettingsError(f"{name}: expected a number, got {value!r}") from None
    if number < lo:
        raise SettingsError(f"{name}: {number} must be >= {lo}")
    return number


@dataclasses.dataclass
class Settings:
    """All server settings with their defaults (SPEC.md §6)."""

    http_port: int = 9091
    # Address advertised in SDP and used for ICE; also the default bind address.
    ip: str = "127.0.0.1"
    # Bind address for SIP, RTP and HTTP; empty means `ip`.
    ip_local: str = ""
    sip_port: int = 0  # 0: an ephemeral port
    media_port_from: int = 31001
    media_port_to: int = 32000
    # One UDP port for every WebRTC viewer (0: an ephemeral port).
    webrtc_port: int = 31000
    # ICE-TCP (RFC 6544): also offer a passive TCP candidate, for viewers whose
    # firewall blocks UDP (the WCS key). Same number as webrtc_port by default,
    # the other protocol: operators open 31000/udp and 31000/tcp.
    ice_tcp_transport: bool = False
    webrtc_tcp_port: int = 31000
    webrtc_connect_timeout_s: float = 30.0  # a WHEP viewer not connected by then is ended
    rtp_receive_buffer_size: int = 131072
    rtp_send_buffer_size: int = 131072
    rtp_in_buffer: bool = False
    rtp_session_init_always: bool = True
    generate_av_start_delay: int = 1000
    sip_record_stream: bool = False
    sip_single_route_only: bool = False
    periodic_fir_request: int = 0  # seconds between keyframe requests; 0: off
    codecs: str = "opus,ulaw,alaw,telephone-event,h264"
    record_dir: str = "records"
    stream_record_policy_template: str = "{streamName}-{startTimeMillis}"
    record_rotation: str = ""  # "" (off), a duration (30s, 5min, 1h) or a size (20M)
    record_audio_codec: str = "aac"  # or "opus": keep an opus call's audio as it came
    on_record_hook_script: str = ""
    call_keep_finished_s: float = 10.0
    log_format: str = "text"  # or "json": one object per line, with call_id and stream
    rest_auth_token: str = dataclasses.field(default="", repr=False)
    # Signs playback tokens (JWT HS256, claims "stream" and "exp"): with it,
    # WHEP takes a token for the stream instead of rest_auth_token, and needs one.
    playback_token_secret: str = dataclasses.field(default="", repr=False)
    # HTTPS for the HTTP API, WHEP and the pages (PEM files); both or neither.
    https_cert: str = ""
    https_key: str = ""
    # Host names the HTTP API answers to, comma-separated ("*": any; ".example.com":
    # any name under it). IP addresses and localhost are always answered:
    # only names can be rebound (DNS rebinding).
    allowed_hosts: str = ""
    # Origins whose pages may call the API from a browser, comma-separated
    # ("*": any). The server's own pages (same origin) always may.
    cors_origins: str = ""
    # SIGTERM: hang-ups, recordings and hooks get this long in all (under a
    # container runtime's usual 10 s before SIGKILL).
    shutdown_timeout_s: float = 8.0
    # SIP timers (RFC 3261 T1, and the transaction timeout 64*T1 by default).
    sip_t1_ms: int = 500
    sip_transaction_timeout_s: float = 32.0
    sip_invite_timeout_s: float = 60.0
    sip_register_expires: int = 3600
    # The SIP TCP port: inbound connections at once, seconds for a message to
    # arrive whole (and for a new connection's first one), seconds an idle
    # inbound connection stays open (Kamailio's default lifetime).
    sip_tcp_max_connections: int = 1000
    sip_tcp_message_timeout_s: float = 10.0
    sip_tcp_idle_timeout_s: float = 120.0
    sip_session_expires_s: int = 1800  # RFC 4028 interval we ask for
    sip_min_se_s: int = 90  # RFC 4028 Min-SE (90 s); shorter only to test refreshes quickly
    rtp_activity_timeout_s: float = 60.0  # no RTP this long while ESTABLISHED: BYE + FAILED; 0: off
    keyframe_request_interval_ms: int = 1000
    max_calls: int = 500
    max_viewers: int = 1000
    max_viewers_per_client: int = 100  # WHEP sessions per client IP address; 0: no limit
    max_relays: int = 100  # RTMP relays (each a thread and an FFmpeg muxer)
    max_recorders: int = 100
    max_body_bytes: int = 65536
    # The HTTP port: connections at once, seconds to send a request's headers
    # (and its body), seconds an idle keep-alive connection stays open.
    http_max_connections: int = 1000
    http_header_timeout_s: float = 10.0
    http_keepalive_timeout_s: float = 15.0
    # Requests a second per client address on the HTTP API and WHEP (0: off),
    # and the burst allowed above it. /health, /ready and /player are not counted.
    rest_rate_limit: float = 50.0
    rest_rate_burst: int = 200
    # The WCS Web SDK's WebSocket (egress/wcs.py): ws on ws_port, and wss on
    # wss_port when wss_cert and wss_key (PEM files) are given. 0: off. The
    # properties file may spell them as WCS does: ws.port, wss.port.
    ws_port: int = 8080
    wss_port: int = 8443
    wss_cert: str = ""
    wss_key: str = ""
    ws_max_sessions: int = 1000  # WebSocket sessions at once, ws and wss together
    ws_max_message_bytes: int = 65536  # a bigger client frame closes its session (1009)
    ws_ping_interval_s: float = 5.0  # server pings; a session that misses
    ws_max_missed_pings: int = 10  # this many pongs in a row is dropped, as WCS does
    # --- RTSP (egress/rtsp.py): rtsp_port 0 is off ---
    # WCS listens on 554, a privileged port: the default is 5554 so that the
    # server needs no root or CAP_NET_BIND_SERVICE; set 554 when it may bind it.
    rtsp_port: int = 5554
    rtsp_auth: bool = False  # Digest (MD5) with rtsp_user / rtsp_password
    rtsp_user: str = ""
    rtsp_password: str = dataclasses.field(default="", repr=False)
    rtsp_max_connections: int = 1000
    rtsp_request_timeout_s: float = 10.0  # a request must arrive whole (and a new connection's first one)
    rtsp_session_timeout_s: float = 60.0  # announced in Session: ;timeout=; no request for this long ends it
    rtsp_max_request_bytes: int = 8192  # request line, headers and body
    rtsp_tcp_max_backlog_bytes: int = 2 << 20  # unsent interleaved bytes before a slow client is cut off
    # RTP over UDP goes from this even port and RTCP from the next (the
    # players' RTCP reports come back to it); 0: any free pair at start
    rtsp_udp_port: int = 5556
    # --- end of RTSP settings ---
    # --- HLS (egress/hls.py): hls_port 0 is off ---
    hls_port: int = 8082
    hls_dir: str = ""  # segments and playlists also written here; "": memory only
    # Segments of about hls_segment_s (each starts with a keyframe, asked for
    # as it is due; EXT-X-TARGETDURATION is 1.5x it, rounded up, for late
    # ones), LL-HLS parts of at most hls_part_s, the last hls_segments
    # segments in the playlist (and in memory).
    hls_segment_s: float = 2.0
    hls_part_s: float = 0.5
    hls_segments: int = 6
    hls_max_streams: int = 100  # streams muxed at once (a thread and an AAC encoder each); 503 beyond
    hls_idle_timeout_s: float = 30.0  # a stream's muxer stops after this long without a request
    # --- end of HLS settings ---
    # REST hooks (api/hooks.py): WCS names for the first two.
    disable_rest_requests: bool = False
    rest_max_connections: int = 20  # concurrent hook POSTs
    rest_hook_timeout_s: float = 5.0  # per POST, connect included
    rest_hook_queue_size: int = 1000  # pending POSTs; the oldest are dropped beyond
    # appKey -> REST hook base URL, from `app.<appKey>=<url>` lines.
    apps: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def bind_ip(self) -> str:
        return self.ip_local or self.ip

    @property
    def allowed_host_names(self) -> frozenset[str]:
        return _comma_list(self.allowed_hosts)

    @property
    def cors_origin_list(self) -> frozenset[str]:
        return frozenset(o.rstrip("/") for o in _comma_list(self.cors_origins))

    def validate(self) -> None:
        for key in ("ip", "ip_local"):
            value = getattr(self, key)
            if key == "ip_local" and not value:
                continue
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise SettingsError(f"{key}: {value!r} is not an IP address") from None
        if not 0 < self.http_port < 65536:
            raise SettingsError(f"http_port: {self.http_port} is out of range [1, 65535]")
        if not 0 <= self.webrtc_port < 65536:
            raise SettingsError(f"webrtc_port: {self.webrtc_port} is out of range [0, 65535]")
        if self.webrtc_port and self.media_port_from <= self.webrtc_port <= self.media_port_to:
            raise SettingsError(f"webrtc_port: {self.webrtc_port} is inside media_port_from/media_port_to")
        if not 0 <= self.webrtc_tcp_port < 65536:
            raise SettingsError(f"webrtc_tcp_port: {self.webrtc_tcp_port} is out of range [0, 65535]")
        if self.ice_tcp_transport and self.webrtc_tcp_port == self.http_port:
            raise SettingsError(f"webrtc_tcp_port: {self.webrtc_tcp_port} is the HTTP port")
        if not 0 <= self.sip_port < 65536:
            raise SettingsError(f"sip_port: {self.sip_port} is out of range [0, 65535]")
        if not 1024 <= self.media_port_from < self.media_port_to < 65536:
            raise SettingsError(
                f"media_port_from/media_port_to: need 1024 <= from < to < 65536, "
                f"got {self.media_port_from}..{self.media_port_to}"
            )
        from .egress.recorder import RecordingError, Rotation, check_template

        try:
            check_template(self.stream_record_policy_template)
            Rotation.parse(self.record_rotation)
        except RecordingError as exc:
            raise SettingsError(f"stream_record_policy_template/record_rotation: {exc}") from None
        if not 2 <= self.sip_min_se_s <= self.sip_session_expires_s:
            raise SettingsError(f"sip_min_se_s: need 2 <= sip_min_se_s <= sip_session_expires_s "
                                f"({self.sip_session_expires_s}), got {self.sip_min_se_s}")
        if self.playback_token_secret and len(self.playback_token_secret.encode()) < 32:
            raise SettingsError("playback_token_secret: use at least 32 bytes (RFC 7518 §3.2)")
        if bool(self.https_cert) != bool(self.https_key):
            raise SettingsError("https_cert/https_key: give both PEM files, or neither")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"log_format: expected text or json, got {self.log_format!r}")
        if self.record_audio_codec not in ("aac", "opus"):
            raise SettingsError(f"record_audio_codec: expected aac or opus, got {self.record_audio_codec!r}")
        for key in ("http_max_connections", "http_header_timeout_s", "http_keepalive_timeout_s",
                    "shutdown_timeout_s", "sip_tcp_max_connections", "sip_tcp_message_timeout_s",
                    "sip_tcp_idle_timeout_s"):
            if getattr(self, key) <= 0:
                raise SettingsError(f"{key}: must be > 0, got {getattr(self, key)}")
        ports = {"http_port": self.http_port}
        for key in ("ws_port", "wss_port", "hls_port", "rtsp_port"):
            port = getattr(self, key)
            if not 0 <= port < 65536:
                raise SettingsError(f"{key}: {port} is out of range [0, 65535] (0: off)")
            if key == "wss_port" and not self.wss_cert:
                continue
            for other, taken in ports.items():
                if port and port == taken:
                    raise SettingsError(f"{key}: {port} is also {other}")
            ports[key] = port
        if bool(self.wss_cert) != bool(self.wss_key):
            raise SettingsError("wss_cert/wss_key: give both PEM files, or neither")
        for key in ("rtsp_max_connections", "rtsp_request_timeout_s", "rtsp_session_timeout_s",
                    "rtsp_max_request_bytes", "rtsp_tcp_max_backlog_bytes"):
            if getattr(self, key) <= 0:
                raise SettingsError(f"{key}: must be > 0, got {getattr(self, key)}")
        if not (0 <= self.rtsp_udp_port < 65535 and self.rtsp_udp_port % 2 == 0):
            raise SettingsError(f"rtsp_udp_port: {self.rtsp_udp_port} is not an even port below 65535 "
                                "(RTCP takes the next one; 0: any free pair)")
        if self.rtsp_udp_port and self.rtsp_udp_port <= self.webrtc_port <= self.rtsp_udp_port + 1:
            raise SettingsError(f"rtsp_udp_port: {self.rtsp_udp_port}-{self.rtsp_udp_port + 1} holds webrtc_port")
        if self.rtsp_udp_port and (self.rtsp_udp_port <= self.media_port_to
                                   and self.media_port_from <= self.rtsp_udp_port + 1):
            raise SettingsError(f"rtsp_udp_port: {self.rtsp_udp_port}-{self.rtsp_udp_port + 1} is in the media "
                                "port range")
        if self.rtsp_auth and not (self.rtsp_user and self.rtsp_password):
            raise SettingsError("rtsp_auth: needs rtsp_user and rtsp_password")
        if any(c in self.rtsp_user for c in '"\\\r\n'):
            raise SettingsError("rtsp_user: no quotes, backslashes or line breaks")
        for key in ("ws_max_sessions", "ws_max_message_bytes", "ws_ping_interval_s", "ws_max_missed_pings"):
            if getattr(self, key) <= 0:
                raise SettingsError(f"{key}: must be > 0, got {getattr(self, key)}")
        if self.media_port_to - self.media_port_from < 3:
            raise SettingsError("media_port_from/media_port_to: the range holds no call (4 ports)")
        # HLS (egress/hls.py)
        if not 0.1 <= self.hls_part_s <= self.hls_segment_s / 2:
            raise SettingsError(f"hls_part_s: need 0.1 <= hls_part_s <= hls_segment_s / 2, got {self.hls_part_s}")
        if not 1.0 <= self.hls_segment_s <= 20.0:
            raise SettingsError(f"hls_segment_s: need 1 to 20 s, got {self.hls_segment_s}")
        if not 3 <= self.hls_segments <= 100:
            raise SettingsError(f"hls_segments: need 3 to 100, got {self.hls_segments}")
        for key in ("hls_max_streams", "hls_idle_timeout_s"):
            if getattr(self, key) <= 0:
                raise SettingsError(f"{key}: must be > 0, got {getattr(self, key)}")

    def update(self, values: Mapping[str, Any], source: str) -> None:
        """Apply ``key -> value`` strings from ``source`` (for messages)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for raw_key, value in values.items():
            key = raw_key.strip()
            if key.startswith("app."):
                self.apps[key[4:]] = str(value).strip()
                continue
            key = _WCS_SPELLINGS.get(key, key)
            field = fields.get(key)
            if field is None or key == "apps":
                log.warning("%s: unknown setting %r ignored", source, key)
                continue
            current = getattr(self, key)
            name = f"{source}: {key}"
            if isinstance(current, bool):
                setattr(self, key, parse_bool(value, name))
            elif isinstance(current, int):
                setattr(self, key, parse_int(value, name))
            elif isinstance(current, float):
                setattr(self, key, parse_float(value, name))
            else:
                setattr(self, key, str(value).strip())

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        settings = cls()
        if config_file is not None:
            settings.update(read_properties(Path(config_file)), str(config_file))
        env = os.environ if environ is None else environ
        from_env = {
            k[len("SIPSTREAM_") :].lower(): v for k, v in env.items() if k.startswith("SIPSTREAM_")
        }
        settings.update(from_env, "environment")
        if overrides:
            settings.update({k: v for k, v in overrides.items() if v is not None}, "command line")
        settings.validate()
        return settings


# WCS's flashphoner.properties names of settings we also have.
_WCS_SPELLINGS = {"ws.port": "ws_port", "wss.port": "wss_port"}


def _comma_list(value: str) -> frozenset[str]:
    return frozenset(item.strip().lower() for item in value.split(",") if item.strip())


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` lines; ``#`` and ``!`` comments; blank lines ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#!":
            continue
        key, sep, value = stripped.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{path}:{lineno}: expected key=value, got {stripped!r}")
        values[key.strip()] = value.strip()
    return values
