"""The whole-process load test of SPEC.md §8: CALLS concurrent audio+video
calls through Kamailio, each streamed by sipp and watched by one WHEP viewer.

    .venv/bin/python benches/sip_load.py [--calls 500] [--seconds 60] [--rate 25] [--media sipp]

Peers (benches/farend.py, the tests' own peer classes): Debian's Kamailio as
registrar and proxy; one sipp UAS registered behind it as ``bob`` that
answers every call; the media, by ``--media``:

- ``blaster`` (default): ``rtp_blaster`` (rust/examples) sends each call
  PCMU every 20 ms and 25 fps H.264 of ``--slice-bytes`` per picture (2,500:
  3 packets per frame, ~0.5 Mbit/s, like sipp's pcap) with ``sendmmsg``
  from one socket, to the ports of the call's INVITE as sipp logged it. The
  call latches on that source (sipp's answer names only RTCP sinks).
- ``sipp``: sipp itself streams PCMU (rtp_stream) and 352x288 25 fps H.264
  (``play_pcap_video``). sipp 3.6.1 runs one pcap thread per call: at 500
  calls that took 1.2-1.3 of this machine's 2 cores, leaving too little for
  the viewers' client, so it measures sipstream's CPU per call but cannot
  pass on 2 cores.

``whep_load`` (rust/examples) as the
viewers, viewer i on stream ``load<i>``: real ICE, DTLS and SRTP, one UDP
socket each. The server is ``sipstream serve`` in its own process
(benches/endurance.py's launcher), called through its REST API as ``alice``.

Phases, each measured on its own: the calls alone (ingest: RTP in, nothing
out), then the calls with their viewers. In each window:

- CPU: user+system time of each process from /proc (the server with all its
  threads; sipp; Kamailio with its children; whep_load), and the machine's
  busy time from /proc/stat. CPU per call is the server's CPU seconds per
  second over the calls; calls per core is its inverse.
- loss in: ``sipstream_rtp_in_lost`` over ``..._packets`` + lost (the
  server's count of sequence gaps from sipp).
- delivery out: whep_load's RTP received over expected, per viewer, over its
  own window (inside ours).
- added latency: the server's ``sipstream_webrtc_send_latency_seconds``,
  from the moment a frame's last packet was read from the call's RTP socket
  to the moment the viewer's packet was handed to the kernel, p50 and p99
  over every packet sent since the server started.

Prints a summary and its JSON, also written to
``benches/results/sip-load-<UTC time>.json``. Exit 1 when the goal is not
met: every call up to the end, every viewer connected, delivery >= 0.999.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchutil import cpu_times, proc_cpu_s
from endurance import ROOT, WHEP_LOAD, ServerProcess, _loadavg, _machine, _post, _start_call, _status, write_result
from farend import KamailioSippFarEnd


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 once it is gone."""
    try:
        return proc_cpu_s(f"/proc/{pid}/stat")
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def _with_children(pid: int) -> list[int]:
    """``pid`` and its direct children (Kamailio's worker processes)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
            if ppid == pid:
                pids.append(int(entry))
    return pids


async def _metrics(http: Any, base: str) -> dict[str, float]:
    """The server's /metrics as {"name{labels}": value}."""
    from prometheus_client.parser import text_string_to_metric_families

    async with http.get(f"{base}/metrics") as res:
        text = await res.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


class Window:
    """CPU and RTP counters between ``start()`` and ``stop()``."""

    def __init__(self, processes: dict[str, list[int]]) -> None:
        self.processes = processes

    def _cpu(self) -> dict[str, float]:
        return {name: sum(_cpu_s(p) for p in pids) for name, pids in self.processes.items()}

    async def start(self, http: Any, base: str) -> None:
        self.t0, self.cpu0, self.busy0 = time.monotonic(), self._cpu(), cpu_times()
        self.metrics0 = await _metrics(http, base)

    async def stop(self, http: Any, base: str, calls: int) -> dict[str, Any]:
        seconds = time.monotonic() - self.t0
        cpu1, busy1, metrics1 = self._cpu(), cpu_times(), await _metrics(http, base)
        cores = {name: round((cpu1[name] - self.cpu0[name]) / seconds, 3) for name in cpu1}
        machine = (busy1[0] - self.busy0[0]) / seconds

        def delta(name: str) -> float:
            return metrics1.get(name, 0.0) - self.metrics0.get(name, 0.0)

        loss = {}
        for kind in ("audio", "video"):
            lost = delta(f"sipstream_rtp_in_lost_total{{kind={kind}}}")
            got = delta(f"sipstream_rtp_in_packets_total{{kind={kind}}}")
            loss[kind] = {"packets": int(got), "lost": int(lost),
                          "loss": round(lost / (got + lost), 6) if got + lost else None}
        server = cores["server"]
        return {
            "seconds": round(seconds, 1),
            "cores": cores,
            "machine_cores_busy": round(machine, 3),
            "server_cpu_per_call_pct": round(100 * server / calls, 4) if calls else None,
            "calls_per_server_core": round(calls / server, 1) if server else None,
            "rtp_in": loss,
            "rtp_in_packets_per_s": round(sum(v["packets"] for v in loss.values()) / seconds),
            "webrtc_datagrams_out_per_s": round(delta("sipstream_webrtc_datagrams_out_total") / seconds),
            "foreign_source": int(delta("sipstream_rtp_in_foreign_source_total")),
            "latency_ms": {q: round(metrics1[f"sipstream_webrtc_send_latency_seconds{{quantile={q}}}"] * 1000, 2)
                           for q in ("0.5", "0.99")
                           if f"sipstream_webrtc_send_latency_seconds{{quantile={q}}}" in metrics1},
            "loadavg": _loadavg(),
        }


BLASTER = ROOT / "target" / "release" / "examples" / "rtp_blaster"


async def _feed_blaster(blaster: subprocess.Popen[bytes], far: KamailioSippFarEnd, calls_done: asyncio.Event) -> int:
    """Hands rtp_blaster each call's ports as sipp logs its INVITE, until the
    calls are all started and fed. Returns how many were fed."""
    fed: set[str] = set()
    assert blaster.stdin is not None
    while True:
        finished = calls_done.is_set()
        ports = await asyncio.to_thread(far.media_ports)
        lines = [f"{a} {v}\n" for call_id, (a, v) in ports.items() if call_id not in fed]
        fed.update(ports)
        if lines:
            blaster.stdin.write("".join(lines).encode())
            blaster.stdin.flush()
        if finished:
            return len(fed)
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    for example, path in (("whep_load", WHEP_LOAD), ("rtp_blaster", BLASTER)):
        if not path.exists():
            built = subprocess.run(["cargo", "build", "--release", "-q", "--example", example], cwd=ROOT)
            if built.returncode != 0:
                raise SystemExit(f"cargo could not build rust/examples/{example}")
    machine = _machine()
    work = Path(tempfile.mkdtemp(prefix="sipstream-sip-load-"))
    n = args.calls
    ramp_s = n / args.rate
    joins_s = n / args.join_rate + 20  # joins, plus whep_load's 15 s connect timeout
    viewer_s = joins_s + args.warmup + args.seconds + 10
    # sipp cannot loop a pcap: the video must outlast the whole run
    media_s = ramp_s + args.ingest_seconds + viewer_s + 60
    print(f"starting Kamailio and sipp (media: {args.media}) ...", flush=True)
    far = await KamailioSippFarEnd.start(work, n, media_seconds=media_s,
                                         media="sipp" if args.media == "sipp" else "sink")
    server = ServerProcess(work, (args.media_port_from, args.media_port_from + 4 * n + 999),
                           max_calls=n, max_viewers=2 * n, max_viewers_per_client=0)
    processes = {"server": [server.pid], "sipp": [far.sipp_pid] if far.sipp_pid else [],
                 "kamailio": _with_children(far.kamailio.proc.pid) if far.kamailio.proc else []}
    failures: dict[str, int] = {}
    result: dict[str, Any] = {"mode": "sip-load", "machine": machine, "calls": n, "rate": args.rate,
                              "media": args.media, "settings": server.settings, "work": str(work)}
    if args.media == "blaster":
        result["slice_bytes"] = args.slice_bytes
    viewers: subprocess.Popen[bytes] | None = None
    blaster: subprocess.Popen[bytes] | None = None
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:
            await server.ready(http)
            calls_done = asyncio.Event()
            feeder = None
            if args.media == "blaster":
                blaster = subprocess.Popen(
                    [str(BLASTER), "-", f"{media_s:.0f}", "127.0.0.1", str(args.slice_bytes)],
                    stdin=subprocess.PIPE, stdout=open(work / "rtp_blaster.json", "w"))
                processes["rtp_blaster"] = [blaster.pid]
                feeder = asyncio.create_task(_feed_blaster(blaster, far, calls_done))
            t0 = time.monotonic()

            async def start(i: int) -> None:
                await asyncio.sleep(max(0.0, t0 + i / args.rate - time.monotonic()))
                outcome = await _start_call(http, server.base_url, f"load-{i}", f"load{i}", far, 0.25)
                if outcome != "ok":
                    failures[outcome] = failures.get(outcome, 0) + 1

            await asyncio.gather(*(start(i) for i in range(n)))
            up = n - sum(failures.values())
            result["setup_s"] = round(time.monotonic() - t0, 1)
            calls_done.set()
            if feeder is not None:
                result["blaster_calls"] = await feeder
            print(f"{up}/{n} calls up in {result['setup_s']} s; failures: {failures}", flush=True)
            await asyncio.sleep(3)  # first keyframes in, jitter buffers settled

            window = Window(processes)
            await window.start(http, server.base_url)
            await asyncio.sleep(args.ingest_seconds)
            result["ingest"] = await window.stop(http, server.base_url, up)
            print(f"calls alone: {json.dumps(result['ingest'])}", flush=True)

            out = work / "whep_load.json"
            viewers = subprocess.Popen(
                [str(WHEP_LOAD), "--url", f"{server.base_url}/whep/load{{i}}", "--viewers", str(n),
                 "--duration", f"{args.seconds + 10:.0f}", "--warmup", str(args.warmup),
                 "--rate", str(args.join_rate), "--json", str(out), "--summary-only"],
                stdout=open(work / "whep_load.log", "w"), stderr=subprocess.STDOUT)
            processes["whep_load"] = [viewers.pid]
            # every viewer connected (or given up), then the warm-up: whep_load's window starts about here
            deadline = time.monotonic() + joins_s
            while time.monotonic() < deadline:
                m = await _metrics(http, server.base_url)
                if m.get("sipstream_viewers{protocol=whep,state=connected}", 0) >= up:
                    break
                await asyncio.sleep(1)
            await asyncio.sleep(args.warmup + 2)
            window = Window(processes)
            await window.start(http, server.base_url)
            await asyncio.sleep(args.seconds)
            result["with_viewers"] = await window.stop(http, server.base_url, up)
            print(f"calls and viewers: {json.dumps(result['with_viewers'])}", flush=True)

            rc = await asyncio.to_thread(viewers.wait, viewer_s + 60)
            report = json.loads(out.read_text()) if out.exists() else {}
            result["viewers"] = {k: report.get(k) for k in (
                "viewers", "connected", "delivery", "session_delivery", "lost_total", "ice_disconnects",
                "window_s", "rtp_per_viewer_per_s", "rtp_min", "join_ms", "joins_per_s", "client_cpu_window_frac")}
            result["viewers"]["exit"] = rc
            result["viewers"]["failed"] = len(report.get("failed", []))
            still = 0
            for i in range(n):
                if await _status(http, server.base_url, f"load-{i}") == "ESTABLISHED":
                    still += 1
            result["calls_established_at_end"] = still
            ended = await asyncio.gather(*(_post(http, f"{server.base_url}/rest-api/call/terminate",
                                                 {"callId": f"load-{i}"}) for i in range(n)))
            result["terminated"] = sum(1 for code, _ in ended if code == 200)
            await asyncio.sleep(3)
            result["server_alive_at_end"] = server.proc.poll() is None
    finally:
        for proc in (viewers, blaster):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stop()
        await far.stop()
    result["calls_failed_to_start"] = failures
    result["sipp_byes"] = len(far.sip_ids("BYE"))
    v = result.get("viewers", {})
    result["ok"] = bool(not failures and result.get("calls_established_at_end") == n
                        and v.get("connected") == n and (v.get("delivery") or 0) >= 0.999
                        and result.get("server_alive_at_end"))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rate", type=float, default=25, help="calls started per second")
    parser.add_argument("--join-rate", type=float, default=50, help="viewers joining per second")
    parser.add_argument("--ingest-seconds", type=float, default=30, help="window with the calls alone")
    parser.add_argument("--seconds", type=float, default=60, help="window with the calls and their viewers")
    parser.add_argument("--warmup", type=float, default=5, help="after the joins, before the window")
    parser.add_argument("--media", choices=("blaster", "sipp"), default="blaster",
                        help="who sends the calls' RTP (see above)")
    parser.add_argument("--slice-bytes", type=int, default=2500, help="H.264 picture size with --media blaster")
    parser.add_argument("--media-port-from", type=int, default=30000)
    parser.add_argument("--json", type=Path, help="where to write the result (default benches/results/...)")
    args = parser.parse_args()
    return write_result(asyncio.run(run(args)), "sip-load", args.json)


if __name__ == "__main__":
    sys.exit(main())
