"""The gateway: SIP calls in, named streams out. This is the library's main
object; the REST server and the CLI are thin layers over it.

    gateway = Gateway(Settings(ip="127.0.0.1"))
    await gateway.start()
    call = await gateway.start_call(CallRequest(callee="bob", to_stream="s1", ...))
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from .api.metrics import Metrics
from .egress.recorder import Recorders, TooManyRecordings
from .egress.rtmp import safe_url
from .limits import OutOfFileDescriptors, check_fds_for_call, raise_nofile_limit
from .logs import set_call_context
from .media.negotiation import NegotiationError, build_offer, offered_payload_types, parse_answer
from .media.ports import PortAllocator, PortRangeExhausted
from .media.rtp import DTMF_DIGITS, RtpSession
from .media.stream import Stream
from .settings import Settings
from .sip import grammar
from .sip.account import SipAccount
from .sip.call import NORMAL_CLEARING, RTP_ACTIVITY, CallStatus, OutgoingCall
from .sip.transport import SipTransport, TransactionTimeout, TransportError
from .sip.useragent import SipFailure, UserAgent

log = logging.getLogger(__name__)


MAX_DTMF_DIGITS = 64  # one /call/send_dtmf: about 10 s of RFC 4733 events


class GatewayError(Exception):
    """Base of the errors the API maps to HTTP codes."""

    http_status = 400


class InvalidRequest(GatewayError):
    http_status = 400


class NotFound(GatewayError):
    http_status = 404


class Conflict(GatewayError):
    http_status = 409


class Unavailable(GatewayError):
    http_status = 503


class AtCapacity(Unavailable):
    """A limit is reached (calls, ports, fds, viewers, relays): try again later."""

    retry_after_s = 5


_STREAM_NAME_FORBIDDEN = set('/\\?#%"<>')


def check_stream_name(name: str, field: str = "streamName") -> str:
    """A stream name goes into URLs (WHEP, RTMP), file names and hook script
    arguments: printable, without ``/ \\ ? # % " < >``, without space at
    either end, not starting with ``-``."""
    grammar.check_text(name, field, 256)
    if (not name or name != name.strip() or name.startswith("-")
            or any(c in _STREAM_NAME_FORBIDDEN for c in name)):
        # "-" first would read as an option to a hook script given the name
        raise ValueError(f"{field} must be printable text without / \\ ? # % \" < >, "
                         f"space at either end or '-' first, got {name!r}")
    return name


@dataclasses.dataclass
class CallRequest:
    """The fields of ``/call/startup`` (WCS names in comments)."""

    callee: str
    to_stream: str  # toStream
    sip_login: str  # sipLogin
    sip_domain: str  # sipDomain
    sip_password: str = dataclasses.field(default="", repr=False)  # sipPassword
    call_id: str = ""  # callId
    sip_authentication_name: str = ""
    sip_outbound_proxy: str = ""
    sip_port: int = 5060
    has_audio: bool = True
    has_video: bool = True
    app_key: str = ""
    sip_register_required: bool = False
    visible_name: str = ""
    rtmp_url: str = ""
    rtmp_stream: str = ""
    sip_transport: str = ""  # sipTransport: UDP | TCP (else from the proxy URI)

    def validate(self) -> None:
        """Every field's characters, length and syntax (``InvalidRequest``):
        nothing that could fail later, inside the call, or change the SIP
        messages built from it."""
        try:
            grammar.check_callee(self.callee)
            check_stream_name(self.to_stream, "toStream")
            grammar.check_user(self.sip_login, "sipLogin")
            grammar.check_hostport(self.sip_domain, "sipDomain")
            grammar.check_text(self.sip_password, "sipPassword", 256)
            grammar.check_text(self.call_id, "callId", 128)
            grammar.check_text(self.sip_authentication_name, "sipAuthenticationName", grammar.MAX_USER)
            if any(c in self.sip_authentication_name for c in '"\\'):
                raise ValueError("sipAuthenticationName may not hold '\"' or '\\'")
            if self.sip_outbound_proxy:
                grammar.check_proxy(self.sip_outbound_proxy)
            grammar.check_text(self.visible_name, "visibleName", 128)
            grammar.check_text(self.app_key, "appKey", 128)
            grammar.check_text(self.rtmp_url, "rtmpUrl", 1024)
            if self.rtmp_stream:
                check_stream_name(self.rtmp_stream, "rtmpStream")
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        if self.sip_transport.upper() not in ("", "UDP", "TCP"):
            raise InvalidRequest(f"sipTransport must be UDP or TCP, got {self.sip_transport!r}")

    def account(self) -> SipAccount:
        return SipAccount(
            login=self.sip_login, domain=self.sip_domain, password=self.sip_password,
            auth_name=self.sip_authentication_name, outbound_proxy=self.sip_outbound_proxy,
            port=self.sip_port, visible_name=self.visible_name, register_required=self.sip_register_required,
            transport=self.sip_transport.upper(),
        )


@dataclasses.dataclass(frozen=True)
class CallEvent:
    """A call's status changed (the WCS ``CallStatusEvent``)."""

    call_id: str
    status: CallStatus
    info: str
    call: dict[str, Any]
    app_key: str = ""
    name = "CallStatusEvent"

    @property
    def payload(self) -> dict[str, Any]:
        return self.call


@dataclasses.dataclass(frozen=True)
class StreamEvent:
    """A stream's status or picture size changed (the WCS ``StreamStatusEvent``)."""

    stream_name: str
    status: str
    stream: dict[str, Any]
    app_key: str = ""
    name = "StreamStatusEvent"

    @property
    def payload(self) -> dict[str, Any]:
        return self.stream


Event = CallEvent | StreamEvent


class Call:
    """A call as the API shows it: the SIP call, its media and its stream."""

    def __init__(self, request: CallRequest, stream: Stream) -> None:
        self.request = request
        self.call_id = request.call_id
        self.stream = stream
        self.status = CallStatus.PENDING
        self.sip_status: int | None = None
        self.info = ""
        self.start_time = time.time()
        self.end_time: float | None = None
        self.sip: OutgoingCall | None = None
        self.media: RtpSession | None = None
        self.task: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()
        self.rtmp_relay: Any = None  # "SIP as RTMP": the relay started with the call

    @property
    def log_fields(self) -> dict[str, str]:
        """``extra`` for a log line about this call from outside its tasks."""
        return {"call_id": self.call_id, "stream": self.stream.name}

    def to_json(self) -> dict[str, Any]:
        r = self.request
        media = self.media
        return {
            "callId": self.call_id,
            "status": self.status.value,
            "sipStatus": self.sip_status,
            "info": self.info,
            "incoming": False,
            "caller": r.sip_login,
            "callee": r.callee,
            "visibleName": r.visible_name or None,
            "streamName": r.to_stream,
            "hasAudio": r.has_audio,
            "hasVideo": r.has_video,
            "appKey": r.app_key or None,
            "rtmpUrl": safe_url(r.rtmp_url) if r.rtmp_url else None,
            "rtmpStream": r.rtmp_stream or None,
            "rtmpStreamStatus": self.rtmp_relay.status if self.rtmp_relay is not None else None,
            "custom": {},
            "nodeId": None,
            "sessionId": None,
            "parentCallId": None,
            "sdp": None,
            "inviteParameters": None,
            "mediaProvider": "SIP",
            "sipMessageRaw": None,
            "isMsrp": False,
            "target": None,
            "holdForTransfer": False,
            "startTime": int(self.start_time * 1000),
            "audioCodec": self.stream.audio_codec,
            "videoCodec": self.stream.video_codec,
            "stats": media.stats() if media is not None else {},
        }


class Gateway:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.calls: dict[str, Call] = {}
        self.streams: dict[str, Stream] = {}
        self.ua: UserAgent | None = None
        self.ports = PortAllocator(self.settings.media_port_from, self.settings.media_port_to,
                                   self.settings.bind_ip)
        s = self.settings
        self.recorders = Recorders(s.record_dir, s.stream_record_policy_template, s.record_rotation,
                                   s.record_audio_codec, s.on_record_hook_script, s.max_recorders)
        self.metrics = Metrics()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listeners: list[asyncio.Queue[Event]] = []
        self._closing = False

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        log.info("open files limit: %d", raise_nofile_limit())
        transport = await SipTransport.open(
            s.bind_ip, s.sip_port, s.sip_t1_ms / 1000, s.sip_transaction_timeout_s,
            max_tcp_connections=s.sip_tcp_max_connections, tcp_first_message_timeout=s.sip_tcp_message_timeout_s,
            tcp_message_timeout=s.sip_tcp_message_timeout_s, tcp_idle_timeout=s.sip_tcp_idle_timeout_s)
        self.ua = UserAgent(transport, s.ip, s.sip_register_expires)
        log.info("SIP on %s:%d (UDP and TCP)", transport.local_address.host, transport.local_address.port)

    async def stop(self, timeout: float | None = None) -> None:
        """Hang up every live call, finish the recordings, then close the SIP
        socket, all within ``timeout`` (``shutdown_timeout_s``). A far end
        that does not answer its BYE or CANCEL costs no more than half of it:
        the call is over for us either way, and recordings are finished with
        what they have."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.settings.shutdown_timeout_s if timeout is None else timeout)
        self._closing = True
        live = [c for c in self.calls.values() if not c.status.is_final]
        hangups = [self._spawn(self._hangup(c)) for c in live]
        if hangups:
            await asyncio.wait(hangups, timeout=max(0.0, (deadline - loop.time()) / 2))
        for call in live:
            if not call.status.is_final:
                self._on_status(call, CallStatus.FINISH, None, "Server shutdown")
        for call in list(self.calls.values()):
            self._end_media(call)
        await self.recorders.close(grace_s=max(0.1, (deadline - loop.time()) / 2))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ua is not None:
            ua, self.ua = self.ua, None
            await ua.close(timeout=max(0.1, deadline - loop.time()))

    @property
    def closing(self) -> bool:
        return self._closing

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- calls
    async def start_call(self, request: CallRequest) -> Call:
        """Validate and start placing the call; returns at once."""
        if self.ua is None or self._closing:
            raise Unavailable("gateway is not running")
        request.validate()
        if not request.call_id:
            request.call_id = secrets.token_hex(8)
        if request.call_id in self.calls:
            raise Conflict(f"callId {request.call_id!r} already exists")
        existing = self.streams.get(request.to_stream)
        if existing is not None and not existing.ended:
            raise Conflict(f"stream {request.to_stream!r} is in use")
        if not request.has_audio and not request.has_video:
            raise InvalidRequest("hasAudio and hasVideo are both false: nothing to stream")
        if sum(1 for c in self.calls.values() if not c.status.is_final) >= self.settings.max_calls:
            raise AtCapacity(f"max_calls ({self.settings.max_calls}) reached")
        try:
            check_fds_for_call()
            sockets = self.ports.allocate()
        except (PortRangeExhausted, OutOfFileDescriptors) as exc:
            raise AtCapacity(str(exc)) from None
        stream = Stream(request.to_stream, request.has_audio, request.has_video,
                        self.settings.keyframe_request_interval_ms / 1000)
        call = Call(request, stream)
        stream.media_stats = lambda: call.media.stats() if call.media is not None else {}
        stream.on_change = lambda changed: self._publish(
            StreamEvent(changed.name, changed.status, changed.to_json(), request.app_key)
        )
        call.media = RtpSession(sockets, stream, self.settings.rtp_receive_buffer_size,
                                self.settings.rtp_send_buffer_size, jitter_buffer=self.settings.rtp_in_buffer,
                                generate_after_ms=self.settings.generate_av_start_delay or None)
        self.calls[call.call_id] = call
        self.streams[stream.name] = stream
        if self.settings.sip_record_stream:
            try:
                await self.recorders.start(stream, self.recorders.config(login=request.sip_login))
            except TooManyRecordings as exc:
                log.warning("call %s is not recorded: %s", request.call_id, exc)
        call.task = self._spawn(self._run_call(call))
        log.info("call %s: %s -> %s as stream %s", call.call_id, request.sip_login, request.callee, stream.name,
                 extra=call.log_fields)
        return call

    async def _run_call(self, call: Call) -> None:
        """Place the call. Whatever it raises, the call ends in a final
        status and gives back its ports, fds and stream name."""
        set_call_context(call.call_id, call.stream.name)  # on every log line of this call's tasks
        try:
            await self._place_call(call)
        except asyncio.CancelledError:
            self._fail_unexpectedly(call, "Failed by error: cancelled")
            raise
        except Exception as exc:
            log.exception("call %s: failed by an unexpected error", call.call_id)
            self._fail_unexpectedly(call, f"Failed by error: {type(exc).__name__}")

    def _fail_unexpectedly(self, call: Call, info: str) -> None:
        if call.status.is_final:
            return
        if call.sip is not None and not call.sip.ended:
            # a dialog may exist: end it in the background, the call is over here
            self._spawn(call.sip.hangup(info, CallStatus.FAILED))
        self._on_status(call, CallStatus.FAILED, None, info)

    async def _place_call(self, call: Call) -> None:
        assert self.ua is not None and call.media is not None
        media = call.media
        r = call.request
        try:
            offer = build_offer(self.settings.ip, media.audio_port if r.has_audio else None,
                                media.video_port if r.has_video else None, self.settings.codecs)
            offered = offered_payload_types(offer)
            media.offered = offered
            await media.start()
        except (NegotiationError, OSError, ValueError) as exc:
            self._on_status(call, CallStatus.FAILED, None, f"Failed by session creation: {exc}")
            return

        def on_remote_sdp(sdp: str, early: bool) -> None:
            try:
                negotiated = parse_answer(sdp)
            except NegotiationError as exc:
                log.info("call %s: %s", call.call_id, exc)
                call.info = "No common codecs"
                if call.sip is not None:
                    self._spawn(call.sip.hangup("No common codecs"))
                return
            media.configure(negotiated, negotiated.payload_types(offered))
            if negotiated.audio is not None:
                call.stream.audio_codec = negotiated.audio.main_codec.name
            if negotiated.video is not None:
                call.stream.video_codec = negotiated.video.main_codec.name

        call.sip = OutgoingCall(
            self.ua, r.account(), r.callee, offer.to_string(),
            on_status=lambda status, sip_status, info: self._on_status(call, status, sip_status, info),
            on_remote_sdp=on_remote_sdp,
            invite_timeout=self.settings.sip_invite_timeout_s,
            session_expires=self.settings.sip_session_expires_s,
            min_se=self.settings.sip_min_se_s,
        )
        media.on_keyframe_info = call.sip.request_picture_fast_update
        await call.sip.run()
        if call.sip.status.is_connected:
            if self.settings.rtp_session_init_always:
                media.send_initial_packets()
            self._spawn(self._watch_media(call))

    async def _watch_media(self, call: Call) -> None:
        """Hang up a call whose RTP stopped (not while on hold); ask for
        keyframes periodically when ``periodic_fir_request`` is set."""
        assert call.media is not None and call.sip is not None
        timeout = self.settings.rtp_activity_timeout_s
        fir_every = self.settings.periodic_fir_request
        tick = 1.0 if not timeout else min(1.0, timeout / 4)
        seen, quiet_since = call.media.packets_received, time.monotonic()
        last_fir = time.monotonic()
        while not call.status.is_final:
            await asyncio.sleep(tick)
            now = time.monotonic()
            packets = call.media.packets_received
            if packets != seen or call.status != CallStatus.ESTABLISHED:
                seen, quiet_since = packets, now
            elif timeout and now - quiet_since >= timeout:
                log.info("call %s: no RTP for %.0f s", call.call_id, timeout)
                await call.sip.hangup(RTP_ACTIVITY, CallStatus.FAILED)
                return
            if fir_every and now - last_fir >= fir_every and call.stream.has_video:
                last_fir = now
                call.media.request_keyframe()

    def _on_status(self, call: Call, status: CallStatus, sip_status: int | None, info: str) -> None:
        if call.status.is_final:
            return
        if status == CallStatus.FINISH and call.info == "No common codecs":
            status, info = CallStatus.FAILED, call.info
        if status == CallStatus.ESTABLISHED and not call.status.is_connected:
            self.metrics.call_setup.observe(time.time() - call.start_time)
        call.status = status
        if sip_status is not None:
            call.sip_status = sip_status
        call.info = info
        log.info("call %s: %s%s", call.call_id, status.value, f" ({info})" if info else "", extra=call.log_fields)
        if status.is_final:
            self.metrics.call_ended(status.value, info, call.media.stats() if call.media is not None else {})
            call.end_time = time.time()
            self._end_media(call)
            call.ended.set()
            self._spawn(self._forget_later(call))
        self._emit(call)

    def _end_media(self, call: Call) -> None:
        if call.media is not None:
            self.ports.release(call.media.base_port)
            call.media.close()
        if not call.stream.ended:
            failed = call.status in (CallStatus.FAILED, CallStatus.BUSY)
            call.stream.close("FAILED" if failed else "UNPUBLISHED", call.info)

    async def _forget_later(self, call: Call) -> None:
        await asyncio.sleep(self.settings.call_keep_finished_s)
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        if self.streams.get(call.stream.name) is call.stream:
            del self.streams[call.stream.name]

    async def terminate_call(self, call_id: str) -> None:
        """Start hanging up; the call reaches FINISH when the far end confirms."""
        call = self.calls.get(call_id)
        if call is None or call.status.is_final:
            raise NotFound(f"call {call_id!r} not found")
        self._spawn(self._hangup(call))

    async def _hangup(self, call: Call) -> None:
        if call.sip is not None:
            await call.sip.hangup(NORMAL_CLEARING)
        else:
            self._on_status(call, CallStatus.FINISH, None, NORMAL_CLEARING)

    def _connected_call(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None or call.status.is_final:
            raise NotFound(f"call {call_id!r} not found")
        if call.sip is None or not call.status.is_connected:
            raise Conflict(f"call {call_id!r} is {call.status.value}, not established")
        return call

    async def hold_call(self, call_id: str, hold: bool = True) -> None:
        """re-INVITE with a=sendonly (hold) or a=sendrecv (resume)."""
        call = self._connected_call(call_id)
        assert call.sip is not None
        try:
            await call.sip.set_hold(hold)
        except (SipFailure, TransactionTimeout, TransportError) as exc:
            raise Unavailable(f"call {call_id!r}: {'hold' if hold else 'unhold'} failed: {exc}") from None

    async def send_dtmf(self, call_id: str, digits: str, kind: str = "RFC2833") -> None:
        """DTMF as RFC 4733 events on the media (``RFC2833``) or SIP INFO
        application/dtmf-relay (``INFO``)."""
        if len(digits) > MAX_DTMF_DIGITS:
            raise InvalidRequest(f"dtmf: at most {MAX_DTMF_DIGITS} digits at a time")
        if not digits or any(d.upper() not in DTMF_DIGITS for d in digits):
            raise InvalidRequest(f"dtmf must be digits from 0-9, *, #, A-D; got {digits!r}")
        kind = (kind or "RFC2833").upper()
        if kind not in ("RFC2833", "INFO", "INFO_RELAY"):
            raise InvalidRequest(f"type must be RFC2833 or INFO, got {kind!r}")
        call = self._connected_call(call_id)
        assert call.sip is not None and call.media is not None
        if kind == "RFC2833":
            try:
                await call.media.send_dtmf(digits)
            except ValueError as exc:
                raise Conflict(f"call {call_id!r}: {exc}") from None
            return
        for digit in digits:
            if call.status.is_final:
                return
            try:
                await call.sip.send_info("application/dtmf-relay", f"Signal={digit.upper()}\r\nDuration=160\r\n")
            except (SipFailure, TransactionTimeout, TransportError) as exc:
                raise Unavailable(f"call {call_id!r}: INFO failed: {exc}") from None

    def find_calls(self, call_id: str | None = None, callee: str | None = None,
                   status: str | None = None) -> list[Call]:
        return [
            c for c in self.calls.values()
            if (call_id is None or c.call_id == call_id)
            and (callee is None or c.request.callee == callee)
            and (status is None or c.status.value == status)
        ]

    # --------------------------------------------------------------- streams
    def find_streams(self, name: str | None = None, media_session_id: str | None = None,
                     published: bool | None = None) -> list[Stream]:
        return [
            s for s in self.streams.values()
            if (name is None or s.name == name)
            and (media_session_id is None or s.media_session_id == media_session_id)
            and (published is None or published is True)
        ]

    def live_stream(self, name: str) -> Stream:
        stream = self.streams.get(name)
        if stream is None or stream.ended:
            raise NotFound(f"stream {name!r} not found")
        return stream

    async def terminate_stream(self, name: str | None, media_session_id: str | None) -> None:
        matches = [s for s in self.find_streams(name, media_session_id) if not s.ended]
        if not matches:
            raise NotFound("stream not found")
        for stream in matches:
            for call in self.calls.values():
                if call.stream is stream and not call.status.is_final:
                    self._spawn(self._hangup(call))

    # ---------------------------------------------------------------- events
    def _emit(self, call: Call) -> None:
        self._publish(CallEvent(call.call_id, call.status, call.info, call.to_json(), call.request.app_key))

    def _publish(self, event: Event) -> None:
        for queue in self._listeners:
            if queue.full():
                queue.get_nowait()  # a listener that stopped reading loses the oldest
            queue.put_nowait(event)

    def events(self) -> AsyncIterator[Event]:
        """Every call and stream status change from now on (subscribed at
        once, not at the first iteration)."""
        queue: asyncio.Queue[Event] = asyncio.Queue(1000)
        self._listeners.append(queue)
        return self._drain(queue)

    async def _drain(self, queue: asyncio.Queue[Event]) -> AsyncIterator[Event]:
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.remove(queue)

    def call_events(self, call_id: str) -> AsyncIterator[Event]:
        """The events of one call (its CallStatusEvents and its stream's
        StreamStatusEvents) from now on, ending after its final status."""
        return self._one_call(self.events(), call_id)

    async def _one_call(self, events: AsyncIterator[Event], call_id: str) -> AsyncIterator[Event]:
        async for event in events:
            if isinstance(event, CallEvent):
                if event.call_id == call_id:
                    yield event
                    if event.status.is_final:
                        return
            else:
                call = self.calls.get(call_id)
                if call is not None and call.stream.name == event.stream_name:
                    yield event
