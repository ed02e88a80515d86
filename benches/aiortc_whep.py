"""The aiortc WHEP path that served viewers before the Rust engine, kept for
the benchmarks to compare against: WebRTC playback over WHEP with aiortc,
forwarding the SIP codecs as received (frames go to aiortc as pre-encoded
``av.Packet``s). A viewer's PLI/FIR becomes a keyframe request toward the SIP
side."""

from __future__ import annotations

import asyncio
import fractions
import ipaddress
import logging
import secrets
from collections.abc import Callable
from typing import Any

import aioice.ice
import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.exceptions import InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError
from sipstream.media.stream import Stream, Subscription

log = logging.getLogger(__name__)

_MIME = {"H264": "video/H264", "PCMU": "audio/PCMU", "PCMA": "audio/PCMA", "opus": "audio/opus"}


def limit_ice_to(ip: str) -> None:
    """Gather host candidates on ``ip`` only. aioice otherwise offers every
    non-loopback address of the machine (and never 127.0.0.1)."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [ip]  # type: ignore[assignment]


def reachable_candidates_only(offer_sdp: str, local_ip: str) -> str:
    """Drop the offer's ICE candidates that our address cannot reach: other
    address families, mDNS names, and anything off-host when we listen on
    loopback. Without this aioice would send checks to them (a loopback
    socket can only ever meet the browser through a peer-reflexive candidate)."""
    local = ipaddress.ip_address(local_ip)
    kept = []
    for line in offer_sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            try:
                address = ipaddress.ip_address(fields[4])
            except (IndexError, ValueError):
                continue  # mDNS (.local) or malformed
            if address.version != local.version or (local.is_loopback and not address.is_loopback):
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


class StreamTrack(MediaStreamTrack):
    """One track of a stream as a WebRTC source of encoded packets."""

    def __init__(self, kind: str, stream: Stream, on_end: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._subscription: Subscription = stream.subscribe(kind)
        self._base: int | None = None
        self._on_end = on_end

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._subscription.get()
        if frame is None:
            self.stop()
            if self._on_end is not None:
                self._on_end()
            raise MediaStreamError
        if self._base is None:
            self._base = frame.pts
        packet = av.Packet(frame.data)
        packet.pts = frame.pts - self._base
        packet.time_base = fractions.Fraction(1, frame.clock_rate)
        return packet

    def stop(self) -> None:
        self._subscription.close()
        super().stop()


class WhepSession:
    def __init__(self, session_id: str, stream: Stream, pc: RTCPeerConnection) -> None:
        self.id = session_id
        self.stream = stream
        self.pc = pc


class WhepEndpoint:
    """Creates and ends WHEP sessions for streams."""

    def __init__(self, ip: str, max_viewers: int = 200) -> None:
        self.ip = ip
        self.max_viewers = max_viewers
        self.sessions: dict[str, WhepSession] = {}
        self._tasks: set[asyncio.Task[bool]] = set()

    async def play(self, stream: Stream, offer_sdp: str, client: str = "") -> tuple[str, str]:
        """Answer ``offer_sdp``; returns (session id, answer SDP)."""
        if len(self.sessions) >= self.max_viewers:
            raise OverflowError(f"max_viewers ({self.max_viewers}) reached")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = WhepSession(secrets.token_hex(12), stream, pc)
        try:
            # Codec preferences only count when set before the offer is applied.
            for kind, codec in (("video", stream.video_codec or "H264"), ("audio", stream.audio_codec)):
                if getattr(stream, f"has_{kind}") and codec is not None:
                    self._add_track(pc, kind, codec, stream, lambda: self._stream_ended(session.id))
            await pc.setRemoteDescription(RTCSessionDescription(reachable_candidates_only(offer_sdp, self.ip), "offer"))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except (OperationError, InvalidStateError, ValueError) as exc:
            await self._close_pc(pc)
            raise ValueError(str(exc) or type(exc).__name__) from None
        except BaseException:
            await self._close_pc(pc)
            raise
        self.sessions[session.id] = session

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.stop(session.id)

        log.info("WHEP session %s plays %s", session.id, stream.name)
        return session.id, pc.localDescription.sdp

    @staticmethod
    def _add_track(pc: RTCPeerConnection, kind: str, codec: str, stream: Stream,
                   on_end: Callable[[], None]) -> None:
        mime = _MIME.get(codec)
        wanted = {mime, "video/rtx"} if kind == "video" else {mime}
        capabilities = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType in wanted]
        if mime is None or not any(c.mimeType == mime for c in capabilities):
            log.info("stream %s: %s codec %s cannot be sent over WebRTC", stream.name, kind, codec)
            return
        transceiver = pc.addTransceiver(StreamTrack(kind, stream, on_end), direction="sendonly")
        transceiver.setCodecPreferences(capabilities)
        sender = transceiver.sender
        original = sender._send_keyframe

        def on_keyframe_request() -> None:
            original()
            stream.request_keyframe("viewer PLI/FIR")

        sender._send_keyframe = on_keyframe_request  # type: ignore[method-assign]

    def _stream_ended(self, session_id: str) -> None:
        """The stream is over: end the viewer's session rather than leave it idle."""
        if session_id in self.sessions:
            task = asyncio.get_running_loop().create_task(self.stop(session_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        await self._close_pc(session.pc)
        log.info("WHEP session %s ended", session_id)
        return True

    @staticmethod
    async def _close_pc(pc: RTCPeerConnection) -> None:
        for sender in pc.getSenders():
            if sender.track is not None:
                sender.track.stop()
        await pc.close()

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(i) for i in list(self.sessions)), return_exceptions=True)

    def viewers(self, stream: Stream) -> int:
        return sum(1 for s in self.sessions.values() if s.stream is stream)

    def describe(self) -> list[dict[str, Any]]:
        return [{"id": s.id, "stream": s.stream.name, "state": s.pc.connectionState} for s in self.sessions.values()]
