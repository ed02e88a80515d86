"""The WCS Web SDK's WebSocket protocol, server side: the Flashphoner Web SDK's
Player (and any page written against the SDK) plays sipstream's streams
unchanged. The messages are those of ``shared/reference/wcs-websdk-protocol.md``:

- ``connection`` → ``getUserData`` (the session is ESTABLISHED) and ``getVersion``;
- ``playStream`` (the browser's offer, without candidates: the SDK never
  trickles) → ``setRemoteSDP [mediaSessionId, answer, true]``, a complete
  answer (host candidates and ``a=end-of-candidates``), then
  ``notifyStreamStatusEvent`` ``PLAYING`` once ICE and DTLS are up, or
  ``FAILED`` with WCS's ``info`` texts;
- ``stopStream`` → ``STOPPED``; a closed socket stops its streams;
- a ``ping`` every ``ws_ping_interval_s``; a session that misses
  ``ws_max_missed_pings`` pongs in a row is dropped, as WCS does.

Every server frame is ``{"message": ..., "data": [...]}``. The viewers are
the Rust engine's WebRTC viewers, the same as WHEP's (``WhepEndpoint.play``),
and count in ``max_viewers``, the per-client cap and the stats.

Who may connect, as WCS decides it: when the ``appKey`` maps to an app URL
(``app.<appKey>=<url>``), the ``connection`` is POSTed to the app's
``connect`` hook and only a 2xx accepts it. Otherwise, with
``rest_auth_token`` set, the ``authToken`` or ``custom.token`` of
``connection`` must be that token, or, with ``playback_token_secret``, each
``playStream`` must carry a playback token for its stream (in its own
``custom.token``, or the connection's).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from .. import __version__
from ..api import auth
from ..api.hooks import hook_url
from ..api.limits import LimitedRunner
from ..gateway import NotFound
from ..tls import server_context
from .whep import WhepEndpoint, WhepSession

if TYPE_CHECKING:
    from ..gateway import Gateway
    from ..settings import Settings

log = logging.getLogger(__name__)

# A session may play this many streams at once (the SDK's pages play one or a few).
MAX_STREAMS_PER_SESSION = 16
# Frames the server may queue for a client that reads slowly; then it is dropped.
MAX_QUEUED_FRAMES = 256
# Bad frames (not JSON, no data, wrong fields) a session may send before it is closed.
MAX_BAD_FRAMES = 20
MAX_ID_CHARS = 128
# A client that sent no `connection` by then is closed.
CONNECTION_TIMEOUT_S = 10.0

# Messages of the SDK a player-only server has nothing to do for: accepted, ignored.
_IGNORED = frozenset({
    "pushLogs", "sessionDebug", "submitBugReport", "sendStreamEvent", "sendData", "unPublishStream",
    "webRTCMetricsClientDescription", "webRTCMetricsBatch", "changeStreamState", "snapshot",
})
# The SDK's SIP-call commands: sipstream places calls over REST only.
_CALL_MESSAGES = frozenset({
    "call", "answer", "hangup", "hold", "unhold", "sendDTMF", "transfer", "sendIMMessage",
    "sendInfo", "sendMessage", "updateCall",
})
# Settings-like fields of `connection` that getUserData echoes (never a password or a token).
_NOT_ECHOED = frozenset({"sipPassword", "authToken", "custom"})

# Fields of playStream that its status events echo
_ECHOED_STREAM_FIELDS = ("hasVideo", "hasAudio", "record", "width", "height", "bitrate", "quality")
# Engine close reasons → (status, WCS info)
_ENDED = {
    "the stream ended": ("STOPPED", "Stopped by publisher stop"),
    "not connected in time": ("FAILED", "Failed by ICE timeout"),
    "ICE consent expired": ("FAILED", "Failed by ICE error"),
    "the server stopped": ("FAILED", "Stopped by server shutdown"),
}
_CANDIDATE_UDP = re.compile(r"^a=candidate:\S+ \d+ udp .*$", re.I | re.M)


class BadFrame(ValueError):
    """A client frame this protocol cannot take."""


def complete_answer(sdp: str, tcp_only: bool = False) -> str:
    """The engine's answer, made complete for a client that never trickles:
    ``a=end-of-candidates`` after each media section's candidates; with
    ``tcp_only``, only the ICE-TCP candidates (``transport: "TCP"``)."""
    if tcp_only:
        sdp = _CANDIDATE_UDP.sub("", sdp)
    out: list[str] = []
    sections: list[list[str]] = [[]]
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    out.extend(sections[0])
    for section in sections[1:]:
        if any(line.startswith("a=candidate:") for line in section) and "a=end-of-candidates" not in section:
            last = max(i for i, line in enumerate(section) if line.startswith("a=candidate:"))
            section.insert(last + 1, "a=end-of-candidates")
        out.extend(section)
    return "\r\n".join(out) + "\r\n"


def _frame(message: str, *data: Any) -> str:
    return json.dumps({"message": message, "data": list(data)}, separators=(",", ":"))


def _text(obj: dict[str, Any], key: str, required: bool = True, limit: int = MAX_ID_CHARS) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise BadFrame(f"{key}: expected a string of 1-{limit} characters")
    if any(ord(c) < 0x20 for c in value) and key != "sdp":
        raise BadFrame(f"{key}: control characters")
    return value


@dataclass
class _Play:
    media_session_id: str
    name: str
    request: dict[str, Any]  # the playStream object, echoed in status events
    whep: WhepSession | None = None
    status: str = "PENDING"


@dataclass
class WcsSession:
    """One WebSocket client."""

    server: WcsServer
    ws: web.WebSocketResponse
    remote: str  # the client's IP address
    session_id: str
    established: bool = False
    may_play_all: bool = False  # the API token, an app's connect hook, or no auth configured
    tokens: list[str] = field(default_factory=list)  # playback tokens of the connection
    plays: dict[str, _Play] = field(default_factory=dict)
    missed_pings: int = 0
    bad_frames: int = 0
    closing: bool = False
    close_code: int = WSCloseCode.OK
    close_reason: bytes = b""
    pinger_task: asyncio.Task[None] | None = None  # from `connection` on
    _out: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(MAX_QUEUED_FRAMES))

    # ------------------------------------------------------------ sending
    def send(self, message: str, *data: Any) -> None:
        if self.closing:
            return
        try:
            self._out.put_nowait(_frame(message, *data))
        except asyncio.QueueFull:
            log.info("WCS session %s reads too slowly (%d frames queued): closing it",
                     self.session_id, MAX_QUEUED_FRAMES)
            self.close(WSCloseCode.TRY_AGAIN_LATER, "too slow")

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.close_code, self.close_reason = code, reason.encode()[:120]
        self.server._spawn(self.ws.close(code=code, message=self.close_reason))

    async def writer(self) -> None:
        while True:
            text = await self._out.get()
            if self.ws.closed:
                return
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                return

    async def pinger(self, interval: float, max_missed: int) -> None:
        while not self.ws.closed:
            await asyncio.sleep(interval)
            if self.missed_pings >= max_missed:
                log.info("WCS session %s missed %d pings: dropping it", self.session_id, self.missed_pings)
                self.close(WSCloseCode.GOING_AWAY, "ping timeout")
                return
            self.missed_pings += 1
            self.send("ping")

    # ------------------------------------------------------------ streams
    def status_event(self, play: _Play, status: str, info: str = "") -> None:
        play.status = status
        event: dict[str, Any] = {k: play.request[k] for k in _ECHOED_STREAM_FIELDS if k in play.request}
        event.update({"mediaSessionId": play.media_session_id, "name": play.name, "published": False,
                      "mediaProvider": "WebRTC", "status": status})
        if info:
            event["info"] = info
        self.send("notifyStreamStatusEvent", event)

    def on_viewer_event(self, play: _Play, kind: str, reason: str) -> None:
        if self.plays.get(play.media_session_id) is not play:
            return
        if kind == "connected":
            self.status_event(play, "PLAYING")
            return
        self.plays.pop(play.media_session_id, None)
        status, info = _ENDED.get(reason, ("FAILED", "Failed by DTLS error" if "DTLS" in reason
                                           else f"Failed by error: {reason}"))
        self.status_event(play, status, info)

    async def stop_all(self) -> None:
        plays, self.plays = list(self.plays.values()), {}
        for play in plays:
            if play.whep is not None:
                await self.server.whep.stop(play.whep.id)


class WcsServer:
    """The WebSocket port(s): ws on ``ws_port``, wss on ``wss_port`` with
    ``wss_cert``/``wss_key``. Any path is accepted (the Player uses ``/``)
    and any Origin: a page from anywhere may play, as with WCS; use playback
    tokens to restrict who."""

    def __init__(self, gateway: Gateway, whep: WhepEndpoint, settings: Settings | None = None) -> None:
        self.gateway = gateway
        self.whep = whep
        self.settings = settings or gateway.settings
        self.sessions: dict[str, WcsSession] = {}
        self._runner: LimitedRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ports: dict[str, int] = {}  # "ws" / "wss" -> bound port

    # ---------------------------------------------------------- lifecycle
    async def start(self) -> None:
        s = self.settings
        app = web.Application(client_max_size=s.ws_max_message_bytes)
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = LimitedRunner(app, access_log=None, shutdown_timeout=1.0,
                                     max_connections=s.ws_max_sessions + 16,
                                     header_timeout_s=s.http_header_timeout_s,
                                     keepalive_timeout=s.http_keepalive_timeout_s)
        await self._runner.setup()
        sites: list[tuple[str, int, ssl.SSLContext | None]] = []
        if s.ws_port:
            sites.append(("ws", s.ws_port, None))
        if s.wss_port and s.wss_cert:
            sites.append(("wss", s.wss_port, server_context(s.wss_cert, s.wss_key, "wss_cert/wss_key")))
        for scheme, port, tls in sites:
            site = web.TCPSite(self._runner, s.bind_ip, port, ssl_context=tls)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.ports[scheme] = sockets[0].getsockname()[1] if sockets else port
            log.info("WCS WebSocket on %s://%s:%d", scheme, s.bind_ip, self.ports[scheme])

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            session.close(WSCloseCode.GOING_AWAY, "server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ----------------------------------------------------------- sessions
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        s = self.settings
        if len(self.sessions) >= s.ws_max_sessions:
            return web.json_response({"message": f"ws_max_sessions ({s.ws_max_sessions}) reached"}, status=503,
                                     headers={"Retry-After": "5"})
        ws = web.WebSocketResponse(max_msg_size=s.ws_max_message_bytes, heartbeat=None, autoping=True)
        if not ws.can_prepare(request).ok:
            return web.json_response({"message": "this port speaks the WCS WebSocket protocol only"}, status=426,
                                     headers={"Upgrade": "websocket"})
        await ws.prepare(request)
        remote = request.remote or ""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        peer = request.transport.get_extra_info("peername") if request.transport else None
        session_id = (f"/{peer[0]}:{peer[1]}/{sockname[0]}:{sockname[1]}" if peer and sockname
                      else f"/{uuid.uuid4()}")
        session = WcsSession(self, ws, remote, session_id)
        self.sessions[session_id] = session
        writer = self._spawn(session.writer())
        log.info("WCS session %s opened", session_id)
        try:
            await self._read(session)
        finally:
            self.sessions.pop(session_id, None)
            if session.pinger_task is not None:
                session.pinger_task.cancel()
            session.closing = True
            await session.stop_all()
            writer.cancel()
            await ws.close(code=session.close_code, message=session.close_reason)
            log.info("WCS session %s closed", session_id)
        return ws

    async def _read(self, session: WcsSession) -> None:
        ws = session.ws
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECTION_TIMEOUT_S
        while not ws.closed:
            timeout = None if session.established else max(0.0, deadline - loop.time())
            try:
                msg = await ws.receive(timeout=timeout)
            except asyncio.TimeoutError:
                session.close(WSCloseCode.POLICY_VIOLATION, "no connection message")
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type != WSMsgType.TEXT:
                self._bad(session, None, "binary frames are not part of this protocol")
                continue
            try:
                name, data = self._parse(msg.data)
                await self._dispatch(session, name, data)
            except BadFrame as exc:
                self._bad(session, None, str(exc))
            if session.closing:
                return

    @staticmethod
    def _parse(text: str) -> tuple[str, Any]:
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError):
            raise BadFrame("not JSON") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("message"), str):
            raise BadFrame('expected {"message": <name>, "data": [...]}')
        data = frame.get("data")
        if not isinstance(data, list):
            raise BadFrame(f"{frame['message'][:40]}: data must be an array")
        return frame["message"], data[0] if data else None

    def _bad(self, session: WcsSession, name: str | None, why: str) -> None:
        session.bad_frames += 1
        log.info("WCS session %s: bad frame (%s)", session.session_id, why)
        session.send("fail", {"apiMethod": name or "unknown", "status": "FAILED", "info": why})
        if session.bad_frames >= MAX_BAD_FRAMES:
            session.close(WSCloseCode.POLICY_VIOLATION, "too many bad frames")

    async def _dispatch(self, session: WcsSession, name: str, obj: Any) -> None:
        if name == "pong":
            session.missed_pings = 0
            return
        if name == "ping":
            session.send("pong")
            return
        if name == "connection":
            if session.established:
                raise BadFrame("connection: the session is already established")
            if not isinstance(obj, dict):
                raise BadFrame("connection: data[0] must be an object")
            await self._connect(session, obj)
            return
        if not session.established:
            raise BadFrame(f"{name[:40]}: send connection first")
        if name == "playStream":
            await self._play(session, obj)
        elif name == "stopStream":
            await self._stop(session, obj)
        elif name == "publishStream":
            play = self._play_of(obj, "publishStream")
            session.status_event(play, "FAILED", "Publishing is not supported: sipstream plays SIP calls' streams")
        elif name in _CALL_MESSAGES:
            call_id: str = obj["callId"] if isinstance(obj, dict) and isinstance(obj.get("callId"), str) else ""
            session.send("fail", {"apiMethod": "CallStatusEvent", "callId": call_id[:MAX_ID_CHARS],
                                  "status": "FAILED",
                                  "info": "SIP calls over the WebSocket are not supported: use the REST API"})
        elif name not in _IGNORED:
            raise BadFrame(f"unknown message {name[:40]!r}")

    # --------------------------------------------------------- connection
    async def _connect(self, session: WcsSession, obj: dict[str, Any]) -> None:
        s = self.settings
        app_key = obj["appKey"] if isinstance(obj.get("appKey"), str) else "defaultApp"
        custom: dict[str, Any] = obj["custom"] if isinstance(obj.get("custom"), dict) else {}
        offered = [t for t in (obj.get("authToken"), custom.get("token")) if isinstance(t, str) and t]
        url = None if s.disable_rest_requests else hook_url(s, app_key, "connect")
        if url is not None:
            refused = await self._ask_app(url, session, obj)
            if refused:
                log.info("WCS session %s refused by app %s: %s", session.session_id, app_key, refused)
                session.close(WSCloseCode.POLICY_VIOLATION, refused)
                return
            session.may_play_all = True
        elif s.rest_auth_token:
            if any(auth.api_token_ok(f"Bearer {t}", s.rest_auth_token) for t in offered):
                session.may_play_all = True
            elif not s.playback_token_secret:
                log.info("WCS session %s: no valid token in connection", session.session_id)
                session.close(WSCloseCode.POLICY_VIOLATION, "Unauthorized")
                return
        else:
            session.may_play_all = not s.playback_token_secret
        session.tokens = offered
        session.established = True
        session.pinger_task = self._spawn(session.pinger(s.ws_ping_interval_s, s.ws_max_missed_pings))
        echo = {k: v for k, v in obj.items() if k not in _NOT_ECHOED}
        session.send("getUserData", {**echo, "appKey": app_key, "sessionId": session.session_id,
                                     "authToken": session.session_id, "status": "ESTABLISHED",
                                     "mediaProviders": ["WebRTC"]})
        session.send("getVersion", f"sipstream-{__version__}")
        log.info("WCS session %s established (appKey %s)", session.session_id, app_key)

    async def _ask_app(self, url: str, session: WcsSession, obj: dict[str, Any]) -> str:
        """The app's connect hook on this connection: "" when it accepts, else why not."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.rest_hook_timeout_s))
        body = {k: v for k, v in obj.items() if k != "sipPassword"}
        body.update({"sessionId": session.session_id, "nodeId": self.settings.ip})
        try:
            async with self._http.post(url, json=body) as res:
                await res.content.read(65536)
                return "" if 200 <= res.status < 300 else f"Rejected by the app: HTTP {res.status}"
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            return f"The app's connect hook failed: {type(exc).__name__}"

    # ------------------------------------------------------------- streams
    @staticmethod
    def _play_of(obj: Any, what: str) -> _Play:
        if not isinstance(obj, dict):
            raise BadFrame(f"{what}: data[0] must be an object")
        return _Play(_text(obj, "mediaSessionId"), _text(obj, "name", required=False, limit=256), obj)

    def _may_play(self, session: WcsSession, play: _Play) -> bool:
        if session.may_play_all:
            return True
        secret = self.settings.playback_token_secret
        custom = play.request.get("custom")
        own = custom.get("token") if isinstance(custom, dict) else None
        tokens = ([own] if isinstance(own, str) and own else []) + session.tokens
        return bool(secret) and any(auth.playback_allowed(t, play.name, secret) for t in tokens)

    async def _play(self, session: WcsSession, obj: Any) -> None:
        play = self._play_of(obj, "playStream")
        sdp = _text(play.request, "sdp", limit=self.settings.max_body_bytes)
        if play.media_session_id in session.plays:
            raise BadFrame("playStream: this mediaSessionId is already playing")
        if len(session.plays) >= MAX_STREAMS_PER_SESSION:
            session.status_event(play, "FAILED", f"Too many streams on one session ({MAX_STREAMS_PER_SESSION})")
            return
        if not self._may_play(session, play):
            session.status_event(play, "FAILED", "Not authorized")
            return
        try:
            stream = self.gateway.live_stream(play.name)
        except NotFound:
            session.status_event(play, "FAILED", "Stream not found")
            return
        session.plays[play.media_session_id] = play
        try:
            whep_id, answer = await self.whep.play(
                stream, sdp, session.remote, protocol="wcs",
                on_event=lambda kind, reason: session.on_viewer_event(play, kind, reason))
        except OverflowError as exc:
            session.plays.pop(play.media_session_id, None)
            session.status_event(play, "FAILED", f"Too many viewers: {exc}")
            return
        except ValueError as exc:
            session.plays.pop(play.media_session_id, None)
            text = str(exc)
            session.status_event(play, "FAILED", "No common codecs" if "codec" in text.lower()
                                 else f"Failed by SDP error: {text[:200]}")
            return
        play.whep = self.whep.sessions.get(whep_id)
        if session.plays.get(play.media_session_id) is not play or session.closing:
            # stopped, or the socket closed, while the answer was made
            await self.whep.stop(whep_id)
            return
        tcp_only = play.request.get("transport") == "TCP" and self.whep.tcp_port is not None
        session.send("setRemoteSDP", play.media_session_id, complete_answer(answer, tcp_only), True)
        log.info("WCS session %s plays %s (%s)", session.session_id, play.name, play.media_session_id)

    async def _stop(self, session: WcsSession, obj: Any) -> None:
        play = self._play_of(obj, "stopStream")
        known = session.plays.pop(play.media_session_id, None)
        if known is not None:
            play = known
            if known.whep is not None:
                await self.whep.stop(known.whep.id)
        session.status_event(play, "STOPPED", "Stopped by user")
