"""The HTTP API on one aiohttp app: WCS-compatible ``/rest-api/*``, WHEP
playback, the bundled player page, health, readiness, metrics, OpenAPI.

Conventions (SPEC.md §2): POST with ``application/json`` bodies parsed by
the models of ``api/models.py``; ``find_all`` also by GET; string booleans
and numbers accepted; CORS headers on every answer, Allow-Origin for the
allowed origins; 400/404/409/415/429/503 with ``{"error": ...}``; never 500
for bad input. The middleware also checks Host, Origin, the bearer token
and the rate limit."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import ValidationError

from ..egress.recorder import RecordingError, TooManyRecordings
from ..egress.rtmp import DuplicateRelay, RtmpRelays, TooManyRelays, rtmp_target, safe_url, validate_rtmp_url
from ..egress.snapshot import SnapshotError, snapshot_png
from ..egress.whep import WhepEndpoint
from ..gateway import AtCapacity, CallRequest, Conflict, Gateway, GatewayError, InvalidRequest, NotFound
from ..limits import fds_available_for_call
from ..settings import Settings, SettingsError
from . import auth, models
from .hooks import RestHooks
from .limits import RateLimiter
from .metrics import METRICS, metrics_page, observe_latency
from .openapi import ENDPOINT_ATTR, openapi_json

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Sent on every answer; Access-Control-Allow-Origin only to allowed origins
# (``cors_origins``), and never with Allow-Credentials: the API takes a
# bearer token, not cookies.
CORS = {
    "Access-Control-Allow-Methods": "GET, POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag",
}
# Methods that change something: refused from an origin that is not allowed.
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PUBLIC_PATHS = ("/player", "/console", "/health", "/ready", "/rest-api/openapi.json")

GATEWAY = web.AppKey("gateway", Gateway)
WHEP = web.AppKey("whep", WhepEndpoint)
RELAYS = web.AppKey("relays", RtmpRelays)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=CORS)


def _host_name(host: str) -> str:
    """The name of a ``Host`` header or an origin's authority, without the
    port (IPv6 brackets kept off), lower-cased."""
    if host.startswith("["):
        return host[1:].partition("]")[0].lower()
    return host.rpartition(":")[0].lower() if host.count(":") == 1 else host.lower()


def host_allowed(host: str, settings: Settings) -> bool:
    """DNS rebinding: a browser that was made to resolve an attacker's name
    to this server sends that name as Host. IP literals and ``localhost``
    cannot be rebound and are always accepted; names must be listed in
    ``allowed_hosts`` (``*``: any)."""
    allowed = settings.allowed_host_names
    name = _host_name(host)
    if "*" in allowed or name in allowed or name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return any(entry.startswith(".") and name.endswith(entry) for entry in allowed)
    return True


def origin_allowed(request: web.Request, origin: str, settings: Settings) -> bool:
    """The page's own origin (the bundled player), or one of ``cors_origins``."""
    allowed = settings.cors_origin_list
    if "*" in allowed or origin.lower() in allowed:
        return True
    parsed = urlsplit(origin)
    return bool(parsed.netloc) and parsed.netloc.lower() == request.host.lower()


@web.middleware
async def cors_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[GATEWAY].settings
    host = request.headers.get("Host")  # browsers always send it; only they can be rebound
    if host is not None and not host_allowed(host, settings):
        log.info("HTTP %s %s refused: Host %r is not in allowed_hosts", request.method, request.path,
                 host[:100])
        return error(400, "this Host is not served here (allowed_hosts)")
    origin = request.headers.get("Origin")
    cors = dict(CORS)
    if origin is not None:
        if origin_allowed(request, origin, settings):
            cors["Access-Control-Allow-Origin"] = "*" if "*" in settings.cors_origin_list else origin
        elif request.method in _UNSAFE_METHODS:
            log.info("HTTP %s %s refused: Origin %r is not in cors_origins", request.method, request.path,
                     origin[:100])
            return error(403, "requests from this Origin are not allowed (cors_origins)")
        cors["Vary"] = "Origin"
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=cors)
    limiter = request.app[RATE_LIMITER]
    client = request.remote or ""
    if request.path not in _PUBLIC_PATHS and not limiter.allow(client):
        refused = error(429, "too many requests from this address (rest_rate_limit)")
        refused.headers.update({**cors, "Retry-After": str(limiter.retry_after(client))})
        return refused
    response = await _authorized(request, handler, settings)
    response.headers.update(cors)
    return response


async def _authorized(request: web.Request, handler: Handler, settings: Settings) -> web.StreamResponse:
    # The player page is public (it holds no secret; it sends the token it is
    # given to WHEP and REST), so are the probes and the API's schema.
    if not _may(request, settings):
        response = error(401, "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="sipstream"'  # RFC 6750 §3
        return response
    try:
        return await handler(request)
    except GatewayError as exc:
        response = error(exc.http_status, str(exc))
        if isinstance(exc, AtCapacity):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    except ValidationError as exc:
        return error(400, validation_message(exc))
    except (SettingsError, ValueError) as exc:
        return error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            response = error(exc.status, exc.reason)
            if "Allow" in exc.headers:  # 405: the methods this path takes
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        # a defect of ours, not bad input: the one place that answers 500
        log.exception("HTTP %s %s failed", request.method, request.path)
        return error(500, "internal error")


def validation_message(exc: ValidationError) -> str:
    """pydantic's errors as one line that names each field."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        field = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            parts.append(f"missing field {field!r}")
        else:
            parts.append(f"field {field!r}: {message}")
    return "; ".join(parts)


def _may(request: web.Request, settings: Settings) -> bool:
    """The API token opens everything; on WHEP, a playback token for the
    stream does too, and with only ``playback_token_secret`` set WHEP needs one."""
    path = request.path
    if path in _PUBLIC_PATHS or path.startswith("/static"):
        return True
    authorization = request.headers.get("Authorization", "")
    if settings.rest_auth_token and auth.api_token_ok(authorization, settings.rest_auth_token):
        return True
    if path.startswith("/whep/") and settings.playback_token_secret:
        stream = request.match_info.get("stream", "")
        return auth.playback_allowed(auth.bearer(authorization), stream, settings.playback_token_secret)
    return not settings.rest_auth_token


class UnsupportedMediaType(GatewayError):
    http_status = 415


async def read_body(request: web.Request) -> bytes:
    """The whole body, sent within ``http_header_timeout_s`` (a slowly
    trickled body is a slowloris too)."""
    try:
        return await asyncio.wait_for(request.read(), request.app[GATEWAY].settings.http_header_timeout_s)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout(reason="the request body did not arrive in time") from None


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    if not raw.strip():
        return {}
    # CSRF: a web page can POST text/plain or a form anywhere without asking;
    # application/json needs a CORS preflight, which cors_origins answers.
    if request.content_type != "application/json":
        raise UnsupportedMediaType(f"the body must be application/json, not {request.content_type!r}")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("malformed JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


M = TypeVar("M", bound=models.Request)


@dataclass(frozen=True)
class Endpoint:
    """What the OpenAPI document says of a handler: its body and answers."""

    summary: str
    body: type[models.Request] | None
    returns: Any  # a response model, list[...] of one, or None for an empty 200
    errors: tuple[int, ...] = (400,)




def endpoint(summary: str, body: type[M] | None, returns: Any = None, errors: tuple[int, ...] = (400,)
             ) -> Callable[[Callable[[web.Request, M], Awaitable[web.StreamResponse]]], Handler]:
    """A REST handler whose JSON body is parsed into ``body`` (a 400 naming
    the field when it does not fit) and documented in OpenAPI."""
    def wrap(handler: Callable[[web.Request, M], Awaitable[web.StreamResponse]]) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await read_json(request) if request.method == "POST" else {}
            parsed = (body or models.Empty).model_validate(raw)
            return await handler(request, parsed)  # type: ignore[arg-type]

        setattr(handle, ENDPOINT_ATTR, Endpoint(summary, body, returns, errors))
        handle.__name__ = handler.__name__
        return handle
    return wrap


def ok_empty() -> web.Response:
    return web.Response(status=200, headers=CORS)


def answer(model: type[models.Response], value: Any) -> web.Response:
    """A JSON answer, through its response model: what OpenAPI says is sent."""
    return web.json_response(model.model_validate(value).model_dump(mode="json"))


def found(objects: list[Any], model: type[models.Response], not_found: str) -> web.Response:
    """WCS find answers: a JSON list of the objects, or 404 when there is none."""
    if not objects:
        raise NotFound(not_found)
    return web.json_response([model.model_validate(o if isinstance(o, dict) else o.to_json()
                                                   ).model_dump(mode="json") for o in objects])


def _bool(value: bool | None, default: bool) -> bool:
    return default if value is None else value


# ------------------------------------------------------------------ calls
@endpoint("Place a SIP call whose media becomes a stream", models.CallStartup, None, (400, 409, 503))
async def call_startup(request: web.Request, body: models.CallStartup) -> web.Response:
    call = CallRequest(
        callee=body.callee, to_stream=body.toStream, sip_login=body.sipLogin, sip_domain=body.sipDomain,
        sip_password=body.sipPassword or "", call_id=body.callId or "",
        sip_authentication_name=body.sipAuthenticationName or "",
        sip_outbound_proxy=body.sipOutboundProxy or "", sip_port=body.sipPort or 5060,
        has_audio=_bool(body.hasAudio, True), has_video=_bool(body.hasVideo, True),
        app_key=body.appKey or "", sip_register_required=_bool(body.sipRegisterRequired, False),
        visible_name=body.visibleName or "", rtmp_url=body.rtmpUrl or "", rtmp_stream=body.rtmpStream or "",
        sip_transport=body.sipTransport or "",
    )
    gateway = request.app[GATEWAY]
    relays = request.app[RELAYS]
    if call.rtmp_url:
        # "SIP as RTMP": the call is pushed to rtmpUrl/rtmpStream by itself.
        validate_rtmp_url(call.rtmp_url)
        call.rtmp_stream = call.rtmp_stream or call.to_stream
        call.validate()
        target = rtmp_target(call.rtmp_url, call.rtmp_stream)
        if any(c.request.rtmp_url and rtmp_target(c.request.rtmp_url, c.request.rtmp_stream) == target
               and not c.status.is_final for c in gateway.calls.values()):
            raise Conflict(f"a call already pushes to {safe_url(call.rtmp_url)} as {call.rtmp_stream!r}")
        if relays.full:
            raise AtCapacity(f"max_relays ({relays.max_relays}) relays are running")
    started = await gateway.start_call(call)
    if call.rtmp_url:
        started.rtmp_relay = relays.start(started.stream, target, full_url=True)
    return ok_empty()


@endpoint("Calls matching every given field", models.CallFind, list[models.CallInfo], (400, 404))
async def call_find(request: web.Request, body: models.CallFind) -> web.Response:
    calls = request.app[GATEWAY].find_calls(call_id=body.callId, callee=body.callee, status=body.status)
    return found(calls, models.CallInfo, "Call not found")


@endpoint("Every call (GET or POST)", None, list[models.CallInfo], (400, 404))
async def call_find_all(request: web.Request, body: models.Empty) -> web.Response:
    return found(request.app[GATEWAY].find_calls(), models.CallInfo, "Call not found")


@endpoint("Hang up: CANCEL before the answer, BYE after it", models.CallId, None, (400, 404))
async def call_terminate(request: web.Request, body: models.CallId) -> web.Response:
    await request.app[GATEWAY].terminate_call(body.callId)
    return ok_empty()


@endpoint("Put the far end on hold (re-INVITE a=sendonly)", models.CallId, None, (400, 404, 409, 503))
async def call_hold(request: web.Request, body: models.CallId) -> web.Response:
    await request.app[GATEWAY].hold_call(body.callId, True)
    return ok_empty()


@endpoint("Resume the far end (re-INVITE a=sendrecv)", models.CallId, None, (400, 404, 409, 503))
async def call_unhold(request: web.Request, body: models.CallId) -> web.Response:
    await request.app[GATEWAY].hold_call(body.callId, False)
    return ok_empty()


@endpoint("Send DTMF: RFC 4733 events or SIP INFO", models.SendDtmf, None, (400, 404, 409, 503))
async def call_send_dtmf(request: web.Request, body: models.SendDtmf) -> web.Response:
    await request.app[GATEWAY].send_dtmf(body.callId, body.dtmf, body.type or "RFC2833")
    return ok_empty()


# ---------------------------------------------------------------- streams
@endpoint("Streams matching every given field", models.StreamFind, list[models.StreamInfo], (400, 404))
async def stream_find(request: web.Request, body: models.StreamFind) -> web.Response:
    streams = request.app[GATEWAY].find_streams(name=body.name, media_session_id=body.mediaSessionId,
                                                published=body.published)
    return found(streams, models.StreamInfo, "Stream not found")


@endpoint("Every stream (GET or POST)", None, list[models.StreamInfo], (400, 404))
async def stream_find_all(request: web.Request, body: models.Empty) -> web.Response:
    return found(request.app[GATEWAY].find_streams(), models.StreamInfo, "Stream not found")


@endpoint("End a stream: its call is hung up", models.StreamRef, None, (400, 404))
async def stream_terminate(request: web.Request, body: models.StreamRef) -> web.Response:
    name = body.name or body.streamName
    if name is None and body.mediaSessionId is None:
        raise InvalidRequest("give 'name' or 'mediaSessionId'")
    await request.app[GATEWAY].terminate_stream(name, body.mediaSessionId)
    return ok_empty()


@endpoint("The stream's latest picture as a PNG", models.StreamRef, models.Snapshot, (400, 404, 409))
async def stream_snapshot(request: web.Request, body: models.StreamRef) -> web.Response:
    name = body.streamName or body.name
    if not name:
        raise InvalidRequest("missing field 'streamName'")
    stream = request.app[GATEWAY].live_stream(name)
    gop = stream.gop
    if not gop:
        raise Conflict(f"stream {name!r} has no picture yet")
    try:
        png, _, _ = await asyncio.get_running_loop().run_in_executor(None, snapshot_png, gop)
    except SnapshotError as exc:
        raise Conflict(f"stream {name!r}: {exc}") from None
    return answer(models.Snapshot, {"data": base64.b64encode(png).decode("ascii")})


# --------------------------------------------------------------- recorder
def _recorded_stream(request: web.Request, body: models.StreamRef) -> Any:
    name = body.streamName or body.name
    if body.mediaSessionId is None and name is None:
        raise InvalidRequest("give 'mediaSessionId' or 'streamName'")
    streams = [s for s in request.app[GATEWAY].find_streams(name, body.mediaSessionId) if not s.ended]
    if not streams:
        raise NotFound("Stream not found")
    return streams[0]


@endpoint("Record a stream to fMP4 files", models.RecorderStartup, None, (400, 404, 503))
async def recorder_startup(request: web.Request, body: models.RecorderStartup) -> web.Response:
    stream = _recorded_stream(request, body)
    config = body.config or models.RecorderConfig()
    recorders = request.app[GATEWAY].recorders
    try:
        template = config.fileTemplate or body.fileName
        record_config = recorders.config(template, config.rotation)
    except RecordingError as exc:
        raise InvalidRequest(str(exc)) from None
    try:
        await recorders.start(stream, record_config)
    except TooManyRecordings as exc:
        raise AtCapacity(str(exc)) from None
    return ok_empty()


@endpoint("Stop a stream's recording (its files are finished)", models.StreamRef, None, (400, 404))
async def recorder_terminate(request: web.Request, body: models.StreamRef) -> web.Response:
    recorders = request.app[GATEWAY].recorders
    msid = body.mediaSessionId or _recorded_stream(request, body).media_session_id
    if not await recorders.stop(msid):
        raise NotFound(f"no recording of mediaSessionId {msid!r}")
    return ok_empty()


@endpoint("Every recording running (GET or POST)", None, list[models.RecordingInfo], (400, 404))
async def recorder_find_all(request: web.Request, body: models.Empty) -> web.Response:
    return found(request.app[GATEWAY].recorders.find_all(), models.RecordingInfo, "Not found any recorder")


# ------------------------------------------------------------------- push
@endpoint("Relay a stream to an RTMP server", models.PushStartup, models.RelayInfo, (400, 404, 409, 503))
async def push_startup(request: web.Request, body: models.PushStartup) -> web.Response:
    validate_rtmp_url(body.rtmpUrl)
    stream = request.app[GATEWAY].live_stream(body.streamName)
    muted = body.options is not None and body.options.action == "mute"
    try:
        relay = request.app[RELAYS].start(stream, body.rtmpUrl,
                                          full_url=_bool(body.rtmpTransponderFullUrl, False), muted=muted)
    except DuplicateRelay as exc:
        raise Conflict(str(exc)) from None
    except TooManyRelays as exc:
        raise AtCapacity(str(exc)) from None
    return answer(models.RelayInfo, relay.to_json())


@endpoint("Relays matching every given field", models.PushFind, list[models.RelayInfo], (400, 404))
async def push_find(request: web.Request, body: models.PushFind) -> web.Response:
    return found(request.app[RELAYS].find(body.streamName, body.rtmpUrl), models.RelayInfo,
                 "Transponder not found")


@endpoint("Every relay (GET or POST)", None, list[models.RelayInfo], (400, 404))
async def push_find_all(request: web.Request, body: models.Empty) -> web.Response:
    return found(request.app[RELAYS].find(), models.RelayInfo, "Not found any transponder")


def _relay(request: web.Request, body: models.MediaSessionId) -> Any:
    relay = request.app[RELAYS].get(body.mediaSessionId)
    if relay is None:
        raise NotFound(f"transponder {body.mediaSessionId!r} not found")
    return relay


@endpoint("Stop a relay", models.MediaSessionId, None, (400, 404))
async def push_terminate(request: web.Request, body: models.MediaSessionId) -> web.Response:
    relay = _relay(request, body)
    await request.app[RELAYS].stop(relay.media_session_id)
    return ok_empty()


@endpoint("Mute a relay's audio", models.MediaSessionId, None, (400, 404))
async def push_mute(request: web.Request, body: models.MediaSessionId) -> web.Response:
    _relay(request, body).muted = True
    return ok_empty()


@endpoint("Unmute a relay's audio", models.MediaSessionId, None, (400, 404))
async def push_unmute(request: web.Request, body: models.MediaSessionId) -> web.Response:
    _relay(request, body).muted = False
    return ok_empty()


# ------------------------------------------------------------------- WHEP
async def whep_offer(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    name = request.match_info["stream"]
    if request.content_type != "application/sdp":
        return error(415, "WHEP offers must be application/sdp")
    raw = await read_body(request)
    if len(raw) > gateway.settings.max_body_bytes:
        return error(413, "SDP offer too large")
    offer = raw.decode("utf-8", "replace")
    if "v=0" not in offer:
        raise InvalidRequest("the body is not an SDP offer")
    stream = gateway.live_stream(name)
    try:
        session_id, answer = await request.app[WHEP].play(stream, offer, request.remote or "")
    except OverflowError as exc:
        raise AtCapacity(str(exc)) from None
    except ValueError as exc:
        raise InvalidRequest(f"cannot answer the offer: {exc}") from None
    location = f"/whep/{name}/{session_id}"
    return web.Response(status=201, text=answer, content_type="application/sdp",
                        headers={"Location": location, "ETag": f'"{session_id}"'})


async def whep_delete(request: web.Request) -> web.Response:
    if not await request.app[WHEP].stop(request.match_info["session"]):
        raise NotFound("WHEP session not found")
    return ok_empty()


async def whep_stats(request: web.Request) -> web.Response:
    stats = request.app[WHEP].session_stats(request.match_info["session"])
    if stats is None:
        raise NotFound("WHEP session not found")
    return web.json_response(stats)


async def whep_patch(request: web.Request) -> web.Response:
    # Trickle ICE is not needed: our answer carries its candidates.
    return error(405, "trickle ICE is not supported; send a complete offer")


# ------------------------------------------------------------------ pages
def _page(request: web.Request, name: str) -> web.Response:
    """A bundled page, told the server's playback ports (0: off)."""
    s = request.app[GATEWAY].settings
    config = {"wsPort": s.ws_port, "wssPort": s.wss_port if s.wss_cert else 0, "hlsPort": s.hls_port}
    page = resources.files("sipstream.api").joinpath(name).read_text(encoding="utf-8")
    return web.Response(text=page.replace("__SIPSTREAM_CONFIG__", json.dumps(config)), content_type="text/html")


async def player(request: web.Request) -> web.Response:
    return _page(request, "player.html")


async def console(request: web.Request) -> web.Response:
    return _page(request, "console.html")


@endpoint("Liveness and counts", None, models.Health, ())
async def health(request: web.Request, body: models.Empty) -> web.Response:
    gateway = request.app[GATEWAY]
    return answer(models.Health, {
        "status": "ok",
        "calls": sum(1 for c in gateway.calls.values() if not c.status.is_final),
        "streams": sum(1 for s in gateway.streams.values() if not s.ended),
        "viewers": len(request.app[WHEP].sessions),
        # the WebRTC engine's counters and RTP socket → viewer socket latency (µs)
        "webrtc": request.app[WHEP].stats(),
    })


async def ready(request: web.Request) -> web.Response:
    """Readiness (for a load balancer or Kubernetes): the SIP transports are
    up, a call could get media ports and fds. 503 with the failed checks."""
    gateway = request.app[GATEWAY]
    checks = {
        "sip": gateway.ua is not None,
        "media_ports": gateway.ports.in_use < (gateway.ports.last - gateway.ports.first + 1) // 4,
        "file_descriptors": fds_available_for_call(),
        "accepting_calls": not gateway.closing,
    }
    ok = all(checks.values())
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


def create_app(gateway: Gateway, whep: WhepEndpoint | None = None,
               relays: RtmpRelays | None = None, hooks: RestHooks | None = None) -> web.Application:
    app = web.Application(middlewares=[observe_latency, cors_and_errors],
                          client_max_size=gateway.settings.max_body_bytes)
    app[GATEWAY] = gateway
    app[WHEP] = whep or WhepEndpoint(gateway.settings.ip, gateway.settings.max_viewers, 0, gateway.settings.bind_ip)
    app[RELAYS] = relays or RtmpRelays(max_relays=gateway.settings.max_relays)
    app[METRICS] = gateway.metrics
    s = gateway.settings
    app[RATE_LIMITER] = RateLimiter(s.rest_rate_limit, s.rest_rate_burst)
    gateway.metrics.attach(gateway, app[WHEP], app[RELAYS], hooks)
    api = "/rest-api"
    app.router.add_post(f"{api}/call/startup", call_startup)
    app.router.add_post(f"{api}/call/find", call_find)
    app.router.add_get(f"{api}/call/find_all", call_find_all)
    app.router.add_post(f"{api}/call/find_all", call_find_all)
    app.router.add_post(f"{api}/call/terminate", call_terminate)
    app.router.add_post(f"{api}/call/hold", call_hold)
    app.router.add_post(f"{api}/call/unhold", call_unhold)
    app.router.add_post(f"{api}/call/send_dtmf", call_send_dtmf)
    app.router.add_post(f"{api}/stream/find", stream_find)
    app.router.add_get(f"{api}/stream/find_all", stream_find_all)
    app.router.add_post(f"{api}/stream/find_all", stream_find_all)
    app.router.add_post(f"{api}/stream/terminate", stream_terminate)
    app.router.add_post(f"{api}/stream/snapshot", stream_snapshot)
    app.router.add_post(f"{api}/recorder/startup", recorder_startup)
    app.router.add_post(f"{api}/stream/startRecording", recorder_startup)
    app.router.add_post(f"{api}/recorder/terminate", recorder_terminate)
    app.router.add_post(f"{api}/stream/stopRecording", recorder_terminate)
    app.router.add_get(f"{api}/recorder/find_all", recorder_find_all)
    app.router.add_post(f"{api}/recorder/find_all", recorder_find_all)
    app.router.add_post(f"{api}/push/startup", push_startup)
    app.router.add_post(f"{api}/push/find", push_find)
    app.router.add_get(f"{api}/push/find_all", push_find_all)
    app.router.add_post(f"{api}/push/find_all", push_find_all)
    app.router.add_post(f"{api}/push/terminate", push_terminate)
    app.router.add_post(f"{api}/push/mute", push_mute)
    app.router.add_post(f"{api}/push/unmute", push_unmute)
    app.router.add_post("/whep/{stream}", whep_offer)
    app.router.add_delete("/whep/{stream}/{session}", whep_delete)
    app.router.add_get("/whep/{stream}/{session}", whep_stats)
    app.router.add_patch("/whep/{stream}/{session}", whep_patch)
    app.router.add_get("/player", player)
    app.router.add_get("/console", console)
    app.router.add_get(f"{api}/openapi.json", openapi_json)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_page)

    async def close_whep(app: web.Application) -> None:
        await app[WHEP].close()
        await app[RELAYS].close()

    app.on_shutdown.append(close_whep)
    return app
