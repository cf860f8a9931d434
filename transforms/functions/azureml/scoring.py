"""The scoring path of ``udf.<alias>(x)``: prepare → batch → score (bisecting rejections).

Shape of the pipeline segment (``ScoreRows``)::

    rows ─ Prepare ─ (shard, chunk) ─ GroupIntoBatches ─ ScoreBatches ─┬─▶ "rows"   (each row once:
                                                                        └─▶ "failed"  here or there)

* **Prepare** (stateless, fused with whatever produced the rows) evaluates the CASE guard and
  the argument and converts the argument to the request row the swagger declares, so rows
  that are NULL or of the wrong type are never sent. It packs rows into chunks: the original
  row, its request row (or a marker: guard false / failed) and its timestamp. A chunk crosses
  into the batching step as *one* pickled ``bytes`` value keyed by a small int shard: stage
  boundaries cost per element, not per byte (measured.md).
* **GroupIntoBatches** keyed by shard (``parallel_requests`` shards). For bounded input, chunks
  hold ``ceil(batch_size / chunks_per_batch)`` rows and ``chunks_per_batch`` of them make a
  batch; a GroupByKey per shard cut into batches does this (Beam's GroupIntoBatches declares a
  processing-time timer, which would push the DirectRunner off its fast runner, and a stateful
  DoFn with an end-of-window flush lost rows of a second call site on the FnApiRunner). For
  unbounded input (streaming), chunks are single rows and Beam's ``GroupIntoBatches(batch_size,
  max_buffering_s)`` batches them, so partial batches leave on time — ASA's semantics exactly.
* **ScoreBatches** owns one pooled HTTP session and a pool of ``parallel_requests`` threads. It
  cuts what it is handed into requests of at most ``batch_size`` rows (ASA's "max batch count"
  is never exceeded), keeps up to ``parallel_requests`` of them in flight, and emits every row
  once, with its own timestamp and window: scored, passed through (guard false), or
  dead-lettered. Guard-false and failed rows travel with the chunks so that the segment has no
  Flatten: on the FnApiRunner a Flatten materializes its input (an extra stage boundary).
* ``batching: bundle`` gives bundle-local batches instead: Prepare numbers each bundle's rows
  and keys them by ``(bundle, number // batch_size)``, a GroupByKey gathers each batch,
  ScoreBatches scores it before returning, and two FlatMaps split its ``(tag, value)`` output.
  (Runners without user state, such as Beam's DaskRunner, are refused by ``asa-beam run``:
  they lose rows; see ``pipelines.runners``.)
* While requests are in flight the interpreter's GIL switch interval is lowered
  (``GilHandoff``): the HTTP threads then wait far less for the pipeline's thread.
"""

from __future__ import annotations

import collections
import logging
import math
import pickle
import random
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils import windowed_value

from transforms.deadletter import FAILED, DeadLetter, RowError
from transforms.errors import EndpointConfigError
from transforms.functions.azureml.client import Action, CallStats, Cancelled, ScoringClient, Timing
from transforms.functions.azureml.swagger import SCHEMA_MISMATCH
from transforms.functions.base import ROWS, CallSite

if TYPE_CHECKING:
    from transforms.functions.azureml import AzureMLFunction

_LOG = logging.getLogger(__name__)

STATEFUL, BUNDLE, AUTO = "stateful", "bundle", "auto"

METRICS_NAMESPACE = "asa"


def metric_names(alias: str) -> dict[str, str]:
    """Beam metric names (namespace ``asa``) for a function, named after ASA's metrics."""
    return {k: f"{alias}.{k}" for k in
            ("function_requests", "function_events", "failed_function_requests", "retries",
             "request_latency_ms")}


class _Failure(NamedTuple):
    """Why one row was not scored (stands in for its request row, or for its result)."""

    reason: str
    message: str
    status: int | None


PASSTHROUGH = None  # request-row marker: the CASE guard is false, the row is not sent


class _Chunk(NamedTuple):
    """Rows travelling together to the scorer.

    ``payloads[i]`` is the request row for ``rows[i]``, or PASSTHROUGH, or a ``_Failure``;
    ``mixed`` says whether any such marker is present. ``timestamps`` are µs, a single int
    when every row shares it (the usual case in batch mode).
    """

    rows: list
    payloads: list
    timestamps: list | int
    mixed: bool = False


class _Pending(NamedTuple):
    future: Future
    rows: list
    timestamps: list | int
    windows: tuple


# ---------------------------------------------------------------------------------------------
# Choosing the batching shape


def choose_batching(pipeline: beam.Pipeline | None, requested: str = AUTO, alias: str = "") -> str:
    """STATEFUL (GroupIntoBatches) unless BUNDLE (bundle-local batches) is requested."""
    if requested in (STATEFUL, BUNDLE):
        return requested
    return STATEFUL


def _is_streaming(pcoll: beam.PCollection) -> bool:
    if not pcoll.is_bounded:
        return True
    options = getattr(pcoll.pipeline, "_options", None)
    return bool(options is not None and options.view_as(StandardOptions).streaming)


# ---------------------------------------------------------------------------------------------
# Stage 1: guard, argument, validation, chunking


class PrepareRowsDoFn(beam.DoFn):
    """Row → chunks of (row, request row or marker, timestamp), per window.

    ``chunk_rows`` None emits one ``((bundle, number // batch_size), (row, payload, timestamp_micros))``
    per row instead (bundle-local batching for runners without state, see the module docstring).
    """

    def __init__(self, alias: str, site: CallSite, signature, chunk_rows: int | None, shards: int,
                 encode: bool, batch_size: int = 1):
        self._alias = alias
        self._batch_size = batch_size
        self._site = site
        self._signature = signature
        self._chunk_rows = chunk_rows
        self._shards = max(1, shards)
        self._encode = encode

    def setup(self):
        self._convert = self._signature.converter()
        self._shard = random.randrange(self._shards)

    def start_bundle(self):
        self._buffers: dict[Any, list] = {}
        self._bundle = random.getrandbits(62)
        self._seq = 0

    def prepare(self, row: dict) -> Any:
        """The request row for ``row``, PASSTHROUGH, or a ``_Failure``."""
        site = self._site
        if site.guard is not None and not site.guard(row):
            return PASSTHROUGH
        try:
            args = site.args(row)
            if len(args) != 1:
                raise RowError("udf_error", f"udf.{self._alias} takes exactly one argument, got {len(args)}")
            return self._convert(args[0])
        except RowError as e:
            message = e.message if e.reason != SCHEMA_MISMATCH else f"udf.{self._alias}: {e.message}"
            return _Failure(e.reason, message, e.status)

    # WindowedValueParam: one parameter is ~3x cheaper per row than TimestampParam + WindowParam.
    def process(self, row, wv=beam.DoFn.WindowedValueParam):
        payload = self.prepare(row)
        if self._chunk_rows is None:
            key = (self._bundle, self._seq // self._batch_size)
            self._seq += 1
            yield key, (row, payload, wv.timestamp_micros)
            return
        windows = wv.windows
        if type(windows) is not tuple:
            windows = tuple(windows)
        buf = self._buffers.get(windows)
        if buf is None:
            buf = self._buffers[windows] = [[], [], [], False]
        buf[0].append(row)
        buf[1].append(payload)
        buf[2].append(wv.timestamp_micros)
        if payload is None or type(payload) is _Failure:
            buf[3] = True
        if len(buf[0]) >= self._chunk_rows:
            del self._buffers[windows]
            yield self._emit(buf, windows)

    def finish_bundle(self):
        buffers, self._buffers = self._buffers, {}
        for windows, buf in buffers.items():
            yield self._emit(buf, windows)

    def _emit(self, buf: list, windows: tuple) -> windowed_value.WindowedValue:
        rows, payloads, ts, mixed = buf
        lo, hi = min(ts), max(ts)
        chunk = _Chunk(rows, payloads, lo if lo == hi else ts, mixed)
        self._shard = (self._shard + 1) % self._shards
        value = pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL) if self._encode else chunk
        return windowed_value.create((self._shard, value), lo, windows)


def _to_chunk(group: tuple) -> tuple[int, _Chunk]:
    rows, payloads, ts = zip(*group[1], strict=True)
    lo, hi = min(ts), max(ts)
    mixed = any(p is None or type(p) is _Failure for p in payloads)
    return 0, _Chunk(list(rows), list(payloads), lo if lo == hi else list(ts), mixed)




# ---------------------------------------------------------------------------------------------
# Stage 2: scoring


class GilHandoff:
    """Lowers the interpreter's GIL switch interval while any scoring request is in flight.

    The HTTP exchange runs in a pool thread while the pipeline's thread keeps the GIL busy; every
    time a socket call of the pool thread returns, it waits up to ``sys.getswitchinterval()``
    (5 ms by default) for the GIL. A request makes several such calls: measured on the local
    endpoint, 15 ms alone became 42 ms next to a busy thread, and 17 ms with a 0.2 ms interval.
    The setting is process-wide, so it is reference counted and restored as soon as no request
    is in flight. ``AzureMLConfig.gil_switch_interval_ms = 0`` turns this off.
    """

    _lock = threading.Lock()
    _holds = 0
    _saved: float | None = None

    @classmethod
    def hold(cls, interval_s: float) -> None:
        with cls._lock:
            if cls._holds == 0:
                current = sys.getswitchinterval()
                if interval_s < current:
                    cls._saved = current
                    sys.setswitchinterval(interval_s)
            cls._holds += 1

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._holds = max(0, cls._holds - 1)
            if cls._holds == 0 and cls._saved is not None:
                sys.setswitchinterval(cls._saved)
                cls._saved = None


class ScoreBatchesDoFn(beam.DoFn):
    """Scores batches of rows with up to ``parallel_requests`` requests in flight.

    Input: ``(shard, chunks)`` where chunks are pickled ``_Chunk`` bytes (after batching) or
    ``_Chunk`` objects. Output: each row once — ``{**row, column: result}`` on the main output,
    or a ``DeadLetter`` on ``failed``. Override ``score`` to change how one request's rows are
    scored (it runs in a pool thread: it must not touch Beam state or metrics).
    """

    def __init__(self, function: AzureMLFunction, site: CallSite, timing: Timing | None = None,
                 synchronous: bool = False):
        self._function = function
        self._site = site
        self._timing = timing
        # synchronous: every output leaves from process() (runners that drop finish_bundle's
        # outputs), and all outputs are (tag, value) pairs on the main output (runners that
        # mix up tagged outputs); see the module docstring.
        self._synchronous = synchronous
        names = metric_names(function.alias)
        self._m_requests = Metrics.counter(METRICS_NAMESPACE, names["function_requests"])
        self._m_events = Metrics.counter(METRICS_NAMESPACE, names["function_events"])
        self._m_failed = Metrics.counter(METRICS_NAMESPACE, names["failed_function_requests"])
        self._m_retries = Metrics.counter(METRICS_NAMESPACE, names["retries"])
        self._m_latency = Metrics.distribution(METRICS_NAMESPACE, names["request_latency_ms"])

    # -- lifecycle -----------------------------------------------------------------------------

    def setup(self):
        cfg = self._function.config
        self._batch_size = cfg.batch_size
        self._parallel = cfg.parallel_requests
        self._client: ScoringClient = self._function.make_client(timing=self._timing).open()
        self._pool = ThreadPoolExecutor(max_workers=self._parallel,
                                        thread_name_prefix=f"udf.{self._function.alias}")
        self._inflight: collections.deque[_Pending] = collections.deque()
        self._handoff_s = cfg.gil_switch_interval_ms / 1000.0
        self._holds = 0  # GilHandoff holds taken by this instance (one per request in flight)
        self._fatal: EndpointConfigError | None = None

    def start_bundle(self):
        self._release_all()  # a failed bundle may have left requests behind
        self._inflight = collections.deque()

    def teardown(self):
        self._release_all()
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- processing ----------------------------------------------------------------------------

    def process(self, element, window=beam.DoFn.WindowParam):
        if self._fatal is not None:  # a retried bundle after 401/403/404: stop again, at once
            raise self._fatal
        rows, payloads, stamps, mixed = _merge(element[1])
        if not rows:
            return
        windows = (window,)
        if mixed:  # guard-false and failed rows leave now; the others are sent
            keep = []
            for i, payload in enumerate(payloads):
                if payload is None or type(payload) is _Failure:
                    ts = stamps if isinstance(stamps, int) else stamps[i]
                    yield self._output(rows[i], payload, ts, windows)
                else:
                    keep.append(i)
            if len(keep) < len(rows):
                rows = [rows[i] for i in keep]
                payloads = [payloads[i] for i in keep]
                if not isinstance(stamps, int):
                    stamps = [stamps[i] for i in keep]
        ready: list[_Pending] = []
        size, n = self._batch_size, len(rows)
        for lo in range(0, n, size):
            hi = min(lo + size, n)
            while len(self._inflight) >= self._parallel:
                ready.append(self._inflight.popleft())
                ready[-1].future.exception()  # wait for it
            part = payloads if hi - lo == n else payloads[lo:hi]
            ts = stamps if isinstance(stamps, int) else stamps[lo:hi]
            self._hold()
            self._inflight.append(_Pending(self._pool.submit(self.score, part),
                                           rows if hi - lo == n else rows[lo:hi], ts, windows))
        if self._synchronous:
            ready.extend(self._inflight)
            self._inflight.clear()
        while self._inflight and self._inflight[0].future.done():
            ready.append(self._inflight.popleft())
        for pending in ready:
            yield from self._emit(pending)

    def finish_bundle(self):
        while self._inflight:
            yield from self._emit(self._inflight.popleft())

    def _output(self, row: dict, value: Any, ts: int, windows: tuple):
        if type(value) is _Failure:
            dl = DeadLetter(self._site.step, value.reason, value.message, row=row, status=value.status)
            if self._synchronous:
                return windowed_value.create((FAILED, dl), ts, windows)
            return TaggedOutput(FAILED, windowed_value.create(dl, ts, windows))
        out = dict(row)  # a new dict: the input row may be shared with other consumers
        out[self._site.column] = value
        return windowed_value.create((ROWS, out) if self._synchronous else out, ts, windows)

    def _hold(self) -> None:
        if self._handoff_s > 0:
            GilHandoff.hold(self._handoff_s)
            self._holds += 1

    def _release(self) -> None:
        if self._holds > 0:
            self._holds -= 1
            GilHandoff.release()

    def _release_all(self) -> None:
        while getattr(self, "_holds", 0) > 0:
            self._release()

    def _emit(self, pending: _Pending):
        try:
            results, stats = pending.future.result()
        except EndpointConfigError as e:
            self._fatal = e
            self._stop()
            raise
        finally:
            self._release()
        self._record(stats)
        column = self._site.column
        windows = pending.windows
        stamps = pending.timestamps
        create = windowed_value.create
        if isinstance(stamps, int) and not self._synchronous:  # the common case, kept lean
            for row, value in zip(pending.rows, results, strict=True):
                if type(value) is _Failure:
                    yield self._output(row, value, stamps, windows)
                else:
                    out = dict(row)
                    out[column] = value
                    yield create(out, stamps, windows)
        else:
            for i, (row, value) in enumerate(zip(pending.rows, results, strict=True)):
                yield self._output(row, value, stamps if isinstance(stamps, int) else stamps[i], windows)

    def _stop(self):
        """A request hit 401/403/404: cancel the rest now, the job is stopping."""
        self._client.close()
        for pending in self._inflight:
            pending.future.cancel()
        self._inflight.clear()
        self._release_all()

    def _record(self, stats: CallStats) -> None:
        if stats.requests:
            self._m_requests.inc(stats.requests)
            self._m_events.inc(stats.rows_sent)
        if stats.failed_requests:
            self._m_failed.inc(stats.failed_requests)
        if stats.retries:
            self._m_retries.inc(stats.retries)
        for ms in stats.latencies_ms:
            self._m_latency.update(int(round(ms)))

    # -- one request's rows (pool thread) --------------------------------------------------------

    def score(self, payloads: list) -> tuple[list, CallStats]:
        """Results for the rows, in order: a value, or a ``_Failure``. Bisects rejected batches."""
        client = self._client
        alias = self._function.alias
        out: list = [None] * len(payloads)
        total = [CallStats()]

        def run(idx: list[int]) -> None:
            part = payloads if len(idx) == len(payloads) else [payloads[i] for i in idx]
            try:
                res = client.call(part)
            except Cancelled:
                raise
            except (ValueError, TypeError):  # a value JSON cannot carry (NaN in an untyped column, ...)
                good = []
                for i in idx:
                    try:
                        client.encode([payloads[i]])
                        good.append(i)
                    except (ValueError, TypeError) as e:
                        out[i] = _Failure(SCHEMA_MISMATCH, f"udf.{alias}: the input cannot be sent as JSON: {e}",
                                          None)
                if good and len(good) < len(idx):
                    run(good)
                else:
                    for i in good:
                        out[i] = _Failure(SCHEMA_MISMATCH, f"udf.{alias}: the batch cannot be sent as JSON", None)
                return
            total[0] = total[0] + res.stats
            if res.action is Action.OK:
                for i, value in zip(idx, res.results, strict=True):
                    out[i] = value
            elif res.action is Action.SPLIT and len(idx) > 1:
                mid = len(idx) // 2
                run(idx[:mid])
                run(idx[mid:])
            else:
                failure = _Failure(res.reason, res.message, res.status)
                for i in idx:
                    out[i] = failure

        run(list(range(len(payloads))))
        return out, total[0]


def _merge(chunks) -> tuple[list, list, list | int, bool]:
    """One (rows, payloads, timestamps, mixed) from a chunk or an iterable of (pickled) chunks."""
    if isinstance(chunks, _Chunk):
        return chunks.rows, chunks.payloads, chunks.timestamps, chunks.mixed
    rows: list = []
    payloads: list = []
    stamps: list | int | None = None
    mixed = False
    for c in chunks:
        if isinstance(c, bytes):
            c = pickle.loads(c)
        mixed = mixed or c.mixed
        if stamps is None:
            rows, payloads, stamps = c.rows, c.payloads, c.timestamps
            continue
        if isinstance(stamps, int) and stamps != c.timestamps:
            stamps = [stamps] * len(rows)
        if not isinstance(stamps, int):
            stamps.extend(c.timestamps if isinstance(c.timestamps, list) else [c.timestamps] * len(c.rows))
        rows.extend(c.rows)
        payloads.extend(c.payloads)
    return rows, payloads, stamps if stamps is not None else 0, mixed


# ---------------------------------------------------------------------------------------------
# The public transform


class ScoreRows(beam.PTransform):
    """Calls an Azure ML endpoint for each row: ``{"rows": scored rows, "failed": DeadLetters}``.

    Each row comes out exactly once: on ``rows`` with ``column`` set to the endpoint's result
    for it (``None`` where the CASE guard is false: the row is not sent), or on ``failed``
    (``schema_mismatch``, ``endpoint_rejected_row``, ``endpoint_unavailable``,
    ``endpoint_bad_response``, or the argument's own error).

    >>> from transforms.functions.azureml import AzureMLConfig, AzureMLFunction
    >>> fn = AzureMLFunction("score", AzureMLConfig(endpoint="http://127.0.0.1:5001/score"))
    >>> out = rows | ScoreRows(fn, argument=lambda r: {"distance": r["d"]}, column="fare")  # doctest: +SKIP
    >>> out["rows"], out["failed"]                                                         # doctest: +SKIP

    ``function`` is an ``AzureMLFunction`` (or an ``AzureMLConfig``, named ``alias``); either a
    compiler ``CallSite`` or ``argument`` (row → the UDF's argument) plus ``column``.
    ``chunks_per_batch`` tunes the bounded-input batching shape (see the module docstring).
    """

    def __init__(self, function, site: CallSite | None = None, *, argument: Callable[[dict], Any] | None = None,
                 column: str = "score", alias: str = "score", step: str | None = None,
                 timing: Timing | None = None, chunks_per_batch: int = 4):
        super().__init__()
        from transforms.functions.azureml import AzureMLConfig, AzureMLFunction

        if isinstance(function, AzureMLConfig):
            function = AzureMLFunction(alias, function)
        if not isinstance(function, AzureMLFunction):
            raise TypeError(f"ScoreRows needs an AzureMLFunction or AzureMLConfig, got {type(function).__name__}")
        if site is None:
            if argument is None:
                raise TypeError("ScoreRows needs a CallSite or an argument function")
            site = CallSite(step=step or f"udf.{function.alias}", function=function.alias, column=column,
                            args=_ArgumentTuple(argument))
        self._function = function
        self._site = site
        self._timing = timing
        self._chunks_per_batch = max(1, chunks_per_batch)

    def expand(self, rows):
        fn, site = self._function, self._site
        cfg = fn.config
        signature = fn.signature  # read the swagger now, while the pipeline is built
        mode = choose_batching(rows.pipeline, cfg.batching, fn.alias)
        shards = cfg.parallel_requests
        if mode == BUNDLE:
            scored = (
                rows
                | "Prepare" >> beam.ParDo(PrepareRowsDoFn(fn.alias, site, signature, None, shards, encode=False,
                                                          batch_size=cfg.batch_size))
                | "GroupIntoBatches" >> beam.GroupByKey()
                | "ToChunk" >> beam.Map(_to_chunk)
                | "Score" >> beam.ParDo(ScoreBatchesDoFn(fn, site, self._timing, synchronous=True))
            )
            return {ROWS: scored | "Rows" >> beam.FlatMap(_select, ROWS),
                    FAILED: scored | "Failed" >> beam.FlatMap(_select, FAILED)}
        if _is_streaming(rows):
            chunk_rows, per_batch, buffering = 1, cfg.batch_size, cfg.max_buffering_s
        else:
            chunk_rows = max(1, math.ceil(cfg.batch_size / self._chunks_per_batch))
            per_batch, buffering = math.ceil(cfg.batch_size / chunk_rows), None
        keyed = (
            rows
            | "Prepare" >> beam.ParDo(PrepareRowsDoFn(fn.alias, site, signature, chunk_rows, shards, encode=True))
            | "Typed" >> beam.Map(_identity).with_output_types(tuple[int, bytes])
        )
        if buffering is None:
            # Bounded input: all of a shard's chunks, cut into batches. No timers: a stateful
            # DoFn with an end-of-window flush lost a second call site's rows on the FnApiRunner.
            batches = (keyed
                       | "GroupIntoBatches" >> beam.GroupByKey()
                       | "Batches" >> beam.FlatMap(_cut_batches, per_batch))
        else:
            batches = keyed | "GroupIntoBatches" >> beam.GroupIntoBatches(
                per_batch, max_buffering_duration_secs=buffering)
        scored = batches | "Score" >> beam.ParDo(ScoreBatchesDoFn(fn, site, self._timing)).with_outputs(
            FAILED, main=ROWS)
        return {ROWS: scored[ROWS], FAILED: scored[FAILED]}


def _identity(x):
    return x


def _cut_batches(element: tuple, per_batch: int):
    key, chunks = element
    batch: list = []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) >= per_batch:
            yield key, batch
            batch = []
    if batch:
        yield key, batch


def _select(pair: tuple, tag: str):
    if pair[0] == tag:
        yield pair[1]


class _ArgumentTuple:
    """``argument`` as ``CallSite.args`` (a picklable callable object)."""

    def __init__(self, argument: Callable[[dict], Any]):
        self._argument = argument

    def __call__(self, row: dict) -> tuple:
        return (self._argument(row),)
