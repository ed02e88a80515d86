"""RTSP playback (RFC 2326, with RFC 7826's status codes where they agree):
``rtsp://HOST:rtsp_port/<stream>``. This module is the signaling only, in
asyncio: OPTIONS, DESCRIBE (the stream's SDP, codecs as received), SETUP
(RTP over UDP or interleaved in the RTSP connection), PLAY, TEARDOWN and
GET_PARAMETER keep-alives, Digest auth and playback tokens, and limits.

The media never passes through Python: at PLAY the session becomes a
plain-RTP viewer of the Rust engine that serves WebRTC viewers
(``WebrtcEngine.add_plain_viewer``). Over UDP it sends from one RTP/RTCP
socket pair for all clients (``server_port``); interleaved, the engine gets
a dup of the connection and writes ``$`` frames and, from then on, our
responses too, so that they never cut into a frame. A client that stops
reading is cut off by the engine, and its session ends here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..api import auth
from ..gateway import Gateway, NotFound
from ..media.stream import Stream
from ..settings import Settings
from .whep import WhepEndpoint

log = logging.getLogger(__name__)

METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "TEARDOWN", "GET_PARAMETER")
# known RTSP methods we do not serve (405 with Allow), others are 501
OTHER_METHODS = ("ANNOUNCE", "PAUSE", "RECORD", "REDIRECT", "SET_PARAMETER", "PLAY_NOTIFY")
REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 454: "Session Not Found", 455: "Method Not Valid in This State",
    459: "Aggregate Operation Not Allowed", 461: "Unsupported Transport", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "RTSP Version Not Supported",
}
# track ids in control URLs: 0 audio, 1 video
TRACKS = {0: "audio", 1: "video"}
AUDIO_RTP = {"PCMU": (0, 8000, "PCMU/8000"), "PCMA": (8, 8000, "PCMA/8000"), "opus": (111, 48000, "opus/48000/2")}
VIDEO_PT = 96
REALM = "sipstream"
NONCE_TTL_S = 300
_TRACK_RE = re.compile(r"/trackID=(\d+)$")
# a stream name in a URL path: what the REST API lets through, nothing to escape
_NAME_RE = re.compile(r"^[\w.~-]{1,256}$")


class RtspError(Exception):
    def __init__(self, status: int, why: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(why)
        self.status = status
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class Target:
    """What a request URL names: a stream, maybe one of its tracks, and a token."""

    stream: str
    track: int | None
    token: str


def parse_url(url: str) -> Target:
    """``rtsp://host[:port]/<stream>[/trackID=N][?token=...]``. The token may
    also come before the track (players append control paths to the URL
    they were given)."""
    if len(url) > 2048:
        raise RtspError(414, "URL too long")
    if url == "*":
        return Target("", None, "")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise RtspError(400, "bad URL") from None
    if parts.scheme.lower() not in ("rtsp", "rtspt") or not parts.netloc:
        raise RtspError(400, "not an rtsp:// URL")
    # a Content-Base with a query, joined with "/" by players
    path, query = parts.path, parts.query.rstrip("/")
    track_in_query = _TRACK_RE.search(query)
    if track_in_query:  # rtsp://h/s?token=x/trackID=0
        path += track_in_query.group(0)
        query = query[: track_in_query.start()]
    track = None
    found = _TRACK_RE.search(path)
    if found:
        track = int(found.group(1))
        path = path[: found.start()]
    name = unquote(path.strip("/"))
    if name and not _NAME_RE.match(name):
        raise RtspError(404, "no such stream")
    tokens = parse_qs(query).get("token", [])
    return Target(name, track, tokens[0] if tokens else "")


def sdp_of(stream: Stream, ip: str, base: str, token: str) -> str:
    """The stream's SDP: H.264 (with its SPS and PPS when known) and the
    call's audio codec, each track with an absolute control URL (a token in
    the URL's query survives players' URL joining that way)."""
    query = f"?token={token}" if token else ""
    lines = ["v=0", f"o=- {int(stream.created)} 1 IN IP4 {ip}", f"s={stream.name}", "c=IN IP4 0.0.0.0",
             "t=0 0", "a=control:*", "a=range:npt=now-"]
    audio = stream.audio_codec if stream.has_audio else None
    if audio in AUDIO_RTP:
        pt, _, rtpmap = AUDIO_RTP[audio]
        lines += [f"m=audio 0 RTP/AVP {pt}", f"a=rtpmap:{pt} {rtpmap}"]
        if audio == "opus":
            lines.append(f"a=fmtp:{pt} sprop-stereo=0")
        lines.append(f"a=control:{base}/trackID=0{query}")
    if stream.has_video and (stream.video_codec or "H264") == "H264":
        fmtp = "packetization-mode=1"
        sps, pps = parameter_sets(stream)
        if sps and len(sps) >= 4:
            fmtp += f";profile-level-id={sps[1:4].hex()}"
        if sps and pps:
            fmtp += ";sprop-parameter-sets=" + ",".join(base64.b64encode(n).decode() for n in (sps, pps))
        lines += [f"m=video 0 RTP/AVP {VIDEO_PT}", f"a=rtpmap:{VIDEO_PT} H264/90000",
                  f"a=fmtp:{VIDEO_PT} {fmtp}", f"a=control:{base}/trackID=1{query}"]
    return "\r\n".join(lines) + "\r\n"


def parameter_sets(stream: Stream) -> tuple[bytes | None, bytes | None]:
    """The SPS and PPS of the stream's latest keyframe, if it carried them."""
    gop = stream.feed.gop()
    if not gop:
        return None, None
    sps = pps = None
    for nal in re.split(b"\x00\x00\x01", gop[0]):
        nal = nal.rstrip(b"\x00")
        if nal and nal[0] & 0x1F == 7 and sps is None:
            sps = nal
        elif nal and nal[0] & 0x1F == 8 and pps is None:
            pps = nal
    return sps, pps


@dataclass
class TransportSpec:
    tcp: bool
    ports: tuple[int, int]  # client ports (UDP) or channels (TCP)


def parse_transport(header: str, next_channel: int) -> TransportSpec:
    """The first transport of ``header`` we serve: unicast RTP/AVP over UDP
    with ``client_port``, or RTP/AVP/TCP interleaved. 461 when none."""
    for spec in header.split(","):
        params = [p.strip() for p in spec.split(";") if p.strip()]
        if not params:
            continue
        proto = params[0].upper()
        options: dict[str, str] = {}
        for p in params[1:]:
            key, _, value = p.partition("=")
            options[key.lower()] = value
        if "multicast" in options or options.get("mode", "play").strip('"').lower() != "play":
            continue
        pair = options.get("interleaved" if proto == "RTP/AVP/TCP" else "client_port", "")
        ports = _pair(pair)
        if proto == "RTP/AVP/TCP":
            if pair and (ports is None or max(ports) > 255):
                raise RtspError(400, "bad interleaved channels")
            return TransportSpec(True, ports or (next_channel, next_channel + 1))
        if proto in ("RTP/AVP", "RTP/AVP/UDP"):
            if ports is None or min(ports) == 0:
                raise RtspError(461, "UDP needs client_port=a-b")
            return TransportSpec(False, ports)
    raise RtspError(461, "no supported transport (RTP/AVP unicast over UDP, or RTP/AVP/TCP interleaved)")


def _pair(text: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", text.strip())
    if not m:
        return None
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) else a + 1
    return (a, b) if a < 65536 and b < 65536 else None


@dataclass
class Track:
    kind: str  # audio, video
    pt: int
    clock: int
    ssrc: int
    seq: int
    transport: TransportSpec


@dataclass
class Session:
    id: str
    stream: Stream
    tracks: dict[int, Track] = field(default_factory=dict)
    viewer: int | None = None  # the engine's, once playing
    tcp: bool = False
    reports: int = 0  # the UDP client's RTCP reports the engine had counted at the last look


class DigestAuth:
    """RFC 2617 Digest (MD5, no qop: what RTSP players send) with stateless
    nonces: a timestamp signed with a per-process key."""

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self._ha1 = hashlib.md5(f"{user}:{REALM}:{password}".encode()).hexdigest()
        self._key = secrets.token_bytes(32)

    def challenge(self, stale: bool = False) -> str:
        stamp = str(int(time.time()))
        sig = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        return f'Digest realm="{REALM}", nonce="{stamp}.{sig}"' + (", stale=TRUE" if stale else "")

    def check(self, authorization: str, method: str, url: str) -> str:
        """"ok", "stale" (a nonce of ours, too old) or "bad". The digest must
        be for ``url`` (or its path: some players send that)."""
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "digest":
            return "bad"
        params = dict((k.lower(), v) for k, v in re.findall(r'(\w+)\s*=\s*"?([^",]*)"?', rest))
        nonce = params.get("nonce", "")
        stamp, _, sig = nonce.partition(".")
        good = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        if not stamp.isdigit() or not hmac.compare_digest(sig, good):
            return "bad"
        if params.get("username") != self.user or params.get("realm") != REALM:
            return "bad"
        if params.get("uri") not in (url, urlsplit(url).path, url.split("?", 1)[0]):
            return "bad"
        ha2 = hashlib.md5(f"{method}:{params.get('uri', '')}".encode()).hexdigest()
        if params.get("qop"):
            want = hashlib.md5(f"{self._ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:"
                               f"{params['qop']}:{ha2}".encode()).hexdigest()
        else:
            want = hashlib.md5(f"{self._ha1}:{nonce}:{ha2}".encode()).hexdigest()
        if not hmac.compare_digest(params.get("response", "").lower(), want):
            return "bad"
        return "stale" if time.time() - int(stamp) > NONCE_TTL_S else "ok"


class RtspConnection:
    """One client's RTSP connection and its (at most one) session."""

    def __init__(self, server: RtspServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("", 0)
        self.client = str(peer[0])
        self.session: Session | None = None
        self.closing = False

    # ------------------------------------------------------------ reading
    async def run(self) -> None:
        s = self.server.settings
        try:
            while not self.closing:
                playing = self.session is not None and self.session.viewer is not None
                # a playing session lives on its keep-alives; otherwise a
                # client must keep talking
                idle = s.rtsp_session_timeout_s if self.session is not None else s.rtsp_request_timeout_s
                try:
                    first = await asyncio.wait_for(self.reader.readexactly(1), idle)
                except asyncio.TimeoutError:
                    if playing and self._client_reported():
                        continue  # RTCP reports over UDP keep a session alive (RFC 7826 §10.5)
                    log.info("RTSP %s: %s", self.client, "session timed out" if playing else "idle, closed")
                    return
                if first == b"$" and self.session is not None and self.session.tcp:
                    # an interleaved frame (the client's RTCP): keeps the session alive,
                    # and its reports give the viewer's loss and jitter
                    header = await asyncio.wait_for(self.reader.readexactly(3), s.rtsp_request_timeout_s)
                    frame = await asyncio.wait_for(self.reader.readexactly(int.from_bytes(header[1:3], "big")),
                                                   s.rtsp_request_timeout_s)
                    session = self.session
                    if session.viewer is not None and any(header[0] == t.transport.ports[1]
                                                          for t in session.tracks.values()):
                        self.server.whep.engine.plain_rtcp(session.viewer, frame)
                    continue
                try:
                    request = await asyncio.wait_for(self._read_request(first), s.rtsp_request_timeout_s)
                except asyncio.TimeoutError:
                    self._respond(408, "", {}, close=True)
                    return
                except RtspError as exc:
                    self._respond(exc.status, "", {}, close=True)
                    log.info("RTSP %s: bad request: %s", self.client, exc)
                    return
                await self._handle(request)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            await self.close()

    def _client_reported(self) -> bool:
        """The playing UDP client sent RTCP reports since the last look."""
        session = self.session
        if session is None or session.viewer is None or session.tcp:
            return False
        info = self.server.whep.plain_stats(session.viewer) or {}
        reports, session.reports = session.reports, int(info.get("reports", 0))
        return session.reports > reports

    async def _read_request(self, first: bytes) -> Request:
        limit = self.server.settings.rtsp_max_request_bytes
        try:
            head = first + await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise RtspError(413, "request too large") from None
        if len(head) > limit:
            raise RtspError(413, "request too large")
        head = head[:-4]
        sep = b"\r\n\r\n"
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            raise RtspError(400, "not UTF-8") from None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not re.fullmatch(r"[A-Z][A-Z_]{0,31}", parts[0]):
            raise RtspError(400, "bad request line")
        method, url, version = parts
        if version not in ("RTSP/1.0", "RTSP/1.1"):
            raise RtspError(505, f"version {version[:16]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name.strip() or any(c in name for c in " \t"):
                raise RtspError(400, "bad header line")
            headers[name.strip().lower()] = value.strip()
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise RtspError(400, "bad Content-Length")
        length = int(length_text)
        if len(head) + len(sep) + length > limit:
            raise RtspError(413, "request too large")
        body = await self.reader.readexactly(length) if length else b""
        return Request(method, url, headers, body)

    # ---------------------------------------------------------- responses
    def _respond(self, status: int, cseq: str, headers: dict[str, str], body: str = "",
                 content_type: str = "", close: bool = False) -> None:
        lines = [f"RTSP/1.0 {status} {REASONS.get(status, 'Error')}"]
        if cseq:
            lines.append(f"CSeq: {cseq}")
        lines.append("Server: sipstream")
        for k, v in headers.items():
            lines.append(f"{k}: {v}")
        if close:
            lines.append("Connection: close")
        raw = body.encode()
        if raw:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(raw)}"]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + raw
        session = self.session
        if session is not None and session.tcp and session.viewer is not None:
            # the engine writes this connection now: between two frames
            self.server.whep.engine.send_text(session.viewer, data)
        elif not self.writer.is_closing():
            self.writer.write(data)

    async def _handle(self, request: Request) -> None:
        cseq = request.header("cseq")
        try:
            if not cseq.isdigit():
                raise RtspError(400, "CSeq missing or not a number")
            headers, body, content_type = await self._dispatch(request)
        except _Answered:
            return
        except RtspError as exc:
            log.info("RTSP %s: %s %s: %d %s", self.client, request.method, _loggable(request.url),
                     exc.status, exc)
            self._respond(exc.status, cseq, exc.headers)
            return
        except Exception:
            log.exception("RTSP %s: %s failed", self.client, request.method)
            self._respond(500, cseq, {})
            return
        self._respond(200, cseq, headers, body, content_type)

    async def _dispatch(self, request: Request) -> tuple[dict[str, str], str, str]:
        method = request.method
        if method in OTHER_METHODS:
            raise RtspError(405, f"{method} is not served", {"Allow": ", ".join(METHODS)})
        if method not in METHODS:
            raise RtspError(501, f"unknown method {method[:32]!r}")
        target = parse_url(request.url)
        if method == "OPTIONS":
            return {"Public": ", ".join(METHODS)}, "", ""
        if method == "GET_PARAMETER" and not target.stream and self.session is not None:
            self._check_session(request)
            return self._session_header(), "", ""
        self._authorize(request, target)
        if method == "DESCRIBE":
            stream = self._stream(target)
            if target.track is not None:
                raise RtspError(404, "DESCRIBE names a stream, not a track")
            base = request.url.split("?", 1)[0].rstrip("/")
            sdp = sdp_of(stream, self.server.settings.ip, base, target.token)
            if "m=" not in sdp:
                raise RtspError(404, "the stream has no track RTSP can carry yet")
            return {"Content-Base": request.url + ("" if request.url.endswith("/") else "/")}, sdp, "application/sdp"
        if method == "SETUP":
            return await self._setup(request, target)
        session = self._check_session(request)
        if method == "PLAY":
            return await self._play(request, session)
        if method == "TEARDOWN":
            # the answer first: over TCP the engine writes it before it lets go
            self._respond(200, request.header("cseq"), {})
            await self._teardown()
            raise _Answered()
        # GET_PARAMETER: a keep-alive (our read timeout restarted)
        return self._session_header(), "", ""

    def _session_header(self) -> dict[str, str]:
        if self.session is None:
            return {}
        timeout = max(1, int(self.server.settings.rtsp_session_timeout_s))
        return {"Session": f"{self.session.id};timeout={timeout}"}

    def _check_session(self, request: Request) -> Session:
        given = request.header("session").split(";", 1)[0].strip()
        if not given:
            raise RtspError(454, "no Session header")
        if self.session is None or not hmac.compare_digest(given, self.session.id):
            raise RtspError(454, "no such session")
        return self.session

    def _stream(self, target: Target) -> Stream:
        if not target.stream:
            raise RtspError(404, "no stream in the URL")
        try:
            return self.server.gateway.live_stream(target.stream)
        except NotFound:
            raise RtspError(404, f"stream {target.stream!r} not found") from None

    def _authorize(self, request: Request, target: Target) -> None:
        s = self.server.settings
        if target.token and s.playback_token_secret and target.stream and auth.playback_allowed(
                target.token, target.stream, s.playback_token_secret):
            return
        # the API token opens every stream, as on the HTTP port
        if target.token and s.rest_auth_token and auth.api_token_ok(f"Bearer {target.token}", s.rest_auth_token):
            return
        digest = self.server.digest
        if digest is not None:
            verdict = digest.check(request.header("authorization"), request.method, request.url)
            if verdict == "ok":
                return
            raise RtspError(401, "authorization required",
                            {"WWW-Authenticate": digest.challenge(stale=verdict == "stale")})
        if s.playback_token_secret or s.rest_auth_token:
            raise RtspError(401 if not target.token else 403,
                            "a token is required (?token=)" if not target.token else "bad token")

    async def _setup(self, request: Request, target: Target) -> tuple[dict[str, str], str, str]:
        stream = self._stream(target)
        session = self.session
        given = request.header("session").split(";", 1)[0].strip()
        if given and (session is None or not hmac.compare_digest(given, session.id)):
            raise RtspError(454, "no such session")
        if session is not None and not given:
            raise RtspError(459, "one session per connection: SETUP with its Session header")
        if session is not None and session.viewer is not None:
            raise RtspError(455, "the session is playing")
        if session is not None and session.stream is not stream:
            raise RtspError(459, "a session plays one stream")
        if target.track not in TRACKS:
            raise RtspError(404, "SETUP needs a track URL (from DESCRIBE)")
        kind = TRACKS[target.track]
        if kind == "audio":
            if not (stream.has_audio and stream.audio_codec in AUDIO_RTP):
                raise RtspError(404, "no audio track")
            pt, clock, _ = AUDIO_RTP[str(stream.audio_codec)]
        else:
            if not stream.has_video:
                raise RtspError(404, "no video track")
            pt, clock = VIDEO_PT, 90000
        used = [c for t in (session.tracks.values() if session else []) if t.transport.tcp for c in t.transport.ports]
        transport = parse_transport(request.header("transport"), max(used, default=-1) + 1)
        if session is not None and session.tracks and any(t.transport.tcp != transport.tcp
                                                          for t in session.tracks.values()):
            raise RtspError(461, "all tracks of a session use one transport")
        if not transport.tcp and self.server.whep.engine.plain_ports is None:
            raise RtspError(461, "RTP over UDP is off")
        if transport.tcp and set(transport.ports) & set(used):
            raise RtspError(400, "interleaved channels already in use")
        if session is None:
            self._check_limits()
            session = Session(secrets.token_hex(8), stream)
            self.session = session
        session.tcp = transport.tcp
        track = Track(kind, pt, clock, secrets.randbits(32), secrets.randbits(15), transport)
        session.tracks[target.track] = track
        a, b = transport.ports
        if transport.tcp:
            reply = f"RTP/AVP/TCP;unicast;interleaved={a}-{b};ssrc={track.ssrc:08X}"
        else:
            ports = self.server.whep.engine.plain_ports
            assert ports is not None
            reply = (f"RTP/AVP;unicast;client_port={a}-{b};server_port={ports[0]}-{ports[1]};"
                     f"ssrc={track.ssrc:08X}")
        return {"Transport": reply, **self._session_header()}, "", ""

    def _check_limits(self) -> None:
        s = self.server.settings
        whep = self.server.whep
        if whep.viewer_count + self.server.pending() >= s.max_viewers:
            raise RtspError(503, f"max_viewers ({s.max_viewers}) reached", {"Retry-After": "10"})
        if s.max_viewers_per_client and self.server.sessions_of(self.client) >= s.max_viewers_per_client:
            raise RtspError(503, "max_viewers_per_client reached for this address", {"Retry-After": "10"})

    async def _play(self, request: Request, session: Session) -> tuple[dict[str, str], str, str]:
        if not session.tracks:
            raise RtspError(455, "no track set up")
        target = parse_url(request.url)
        if target.track is not None and len(session.tracks) > 1:
            raise RtspError(459, "PLAY the session's aggregate URL")
        base = request.url.split("?", 1)[0].rstrip("/")
        base = _TRACK_RE.sub("", base)
        # the tracks' control URLs exactly as DESCRIBE gave them (players match them)
        query = f"?token={target.token}" if target.token else ""
        info = ",".join(f"url={base}/trackID={i}{query};seq={t.seq}" for i, t in sorted(session.tracks.items()))
        headers = {"Range": "npt=now-", "RTP-Info": info, **self._session_header()}
        if session.viewer is not None:
            return headers, "", ""
        if session.stream.ended:
            raise RtspError(404, "the stream has ended")
        # the answer first, on our own; then the engine writes the connection
        cseq = request.header("cseq")
        self._respond(200, cseq, headers)
        await self.writer.drain()
        audio = next((t for t in session.tracks.values() if t.kind == "audio"), None)
        video = next((t for t in session.tracks.values() if t.kind == "video"), None)

        def plain(t: Track | None) -> tuple[int, int, int, int, int, int] | None:
            return None if t is None else (t.pt, t.clock, t.ssrc, t.seq, *t.transport.ports)

        kwargs: dict[str, Any] = {"audio": plain(audio), "video": plain(video)}
        if session.tcp:
            sock = self.writer.get_extra_info("socket")
            if sock is None:
                raise RtspError(500, "no socket")
            kwargs["tcp_fd"] = os.dup(sock.fileno())
            kwargs["max_backlog"] = self.server.settings.rtsp_tcp_max_backlog_bytes
        else:
            kwargs["client_ip"] = self.client
        try:
            session.viewer = self.server.whep.add_plain(session.stream, "rtsp", self._on_viewer_event, **kwargs)
        except ValueError as exc:
            log.info("RTSP %s: PLAY %s failed: %s", self.client, session.stream.name, exc)
            self.closing = True  # the 200 went out: end the connection
            raise _Answered() from None
        log.info("RTSP %s plays %s over %s (viewer %d)", self.client, session.stream.name,
                 "TCP" if session.tcp else "UDP", session.viewer)
        raise _Answered()

    def _on_viewer_event(self, kind: str, reason: str) -> None:
        if self.session is not None:
            log.info("RTSP %s: %s ended: %s", self.client, self.session.stream.name, reason)
            self.session.viewer = None
            self.session = None
        self.closing = True
        self.writer.close()

    async def _teardown(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        if session.viewer is not None:
            if session.tcp:
                # the engine may have left a frame half written: nothing more
                # of ours can go on this connection
                self.closing = True
            self.server.whep.stop_plain(session.viewer)
            session.viewer = None
        log.info("RTSP %s: TEARDOWN %s", self.client, session.stream.name)

    async def close(self) -> None:
        session, self.session = self.session, None
        if session is not None and session.viewer is not None:
            self.server.whep.stop_plain(session.viewer)
        self.closing = True
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class _Answered(Exception):
    """The response was already written."""


def _loggable(url: str) -> str:
    """A URL without its query (tokens are secrets)."""
    return url.split("?", 1)[0][:256]


class RtspServer:
    """The RTSP port: connections bounded in number, each with its session."""

    def __init__(self, gateway: Gateway, whep: WhepEndpoint, settings: Settings | None = None) -> None:
        self.gateway = gateway
        self.whep = whep
        self.settings = settings or gateway.settings
        s = self.settings
        self.digest = DigestAuth(s.rtsp_user, s.rtsp_password) if s.rtsp_auth else None
        self.connections: set[RtspConnection] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.settings.rtsp_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        s = self.settings
        self._server = await asyncio.start_server(self._accept, s.bind_ip, s.rtsp_port,
                                                  limit=s.rtsp_max_request_bytes + 1024)
        log.info("RTSP on rtsp://%s:%d/<stream>%s", s.ip, self.port, " (Digest auth)" if self.digest else "")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            await conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def pending(self) -> int:
        """Sessions set up and not playing yet (they count against max_viewers)."""
        return sum(1 for c in self.connections if c.session is not None and c.session.viewer is None)

    def sessions_of(self, client: str) -> int:
        return sum(1 for c in self.connections if c.client == client and c.session is not None)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= self.settings.rtsp_max_connections:
            writer.write(b"RTSP/1.0 503 Service Unavailable\r\nRetry-After: 10\r\nConnection: close\r\n\r\n")
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = RtspConnection(self, reader, writer)
        self.connections.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            if task is not None:
                self._tasks.discard(task)
