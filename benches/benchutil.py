"""What every benchmark shares: the two cores (the measured process on one,
its load generator on the other) and process CPU time.

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
