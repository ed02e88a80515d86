"""REST hooks: every call and stream status change POSTed as JSON to the
application bound to the event's appKey (WCS "REST hooks", SPEC.md §2).

    hooks = RestHooks(gateway)
    await hooks.start()
    ...
    await hooks.close()

Rules:

* URL: ``settings.apps[appKey]`` + ``/`` + the event name, e.g.
  ``http://127.0.0.1:8081/apps/EchoApp/CallStatusEvent``. An empty appKey
  uses the ``defaultApp`` mapping when there is one; an appKey with no mapping
  sends nothing. The body is the event's Call or Stream object.
* The events of one call (its ``CallStatusEvent``\\ s and its stream's
  ``StreamStatusEvent``\\ s) are POSTed one after the other, in the order they
  happened; different calls go concurrently, at most ``rest_max_connections``
  POSTs at once.
* Each POST gets ``rest_hook_timeout_s`` in all. Refused, unreachable,
  timed out or non-2xx: counted in ``failed``, logged as a warning with the
  URL and the reason (at most one warning per app per 10 s), and the next
  event goes on. Nothing waits for a hook: the gateway only enqueues.
* At most ``rest_hook_queue_size`` events wait; beyond that the oldest waiting
  one is dropped (counted in ``dropped``, one warning per burst).
* ``disable_rest_requests=true`` turns all of this off.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Hashable

import aiohttp
from yarl import URL

from ..gateway import CallEvent, Event, Gateway
from ..settings import Settings, SettingsError

log = logging.getLogger(__name__)

DEFAULT_APP_KEY = "defaultApp"
WARN_INTERVAL_S = 10.0  # per app: at most one failure warning in this time
MAX_RESPONSE_BYTES = 1 << 20  # read (and ignore) at most this much of a hook's answer
_SECRET_KEYS = ("sipPassword",)


@dataclasses.dataclass(eq=False)
class _Delivery:
    seq: int
    url: str
    app_url: str
    body: bytes
    lane: Hashable


def _safe_url(url: str) -> str:
    """The URL as logs may show it: no userinfo password."""
    try:
        parsed = URL(url)
    except ValueError:
        return "<invalid URL>"
    return str(parsed.with_password("***")) if parsed.password else url


def hook_url(settings: Settings, app_key: str | None, event_name: str) -> str | None:
    """Where an event for ``app_key`` goes, or None when it goes nowhere."""
    app_url = settings.apps.get(app_key) if app_key else settings.apps.get(DEFAULT_APP_KEY)
    if not app_url:
        return None
    return app_url.rstrip("/") + "/" + event_name


class RestHooks:
    """Delivers a gateway's events to the REST hooks of their apps.

    ``sent``, ``failed``, ``dropped`` and ``unrouted`` (events whose appKey maps
    to no app) count events since start, for metrics."""

    def __init__(self, gateway: Gateway, settings: Settings | None = None) -> None:
        self.gateway = gateway
        self.settings = s = settings or gateway.settings
        if s.rest_max_connections < 1:
            raise SettingsError(f"rest_max_connections: {s.rest_max_connections} must be >= 1")
        if s.rest_hook_timeout_s <= 0:
            raise SettingsError(f"rest_hook_timeout_s: {s.rest_hook_timeout_s} must be > 0")
        if s.rest_hook_queue_size < 1:
            raise SettingsError(f"rest_hook_queue_size: {s.rest_hook_queue_size} must be >= 1")
        for app_key, app_url in s.apps.items():
            try:
                parsed = URL(app_url)
            except ValueError:
                parsed = URL()
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise SettingsError(f"app.{app_key}: {_safe_url(app_url)!r} is not an http(s) URL")
        self.enabled = not s.disable_rest_requests
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.unrouted = 0
        self._limit = s.rest_hook_queue_size
        self._timeout = s.rest_hook_timeout_s
        self._seq = itertools.count()
        # Waiting deliveries, oldest first (all lanes), and per lane.
        self._pending: collections.OrderedDict[int, _Delivery] = collections.OrderedDict()
        self._lanes: dict[Hashable, collections.deque[_Delivery]] = {}
        self._workers: dict[Hashable, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(s.rest_max_connections)
        self._reader: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._burst = 0  # drops in the current overflow burst
        self._failing: dict[str, list[float]] = {}  # app url -> [last warning time, failures not warned]
        self._closed = False

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if not self.enabled:
            log.info("REST hooks disabled (disable_rest_requests=true)")
            return
        if self._reader is not None:
            return
        s = self.settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=s.rest_max_connections),
            timeout=aiohttp.ClientTimeout(total=s.rest_hook_timeout_s),
            headers={"Content-Type": "application/json", "User-Agent": "sipstream"},
        )
        self._reader = asyncio.create_task(self._read(), name="rest-hooks-reader")
        # Let the reader subscribe before the first call can start.
        await asyncio.sleep(0)
        if self.settings.apps:
            apps = ", ".join(f"{k}={_safe_url(v)}" for k, v in self.settings.apps.items())
            log.info("REST hooks on for %s", apps)

    async def close(self, drain_s: float = 0.0) -> None:
        """Stop: with ``drain_s`` > 0, first give waiting deliveries that long
        to finish (e.g. the FINISH of calls hung up at shutdown); then cancel
        what is left and close the HTTP client."""
        if self._closed:
            return
        self._closed = True
        if drain_s > 0 and self._reader is not None:
            for _ in range(3):  # let the reader take what the gateway just published
                await asyncio.sleep(0)
            deadline = time.monotonic() + drain_s
            while self._workers and (left := deadline - time.monotonic()) > 0:
                await asyncio.wait(set(self._workers.values()), timeout=left)
        tasks = list(self._workers.values())
        if self._reader is not None:
            tasks.append(self._reader)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        left_over = len(self._pending)
        if left_over:
            log.info("REST hooks: %d undelivered events abandoned at shutdown", left_over)
        self._pending.clear()
        self._lanes.clear()
        self._workers.clear()
        self._reader = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def queued(self) -> int:
        """Events waiting for a free connection (in-flight ones not included)."""
        return len(self._pending)

    # ------------------------------------------------------------- enqueue
    async def _read(self) -> None:
        async for event in self.gateway.events():
            try:
                self.enqueue(event)
            except Exception:
                log.exception("REST hooks: cannot enqueue %s", getattr(event, "name", event))

    def enqueue(self, event: Event) -> None:
        """Queue one event for its hook (never blocks, never raises for a bad hook)."""
        if not self.enabled or self._closed:
            return
        url = hook_url(self.settings, event.app_key, event.name)
        if url is None:
            self.unrouted += 1
            return
        payload = event.payload
        if any(key in payload for key in _SECRET_KEYS):  # never: belt and braces
            payload = {k: v for k, v in payload.items() if k not in _SECRET_KEYS}
        body = json.dumps(payload, default=str, separators=(",", ":")).encode()
        lane = self._lane_of(event)
        delivery = _Delivery(next(self._seq), url, url[: -len(event.name) - 1], body, lane)
        while len(self._pending) >= self._limit:
            self._drop_oldest()
        self._pending[delivery.seq] = delivery
        self._lanes.setdefault(lane, collections.deque()).append(delivery)
        if lane not in self._workers:
            self._workers[lane] = asyncio.create_task(self._work(lane), name=f"rest-hook {lane}")

    @staticmethod
    def _lane_of(event: Event) -> Hashable:
        """One lane per call: its Call and Stream events share the stream name."""
        if isinstance(event, CallEvent):
            return event.payload.get("streamName") or ("call", event.call_id)
        return event.stream_name

    def _drop_oldest(self) -> None:
        _, oldest = self._pending.popitem(last=False)
        lane = self._lanes[oldest.lane]
        # A lane is FIFO and in-flight deliveries have left it: the oldest
        # waiting delivery overall is the head of its lane.
        assert lane[0] is oldest
        lane.popleft()
        self.dropped += 1
        if self._burst == 0:
            log.warning("REST hooks: %d events waiting (hooks slow or down?), dropping the oldest", self._limit)
        self._burst += 1

    # ------------------------------------------------------------- deliver
    async def _work(self, lane_key: Hashable) -> None:
        lane = self._lanes[lane_key]
        try:
            while True:
                async with self._slots:
                    if not lane:
                        return
                    delivery = lane.popleft()
                    self._pending.pop(delivery.seq, None)
                    await self._post(delivery)
                if self._burst and len(self._pending) <= self._limit // 2:
                    log.warning("REST hooks: %d events dropped in the last overflow", self._burst)
                    self._burst = 0
        finally:
            if self._workers.get(lane_key) is asyncio.current_task():
                del self._workers[lane_key]
            if self._lanes.get(lane_key) is lane and not lane:
                del self._lanes[lane_key]

    async def _post(self, d: _Delivery) -> None:
        assert self._session is not None
        reason = ""
        try:
            async with self._session.post(d.url, data=d.body) as res:
                received = 0
                async for chunk in res.content.iter_any():
                    received += len(chunk)
                    if received > MAX_RESPONSE_BYTES:
                        break
                if not 200 <= res.status < 300:
                    reason = f"HTTP {res.status} {res.reason or ''}".rstrip()
        except (TimeoutError, asyncio.TimeoutError):  # distinct before Python 3.11
            reason = f"no answer within {self._timeout:g} s"
        except aiohttp.ClientError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        except (OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if reason:
            self._failure(d, reason)
        else:
            self._success(d)

    def _success(self, d: _Delivery) -> None:
        self.sent += 1
        state = self._failing.pop(d.app_url, None)
        if state is not None:
            log.info("REST hook %s answers again", _safe_url(d.app_url))

    def _failure(self, d: _Delivery, reason: str) -> None:
        self.failed += 1
        password = URL(d.url).password
        if password:
            reason = reason.replace(password, "***")
        state = self._failing.setdefault(d.app_url, [-1e9, 0])
        now = time.monotonic()
        if now - state[0] >= WARN_INTERVAL_S:
            more = f" ({int(state[1])} more failures since the last warning)" if state[1] else ""
            log.warning("REST hook %s failed: %s%s", _safe_url(d.url), reason, more)
            state[0], state[1] = now, 0
        else:
            state[1] += 1
            log.debug("REST hook %s failed: %s", _safe_url(d.url), reason)
