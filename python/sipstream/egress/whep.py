"""WebRTC playback over WHEP (draft-ietf-wish-whep), served by the Rust
viewer engine (``WebrtcEngine``): every viewer of every stream on one UDP
port (``webrtc_port``), ICE-lite, DTLS-SRTP (AES-GCM when the browser offers
it), the SIP codecs forwarded as received. Each stream's frames are
packetized once in Rust and never enter Python on their way to viewers.

Python keeps the control plane: answering offers, the session registry,
``max_viewers``, and turning viewers' PLI/FIR into a throttled keyframe
request toward the SIP side."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._core import WebrtcEngine
from ..media.stream import Stream

log = logging.getLogger(__name__)

# The audio codecs a browser can play as they come from the SIP side.
WEBRTC_AUDIO = ("PCMU", "PCMA", "opus")


@dataclass
class WhepSession:
    id: str
    stream: Stream
    viewer: int
    client: str = ""  # the client's IP address
    created: float = field(default_factory=time.monotonic)
    connected: bool = False
    protocol: str = "whep"  # or "wcs": the WCS WebSocket's viewers are the same engine's
    # told "connected" or "closed" (with the engine's reason) from the event loop
    on_event: Callable[[str, str], None] | None = None


class WhepEndpoint:
    """Creates and ends WHEP sessions for streams, on one WebRTC engine.

    ``ip`` is advertised in the answer's ICE candidate; the engine binds
    ``bind_ip`` (``ip_local`` for 1:1 NAT, else ``ip``) on ``port``
    (0: an ephemeral port). With ``tcp_port`` (0: ephemeral) the answer also
    offers a passive ICE-TCP candidate on that TCP port, for viewers whose
    firewall blocks UDP."""

    def __init__(self, ip: str, max_viewers: int = 200, port: int = 0, bind_ip: str | None = None,
                 connect_timeout_s: float = 30.0, tcp_port: int | None = None,
                 max_per_client: int = 0, plain_udp_port: int | None = None) -> None:
        self.ip = ip
        # an RTP/RTCP port pair for plain-RTP (RTSP) viewers over UDP
        self.plain_udp_port = plain_udp_port
        # plain-RTP viewers of the same engine (egress/rtsp.py): viewer id ->
        # (protocol, listener of its "closed" event)
        self.plain: dict[int, tuple[str, Callable[[str, str], None]]] = {}
        self.max_per_client = max_per_client  # sessions per client address; 0: no limit
        self.tcp_port = tcp_port
        self.connect_timeout_s = connect_timeout_s
        self.bind_ip = bind_ip or ip
        self.max_viewers = max_viewers
        self.requested_port = port
        self.sessions: dict[str, WhepSession] = {}
        self._by_viewer: dict[int, WhepSession] = {}
        # feed id -> its stream, for the engine's keyframe requests
        self._streams: weakref.WeakValueDictionary[int, Stream] = weakref.WeakValueDictionary()
        self._engine: WebrtcEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -------------------------------------------------------------- engine
    def start(self) -> None:
        """Open the WebRTC port (also done by the first ``play``)."""
        if self._engine is not None:
            return
        self._engine = WebrtcEngine(self.bind_ip, self.requested_port, self.ip, self.connect_timeout_s,
                                    tcp_port=self.tcp_port, plain_udp_port=self.plain_udp_port)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._engine.fileno(), self._on_events)
        tcp = f", ICE-TCP {self.bind_ip}:{self._engine.tcp_port}" if self._engine.tcp_port is not None else ""
        log.info("WebRTC viewers on UDP %s:%d%s", self.bind_ip, self._engine.port, tcp)

    @property
    def port(self) -> int:
        return self._engine.port if self._engine is not None else self.requested_port

    @property
    def engine(self) -> WebrtcEngine:
        self.start()
        assert self._engine is not None
        return self._engine

    def _on_events(self) -> None:
        engine = self._engine
        if engine is None:
            return
        for kind, ident, reason in engine.drain_events():
            if kind == "keyframe":
                stream = self._streams.get(ident)
                if stream is not None:
                    stream.request_keyframe("viewer PLI/FIR or a new viewer")
                continue
            plain = self.plain.get(ident)
            if plain is not None:
                if kind == "closed":
                    del self.plain[ident]
                    try:
                        plain[1](kind, reason)
                    except Exception:  # one viewer's listener must not stop the others' events
                        log.exception("plain viewer %d: event listener failed", ident)
                continue
            session = self._by_viewer.get(ident)
            if session is None:
                continue
            if kind == "connected":
                session.connected = True
                log.info("WebRTC viewer %s connected (%s, %s)", session.id, session.stream.name, session.protocol)
            elif kind == "closed":
                self._forget(session)
                log.info("WebRTC viewer %s ended: %s", session.id, reason)
            if session.on_event is not None:
                try:
                    session.on_event(kind, reason)
                except Exception:  # one viewer's listener must not stop the others' events
                    log.exception("WebRTC viewer %s: event listener failed", session.id)

    def _forget(self, session: WhepSession) -> None:
        self.sessions.pop(session.id, None)
        self._by_viewer.pop(session.viewer, None)

    # ------------------------------------------------------------ sessions
    async def play(self, stream: Stream, offer_sdp: str, client: str = "", protocol: str = "whep",
                   on_event: Callable[[str, str], None] | None = None) -> tuple[str, str]:
        """Answer ``offer_sdp`` from ``client`` (its address); returns (session
        id, answer SDP). ValueError when the offer cannot be answered,
        OverflowError at ``max_viewers`` or at the client's share of them.
        ``on_event(kind, reason)`` hears the viewer's "connected" and
        "closed" (not the close that ``stop`` asks for)."""
        if self.viewer_count >= self.max_viewers:
            raise OverflowError(f"max_viewers ({self.max_viewers}) reached")
        if self.max_per_client and client and sum(
                1 for s in self.sessions.values() if s.client == client) >= self.max_per_client:
            raise OverflowError(f"max_viewers_per_client ({self.max_per_client}) reached for this address")
        engine = self.engine
        audio = stream.audio_codec if stream.has_audio and stream.audio_codec in WEBRTC_AUDIO else None
        video = stream.has_video and (stream.video_codec or "H264") == "H264"
        # the answer takes a millisecond or two of crypto set-up: off the loop
        viewer, answer = await asyncio.to_thread(engine.add_viewer, stream.feed, offer_sdp, audio, video)
        session = WhepSession(secrets.token_hex(12), stream, viewer, client, protocol=protocol, on_event=on_event)
        self.sessions[session.id] = session
        self._streams[stream.feed.id] = stream
        self._by_viewer[viewer] = session
        if stream.ended:  # ended while we answered
            await self.stop(session.id)
            raise ValueError("the stream has ended")
        log.info("WebRTC viewer %s plays %s (%s)", session.id, stream.name, protocol)
        return session.id, answer

    @property
    def viewer_count(self) -> int:
        """WebRTC and plain-RTP viewers of the engine (``max_viewers`` bounds them)."""
        return len(self.sessions) + len(self.plain)

    def add_plain(self, stream: Stream, protocol: str, on_event: Callable[[str, str], None],
                  **kwargs: Any) -> int:
        """Add a plain-RTP viewer of ``stream`` (``WebrtcEngine.add_plain_viewer``'s
        arguments); ``on_event("closed", reason)`` hears its end unless ``stop_plain``
        ended it. ValueError on a bad set-up."""
        viewer = self.engine.add_plain_viewer(stream.feed, **kwargs)
        self.plain[viewer] = (protocol, on_event)
        self._streams[stream.feed.id] = stream
        return viewer

    def plain_stats(self, viewer: int) -> dict[str, Any] | None:
        """A plain viewer's counters (packets, bytes, and from its client's
        RTCP, over UDP or interleaved: ``reports``, ``lost``, ``loss``,
        ``jitter_ms``), or None when it is gone."""
        return self._engine.viewer(viewer) if self._engine is not None and viewer in self.plain else None

    def stop_plain(self, viewer: int) -> None:
        if self.plain.pop(viewer, None) is not None and self._engine is not None:
            self._engine.remove_viewer(viewer)

    async def stop(self, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None:
            return False
        self._forget(session)
        if self._engine is not None:
            self._engine.remove_viewer(session.viewer)
        log.info("WebRTC viewer %s ended", session_id)
        return True

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(engine.fileno())
        self.sessions.clear()
        self._by_viewer.clear()
        self.plain.clear()
        await asyncio.to_thread(engine.close)

    # --------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        return self._engine.stats() if self._engine is not None else {}

    def session_stats(self, session_id: str) -> dict[str, Any] | None:
        """A session's state and what its RTCP says (loss, jitter, RTT), or
        None when there is no such session."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        info = self._engine.viewer(session.viewer) if self._engine is not None else None
        return {"id": session.id, "stream": session.stream.name, "connected": session.connected, **(info or {})}
