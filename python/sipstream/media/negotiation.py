"""SDP offer/answer for the SIP leg (RFC 3264): what we offer for
``hasAudio``/``hasVideo`` and the ``codecs`` setting, and what the answer
leaves us with."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .._core import Codec, MediaDescription, SdpParseError, SessionDescription

# The ``codecs`` setting uses WCS names.
_AUDIO = {
    "opus": Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1"),
    "ulaw": Codec(0, "PCMU", 8000),
    "pcmu": Codec(0, "PCMU", 8000),
    "alaw": Codec(8, "PCMA", 8000),
    "pcma": Codec(8, "PCMA", 8000),
    "telephone-event": Codec(101, "telephone-event", 8000, None, "0-16"),
}
_VIDEO = {
    "h264": Codec(
        96, "H264", 90000, None,
        "profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1",
        ["nack", "nack pli", "ccm fir"],
    ),
}
SUPPORTED = {"opus", "PCMU", "PCMA", "telephone-event", "H264"}


class NegotiationError(Exception):
    """The answer leaves no usable codec ("No common codecs")."""


@dataclass
class Track:
    kind: str
    address: str
    port: int
    rtcp_port: int
    codecs: list[Codec]  # the answer's codecs we can handle, preferred first
    direction: str
    rtcp_fb: set[str] = field(default_factory=set)

    @property
    def main_codec(self) -> Codec:
        return next(c for c in self.codecs if c.name != "telephone-event")


@dataclass
class Negotiated:
    audio: Track | None
    video: Track | None

    def payload_types(self, offered: dict[int, tuple[str, int]]) -> dict[int, tuple[str, int]]:
        """Every payload type we may receive: ours (RFC 3264 says the far
        end sends with the numbers we offered) plus any the answer renamed."""
        mapping = dict(offered)
        for track in (self.audio, self.video):
            if track is not None:
                for codec in track.codecs:
                    mapping.setdefault(codec.payload_type, (codec.name, codec.clock_rate))
        return mapping


def build_offer(ip: str, audio_port: int | None, video_port: int | None, codecs: str) -> SessionDescription:
    names = [n.strip().lower() for n in codecs.split(",") if n.strip()]
    media = []
    if audio_port is not None:
        audio = [_AUDIO[n] for n in names if n in _AUDIO]
        if not any(c.name != "telephone-event" for c in audio):
            raise NegotiationError("codecs setting enables no audio codec")
        media.append(MediaDescription("audio", audio_port, "RTP/AVP", _dedupe(audio), rtcp_port=audio_port + 1))
    if video_port is not None:
        video = [_VIDEO[n] for n in names if n in _VIDEO]
        if not video:
            raise NegotiationError("codecs setting enables no video codec")
        media.append(MediaDescription("video", video_port, "RTP/AVP", video, rtcp_port=video_port + 1))
    session_id = int(time.time())
    return SessionDescription(ip, media, session_id=session_id, session_version=session_id,
                              origin_username="sipstream", session_name="sipstream", connection=ip)


def _dedupe(codecs: list[Codec]) -> list[Codec]:
    seen: set[int] = set()
    out = []
    for codec in codecs:
        if codec.payload_type not in seen:
            seen.add(codec.payload_type)
            out.append(codec)
    return out


def offered_payload_types(offer: SessionDescription) -> dict[int, tuple[str, int]]:
    return {c.payload_type: (c.name, c.clock_rate) for m in offer.media for c in m.codecs}


def parse_answer(text: str) -> Negotiated:
    try:
        answer = SessionDescription.parse(text)
    except SdpParseError as exc:
        raise NegotiationError(f"No common codecs: unreadable SDP answer ({exc})") from None
    tracks: dict[str, Track] = {}
    for media in answer.media:
        if media.kind not in ("audio", "video") or media.port == 0 or media.kind in tracks:
            continue
        usable = [c for c in media.codecs if c.name in SUPPORTED]
        if not any(c.name != "telephone-event" for c in usable):
            continue
        address = media.connection or answer.connection
        if not address:
            raise NegotiationError("No common codecs: answer has no connection address")
        fb = {f for c in usable for f in c.rtcp_fb}
        rtcp_port = media.port if media.rtcp_mux else (media.rtcp_port or media.port + 1)
        tracks[media.kind] = Track(media.kind, address, media.port, rtcp_port, usable, media.direction, fb)
    if not tracks:
        raise NegotiationError("No common codecs")
    return Negotiated(tracks.get("audio"), tracks.get("video"))
