"""Fixtures and helpers shared by the Azure ML tests (import them explicitly).

* ``records_endpoint`` / ``arrays_endpoint``: the real Azure ML inference server with the bundled
  taxi model, started once per test session on a free loopback port (shared across modules).
* ``fake_endpoint``: a factory for fault-injecting endpoints, all stopped after the test.
* ``run_scoring``: build, run and collect a small DirectRunner pipeline around ``ScoreRows``.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.serving.fake import FakeEndpoint
from transforms.functions.azureml import ScoreRows, Timing

# -- the real local endpoint, one per style per session ---------------------------------------

_SHARED: dict[str, Any] = {}
_SHARED_LOCK = threading.Lock()


def _model_cache() -> str:
    with _SHARED_LOCK:
        if "cache" not in _SHARED:
            if os.environ.get("ASA_BEAM_TEST_CACHE"):  # reuse a trained model across runs
                _SHARED["cache"] = os.environ["ASA_BEAM_TEST_CACHE"]
            else:
                _SHARED["cache"] = tempfile.mkdtemp(prefix="asa-beam-model-")
                atexit.register(shutil.rmtree, _SHARED["cache"], ignore_errors=True)
        return _SHARED["cache"]


def _shared_endpoint(style: str):
    """Start (or reuse) the endpoint for ``style``; a refcount stops it after its last user."""
    from pipelines.serving.server import LocalEndpoint

    with _SHARED_LOCK:
        entry = _SHARED.get(style)
        if entry is None:
            ep = LocalEndpoint(style=style, cache_dir=_SHARED.get("cache") or None)
            entry = _SHARED[style] = [ep, 0]
        entry[1] += 1
    ep = entry[0]
    if ep.port is None or ep._proc is None:
        ep.start()
    return ep


def _release_endpoint(style: str) -> None:
    with _SHARED_LOCK:
        entry = _SHARED.get(style)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _SHARED[style]
    entry[0].stop()


def model_cache_dir() -> str:
    """A per-session model cache (never the repository, never ~/.cache during tests)."""
    return _model_cache()


@pytest.fixture(scope="session")
def records_endpoint():
    model_cache_dir()
    ep = _shared_endpoint("records")
    try:
        yield ep
    finally:
        _release_endpoint("records")


@pytest.fixture(scope="session")
def arrays_endpoint():
    model_cache_dir()
    ep = _shared_endpoint("arrays")
    try:
        yield ep
    finally:
        _release_endpoint("arrays")


# -- fault-injecting endpoints ----------------------------------------------------------------

@pytest.fixture
def fake_endpoint():
    """``fake_endpoint(style="arrays", **kwargs)`` → a started FakeEndpoint, stopped after the test."""
    started: list[FakeEndpoint] = []

    def make(style: str = "arrays", **kwargs) -> FakeEndpoint:
        ep = FakeEndpoint(style, **kwargs).start()
        started.append(ep)
        return ep

    try:
        yield make
    finally:
        for ep in started:
            ep.stop()


# -- injected time (module-level functions: the DoFn is pickled) ----------------------------------

def no_sleep(_seconds: float) -> None:
    """Retries never really wait in tests."""


def half_jitter() -> float:
    return 0.5


NO_WAIT = Timing(sleep=no_sleep, jitter=half_jitter)


# -- running a pipeline -----------------------------------------------------------------------

_SINKS: dict[str, list] = {}
_SINK_LOCK = threading.Lock()
_COUNTER = itertools.count()


class _Collect(beam.DoFn):
    def __init__(self, token: str, with_timestamps: bool):
        self._token = token
        self._with_ts = with_timestamps

    def process(self, element, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        value = (element, timestamp, window) if self._with_ts else element
        with _SINK_LOCK:
            _SINKS[self._token].append(value)


def collect(pcoll, label: str, with_timestamps: bool = False) -> Callable[[], list]:
    """Attach a sink; the returned function gives what reached it (after the pipeline ran)."""
    token = f"{label}-{next(_COUNTER)}-{os.getpid()}"
    with _SINK_LOCK:
        _SINKS[token] = []
    pcoll | f"Collect{label}" >> beam.ParDo(_Collect(token, with_timestamps))
    return lambda: list(_SINKS[token])


class Outcome(NamedTuple):
    rows: list
    failed: list
    metrics: dict  # metric name → committed value (counters) or DistributionResult


def pipeline_options(*extra: str) -> PipelineOptions:
    return PipelineOptions(["--runner", "DirectRunner", *extra])


def run_scoring(rows: Iterable[dict], transform: ScoreRows, *, streaming: bool = False) -> Outcome:
    """rows → transform; returns what came out of "rows" and "failed", and the asa.* metrics."""
    options = pipeline_options("--streaming") if streaming else pipeline_options()
    p = beam.Pipeline(options=options)
    out = p | beam.Create(list(rows)) | transform
    got_rows = collect(out["rows"], "rows")
    got_failed = collect(out["failed"], "failed")
    result = p.run()
    result.wait_until_finish()
    return Outcome(got_rows(), got_failed(), metrics_of(result))


def metrics_of(result) -> dict:
    found = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("asa"))
    out: dict = {}
    for m in found["counters"]:
        out[m.key.metric.name] = out.get(m.key.metric.name, 0) + m.committed
    for m in found["distributions"]:
        out[m.key.metric.name] = m.committed
    return out
