"""WebRTC viewers per core: one stream played to N WHEP viewers by the Rust
engine (python/sipstream/egress/whep.py → ``WebrtcEngine``), against the
kernel's floor (rust/examples/sendmmsg_floor) and the old aiortc path
(benches/aiortc_whep.py), in the same run.

The measured process is a whole server (benches/viewer_server.py: REST,
WHEP, SIP and one call) started on the measured core. The call's media comes
from the loopback callee (benches/loopback_callee.py: H.264 640x360 25 fps +
PCMU, ~300 kbit/s, ~90 packets/s), in its own process on the load core, so
the server's CPU is only the gateway's. The viewers are
rust/examples/whep_load on the load core: real WHEP, ICE and DTLS, one UDP
socket each; it counts every viewer's RTP by sequence number (delivery).

For each N: all viewers join at once (``--rate 0``), WARMUP_S later the
engine's latency histogram is reset, then the server's CPU time (utime +
stime of every thread, /proc/PID/stat) is read over WINDOW_S; both ends of
the window are aligned on the engine's once-a-second stats, so its counters
cover the same window. Before the viewers join, the server's CPU with its
call and no viewer is read over BASELINE_S (recorded, not subtracted). CPU per viewer-packet = server CPU / (connected
viewers × RTP packets/s per viewer as the client received them, × window);
viewers per core = 1e6 / (µs per viewer-packet × packets/s per viewer).
Everything the server does for its viewers counts (SRTP, RTCP, ICE consent,
the kernel's send and, on loopback, the receive softirq it runs for the
client); the call itself costs about 1% of a core.

The floor sends the same number of datagrams a second, 1100-1200 B, to N
sockets, in sendmmsg batches of 64 once per 10 ms tick, its receiver
draining them like whep_load on the load core; the aiortc path is the same
server with aiortc's WHEP endpoint. CASES runs each ratio's two sides next
to each other. Also recorded: the engine's added latency (from the call's
RTP socket to the viewer's socket, p50/p99 of the window; hub → socket
before issue 12's load test), joins (1,000 viewers at once: time until all
connected, joins/s, p50/p99 join time, the server's CPU meanwhile) and
memory (server RSS after the joins minus before, per WHEP session).

A size is sustained when every viewer connected and at most 1% of the RTP
went missing; one that is not does not fail the run (it is what the server
does when it cannot keep up): report.py leaves out its CPU figures and
keeps its delivery, latency and memory. Delivery below the goal (99.9%)
shows in the delivery row. Run: ``make bench`` or
``benches/run.py --only viewers``."""

from __future__ import annotations

import itertools
import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import pytest
from benchutil import LOAD_CPU, MEASURED_CPU, cpu_times, on_load_cpu, proc_cpu_s

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
EXAMPLES = ROOT / "target" / "release" / "examples"
WHEP_LOAD, FLOOR = EXAMPLES / "whep_load", EXAMPLES / "sendmmsg_floor"

# What one run measures, in this order: the Rust engine (engine-N viewers),
# the floor at the same datagram rate (floor-N destinations), the aiortc path
# (aiortc-N viewers). The two sides of a ratio are measured next to each other.
CASES = ["engine-100", "floor-100", "aiortc-100", "aiortc-50", "engine-1000", "floor-1000", "engine-2500",
         "floor-2500"]
JOINS_AT = [1000]  # the join figures come from these engine runs (all viewers at once)
MEMORY_AT = [1000, 2500]
CALLEE = ("640", "360", "4")  # the loopback callee's picture and loop: sipstream demo's stream
WARMUP_S = 3.0  # after every viewer connected
WINDOW_S = 8.0  # server CPU measured over this (plus up to 1 s to align on the engine's stats)
BASELINE_S = 3.0  # the server's CPU with the call and no viewer, before the viewers join
# The client measures from the end of its joins until this much later, which
# covers the server's window: the end of the joins is seen up to JOIN_QUIET_S
# late, and each end of the window waits up to 1.5 s for fresh engine stats.
CLIENT_S = WARMUP_S + WINDOW_S + 9.0
JOIN_TIMEOUT_S = 90.0
JOIN_QUIET_S = 3.0  # whep_load's joins are over when it printed no progress for this long
SUSTAINED_DELIVERY = 0.99  # below it a size's CPU figures are not those of N viewers (the goal is 0.999)
FLOOR_RATE = 91.0  # datagrams/s to each destination when no engine run measured the stream's rate
FLOOR_WARMUP_S = 2.0
DELIVERY_GOAL = 0.999
MEDIA_PORTS = itertools.cycle(range(27000, 30000, 200))  # each server's 200 RTP ports, below the ephemeral range

# the stream's RTP packets/s per viewer as each engine run measured it, for the floor
_stream_rate: dict[int, float] = {}


# ----------------------------------------------------------------- /proc
def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _engine_tid(pid: int) -> int | None:
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip().startswith("sipstream-webrt"):
                return int(task.name)
        except OSError:
            continue
    return None


class Sample:
    """CPU of the server, its engine thread, the load processes and both
    cores at one instant."""

    def __init__(self, pid: int, tid: int | None, callee: int, client: int) -> None:
        self.t = time.monotonic()
        self.cpu = proc_cpu_s(f"/proc/{pid}/stat")
        self.engine = proc_cpu_s(f"/proc/{pid}/task/{tid}/stat") if tid else 0.0
        self.callee = proc_cpu_s(f"/proc/{callee}/stat")
        self.client = proc_cpu_s(f"/proc/{client}/stat")
        self.measured_core = cpu_times(MEASURED_CPU)
        self.load_core = cpu_times(LOAD_CPU)


def _pct(a: tuple[float, float], b: tuple[float, float]) -> float:
    return 100 * (b[0] - a[0]) / max(b[1] - a[1], 1e-9)


# ---------------------------------------------------------------- peers
@pytest.fixture(scope="module")
def examples() -> None:
    """whep_load and sendmmsg_floor, built once (benches/run.py builds them before its runs)."""
    done = subprocess.run(["cargo", "build", "--release", "-q", "--example", "whep_load", "--example",
                           "sendmmsg_floor"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cargo could not build whep_load and sendmmsg_floor: {done.stderr[-800:]}")


def _readline(stream: IO[str], timeout: float, what: str) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    line = stream.readline() if ready else ""
    if not line:
        raise RuntimeError(f"{what}: no answer within {timeout:.0f} s")
    return line


def _stop(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """End a process we started: close its stdin, then kill it if it lingers."""
    if proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except OSError:
            pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Callee(NamedTuple):
    port: int
    pid: int


@pytest.fixture(scope="module")
def callee() -> Iterator[Callee]:
    """The media source, on the load core for the whole module."""
    with on_load_cpu():
        proc = subprocess.Popen([sys.executable, str(HERE / "loopback_callee.py"), *CALLEE],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield Callee(int(_readline(proc.stdout, 60, "loopback_callee.py")), proc.pid)
    finally:
        _stop(proc)


class ViewerServer:
    """benches/viewer_server.py on the measured core (this process's core)."""

    def __init__(self, mode: str, callee: int, log: Path) -> None:
        self.mode = mode
        self.log = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "viewer_server.py"), mode, str(callee),
                                      str(next(MEDIA_PORTS))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True)
        self.pid = self.proc.pid

    def start(self) -> str:
        assert self.proc.stdout is not None
        try:
            url = json.loads(_readline(self.proc.stdout, 60, "viewer_server.py"))["url"]
        except RuntimeError:
            self._log.flush()
            raise RuntimeError(f"viewer_server.py {self.mode} did not start (exit {self.proc.poll()}): "
                               f"{self.log.read_text()[-1500:]}") from None
        self.engine_tid = _engine_tid(self.pid) if self.mode == "rust" else None
        return str(url)

    def command(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(_readline(self.proc.stdout, 20, f"viewer_server.py {command}")))

    def stats(self) -> dict[str, Any]:
        return dict(self.command("stats")["webrtc"])

    def fresh_stats(self) -> tuple[dict[str, Any], bool]:
        """The engine's next once-a-second stats, which describe now: (stats,
        True); (the last ones, False) when none came within 1.5 s (the
        engine's loop runs a tick at a time, and an overloaded tick can last
        seconds)."""
        first = self.stats()
        if self.mode != "rust":
            return first, True
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            time.sleep(0.02)
            s = self.stats()
            if s.get("ticks") != first.get("ticks"):
                return s, True
        return first, False

    def close(self) -> None:
        _stop(self.proc, 20)
        self._log.close()


# ------------------------------------------------------------ measuring
def _join_phase(server: ViewerServer, client: subprocess.Popen[bytes], client_log: Path, viewers: int) -> int:
    """Wait until whep_load's join phase is over: every viewer connected (as
    the server counts them), or no progress line from the client for
    JOIN_QUIET_S (it prints one every 2 s while viewers are pending, so it
    has started measuring). Returns the connected count."""
    started = last_change = time.monotonic()
    lines = connected = 0
    while client.poll() is None and time.monotonic() - started < JOIN_TIMEOUT_S:
        connected = int(server.stats().get("connected", 0))
        if connected >= viewers:
            break
        n = client_log.read_text(errors="replace").count("viewers joined")
        if n != lines:
            lines, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > JOIN_QUIET_S:
            break
        time.sleep(0.25)
    if client.poll() is not None:
        raise RuntimeError(f"whep_load ended during the joins (exit {client.returncode}): "
                           f"{client_log.read_text(errors='replace')[-1000:]}")
    return connected


def _measure_viewers(mode: str, viewers: int, callee: Callee, tmp: Path) -> dict[str, Any]:
    out, log = tmp / f"whep_load-{mode}-{viewers}.json", tmp / f"whep_load-{mode}-{viewers}.log"
    server = ViewerServer(mode, callee.port, tmp / f"server-{mode}-{viewers}.log")
    client: subprocess.Popen[bytes] | None = None
    client_log = open(log, "w")
    t_start = time.monotonic()
    try:
        url = server.start()
        rss0 = _rss_kb(server.pid)
        # the server with its call and no viewer
        base0 = proc_cpu_s(f"/proc/{server.pid}/stat"), time.monotonic()
        time.sleep(BASELINE_S)
        cpu_start, t_base = proc_cpu_s(f"/proc/{server.pid}/stat"), time.monotonic()
        baseline = (cpu_start - base0[0]) / (t_base - base0[1])
        with on_load_cpu():  # the client, and this process while it waits
            client = subprocess.Popen([str(WHEP_LOAD), "--url", url, "--viewers", str(viewers), "--duration",
                                       str(CLIENT_S), "--rate", "0", "--json", str(out), "--summary-only"],
                                      stdout=client_log, stderr=subprocess.STDOUT)
            t_posted = time.monotonic()
            _join_phase(server, client, log, viewers)
            cpu_joined = proc_cpu_s(f"/proc/{server.pid}/stat")
            time.sleep(WARMUP_S)
            s0, aligned0 = server.fresh_stats()
            a = Sample(server.pid, server.engine_tid, callee.pid, client.pid)
            if mode == "rust":
                server.command("reset")
            time.sleep(WINDOW_S)
            s1, aligned1 = server.fresh_stats()
            b = Sample(server.pid, server.engine_tid, callee.pid, client.pid)
            rss1 = _rss_kb(server.pid)
            sessions = int(server.command("stats")["viewers"])
            rc = client.wait(CLIENT_S + 180)
            t_client_done = time.monotonic()
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        client_log.close()
        server.close()
    t_end = time.monotonic()
    load = json.loads(out.read_text())
    assert load["connected"] > 0, f"whep_load exit {rc}: no viewer connected; failures {load['failed'][:5]}"
    seconds = b.t - a.t
    cpu = b.cpu - a.cpu
    pps = float(load["rtp_per_viewer_per_s"])
    us = cpu / seconds / (load["connected"] * pps) * 1e6
    all_connected = load["connected"] == viewers and not load["failed"]
    result: dict[str, Any] = {
        "mode": mode,
        "viewers": viewers,
        "connected": load["connected"],
        "all_connected": all_connected,
        # the figures describe N viewers: all connected and at most 1% of the RTP missing
        "sustained": all_connected and load["delivery"] >= SUSTAINED_DELIVERY,
        "whep_load_exit": rc,
        "window_s": seconds,
        # > 0: the client's window (from the end of its joins, CLIENT_S long) covered the server's
        "window_margin_s": t_posted + load["join_wall_s"] + CLIENT_S - b.t,
        "server_cpu_pct_core": 100 * cpu / seconds,
        "baseline_pct_core": 100 * baseline,
        # the same without what the server costs with no viewer (the call, Python's idle loop)
        "us_per_viewer_packet_above_baseline": (cpu / seconds - baseline) / (load["connected"] * pps) * 1e6,
        "engine_thread_pct_core": 100 * (b.engine - a.engine) / seconds,
        "measured_core_busy_pct": _pct(a.measured_core, b.measured_core),
        # other processes on the measured core during the window (a quiet machine: ~0)
        "other_on_measured_core_pct": _pct(a.measured_core, b.measured_core) - 100 * cpu / seconds,
        "load_core_busy_pct": _pct(a.load_core, b.load_core),
        "callee_cpu_pct_core": 100 * (b.callee - a.callee) / seconds,
        "client_cpu_pct_core_server_window": 100 * (b.client - a.client) / seconds,
        "rtp_per_viewer_per_s": pps,
        "us_per_viewer_packet": us,
        "viewers_per_core": 1e6 / (us * pps),
        "delivery": load["delivery"],
        "session_delivery": load["session_delivery"],
        "lost_total": load["lost_total"],
        "ice_disconnects": load["ice_disconnects"],
        "client_cpu_pct_core": 100 * load["client_cpu_window_frac"],
        "join_p50_ms": load["join_ms"]["p50"],
        "join_p99_ms": load["join_ms"]["p99"],
        "join_max_ms": load["join_ms"]["max"],
        "joins_per_s": load["joins_per_s"],
        "join_wall_s": load["join_wall_s"],
        # includes the media already flowing to the viewers that had joined
        "server_cpu_s_joining": cpu_joined - cpu_start,
        "rss_before_kb": rss0,
        "rss_after_kb": rss1,
        "server_sessions": sessions,
        "kb_per_viewer": (rss1 - rss0) / max(sessions, 1),
        # where the run's time went: server start, joins, window end, client done (DELETEs), server stopped
        "timeline_s": [round(t - t_start, 1) for t in (t_posted, a.t, b.t, t_client_done, t_end)],
    }
    if mode == "rust":
        datagrams = s1["datagrams_out"] - s0["datagrams_out"]
        ticks = s1["ticks"] - s0["ticks"]
        result.update({
            # the engine's counters cover the window only when both ends were aligned on fresh stats
            "stats_aligned": aligned0 and aligned1,
            "engine_datagrams_per_s": datagrams / seconds,
            "engine_datagrams_in_per_s": (s1["datagrams_in"] - s0["datagrams_in"]) / seconds,
            "engine_bytes_per_datagram": (s1["bytes_out"] - s0["bytes_out"]) / max(datagrams, 1),
            "us_per_datagram_sent": cpu / max(datagrams, 1) * 1e6,
            "send_errors": s1["send_errors"] - s0["send_errors"],
            "ticks_per_s": ticks / seconds,
            "rtc_timeouts_per_s": (s1.get("rtc_timeouts", 0) - s0.get("rtc_timeouts", 0)) / seconds,
            "datagrams_per_viewer_tick": datagrams / max(ticks * load["connected"], 1),
            "latency_p50_us": s1["latency_p50_us"],
            "latency_p99_us": s1["latency_p99_us"],
            "latency_samples": s1["latency_samples"],
        })
    return result


def _measure_floor(destinations: int, rate: float, tmp: Path) -> dict[str, Any]:
    out = tmp / f"floor-{destinations}.json"
    done = subprocess.run([str(FLOOR), "--destinations", str(destinations), "--rate", f"{rate:.2f}",
                           "--warmup", str(FLOOR_WARMUP_S), "--duration", str(WINDOW_S),
                           "--send-cpu", str(MEASURED_CPU), "--recv-cpu", str(LOAD_CPU), "--json", str(out)],
                          capture_output=True, text=True, timeout=FLOOR_WARMUP_S + WINDOW_S + 120)
    assert done.returncode == 0, f"sendmmsg_floor exit {done.returncode}: {done.stderr[-500:]}"
    print("\n" + done.stdout.strip())
    floor = json.loads(out.read_text())
    return {
        "destinations": destinations,
        "rate_per_destination": rate,
        "us_per_packet": floor["us_per_packet"],
        "sender_cpu_pct_core": 100 * floor["sender_cpu_s"] / floor["window_s"],
        "packets_per_s": floor["packets_per_s"],
        "delivery": floor["delivery"],
        "send_errors": floor["send_errors"],
        "max_tick_lag_ms": floor["max_tick_lag_ms"],
        "receiver_cpu_pct_core": 100 * floor["receiver_cpu_s"] / floor["window_s"],
    }


def _print(r: dict[str, Any]) -> None:
    line = (f"\n{r['mode']} {r['viewers']} viewers{'' if r['sustained'] else ' NOT SUSTAINED'}: "
            f"{r['connected']} connected; server {r['server_cpu_pct_core']:.1f}% of a core "
            f"(engine thread {r['engine_thread_pct_core']:.1f}%, no viewer {r['baseline_pct_core']:.1f}%), "
            f"{r['rtp_per_viewer_per_s']:.1f} RTP/s per viewer: "
            f"{r['us_per_viewer_packet']:.2f} µs per viewer-packet = {r['viewers_per_core']:,.0f} viewers per core; "
            f"delivery {r['delivery']:.5f} (goal {DELIVERY_GOAL}); joins p50 {r['join_p50_ms']:.0f} ms, "
            f"p99 {r['join_p99_ms']:.0f} ms, {r['joins_per_s']:.0f}/s, all in {r['join_wall_s']:.1f} s; "
            f"RSS +{r['kb_per_viewer']:.0f} KB per viewer; "
            f"client {r['client_cpu_pct_core_server_window']:.0f}% of the load core "
            f"(busy {r['load_core_busy_pct']:.0f}%, callee {r['callee_cpu_pct_core']:.0f}%); "
            f"measured core busy {r['measured_core_busy_pct']:.0f}% (others {r['other_on_measured_core_pct']:.0f}%)")
    if r["mode"] == "rust":
        line += (f"; latency p50 {r['latency_p50_us']} µs, p99 {r['latency_p99_us']} µs "
                 f"({r['latency_samples']} samples); engine {r['engine_datagrams_per_s']:,.0f} datagrams/s "
                 f"of {r['engine_bytes_per_datagram']:.0f} B, {r['ticks_per_s']:.0f} ticks/s, "
                 f"{r['rtc_timeouts_per_s']:,.0f} str0m timer runs/s, "
                 f"{r['engine_datagrams_in_per_s']:,.0f} datagrams in/s")
    print(line)


# ---------------------------------------------------------------- tests
@pytest.mark.usefixtures("examples")
@pytest.mark.parametrize("case", CASES)
def test_viewers(case: str, callee: Callee, tmp_path: Path, benchmark: pytest.FixtureRequest) -> None:
    kind, size = case.rsplit("-", 1)
    n = int(size)
    if kind == "floor":
        # the stream's own rate: the highest an engine run of this module delivered
        rate = max(_stream_rate.values(), default=FLOOR_RATE)
        result = benchmark.pedantic(lambda: _measure_floor(n, rate, tmp_path),  # type: ignore[attr-defined]
                                    rounds=1, iterations=1)
    else:
        mode = "rust" if kind == "engine" else "aiortc"
        result = benchmark.pedantic(lambda: _measure_viewers(mode, n, callee, tmp_path),  # type: ignore[attr-defined]
                                    rounds=1, iterations=1)
        if mode == "rust":
            _stream_rate[n] = result["rtp_per_viewer_per_s"]
        _print(result)
    benchmark.extra_info.update(result)  # type: ignore[attr-defined]
