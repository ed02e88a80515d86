"""Endurance of a whole ``sipstream serve`` process (issue 12): does it keep
its memory, file descriptors, threads and asyncio tasks flat over many calls
and hours, and does SIGTERM end every call and finish every recording?

    .venv/bin/python benches/endurance.py cycles [--calls 10000] [--concurrency 20] [--via kamailio]
    .venv/bin/python benches/endurance.py sigterm [--calls 100] [--record 20]
    .venv/bin/python benches/endurance.py soak [--minutes 60] [--calls 50] [--viewers 200]

The server is a subprocess, started by this script as ``endurance.py _serve``:
``sipstream serve`` itself (``sipstream.cli.main``) with SIPSTREAM_* settings
in its environment, plus a probe that answers SIGUSR2, on its event loop, by
writing the number of asyncio tasks, the live objects of sipstream's own
classes and the lengths of their dict/set/list attributes to a file. Nothing
of the server is changed; its RSS (VmRSS), open fds and threads are read from
/proc, so they are its own and not this script's. The far end is the
built-in ``LoopbackCallee`` in this process, which keeps every SIP request
it received (the BYEs are counted from there); ``cycles --via kamailio``
calls sipp registered behind Kamailio instead (benches/farend.py).

- ``cycles``: CALLS start/terminate cycles through the REST API (startup,
  find until ESTABLISHED, terminate, find until FINISH or forgotten),
  CONCURRENCY at a time. Every SAMPLE_EVERY calls the launching pauses, the
  calls in flight finish and are forgotten (call_keep_finished_s), and the
  server is sampled. Slope: least squares per 1,000 calls over the samples
  from WARMUP calls on (the first 1,000 fill caches and pools).
- ``sigterm``: CALLS live calls, RECORD of them recorded, SIGTERM; the time
  to exit (goal: within shutdown_timeout_s), a BYE at the callee for every
  call, and every recording plays (ffprobe: a positive duration).
- ``soak``: CALLS live calls watched by VIEWERS WHEP viewers
  (``target/release/examples/whep_load``, split over VIEWER_STREAMS streams)
  for MINUTES; sampled every minute; slope per hour after the warm-up; the
  viewers' delivery and loss from whep_load's JSON.

Each prints a summary and its JSON result, also written to
``benches/results/endurance-<mode>-<UTC time>.json``. Exit 1 when a goal is
not met (growth is reported, not judged: a slope's noise depends on the run)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from farend import KamailioSippFarEnd, LoopbackFarEnd

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WHEP_LOAD = ROOT / "target" / "release" / "examples" / "whep_load"
PROBE_ENV = "ENDURANCE_PROBE_FILE"  # not SIPSTREAM_*: the server would read it as a setting
FINAL = ("FINISH", "FAILED", "BUSY")


# ------------------------------------------------------- the server side
def _serve(argv: list[str]) -> int:
    """``sipstream serve`` with the SIGUSR2 probe (runs in the server process)."""
    import gc
    import tracemalloc

    from sipstream import cli

    probe_file = os.environ.get(PROBE_ENV)
    loops: list[asyncio.AbstractEventLoop] = []
    previous: list[tracemalloc.Snapshot] = []

    class RecordingPolicy(asyncio.DefaultEventLoopPolicy):
        # asyncio.run() makes its loop through the policy: that is how the
        # probe finds the server's loop without touching the server.
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            loop = super().new_event_loop()
            loops.append(loop)
            return loop

    def probe() -> None:
        t0 = time.perf_counter()
        # what a full collection frees is garbage, not a leak: count what survives it
        collected = gc.collect()
        objects = gc.get_objects()
        types: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for obj in objects:
            cls = type(obj)
            module = cls.__dict__.get("__module__")
            if not isinstance(module, str) or not module.startswith("sipstream"):
                continue
            name = f"{module.removeprefix('sipstream.')}.{cls.__qualname__}"
            types[name] += 1
            attrs = getattr(obj, "__dict__", None)
            for attr, value in (attrs.items() if isinstance(attrs, dict) else ()):
                if isinstance(value, (dict, set, list)):
                    sizes[f"{name}.{attr}"] += len(value)
        result = {
            "tasks": len(asyncio.all_tasks(loops[-1])),
            # Python's own heap (pymalloc blocks) against glibc's, which the
            # Rust core shares: tells a Python leak from a native one
            "py_blocks": sys.getallocatedblocks(),
            **_mallinfo(),
            "gc_objects": len(objects),
            "gc_collected": collected,
            "types": dict(types),
            "containers": dict(sizes),
            "probe_ms": round((time.perf_counter() - t0) * 1000, 1),
        }
        del objects
        if tracemalloc.is_tracing():
            # where Python memory grew since the last probe, by allocating call stack
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")])
            if previous:
                result["tracemalloc_growth"] = [
                    {"where": " <- ".join(f"{f.filename.rpartition('/site-packages/')[2]}:{f.lineno}"
                                          for f in reversed(d.traceback[-4:])),
                     "bytes": d.size_diff, "blocks": d.count_diff}
                    for d in snapshot.compare_to(previous[-1], "traceback")[:15] if d.size_diff > 0]
            previous[:] = [snapshot]
        assert probe_file is not None
        tmp = probe_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f)
        os.replace(tmp, probe_file)

    if probe_file:
        asyncio.set_event_loop_policy(RecordingPolicy())
        # the handler only schedules the probe: it then runs on the loop, between callbacks
        signal.signal(signal.SIGUSR2, lambda _sig, _frame: loops[-1].call_soon_threadsafe(probe) if loops else None)
    return cli.main(["serve", *argv])


def _mallinfo() -> dict[str, int]:
    """glibc's heap of this process (Rust and C allocations and Python's
    large objects): bytes in use, and bytes free but kept (fragmentation)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    # summed over every arena; hblkhd is what lives in mmap()ed chunks
    return {"malloc_in_use_kb": (info.uordblks + info.hblkhd) // 1024, "malloc_free_kb": info.fordblks // 1024,
            "malloc_arena_kb": info.arena // 1024}


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def _loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class ServerProcess:
    """``endurance.py _serve`` with the given settings; its log in a file."""

    def __init__(self, workdir: Path, media_ports: tuple[int, int], tracemalloc_frames: int = 0,
                 **settings: Any) -> None:
        self.workdir = workdir
        self.http_port = _free_tcp_port()
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = workdir / "server.log"
        self.probe_path = workdir / "probe.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSTREAM_")}
        values = {"rest_rate_limit": 0, "webrtc_port": 0, "sip_port": 0, "ws_port": 0, "hls_port": 0, "rtsp_port": 0,
                  "media_port_from": media_ports[0],
                  "media_port_to": media_ports[1], "call_keep_finished_s": 0.5, **settings}
        env.update({f"SIPSTREAM_{k.upper()}": str(v) for k, v in values.items()})
        env[PROBE_ENV] = str(self.probe_path)
        if tracemalloc_frames:
            env["PYTHONTRACEMALLOC"] = str(tracemalloc_frames)  # slows the server: for finding a leak, not for RSS
        self.settings = values
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_serve", "--http-port",
                                      str(self.http_port), "--ip", "127.0.0.1"],
                                     cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    async def ready(self, http: Any, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                async with http.get(f"{self.base_url}/health") as res:
                    if res.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, chars: int = 1500) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    async def probe(self, timeout: float = 120.0) -> dict[str, Any] | None:
        """The server's own view (asyncio tasks, sipstream objects), or None
        when it did not answer in time."""
        self.probe_path.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.probe_path.exists():
                return json.loads(self.probe_path.read_text())  # type: ignore[no-any-return]
            await asyncio.sleep(0.05)
        return None

    async def sample(self, http: Any, **extra: Any) -> dict[str, Any]:
        status = _proc_status(self.pid)
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        async with http.get(f"{self.base_url}/health") as res:
            health = await res.json(content_type=None)
        probe = await self.probe()
        return {
            **extra,
            "t_s": round(time.monotonic(), 1),
            "rss_kb": status["VmRSS"],
            "hwm_kb": status["VmHWM"],
            "fds": fds,
            "threads": status["Threads"],
            "tasks": probe["tasks"] if probe else None,
            "gc_objects": probe["gc_objects"] if probe else None,
            **{k: probe.get(k) for k in ("py_blocks", "malloc_in_use_kb", "malloc_free_kb") if probe},
            "_tracemalloc": probe.get("tracemalloc_growth") if probe else None,
            "live_calls": health.get("calls"),
            "live_streams": health.get("streams"),
            "viewers": health.get("viewers"),
            "loadavg": _loadavg(),
            "_probe": probe,
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# ------------------------------------------------------------- REST calls
async def _post(http: Any, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    # aiohttp's json= sends Content-Type: application/json, which the API requires
    async with http.post(url, json=body) as res:
        text = await res.text()
        try:
            return res.status, json.loads(text) if text else None
        except ValueError:
            return res.status, text


async def _status(http: Any, base: str, call_id: str) -> str | None:
    """The call's status, or None once the server has forgotten it (404)."""
    code, body = await _post(http, f"{base}/rest-api/call/find", {"callId": call_id})
    if code == 404:
        return None
    if code != 200:
        raise RuntimeError(f"call/find {call_id}: {code} {body}")
    return str(body[0]["status"])


async def _wait_status(http: Any, base: str, call_id: str, want: tuple[str | None, ...], timeout: float,
                       poll_s: float) -> str | None:
    deadline = time.monotonic() + timeout
    status: str | None = "?"
    while time.monotonic() < deadline:
        status = await _status(http, base, call_id)
        if status in want or status in FINAL or status is None:
            return status
        await asyncio.sleep(poll_s)
    return status


async def _start_call(http: Any, base: str, call_id: str, stream: str, far: Any, poll_s: float = 0.02) -> str:
    """Start a call to the far end and wait for ESTABLISHED; returns "ok" or what went wrong."""
    code, body = await _post(http, f"{base}/rest-api/call/startup", far.body(call_id, stream))
    if code != 200:
        return f"startup {code}: {str(body)[:120]}"
    status = await _wait_status(http, base, call_id, ("ESTABLISHED",), 15.0, poll_s)
    return "ok" if status == "ESTABLISHED" else f"not established: {status}"


async def _end_call(http: Any, base: str, call_id: str, poll_s: float = 0.02) -> str:
    code, body = await _post(http, f"{base}/rest-api/call/terminate", {"callId": call_id})
    if code != 200:
        return f"terminate {code}: {str(body)[:120]}"
    status = await _wait_status(http, base, call_id, ("FINISH",), 15.0, poll_s)
    return "ok" if status in ("FINISH", None) else f"not finished: {status}"


# --------------------------------------------------------------- figures
def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


RESOURCES = ("rss_kb", "fds", "threads", "tasks", "gc_objects", "py_blocks", "malloc_in_use_kb", "malloc_free_kb")


def _growth(samples: list[dict[str, Any]], x_key: str, x_unit: float, x_from: float) -> dict[str, Any]:
    """Per resource: first and last sample, and the slope per x_unit over the
    samples at x >= x_from (after the warm-up)."""
    after = [s for s in samples if s[x_key] >= x_from]
    out: dict[str, Any] = {}
    for key in RESOURCES:
        pts = [(s[x_key], s[key]) for s in after if s.get(key) is not None]
        slope = _slope([p[0] for p in pts], [float(p[1]) for p in pts]) if len(pts) >= 2 else None
        out[key] = {"before": samples[0].get(key), "after_warmup": pts[0][1] if pts else None,
                    "after": samples[-1].get(key),
                    "slope_per_unit": None if slope is None else round(slope * x_unit, 3)}
    return out


def _object_growth(samples: list[dict[str, Any]], x_from: float, x_key: str) -> dict[str, Any]:
    """sipstream objects and container lengths that grew between the first
    sample after the warm-up and the last (what to look at for a leak)."""
    after = [s for s in samples if s[x_key] >= x_from and s.get("_probe")]
    if len(after) < 2:
        return {}
    first, last = after[0]["_probe"], after[-1]["_probe"]
    out: dict[str, Any] = {}
    for kind in ("types", "containers"):
        grew = {k: [first[kind].get(k, 0), v] for k, v in last[kind].items() if v > first[kind].get(k, 0)}
        out[kind] = dict(sorted(grew.items(), key=lambda kv: kv[1][0] - kv[1][1])[:25])
    return out


def _public(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if not k.startswith("_")} for s in samples]


def _machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": os.cpu_count(), "commit": commit, "loadavg_start": _loadavg()}


def _print_growth(growth: dict[str, Any], unit: str) -> None:
    for key, g in growth.items():
        print(f"  {key:10} before {g['before']}, after warm-up {g['after_warmup']}, after {g['after']}; "
              f"slope {g['slope_per_unit']} per {unit}")


def _workdir(mode: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"sipstream-endurance-{mode}-"))


# ----------------------------------------------------------------- cycles
async def cycles(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    machine = _machine()
    work = _workdir("cycles")
    if args.via == "kamailio":
        far: Any = await KamailioSippFarEnd.start(work, args.calls, media_seconds=30)
    else:
        far = await LoopbackFarEnd.start(160, 120, 1.0)
    server = ServerProcess(work, (args.media_port_from, args.media_port_from + 999),
                           tracemalloc_frames=args.tracemalloc)
    keep = float(server.settings["call_keep_finished_s"])
    failures: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []
    done = 0
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            await server.ready(http)
            samples.append(await server.sample(http, calls=0))
            print(f"server pid {server.pid}, {server.base_url}; before: {_brief(samples[-1])}", flush=True)
            gate = asyncio.Semaphore(args.concurrency)

            async def one(i: int) -> None:
                nonlocal done
                async with gate:
                    call_id = f"cycle-{i}"
                    try:
                        outcome = await _start_call(http, server.base_url, call_id, f"cycle{i}", far)
                        end = await _end_call(http, server.base_url, call_id)
                        if outcome == "ok":
                            outcome = end
                        elif end != "ok" and not end.startswith("terminate 404"):
                            outcome += f"; {end}"
                    except (aiohttp.ClientError, RuntimeError, OSError) as exc:
                        outcome = f"{type(exc).__name__}: {exc}"[:160]
                    if outcome != "ok":
                        failures[outcome] += 1
                    done += 1

            for batch_start in range(0, args.calls, args.sample_every):
                t0 = time.monotonic()
                batch = range(batch_start, min(args.calls, batch_start + args.sample_every))
                await asyncio.gather(*(one(i) for i in batch))
                seconds = time.monotonic() - t0
                # every call of the batch finished: let the server forget them
                await asyncio.sleep(keep + 1.0)
                samples.append(await server.sample(http, calls=done, batch_s=round(seconds, 1)))
                print(f"[{time.monotonic() - started:5.0f} s] {done} calls ({len(batch) / seconds:.0f}/s), "
                      f"{sum(failures.values())} failed: {_brief(samples[-1])}", flush=True)
            # what is only held for a while (SIP transactions: 32 s) is gone after this
            await asyncio.sleep(args.settle)
            settled = await server.sample(http, calls=done, settled_s=args.settle)
            print(f"{args.settle:.0f} s later: {_brief(settled)}", flush=True)
            alive = server.proc.poll() is None
    finally:
        server.stop()
        await far.stop()
    invites, byes = far.sip_ids("INVITE"), far.sip_ids("BYE")
    growth = _growth(samples, "calls", 1000, args.warmup)
    where: dict[str, list[int]] = {}
    for sample in samples:
        if sample["calls"] > args.warmup:
            for d in sample.get("_tracemalloc") or []:
                total = where.setdefault(d["where"], [0, 0])
                total[0] += d["bytes"]
                total[1] += d["blocks"]
    result = {
        "mode": "cycles", "far_end": far.name, "machine": machine, "calls": args.calls,
        "concurrency": args.concurrency,
        "seconds": round(time.monotonic() - started, 1), "failures": dict(failures.most_common(20)),
        "failed": sum(failures.values()), "server_alive_at_end": alive,
        "callee_invites": len(invites), "callee_byes": len(byes), "invites_without_bye": len(invites - byes),
        "warmup_calls": args.warmup, "growth_per_1000_calls": growth,
        "object_growth": _object_growth(samples, args.warmup, "calls"),
        "settled": _public([settled])[0],
        "tracemalloc_growth_after_warmup": [{"where": k, "bytes": v[0], "blocks": v[1]} for k, v in
                                            sorted(where.items(), key=lambda kv: -kv[1][0])[:15]],
        "samples": _public(samples), "settings": server.settings, "server_log": str(server.log_path),
        "loadavg_end": _loadavg(),
    }
    print(f"\ncycles: {args.calls} calls, {args.concurrency} at a time, in {result['seconds']} s; "
          f"{result['failed']} failed; callee saw {len(invites)} INVITEs, {len(byes)} BYEs; "
          f"server alive at the end: {alive}")
    _print_growth(growth, "1,000 calls")
    result["ok"] = result["failed"] == 0 and alive
    return result


def _brief(s: dict[str, Any]) -> str:
    return (f"RSS {s['rss_kb'] / 1024:.1f} MB, {s['fds']} fds, {s['threads']} threads, {s['tasks']} tasks, "
            f"{s['gc_objects']} objects, malloc in use {(s.get('malloc_in_use_kb') or 0) / 1024:.1f} MB, "
            f"live calls {s['live_calls']}, load {s['loadavg']:.2f}")


# ---------------------------------------------------------------- sigterm
def _ffprobe_duration(path: Path) -> float | None:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                           "default=noprint_wrappers=1:nokey=1", str(path)], capture_output=True, text=True)
    try:
        return float(done.stdout.strip())
    except ValueError:
        return None


async def sigterm(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    if shutil.which("ffprobe") is None:
        raise SystemExit("ffprobe is not installed (the recordings are checked with it)")
    machine = _machine()
    work = _workdir("sigterm")
    records = work / "records"
    far = await LoopbackFarEnd.start(160, 120, 1.0)
    server = ServerProcess(work, (args.media_port_from, args.media_port_from + 999), record_dir=records)
    timeout = float(server.settings.get("shutdown_timeout_s", 8.0))
    failures: Counter[str] = Counter()
    try:
        async with aiohttp.ClientSession() as http:
            await server.ready(http)
            gate = asyncio.Semaphore(20)

            async def start(i: int) -> None:
                async with gate:
                    outcome = await _start_call(http, server.base_url, f"live-{i}", f"live{i}", far, 0.1)
                    if outcome != "ok":
                        failures[outcome] += 1

            await asyncio.gather(*(start(i) for i in range(args.calls)))
            established = args.calls - sum(failures.values())
            recording_errors: list[str] = []
            for i in range(args.record):
                code, body = await _post(http, f"{server.base_url}/rest-api/recorder/startup",
                                         {"streamName": f"live{i}"})
                if code != 200:
                    recording_errors.append(f"live{i}: {code} {body}")
            await asyncio.sleep(args.record_s)  # a few 1 s fragments in every file
            before = await server.sample(http, calls=established)
        print(f"{established} calls up, {args.record - len(recording_errors)} recorded: {_brief(before)}",
              flush=True)
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        while server.proc.poll() is None and time.monotonic() - t0 < timeout + 30:
            await asyncio.sleep(0.01)  # the callee (this loop) keeps answering the BYEs meanwhile
        exit_s = time.monotonic() - t0
        exit_code = server.proc.poll()
        await asyncio.sleep(0.5)  # BYEs still in flight on loopback
    finally:
        server.stop()
        await far.stop()
    invites, byes = far.sip_ids("INVITE"), far.sip_ids("BYE")
    files = sorted(p for p in records.rglob("*") if p.is_file())
    durations = {p.name: _ffprobe_duration(p) for p in files}
    unplayable = [name for name, d in durations.items() if d is None or d <= 0]
    log = server.log_path.read_text(errors="replace")
    result = {
        "mode": "sigterm", "machine": machine, "calls": args.calls, "established": established,
        "start_failures": dict(failures), "recordings_asked": args.record, "recording_errors": recording_errors,
        "shutdown_timeout_s": timeout, "exit_s": round(exit_s, 3), "exit_code": exit_code,
        "callee_invites": len(invites), "callee_byes": len(byes), "invites_without_bye": len(invites - byes),
        "files": len(files), "durations_s": durations, "unplayable": unplayable,
        "log_errors": [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line][:20],
        "before": _public([before])[0], "server_log": str(server.log_path), "loadavg_end": _loadavg(),
    }
    ok = (exit_code == 0 and exit_s <= timeout and not invites - byes and established == args.calls
          and len(files) >= args.record - len(recording_errors) and not unplayable and not recording_errors)
    result["ok"] = ok
    print(f"\nsigterm: {established}/{args.calls} calls up, {args.record} recorded; exit {exit_code} in "
          f"{exit_s:.2f} s (limit {timeout:.0f} s); callee: {len(byes)} BYEs for {len(invites)} INVITEs "
          f"({len(invites - byes)} without); {len(files)} files, {len(unplayable)} unplayable, durations "
          f"{min((d for d in durations.values() if d), default=0):.2f}–"
          f"{max((d for d in durations.values() if d), default=0):.2f} s")
    return result


# ------------------------------------------------------------------- soak
async def soak(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    if not WHEP_LOAD.exists():
        built = subprocess.run(["cargo", "build", "--release", "-q", "--example", "whep_load"], cwd=ROOT)
        if built.returncode != 0:
            raise SystemExit("cargo could not build rust/examples/whep_load")
    machine = _machine()
    work = _workdir("soak")
    far = await LoopbackFarEnd.start(320, 240, 2.0)
    server = ServerProcess(work, (args.media_port_from, args.media_port_from + 999), max_viewers_per_client=0,
                           max_viewers=max(1000, args.viewers))
    failures: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []
    clients: list[tuple[subprocess.Popen[bytes], Path]] = []
    total_s = args.minutes * 60
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as http:
            await server.ready(http)
            samples.append(await server.sample(http, minute=0.0))
            gate = asyncio.Semaphore(20)

            async def start(i: int) -> None:
                async with gate:
                    outcome = await _start_call(http, server.base_url, f"soak-{i}", f"soak{i}", far, 0.1)
                    if outcome != "ok":
                        failures[outcome] += 1

            await asyncio.gather(*(start(i) for i in range(args.calls)))
            await asyncio.sleep(1.0)  # first keyframes in
            per_stream = [args.viewers // args.viewer_streams + (1 if k < args.viewers % args.viewer_streams else 0)
                          for k in range(args.viewer_streams)]
            # past the soak's end, so the last sample still has every viewer (the joins and warm-up come first)
            client_s = total_s - (time.monotonic() - started) + 20
            for k, n in enumerate(per_stream):
                out = work / f"whep_load-{k}.json"
                log = open(work / f"whep_load-{k}.log", "w")
                clients.append((subprocess.Popen(
                    [str(WHEP_LOAD), "--url", f"{server.base_url}/whep/soak{k}", "--viewers", str(n),
                     "--duration", f"{client_s:.0f}", "--warmup", "5", "--rate", "50", "--json", str(out),
                     "--summary-only"], stdout=log, stderr=subprocess.STDOUT), out))
            print(f"server pid {server.pid}: {args.calls - sum(failures.values())} calls up, {args.viewers} viewers "
                  f"joining on {args.viewer_streams} streams for {client_s:.0f} s", flush=True)
            next_sample = started + 60
            while time.monotonic() - started < total_s:
                await asyncio.sleep(max(0.0, min(next_sample, started + total_s) - time.monotonic()))
                if server.proc.poll() is not None:
                    break
                if time.monotonic() >= next_sample:
                    samples.append(await server.sample(http, minute=round((time.monotonic() - started) / 60, 2)))
                    print(f"[{samples[-1]['minute']:5.1f} min] {_brief(samples[-1])}, viewers "
                          f"{samples[-1]['viewers']}", flush=True)
                    next_sample += 60
            alive = server.proc.poll() is None
            loads = []
            for proc, out in clients:
                try:
                    rc = await asyncio.to_thread(proc.wait, 120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc = proc.wait()
                loads.append({"exit": rc, **(json.loads(out.read_text()) if out.exists() else {})})
            still_up = 0
            for i in range(args.calls):
                if alive and await _status(http, server.base_url, f"soak-{i}") == "ESTABLISHED":
                    still_up += 1
    finally:
        for proc, _ in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stop()
        await far.stop()
    warm = min(args.warmup_minutes, args.minutes / 2)
    growth = _growth(samples, "minute", 60, warm)
    viewers = {
        "connected": sum(int(v.get("connected", 0)) for v in loads),
        "failed": sum(len(v.get("failed", [])) for v in loads),
        "delivery_min": min((float(v["delivery"]) for v in loads if "delivery" in v), default=None),
        "session_delivery_min": min((float(v["session_delivery"]) for v in loads if "session_delivery" in v),
                                    default=None),
        "lost_total": sum(int(v.get("lost_total", 0)) for v in loads),
        "ice_disconnects": sum(int(v.get("ice_disconnects", 0)) for v in loads),
        "window_s": min((float(v["window_s"]) for v in loads if "window_s" in v), default=None),
        "rtp_per_viewer_per_s": [v.get("rtp_per_viewer_per_s") for v in loads],
        "exits": [v["exit"] for v in loads],
    }
    result = {
        "mode": "soak", "machine": machine, "minutes": args.minutes, "calls": args.calls,
        "calls_failed_to_start": dict(failures), "calls_established_at_end": still_up,
        "viewers_asked": args.viewers, "viewers": viewers, "server_alive_at_end": alive,
        "warmup_minutes": warm, "growth_per_hour": growth,
        "object_growth": _object_growth(samples, warm, "minute"),
        "samples": _public(samples), "settings": server.settings, "server_log": str(server.log_path),
        "loadavg_end": _loadavg(),
    }
    result["ok"] = (alive and not failures and still_up == args.calls and viewers["connected"] == args.viewers
                    and (viewers["delivery_min"] or 0) >= 0.999)
    print(f"\nsoak: {args.minutes} min, {args.calls} calls ({still_up} still up at the end), "
          f"{viewers['connected']}/{args.viewers} viewers connected, delivery min {viewers['delivery_min']}, "
          f"lost {viewers['lost_total']}, ICE disconnects {viewers['ice_disconnects']}; server alive: {alive}")
    _print_growth(growth, "hour")
    return result


# ------------------------------------------------------------------- main
def write_result(result: dict[str, Any], name: str, path: Path | None) -> int:
    """Print the result and write it to ``path`` (default
    benches/results/NAME-<UTC time>.json); the exit code: 0 when its goal was met."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = path or RESULTS / f"{name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1)
    path.write_text(text)
    print(text)
    print(f"\n{name}: {'goal met' if result['ok'] else 'GOAL NOT MET'}; result in {path}")
    return 0 if result["ok"] else 1


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        return _serve(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("cycles", help="call start/terminate cycles; RSS, fds, threads, tasks per 1,000 calls")
    p.add_argument("--calls", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--via", choices=("loopback", "kamailio"), default="loopback",
                   help="the far end: the loopback callee, or sipp registered behind Kamailio (benches/farend.py)")
    p.add_argument("--sample-every", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=1000, help="calls before the samples that the slope uses")
    p.add_argument("--media-port-from", type=int, default=21000)
    p.add_argument("--settle", type=float, default=40.0, help="seconds idle before a last sample")
    p.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                   help="run the server under tracemalloc with this many frames, to find where memory grows")
    p = sub.add_parser("sigterm", help="SIGTERM with live and recorded calls")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--record", type=int, default=20, help="how many of the calls are recorded")
    p.add_argument("--record-s", type=float, default=4.0, help="seconds of recording before the SIGTERM")
    p.add_argument("--media-port-from", type=int, default=22000)
    p = sub.add_parser("soak", help="live calls and WHEP viewers for a long time; sampled every minute")
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--viewers", type=int, default=200)
    p.add_argument("--viewer-streams", type=int, default=4, help="the viewers watch this many of the calls")
    p.add_argument("--warmup-minutes", type=float, default=5, help="samples before this are left out of the slope")
    p.add_argument("--media-port-from", type=int, default=23000)
    for p in sub.choices.values():
        p.add_argument("--json", type=Path, help="where to write the result (default benches/results/...)")
    args = parser.parse_args()
    runner = {"cycles": cycles, "sigterm": sigterm, "soak": soak}[args.mode]
    return write_result(asyncio.run(runner(args)), f"endurance-{args.mode}", args.json)


if __name__ == "__main__":
    sys.exit(main())
