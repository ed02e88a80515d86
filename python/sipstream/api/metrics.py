"""Prometheus metrics at ``GET /metrics`` (prometheus-client).

Nothing here runs per packet: counters that Rust keeps (RTP in, WebRTC out)
are read when Prometheus scrapes, by a collector, and the few events Python
sees anyway (a call's status, a REST request) are observed as they happen.
Each server has its own registry, so several servers may run in one process."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..egress.hls import HlsServer
    from ..egress.rtmp import RtmpRelays
    from ..egress.whep import WhepEndpoint
    from ..gateway import Gateway
    from .hooks import RestHooks

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# RTP receive counters summed over calls: the live ones read from Rust at
# each scrape, the ended ones added up once when they end.
RTP_COUNTERS = ("packets", "bytes", "lost", "late", "duplicates", "keyframe_requests", "nacks_sent")
SESSION_COUNTERS = ("malformed", "unknown_payload_type", "foreign_source", "stale_ssrc")


class Metrics:
    """The server's registry: event metrics observed by the gateway and the
    REST middleware, and a collector that reads everything else at scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.call_setup = Histogram(
            "sipstream_call_setup_seconds", "From /call/startup to ESTABLISHED",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=self.registry)
        self.calls_ended = Counter(
            "sipstream_calls_ended", "Calls that reached a final status", ["status"], registry=self.registry)
        self.sip_auth_failures = Counter(
            "sipstream_sip_auth_failures", "Calls and registrations refused for their credentials",
            registry=self.registry)
        self.rest_latency = Histogram(
            "sipstream_http_request_seconds", "HTTP API requests, by route, method and status class",
            ["route", "method", "status"], buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=self.registry)
        # RTP receive totals of the calls that ended
        self.ended_rtp: defaultdict[tuple[str, str], float] = defaultdict(float)

    def attach(self, gateway: Gateway, whep: WhepEndpoint, relays: RtmpRelays, hooks: RestHooks | None) -> None:
        self.collector = _StateCollector(self, gateway, whep, relays, hooks)
        self.registry.register(self.collector)

    def attach_hls(self, hls: HlsServer) -> None:
        """HLS viewers and requests (the server's HLS port, when it runs one)."""
        self.collector.hls = hls

    def call_ended(self, status: str, info: str, media_stats: dict[str, Any]) -> None:
        self.calls_ended.labels(status).inc()
        if info.startswith("Authentication failed") or info.startswith("Registration failed: 40"):
            self.sip_auth_failures.inc()
        for kind, name, value in _rtp_values(media_stats):
            self.ended_rtp[(kind, name)] += value

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _rtp_values(stats: dict[str, Any]) -> Iterator[tuple[str, str, float]]:
    for kind in ("audio", "video"):
        track = stats.get(kind)
        if track:
            for name in RTP_COUNTERS:
                yield kind, name, float(track.get(name) or 0)
    for name in SESSION_COUNTERS:
        yield "", name, float(stats.get(name) or 0)


class _StateCollector(Collector):
    def __init__(self, metrics: Metrics, gateway: Gateway, whep: WhepEndpoint, relays: RtmpRelays,
                 hooks: RestHooks | None) -> None:
        self.metrics = metrics
        self.gateway = gateway
        self.whep = whep
        self.relays = relays
        self.hooks = hooks
        self.hls: HlsServer | None = None

    def collect(self) -> Iterator[Metric]:
        gateway = self.gateway
        calls = GaugeMetricFamily("sipstream_calls", "Calls by status (ended ones while still listed)",
                                  labels=["status"])
        for status, count in sorted(Tally(c.status.value for c in gateway.calls.values()).items()):
            calls.add_metric([status], count)
        yield calls
        live_streams = [s for s in gateway.streams.values() if not s.ended]
        yield GaugeMetricFamily("sipstream_streams", "Live streams", value=len(live_streams))

        rtp = defaultdict(float, self.metrics.ended_rtp)
        jitter = GaugeMetricFamily("sipstream_rtp_in_jitter_ms", "Interarrival jitter of a live call's track",
                                   labels=["stream", "kind"])
        fps = GaugeMetricFamily("sipstream_rtp_in_fps", "Frames per second of a live call's track",
                                labels=["stream", "kind"])
        for call in gateway.calls.values():
            if call.media is None or call.status.is_final:
                continue
            stats = call.media.stats()
            for kind, name, value in _rtp_values(stats):
                rtp[(kind, name)] += value
            for kind in ("audio", "video"):
                track = stats.get(kind)
                if track:
                    jitter.add_metric([call.stream.name, kind], float(track.get("jitter_ms") or 0))
                    fps.add_metric([call.stream.name, kind], float(track.get("fps") or 0))
        for name in RTP_COUNTERS:
            family = CounterMetricFamily(f"sipstream_rtp_in_{name}", f"RTP received from SIP far ends: {name}",
                                         labels=["kind"])
            for kind in ("audio", "video"):
                family.add_metric([kind], rtp[(kind, name)])
            yield family
        for name in SESSION_COUNTERS:
            yield CounterMetricFamily(f"sipstream_rtp_in_{name}", f"RTP/RTCP datagrams dropped: {name}",
                                      value=rtp[("", name)])
        yield jitter
        yield fps
        yield CounterMetricFamily("sipstream_keyframe_requests",
                                  "Keyframe requests of live streams (viewers' PLI/FIR, new viewers)",
                                  value=sum(s.keyframe_requests for s in live_streams))

        viewers = GaugeMetricFamily("sipstream_viewers", "Viewers by protocol and state",
                                    labels=["protocol", "state"])
        sessions = list(self.whep.sessions.values())
        for protocol in ("whep", "wcs"):  # WHEP, and the WCS WebSocket: one engine
            mine = [s for s in sessions if s.protocol == protocol]
            connected = sum(1 for s in mine if s.connected)
            viewers.add_metric([protocol, "connected"], connected)
            viewers.add_metric([protocol, "connecting"], len(mine) - connected)
        if self.hls is not None:  # an HLS viewer: an address that asked for the stream lately
            viewers.add_metric(["hls", "connected"], sum(self.hls.viewers().values()))
        # RTSP viewers are added to the engine at PLAY: they are playing
        viewers.add_metric(["rtsp", "connected"], sum(1 for p, _ in self.whep.plain.values() if p == "rtsp"))
        viewers.add_metric(["rtsp", "connecting"], 0)
        yield viewers
        if self.hls is not None:
            yield GaugeMetricFamily("sipstream_hls_streams", "Streams muxed to HLS now",
                                    value=self.hls.streams_muxed)
            requests = CounterMetricFamily("sipstream_hls_requests", "HLS requests by kind and status code",
                                           labels=["kind", "code"])
            for (kind, code), count in sorted(self.hls.requests.items()):
                requests.add_metric([kind, str(code)], count)
            yield requests
        engine = self.whep.stats()
        for key, help_text in (("datagrams_out", "Datagrams sent to WebRTC viewers"),
                               ("bytes_out", "Bytes sent to WebRTC viewers"),
                               ("send_errors", "Failed sends to WebRTC viewers"),
                               ("datagrams_in", "Datagrams received from WebRTC viewers"),
                               ("unroutable", "Datagrams to the WebRTC port from no viewer")):
            yield CounterMetricFamily(f"sipstream_webrtc_{key}", help_text, value=float(engine.get(key, 0)))
        if engine.get("latency_samples"):
            latency = GaugeMetricFamily("sipstream_webrtc_send_latency_seconds",
                                        "Latency of WebRTC packets from the call's RTP socket to the viewer's socket",
                                        labels=["quantile"])
            latency.add_metric(["0.5"], engine["latency_p50_us"] / 1e6)
            latency.add_metric(["0.99"], engine["latency_p99_us"] / 1e6)
            yield latency

        relays = GaugeMetricFamily("sipstream_rtmp_relays", "RTMP relays by status", labels=["status"])
        for status, count in sorted(Tally(r.status for r in self.relays.relays.values()).items()):
            relays.add_metric([status], count)
        yield relays
        yield GaugeMetricFamily("sipstream_recordings", "Recordings running",
                                value=len(gateway.recorders.find_all()))
        if self.hooks is not None:
            hooks = CounterMetricFamily("sipstream_rest_hooks", "REST hook POSTs by outcome", labels=["outcome"])
            for outcome in ("sent", "failed", "dropped", "unrouted"):
                hooks.add_metric([outcome], getattr(self.hooks, outcome))
            yield hooks
        if gateway.ua is not None:
            sip = CounterMetricFamily("sipstream_sip", "SIP transport events: messages, client transactions, "
                                      "retransmissions, TCP connections refused or timed out", labels=["event"])
            for event, count in sorted(dataclasses.asdict(gateway.ua.transport.stats).items()):
                sip.add_metric([event], count)
            yield sip


METRICS = web.AppKey("metrics", Metrics)


@web.middleware
async def observe_latency(request: web.Request, handler: Any) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "other"
        request.app[METRICS].rest_latency.labels(name, request.method, f"{status // 100}xx").observe(
            time.perf_counter() - started)


async def metrics_page(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})
