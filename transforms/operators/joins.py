"""ASA joins as Beam transforms: the time-bounded stream–stream JOIN and the reference-data JOIN.

No SQL here: the compiler extracts the equality keys, the DATEDIFF time bound and the rest of
the ON condition and hands them over as plain callables.

Semantics (ASA JOIN, reference-data JOIN and System.Timestamp() reference pages):

* **Time bound.** ``DATEDIFF(unit, l, r) BETWEEN lo AND hi`` inside ON is the special JOIN
  form whose arguments are input aliases: it compares the events' timestamps (TIMESTAMP BY).
  The docs define it as the units *elapsed* from l to r, and the canonical example
  (``BETWEEN 0 AND 15`` minutes) "matches if and only if the exit occurs after the entry, but
  no more than 15 minutes later". So the bound is on the exact time difference, not on
  crossed unit boundaries as the scalar DATEDIFF counts them: a pair matches when
  ``lo*unit <= r_ts - l_ts <= hi*unit`` (both ends inclusive, microsecond precision).
  ``TimeBound`` holds that interval in microseconds. At most 7 days each way.
* **Keys.** NULL never matches (a key containing NULL never joins). Key values are compared
  with the query language's ``=`` (``runtime.eq``): ``1 = 1.0``, ``'1' = 1``, an ISO string
  equals the datetime it denotes. Rows are bucketed by a normalized key and every candidate
  pair is then checked with ``eq`` itself, so the match is exactly ``=``.
* **Residual.** The rest of ON is evaluated per candidate pair; only True matches (SQL 3VL).
  If it raises RowError the pair goes to ``failed`` (row = ``{"left": l, "right": r}``) and
  counts as not matching.
* **Output timestamps** (System.Timestamp() page): a matched pair is timestamped with the
  later of the two events; a LEFT OUTER non-match with "the latest logical time at which a
  matching right event could have occurred", ``l_ts + hi`` (``l_ts`` if ``hi < 0``).
* **LEFT OUTER.** A left row that matches nothing is emitted once as ``(left, None)``, in
  streaming only once the watermark has passed ``l_ts + hi``. Each matching pair is emitted
  once, as soon as both rows are there.
* **Reference data** is on the right, read once (static), no time bound, INNER or LEFT.
  Output timestamp = the stream event's.

Streaming vs batch: the same stateful DoFn (keyed by the join key, bags for both sides, one
event-time timer per key). In streaming pairs are emitted as rows arrive and the timer, set to
the earliest deadline in the key, emits left-outer misses and drops rows that can no longer
match, so state is bounded by the time bound. In batch all input is there before any timer
fires, so rows are only buffered and one timer per key sorts both sides and sweeps them
(O(n log n + matches) instead of comparing every row with every row); the results are the
same. Late rows (behind the watermark) are joined with whatever is still in state.

Timers fire "once the watermark passes" their time. Beam's Java-based runners fire a timer at
T when the watermark is beyond T and hold the output watermark at T, so a miss emitted at T is
on time downstream. Python's local streaming DirectRunner fires at watermark == T and, by
itself, holds nothing; asa-beam's ``LocalDirectRunner`` adds the hold (``pipelines.runners``:
a stateful step's output watermark stays below its pending event-time timers), so rows a timer
emits are on time for a window downstream. A right row stamped exactly at the current watermark
can still arrive after the miss of a left row whose bound ends there.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.deadletter import FAILED, RowError, json_default
from transforms.operators.timers import own_timers
from transforms.query import runtime
from transforms.query.builtins import normalize_datepart
from transforms.types import parse_datetime

ROWS = "rows"
INNER, LEFT = "inner", "left"

# Fixed-length time units a time bound or a duration may use, in microseconds.
UNIT_US: dict[str, int] = {
    "week": 7 * 86_400_000_000,
    "day": 86_400_000_000,
    "hour": 3_600_000_000,
    "minute": 60_000_000,
    "second": 1_000_000,
    "millisecond": 1_000,
    "microsecond": 1,
}
MAX_BOUND_US = 7 * 86_400_000_000  # ASA: the maximum DATEDIFF size in a JOIN is seven days


def unit_us(unit: str) -> int:
    """Microseconds in one ``unit`` (any DATEDIFF spelling: ``mi``, ``ss``...); ValueError if not fixed-length."""
    part = normalize_datepart(unit)
    if part not in UNIT_US:
        raise ValueError(f"'{unit}' has no fixed length; use one of: {', '.join(UNIT_US)}")
    return UNIT_US[part]


def to_us(unit: str, n: float) -> int:
    """``n`` units in microseconds (fractions are kept to the microsecond)."""
    return round(n * unit_us(unit))


def ts_us(ts: Timestamp) -> int:
    return ts.micros


def us_to_ts(us: int) -> Timestamp:
    return Timestamp(micros=us)


@dataclass(frozen=True)
class TimeBound:
    """The JOIN time bound: ``lo_us <= right_ts - left_ts <= hi_us`` (inclusive, microseconds).

    ``None`` leaves a side open (only while combining conditions; a join needs both).

    >>> TimeBound.between("minute", 0, 15)            # DATEDIFF(minute, l, r) BETWEEN 0 AND 15
    TimeBound(lo_us=0, hi_us=900000000)
    >>> TimeBound.compare("second", "<", 0)           # DATEDIFF(second, l, r) < 0
    TimeBound(lo_us=None, hi_us=-1)
    >>> TimeBound.between("second", 0, 5).swapped()   # the same condition written DATEDIFF(second, r, l)
    TimeBound(lo_us=-5000000, hi_us=0)
    """

    lo_us: int | None
    hi_us: int | None

    @classmethod
    def between(cls, unit: str, lo: float, hi: float) -> TimeBound:
        """``DATEDIFF(unit, l, r) BETWEEN lo AND hi``."""
        return cls(to_us(unit, lo), to_us(unit, hi))

    @classmethod
    def compare(cls, unit: str, op: str, n: float) -> TimeBound:
        """``DATEDIFF(unit, l, r) <op> n`` for op in ``< <= > >= =``: exact time, so ``< n`` is ``<= n*unit - 1µs``."""
        us = to_us(unit, n)
        bounds = {
            "<": (None, us - 1), "<=": (None, us), ">": (us + 1, None), ">=": (us, None), "=": (us, us),
        }
        if op not in bounds:
            raise ValueError(f"unsupported comparison '{op}' on DATEDIFF in a JOIN condition")
        return cls(*bounds[op])

    def swapped(self) -> TimeBound:
        """The same bound seen from the other input (``DATEDIFF(unit, r, l)``)."""
        return TimeBound(None if self.hi_us is None else -self.hi_us, None if self.lo_us is None else -self.lo_us)

    def intersect(self, other: TimeBound) -> TimeBound:
        """Both conditions at once (``... AND ...`` in ON)."""
        los = [x for x in (self.lo_us, other.lo_us) if x is not None]
        his = [x for x in (self.hi_us, other.hi_us) if x is not None]
        return TimeBound(max(los) if los else None, min(his) if his else None)

    def validate(self) -> tuple[int, int]:
        """(lo_us, hi_us); ValueError when a side is open or beyond 7 days."""
        if self.lo_us is None or self.hi_us is None:
            raise ValueError("a JOIN between streams needs a time bound on both sides (DATEDIFF ... BETWEEN lo AND hi)")
        if max(abs(self.lo_us), abs(self.hi_us)) > MAX_BOUND_US:
            raise ValueError("the DATEDIFF time bound of a JOIN can be at most 7 days")
        return self.lo_us, self.hi_us


# --------------------------------------------------------------------------- key values

def _bucket_value(v: Any) -> tuple:
    """A deterministic, hashable stand-in for a key value such that ``eq(a, b)`` implies equal buckets.

    Numbers (and text that parses as a number, as ``=`` converts it) bucket by their float
    value, datetimes (and ISO text) by their microseconds; the exact ``=`` check follows.
    """
    if isinstance(v, bool):
        return ("n", float(v))
    if isinstance(v, (int, float)):
        try:
            f = float(v)
        except OverflowError:
            return ("n", str(v))
        return ("n", 0.0 if f == 0 else f)  # -0.0 encodes differently from 0.0 but is equal
    if isinstance(v, str):
        # ``=`` converts text compared with a number (float() accepts what it accepts) or a datetime.
        try:
            f = float(v)
        except ValueError:
            pass
        else:
            return ("n", 0.0 if f == 0 else f)
        try:
            return ("t", _dt_us(parse_datetime(v)))
        except ValueError:
            return ("s", v)
    if isinstance(v, _dt.datetime):
        return ("t", _dt_us(v))
    if isinstance(v, (dict, list, tuple)):
        return ("j", json.dumps(v, sort_keys=True, default=json_default, separators=(",", ":")))
    return ("o", repr(v))


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _dt_us(d: _dt.datetime) -> int:
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    delta = d - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def as_key(values: Any) -> tuple:
    """The key callable's result as a tuple (a single value is a one-part key)."""
    if isinstance(values, tuple):
        return values
    if isinstance(values, list):
        return tuple(values)
    return (values,)


def bucket_key(values: tuple) -> tuple | None:
    """Bucket of a join key, or None when a part is NULL (NULL never joins)."""
    if any(v is None for v in values):
        return None
    return tuple(_bucket_value(v) for v in values)


def state_key(bucket: tuple) -> bytes:
    """A bucket as bytes: stateful DoFns need a key coder that is deterministic, and bytes are."""
    return json.dumps(bucket, separators=(",", ":")).encode()


def keys_equal(a: tuple, b: tuple) -> bool:
    """The ON equalities themselves: every part ``=`` (runtime.eq) is True."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        try:
            if runtime.eq(x, y) is not True:
                return False
        except RowError:
            return False
    return True


def _dead(step: str, e: RowError, row: Any) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(FAILED, e.dead_letter(step, row))


def _pair_row(left: dict, right: dict | None) -> dict:
    return {"left": left, "right": right}


def _is_streaming(pcolls: Iterable[beam.PCollection]) -> bool:
    pcolls = list(pcolls)
    options = pcolls[0].pipeline.options
    return bool(options.view_as(StandardOptions).streaming) or any(not p.is_bounded for p in pcolls)


# --------------------------------------------------------------------------- interval join

_L, _R = 0, 1


@beam.typehints.with_output_types(tuple[bytes, Any])
class _KeyRows(beam.DoFn):
    """row → (bucket, (side, ts_us, key, row, id)); NULL keys go to the side output ``null``."""

    NULL = "null"

    def __init__(self, side: int, key: Callable[[dict], Any], step: str):
        self._side = side
        self._key = key
        self._step = step

    def process(self, row, timestamp=beam.DoFn.TimestampParam):
        try:
            key = as_key(self._key(row))
        except RowError as e:
            yield _dead(self._step, e, row)
            return
        bucket = bucket_key(key)
        if bucket is None:
            yield beam.pvalue.TaggedOutput(self.NULL, row)
            return
        # The id tells LEFT OUTER which stored left rows have matched (bags cannot be updated in place).
        yield state_key(bucket), (self._side, ts_us(timestamp), key, row, uuid.uuid4().hex if self._side == _L else "")


_LEFTS = BagStateSpec("lefts", PickleCoder())
_RIGHTS = BagStateSpec("rights", PickleCoder())
_MATCHED = BagStateSpec("matched", PickleCoder())  # ids of stored left rows matched after they arrived
_NEXT = ReadModifyWriteStateSpec("next", VarIntCoder())  # the time the timer is set to
_DEADLINE = TimerSpec("deadline", TimeDomain.WATERMARK)
# DoFn parameter markers, built once (ruff B008: no calls in argument defaults).
_LEFTS_P, _RIGHTS_P, _MATCHED_P, _NEXT_P = (beam.DoFn.StateParam(s) for s in (_LEFTS, _RIGHTS, _MATCHED, _NEXT))
_DEADLINE_P = beam.DoFn.TimerParam(_DEADLINE)


class _IntervalJoinFn(beam.DoFn):
    """Stateful join of the rows of one key. See the module docstring for the two modes."""

    def __init__(self, lo: int, hi: int, kind: str, residual, step: str, streaming: bool):
        self._lo, self._hi = lo, hi
        self._outer = kind == LEFT
        self._residual = residual
        self._step = step
        self._streaming = streaming

    # Deadlines: a left row can match rights up to l + hi; a right row, lefts up to r - lo.
    # Never before the row itself (a timer must not hold the output before its element).
    def _left_deadline(self, ts: int) -> int:
        return max(ts + self._hi, ts)

    def _right_deadline(self, ts: int) -> int:
        return max(ts - self._lo, ts)

    def _match(self, lk, lrow, rk, rrow):
        """True/False for a candidate pair in the time bound; a TaggedOutput if the residual failed."""
        if not keys_equal(lk, rk):
            return False
        if self._residual is None:
            return True
        try:
            return self._residual(lrow, rrow) is True
        except RowError as e:
            return _dead(self._step, e, _pair_row(lrow, rrow))

    def process(
        self,
        element,
        lefts=_LEFTS_P,
        rights=_RIGHTS_P,
        matched=_MATCHED_P,
        nxt=_NEXT_P,
        timer=_DEADLINE_P,
    ):
        _, (side, ts, key, row, rid) = element
        if not self._streaming:
            # Batch: everything arrives before any timer fires; match once, sorted, at the end.
            (lefts if side == _L else rights).add((ts, key, row, rid))
            if nxt.read() is None:
                timer.set(us_to_ts(ts))
                nxt.write(ts)
            return
        if side == _L:
            hit = False
            for r_ts, r_key, r_row, _ in rights.read():
                if self._lo <= r_ts - ts <= self._hi:
                    m = self._match(key, row, r_key, r_row)
                    if m is True:
                        hit = True
                        yield TimestampedValue((row, r_row), us_to_ts(max(ts, r_ts)))
                    elif m is not False:
                        yield m
            lefts.add((ts, key, row, rid if not hit else ""))  # "" = already matched
            deadline = self._left_deadline(ts)
        else:
            for l_ts, l_key, l_row, l_id in lefts.read():
                if self._lo <= ts - l_ts <= self._hi:
                    m = self._match(l_key, l_row, key, row)
                    if m is True:
                        if self._outer and l_id:
                            matched.add(l_id)
                        yield TimestampedValue((l_row, row), us_to_ts(max(ts, l_ts)))
                    elif m is not False:
                        yield m
            rights.add((ts, key, row, ""))
            deadline = self._right_deadline(ts)
        current = nxt.read()
        if current is None or deadline < current:
            timer.set(us_to_ts(deadline))
            nxt.write(deadline)

    @on_timer(_DEADLINE)
    def expire(
        self,
        fired=beam.DoFn.TimestampParam,
        lefts=_LEFTS_P,
        rights=_RIGHTS_P,
        matched=_MATCHED_P,
        nxt=_NEXT_P,
        timer=_DEADLINE_P,
    ):
        if not self._streaming:
            yield from self._sweep(list(lefts.read()), list(rights.read()))
            for s in (lefts, rights, matched, nxt):
                s.clear()
            return
        now = ts_us(fired)
        done = set(matched.read()) if self._outer else set()
        keep_l, keep_r, next_deadline = [], [], None
        for item in lefts.read():
            deadline = self._left_deadline(item[0])
            if deadline <= now:
                l_ts, _, l_row, l_id = item
                if self._outer and l_id and l_id not in done:
                    yield TimestampedValue((l_row, None), us_to_ts(deadline))
            else:
                keep_l.append(item)
                next_deadline = deadline if next_deadline is None else min(next_deadline, deadline)
        for item in rights.read():
            deadline = self._right_deadline(item[0])
            if deadline > now:
                keep_r.append(item)
                next_deadline = deadline if next_deadline is None else min(next_deadline, deadline)
        lefts.clear()
        rights.clear()
        matched.clear()
        for item in keep_l:
            lefts.add(item)
            if item[3] and item[3] in done:
                matched.add(item[3])
        for item in keep_r:
            rights.add(item)
        if next_deadline is None:
            nxt.clear()
        else:
            timer.set(us_to_ts(next_deadline))
            nxt.write(next_deadline)

    def _sweep(self, lefts: list, rights: list):
        """All pairs and misses of one key at once: both sides sorted by time, a sliding range of rights."""
        lefts.sort(key=lambda x: x[0])
        rights.sort(key=lambda x: x[0])
        start = 0
        for l_ts, l_key, l_row, _ in lefts:
            while start < len(rights) and rights[start][0] - l_ts < self._lo:
                start += 1
            hit = False
            i = start
            while i < len(rights) and rights[i][0] - l_ts <= self._hi:
                r_ts, r_key, r_row, _ = rights[i]
                m = self._match(l_key, l_row, r_key, r_row)
                if m is True:
                    hit = True
                    yield TimestampedValue((l_row, r_row), us_to_ts(max(l_ts, r_ts)))
                elif m is not False:
                    yield m
                i += 1
            if self._outer and not hit:
                yield TimestampedValue((l_row, None), us_to_ts(self._left_deadline(l_ts)))


class _NullKeyMiss(beam.DoFn):
    def __init__(self, hi: int):
        self._hi = hi

    def process(self, row, timestamp=beam.DoFn.TimestampParam):
        t = ts_us(timestamp)
        yield TimestampedValue((row, None), us_to_ts(max(t + self._hi, t)))


class IntervalJoin(beam.PTransform):
    """Stream–stream JOIN bounded in time: ``ON <keys> AND DATEDIFF(unit, l, r) BETWEEN lo AND hi AND <residual>``.

    Input: ``(left_rows, right_rows)``, rows with event timestamps. Returns
    ``{"rows": PCollection[(left_row, right_row | None)], "failed": PCollection[DeadLetter]}``
    in the global window; a pair is timestamped max(l, r), a LEFT OUTER miss ``l + hi``.

    >>> # SELECT ... FROM Entry E JOIN Exit X ON E.plate = X.plate AND DATEDIFF(minute, E, X) BETWEEN 0 AND 15
    >>> # out = (entries, exits) | IntervalJoin(lambda e: (e["plate"],), lambda x: (x["plate"],),
    >>> #                                       TimeBound.between("minute", 0, 15), kind="left")
    >>> # out["rows"]  → (entry, exit) pairs, and (entry, None) for entries without an exit in 15 minutes
    """

    def __init__(
        self,
        left_key: Callable[[dict], tuple],
        right_key: Callable[[dict], tuple],
        bounds: TimeBound,
        kind: str = INNER,
        residual: Callable[[dict, dict], bool | None] | None = None,
        step: str = "join",
    ):
        super().__init__()
        if kind not in (INNER, LEFT):
            raise ValueError(f"join kind must be 'inner' or 'left', not {kind!r}")
        self._lo, self._hi = bounds.validate()
        self._left_key, self._right_key = left_key, right_key
        self._kind = kind
        self._residual = residual
        self._step = step

    def expand(self, pcolls):
        left, right = pcolls
        streaming = _is_streaming((left, right))
        # ASA joins raw events: state must span all time, not a window the input happens to be in.
        left = left | "left global" >> beam.WindowInto(GlobalWindows())
        right = right | "right global" >> beam.WindowInto(GlobalWindows())
        lk = left | "key left" >> beam.ParDo(_KeyRows(_L, self._left_key, self._step)).with_outputs(
            FAILED, _KeyRows.NULL, main=ROWS
        )
        rk = right | "key right" >> beam.ParDo(_KeyRows(_R, self._right_key, self._step)).with_outputs(
            FAILED, _KeyRows.NULL, main=ROWS
        )
        joined = (
            (lk[ROWS], rk[ROWS])
            | "sides" >> beam.Flatten()
            | "join" >> beam.ParDo(
                own_timers(_IntervalJoinFn)(self._lo, self._hi, self._kind, self._residual, self._step, streaming)
            ).with_outputs(FAILED, main=ROWS)
        )
        parts = [joined[ROWS]]
        if self._kind == LEFT:
            # A NULL key cannot match: the miss is certain at once, stamped as ASA would.
            parts.append(lk[_KeyRows.NULL] | "null-key misses" >> beam.ParDo(_NullKeyMiss(self._hi)))
        rows = parts[0] if len(parts) == 1 else tuple(parts) | "rows" >> beam.Flatten()
        failed = (lk[FAILED], rk[FAILED], joined[FAILED]) | "failed" >> beam.Flatten()
        return {ROWS: rows, FAILED: failed}


# --------------------------------------------------------------------------- reference-data join


@beam.typehints.with_output_types(tuple[bytes, Any])
class _KeyReference(beam.DoFn):
    def __init__(self, key: Callable[[dict], Any], step: str):
        self._key = key
        self._step = step

    def process(self, row):
        try:
            key = as_key(self._key(row))
        except RowError as e:
            yield _dead(self._step, e, row)
            return
        bucket = bucket_key(key)
        if bucket is not None:  # a NULL key matches nothing: the row can never be looked up
            yield state_key(bucket), (key, row)


class _LookupReference(beam.DoFn):
    def __init__(self, key, kind: str, residual, step: str, counters: str | None = None):
        self._key = key
        self._outer = kind == LEFT
        self._residual = residual
        self._step = step
        # Row accounting: stream rows matched / unmatched / dead-lettered, counted per bundle.
        names = ("matched", "unmatched", "lookup_dead") if counters else ()
        self._counters = [Metrics.counter("asa", f"{counters}.{n}") for n in names]

    def start_bundle(self):
        self._n = [0, 0, 0]

    def finish_bundle(self):
        for counter, n in zip(self._counters, self._n, strict=False):
            if n:
                counter.inc(n)
        self._n = [0, 0, 0]

    def process(self, row, reference):
        try:
            key = as_key(self._key(row))
        except RowError as e:
            self._n[2] += 1
            yield _dead(self._step, e, row)
            return
        bucket = bucket_key(key)
        hit = False
        # MultiMap side inputs support [] only (an unknown key gives no values).
        for ref_key, ref_row in reference[state_key(bucket)] if bucket is not None else ():
            if not keys_equal(key, ref_key):
                continue
            if self._residual is not None:
                try:
                    if self._residual(row, ref_row) is not True:
                        continue
                except RowError as e:
                    yield _dead(self._step, e, _pair_row(row, ref_row))
                    continue
            hit = True
            yield row, ref_row
        self._n[0 if hit else 1] += 1
        if self._outer and not hit:
            yield row, None


def _identity(x):
    return x


class ReferenceJoin(beam.PTransform):
    """Stream JOIN reference data (right side, read once, no time bound), INNER or LEFT.

    Applied to the stream; ``reference`` is the bounded PCollection of reference rows, used as
    a side input keyed by ``ref_key``. Returns ``{"rows": PCollection[(stream_row, ref_row | None)],
    "failed": ...}``; each output keeps the stream row's timestamp. Several reference rows with
    the same key give several outputs.

    >>> # SELECT ... FROM Input I JOIN Registration R ON I.LicensePlate = R.LicensePlate
    >>> # out = stream | ReferenceJoin(registrations, lambda i: (i["LicensePlate"],),
    >>> #                              lambda r: (r["LicensePlate"],))
    """

    def __init__(
        self,
        reference: beam.PCollection,
        stream_key: Callable[[dict], tuple],
        ref_key: Callable[[dict], tuple],
        kind: str = INNER,
        residual: Callable[[dict, dict], bool | None] | None = None,
        step: str = "join",
        counters: str | None = None,
    ):
        super().__init__()
        if kind not in (INNER, LEFT):
            raise ValueError(f"join kind must be 'inner' or 'left', not {kind!r}")
        self._counters = counters  # prefix of the row-accounting counters (matched, unmatched, lookup_dead)
        self._reference = reference
        self._stream_key, self._ref_key = stream_key, ref_key
        self._kind = kind
        self._residual = residual
        self._step = step

    def expand(self, stream):
        keyed = (
            self._reference
            | "reference global" >> beam.WindowInto(GlobalWindows())
            | "key reference" >> beam.ParDo(_KeyReference(self._ref_key, self._step)).with_outputs(FAILED, main=ROWS)
        )
        # The streaming DirectRunner fills a side input only from a single-output step (it looks at
        # the first output bundle of the producer), so the view is fed through a plain Map.
        view = keyed[ROWS] | "reference view" >> beam.Map(_identity).with_output_types(tuple[bytes, Any])
        out = stream | "lookup" >> beam.ParDo(
            _LookupReference(self._stream_key, self._kind, self._residual, self._step, self._counters),
            reference=beam.pvalue.AsMultiMap(view),
        ).with_outputs(FAILED, main=ROWS)
        failed = (keyed[FAILED], out[FAILED]) | "failed" >> beam.Flatten()
        return {ROWS: out[ROWS], FAILED: failed}


__all__ = [
    "INNER", "LEFT", "MAX_BOUND_US", "UNIT_US", "IntervalJoin", "ReferenceJoin", "TimeBound",
    "as_key", "bucket_key", "keys_equal", "state_key", "to_us", "unit_us",
]
