"""The scoring path of ``udf.<alias>(x)``: prepare → batch → score (isolating rejected rows).

Shape of the pipeline segment (``ScoreRows``)::

    bounded:    rows ─ Score (prepare, cut batches bundle-locally, score) ─┬─▶ "rows"   (each row once:
    unbounded:  rows ─ Prepare ─ GroupIntoBatches ─ ScoreBatches ─────────┘─▶ "failed"  here or there)

* **Prepare** evaluates the CASE guard and the argument and converts the argument to the
  request row the swagger declares, so rows that are NULL or of the wrong type are never sent
  (they leave at once: passed through, or dead-lettered).
* **Bounded input** (batch jobs): one DoFn, fused with whatever produced the rows, cuts batches
  of ``batch_size`` rows within each bundle, as Beam's ``BatchElements`` does, and sends each as
  soon as it is full and a request slot is free (full batches, up to ``READ_AHEAD_ROWS`` rows of
  them, may wait for a slot while the next fills); a bundle's last, partial batch leaves in
  ``finish_bundle``. Rows of
  different windows share a request (the endpoint does not care); every row keeps its own
  timestamp and windows (unless nothing reads them: ``ScoreRowsUntimedDoFn``). Memory is
  flat: at most the buffer, ``READ_AHEAD_ROWS`` rows of waiting batches (at least one) and
  ``parallel_requests`` requests of ``batch_size`` rows per DoFn instance, whatever the input's
  size. (The earlier GroupByKey
  over the whole input held every row until the input ended; a stateful DoFn with an
  end-of-window flush lost a second call site's rows on the FnApiRunner; this path has neither.)
* **The step around the call** (``CallSite.before``/``after``: its WHERE and its projection,
  given by the compiler for a step whose only call this is) runs in the same DoFn on bounded
  input, so a scored row costs one Beam step instead of three; in streaming and with
  ``batching: bundle`` they run as their own steps before and after.
* **Unbounded input** (streaming): single-row chunks are keyed by one of ``parallel_requests``
  shards and Beam's ``GroupIntoBatches(batch_size, max_buffering_s)`` batches them, so partial
  batches leave on time — ASA's semantics exactly.
* **Scoring** (``ScoreBatchesDoFn``, and ``ScoreRowsDoFn`` which adds the bundle-local batching)
  owns one pooled HTTP session and a pool of ``parallel_requests`` threads. Up to
  ``parallel_requests`` requests are in flight across batches (and the DoFn instance's bundles);
  the pipeline's thread goes on preparing the next batch meanwhile, and only waits when all
  slots are busy (back-pressure, e.g. while an endpoint is down and requests are retried).
  With the HTTP in the sender process (the default), a batch's first request is sent from the
  pipeline's thread itself, and its answer decoded there when the DoFn looks for finished
  requests (``_SentHere``): no pool thread runs for a batch the endpoint scores whole. Retries
  and rejected rows go on in a pool thread from that first answer. Bodies are encoded with
  orjson and decoded with msgspec. Results leave as requests complete, each batch in its rows'
  order; ``finish_bundle`` waits for every request in flight.
* **Rejected batches** (400/413/422) go to ``PoisonIsolation``: instead of bisecting, a failed
  group is cut into the number of parts that minimizes the expected rows and requests sent,
  given the rejection rate the job has seen so far; at a high rate, batches are sent in smaller
  parts from the start. A row that was scored is never sent again, and a row is dead-lettered
  only when the endpoint rejected it alone.
* ``batching: bundle`` gives bundle-local batches through a GroupByKey keyed by
  ``(bundle, number // batch_size)`` and a synchronous scorer. (Runners without user state, such
  as Beam's DaskRunner, are refused by ``asa-beam run``: they lose rows; see ``pipelines.runners``.)
* While requests are in flight the interpreter's GIL switch interval is lowered
  (``GilHandoff``): the HTTP threads then wait far less for the pipeline's thread.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import gc
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
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils import windowed_value
from apache_beam.utils.timestamp import MIN_TIMESTAMP

from transforms.deadletter import FAILED, DeadLetter, RowError
from transforms.errors import EndpointConfigError
from transforms.functions.azureml.client import Action, CallStats, Cancelled, FirstRequest, ScoringClient, Timing
from transforms.functions.azureml.swagger import SCHEMA_MISMATCH
from transforms.functions.base import ROWS, CallSite, RowStageDoFn

if TYPE_CHECKING:
    from transforms.functions.azureml import AzureMLFunction

_LOG = logging.getLogger(__name__)

STATEFUL, BUNDLE, AUTO = "stateful", "bundle", "auto"

METRICS_NAMESPACE = "asa"


def metric_names(alias: str) -> dict[str, str]:
    """Beam metric names (namespace ``asa``) for a function, named after ASA's metrics."""
    return {k: f"{alias}.{k}" for k in
            ("function_requests", "function_events", "failed_function_requests", "retries",
             "retry_wait_ms", "request_latency_ms")}


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
        # the generated functions themselves, not their CompiledFunction wrappers: one call less per row
        self._args = getattr(self._site.args, "fn", self._site.args)
        self._guard = getattr(self._site.guard, "fn", self._site.guard)
        # udf.f(Alias) with a record swagger: read the declared columns from the row itself
        # (no stripped copy of the row, no argument tuple); None falls back to the general path
        self._read = self._signature.record_reader() if self._site.arg_is_row else None

    def start_bundle(self):
        self._buffers: dict[Any, list] = {}
        self._bundle = random.getrandbits(62)
        self._seq = 0

    def prepare(self, row: dict) -> Any:
        """The request row for ``row``, PASSTHROUGH, or a ``_Failure``."""
        if self._guard is not None and not self._guard(row):
            return PASSTHROUGH
        if self._read is not None:
            out = self._read(row)
            if out is not None:
                return out
        try:
            args = self._args(row)
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
# Isolating rejected rows


# While a full batch waits for a request slot, the DoFn looks for finished requests every this
# many rows (~1 ms of a simple job): often enough that the endpoint is not left idle.
LOOK_EVERY = 64

# With every request slot busy, full batches wait for a slot while the pipeline's thread reads
# on, up to this many rows of them (at least one batch): ~0.1 s of a simple job's rows. An
# endpoint pauses now and then (the local one for ~0.1 s every few seconds, both requests at
# once; at start-up for its first connections): a pause shorter than that costs the pipeline
# nothing, and the endpoint, faster than the pipeline, catches up after it.
READ_AHEAD_ROWS = 8192

REQUEST_COST_ROWS = 10.0  # what one more request costs, in rows sent (the endpoint's per-request overhead)


class PoisonIsolation:
    """Where to cut batches so that rejected ("poison") rows are found cheaply.

    The endpoint rejects a whole request (400/413/422) when any of its rows is bad. Plain
    bisection re-sends every row of a failing half at each level: about 7× the rows at a 2%
    rejection rate. Here the expected cost of a plan is computed from the rejection rate the job
    has seen (rows rejected alone / rows resolved, decaying so that it follows changes) and the
    cheapest plan is used, with a cost of ``request_cost_rows`` rows per request:

    * ``first_part(n)``: the size of the parts a batch of ``n`` rows is first sent in — ``n``
      while nothing has been rejected; smaller when most full batches would fail anyway.
    * ``split_part(n)``: the size of the parts a rejected group of ``n`` rows is cut into
      (1: send the rows alone, when that is cheaper than another level of groups).

    Rows of a part that succeeded are never sent again; a row is dead-lettered only when it was
    rejected alone. Thread-safe (the pool threads share one instance).

    >>> iso = PoisonIsolation()
    >>> iso.first_part(1000), iso.split_part(1000) > 1
    (1000, True)
    >>> iso.observe(rows=1000, rejected=20)   # 2% of the rows were rejected
    >>> iso.first_part(1000) < 100, iso.split_part(40) < 40
    (True, True)
    """

    DECAY_ROWS = 100_000  # the rate follows the last ~100k resolved rows

    def __init__(self, request_cost_rows: float = REQUEST_COST_ROWS):
        self._cost = float(request_cost_rows)
        self._lock = threading.Lock()
        self._rows = 0.0
        self._rejected = 0.0

    def observe(self, rows: int, rejected: int) -> None:
        """``rows`` were resolved (scored or rejected alone), ``rejected`` of them rejected."""
        with self._lock:
            self._rows += rows
            self._rejected += rejected
            if self._rows > 2 * self.DECAY_ROWS:
                self._rows /= 2
                self._rejected /= 2

    @property
    def rate(self) -> float:
        with self._lock:
            return self._rejected / self._rows if self._rows else 0.0

    def first_part(self, n: int) -> int:
        rate = self.rate
        if rate <= 0 or n <= 1:
            return n
        return _first_part(n, _quantize(rate), self._cost)

    def split_part(self, n: int) -> int:
        if n <= 1:
            return 1
        # a group that was rejected holds at least one bad row: never assume a rate below 1/(4n)
        return _split_plan(n, _quantize(max(self.rate, 0.25 / n)), self._cost)[1]


def _quantize(p: float) -> float:
    """Two significant digits: plans are cached per rate."""
    return float(f"{min(max(p, 1e-7), 0.5):.2g}")


def _fails(p: float, n: int) -> float:
    """Probability that a group of ``n`` rows holds at least one bad row."""
    return -math.expm1(n * math.log1p(-p))


@functools.lru_cache(maxsize=16384)
def _split_plan(n: int, p: float, cost: float) -> tuple[float, int]:
    """(expected cost, part size) to resolve a group of ``n`` rows known to hold a bad row.

    Cutting into k parts of m rows sends every part once (k × (cost + m)); a part fails with
    probability P(m)/P(n) given the group failed, and is resolved recursively. m = 1 sends
    the rows alone.
    """
    best = (n * (cost + 1.0), 1)
    if n <= 2:
        return best
    fails_n = _fails(p, n)
    for k in range(2, min(n - 1, 64) + 1):
        m = -(-n // k)
        if m <= 1:
            break
        parts = n / m
        expected = parts * (cost + m) + parts * _fails(p, m) / fails_n * _split_plan(m, p, cost)[0]
        if expected < best[0]:
            best = (expected, m)
    return best


@functools.lru_cache(maxsize=4096)
def _first_part(n: int, p: float, cost: float) -> int:
    """The part size that minimizes the expected cost of sending ``n`` fresh rows."""
    def unknown(m: int) -> float:
        return cost + m + _fails(p, m) * _split_plan(m, p, cost)[0]

    best, size = unknown(n), n
    for k in range(2, 65):
        m = -(-n // k)
        expected = (n / m) * unknown(m)
        if expected < best:
            best, size = expected, m
        if m == 1:
            break
    return size


# ---------------------------------------------------------------------------------------------
# Stage 2: scoring


class GilHandoff:
    """Lowers the interpreter's GIL switch interval while any scoring request is in flight.

    The sender's answers' reader (and the pool thread of a retried batch) needs the GIL while the
    pipeline's thread keeps it busy; every time one of its system calls returns, it waits up to
    ``sys.getswitchinterval()`` (5 ms by default) for it, and an answer is seen that much later.
    Measured on the local endpoint when every request ran in a pool thread: 15 ms alone became
    42 ms next to a busy thread, and 17 ms with a 0.2 ms interval.
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


class GcFreeze:
    """Keeps the objects alive when scoring starts out of the garbage collector's walks (``gc.freeze``).

    A scoring DoFn keeps a few thousand rows alive while their requests are in flight, so they
    outlive the youngest generation, and each of them counts towards the next full collection,
    which walks every object of the process: modules, Beam's worker, the pipeline (~150k
    objects). Measured on the seed job, those full collections cost ~2 µs per scored row, a
    tenth of the job. Frozen, the objects that were there before are no longer walked.

    Reference counted like ``GilHandoff``: the first scoring DoFn set up freezes, the last one
    torn down unfreezes, so a process that runs pipeline after pipeline (tests, notebooks) gets
    its older objects collected again between them. (No ``gc.collect()`` first: it would take
    ~60 ms to free the few hundred garbage objects that are frozen with the rest until then.)
    """

    _lock = threading.Lock()
    _holds = 0

    @classmethod
    def hold(cls) -> None:
        with cls._lock:
            if cls._holds == 0:
                gc.freeze()
            cls._holds += 1

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            if cls._holds == 0:
                return
            cls._holds -= 1
            if cls._holds == 0:
                gc.unfreeze()


class ScoreBatchesDoFn(beam.DoFn):
    """Scores batches of rows with up to ``parallel_requests`` requests in flight.

    Input: ``(shard, chunks)`` where chunks are pickled ``_Chunk`` bytes (after batching) or
    ``_Chunk`` objects. Output: each row once — ``{**row, column: result}`` on the main output,
    or a ``DeadLetter`` on ``failed``. Override ``score`` to change how one request's rows are
    scored (it runs in a pool thread: it must not touch Beam state or metrics); a subclass that
    does gets every batch there.
    """

    def __init__(self, function: AzureMLFunction, site: CallSite, timing: Timing | None = None,
                 synchronous: bool = False, streaming: bool = False):
        self._function = function
        self._site = site
        self._timing = timing
        self._streaming = streaming
        # synchronous: every output leaves from process() (runners that drop finish_bundle's
        # outputs), and all outputs are (tag, value) pairs on the main output (runners that
        # mix up tagged outputs); see the module docstring.
        self._synchronous = synchronous
        names = metric_names(function.alias)
        self._m_requests = Metrics.counter(METRICS_NAMESPACE, names["function_requests"])
        self._m_events = Metrics.counter(METRICS_NAMESPACE, names["function_events"])
        self._m_failed = Metrics.counter(METRICS_NAMESPACE, names["failed_function_requests"])
        self._m_retries = Metrics.counter(METRICS_NAMESPACE, names["retries"])
        self._m_wait = Metrics.counter(METRICS_NAMESPACE, names["retry_wait_ms"])
        self._m_latency = Metrics.distribution(METRICS_NAMESPACE, names["request_latency_ms"])

    # -- lifecycle -----------------------------------------------------------------------------

    def setup(self):
        cfg = self._function.config
        self._batch_size = cfg.batch_size
        self._parallel = cfg.parallel_requests
        self._client: ScoringClient = self._function.make_client(
            timing=self._timing, streaming=self._streaming).open()
        self._pool = ThreadPoolExecutor(max_workers=self._parallel,
                                        thread_name_prefix=f"udf.{self._function.alias}")
        self._inflight: collections.deque[_Pending] = collections.deque()
        self._handoff_s = cfg.gil_switch_interval_ms / 1000.0
        self._holds = 0  # GilHandoff holds taken by this instance (one per request in flight)
        self._fatal: EndpointConfigError | None = None
        self._isolation = PoisonIsolation()
        self._after = None  # the call site's fused projection: ScoreRowsDoFn sets it
        self._after_all = None  # the same, for a list of rows
        # a batch's first request leaves from this thread when the HTTP is in the sender process
        # and ``score`` is not overridden (a subclass's ``score`` must see every batch)
        self._sent_here = type(self).score is ScoreBatchesDoFn.score
        GcFreeze.hold()
        self._frozen = True

    def start_bundle(self):
        self._release_all()  # a failed bundle may have left requests behind
        self._inflight = collections.deque()

    def teardown(self):
        self._release_all()
        if getattr(self, "_frozen", False):
            self._frozen = False
            GcFreeze.release()
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
        size, n = self._batch_size, len(rows)
        for lo in range(0, n, size):
            hi = min(lo + size, n)
            part = payloads if hi - lo == n else payloads[lo:hi]
            ts = stamps if isinstance(stamps, int) else stamps[lo:hi]
            yield from self._submit(part, rows if hi - lo == n else rows[lo:hi], ts, windows)
        if self._synchronous:
            while self._inflight:
                yield from self._emit(self._inflight.popleft())
        else:
            yield from self._emit_done()

    def finish_bundle(self):
        while self._inflight:
            yield from self._emit(self._inflight.popleft())

    def _submit(self, payloads: list, rows: list, stamps: Any, windows: tuple | None):
        """Send one request's rows; first emit the oldest requests while all slots are busy."""
        while len(self._inflight) >= self._parallel:
            yield from self._emit(self._inflight.popleft())  # waits for it: back-pressure
        self._hold()
        self._inflight.append(_Pending(self._start(payloads), rows, stamps, windows))

    def _start(self, payloads: list):
        """The request's future: sent from this thread when it can be (``_SentHere``), else
        scored in a pool thread."""
        if self._sent_here and self._isolation.first_part(len(payloads)) >= len(payloads):
            first = self._client.start_call(payloads)
            if first is not None:
                return _SentHere(self, payloads, first)
        return self._pool.submit(self.score, payloads)

    def _emit_done(self):
        """Emit the requests at the head of the queue that have completed (batches stay in order)."""
        inflight = self._inflight
        while inflight and inflight[0].future.done():
            yield from self._emit(inflight.popleft())

    def _output(self, row: dict, value: Any, ts: int, windows: tuple):
        if type(value) is _Failure:
            dl = DeadLetter(self._site.step, value.reason, value.message, row=row, status=value.status)
            if self._synchronous:
                return windowed_value.create((FAILED, dl), ts, windows)
            return TaggedOutput(FAILED, windowed_value.create(dl, ts, windows))
        out = dict(row)  # a new dict: the input row may be shared with other consumers
        out[self._site.column] = value
        return windowed_value.create((ROWS, out) if self._synchronous else out, ts, windows)

    def _output_wv(self, row: dict, value: Any, wv: windowed_value.WindowedValue | None):
        """Like ``_output``, keeping the input element's timestamp, windows and pane (``wv`` None:
        a plain value, see ``ScoreRowsUntimedDoFn``); then the step's fused ``after`` stage, if
        any. None when that stage filters the row."""
        wrap = wv.with_value if wv is not None else _identity
        if type(value) is _Failure:
            dl = DeadLetter(self._site.step, value.reason, value.message, row=row, status=value.status)
            return TaggedOutput(FAILED, wrap(dl))
        out = dict(row)
        out[self._site.column] = value
        if self._after is not None:  # the step's projection, fused (CallSite.after)
            out = self._after(out)
            if out is None:
                return None
            if type(out) is DeadLetter:
                return TaggedOutput(FAILED, wrap(out))
        return wrap(out)

    def _emit_rows(self, rows: list, results: list, wvs: list | None) -> list:
        """``_output_wv`` of each row of a request, a batch at a time (the common case: no failure).
        ``wvs`` None: the rows leave as plain values (``ScoreRowsUntimedDoFn``)."""
        if _Failure in map(type, results):
            each = wvs if wvs is not None else [None] * len(rows)
            outs = [self._output_wv(r, v, w) for r, v, w in zip(rows, results, each, strict=True)]
            return [o for o in outs if o is not None]
        column = self._site.column
        merged = [{**r, column: v} for r, v in zip(rows, results, strict=True)]  # new dicts: rows may be shared
        after = self._after_all
        if wvs is None:
            if after is None:
                return merged
            return [TaggedOutput(FAILED, o) if type(o) is DeadLetter else o
                    for o in after(merged) if o is not None]
        if after is None:
            return [w.with_value(m) for m, w in zip(merged, wvs, strict=True)]
        out = []
        append = out.append
        for o, w in zip(after(merged), wvs, strict=True):
            if o is None:
                continue
            append(TaggedOutput(FAILED, w.with_value(o)) if type(o) is DeadLetter else w.with_value(o))
        return out

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
        if windows is None:  # bundle-local batches: one input WindowedValue per row
            yield from self._emit_rows(pending.rows, results, stamps)
        elif isinstance(stamps, int) and not self._synchronous:  # the common case, kept lean
            create = windowed_value.create
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
        if stats.wait_s:
            self._m_wait.inc(int(round(stats.wait_s * 1000)))
        for ms in stats.latencies_ms:
            self._m_latency.update(int(round(ms)))

    # -- one batch's rows (pool thread) ----------------------------------------------------------

    def score(self, payloads: list, first: FirstRequest | None = None) -> tuple[list, CallStats]:
        """Results for the rows, in order: a value, or a ``_Failure``.

        The batch is sent in parts chosen by ``PoisonIsolation`` (the whole batch while nothing
        is rejected); a rejected part is cut again until the rejected rows are alone. ``first``:
        the whole batch's first request, already sent (``_SentHere``).
        """
        client = self._client
        alias = self._function.alias
        isolation = self._isolation
        out: list = [None] * len(payloads)
        total = [CallStats()]

        def run(idx: list[int], first: FirstRequest | None = None) -> bool:
            """Send these rows; True when the endpoint rejected them (they were then isolated)."""
            part = payloads if len(idx) == len(payloads) else [payloads[i] for i in idx]
            try:
                res = client.call(part) if first is None else client.call(part, first)  # call() may be overridden
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
                    return run(good)
                for i in good:
                    out[i] = _Failure(SCHEMA_MISMATCH, f"udf.{alias}: the batch cannot be sent as JSON", None)
                return False
            total[0] = total[0] + res.stats
            if res.action is Action.OK:
                if len(idx) == len(out) == len(res.results):  # the whole batch (the common case): one copy
                    out[:] = res.results
                else:
                    for i, value in zip(idx, res.results, strict=True):
                        out[i] = value
                isolation.observe(len(idx), 0)
                return False
            if res.action is Action.SPLIT and len(idx) > 1:
                isolate(idx)
                return True
            if res.action is Action.SPLIT:
                isolation.observe(1, 1)
            failure = _Failure(res.reason, res.message, res.status)
            for i in idx:
                out[i] = failure
            return res.action is Action.SPLIT

        def isolate(idx: list[int]) -> None:
            """Rows of a rejected request: send them in parts; cut the rejected parts again."""
            m = isolation.split_part(len(idx))
            parts = [idx[lo:lo + m] for lo in range(0, len(idx), m)]
            rejected = False
            for j, part in enumerate(parts):
                if j == len(parts) - 1 and not rejected and len(part) > 1:
                    # every other part was scored, so the rejected row is here: cut this part
                    # at once instead of sending it whole (its rows are all still sent)
                    isolate(part)
                else:
                    rejected = run(part) or rejected

        every = list(range(len(payloads)))
        m = len(every) if first is not None else isolation.first_part(len(every))
        try:
            for lo in range(0, len(every), m):
                run(every if m >= len(every) else every[lo:lo + m], first)
        finally:
            # run and isolate refer to each other: a cycle that would keep the batch's rows
            # alive until the next garbage collection instead of freeing them now
            run = isolate = None  # noqa: F841
        return out, total[0]


class _SentHere:
    """A batch whose first request the pipeline's thread sent itself (``ScoringClient.start_call``).

    Why: scored in a pool thread, each request costs that thread several GIL hand-offs with the
    pipeline's thread (woken to send, after the pipe write, on the answer), ~1.6 ms of the
    process's one running thread per request on the seed job. Here the pipeline's thread
    encodes and writes the body, and decodes the answer when it looks for finished requests;
    the sender's answers' reader is the only other thread that runs. A failure to retry or
    isolate (anything but a 2xx) goes on in a pool thread, in ``score``, from that first answer:
    no row is sent twice for it.

    The pool's ``Future`` interface as ``ScoreBatchesDoFn`` uses it: ``done``, ``result``, ``cancel``.
    """

    __slots__ = ("_dofn", "_payloads", "_first", "_result", "_future")

    def __init__(self, dofn: ScoreBatchesDoFn, payloads: list, first: FirstRequest):
        self._dofn = dofn
        self._payloads = payloads
        self._first = first
        self._result: tuple[list, CallStats] | None = None
        self._future = None  # the pool's, when the first answer was not a 2xx

    def done(self) -> bool:
        if self._result is None and self._future is None:
            if not self._first.exchange.done():
                return False
            self._resolve()
        return self._result is not None or self._future.done()

    def result(self) -> tuple[list, CallStats]:
        if self._result is None and self._future is None:
            self._first.exchange.wait()
            self._resolve()
        return self._result if self._result is not None else self._future.result()

    def cancel(self) -> bool:
        return self._future.cancel() if self._future is not None else False

    def _resolve(self) -> None:
        dofn = self._dofn
        if dofn._client.answered_2xx(self._first):  # nothing in score() waits: this thread
            self._result = dofn.score(self._payloads, self._first)
        else:  # to retry or isolate: where waiting is allowed
            self._future = dofn._pool.submit(dofn.score, self._payloads, self._first)


class ScoreRowsDoFn(ScoreBatchesDoFn):
    """Bounded input: prepares each row, cuts batches within the bundle and scores them.

    Rows are buffered until ``batch_size`` of them can be sent (a bundle's last batch may be
    smaller); with ``parallel_requests`` requests in flight, full batches wait for a slot while
    the next ones are prepared, up to ``READ_AHEAD_ROWS`` rows of them (``_look``). Holds at most
    ``batch_size × (parallel_requests + 1) + max(batch_size, READ_AHEAD_ROWS)`` rows. Each
    output keeps its input's timestamp, windows and pane.

    The call site's ``before`` and ``after`` stages (the step's WHERE and its projection, see
    ``CallSite``) run here too: a row filtered before is never sent, and a scored row leaves
    already projected, so the step costs one Beam step per row instead of three.
    """

    _timed = True  # rows are held with their WindowedValue (not in ScoreRowsUntimedDoFn)

    def __init__(self, function: AzureMLFunction, site: CallSite, signature, timing: Timing | None = None):
        super().__init__(function, site, timing)
        self._prepare = PrepareRowsDoFn(function.alias, site, signature, None, 1, encode=False)

    def setup(self):
        super().setup()
        self._ahead = max(1, READ_AHEAD_ROWS // self._batch_size)  # full batches that may wait for a slot
        prepare = self._prepare
        prepare.setup()
        self._prep = prepare.prepare
        # udf.f(Alias) with a record swagger and no CASE guard: the record reader alone, per row
        self._read = prepare._read if prepare._guard is None else None
        before, after = self._site.before, self._site.after
        self._stages = [s for s in (before, after) if s is not None]
        for stage in self._stages:
            stage.setup()
        # a WHERE-less step's "before" only counts the rows in: counted per batch, not called per row
        self._count_in = before if before is not None and before._compiled is None else None
        self._before = before.apply if before is not None and self._count_in is None else None
        self._after = after.apply if after is not None else None
        self._after_all = after.apply_all if after is not None else None
        self._rows: list = []
        self._payloads: list = []
        self._wvs: list = []

    def start_bundle(self):
        super().start_bundle()
        for stage in self._stages:
            stage.start_bundle()
        self._rows, self._payloads, self._wvs = [], [], []
        self._ready: collections.deque[tuple] = collections.deque()  # full batches waiting for a slot
        self._next_look = self._batch_size
        self._deferred: list = []
        self._replan()

    def _replan(self) -> None:
        # the lean path of process(): no WHERE to evaluate, nothing deferred, no fatal error
        self._lean = self._before is None and not self._deferred and self._fatal is None

    # Not a generator: most rows only join the buffer, and returning None costs less than
    # creating and draining a generator per row.
    def process(self, row, wv=beam.DoFn.WindowedValueParam):
        if self._lean and len(wv.windows) == 1:
            return self._take(row, wv)
        return self._process_general(row, wv)

    def _take(self, row, wv):
        """A row past the step's WHERE: into the buffer (None, or the outputs that can leave
        now: the batches it completes), or out at once when it is not sent."""
        read = self._read
        payload = read(row) if read is not None else None
        if payload is None:  # the reader declined (or there is none): the general conversion
            payload = self._prep(row)
            if payload is None or type(payload) is _Failure:  # not sent: leaves now
                return self._leave_now(row, payload, wv)
        rows = self._rows
        rows.append(row)
        self._payloads.append(payload)
        self._wvs.append(wv)
        if len(rows) >= self._next_look:
            return self._look()
        return None

    def _process_general(self, row, wv):
        if self._fatal is not None:
            raise self._fatal
        if len(wv.windows) != 1:
            # Beam repeats the windows of every WindowedValue yielded while an element of k
            # windows is processed k times (it assumes they came from that element), so what
            # leaves now would be duplicated: hold it until a single-window element or the
            # bundle's end. (Rows of several windows reach a UDF only through the Python API:
            # a query's windows are assigned at its GROUP BY.)
            self._deferred.extend(self._process(row, wv) or ())
            self._replan()
            return None
        if self._deferred:
            deferred, self._deferred = self._deferred, []
            self._replan()
            deferred.extend(self._process(row, wv) or ())
            return deferred
        return self._process(row, wv)

    def _process(self, row, wv):
        """None, or the outputs that can leave now."""
        if self._before is not None:  # the step's WHERE, fused (CallSite.before)
            row = self._before(row)
            if row is None:
                return None
            if type(row) is DeadLetter:
                return (TaggedOutput(FAILED, wv.with_value(row) if wv is not None else row),)
        return self._take(row, wv)

    def _leave_now(self, row, payload, wv):
        if self._count_in is not None:
            self._count_in.passed(1)
        out = self._output_wv(row, payload, wv)
        return None if out is None else (out,)

    def _look(self) -> list:
        """The buffer reached ``_next_look`` rows: a full buffer becomes a batch, and batches are
        sent while request slots are free. Up to ``_ahead`` full batches may wait for a slot while
        the next one fills (checked every ``LOOK_EVERY`` rows meanwhile): the pipeline's thread
        goes on reading rows instead of waiting for the endpoint, and only waits when one more
        batch is full."""
        if len(self._rows) >= self._batch_size:
            self._ready.append(self._cut())
        out = list(self._emit_done())
        ready = self._ready
        while ready and (len(self._inflight) < self._parallel or len(ready) > self._ahead):
            out.extend(self._submit(*ready.popleft()))  # waits for a slot only past _ahead batches
        self._next_look = min(self._batch_size, len(self._rows) + LOOK_EVERY) if ready else self._batch_size
        return out

    def finish_bundle(self):
        if self._deferred:
            deferred, self._deferred = self._deferred, []
            yield from deferred
        while self._ready:
            yield from self._submit(*self._ready.popleft())
        if self._rows:
            yield from self._submit(*self._cut())
        while self._inflight:
            yield from self._emit(self._inflight.popleft())
        for stage in self._stages:  # after every output: the counters include them
            stage.finish_bundle()

    def _cut(self) -> tuple:
        """The buffer as ``_submit``'s arguments; a new buffer."""
        rows, payloads, wvs = self._rows, self._payloads, self._wvs
        self._rows, self._payloads, self._wvs = [], [], []
        if self._count_in is not None:
            self._count_in.passed(len(rows))
        # untimed (no WindowedValues kept): the rows will leave as plain values
        return payloads, rows, wvs if self._timed else None, None


class ScoreRowsUntimedDoFn(ScoreRowsDoFn):
    """``ScoreRowsDoFn`` for rows whose event time nothing reads (``CallSite.keeps_event_time``
    False) in the global window: rows are not held with their ``WindowedValue``.

    A DoFn whose ``process`` takes a ``WindowedValueParam`` costs Beam ~1 µs more per row (its
    per-window invoker) than one that takes the element alone, about a tenth of a simple job's
    cost per row. Without it, a scored row leaving during ``process`` is stamped like the row
    being processed then, and one leaving in ``finish_bundle`` at the global window's start
    (the minimum timestamp, as a bounded source's rows without a time): only its timestamp
    differs from what ``ScoreRowsDoFn`` gives, and the compiler chose this DoFn because no step
    and no writer reads it. Windows stay the global one.
    """

    _timed = False

    def process(self, row):  # the element alone: Beam's plain invoker
        if self._lean:
            return self._take(row, None)
        if self._fatal is not None:
            raise self._fatal
        return self._process(row, None)

    def finish_bundle(self):
        for out in super().finish_bundle():
            if type(out) is TaggedOutput:
                yield TaggedOutput(out.tag, _AT_START.with_value(out.value))
            else:
                yield _AT_START.with_value(out)


_AT_START = windowed_value.WindowedValue(None, MIN_TIMESTAMP, (GlobalWindow(),))


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
    """

    def __init__(self, function, site: CallSite | None = None, *, argument: Callable[[dict], Any] | None = None,
                 column: str = "score", alias: str = "score", step: str | None = None,
                 timing: Timing | None = None):
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

    def expand(self, rows):
        fn, site = self._function, self._site
        cfg = fn.config
        mode = choose_batching(rows.pipeline, cfg.batching, fn.alias)
        if (site.before is not None or site.after is not None) and (_is_streaming(rows) or mode == BUNDLE):
            return self._with_stages_apart(rows)
        signature = fn.signature  # read the swagger now, while the pipeline is built
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
        if not _is_streaming(rows):
            # Bounded input: batches cut within bundles, next to the rows' producer (no shuffle).
            untimed = not site.keeps_event_time and isinstance(rows.windowing.windowfn, GlobalWindows)
            dofn = (ScoreRowsUntimedDoFn if untimed else ScoreRowsDoFn)(fn, site, signature, self._timing)
            scored = rows | "Score" >> beam.ParDo(dofn).with_outputs(FAILED, main=ROWS)
            return {ROWS: scored[ROWS], FAILED: scored[FAILED]}
        # Unbounded input: single-row chunks; GroupIntoBatches lets partial batches leave on time.
        batches = (
            rows
            | "Prepare" >> beam.ParDo(PrepareRowsDoFn(fn.alias, site, signature, 1, shards, encode=True))
            | "Typed" >> beam.Map(_identity).with_output_types(tuple[int, bytes])
            | "GroupIntoBatches" >> beam.GroupIntoBatches(cfg.batch_size,
                                                          max_buffering_duration_secs=cfg.max_buffering_s)
        )
        scored = batches | "Score" >> beam.ParDo(
            ScoreBatchesDoFn(fn, site, self._timing, streaming=True)).with_outputs(FAILED, main=ROWS)
        return {ROWS: scored[ROWS], FAILED: scored[FAILED]}


    def _with_stages_apart(self, rows):
        """The call site's before/after stages as their own steps (only bounded input fuses them)."""
        site = self._site
        failed = []
        if site.before is not None:
            out = rows | "Before" >> beam.ParDo(RowStageDoFn(site.before)).with_outputs(FAILED, main=ROWS)
            rows = out[ROWS]
            failed.append(out[FAILED])
        inner = ScoreRows(self._function, dataclasses.replace(site, before=None, after=None), timing=self._timing)
        scored = rows | "Call" >> inner
        rows = scored[ROWS]
        failed.append(scored[FAILED])
        if site.after is not None:
            out = rows | "After" >> beam.ParDo(RowStageDoFn(site.after)).with_outputs(FAILED, main=ROWS)
            rows = out[ROWS]
            failed.append(out[FAILED])
        return {ROWS: rows, FAILED: tuple(failed) | "Failed" >> beam.Flatten()}


def _identity(x):
    return x


def _select(pair: tuple, tag: str):
    if pair[0] == tag:
        yield pair[1]


class _ArgumentTuple:
    """``argument`` as ``CallSite.args`` (a picklable callable object)."""

    def __init__(self, argument: Callable[[dict], Any]):
        self._argument = argument

    def __call__(self, row: dict) -> tuple:
        return (self._argument(row),)
