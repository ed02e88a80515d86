"""Type stub for the compiled Rust core ``sipstream._core``.

Everything here is sans-IO: bytes and numbers in, values out. Errors are
``ValueError`` subclasses whose message names what was wrong and where.
"""

import builtins
from typing import Any, final

# The classes are PyO3 classes: none can be subclassed (hence @final), and
# their constructors are ``__new__`` (PyO3's ``#[new]``), never ``__init__``.
# Those without a constructor (SipMessage, RtpPacket, AccessUnit, Frame,
# Transmit, MediaEvent) come only from the functions below. Fields declared
# as plain attributes are writable; read-only ones are properties. A list or
# dict field is a fresh copy on each read (``sd.media.append(m)`` changes
# nothing: assign the whole list), though the Codec / MediaDescription
# objects in it are shared. A default of ``...`` is one PyO3 does not show
# (its real value is in the comment next to it).

__all__ = [
    "__version__",
    "SipParseError",
    "SdpParseError",
    "RtpParseError",
    "SipMessage",
    "NameAddr",
    "SipUri",
    "Via",
    "parse_challenge",
    "digest_authorization",
    "digest_response",
    "Codec",
    "MediaDescription",
    "SessionDescription",
    "RtpPacket",
    "build_rtp",
    "is_rtcp",
    "build_pli",
    "build_fir",
    "build_receiver_report",
    "parse_rtcp",
    "AccessUnit",
    "H264Depacketizer",
    "h264_packetize",
    "h264_sps_resolution",
    "Frame",
    "MediaReceiver",
    "MediaConfig",
    "MediaSession",
    "Transmit",
    "MediaEvent",
    "MediaIo",
    "MediaReadyQueue",
    "g711_decode",
    "black_keyframe",
    "StreamFeed",
    "WebrtcEngine",
]

__version__: str

class SipParseError(ValueError):
    """Malformed SIP message; the message says what and at which byte offset."""

class SdpParseError(ValueError):
    """Malformed SDP; the message says which line."""

class RtpParseError(ValueError):
    """Malformed RTP/RTCP packet."""

# --------------------------------------------------------------------------- SIP

@final
class SipMessage:
    """A parsed (or built) SIP request or response.

    Header names are canonical long forms ("Via", "From", "To", "Call-ID",
    "CSeq", "Contact", "Content-Type", "Content-Length", "Subject",
    "Supported", "Event", "Refer-To", "Referred-By", "Session-Expires",
    "Allow-Events"), compact forms (v f t i m c l s k o e x r b u) are
    expanded. Values of Via, Route, Record-Route, Contact (unless "*"),
    Allow, Supported, Require, Accept that were comma-joined on one line are
    split into separate entries; authentication headers are never split.
    """

    is_request: bool
    method: str | None
    uri: str | None
    status: int | None
    reason: str | None
    headers: list[tuple[str, str]]
    body: bytes

    @staticmethod
    def parse(data: bytes) -> SipMessage:
        """Parse one message; body is taken by Content-Length (the rest of the
        datagram when absent). Raises SipParseError (never panics)."""
    @staticmethod
    def request(
        method: str, uri: str, headers: list[tuple[str, str]], body: bytes = ...  # b""
    ) -> SipMessage: ...
    @staticmethod
    def response(
        status: int, reason: str, headers: list[tuple[str, str]], body: bytes = ...  # b""
    ) -> SipMessage: ...
    def header(self, name: str) -> str | None:
        """First value of a header; name is case-insensitive, compact form accepted."""
    def header_all(self, name: str) -> list[str]: ...
    @property
    def call_id(self) -> str | None: ...
    @property
    def cseq(self) -> tuple[int, str] | None:
        """(number, METHOD) from CSeq."""
    @property
    def from_tag(self) -> str | None:
        """The tag parameter of the first From header, read in Rust: what
        ``NameAddr.parse(m.header("From")).tag()`` gives without building the
        NameAddr. None when there is no From or it has no tag; raises
        SipParseError when From is not a name-addr."""
    @property
    def to_tag(self) -> str | None:
        """The tag parameter of the first To header (None before the UAS has
        set one); like ``from_tag``."""
    def to_bytes(self) -> bytes:
        """Serialize; Content-Length is (re)written from the body."""

@final
class NameAddr:
    """A From/To/Contact/Route value: ``"Bob" <sip:bob@host>;tag=x``."""

    display: str | None
    uri: str
    params: dict[str, str | None]

    def __new__(
        cls,
        uri: str,
        display: str | None = None,
        params: dict[str, str | None] | None = None,
    ) -> NameAddr: ...
    @staticmethod
    def parse(value: str) -> NameAddr: ...
    def tag(self) -> str | None: ...
    def to_string(self) -> str:
        """Always ``<uri>`` in angle brackets; display name always quoted."""

@final
class SipUri:
    """``sip:user@host:port;params`` (sips: too)."""

    scheme: str
    user: str | None
    host: str
    port: int | None
    params: dict[str, str | None]
    headers: str | None  # URI headers after "?", as written (added)

    def __new__(
        cls,
        host: str,
        user: str | None = None,
        port: int | None = None,
        scheme: str = ...,  # "sip"
        params: dict[str, str | None] | None = None,
        headers: str | None = None,
    ) -> SipUri: ...
    @staticmethod
    def parse(value: str) -> SipUri: ...
    def to_string(self) -> str: ...

@final
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    def __new__(
        cls,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
    ) -> Via: ...
    @staticmethod
    def parse(value: str) -> Via: ...
    def branch(self) -> str | None: ...
    def to_string(self) -> str:
        """``SIP/2.0/UDP host:port;params``."""

# ------------------------------------------------------------------ digest auth

def parse_challenge(value: str) -> dict[str, str]:
    """Parse a WWW-Authenticate / Proxy-Authenticate value. Keys are
    lower-cased parameter names plus "scheme" ("Digest"); quotes removed.
    Raises ValueError when it is not a Digest challenge."""

def digest_authorization(
    username: str,
    password: str,
    method: str,
    uri: str,
    challenge: dict[str, str],
    cnonce: str,
    nc: int,
) -> str:
    """The whole Authorization / Proxy-Authorization header value for the
    challenge (MD5, MD5-sess, SHA-256; qop=auth when offered, else RFC 2069)."""

def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    cnonce: str | None = None,
    nc: int | None = None,
) -> str:
    """Hex response value alone (RFC 2617 / RFC 7616)."""

# ----------------------------------------------------------------------- SDP

@final
class Codec:
    payload_type: int
    name: str
    clock_rate: int
    channels: int | None
    fmtp: str | None
    rtcp_fb: list[str]

    def __new__(
        cls,
        payload_type: int,
        name: str,
        clock_rate: int,
        channels: int | None = None,
        fmtp: str | None = None,
        rtcp_fb: list[str] | None = None,
    ) -> Codec: ...

@final
class MediaDescription:
    kind: str  # "audio" | "video" | other
    port: int
    proto: str  # "RTP/AVP", "RTP/AVPF", ...
    # informational; the m-line is written from ``codecs``. The payload
    # types as bytes (PyO3 turns Rust's Vec<u8> into bytes): ``list(formats)``
    # gives the ints; a list of ints is accepted on assignment.
    formats: bytes
    extra_formats: list[str]  # non-numeric formats (e.g. webrtc-datachannel) (added)
    connection: str | None  # c= address of this m-section, if any
    direction: str  # sendrecv | sendonly | recvonly | inactive
    rtcp_port: int | None  # a=rtcp
    rtcp_mux: bool
    codecs: list[Codec]  # one per format, in m-line order (static PTs filled in)
    attributes: list[tuple[str, str | None]]  # every other a= line, in order

    def __new__(
        cls,
        kind: str,
        port: int,
        proto: str,
        codecs: list[Codec],
        direction: str = ...,  # "sendrecv"
        connection: str | None = None,
        rtcp_port: int | None = None,
        rtcp_mux: bool = False,
        attributes: list[tuple[str, str | None]] | None = None,
    ) -> MediaDescription: ...

@final
class SessionDescription:
    origin_username: str
    session_id: int
    session_version: int
    origin_address: str
    session_name: str
    connection: str | None  # session-level c= address
    attributes: list[tuple[str, str | None]]  # session-level a= lines (added)
    media: list[MediaDescription]

    def __new__(
        cls,
        origin_address: str,
        media: list[MediaDescription],
        session_id: int = 0,
        session_version: int = 0,
        origin_username: str = ...,  # "-"
        session_name: str = ...,  # "-"
        connection: str | None = None,
        attributes: list[tuple[str, str | None]] | None = None,
    ) -> SessionDescription: ...
    @staticmethod
    def parse(text: str) -> SessionDescription: ...
    def to_string(self) -> str:
        """SDP text with CRLF line ends."""

# ---------------------------------------------------------------- RTP / RTCP

@final
class RtpPacket:
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    csrcs: list[int]
    payload: bytes

    @staticmethod
    def parse(data: bytes) -> RtpPacket: ...
    def to_bytes(self) -> bytes: ...

def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    marker: bool,
    payload: bytes,
) -> bytes: ...
def is_rtcp(data: bytes) -> bool:
    """True for RTCP (payload type 192..223 in byte 1) — RFC 5761 demux."""

def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes: ...
def build_fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes:
    """seq_nr is taken modulo 256."""
def build_receiver_report(sender_ssrc: int) -> bytes:
    """An empty RR, used as a compound-packet head before PLI/FIR."""

def parse_rtcp(data: bytes) -> list[tuple[int, int, int]]:
    """(packet_type, fmt, media_ssrc or 0) for each packet of a compound RTCP
    packet; raises RtpParseError when malformed."""

# ------------------------------------------------------------------- H.264

@final
class AccessUnit:
    @property
    def data(self) -> bytes:
        """Annex-B (00 00 00 01 start codes)."""
    @property
    def timestamp(self) -> int:
        """RTP timestamp."""
    @property
    def keyframe(self) -> bool:
        """Contains an IDR slice."""

@final
class H264Depacketizer:
    """RFC 6184 single NAL, STAP-A and FU-A → whole Annex-B access units.

    An access unit ends on the marker bit or on a timestamp change. A
    sequence gap inside an access unit drops it (never emits a broken one)
    and sets ``needs_keyframe`` until the next IDR arrives."""

    needs_keyframe: bool

    def __new__(cls) -> H264Depacketizer: ...
    @property
    def dropped(self) -> int:
        """Access units dropped because of loss."""
    @property
    def ignored(self) -> int:
        """STAP-B/MTAP/FU-B/reserved packets."""
    @property
    def malformed(self) -> int:
        """Truncated packets / bad STAP-A sizes."""
    def push(
        self, payload: bytes, sequence: int, timestamp: int, marker: bool
    ) -> list[AccessUnit]: ...

def h264_packetize(access_unit: bytes, mtu: int = 1200) -> list[bytes]:
    """Annex-B access unit → RTP payloads (single NAL or FU-A), in order."""

def h264_sps_resolution(sps: bytes) -> tuple[int, int] | None:
    """(width, height) from an SPS NAL (with header byte), None if unparsable."""

# ------------------------------------------------------------- media receive

@final
class Frame:
    @property
    def kind(self) -> str:
        """"audio" | "video"."""
    @property
    def codec(self) -> str:
        """"H264", "PCMU", "PCMA", "opus", "telephone-event", ..."""
    @property
    def payload_type(self) -> int: ...
    @property
    def clock_rate(self) -> int: ...
    @property
    def data(self) -> bytes:
        """Annex-B access unit for H264, the RTP payload for audio."""
    @property
    def timestamp(self) -> int:
        """RTP timestamp."""
    @property
    def keyframe(self) -> bool:
        """True for every audio frame; IDR for video."""
    @property
    def ssrc(self) -> int: ...
    @property
    def pts_us(self) -> int:
        """Presentation time, µs on the session's common clock (monotonic per track)."""
    @property
    def generated(self) -> bool:
        """Placeholder from the generator (silence / black keyframe)."""

@final
class MediaReceiver:
    """Sans-IO receive path for one call: RTP in, whole frames out.

    ``payload_types`` maps each negotiated payload type to
    ``(codec_name, clock_rate)``. Unknown payload types and malformed
    packets are counted and dropped, never raised. Codec names match
    case-insensitively; besides H264 the audio names PCMU, PCMA, G722, G729,
    opus, telephone-event, CN, L16, GSM, iLBC, speex, AMR, AMR-WB are passed
    through (Frame.codec uses that canonical spelling); any other name (VP8...)
    counts as unknown_payload_type. A new video SSRC resets the depacketizer."""

    def __new__(cls, payload_types: dict[int, tuple[str, int]]) -> MediaReceiver: ...
    @property
    def packets(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def malformed(self) -> int: ...
    @property
    def unknown_payload_type(self) -> int: ...
    @property
    def lost(self) -> int: ...
    @property
    def video_ssrc(self) -> int | None: ...
    @property
    def audio_ssrc(self) -> int | None: ...
    @property
    def rtcp(self) -> int:
        """RTCP packets pushed here (ignored, not malformed)."""
    @property
    def dropped_frames(self) -> int:
        """Video access units dropped because of loss."""
    def push(self, packet: builtins.bytes) -> list[Frame]: ...
    def needs_keyframe(self) -> bool:
        """True after video loss until the next keyframe (drives PLI/FIR); also
        True while H.264 is arriving but no keyframe has been seen yet on the
        current video SSRC."""

# ------------------------------------------------- media core (Rust session)

@final
class MediaConfig:
    """Negotiated media of one call, for MediaSession / MediaIo.

    ``payload_types`` maps payload type → (codec name, clock rate); the kind
    follows from the name (H264 → video; PCMU, PCMA, G722, opus,
    telephone-event, ... → audio; others ignored). Addresses are
    ``(ip, port)``; incoming RTP/RTCP source addresses replace them
    (symmetric RTP). ``*_rtcp`` defaults to RTP port + 1 (or the RTP address
    with rtcp-mux). ``*_rtcp_fb`` are a=rtcp-fb values: "nack", "nack pli",
    "ccm fir". The jitter buffer waits ``jitter_target_ms`` for a hole (up to
    ``jitter_max_ms`` when NACK retransmissions are expected); off, frames
    flow at once (never broken). ``generate_av_start_delay_ms=None`` disables
    placeholder media."""

    def __new__(
        cls,
        payload_types: dict[int, tuple[str, int]],
        *,
        audio_rtp: tuple[str, int] | None = None,
        audio_rtcp: tuple[str, int] | None = None,
        audio_rtcp_mux: bool = False,
        audio_rtcp_fb: list[str] = ...,  # []
        video_rtp: tuple[str, int] | None = None,
        video_rtcp: tuple[str, int] | None = None,
        video_rtcp_mux: bool = False,
        video_rtcp_fb: list[str] = ...,  # []
        jitter_buffer: bool = True,
        jitter_target_ms: int = 80,
        jitter_max_ms: int = 500,
        generate_av_start_delay_ms: int | None = None,
        generate_video_interval_ms: int = 1000,
        ssrc: int = 0x51957EA3,
        cname: str = ...,  # "sipstream"
        rtcp_interval_ms: int = 5000,
        keyframe_interval_ms: int = 1000,
    ) -> MediaConfig: ...

@final
class Transmit:
    @property
    def socket(self) -> int:
        """Local socket index: 0 audio RTP, 1 audio RTCP, 2 video RTP, 3 video RTCP."""
    @property
    def to(self) -> tuple[str, int]: ...
    @property
    def data(self) -> bytes:
        """A compound RTCP packet (RR + SDES [+ NACK | PLI | FIR])."""

@final
class MediaEvent:
    @property
    def type(self) -> str:
        """"keyframe_needed" (send SIP INFO) | "ssrc_changed" | "bye" |
        "stream_changed" (StreamFeed.stats)."""
    @property
    def kind(self) -> str | None:
        """"audio" | "video"."""
    @property
    def ssrc(self) -> int: ...
    @property
    def old_ssrc(self) -> int | None:
        """ssrc_changed only."""
    @property
    def reason(self) -> str | None:
        """bye only."""

@final
class MediaSession:
    """Sans-IO receive path of one call. ``now`` is float seconds on any
    monotonic clock; ``pts_us`` counts from the constructor's ``now``.
    ``socket`` is the local socket index (see Transmit)."""

    def __new__(cls, config: MediaConfig, now: float) -> MediaSession: ...
    def handle_receive(self, now: float, data: bytes, source: tuple[str, int], socket: int = 0) -> None: ...
    def receive_batch(
        self, now: float, datagrams: list[bytes], source: tuple[str, int], socket: int = 0
    ) -> list[Frame]:
        """Feed many datagrams; returns the frames completed. Transmits and
        events stay queued for poll_output."""
    def handle_timeout(self, now: float) -> None: ...
    def poll_output(self) -> Frame | Transmit | MediaEvent | float:
        """Next output; a float means nothing more now: call handle_timeout then."""
    def request_keyframe(self, now: float) -> None:
        """PLI/FIR when negotiated, else a "keyframe_needed" MediaEvent."""
    def reconfigure(self, now: float, config: MediaConfig) -> None: ...
    def stats(self) -> dict[str, Any]:
        """Session counters (packets, bytes, rtcp_packets, malformed,
        unknown_payload_type, stale_ssrc, probation, foreign_source: RTP and
        RTCP dropped as not from the call's far end) plus "audio"/"video"
        dicts (or None): packets, bytes, frames, keyframes, lost, late,
        duplicates, dropped_frames, jitter_ms, rtt_ms, bitrate_bps, fps,
        width, height, keyframe_requests, nacks_sent, generated_frames, ssrc,
        codec, ..."""
    def remote_rtp(self, kind: str) -> tuple[str, int] | None: ...
    def remote_rtcp(self, kind: str) -> tuple[str, int] | None: ...

@final
class MediaIo:
    """The call's receive path on a shared Rust reactor thread (epoll + recvmmsg, off the GIL).

    ``sockets``: fds of [audio RTP, audio RTCP, video RTP, video RTCP] (None
    where absent), already bound; they are dup'ed, so the caller may close
    its socket objects. Watch ``fileno()`` with ``loop.add_reader`` and call
    ``drain()`` / ``drain_events()`` when readable. RTCP (RR every ~5 s,
    NACK, PLI/FIR) is sent by the thread."""

    def __new__(
        cls,
        sockets: list[int | None],
        config: MediaConfig,
        rtp_receive_buffer_size: int | None = None,
        rtp_send_buffer_size: int | None = None,
        ready: MediaReadyQueue | None = None,
    ) -> MediaIo: ...
    @property
    def closed(self) -> bool: ...
    @property
    def token(self) -> int:
        """This call's token in ``MediaReadyQueue.drain()``."""
    def fileno(self) -> int:
        """Signalled when frames are waiting (never with ``ready``: the queue is)."""
    def drain(self) -> list[Frame]: ...
    def drain_events(self) -> list[MediaEvent]: ...
    def request_keyframe(self) -> None: ...
    def set_feed(self, feed: StreamFeed | None) -> None:
        """Every frame goes into ``feed`` (the stream hub) on the reactor thread."""
    def set_python_frames(self, on: bool) -> None:
        """Whether ``drain`` gets the frames too (default True)."""
    def reconfigure(self, config: MediaConfig) -> None: ...
    def note_rtp_sent(self, kind: str, rtp_timestamp: int, payload_len: int) -> None:
        """RTP sent from Python with the session's SSRC (priming, DTMF): counted in its sender reports."""
        ...
    def stats(self) -> dict[str, Any]:
        """As MediaSession.stats (snapshot ≤ 200 ms old) plus io_errors, rtcp_sent."""
    def close(self) -> None:
        """Take the call off its reactor thread, close its sockets. Idempotent."""

@final
class MediaReadyQueue:
    """One notification for many calls (``MediaIo(..., ready=queue)``): watch
    ``fileno()``, then ``drain()`` gives ``(token, frames, has_events)`` for each
    call with something waiting, in one crossing."""

    def __new__(cls) -> MediaReadyQueue: ...
    def fileno(self) -> int: ...
    def drain(self) -> list[tuple[int, list[Frame], bool]]: ...

@final
class StreamFeed:
    """A stream's hub in Rust: counts its frames, keeps its latest GOP, and
    packetizes them once for the WebRTC engine's viewers."""

    def __new__(cls) -> StreamFeed: ...
    @property
    def id(self) -> int: ...
    @property
    def viewers(self) -> int: ...
    def counters(self) -> tuple[int, int]:
        """(frames, packets) packetized while viewers were attached."""
    def stats(self) -> dict[str, Any]:
        """frames/generated ([audio, video]), keyframes, audio_codec, video_codec, width, height."""
    def gop(self) -> list[bytes]:
        """The access units from the latest keyframe on."""
    def close(self) -> None:
        """The stream ended: its viewers are closed."""

@final
class WebrtcEngine:
    """Every WebRTC viewer on one UDP port, served by a Rust thread (str0m)."""

    def __new__(cls, bind_ip: str, port: int, advertised_ip: str, connect_timeout_s: float = 30.0,
                consent_timeout_s: float = 20.0, tcp_port: int | None = None,
                plain_udp_port: int | None = None) -> WebrtcEngine: ...
    @property
    def port(self) -> int: ...
    @property
    def tcp_port(self) -> int | None:
        """The passive ICE-TCP candidate's port, when offered."""
    def fileno(self) -> int:
        """Readable while events wait."""
    def add_viewer(self, feed: StreamFeed, offer: str, audio: str | None = None, video: bool = False,
                   video_profile: int | None = None) -> tuple[int, str]:
        """(viewer id, answer SDP); ValueError when the offer cannot be answered."""
    @property
    def plain_ports(self) -> tuple[int, int] | None:
        """The (RTP, RTCP) ports plain viewers over UDP are sent from."""
    def add_plain_viewer(self, feed: StreamFeed, audio: tuple[int, int, int, int, int, int] | None = None,
                         video: tuple[int, int, int, int, int, int] | None = None,
                         client_ip: str | None = None, tcp_fd: int | None = None,
                         max_backlog: int = 2097152) -> int:
        """A plain-RTP (RTSP) viewer: tracks (pt, clock, ssrc, seq, rtp, rtcp),
        UDP to ``client_ip``'s ports or interleaved on ``tcp_fd`` (owned by the
        engine from the call on)."""
    def send_text(self, viewer: int, data: bytes) -> None: ...
    def plain_rtcp(self, viewer: int, data: bytes) -> None: ...
    def remove_viewer(self, viewer: int) -> None: ...
    def drain_events(self) -> list[tuple[str, int, str]]:
        """("connected", viewer, ""), ("closed", viewer, reason), ("keyframe", feed id, "")."""
    def viewer(self, viewer: int) -> dict[str, Any] | None: ...
    def stats(self) -> dict[str, Any]: ...
    def reset_latency(self) -> None: ...
    def close(self) -> None: ...

def g711_decode(data: bytes, codec: str) -> bytes:
    """PCMU/PCMA → little-endian int16 bytes: ``numpy.frombuffer(b, "<i2")``."""

def black_keyframe() -> bytes:
    """The generator's black 320x240 H.264 IDR (SPS+PPS+IDR, Annex-B)."""
