"""Comparing query results the way ASA's local test tool does.

Microsoft's ``azure-streamanalytics-cicd test`` (2.2.4 and later) compares an output with its
expected rows as a multiset of JSON objects: order is ignored, ``IgnoreFields`` are dropped
before comparing. What its users ask for on top, and what asa-beam adds: numbers are equal
within a small tolerance (``1`` and ``1.0`` and ``0.30000000000000004`` and ``0.3``), and
datetimes are compared as instants (``2024-01-01T10:00:00Z`` = ``2024-01-01T11:00:00+01:00`` =
a ``datetime``), so a row written by Beam equals the row typed into a test file.

>>> diff = compare_rows([{"n": 1, "at": "2024-01-01T10:00:00Z"}],
...                     [{"at": "2024-01-01T10:00:00.000Z", "n": 1.0000000001}])
>>> diff.ok
True
>>> compare_rows([{"n": 1}], [{"n": 2}]).missing
[{'n': 1}]

In a pipeline test, ``assert_that(pcoll, asa_equal_to(expected))`` does the same.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

REL_TOL = 1e-6
ABS_TOL = 1e-9

_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


class RowDiff(NamedTuple):
    """Expected rows with no equal actual row (``missing``), actual rows with no equal expected
    row (``unexpected``), and how many matched."""

    matched: int
    missing: list[dict]
    unexpected: list[dict]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected


def _instant(value: Any) -> _dt.datetime | None:
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
    if isinstance(value, str) and _ISO_DATETIME.match(value):
        text = value.replace(" ", "T", 1)
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        frac = re.search(r"\.(\d+)", text)
        if frac and len(frac.group(1)) > 6:  # .NET writes 7 fractional digits; Python reads 6
            text = text.replace(frac.group(0), "." + frac.group(1)[:6], 1)
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)
    return None


def values_equal(expected: Any, actual: Any, rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> bool:
    """ASA test-tool equality of two JSON-like values (see the module docstring)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        if isinstance(expected, float) and math.isnan(expected):
            return isinstance(actual, float) and math.isnan(actual)
        return math.isclose(expected, actual, rel_tol=rel_tol, abs_tol=abs_tol)
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        return rows_equal(expected, actual, rel_tol=rel_tol, abs_tol=abs_tol)
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(expected) == len(actual) and all(
            values_equal(e, a, rel_tol, abs_tol) for e, a in zip(expected, actual, strict=True))
    e_time, a_time = _instant(expected), _instant(actual)
    if e_time is not None and a_time is not None:
        return e_time == a_time
    return expected == actual


def rows_equal(expected: Mapping, actual: Mapping, ignore_fields: Iterable[str] = (),
               rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> bool:
    """Two rows are equal when they have the same fields (case-insensitive names, as ASA's
    identifiers; ``ignore_fields`` left out) with equal values."""
    ignored = {f.lower() for f in ignore_fields}
    e = {k.lower(): v for k, v in expected.items() if k.lower() not in ignored}
    a = {k.lower(): v for k, v in actual.items() if k.lower() not in ignored}
    return e.keys() == a.keys() and all(values_equal(e[k], a[k], rel_tol, abs_tol) for k in e)


def compare_rows(expected: Sequence[Mapping], actual: Sequence[Mapping], ignore_fields: Iterable[str] = (),
                 rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> RowDiff:
    """Match expected rows with actual rows as multisets (order ignored, each row used once)."""
    ignore_fields = tuple(ignore_fields)
    unmatched = list(actual)
    missing: list[dict] = []
    matched = 0
    for row in expected:
        for i, candidate in enumerate(unmatched):
            if rows_equal(row, candidate, ignore_fields, rel_tol, abs_tol):
                del unmatched[i]
                matched += 1
                break
        else:
            missing.append(dict(row))
    return RowDiff(matched, missing, [dict(r) for r in unmatched])


def asa_equal_to(expected: Sequence[Mapping], ignore_fields: Iterable[str] = ()):
    """A matcher for Beam's ``assert_that`` that compares with :func:`compare_rows`."""
    from apache_beam.testing.util import BeamAssertException

    expected = list(expected)
    ignore_fields = tuple(ignore_fields)

    def _matches(actual):
        diff = compare_rows(expected, list(actual), ignore_fields)
        if not diff.ok:
            raise BeamAssertException(
                f"rows differ: missing {diff.missing}, unexpected {diff.unexpected} ({diff.matched} matched)")

    return _matches


__all__ = ["RowDiff", "asa_equal_to", "compare_rows", "rows_equal", "values_equal"]
