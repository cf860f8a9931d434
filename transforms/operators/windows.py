"""ASA windows for GROUP BY: tumbling, hopping, sliding, session and snapshot, as one transform.

``WindowedAggregate(window, specs)`` turns ``PCollection[(key, args)]`` (event timestamps set
upstream by TIMESTAMP BY) into ``PCollection[(key, window_end, results)]``: one element per
(key, window) ASA would emit, timestamped at the window end (``System.Timestamp()``), in the
global window. ``args`` holds one argument value per ``AggregateSpec`` (see aggregates.py);
``results`` lists the aggregate values in spec order; ``window_end`` is an aware UTC datetime.

Semantics (ASA windowing, tumbling, hopping, sliding, session and snapshot reference pages):

* **Tumbling / hopping**: windows are ``(end - size, end]``: an event exactly on a boundary
  belongs to the window that *ends* there. Window ends are the multiples of the hop (tumbling:
  size) counted from 0001-01-01T00:00:00Z, shifted by ``offset`` (which may be negative, e.g.
  ``Offset(millisecond, -1)`` makes windows include their start and exclude their end). For
  sizes that divide a day that is the same as aligning to the Unix epoch. Only windows with at
  least one event produce output. Beam's FixedWindows/SlidingWindows are ``[start, end)``; the
  ASA window ``(E - size, E]`` is exactly Beam's ``[E - size + 1us, E + 1us)``, so this runs on
  Beam's own WindowFns with the offset moved by 1 us, and Beam's combiner lifting (the fast
  path). The result is re-timestamped at ``E`` (see ``_EmitWindowed``).
* **Snapshot** (``GROUP BY System.Timestamp()``): events with the same timestamp, output at that
  timestamp: 1-microsecond Beam windows, same fast path.
* **Sliding** ``(size)``: an output whenever an event enters or leaves the window, i.e. at every
  event time ``t`` and at every ``t + size``, covering ``(T - size, T]``, and only when that
  window holds at least one event (an exit that empties the window emits nothing). Several
  events at the same time give one output. Per group key (an event of another key changes
  nothing in this key's window, so it causes no output for it; not spelled out by the docs).
* **Session** ``(timeout, maxDuration)``: starts at its first event; an event joins while it is
  at most ``timeout`` after the session's last event. Max duration is checked at the multiples
  of ``maxDuration`` (counted from 0001-01-01 like the windows): at the first such check point
  ``c`` with ``c - start > maxDuration`` the session ends at ``c`` and a new one opens at ``c``
  (so a session lasts at most 2 x maxDuration). Otherwise it ends ``timeout`` after its last
  event. The output time (``System.Timestamp()``) is the session end. An event exactly at the
  end belongs to the ending session (windows include their end). ``maxDuration = 0`` means no
  limit. ``partition_by`` lists the positions in the group key of the OVER (PARTITION BY)
  columns; ``None`` (default) means sessions per full group key. The docs say that with a
  partition key "session window is applied to each group independently", which reads as:
  without OVER (PARTITION BY) the sessions span all events of the step and GROUP BY splits
  each session's events by key (all keys then share session ends): pass ``partition_by=()``.
* **No window** (``window=None``): not valid ASA for streams; for batch convenience every key
  is one group over all input, emitted when the input ends, timestamped at the key's latest
  event (``window_end`` = that time).

Sliding and session windows run in one stateful DoFn per key (BagState buffer + event-time
timer): events are buffered and processed in timestamp order once the watermark has passed
them, so out-of-order input within the watermark is exact. In batch the timer fires once after
all input (watermark at +inf) and processes everything; in streaming it fires at the next
point where something can happen (the earliest buffered event, the next window exit or session
end). State keeps only what can still affect an output (sliding: events of the last ``size``;
session: the open session's accumulators) and is cleared when a key goes idle. Sliding
windows update accumulators incrementally (``remove`` on exit); aggregates without ``remove``
are recomputed from the window's events.

Late data: events behind the watermark by more than ``allowed_lateness_us`` are the caller's
(dead-lettered upstream). Within it: tumbling/hopping/snapshot windows re-emit the window's
complete, corrected result for each late event (Beam late panes, accumulating); sliding and
session windows treat an event older than what they already emitted as arriving just after it
(like ASA's "Adjust" policy), and a key whose state was cleared starts afresh.

Keys: tuple of values Beam can encode deterministically (None, bool, int, float, str, bytes).
Wrap datetime, record and array key values with ``key_part(v)``; they come back restored in the
output key. (Note 1 and 1.0 are different keys.)

Time precision: Beam's portable runners (the batch FnApiRunner, Flink, Dataflow) carry
timestamps and windows in milliseconds, so event times are effectively millisecond-precise
there (ASA has 100 ns); results are exact for millisecond timestamps and hops of 2 ms or more.
Timers are set on whole milliseconds for the same reason.

DirectRunner caveat: in streaming mode the Python DirectRunner does not hold the output
watermark for user timers, so sliding/session results can arrive "late" at a *downstream*
windowed GROUP BY, or after the end of input when the watermark jumps straight to +infinity,
on that runner only (Flink/Dataflow hold it). Tests advance the watermark to a finite time
before +infinity.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.trigger import AccumulationMode, AfterCount, AfterWatermark
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import FixedWindows, GlobalWindows, SlidingWindows, TimestampedValue
from apache_beam.typehints import typehints
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.deadletter import json_default
from transforms.operators.aggregates import AggregateSpec, MultiAggregateCombineFn, make_accumulator, timestamp_slots
from transforms.operators.timers import own_timers

TUMBLING, HOPPING, SLIDING, SESSION, SNAPSHOT = "tumbling", "hopping", "sliding", "session", "snapshot"
KINDS = (TUMBLING, HOPPING, SLIDING, SESSION, SNAPSHOT)

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
#: Microseconds from 0001-01-01T00:00:00Z (the .NET/ASA time origin) to the Unix epoch.
ORIGIN_US = (_dt.datetime(1970, 1, 1) - _dt.datetime(1, 1, 1)) // _dt.timedelta(microseconds=1)
MAX_WINDOW_US = 7 * 24 * 3600 * 1_000_000  # "The maximum size of the window in all cases is 7 days."
_END = 2**62  # "the watermark is at +infinity" (batch)


@dataclass(frozen=True)
class WindowSpec:
    """A GROUP BY window. Durations in microseconds.

    >>> WindowSpec.tumbling(60_000_000).hop_us               # TumblingWindow(minute, 1)
    60000000
    >>> hopping = WindowSpec.hopping(10_000_000, 5_000_000)  # HoppingWindow(second, 10, 5)
    >>> offset = WindowSpec.tumbling(3_600_000_000, offset_us=-1000)   # ... Offset(millisecond, -1)
    >>> sliding = WindowSpec.sliding(10_000_000)             # SlidingWindow(second, 10)
    >>> session = WindowSpec.session(5_000_000, 10_000_000, partition_by=(0,))  # SessionWindow(second, 5, 10)
    ...                                                      #   OVER (PARTITION BY <key column 0>)
    >>> WindowSpec.snapshot().kind                           # GROUP BY System.Timestamp()
    'snapshot'
    """

    kind: str
    size_us: int = 0
    hop_us: int = 0
    offset_us: int = 0
    timeout_us: int = 0
    max_duration_us: int = 0
    partition_by: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown window kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind == TUMBLING:
            if self.hop_us not in (0, self.size_us):
                raise ValueError("tumbling window: the hop is the size (use a hopping window)")
            object.__setattr__(self, "hop_us", self.size_us)
        need = {TUMBLING: ("size_us",), HOPPING: ("size_us", "hop_us"), SLIDING: ("size_us",),
                SESSION: ("timeout_us",), SNAPSHOT: ()}[self.kind]
        for name in need:
            if getattr(self, name) <= 0:
                raise ValueError(f"{self.kind} window: {name} must be positive")
        for name in ("size_us", "hop_us", "timeout_us", "max_duration_us"):
            if getattr(self, name) > MAX_WINDOW_US:
                raise ValueError(f"{self.kind} window: {name} is over the 7-day maximum")
        if self.max_duration_us < 0:
            raise ValueError("session window: max_duration_us must not be negative")
        if self.partition_by is not None:
            object.__setattr__(self, "partition_by", tuple(self.partition_by))

    @classmethod
    def tumbling(cls, size_us: int, offset_us: int = 0) -> WindowSpec:
        return cls(TUMBLING, size_us=size_us, hop_us=size_us, offset_us=offset_us)

    @classmethod
    def hopping(cls, size_us: int, hop_us: int, offset_us: int = 0) -> WindowSpec:
        return cls(HOPPING, size_us=size_us, hop_us=hop_us, offset_us=offset_us)

    @classmethod
    def sliding(cls, size_us: int) -> WindowSpec:
        return cls(SLIDING, size_us=size_us)

    @classmethod
    def session(cls, timeout_us: int, max_duration_us: int = 0,
                partition_by: Sequence[int] | None = None) -> WindowSpec:
        return cls(SESSION, timeout_us=timeout_us, max_duration_us=max_duration_us,
                   partition_by=None if partition_by is None else tuple(partition_by))

    @classmethod
    def snapshot(cls) -> WindowSpec:
        return cls(SNAPSHOT)


# --------------------------------------------------------------------------- keys and times


@dataclass(frozen=True)
class KeyPart:
    """A group-key value Beam cannot encode deterministically (datetime, record, array)."""

    kind: str  # "datetime": data = microseconds since the epoch; "json": data = canonical JSON
    data: Any

    def restore(self) -> Any:
        if self.kind == "datetime":
            return us_to_datetime(self.data)
        return json.loads(self.data)


def key_part(v: Any) -> Any:
    """``v`` ready to be part of a group key (see the module docstring)."""
    if isinstance(v, _dt.datetime):
        return KeyPart("datetime", datetime_to_us(v))
    if isinstance(v, (dict, list)):
        return KeyPart("json", json.dumps(v, sort_keys=True, default=json_default, separators=(",", ":")))
    return v


def restore_key(key: tuple) -> tuple:
    if any(type(p) is KeyPart for p in key):
        return tuple(p.restore() if type(p) is KeyPart else p for p in key)
    return key


def datetime_to_us(v: _dt.datetime) -> int:
    if v.tzinfo is None:
        v = v.replace(tzinfo=_dt.timezone.utc)
    return (v - _EPOCH) // _dt.timedelta(microseconds=1)


def us_to_datetime(us: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(microseconds=us)


def _key_bytes(key: tuple) -> bytes:
    """A deterministic encoding of a key (the state key of the stateful operators)."""
    parts = []
    for v in key:
        if v is None or isinstance(v, (bool, str)):
            parts.append(v)
        elif isinstance(v, (int, float)):
            parts.append(["n", repr(v)])
        elif isinstance(v, KeyPart):
            parts.append(["k", v.kind, v.data])
        elif isinstance(v, _dt.datetime):
            parts.append(["t", datetime_to_us(v)])
        elif isinstance(v, bytes):
            parts.append(["b", v.hex()])
        else:
            parts.append(["j", json.dumps(v, sort_keys=True, default=json_default, separators=(",", ":"))])
    return json.dumps(parts, separators=(",", ":")).encode()


def _timer_time(t: int) -> int:
    """Timers are set on whole milliseconds (rounded up): portable runners keep only milliseconds."""
    return -(-t // 1000) * 1000


def _is_streaming(pcoll: beam.PCollection) -> bool:
    options = pcoll.pipeline.options
    return bool(options is not None and options.view_as(StandardOptions).streaming) or not pcoll.is_bounded


def _with_times(args: tuple, slots: tuple[int, ...], t: int) -> tuple:
    out = list(args)
    for i in slots:
        out[i] = (out[i], t)
    return tuple(out)


# --------------------------------------------------------------------------- Beam-native path


def _native_window_fn(w: WindowSpec):
    """The Beam WindowFn whose windows are exactly the ASA windows (see the module docstring)."""
    if w.kind == SNAPSHOT:
        return FixedWindows(Duration(micros=1))
    if w.kind == TUMBLING:
        return FixedWindows(Duration(micros=w.size_us),
                            Timestamp(micros=(w.offset_us - ORIGIN_US + 1) % w.size_us))
    return SlidingWindows(Duration(micros=w.size_us), Duration(micros=w.hop_us),
                          Timestamp(micros=(w.offset_us - ORIGIN_US - w.size_us + 1) % w.hop_us))


def _end_grid(w: WindowSpec) -> tuple[int, int | None]:
    """(phase, hop): ASA window ends are ``phase + k * hop`` (Unix microseconds)."""
    if w.kind == SNAPSHOT:
        return 0, None
    return (w.offset_us - ORIGIN_US) % w.hop_us, w.hop_us


class _AttachTimes(beam.DoFn):
    """(key, args) → (key, args with (value, event_time_us) in the slots that want times)."""

    def __init__(self, slots: tuple[int, ...]):
        self._slots = slots

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        key, args = element
        yield key, _with_times(args, self._slots, timestamp.micros)


class _EmitWindowed(beam.DoFn):
    """(key, results) in a Beam window → (key, window end, results), timestamped at the end.

    Portable runners (the FnApiRunner) carry windows and timestamps with millisecond precision,
    so the decoded Beam window is ``[E - size + 1us, E + 1us)`` rounded down to milliseconds:
    the ASA end ``E`` is the window-end grid point nearest to the decoded end (exact for hops of
    2 ms or more). Snapshot windows report their start (the events' common timestamp, to the
    millisecond on such runners). The element is re-timestamped at ``E`` after it has left the
    window (``_at_end``): a DoFn output with a new timestamp is re-assigned to windows, and a
    hopping window would then hold it several times.
    """

    def __init__(self, phase: int, hop: int | None):
        self._phase = phase
        self._hop = hop

    def process(self, element, window=beam.DoFn.WindowParam):
        key, results = element
        if self._hop is None:
            end = window.start.micros
        else:
            hop, phase = self._hop, self._phase
            end = phase + (window.end.micros - phase + hop // 2) // hop * hop
        yield end, (restore_key(key), us_to_datetime(end), results)


def _at_end(element: tuple) -> TimestampedValue:
    end, out = element
    return TimestampedValue(out, Timestamp(micros=end))


class _WithLatest(beam.CombineFn):
    """Wraps a CombineFn over (args, time) and also keeps the latest event time."""

    def __init__(self, inner: beam.CombineFn):
        super().__init__()
        self._inner = inner

    def create_accumulator(self):
        return [self._inner.create_accumulator(), None]

    def add_input(self, mutable_accumulator, element):
        acc = mutable_accumulator
        args, t = element
        acc[0] = self._inner.add_input(acc[0], args)
        acc[1] = t if acc[1] is None or t > acc[1] else acc[1]
        return acc

    def merge_accumulators(self, accumulators):
        accs = list(accumulators)
        times = [a[1] for a in accs if a[1] is not None]
        return [self._inner.merge_accumulators([a[0] for a in accs]), max(times) if times else None]

    def extract_output(self, accumulator):
        return self._inner.extract_output(accumulator[0]), accumulator[1]


class _ArgsAndTime(beam.DoFn):
    def __init__(self, slots: tuple[int, ...]):
        self._slots = slots

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        key, args = element
        t = timestamp.micros
        yield key, (_with_times(args, self._slots, t) if self._slots else args, t)


class _EmitLatest(beam.DoFn):
    def process(self, element):
        key, (results, t) = element
        yield TimestampedValue((restore_key(key), us_to_datetime(t), results), Timestamp(micros=t))


# --------------------------------------------------------------------------- exact operators


class SlidingCore:
    """The sliding-window operator of one group key, independent of Beam (state is this object).

    ``add(events)`` buffers ``(t_us, group_key_bytes, group_key, args)`` tuples in any order;
    ``advance(now, fns)`` emits ``(group_key, end_us, results)`` for every output time
    ``<= now`` (the caller guarantees every event ``<= now`` has been added).
    """

    def __init__(self, size_us: int):
        self.size = size_us
        self.key: Any = None
        self.live: list = []  # events in (done - size, done], by time
        self.pending: list = []  # events after done, any order
        self.accs: list | None = None  # accumulators of the retractable aggregates over `live`
        self.done: int | None = None

    def add(self, events: Sequence[tuple]) -> None:
        self.pending.extend(events)

    def next_time(self) -> int | None:
        times = [e[0] for e in self.pending]
        if self.live:
            times.append(self.live[0][0] + self.size)
        return min(times) if times else None

    def advance(self, now: int, fns: Sequence[Any]) -> list[tuple]:
        size = self.size
        ready = sorted((e for e in self.pending if e[0] <= now), key=lambda e: e[0])
        self.pending = [e for e in self.pending if e[0] > now]
        seq = self.live + ready  # sorted: live events are all before the ready ones
        if ready and self.key is None:
            self.key = ready[0][2]
        done = self.done if self.done is not None else -_END
        # Output times: entries of the ready events and exits (t + size) in (done, now].
        times = {e[0] for e in ready}
        times.update(e[0] + size for e in seq if done < e[0] + size <= now)
        retract = [i for i, f in enumerate(fns) if getattr(f, "retractable", False)]
        recompute = [i for i, f in enumerate(fns) if not getattr(f, "retractable", False)]
        accs = self.accs if self.accs is not None else [f.create() for f in fns]
        out = []
        lo, hi = 0, len(self.live)
        for T in sorted(times):
            while hi < len(seq) and seq[hi][0] <= T:
                args = seq[hi][3]
                for i in retract:
                    accs[i] = fns[i].add(accs[i], args[i])
                hi += 1
            while lo < hi and seq[lo][0] <= T - size:
                args = seq[lo][3]
                for i in retract:
                    accs[i] = fns[i].remove(accs[i], args[i])
                lo += 1
            if hi == lo:
                continue  # the window emptied: no output
            results = [None] * len(fns)
            for i in retract:
                results[i] = fns[i].extract(accs[i])
            for i in recompute:
                acc = fns[i].create()
                for e in seq[lo:hi]:
                    acc = fns[i].add(acc, e[3][i])
                results[i] = fns[i].extract(acc)
            out.append((self.key, T, results))
        self.live = seq[lo:hi]
        self.accs = accs if self.live else None
        self.done = now if self.done is None else max(self.done, now)
        return out


class SessionCore:
    """The session-window operator of one partition, independent of Beam (see SlidingCore).

    Several group keys can share a partition (no OVER (PARTITION BY), or a partition narrower
    than the group key): they share session boundaries and get one output each per session.
    """

    def __init__(self, timeout_us: int, max_duration_us: int):
        self.timeout = timeout_us
        self.max = max_duration_us
        self.pending: list = []
        self.open = False
        self.start = 0
        self.last = 0
        self.groups: dict = {}  # group key bytes -> [group key, accumulators]
        self.done: int | None = None

    def add(self, events: Sequence[tuple]) -> None:
        self.pending.extend(events)

    def _check_point(self) -> int | None:
        """The first max-duration check point where this session is over maxDuration."""
        if not self.max:
            return None
        m = self.max
        return ((self.start + m + ORIGIN_US) // m + 1) * m - ORIGIN_US

    def _end(self) -> tuple[int, bool]:
        """(when the open session ends unless an event comes first, whether that is a split)."""
        by_timeout = self.last + self.timeout
        check = self._check_point()
        if check is not None and check < by_timeout:
            return check, True
        return by_timeout, False

    def next_time(self) -> int | None:
        times = [e[0] for e in self.pending]
        if self.open:
            times.append(self._end()[0])
        return min(times) if times else None

    def _close(self, end: int, split: bool, fns: Sequence[Any], out: list) -> None:
        for gkey, accs in self.groups.values():
            out.append((gkey, end, [f.extract(a) for f, a in zip(fns, accs, strict=True)]))
        self.groups = {}
        if split:
            self.start = end  # a new (so far empty) session opens at the check point
        else:
            self.open = False

    def advance(self, now: int, fns: Sequence[Any]) -> list[tuple]:
        ready = sorted((e for e in self.pending if e[0] <= now), key=lambda e: e[0])
        self.pending = [e for e in self.pending if e[0] > now]
        out: list = []
        for t, gbytes, gkey, args in ready:
            while self.open:
                end, split = self._end()
                if t <= end:
                    break
                self._close(end, split, fns, out)
            if not self.open:
                self.open, self.start, self.last = True, t, t
            self.last = max(self.last, t)
            slot = self.groups.get(gbytes)
            if slot is None:
                slot = self.groups[gbytes] = [gkey, [f.create() for f in fns]]
            accs = slot[1]
            for i, f in enumerate(fns):
                accs[i] = f.add(accs[i], args[i])
        while self.open:
            end, split = self._end()
            if end > now:
                break
            self._close(end, split, fns, out)
        self.done = now if self.done is None else max(self.done, now)
        return out


_PENDING = BagStateSpec("pending", PickleCoder())
_CORE = ReadModifyWriteStateSpec("core", PickleCoder())
_NEXT = ReadModifyWriteStateSpec("next", VarIntCoder())
_DONE = ReadModifyWriteStateSpec("done", VarIntCoder())
_WAKE = TimerSpec("wake", TimeDomain.WATERMARK)
_PENDING_P, _CORE_P, _NEXT_P, _DONE_P = (beam.DoFn.StateParam(s) for s in (_PENDING, _CORE, _NEXT, _DONE))
_WAKE_P = beam.DoFn.TimerParam(_WAKE)


@beam.typehints.with_output_types(tuple[bytes, Any])
class _Prepare(beam.DoFn):
    """(key, args) → (state key bytes, (t_us, group key bytes, group key, args))."""

    def __init__(self, partition_by: tuple[int, ...] | None, slots: tuple[int, ...]):
        self._partition_by = partition_by
        self._slots = slots

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        key, args = element
        key = tuple(key)
        t = timestamp.micros
        if self._slots:
            args = _with_times(args, self._slots, t)
        gbytes = _key_bytes(key)
        if self._partition_by is None:
            pbytes = gbytes
        else:
            pbytes = _key_bytes(tuple(key[i] for i in self._partition_by))
        yield pbytes, (t, gbytes, key, tuple(args))


class _ExactWindowFn(beam.DoFn):
    """Runs a SlidingCore / SessionCore per state key on event-time timers."""

    def __init__(self, window: WindowSpec, specs: Sequence[AggregateSpec], streaming: bool):
        self._window = window
        self._specs = tuple(specs)
        self._streaming = streaming
        self._fns: list | None = None

    def setup(self):
        retractable = self._window.kind == SLIDING
        self._fns = [make_accumulator(s, retractable=retractable, merging=False) for s in self._specs]

    def _new_core(self):
        w = self._window
        if w.kind == SLIDING:
            return SlidingCore(w.size_us)
        return SessionCore(w.timeout_us, w.max_duration_us)

    def process(self, element, pending=_PENDING_P, nxt=_NEXT_P, done=_DONE_P, timer=_WAKE_P):
        _, event = element
        t = event[0]
        current = nxt.read()
        if self._streaming:
            emitted = done.read()
            if emitted is not None and t <= emitted:
                t = emitted + 1  # older than what was already emitted: adjust (see docstring)
                event = (t, *event[1:])
            at = _timer_time(t)
            if current is None or at < current:
                timer.set(Timestamp(micros=at))
                nxt.write(at)
        elif current is None:
            # Batch: all input precedes the timers; one firing processes everything.
            timer.set(Timestamp(micros=t))
            nxt.write(t)
        pending.add(event)

    @on_timer(_WAKE)
    def wake(self, fired=beam.DoFn.TimestampParam, pending=_PENDING_P, core_state=_CORE_P, nxt=_NEXT_P,
             done=_DONE_P, timer=_WAKE_P):
        now = fired.micros if self._streaming else _END
        core = core_state.read() or self._new_core()
        core.add(list(pending.read()))
        pending.clear()
        for gkey, end, results in core.advance(now, self._fns):
            yield TimestampedValue((restore_key(gkey), us_to_datetime(end), results), Timestamp(micros=end))
        wake_at = core.next_time() if self._streaming else None
        if wake_at is None:  # idle (or batch done): nothing to keep
            for s in (core_state, nxt, done):
                s.clear()
            return
        wake_at = _timer_time(wake_at)
        core_state.write(core)
        done.write(core.done)
        nxt.write(wake_at)
        timer.set(Timestamp(micros=wake_at))


# --------------------------------------------------------------------------- the transform


class WindowedAggregate(beam.PTransform):
    """ASA GROUP BY <keys>, <window> with aggregates; see the module docstring for semantics.

    Input: ``PCollection[(key: tuple, args: tuple)]`` with event timestamps; ``args`` has one
    value per spec (aggregates.py says what to pass). Output: ``PCollection[(key, window_end,
    results)]``, timestamped at ``window_end`` (an aware UTC datetime), in the global window.
    ``streaming`` overrides the batch/streaming choice for sliding and session windows (default:
    streaming when the pipeline runs in streaming mode or the input is unbounded).

    >>> # SELECT TollId, COUNT(*), MAX(Toll) FROM Input TIMESTAMP BY EntryTime
    >>> # GROUP BY TollId, TumblingWindow(minute, 3)
    >>> from apache_beam.transforms.window import TimestampedValue
    >>> specs = [AggregateSpec("COUNT", star=True), AggregateSpec("MAX")]
    >>> tolls = [(1, 60, 4.0), (1, 180, 6.0), (1, 181, 5.0)]   # (TollId, seconds, Toll)
    >>> with beam.Pipeline(runner="DirectRunner") as p:
    ...     _ = (p | beam.Create(tolls)
    ...            | beam.Map(lambda t: TimestampedValue(((t[0],), (None, t[2])), t[1]))
    ...            | WindowedAggregate(WindowSpec.tumbling(180_000_000), specs)
    ...            | beam.Map(lambda r: print(r[0], r[1].time(), r[2])))
    (1,) 00:03:00 [2, 6.0]
    (1,) 00:06:00 [1, 5.0]
    """

    def __init__(self, window: WindowSpec | None, specs: Sequence[AggregateSpec], allowed_lateness_us: int = 0,
                 *, streaming: bool | None = None):
        super().__init__()
        if not specs:
            raise ValueError("WindowedAggregate needs at least one aggregate")
        self._window = window
        self._specs = tuple(specs)
        self._lateness = allowed_lateness_us
        self._streaming = streaming
        self._slots = timestamp_slots(self._specs)

    def expand(self, pcoll):
        w = self._window
        if not typehints.is_consistent_with(pcoll.element_type, typehints.Tuple[Any, Any]):
            # e.g. Create([TimestampedValue(...)]) types its output TimestampedValue; the combine
            # needs key/value pairs. Only such producers pay for this identity step.
            pcoll = pcoll | "as pairs" >> beam.Map(lambda kv: kv).with_output_types(tuple[Any, Any])
        if w is None:
            return self._expand_global(pcoll)
        if w.kind in (SLIDING, SESSION):
            return self._expand_exact(pcoll)
        return self._expand_native(pcoll)

    def _expand_native(self, pcoll):
        if self._slots:
            pcoll = pcoll | "event times" >> beam.ParDo(_AttachTimes(self._slots))
        if self._lateness > 0:
            into = beam.WindowInto(
                _native_window_fn(self._window), trigger=AfterWatermark(late=AfterCount(1)),
                accumulation_mode=AccumulationMode.ACCUMULATING, allowed_lateness=Duration(micros=self._lateness))
        else:
            into = beam.WindowInto(_native_window_fn(self._window))
        return (
            pcoll
            | "window" >> into
            | "aggregate" >> beam.CombinePerKey(MultiAggregateCombineFn(self._specs))
            | "window end" >> beam.ParDo(_EmitWindowed(*_end_grid(self._window)))
            | "global" >> beam.WindowInto(GlobalWindows())
            | "timestamp" >> beam.Map(_at_end)
        )

    def _expand_exact(self, pcoll):
        w = self._window
        streaming = _is_streaming(pcoll) if self._streaming is None else self._streaming
        partition_by = w.partition_by if w.kind == SESSION else None
        return (
            pcoll
            | "global" >> beam.WindowInto(GlobalWindows())
            | "key" >> beam.ParDo(_Prepare(partition_by, self._slots))
            | f"{w.kind} windows" >> beam.ParDo(own_timers(_ExactWindowFn)(w, self._specs, streaming))
        )

    def _expand_global(self, pcoll):
        return (
            pcoll
            | "global" >> beam.WindowInto(GlobalWindows())
            | "event times" >> beam.ParDo(_ArgsAndTime(self._slots)).with_output_types(tuple[Any, Any])
            | "aggregate" >> beam.CombinePerKey(_WithLatest(MultiAggregateCombineFn(self._specs)))
            | "latest" >> beam.ParDo(_EmitLatest())
        )


__all__ = [
    "HOPPING", "KINDS", "ORIGIN_US", "SESSION", "SLIDING", "SNAPSHOT", "TUMBLING", "KeyPart", "SessionCore",
    "SlidingCore", "WindowSpec", "WindowedAggregate", "datetime_to_us", "key_part", "restore_key",
    "us_to_datetime",
]
