"""ASA aggregate functions as accumulators, and one Beam CombineFn for all aggregates of a SELECT.

No SQL here: the compiler describes each aggregate call with an ``AggregateSpec`` and passes,
per input row, one argument value per spec (see "What to pass" below).

Semantics (ASA aggregate function reference pages; "unverified" marks choices the docs leave open):

* All aggregates except COUNT ignore NULL arguments. An aggregate over no (non-NULL) values is
  NULL, except COUNT, which is 0.
* ``COUNT(*)`` / ``COUNT()`` count rows; ``COUNT(x)`` counts non-NULL ``x``; ``COUNT(DISTINCT x)``
  counts distinct non-NULL ``x``. Always bigint.
* ``SUM``: bigint when every summed value is a bigint, else float ("the most precise expression
  data type"). ``AVG``: float (the docs say "determined by the type of the evaluated result";
  float is the choice here, unverified). Float sums are exact and then rounded once (the
  correctly rounded sum, like ``math.fsum``): results do not depend on the order Beam merges
  partial sums, and sliding windows can subtract values without drift. ASA's own double
  arithmetic may differ in the last bit.
* ``STDEV``/``VAR`` (sample, n-1) and ``STDEVP``/``VARP`` (population, n): float, computed
  exactly then rounded. With a single value STDEV/VAR are NULL (T-SQL behaviour; unverified
  for ASA), STDEVP/VARP are 0.
* ``MIN``/``MAX``: the value itself (bigint, float, nvarchar, datetime). Values of different
  types are ordered NULL < numbers < datetimes < strings (not documented by ASA).
* ``Collect([expr])``: an array of the values (``Collect()``: of whole rows), in event-time
  order (ASA does not guarantee an order). NULL values are skipped (the general rule).
* ``CollectTop(n [, expr]) OVER (ORDER BY c1 [ASC|DESC], ...)``: an array of at most ``n``
  records ``{"rank": bigint, "value": expr or the whole row}``, best first. NULL sorts as the
  smallest value; text sorts by ordinal (code point) comparison, after all numbers. Ranks
  are positions 1..n; ties are broken by event time (earlier first) and then by the value's
  canonical JSON, so results are deterministic (ASA does not document ties).
* ``TopOne() OVER (ORDER BY ...)``: the whole row ranked first (same ordering as CollectTop).
* ``Percentile_Cont(p) OVER (ORDER BY x [ASC|DESC])``: float, linear interpolation at row
  number ``1 + p*(N-1)`` (T-SQL formula; the docs' example 0.988 is reproduced).
  ``Percentile_Disc(p)``: the first value whose cumulative distribution is >= p; the value keeps
  its type. ``p`` must be in [0, 1]. ASC is the default.
* ``DISTINCT`` works with every aggregate here (ASA documents it for COUNT).

What to pass per spec (element of the argument tuple, in spec order):

=================================  ==========================================================
COUNT(*) / COUNT()                 anything (ignored); pass None
COUNT(x), SUM, AVG, MIN, MAX, ...  the value of ``x``
Collect(x) / Collect()             the value of ``x`` / the whole row (dict)
CollectTop(n [, x]) OVER (...)     ``(order_values, x_or_row)``; order_values = tuple with one
                                   value per ORDER BY column; ``params=(n, ("ASC", "DESC"...))``
TopOne() OVER (ORDER BY ...)       ``(order_values, row)``; ``params=(("DESC",),)`` etc.
Percentile_Cont/Disc(p) OVER (..)  the ORDER BY value; ``params=(p, "ASC" | "DESC")``
custom (``spec.impl``, JS UDA)     whatever that accumulator expects
=================================  ==========================================================

``make_input_checker(specs)`` returns a function the compiler should call on every argument
tuple before aggregation, in a step that dead-letters RowErrors: it rejects values an aggregate
cannot take (SUM of a record, ORDER BY a record in CollectTop, ...) and converts numeric strings
where ASA converts them (CSV inputs arrive as text). The accumulators assume checked input.

The accumulator interface (what a JS UDA plugs in as ``AggregateSpec(..., impl=obj)``)::

    create() -> acc                 # a fresh, empty accumulator (picklable)
    add(acc, value) -> acc          # may mutate and return acc
    merge(accs: Iterable) -> acc    # combine partial accumulators
    extract(acc) -> result          # the ASA value
    remove(acc, value) -> acc       # optional: undo add (sliding windows); set retractable = True
    mergeable: bool                 # False: inputs are kept and replayed into one acc at extract
    retractable: bool
    needs_timestamp: bool           # True: add/remove receive (value, event_time_us)

A JavaScript UDA (``init``/``accumulate(value, timestamp)``/``deaccumulate``/``computeResult``)
has no merge, so it is ``mergeable = False``. Where Beam merges (tumbling, hopping, snapshot, no
window) the engine keeps a window's inputs and replays them, in event-time order, into
``create()``/``add()`` at extract (``Replay``). Sliding and session windows never merge: there a
non-mergeable accumulator that declares ``retractable = True`` is used directly, incrementally
(``add`` = accumulate, ``remove`` = deaccumulate); its accumulators must then be picklable, as
they are kept in Beam state between timer firings (e.g. the UDA's JSON state, re-loaded into the
JS object per call). Anything else is replayed there too. ``UdaAccumulator`` wraps any object
with the JS method names (a factory builds it, e.g. a JS-backed proxy); it is not retractable,
so it is always replayed and its live objects never reach Beam state.
"""

from __future__ import annotations

import abc
import bisect
import datetime as _dt
import functools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from transforms.deadletter import RowError, json_default
from transforms.types import type_of

ASC, DESC = "ASC", "DESC"

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_F = 1074  # every finite double is an integer multiple of 2**-1074
_INF = math.inf


@dataclass(frozen=True)
class AggregateSpec:
    """One aggregate call of a SELECT list or HAVING clause.

    ``name`` is the canonical upper-case name (``"COUNT"``, ``"PERCENTILE_CONT"``, ...);
    ``star`` marks ``COUNT(*)``; ``params`` holds the constant parameters (see the module
    docstring); ``impl`` is a custom accumulator object (a JS UDA), used instead of the
    built-in one; its ``name`` is free (e.g. ``"UDA.TWA"``).

    >>> count_all = AggregateSpec("COUNT", star=True)                    # COUNT(*)
    >>> count_distinct = AggregateSpec("COUNT", distinct=True)          # COUNT(DISTINCT x)
    >>> top2 = AggregateSpec("COLLECTTOP", params=(2, ("ASC", "DESC")))  # CollectTop(2) OVER (ORDER BY a, b DESC)
    >>> AggregateSpec("PERCENTILE_CONT", params=(0.95, "ASC"))
    AggregateSpec(name='PERCENTILE_CONT', distinct=False, star=False, params=(0.95, 'ASC'))
    """

    name: str
    distinct: bool = False
    star: bool = False
    params: tuple = ()
    impl: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "name", self.name.upper())
        if self.impl is None:
            make_accumulator(self)  # validates the name and the parameters early


# --------------------------------------------------------------------------- value helpers


def _canon(v: Any) -> Any:
    """A hashable stand-in for ``v`` (records and arrays by their canonical JSON)."""
    if isinstance(v, tuple):
        return tuple(_canon(x) for x in v)
    if isinstance(v, (dict, list)):
        return ("\x00json", json.dumps(v, sort_keys=True, default=json_default, separators=(",", ":")))
    return v


def _canon_text(v: Any) -> str:
    try:
        return json.dumps(v, sort_keys=True, default=json_default, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(v)


def _concat(accs: Iterable[list]) -> list:
    """List accumulators merged: one new list holding every element (callers sort it if needed)."""
    return [v for a in accs for v in a]


def _sort_key(v: Any) -> tuple:
    """Total order over ASA values: NULL < numbers < datetimes < strings < anything else."""
    if v is None:
        return (0,)
    if isinstance(v, (int, float)):
        return (1, v)
    if isinstance(v, _dt.datetime):
        return (2, v)
    if isinstance(v, str):
        return (3, v)
    return (4, _canon_text(v))


def _dt_us(v: _dt.datetime) -> int:
    if v.tzinfo is None:
        v = v.replace(tzinfo=_dt.timezone.utc)
    return (v - _EPOCH) // _dt.timedelta(microseconds=1)


def _scaled(x: float) -> int:
    """A finite float as an exact integer multiple of 2**-1074."""
    n, d = x.as_integer_ratio()
    return n << (_F + 1 - d.bit_length())


def _div(num: int, den: int) -> float:
    """num/den correctly rounded; +-inf when it overflows a double."""
    try:
        return num / den
    except OverflowError:
        return _INF if (num > 0) == (den > 0) else -_INF


# --------------------------------------------------------------------------- accumulators


def _add_slots(accs: Iterable[list]) -> list:
    """Merge accumulators that are fixed-length lists of sums (Sum/Avg and Var share the layout: 7 slots)."""
    it = iter(accs)
    out = list(next(it))
    for a in it:
        for i, v in enumerate(a):
            out[i] += v
    return out



class Accumulator(abc.ABC):
    """Base of the built-in accumulators (documents the interface; see the module docstring)."""

    mergeable = True
    retractable = False
    needs_timestamp = False

    @abc.abstractmethod
    def create(self) -> Any: ...

    @abc.abstractmethod
    def add(self, acc: Any, value: Any) -> Any: ...

    @abc.abstractmethod
    def merge(self, accs: Iterable[Any]) -> Any: ...

    @abc.abstractmethod
    def extract(self, acc: Any) -> Any: ...

    def remove(self, acc: Any, value: Any) -> Any:
        """Undo ``add``; only retractable accumulators (``retractable = True``) override it."""
        raise TypeError(f"{type(self).__name__} cannot remove values (it is not retractable)")


class CountStar(Accumulator):
    """COUNT(*): the accumulator is the row count."""

    retractable = True

    def create(self):
        return 0

    def add(self, acc, value):
        return acc + 1

    def remove(self, acc, value):
        return acc - 1

    def merge(self, accs):
        return sum(accs)

    def extract(self, acc):
        return acc


class Count(CountStar):
    """COUNT(x): non-NULL values."""

    def add(self, acc, value):
        return acc if value is None else acc + 1

    def remove(self, acc, value):
        return acc if value is None else acc - 1


# Sum-like accumulator layout (a list, updated in place):
# [n, int_sum, n_float, float_sum_scaled, n_pos_inf, n_neg_inf, n_nan]
_N, _ISUM, _NF, _FSUM, _PINF, _NINF, _NAN = range(7)


class Sum(Accumulator):
    """SUM: exact; bigint while only bigints were summed."""

    retractable = True

    def create(self):
        return [0, 0, 0, 0, 0, 0, 0]

    def _update(self, acc, v, sign):
        if v is None:
            return acc
        acc[_N] += sign
        if type(v) is int or type(v) is bool:
            acc[_ISUM] += sign * v
            return acc
        acc[_NF] += sign
        if v != v:
            acc[_NAN] += sign
        elif v == _INF:
            acc[_PINF] += sign
        elif v == -_INF:
            acc[_NINF] += sign
        else:
            acc[_FSUM] += sign * _scaled(v)
        return acc

    def add(self, acc, value):
        if value is None:
            return acc
        if type(value) is int:  # the common case, inlined
            acc[_N] += 1
            acc[_ISUM] += value
            return acc
        return self._update(acc, value, 1)

    def remove(self, acc, value):
        return self._update(acc, value, -1)

    def merge(self, accs):
        return _add_slots(accs)

    @staticmethod
    def _special(acc) -> float | None:
        if acc[_NAN] or (acc[_PINF] and acc[_NINF]):
            return math.nan
        if acc[_PINF]:
            return _INF
        if acc[_NINF]:
            return -_INF
        return None

    def extract(self, acc):
        if not acc[_N]:
            return None
        if not acc[_NF]:
            return acc[_ISUM]
        special = self._special(acc)
        if special is not None:
            return special
        return _div((acc[_ISUM] << _F) + acc[_FSUM], 1 << _F)


class Avg(Sum):
    """AVG: float, the exact mean rounded once."""

    def extract(self, acc):
        n = acc[_N]
        if not n:
            return None
        if not acc[_NF]:
            return _div(acc[_ISUM], n)
        special = self._special(acc)
        if special is not None:
            return special
        return _div((acc[_ISUM] << _F) + acc[_FSUM], n << _F)


# Variance layout: [n, int_sum, int_sq, n_float, float_sum_scaled, float_sq_scaled2, n_special]
class Var(Accumulator):
    """VAR / VARP / STDEV / STDEVP: exact sums of values and squares, rounded once."""

    retractable = True

    def __init__(self, population: bool, root: bool):
        self.population = population
        self.root = root

    def create(self):
        return [0, 0, 0, 0, 0, 0, 0]

    def _update(self, acc, v, sign):
        if v is None:
            return acc
        acc[0] += sign
        if type(v) is int or type(v) is bool:
            acc[1] += sign * v
            acc[2] += sign * v * v
            return acc
        acc[3] += sign
        if v != v or v in (_INF, -_INF):
            acc[6] += sign
            return acc
        s = _scaled(v)
        acc[4] += sign * s
        acc[5] += sign * s * s
        return acc

    def add(self, acc, value):
        return self._update(acc, value, 1)

    def remove(self, acc, value):
        return self._update(acc, value, -1)

    def merge(self, accs):
        return _add_slots(accs)

    def extract(self, acc):
        n = acc[0]
        if n == 0 or (n == 1 and not self.population):
            return None
        if acc[6]:
            return math.nan
        if acc[3]:
            s1 = (acc[1] << _F) + acc[4]
            s2 = (acc[2] << (2 * _F)) + acc[5]
            scale = 2 * _F
        else:
            s1, s2, scale = acc[1], acc[2], 0
        num = n * s2 - s1 * s1  # n^2 * population variance, exactly; never negative
        den = (n * n if self.population else n * (n - 1)) << scale
        var = _div(num, den)
        return math.sqrt(var) if self.root else var


def _less(a: Any, b: Any) -> bool:
    try:
        return a < b
    except TypeError:
        return _sort_key(a) < _sort_key(b)


class Min(Accumulator):
    """MIN (MAX with ``largest=True``): the accumulator is the current extreme value."""

    def __init__(self, largest: bool = False):
        self.largest = largest

    def create(self):
        return None

    def add(self, acc, value):
        if value is None:
            return acc
        if acc is None:
            return value
        if self.largest:
            return value if _less(acc, value) else acc
        return value if _less(value, acc) else acc

    def merge(self, accs):
        out = None
        for a in accs:
            out = self.add(out, a)
        return out

    def extract(self, acc):
        return acc


class SortedValues(Accumulator):
    """Retractable MIN / MAX: all values of the window, sorted (bisect keeps add/remove cheap)."""

    retractable = True

    def __init__(self, largest: bool = False):
        self.largest = largest

    def create(self):
        return []

    def add(self, acc, value):
        if value is not None:
            bisect.insort(acc, value, key=_sort_key)
        return acc

    def remove(self, acc, value):
        if value is None:
            return acc
        i = bisect.bisect_left(acc, _sort_key(value), key=_sort_key)
        while acc[i] != value:
            i += 1
        del acc[i]
        return acc

    def merge(self, accs):
        out = _concat(accs)
        out.sort(key=_sort_key)
        return out

    def extract(self, acc):
        if not acc:
            return None
        return acc[-1] if self.largest else acc[0]


class Collect(Accumulator):
    """Collect: values in event-time order; the accumulator is a list of (time, value)."""

    retractable = True
    needs_timestamp = True

    def create(self):
        return []

    def add(self, acc, value):
        if value[0] is not None:
            acc.append(value)
        return acc

    def remove(self, acc, value):
        if value[0] is not None:
            acc.remove(value)
        return acc

    def merge(self, accs):
        return _concat(accs)

    def extract(self, acc):
        if not acc:
            return None
        acc.sort(key=lambda tv: tv[1])
        return [v for v, _ in acc]


@functools.total_ordering
class _Descending:
    """A text ORDER BY value sorted in reverse (numbers are simply negated)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other):
        return isinstance(other, _Descending) and self.text == other.text

    def __lt__(self, other):
        return self.text > other.text

    def __hash__(self):
        return hash(self.text)

    def __reduce__(self):
        return _Descending, (self.text,)


def _order_part(v: Any, desc: bool) -> tuple:
    """Sort key of one ORDER BY value; NULL is the smallest value. Numbers and datetimes sort by
    value, text by ordinal (code point) comparison as ASA orders strings, and all numbers before
    all text (a column mixing them has no documented order; this one is total)."""
    if v is None:
        return (1,) if desc else (0,)
    if isinstance(v, str):
        return (0, -1, _Descending(v)) if desc else (1, 1, v)
    if isinstance(v, _dt.datetime):
        v = _dt_us(v)
    return (0, 0, -v) if desc else (1, 0, v)


class CollectTop(Accumulator):
    """CollectTop(n) / TopOne(): entries ``(sort_key, time, canonical_json, value)``.

    The combine variant keeps at most ``n`` entries; the retractable one keeps every entry of
    the window sorted, so the next best can take over when the best leaves.
    """

    needs_timestamp = True

    def __init__(self, n: int, directions: Sequence[str], top_one: bool = False, keep_all: bool = False):
        self.n = n
        self.desc = tuple(d.upper() == DESC for d in directions)
        self.top_one = top_one
        self.keep_all = keep_all
        self.retractable = keep_all

    def _entry(self, value):
        (order_values, item), t = value
        if len(order_values) != len(self.desc):
            raise ValueError(f"expected {len(self.desc)} ORDER BY values, got {len(order_values)}")
        key = tuple(_order_part(v, d) for v, d in zip(order_values, self.desc, strict=True))
        return (key, t, _canon_text(item), item)

    @staticmethod
    def _rank(entry):
        return entry[:3]

    def create(self):
        return []

    def add(self, acc, value):
        if self.keep_all:
            bisect.insort(acc, self._entry(value), key=self._rank)
            return acc
        acc.append(self._entry(value))
        if len(acc) > 4 * self.n + 16:  # trim now and then: keeps the accumulator small
            acc.sort(key=self._rank)
            del acc[self.n:]
        return acc

    def remove(self, acc, value):
        entry = self._entry(value)
        i = bisect.bisect_left(acc, self._rank(entry), key=self._rank)
        while acc[i][2:] != entry[2:]:
            i += 1
        del acc[i]
        return acc

    def merge(self, accs):
        out = _concat(accs)
        out.sort(key=self._rank)
        if not self.keep_all:
            del out[self.n:]
        return out

    def extract(self, acc):
        if not self.keep_all:
            acc.sort(key=self._rank)
        if self.top_one:
            return acc[0][3] if acc else None
        if not acc:
            return None
        return [{"rank": i + 1, "value": e[3]} for i, e in enumerate(acc[: self.n])]


class Percentile(Accumulator):
    """Percentile_Cont / Percentile_Disc over the ORDER BY values (all kept)."""

    def __init__(self, p: float, direction: str, continuous: bool, keep_sorted: bool = False):
        self.p = float(p)
        self.desc = direction.upper() == DESC
        self.continuous = continuous
        self.keep_sorted = keep_sorted
        self.retractable = keep_sorted

    def create(self):
        return []

    def add(self, acc, value):
        if value is not None:
            if self.keep_sorted:
                bisect.insort(acc, value)
            else:
                acc.append(value)
        return acc

    def remove(self, acc, value):
        if value is not None:
            del acc[bisect.bisect_left(acc, value)]
        return acc

    def merge(self, accs):
        out = _concat(accs)
        if self.keep_sorted:
            out.sort()
        return out

    @staticmethod
    def _snap(x: float) -> float:
        # p is a decimal literal held in binary: 0.1 * 10 must count as exactly 1.
        r = round(x)
        return float(r) if abs(x - r) < 1e-9 else x

    def extract(self, acc):
        n = len(acc)
        if not n:
            return None
        values = acc if self.keep_sorted else sorted(acc)
        if self.desc:
            values = values[::-1]
        if self.continuous:
            rn = self._snap(self.p * (n - 1))  # 0-based row number
            lo, hi = math.floor(rn), math.ceil(rn)
            if lo == hi:
                return float(values[lo])
            return (hi - rn) * values[lo] + (rn - lo) * values[hi]
        i = max(math.ceil(self._snap(self.p * n)), 1)  # first 1-based position with cume_dist >= p
        return values[i - 1]


class Distinct(Accumulator):
    """DISTINCT wrapper: distinct non-NULL values (with multiplicities when retractable)."""

    def __init__(self, inner: Accumulator, retractable: bool = False):
        self.inner = inner
        self.retractable = retractable
        self.needs_timestamp = inner.needs_timestamp

    def _value(self, value):
        return value[0] if self.needs_timestamp else value

    def create(self):
        return {}

    def add(self, acc, value):
        v = self._value(value)
        if v is None:
            return acc
        k = _canon(v)
        if self.retractable:
            slot = acc.get(k)
            if slot is None:
                acc[k] = [1, value]
            else:
                slot[0] += 1
        elif k not in acc:
            acc[k] = value
        return acc

    def remove(self, acc, value):
        v = self._value(value)
        if v is None:
            return acc
        k = _canon(v)
        slot = acc[k]
        slot[0] -= 1
        if not slot[0]:
            del acc[k]
        return acc

    def merge(self, accs):
        out: dict = {}
        for a in accs:
            for k, v in a.items():
                if self.retractable and k in out:
                    out[k][0] += v[0]
                else:
                    out.setdefault(k, list(v) if self.retractable else v)
        return out

    def extract(self, acc):
        inner = self.inner.create()
        for v in acc.values():
            inner = self.inner.add(inner, v[1] if self.retractable else v)
        return self.inner.extract(inner)


class Replay(Accumulator):
    """Makes a non-mergeable accumulator (a JS UDA) mergeable: keeps its inputs, replays them.

    Inputs are replayed in event-time order when the inner accumulator needs timestamps.
    """

    mergeable = True
    retractable = True

    def __init__(self, inner: Any):
        self.inner = inner
        self.needs_timestamp = bool(getattr(inner, "needs_timestamp", False))

    def create(self):
        return []

    def add(self, acc, value):
        acc.append(value)
        return acc

    def remove(self, acc, value):
        acc.remove(value)
        return acc

    def merge(self, accs):
        return _concat(accs)

    def extract(self, acc):
        if self.needs_timestamp:
            acc.sort(key=lambda vt: vt[1])
        inner = self.inner.create()
        for v in acc:
            inner = self.inner.add(inner, v)
        return self.inner.extract(inner)


class UdaAccumulator:
    """A JavaScript-style UDA (``init``/``accumulate``/``deaccumulate``/``computeResult``).

    ``factory()`` builds a fresh UDA object (e.g. a JS-backed proxy); it must be picklable
    (a module-level function or a small picklable object). Not mergeable: the engine replays a
    window's inputs in event-time order into one object, as ASA calls ``accumulate`` per event.
    ``accumulate(value, timestamp)`` receives the event time as an aware UTC datetime.

    >>> class Twa:   # this.init / this.accumulate / this.computeResult in JS
    ...     def init(self): self.state = 0
    ...     def accumulate(self, value, timestamp): self.state += value
    ...     def computeResult(self): return self.state
    >>> spec = AggregateSpec("UDA.TWA", impl=UdaAccumulator(Twa))   # pass the argument value
    """

    mergeable = False
    retractable = False
    needs_timestamp = True

    def __init__(self, factory: Callable[[], Any]):
        self.factory = factory

    def create(self):
        obj = self.factory()
        obj.init()
        return obj

    def add(self, acc, value):
        v, t_us = value
        acc.accumulate(v, _EPOCH + _dt.timedelta(microseconds=t_us))
        return acc

    def extract(self, acc):
        return acc.computeResult()


# --------------------------------------------------------------------------- registry


def _directions(spec: AggregateSpec, at: int) -> tuple[str, ...]:
    raw = spec.params[at] if len(spec.params) > at else (ASC,)
    dirs = (raw,) if isinstance(raw, str) else tuple(raw)
    if not dirs or any(str(d).upper() not in (ASC, DESC) for d in dirs):
        raise ValueError(f"{spec.name}: ORDER BY directions must be ASC or DESC, got {raw!r}")
    return tuple(str(d).upper() for d in dirs)


def _percentile(spec: AggregateSpec, retractable: bool, continuous: bool) -> Accumulator:
    if not spec.params:
        raise ValueError(f"{spec.name} needs the percentile parameter")
    p = spec.params[0]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"{spec.name}: the percentile must be a number between 0 and 1, got {p!r}")
    direction = spec.params[1] if len(spec.params) > 1 else ASC
    if str(direction).upper() not in (ASC, DESC):
        raise ValueError(f"{spec.name}: ORDER BY direction must be ASC or DESC, got {direction!r}")
    return Percentile(p, str(direction), continuous, keep_sorted=retractable)


def _collecttop(spec: AggregateSpec, retractable: bool) -> Accumulator:
    n = spec.params[0] if spec.params else None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"COLLECTTOP needs a positive integer number of events, got {n!r}")
    return CollectTop(n, _directions(spec, 1), keep_all=retractable)


def _count(spec: AggregateSpec, retractable: bool) -> Accumulator:
    return CountStar() if spec.star else Count()


_Factory = Callable[[AggregateSpec, bool], Accumulator]

#: lower-case name -> (min SQL arguments, max SQL arguments, factory(spec, retractable)).
#: Argument counts exclude OVER (...); COUNT(*) and COUNT() have none.
AGGREGATES: dict[str, tuple[int, int, _Factory]] = {
    "count": (0, 1, _count),
    "sum": (1, 1, lambda s, r: Sum()),
    "avg": (1, 1, lambda s, r: Avg()),
    "min": (1, 1, lambda s, r: SortedValues() if r else Min()),
    "max": (1, 1, lambda s, r: SortedValues(largest=True) if r else Min(largest=True)),
    "stdev": (1, 1, lambda s, r: Var(population=False, root=True)),
    "stdevp": (1, 1, lambda s, r: Var(population=True, root=True)),
    "var": (1, 1, lambda s, r: Var(population=False, root=False)),
    "varp": (1, 1, lambda s, r: Var(population=True, root=False)),
    "collect": (0, 1, lambda s, r: Collect()),
    "collecttop": (1, 2, _collecttop),
    "topone": (0, 0, lambda s, r: CollectTop(1, _directions(s, 0), top_one=True, keep_all=r)),
    "percentile_cont": (1, 1, lambda s, r: _percentile(s, r, continuous=True)),
    "percentile_disc": (1, 1, lambda s, r: _percentile(s, r, continuous=False)),
}


def make_accumulator(spec: AggregateSpec, retractable: bool = False, merging: bool = True) -> Any:
    """The accumulator of one aggregate call.

    ``retractable=True`` asks for a variant with ``remove`` where the combine variant has none
    (MIN/MAX, CollectTop, TopOne, percentiles keep all values of the window); sliding windows
    use it. Non-mergeable custom accumulators come back wrapped in ``Replay``, except with
    ``merging=False`` (sliding and session windows) when they are retractable.
    """
    if spec.impl is not None:
        acc = spec.impl
        if getattr(acc, "mergeable", True) or (not merging and getattr(acc, "retractable", False)):
            return acc
        return Replay(acc)
    entry = AGGREGATES.get(spec.name.lower())
    if entry is None:
        raise ValueError(f"unknown aggregate function {spec.name}")
    if spec.star and spec.name != "COUNT":
        raise ValueError(f"{spec.name}(*) is not an aggregate; only COUNT(*) is")
    acc = entry[2](spec, retractable)
    if spec.distinct and not spec.star:
        acc = Distinct(acc, retractable=retractable)
    return acc


# --------------------------------------------------------------------------- input checks

_NUMERIC = ("SUM", "AVG", "STDEV", "STDEVP", "VAR", "VARP")


def _numeric(name: str, v: Any, allow_text: bool, as_float: bool = False) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v) if as_float else int(v)
    if isinstance(v, (int, float)):
        return float(v) if as_float else v
    if allow_text and isinstance(v, str):
        s = v.strip()
        try:
            return float(s) if as_float else int(s)
        except ValueError:
            try:
                return float(s)
            except ValueError:
                pass
    raise RowError("aggregate_type_error", f"{name} needs a number, got {_kind(v)} {v!r:.60}")


def _kind(v: Any) -> str:
    return type_of(v)


def _orderable(name: str, v: Any) -> Any:
    if v is None or isinstance(v, (str, _dt.datetime)) or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        return v
    raise RowError("aggregate_type_error",
                   f"{name} can only ORDER BY bigint, float, datetime or nvarchar(max), got {_kind(v)} {v!r:.60}")


def _check_one(spec: AggregateSpec) -> Callable[[Any], Any] | None:
    name = spec.name
    if spec.impl is not None:
        return getattr(spec.impl, "check", None)
    if name == "COUNT" or name == "COLLECT":
        return None
    if name in _NUMERIC:
        return lambda v: _numeric(name, v, allow_text=True)
    if name in ("MIN", "MAX"):
        def minmax(v: Any) -> Any:
            if v is None or isinstance(v, (str, _dt.datetime)) or (
                    isinstance(v, (int, float)) and not isinstance(v, bool)):
                return v
            raise RowError("aggregate_type_error", f"{name} cannot take {_kind(v)} values")
        return minmax
    if name == "PERCENTILE_CONT":
        return lambda v: _numeric(name, v, allow_text=True, as_float=True)
    if name == "PERCENTILE_DISC":
        return lambda v: _numeric(name, v, allow_text=False)
    if name in ("COLLECTTOP", "TOPONE"):
        def ordered(v: Any) -> Any:
            order_values, item = v
            return tuple(_orderable(name, o) for o in order_values), item
        return ordered
    return None


def make_input_checker(specs: Sequence[AggregateSpec]) -> Callable[[tuple], tuple]:
    """``check(args) -> args``: validates/normalizes one row's argument tuple; raises RowError."""
    checks = [(i, c) for i, c in enumerate(_check_one(s) for s in specs) if c is not None]
    if not checks:
        return lambda args: args

    def check(args: tuple) -> tuple:
        out = list(args)
        for i, c in checks:
            out[i] = c(out[i])
        return tuple(out)

    return check


# --------------------------------------------------------------------------- Beam CombineFn


def _count_star_add(acc: int, element: Any) -> int:
    return acc + 1


class MultiAggregateCombineFn(beam.CombineFn):
    """All aggregates of one SELECT in one pass.

    Input element: the argument tuple, one value per spec in spec order (see the module
    docstring); output: the list of results in spec order. With a single aggregate (the common
    ``COUNT(*)`` case) the per-element work is as cheap as Beam's ``CountCombineFn``.

    Specs whose accumulator ``needs_timestamp`` expect ``(value, event_time_us)`` in their slot;
    ``WindowedAggregate`` supplies it (use ``timestamp_slots(specs)`` to do it yourself).

    >>> fn = MultiAggregateCombineFn([AggregateSpec("COUNT", star=True), AggregateSpec("SUM")])
    >>> fn.extract_output(fn.add_input(fn.create_accumulator(), (None, 5)))
    [1, 5]
    """

    def __init__(self, specs: Sequence[AggregateSpec]):
        super().__init__()
        self._specs = tuple(specs)
        self._build()

    def __getstate__(self):
        return {"_specs": self._specs}

    def __setstate__(self, state):
        self._specs = state["_specs"]
        self._build()

    def _build(self) -> None:
        fns = tuple(make_accumulator(s) for s in self._specs)
        self._fns = fns
        # Instance attributes shadow the generic methods below: the single-aggregate fast paths.
        if len(fns) == 1:
            fn = fns[0]
            if type(fn) is CountStar:
                self.add_input = _count_star_add
                self.merge_accumulators = sum
            else:
                add = fn.add
                self.add_input = lambda acc, element: add(acc, element[0])
                self.merge_accumulators = fn.merge
            self.create_accumulator = fn.create
            self.extract_output = self._extract_single

    def _extract_single(self, acc):
        return [self._fns[0].extract(acc)]

    def create_accumulator(self):
        return [f.create() for f in self._fns]

    def add_input(self, mutable_accumulator, element):
        acc = mutable_accumulator
        for i, f in enumerate(self._fns):
            acc[i] = f.add(acc[i], element[i])
        return acc

    def merge_accumulators(self, accumulators):
        accs = list(accumulators)
        return [f.merge([a[i] for a in accs]) for i, f in enumerate(self._fns)]

    def extract_output(self, accumulator):
        return [f.extract(a) for f, a in zip(self._fns, accumulator, strict=True)]


def timestamp_slots(specs: Sequence[AggregateSpec]) -> tuple[int, ...]:
    """Positions of the specs whose accumulators want ``(value, event_time_us)``."""
    return tuple(i for i, s in enumerate(specs) if getattr(make_accumulator(s), "needs_timestamp", False))


__all__ = [
    "AGGREGATES", "ASC", "DESC", "Accumulator", "AggregateSpec", "MultiAggregateCombineFn", "UdaAccumulator",
    "make_accumulator", "make_input_checker", "timestamp_slots",
]
