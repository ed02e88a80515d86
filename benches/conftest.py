"""Benchmarks run pinned: this process on MEASURED_CPU, load generators on
LOAD_CPU (see benchutil.py), and pytest-benchmark times with this process's
CPU time (``time.process_time``) unless ``--benchmark-timer`` says
otherwise. ``make bench`` (benches/run.py) runs them all, repeated, with
the results in benches/results/."""

from __future__ import annotations

from typing import Any

import benchutil
import pytest

DEFAULT_TIMER = "time.perf_counter"


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark reads its timer
def pytest_configure(config: Any) -> None:
    benchutil.pin_measured()
    if getattr(config.option, "benchmark_timer", None) == DEFAULT_TIMER:
        config.option.benchmark_timer = "time.process_time"
