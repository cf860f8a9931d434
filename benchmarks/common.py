"""Shared helpers for the benchmarks: timed pipelines on the local DirectRunner, data files."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam

from pipelines.runners import LocalDirectRunner, pipeline_options


def timed_pipeline(build: Callable[[beam.Pipeline], None], argv: list[str] | None = None) -> float:
    """Seconds to build and run a pipeline to completion on the Prism-free DirectRunner."""
    options = pipeline_options(argv or [])
    start = time.perf_counter()
    with beam.Pipeline(runner=LocalDirectRunner(), options=options) as p:
        build(p)
    return time.perf_counter() - start


def workdir(name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"asa-beam-bench-{name}-"))
    return path


def best_of(n: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(n))


def ratio_line(label: str, rows: int, seconds: float, baseline_seconds: float, target: float) -> str:
    rate, base = rows / seconds, rows / baseline_seconds
    ok = "meets" if rate / base >= target else "BELOW"
    return (f"{label}: {rate:,.0f} rows/s vs baseline {base:,.0f} rows/s = {rate / base:.2f}x "
            f"(target >= {target}x: {ok})")
