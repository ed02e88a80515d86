"""sipstream: turn a SIP call into a live stream that browsers play over
WebRTC (a Flashphoner WCS "SIP as Stream" compatible gateway)."""

from ._core import __version__
from .gateway import Call, CallEvent, CallRequest, Event, Gateway, GatewayError, StreamEvent
from .media.pcm import PcmChunk, PcmReader
from .media.stream import MediaFrame, Stream
from .settings import Settings, SettingsError
from .sip.call import CallStatus

__all__ = [
    "Call",
    "CallEvent",
    "CallRequest",
    "CallStatus",
    "Event",
    "Gateway",
    "GatewayError",
    "MediaFrame",
    "PcmChunk",
    "PcmReader",
    "Settings",
    "SettingsError",
    "Stream",
    "StreamEvent",
    "__version__",
]
