"""The REST API's request and response bodies (pydantic). Handlers parse
requests with these models and answer through them, and the OpenAPI
document (``api/openapi.py``) is generated from them: what the schema says
is what the server does.

WCS conventions: field names are WCS's camelCase; booleans and numbers may
come as strings ("true", "5060"); an empty string is the same as a missing
field; unknown fields are ignored (WCS clients send more than we use)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ..sip import grammar

MAX_FIELD = 4096  # any text field; fields with a grammar have tighter limits (sip/grammar.py)


def _empty_is_missing(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _no_containers(value: Any) -> Any:
    if isinstance(value, (dict, list, bool)):
        raise ValueError("must be a string")
    return value


def _text(value: str) -> str:
    return grammar.check_text(value.strip(), "the field", MAX_FIELD)


# A text field: a string (numbers are taken as their text), no control
# characters or lone surrogates, at most MAX_FIELD characters.
Text = Annotated[str, BeforeValidator(_no_containers), AfterValidator(_text)]
OptText = Annotated[Text | None, BeforeValidator(_empty_is_missing)]
OptBool = Annotated[bool | None, BeforeValidator(_empty_is_missing)]


# The SIP grammar the server enforces (sip/grammar.py), written into the schema.
_USER_RULE = (f"A user part (RFC 3261): 1-{grammar.MAX_USER} of A-Z a-z 0-9 - _ . ! ~ * ' ( ) & = + $ , / "
              "and %XX escapes; no ';', '?', '@' or spaces.")
_HOST_RULE = (f"A host: an IPv4 or [IPv6] address, or a DNS name of at most {grammar.MAX_HOST} characters "
              "whose labels are 1-63 letters, digits and inner hyphens.")


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, str_strip_whitespace=True)


class CallStartup(Request):
    """``/call/startup``: place a SIP call whose media becomes a stream."""

    callee: Text = Field(description="user or number at sipDomain, user@host[:port], a tel: number, or a sip: "
                         "URI (no URI headers; transport udp or tcp). " + _USER_RULE)
    toStream: Text = Field(description="the name of the stream the call publishes")
    sipLogin: Text = Field(description=_USER_RULE)
    sipDomain: Text = Field(description="the SIP domain, host[:port]. " + _HOST_RULE)
    sipPassword: OptText = Field(None, json_schema_extra={"writeOnly": True})
    callId: OptText = Field(None, description="made up when absent")
    sipAuthenticationName: OptText = Field(None, description=_USER_RULE)
    sipOutboundProxy: OptText = Field(None, description="host[:port] or a sip: URI with ;transport=udp|tcp "
                                      "(sips: and tls are refused: no SIP over TLS yet). " + _HOST_RULE)
    sipPort: Annotated[Annotated[int, Field(ge=1, le=65535)] | None, BeforeValidator(_empty_is_missing)] = None
    hasAudio: OptBool = None
    hasVideo: OptBool = None
    appKey: OptText = None
    sipRegisterRequired: OptBool = None
    visibleName: OptText = None
    rtmpUrl: OptText = Field(None, description="push the call to this RTMP URL (SIP as RTMP)")
    rtmpStream: OptText = None
    sipTransport: Annotated[Literal["UDP", "TCP"] | None,
                            BeforeValidator(lambda v: _empty_is_missing(v.upper() if isinstance(v, str) else v))
                            ] = None


class CallId(Request):
    callId: Text


class CallFind(Request):
    callId: OptText = None
    callee: OptText = None
    status: OptText = None


class SendDtmf(Request):
    callId: Text
    dtmf: Text = Field(description="digits 0-9, *, #, A-D; at most 64")
    type: OptText = Field(None, description="RFC2833 (default) or INFO")


class StreamFind(Request):
    name: OptText = None
    mediaSessionId: OptText = None
    published: OptBool = None


class StreamRef(Request):
    """A stream by name or by mediaSessionId."""

    name: OptText = None
    streamName: OptText = None
    mediaSessionId: OptText = None


class RecorderConfig(Request):
    fileTemplate: OptText = None
    rotation: Annotated[str | None, BeforeValidator(_no_containers)] = None


class RecorderStartup(StreamRef):
    fileName: OptText = None
    config: RecorderConfig | None = None


class PushOptions(Request):
    action: OptText = Field(None, description='"mute" starts the relay muted')


class PushStartup(Request):
    streamName: Text
    rtmpUrl: Text
    rtmpTransponderFullUrl: OptBool = None
    options: PushOptions | None = None


class PushFind(Request):
    streamName: OptText = None
    rtmpUrl: OptText = None


class MediaSessionId(Request):
    mediaSessionId: Text


class Empty(Request):
    """No fields (``find_all``)."""


# ------------------------------------------------------------- responses
class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(Response):
    error: str


class CallInfo(Response):
    callId: str
    status: Literal["PENDING", "TRYING", "RING", "RING_MEDIA", "SESSION_PROGRESS", "ESTABLISHED", "HOLD",
                    "BUSY", "FINISH", "FAILED"]
    sipStatus: int | None
    info: str
    incoming: bool
    caller: str
    callee: str
    visibleName: str | None
    streamName: str
    hasAudio: bool
    hasVideo: bool
    appKey: str | None
    rtmpUrl: str | None
    rtmpStream: str | None
    rtmpStreamStatus: str | None
    custom: dict[str, Any]
    nodeId: str | None
    sessionId: str | None
    parentCallId: str | None
    sdp: str | None
    inviteParameters: dict[str, Any] | None
    mediaProvider: str
    sipMessageRaw: str | None
    isMsrp: bool
    target: str | None
    holdForTransfer: bool
    startTime: int
    audioCodec: str | None
    videoCodec: str | None
    stats: dict[str, Any]


class StreamInfo(Response):
    name: str
    mediaSessionId: str
    published: bool
    status: str
    info: str
    hasAudio: bool
    hasVideo: bool
    audioCodec: str | None
    videoCodec: str | None
    width: int
    height: int
    record: bool
    recordName: str | None
    mediaProvider: str
    viewers: int
    stats: dict[str, Any]


class RelayInfo(Response):
    mediaSessionId: str
    streamName: str
    rtmpUrl: str
    width: int
    height: int
    muted: bool
    soundEnabled: bool
    options: dict[str, Any]
    status: str
    info: str
    attempts: int


class RecordingInfo(Response):
    fileName: str | None
    mediaSessionId: str
    streamName: str
    status: str
    info: str
    files: list[str]


class Snapshot(Response):
    data: str = Field(description="a PNG picture, base64")


class Health(Response):
    status: Literal["ok"]
    calls: int
    streams: int
    viewers: int
    webrtc: dict[str, Any]


class Ready(Response):
    ready: bool
    checks: dict[str, bool]
