"""What every benchmark shares: the two cores (the measured process on one,
its load generator on the other) and CPU time: this process's, another
process's (/proc/PID/stat) and a core's or the machine's (/proc/stat).

The measured process is pinned by ``benches/conftest.py`` when pytest
starts, so every thread it creates later (the Rust reactor, PyAV's encoder
threads) stays on ``MEASURED_CPU``. Load generators (``rtp_blaster``, the
loopback callee, nginx-rtmp, the UDP sender of the loopback reference) are
started inside :func:`on_load_cpu` and inherit ``LOAD_CPU``.

``SIPSTREAM_BENCH_CPUS=measured,load`` overrides the choice (default: the
last allowed CPU measured, the first one for load)."""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator


def _cpus() -> tuple[int, int]:
    chosen = os.environ.get("SIPSTREAM_BENCH_CPUS")
    if chosen:
        measured, load = (int(c) for c in chosen.split(","))
        return measured, load
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        raise RuntimeError(f"benchmarks need 2 CPUs (measured process and load generator apart), got {allowed}")
    return allowed[-1], allowed[0]


MEASURED_CPU, LOAD_CPU = _cpus()


def pin_measured() -> None:
    """Pin the calling thread (and the threads it starts) to MEASURED_CPU."""
    os.sched_setaffinity(0, {MEASURED_CPU})


@contextlib.contextmanager
def on_load_cpu() -> Iterator[None]:
    """Processes started inside this block run on LOAD_CPU (inherited at fork)."""
    os.sched_setaffinity(0, {LOAD_CPU})
    try:
        yield
    finally:
        os.sched_setaffinity(0, {MEASURED_CPU})


def process_cpu() -> float:
    """CPU seconds (user + system) of this whole process, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(stat_path: str) -> float:
    """utime + stime of a process or thread (``/proc/PID/stat`` or
    ``/proc/PID/task/TID/stat``), seconds; a process's includes its dead threads."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_times(cpu: int | None = None) -> tuple[float, float]:
    """(busy, total) seconds since boot of one CPU, or of the whole machine
    when ``cpu`` is None (/proc/stat: busy is everything but idle and iowait)."""
    label = "cpu " if cpu is None else f"cpu{cpu} "
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(label):
                v = [int(x) for x in line.split()[1:]]
                return (sum(v) - v[3] - v[4]) / TICKS, sum(v) / TICKS
    raise RuntimeError(f"{label.strip()} not in /proc/stat")
