"""Type stub for the compiled Rust core ``sipstream._core``.

Everything here is sans-IO: bytes and numbers in, values out. Errors are
``ValueError`` subclasses whose message names what was wrong and where.
"""


__version__: str

class SipParseError(ValueError):
    """Malformed SIP message; the message says what and at which byte offset."""

class SdpParseError(ValueError):
    """Malformed SDP; the message says which line."""

class RtpParseError(ValueError):
    """Malformed RTP/RTCP packet."""

# --------------------------------------------------------------------------- SIP

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
        method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> SipMessage: ...
    @staticmethod
    def response(
        status: int, reason: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> SipMessage: ...
    def header(self, name: str) -> str | None:
        """First value of a header; name is case-insensitive, compact form accepted."""
    def header_all(self, name: str) -> list[str]: ...
    @property
    def call_id(self) -> str | None: ...
    @property
    def cseq(self) -> tuple[int, str] | None:
        """(number, METHOD) from CSeq."""
    def to_bytes(self) -> bytes:
        """Serialize; Content-Length is (re)written from the body."""

class NameAddr:
    """A From/To/Contact/Route value: ``"Bob" <sip:bob@host>;tag=x``."""

    display: str | None
    uri: str
    params: dict[str, str | None]

    def __init__(
        self,
        uri: str,
        display: str | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None: ...
    @staticmethod
    def parse(value: str) -> NameAddr: ...
    def tag(self) -> str | None: ...
    def to_string(self) -> str:
        """Always ``<uri>`` in angle brackets; display name always quoted."""

class SipUri:
    """``sip:user@host:port;params`` (sips: too)."""

    scheme: str
    user: str | None
    host: str
    port: int | None
    params: dict[str, str | None]
    headers: str | None  # URI headers after "?", as written (added)

    def __init__(
        self,
        host: str,
        user: str | None = None,
        port: int | None = None,
        scheme: str = "sip",
        params: dict[str, str | None] | None = None,
        headers: str | None = None,
    ) -> None: ...
    @staticmethod
    def parse(value: str) -> SipUri: ...
    def to_string(self) -> str: ...

class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None: ...
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
    qop: str | None,
    cnonce: str | None,
    nc: int | None,
) -> str:
    """Hex response value alone (RFC 2617 / RFC 7616)."""

# ----------------------------------------------------------------------- SDP

class Codec:
    payload_type: int
    name: str
    clock_rate: int
    channels: int | None
    fmtp: str | None
    rtcp_fb: list[str]

    def __init__(
        self,
        payload_type: int,
        name: str,
        clock_rate: int,
        channels: int | None = None,
        fmtp: str | None = None,
        rtcp_fb: list[str] | None = None,
    ) -> None: ...

class MediaDescription:
    kind: str  # "audio" | "video" | other
    port: int
    proto: str  # "RTP/AVP", "RTP/AVPF", ...
    formats: list[int]  # informational; the m-line is written from ``codecs``
    extra_formats: list[str]  # non-numeric formats (e.g. webrtc-datachannel) (added)
    connection: str | None  # c= address of this m-section, if any
    direction: str  # sendrecv | sendonly | recvonly | inactive
    rtcp_port: int | None  # a=rtcp
    rtcp_mux: bool
    codecs: list[Codec]  # one per format, in m-line order (static PTs filled in)
    attributes: list[tuple[str, str | None]]  # every other a= line, in order

    def __init__(
        self,
        kind: str,
        port: int,
        proto: str,
        codecs: list[Codec],
        direction: str = "sendrecv",
        connection: str | None = None,
        rtcp_port: int | None = None,
        rtcp_mux: bool = False,
        attributes: list[tuple[str, str | None]] | None = None,
    ) -> None: ...

class SessionDescription:
    origin_username: str
    session_id: int
    session_version: int
    origin_address: str
    session_name: str
    connection: str | None  # session-level c= address
    attributes: list[tuple[str, str | None]]  # session-level a= lines (added)
    media: list[MediaDescription]

    def __init__(
        self,
        origin_address: str,
        media: list[MediaDescription],
        session_id: int = 0,
        session_version: int = 0,
        origin_username: str = "-",
        session_name: str = "-",
        connection: str | None = None,
        attributes: list[tuple[str, str | None]] | None = None,
    ) -> None: ...
    @staticmethod
    def parse(text: str) -> SessionDescription: ...
    def to_string(self) -> str:
        """SDP text with CRLF line ends."""

# ---------------------------------------------------------------- RTP / RTCP

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

class AccessUnit:
    data: bytes  # Annex-B (00 00 00 01 start codes)
    timestamp: int  # RTP timestamp
    keyframe: bool  # contains an IDR slice

class H264Depacketizer:
    """RFC 6184 single NAL, STAP-A and FU-A → whole Annex-B access units.

    An access unit ends on the marker bit or on a timestamp change. A
    sequence gap inside an access unit drops it (never emits a broken one)
    and sets ``needs_keyframe`` until the next IDR arrives."""

    needs_keyframe: bool
    dropped: int  # access units dropped because of loss
    ignored: int  # STAP-B/MTAP/FU-B/reserved packets (read-only, added)
    malformed: int  # truncated packets / bad STAP-A sizes (read-only, added)

    def __init__(self) -> None: ...
    def push(
        self, payload: bytes, sequence: int, timestamp: int, marker: bool
    ) -> list[AccessUnit]: ...

def h264_packetize(access_unit: bytes, mtu: int = 1200) -> list[bytes]:
    """Annex-B access unit → RTP payloads (single NAL or FU-A), in order."""

def h264_sps_resolution(sps: bytes) -> tuple[int, int] | None:
    """(width, height) from an SPS NAL (with header byte), None if unparsable."""

# ------------------------------------------------------------- media receive

class Frame:
    kind: str  # "audio" | "video"
    codec: str  # "H264", "PCMU", "PCMA", "opus", "telephone-event"
    payload_type: int
    clock_rate: int
    data: bytes  # Annex-B access unit for H264, the RTP payload for audio
    timestamp: int  # RTP timestamp
    keyframe: bool  # True for every audio frame; IDR for video
    ssrc: int

class MediaReceiver:
    """Sans-IO receive path for one call: RTP in, whole frames out.

    ``payload_types`` maps each negotiated payload type to
    ``(codec_name, clock_rate)``. Unknown payload types and malformed
    packets are counted and dropped, never raised. Codec names match
    case-insensitively; besides H264 the audio names PCMU, PCMA, G722, G729,
    opus, telephone-event, CN, L16, GSM, iLBC, speex, AMR, AMR-WB are passed
    through (Frame.codec uses that canonical spelling); any other name (VP8...)
    counts as unknown_payload_type. A new video SSRC resets the depacketizer."""

    packets: int
    bytes: int
    malformed: int
    unknown_payload_type: int
    lost: int
    video_ssrc: int | None
    audio_ssrc: int | None
    rtcp: int  # RTCP packets pushed here (ignored, not malformed) (added)
    dropped_frames: int  # video access units dropped because of loss (added)

    def __init__(self, payload_types: dict[int, tuple[str, int]]) -> None: ...
    def push(self, packet: bytes) -> list[Frame]: ...
    def needs_keyframe(self) -> bool:
        """True after video loss until the next keyframe (drives PLI/FIR); also
        True while H.264 is arriving but no keyframe has been seen yet on the
        current video SSRC."""
