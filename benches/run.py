"""Run every benchmark, repeated, and print the BENCHMARKS.md tables.

    .venv/bin/python benches/run.py [--runs N] [--only sip,media,...]

Each benchmark runs RUNS times as its own process, pinned to one core with
its load generator on the other (benchutil.py); the runs are interleaved
(sip, receive, media, rust, calls, rtmp, viewers, then again), so a burst of
noise on the machine spreads over several figures' runs instead of all of
one's.
Everything lands in benches/results/<UTC time>/ (gitignored; ``latest``
points to the newest): pytest-benchmark JSON per run, the log of each run,
and index.json (machine, commit, exit codes, load average around each run).
``benches/report.py`` prints the tables again from there, and compares two
result folders (``--compare``). Exit status: non-zero if any run failed."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import benchutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PYTHON = sys.executable

# pytest-benchmark settings of the in-process (many rounds) benchmarks: each
# run's figure is the median of its rounds.
ROUNDS = ["--benchmark-min-rounds=15", "--benchmark-max-time=0.5", "--benchmark-warmup=on",
          "--benchmark-warmup-iterations=3"]

# name -> (what runs, how many times by default)
BENCHES: dict[str, tuple[list[str], int]] = {
    "sip": (["benches/test_bench_sip.py", *ROUNDS], 7),
    "receive": (["benches/test_bench_receive.py", *ROUNDS], 7),
    "media": (["benches/test_bench_media.py", *ROUNDS], 7),
    "rust": (["target/release/examples/rtp_receive_throughput"], 7),
    "calls": (["benches/test_bench_calls.py"], 7),
    "rtmp": (["benches/test_bench_rtmp.py"], 7),
    # ~3.5 min a run (eight servers or floors of 8 s windows, up to 2,500 viewers)
    "viewers": (["benches/test_bench_viewers.py"], 3),
}

RUST_LINE = re.compile(r"^(recvmmsg only|recvmmsg \+ MediaSession)\s+received\s+(\d+)\s+frames\s+(\d+)\s+"
                       r"cpu\s+([\d.]+) ms\s+(\d+) packets/CPU-s")


def _machine() -> dict[str, object]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit + (" (uncommitted changes)" if dirty else ""),
    }


def _loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _build() -> None:
    examples = ["rtp_blaster", "rtp_receive_throughput", "whep_load", "sendmmsg_floor"]
    done = subprocess.run(["cargo", "build", "--release", "-q", *(a for e in examples for a in ("--example", e))],
                          cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"cargo could not build the benchmark examples ({', '.join(examples)})")


def _run_rust(cmd: list[str], out: Path, log: Path) -> int:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=lambda: os.sched_setaffinity(0, {benchutil.MEASURED_CPU}))
    log.write_text(done.stdout + done.stderr)
    runs: dict[str, list[dict[str, float]]] = {}
    for line in done.stdout.splitlines():
        m = RUST_LINE.match(line)
        if m:
            runs.setdefault(m[1], []).append({"packets": int(m[2]), "frames": int(m[3]), "cpu_ms": float(m[4]),
                                              "packets_per_cpu_s": float(m[5])})
    out.write_text(json.dumps({"rust": runs}, indent=1))
    return done.returncode if len(runs) == 2 else (done.returncode or 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, help="runs of each benchmark (default: 7)")
    parser.add_argument("--only", help="comma-separated: " + ",".join(BENCHES))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = set(names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    _build()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / stamp
    out.mkdir(parents=True)
    latest = RESULTS / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(stamp)
    index: dict[str, object] = {"machine": _machine(), "runs": []}
    runs: list[dict[str, object]] = index["runs"]  # type: ignore[assignment]
    most = max(args.runs or BENCHES[n][1] for n in names)
    started = time.monotonic()
    failed = 0
    for i in range(1, most + 1):
        for name in names:
            cmd, count = BENCHES[name]
            if i > (args.runs or count):
                continue
            result, log = out / f"{name}-{i}.json", out / f"{name}-{i}.log"
            load0, t0 = _loadavg(), time.monotonic()
            if name == "rust":
                rc = _run_rust([str(ROOT / cmd[0])], result, log)
            else:
                full = [PYTHON, "-m", "pytest", *cmd, "--benchmark-only", "-q", "-p", "no:cacheprovider",
                        f"--benchmark-json={result}", f"--junitxml={result.with_suffix('.xml')}"]
                with open(log, "w") as f:
                    rc = subprocess.run(full, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
            seconds = time.monotonic() - t0
            failed += rc != 0
            runs.append({"bench": name, "run": i, "rc": rc, "seconds": round(seconds, 1),
                         "loadavg_before": load0, "loadavg_after": _loadavg(), "json": result.name,
                         "log": log.name})
            (out / "index.json").write_text(json.dumps(index, indent=1))
            print(f"[{time.monotonic() - started:5.0f} s] {name} run {i}: "
                  f"{'ok' if rc == 0 else f'FAILED (exit {rc}, see {log})'} in {seconds:.0f} s", flush=True)
    index["total_seconds"] = round(time.monotonic() - started)
    (out / "index.json").write_text(json.dumps(index, indent=1))
    print(f"\nresults: {out}\n", flush=True)
    subprocess.run([PYTHON, str(HERE / "report.py"), str(out)])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
