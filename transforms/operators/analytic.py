"""ASA analytic functions LAG, LAST, ISFIRST and the aggregates with OVER as one Beam transform.

No SQL here: the compiler turns each call into an ``AnalyticCall`` of plain callables.
Semantics (ASA LAG, LAST, ISFIRST and Tumbling Window reference pages):

* Events are processed in event-time order within a partition (PARTITION BY: only events
  with the same partition value are considered; values of the same kind that are equal are
  the same partition, 1 and 1.0 included, '1' and 1 not; NULL is a partition of its own).
  ASA breaks timestamp ties by arrival order, which Beam does not have; here **ties are
  broken by the SHA-1 of the row's canonical JSON** (sorted keys, as the input row reached
  the step), so results are the same on every run and runner. Identical rows with equal
  timestamps are interchangeable, so the result multiset is still deterministic.
* **WHEN** selects the events that count as history (candidates); only True counts. It does
  not filter the current event: every event gets a value (ISFIRST returns 0 when the event
  itself does not satisfy WHEN, as documented).
* **LIMIT DURATION(unit, n)**: an earlier event counts while it is less than the duration old:
  ``t - t_prev < duration`` (like a sliding window ``(t - d, t]``; the docs do not say whether
  an event exactly ``d`` old counts; this choice excludes it).
* ``LAG(expr, offset=1, default)``: ``expr`` of the offset-th previous candidate in the
  partition within the duration, else ``default`` (NULL by default). A candidate whose
  ``expr`` is NULL gives NULL, not the default. The current event is never its own LAG.
* ``LAST(expr, default)``: LAG with offset 0 (the docs): the most recent candidate *including
  the current event* when it satisfies WHEN, else the latest earlier candidate within the
  duration, else ``default``. NULL values are returned like any other (add
  ``WHEN expr IS NOT NULL`` for the last non-NULL value, as the docs' example does).
* ``COUNT/SUM/AVG/MIN/MAX(x) OVER ([PARTITION BY] LIMIT DURATION(unit, n) [WHEN])`` (no
  window): the aggregate of the candidates within the duration, *including the current event*
  when it is one (like LAST): events in ``(t - d, t]``. NULLs, types and exactness are those of
  the GROUP BY aggregates (same accumulators); no candidate gives NULL (COUNT: 0). A value the
  aggregate cannot take (SUM of text that is not a number) dead-letters the row.
* ``ISFIRST(unit, n)``: 1 if the event is the first candidate of its partition in its
  interval, else 0. Intervals are aligned like tumbling windows: end-inclusive ``(start, end]``
  and aligned to 0001-01-01T00:00:00Z (the .NET/ASA time origin; it aligns to the zeroth hour
  as the windowing docs say, and to days for sizes that divide a day).
* Expressions (PARTITION BY, WHEN, the LAG/LAST expression and a per-row DEFAULT) are
  evaluated once per row up front; a RowError dead-letters the row, which then is neither
  output nor history. ``expr`` is evaluated only for candidates.
* Output rows are new dicts ``{**row, output_key: value, ...}`` with the input timestamp, in
  the global window.

Design: one stateful DoFn keyed by (group of calls with the same PARTITION BY callable,
partition value) buffers events and, on an event-time timer, processes them in order. In
streaming the timer is set to the earliest buffered timestamp T and processes the events at T
once the watermark passes T; afterwards it is set to ``last event + longest duration`` to drop
the partition's history, so state is bounded by the durations (LAG keeps ``offset`` values
per call, LAST and ISFIRST one). In batch all input precedes the timers, so one timer per
partition processes everything at the end. With several PARTITION BY groups each row is given
an id, every group emits its values for that id, and a second stateful step keyed by the id
merges them back onto the row (order-insensitive, so it does not depend on watermarks).
Late events (behind the watermark) are evaluated against the partition's current history.
Timers and the Python streaming DirectRunner: see ``transforms.operators.joins`` (asa-beam's local
runner holds a stateful step's watermark below its pending timers, so rows a timer emits are on
time for a window downstream).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows, TimestampedValue

from transforms.deadletter import FAILED, RowError, json_default
from transforms.operators.joins import _is_streaming, as_key, ts_us, us_to_ts
from transforms.operators.timers import own_timers
from transforms.query.plan import AGGREGATE_KINDS

ROWS = "rows"
LAG, LAST, ISFIRST = "lag", "last", "isfirst"

# Microseconds from 0001-01-01T00:00:00Z to the Unix epoch: ISFIRST intervals count from there.
_ORIGIN_US = (_dt.datetime(1970, 1, 1) - _dt.datetime(1, 1, 1)) // _dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class AnalyticCall:
    """One LAG / LAST / ISFIRST call of a step, as the compiler hands it over.

    ``duration_us`` is LIMIT DURATION for LAG and LAST and the interval for ISFIRST.
    ``default`` is a constant; ``default_fn`` (if given) computes the default from the current
    row instead (the docs allow a column or expression). Calls with the same PARTITION BY
    should share one ``partition`` callable object: they are then evaluated together.

    >>> # LAG(reading) OVER (PARTITION BY sensorId LIMIT DURATION(hour, 1))
    >>> part = lambda r: (r["sensorId"],)
    >>> c = AnalyticCall(LAG, "prev", lambda r: r["reading"], partition=part, duration_us=3_600_000_000)
    """

    kind: str
    output_key: str
    value: Callable[[dict], Any] | None = None
    offset: int = 1
    default: Any = None
    partition: Callable[[dict], Any] | None = None
    duration_us: int | None = None
    when: Callable[[dict], bool | None] | None = None
    default_fn: Callable[[dict], Any] | None = None

    def __post_init__(self):
        if self.kind not in (LAG, LAST, ISFIRST, *AGGREGATE_KINDS):
            raise ValueError(f"unknown analytic function {self.kind!r}; expected lag, last, isfirst "
                             f"or one of {', '.join(AGGREGATE_KINDS)}")
        if self.duration_us is None or self.duration_us <= 0:
            what = "an interval" if self.kind == ISFIRST else "LIMIT DURATION"
            raise ValueError(f"{self.kind.upper()} needs {what} with a positive length")
        if (self.kind in (LAG, LAST) or self.kind in AGGREGATE_KINDS[1:]) and self.value is None:
            raise ValueError(f"{self.kind.upper()} needs an expression")
        if self.kind == LAG and (not isinstance(self.offset, int) or self.offset < 1):
            raise ValueError("the LAG offset must be an integer >= 1")


# --------------------------------------------------------------------------- evaluation per call


def _partition_part(v: Any) -> Any:
    """A JSON-able, deterministic identity for one PARTITION BY value (1 and 1.0 are the same)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return ["n", float(v)]
    if isinstance(v, (int, float)):
        f = float(v)
        return ["n", 0.0 if f == 0 else f] if f == f else ["nan"]
    if isinstance(v, str):
        return ["s", v]
    if isinstance(v, _dt.datetime):
        return ["t", (v - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)) // _dt.timedelta(microseconds=1)]
    return ["j", json.dumps(v, sort_keys=True, default=json_default, separators=(",", ":"))]


def _tiebreak(row: dict) -> bytes:
    try:
        text = json.dumps(row, sort_keys=True, default=json_default, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(sorted(row.items(), key=lambda kv: str(kv[0])))
    return hashlib.sha1(text.encode()).digest()


def _in_duration(now: int, then: int, duration: int) -> bool:
    return now - then < duration


def _interval(t: int, size: int) -> int:
    """Index k of the end-inclusive interval ((k-1)*size, k*size] (from 0001-01-01) holding t."""
    return -(-(t + _ORIGIN_US) // size)


@dataclass(frozen=True)
class _Spec:
    """What the stateful step needs of a call (no user callables)."""

    kind: str
    output_key: str
    offset: int
    duration_us: int
    star: bool = False  # COUNT(*)

    def accumulator(self) -> Any:
        """The retractable accumulator of an aggregate call (the GROUP BY ones, so NULLs, types
        and exactness are the same)."""
        from transforms.operators.aggregates import AggregateSpec, make_accumulator

        return make_accumulator(AggregateSpec(self.kind.upper(), star=self.star), retractable=True)


class CheckedValue:
    """An aggregate call's argument, checked as GROUP BY checks it (SUM of text → row error)."""

    def __init__(self, value: Callable[[dict], Any], kind: str):
        from transforms.operators.aggregates import AggregateSpec, make_input_checker

        self._value = value
        self._check = make_input_checker([AggregateSpec(kind.upper())])

    def __call__(self, row: dict) -> Any:
        return self._check((self._value(row),))[0]


def _evaluate(calls: Sequence[AnalyticCall], row: dict) -> tuple:
    """Per call: (is_candidate, value, default). Raises RowError."""
    out = []
    for c in calls:
        candidate = True if c.when is None else c.when(row) is True
        value = c.value(row) if candidate and c.value is not None else None
        default = c.default_fn(row) if c.default_fn is not None else c.default
        out.append((candidate, value, default))
    return tuple(out)


_accumulators: dict[_Spec, Any] = {}  # per process: accumulators are stateless objects


def _step(specs: Sequence[_Spec], history: dict, t: int, inputs: tuple) -> dict:
    """The values of one event, updating ``history`` (call index → its state) in place."""
    results = {}
    for i, (spec, (candidate, value, default)) in enumerate(zip(specs, inputs, strict=True)):
        h = history.get(i)
        if spec.kind == LAG:
            # h: the last `offset` candidates, oldest first, as (t, value).
            h = h or []
            if len(h) == spec.offset and _in_duration(t, h[0][0], spec.duration_us):
                results[spec.output_key] = h[0][1]
            else:
                results[spec.output_key] = default
            if candidate:
                h = (h + [(t, value)])[-spec.offset:]
            history[i] = h
        elif spec.kind == LAST:
            if candidate:
                results[spec.output_key] = value
                history[i] = (t, value)
            elif h is not None and _in_duration(t, h[0], spec.duration_us):
                results[spec.output_key] = h[1]
            else:
                results[spec.output_key] = default
        elif spec.kind in AGGREGATE_KINDS:
            # h: (accumulator, candidates within the duration as [t, value], oldest first).
            acc_fn = _accumulators.get(spec) or _accumulators.setdefault(spec, spec.accumulator())
            acc, window = h if h is not None else (acc_fn.create(), [])
            drop = 0
            while drop < len(window) and not _in_duration(t, window[drop][0], spec.duration_us):
                acc = acc_fn.remove(acc, window[drop][1])
                drop += 1
            window = window[drop:]
            if candidate:
                acc = acc_fn.add(acc, value)
                window.append((t, value))
            results[spec.output_key] = acc_fn.extract(acc)
            history[i] = (acc, window)
        else:  # ISFIRST: h is the last interval that had a candidate
            k = _interval(t, spec.duration_us)
            first = candidate and (h is None or k > h)
            results[spec.output_key] = 1 if first else 0
            if first:
                history[i] = k
    return results


# --------------------------------------------------------------------------- Beam steps


@beam.typehints.with_output_types(tuple[bytes, Any])
class _Prepare(beam.DoFn):
    """row → one keyed element per PARTITION BY group (+ the row for the merge when several)."""

    MERGE = "merge"

    def __init__(self, groups: Sequence[Sequence[AnalyticCall]], step: str):
        self._groups = groups
        self._step = step

    def process(self, row, timestamp=beam.DoFn.TimestampParam):
        try:
            keyed = []
            for g, calls in enumerate(self._groups):
                part = calls[0].partition
                pkey = [] if part is None else [_partition_part(v) for v in as_key(part(row))]
                keyed.append((json.dumps([g, pkey], separators=(",", ":")).encode(), _evaluate(calls, row)))
        except RowError as e:
            yield beam.pvalue.TaggedOutput(FAILED, e.dead_letter(self._step, row))
            return
        t, tie = ts_us(timestamp), _tiebreak(row)
        if len(self._groups) == 1:
            key, inputs = keyed[0]
            yield key, (t, tie, row, inputs)
            return
        row_id = uuid.uuid4().bytes
        yield beam.pvalue.TaggedOutput(self.MERGE, (row_id, (None, row)))
        for key, inputs in keyed:
            yield key, (t, tie, row_id, inputs)


_PENDING = BagStateSpec("pending", PickleCoder())
_HISTORY = ReadModifyWriteStateSpec("history", PickleCoder())
_LAST_TS = ReadModifyWriteStateSpec("last_ts", VarIntCoder())
_NEXT = ReadModifyWriteStateSpec("next", VarIntCoder())
_WAKE = TimerSpec("wake", TimeDomain.WATERMARK)
_PENDING_P, _HISTORY_P, _LAST_TS_P, _NEXT_P = (
    beam.DoFn.StateParam(s) for s in (_PENDING, _HISTORY, _LAST_TS, _NEXT)
)
_WAKE_P = beam.DoFn.TimerParam(_WAKE)


class _AnalyticFn(beam.DoFn):
    """Events of one (group, partition) in event-time order; see the module docstring."""

    def __init__(self, specs: Sequence[Sequence[_Spec]], merge: bool, streaming: bool):
        self._specs = specs
        self._merge = merge  # emit (row id, (group, values)) instead of the augmented row
        self._streaming = streaming
        # The history of a partition is useless once its newest event is this old.
        self._keep = [max(s.duration_us for s in group) for group in specs]

    def process(self, element, pending=_PENDING_P, nxt=_NEXT_P, timer=_WAKE_P):
        _, event = element
        pending.add(event)
        t, current = event[0], nxt.read()
        if current is None or (self._streaming and t < current):
            timer.set(us_to_ts(t))
            nxt.write(t)

    @on_timer(_WAKE)
    def wake(
        self,
        key=beam.DoFn.KeyParam,
        fired=beam.DoFn.TimestampParam,
        pending=_PENDING_P,
        history_state=_HISTORY_P,
        last_ts=_LAST_TS_P,
        nxt=_NEXT_P,
        timer=_WAKE_P,
    ):
        g = json.loads(key)[0]
        specs = self._specs[g]
        now = ts_us(fired)
        events = list(pending.read())
        ready = [e for e in events if not self._streaming or e[0] <= now]
        later = [e for e in events if self._streaming and e[0] > now]
        history = history_state.read() or {}
        newest = last_ts.read()
        ready.sort(key=lambda e: (e[0], e[1]))
        for t, _, row_or_id, inputs in ready:
            values = _step(specs, history, t, inputs)
            out = (row_or_id, (g, values)) if self._merge else {**row_or_id, **values}
            yield TimestampedValue(out, us_to_ts(t))
            newest = t if newest is None else max(newest, t)
        if ready:
            pending.clear()
            for e in later:
                pending.add(e)
        if not self._streaming:
            for s in (pending, history_state, last_ts, nxt):
                s.clear()
            return
        if later:
            wake_at = min(e[0] for e in later)
        elif newest is not None and now < newest + self._keep[g]:
            wake_at = newest + self._keep[g]  # then drop the history
        else:
            for s in (history_state, last_ts, nxt):
                s.clear()
            return
        history_state.write(history)
        last_ts.write(newest)
        timer.set(us_to_ts(wake_at))
        nxt.write(wake_at)


_PARTS = BagStateSpec("parts", PickleCoder())
_PARTS_P = beam.DoFn.StateParam(_PARTS)


class _Merge(beam.DoFn):
    """Puts each group's values back onto the row once the row and all groups are in."""

    def __init__(self, groups: int):
        self._need = groups + 1

    def process(self, element, timestamp=beam.DoFn.TimestampParam, parts=_PARTS_P):
        _, part = element
        have = list(parts.read()) + [part]
        if len(have) < self._need:
            parts.add(part)
            return
        parts.clear()
        row = next(p[1] for p in have if p[0] is None)
        merged = dict(row)
        for _g, values in sorted((p for p in have if p[0] is not None), key=lambda p: p[0]):
            merged.update(values)
        yield TimestampedValue(merged, timestamp)


class AnalyticFunctions(beam.PTransform):
    """Evaluates a step's LAG / LAST / ISFIRST calls on every row.

    PCollection[row] → ``{"rows": rows with each call's value under its output_key,
    "failed": DeadLetters}``. Each row keeps its timestamp; outputs are in the global window.

    >>> # SELECT sensorId, reading - LAG(reading) OVER (PARTITION BY sensorId LIMIT DURATION(hour, 1)) ...
    >>> # out = rows | AnalyticFunctions([AnalyticCall("lag", "__lag0", lambda r: r["reading"],
    >>> #                                   partition=lambda r: (r["sensorId"],), duration_us=3_600_000_000)])
    >>> # out["rows"] → {..., "__lag0": previous reading of the sensor within the hour, or None}
    """

    def __init__(self, calls: Sequence[AnalyticCall], step: str = "analytic"):
        super().__init__()
        self._calls = list(calls)
        self._step = step
        groups: list[list[AnalyticCall]] = []
        for c in self._calls:
            for group in groups:
                if group[0].partition is c.partition:
                    group.append(c)
                    break
            else:
                groups.append([c])
        self._groups = groups

    def expand(self, rows):
        if not self._calls:
            return {ROWS: rows, FAILED: rows | "no failures" >> beam.Filter(lambda _: False)}
        streaming = _is_streaming([rows])
        specs = [[_Spec(c.kind, c.output_key, c.offset, c.duration_us, c.kind == "count" and c.value is None)
                  for c in g] for g in self._groups]
        merge = len(self._groups) > 1
        prepared = (
            rows
            | "global" >> beam.WindowInto(GlobalWindows())  # history spans all time, not the input's windows
            | "prepare" >> beam.ParDo(_Prepare(self._groups, self._step)).with_outputs(
                FAILED, _Prepare.MERGE, main=ROWS
            )
        )
        evaluated = prepared[ROWS] | "evaluate" >> beam.ParDo(own_timers(_AnalyticFn)(specs, merge, streaming))
        if merge:
            evaluated = (
                (prepared[_Prepare.MERGE], evaluated)
                | "parts" >> beam.Flatten()
                | "by row" >> beam.Map(lambda kv: kv).with_output_types(tuple[bytes, Any])
                | "merge" >> beam.ParDo(_Merge(len(self._groups)))
            )
        return {ROWS: evaluated, FAILED: prepared[FAILED]}


__all__ = ["AGGREGATE_KINDS", "ISFIRST", "LAG", "LAST", "AnalyticCall", "AnalyticFunctions", "CheckedValue"]
