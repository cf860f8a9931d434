"""AnalyticFunctions (LAG, LAST, ISFIRST) against the documented ASA examples and a brute-force loop.

Expected values are computed here, by hand or by re-reading the whole event list for every
event (no state, no Beam), never by the code under test. Each case runs in batch; the random
cases also run on TestStream with events out of order within the watermark.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.deadletter import RowError, json_default
from transforms.operators.analytic import AGGREGATE_KINDS, ISFIRST, LAG, LAST, AnalyticCall, AnalyticFunctions

MS = 1_000
S = 1_000_000
MIN = 60 * S
HOUR = 60 * MIN
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def at(us: int) -> dt.datetime:
    return T0 + dt.timedelta(microseconds=us)


def t_us(d: dt.datetime) -> int:
    return (d - EPOCH) // dt.timedelta(microseconds=1)


def stamped(rows):
    return [TimestampedValue(r, Timestamp(micros=t_us(r["time"]))) for r in rows]


def sensor(r):
    return (r["sensorId"],)


def device(r):
    return (r["deviceid"],)


# --- brute force: the definitions, one event at a time over the whole list -------------------


def order_key(row):
    """The documented tie rule: timestamp, then SHA-1 of the row's canonical JSON."""
    text = json.dumps(row, sort_keys=True, default=json_default, separators=(",", ":"))
    return (t_us(row["time"]), hashlib.sha1(text.encode()).digest())


def interval_end(t: dt.datetime, size_us: int) -> int:
    """End of the (start, end] interval holding t, intervals of size_us counted from 0001-01-01."""
    since = (t - dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
    return math.ceil(since / size_us)


def young(event, earlier, duration_us):
    """LIMIT DURATION: an earlier event counts while it is less than the duration old."""
    return t_us(event["time"]) - t_us(earlier["time"]) < duration_us


def expected_values(rows, calls):
    ordered = sorted(rows, key=order_key)
    out = []
    for i, e in enumerate(ordered):
        values = {}
        for c in calls:
            same = [x for x in ordered[:i] if c.partition is None or c.partition(x) == c.partition(e)]
            cands = [x for x in same if c.when is None or c.when(x) is True]
            is_cand = c.when is None or c.when(e) is True
            if c.kind == LAG:
                hit = len(cands) >= c.offset and young(e, cands[-c.offset], c.duration_us)
                values[c.output_key] = c.value(cands[-c.offset]) if hit else c.default
            elif c.kind == LAST:
                if is_cand:
                    values[c.output_key] = c.value(e)
                else:
                    recent = cands and young(e, cands[-1], c.duration_us)
                    values[c.output_key] = c.value(cands[-1]) if recent else c.default
            elif c.kind in AGGREGATE_KINDS:  # over the young candidates and the event itself
                window = [x for x in cands if young(e, x, c.duration_us)] + ([e] if is_cand else [])
                if c.kind == "count" and c.value is None:
                    values[c.output_key] = len(window)
                    continue
                vs = [c.value(x) for x in window if c.value(x) is not None]
                values[c.output_key] = {
                    "count": len(vs), "sum": sum(vs) if vs else None,
                    "avg": sum(vs) / len(vs) if vs else None,
                    "min": min(vs, default=None), "max": max(vs, default=None)}[c.kind]
            else:
                k = interval_end(e["time"], c.duration_us)
                seen = any(interval_end(x["time"], c.duration_us) == k for x in cands)
                values[c.output_key] = int(is_cand and not seen)
        out.append({**e, **values})
    return out


# --- documented examples --------------------------------------------------------------------


READINGS = [
    {"sensorId": 1, "reading": 10.0, "time": at(0)},
    {"sensorId": 2, "reading": 99.0, "time": at(MIN)},
    {"sensorId": 1, "reading": 12.5, "time": at(10 * MIN)},
    {"sensorId": 1, "reading": None, "time": at(20 * MIN)},
    {"sensorId": 1, "reading": 13.0, "time": at(30 * MIN)},
    {"sensorId": 2, "reading": 101.0, "time": at(61 * MIN)},  # exactly 1 hour after sensor 2's last: too old
    {"sensorId": 1, "reading": 14.0, "time": at(90 * MIN - 1)},  # 1 hour - 1µs after 13.0: still in
]


def test_lag_growth_and_previous_not_null_reading():
    """SELECT sensorId, growth = reading - LAG(reading) OVER (PARTITION BY sensorId LIMIT DURATION(hour, 1))
    and LAG(reading) OVER (PARTITION BY sensorId LIMIT DURATION(hour, 1) WHEN reading IS NOT NULL)."""
    calls = [
        AnalyticCall(LAG, "prev", lambda r: r["reading"], partition=sensor, duration_us=HOUR),
        AnalyticCall(
            LAG, "prev_not_null", lambda r: r["reading"], partition=sensor, duration_us=HOUR,
            when=lambda r: r["reading"] is not None,
        ),
    ]
    by_hand = {  # (sensor, minute) → (prev, prev_not_null)
        (1, 0): (None, None),
        (2, 1): (None, None),
        (1, 10): (10.0, 10.0),
        (1, 20): (12.5, 12.5),
        (1, 30): (None, 12.5),  # the previous event's reading is NULL: LAG returns NULL, not the default
        (2, 61): (None, None),
        (1, 90): (13.0, 13.0),
    }
    expected = expected_values(READINGS, calls)
    assert {(r["sensorId"], round(t_us(r["time"]) / MIN - t_us(T0) / MIN)): (r["prev"], r["prev_not_null"])
            for r in expected} == by_hand
    with TestPipeline() as p:
        out = p | beam.Create(stamped(READINGS)) | AnalyticFunctions(calls)
        assert_that(out["rows"], equal_to(expected))
        growth = out["rows"] | beam.Map(
            lambda r: None if r["reading"] is None or r["prev"] is None else r["reading"] - r["prev"]
        )
        assert_that(growth, equal_to([None, None, 2.5, None, None, None, 1.0]), label="growth")


def test_lag_offset_and_default():
    """LAG(name, 2, 'none such') OVER (PARTITION BY userId LIMIT DURATION(minute, 2))."""
    rows = [
        {"userId": "u", "name": "a", "time": at(0)},
        {"userId": "u", "name": "b", "time": at(30 * S)},
        {"userId": "v", "name": "x", "time": at(40 * S)},
        {"userId": "u", "name": "c", "time": at(60 * S)},
        {"userId": "u", "name": "d", "time": at(150 * S)},  # 2 back is b, 120 s old: exactly the duration, out
        {"userId": "u", "name": "e", "time": at(155 * S)},  # 2 back is c, 95 s old
    ]
    call = AnalyticCall(LAG, "lag2", lambda r: r["name"], offset=2, default="none such",
                        partition=lambda r: (r["userId"],), duration_us=2 * MIN)
    expected = expected_values(rows, [call])
    assert [r["lag2"] for r in expected] == ["none such", "none such", "none such", "a", "none such", "c"]
    with TestPipeline() as p:
        out = p | beam.Create(stamped(rows)) | AnalyticFunctions([call])
        assert_that(out["rows"], equal_to(expected))


def test_lag_threshold_crossing_with_when_and_per_row_default():
    """WHERE reading > 100 AND LAG(reading) OVER (... WHEN devicetype = 'thermostat') <= 100."""
    rows = [
        {"sensorId": 1, "devicetype": "thermostat", "reading": 90, "time": at(0)},
        {"sensorId": 1, "devicetype": "other", "reading": 120, "time": at(MIN)},
        {"sensorId": 1, "devicetype": "thermostat", "reading": 105, "time": at(2 * MIN)},
        {"sensorId": 1, "devicetype": "thermostat", "reading": 110, "time": at(3 * MIN)},
    ]
    lag = AnalyticCall(LAG, "prev", lambda r: r["reading"], partition=sensor, duration_us=HOUR,
                       when=lambda r: r["devicetype"] == "thermostat", default_fn=lambda r: -r["reading"])
    with TestPipeline() as p:
        out = p | beam.Create(stamped(rows)) | AnalyticFunctions([lag])
        crossing = out["rows"] | beam.Filter(
            lambda r: r["devicetype"] == "thermostat" and r["reading"] > 100 and r["prev"] <= 100
        )
        assert_that(crossing | beam.Map(lambda r: r["reading"]), equal_to([105]))
        # The default is the current row's expression: -90 for the first event.
        assert_that(out["rows"] | "prev" >> beam.Map(lambda r: r["prev"]), equal_to([-90, 90, 90, 105]), label="prev")


def test_last_non_null_and_last_time_above_50():
    """LAST(reading) OVER (PARTITION BY sensorId LIMIT DURATION(hour, 1) WHEN reading IS NOT NULL) and
    LAST(System.Timestamp()) OVER (PARTITION BY sensorId LIMIT DURATION(hour, 1) WHEN reading > 50)."""
    rows = [
        {"sensorId": 1, "reading": 40, "time": at(0)},
        {"sensorId": 1, "reading": 60, "time": at(5 * MIN)},
        {"sensorId": 1, "reading": None, "time": at(10 * MIN)},
        {"sensorId": 1, "reading": 70, "time": at(20 * MIN)},
        {"sensorId": 1, "reading": 30, "time": at(50 * MIN)},
        {"sensorId": 1, "reading": None, "time": at(80 * MIN)},  # last non-null (30, at 50) is in; last > 50 is 1 h old
    ]
    calls = [
        AnalyticCall(LAST, "last_reading", lambda r: r["reading"], partition=sensor, duration_us=HOUR,
                     when=lambda r: r["reading"] is not None),
        AnalyticCall(LAST, "last_high", lambda r: r["time"], partition=sensor, duration_us=HOUR,
                     when=lambda r: r["reading"] is not None and r["reading"] > 50),
    ]
    expected = expected_values(rows, calls)
    assert [r["last_reading"] for r in expected] == [40, 60, 60, 70, 30, 30]
    assert [r["last_high"] for r in expected] == [None, at(5 * MIN), at(5 * MIN), at(20 * MIN), at(20 * MIN), None]
    with TestPipeline() as p:
        out = p | beam.Create(stamped(rows)) | AnalyticFunctions(calls)
        assert_that(out["rows"], equal_to(expected))


def test_isfirst_examples_and_interval_edges():
    """ISFIRST(mi, 10), ISFIRST(mi, 10) OVER (PARTITION BY deviceid) and the WHEN firstAbove / firstUnder pair."""
    rows = [
        {"deviceid": "a", "reading": 40, "time": at(0)},  # exactly on a boundary: last of (11:50, 12:00]
        {"deviceid": "a", "reading": 60, "time": at(MS)},
        {"deviceid": "b", "reading": 30, "time": at(2 * MIN)},
        {"deviceid": "a", "reading": 70, "time": at(5 * MIN)},
        {"deviceid": "b", "reading": 55, "time": at(10 * MIN)},  # 12:10 still belongs to (12:00, 12:10]
        {"deviceid": "a", "reading": 20, "time": at(10 * MIN + MS)},
        {"deviceid": "b", "reading": 10, "time": at(11 * MIN)},
    ]
    calls = [
        AnalyticCall(ISFIRST, "first", duration_us=10 * MIN),
        AnalyticCall(ISFIRST, "first_dev", partition=device, duration_us=10 * MIN),
        AnalyticCall(ISFIRST, "firstAbove", partition=device, duration_us=10 * MIN, when=lambda r: r["reading"] > 50),
        AnalyticCall(ISFIRST, "firstUnder", partition=device, duration_us=10 * MIN, when=lambda r: r["reading"] < 50),
    ]
    expected = expected_values(rows, calls)
    cols = ("first", "first_dev", "firstAbove", "firstUnder")
    assert [tuple(r[c] for c in cols) for r in expected] == [
        (1, 1, 0, 1),
        (1, 1, 1, 0),
        (0, 1, 0, 1),
        (0, 0, 0, 0),
        (0, 0, 1, 0),
        (1, 1, 0, 1),
        (0, 1, 0, 1),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(stamped(rows)) | AnalyticFunctions(calls)
        assert_that(out["rows"], equal_to(expected))


def test_errors_dead_letter_the_row_and_value_is_only_evaluated_for_candidates():
    rows = [
        {"k": 1, "v": "1", "time": at(0)},
        {"k": 1, "v": "oops", "time": at(S)},  # not a candidate: its value is never computed
        {"k": None, "v": "2", "time": at(2 * S)},  # NULL partition: a partition of its own
        {"k": "bad", "v": "3", "time": at(3 * S)},  # PARTITION BY raises: dead-lettered, not history
        {"k": 1, "v": "4", "time": at(4 * S)},
    ]

    def part(r):
        if r["k"] == "bad":
            raise RowError("type_error", "bad partition")
        return (r["k"],)

    def value(r):
        if r["v"] == "oops":
            raise RowError("cast_error", "not a number")
        return int(r["v"])

    call = AnalyticCall(LAG, "prev", value, partition=part, duration_us=HOUR, when=lambda r: r["v"] != "oops")
    with TestPipeline() as p:
        out = p | beam.Create(stamped(rows)) | AnalyticFunctions([call], step="S")
        values = out["rows"] | beam.Map(lambda r: (r["v"], r["prev"]))
        assert_that(values, equal_to([("1", None), ("oops", 1), ("2", None), ("4", 1)]))
        failed = out["failed"] | beam.Map(lambda d: (d.step, d.reason, d.row["v"]))
        assert_that(failed, equal_to([("S", "type_error", "3")]), label="failed")


def test_equal_timestamps_follow_the_documented_tie_rule():
    rows = [{"p": 1, "n": n, "time": at(0)} for n in range(6)] + [{"p": 1, "n": 9, "time": at(S)}]
    calls = [
        AnalyticCall(LAG, "prev", lambda r: r["n"], partition=lambda r: (r["p"],), duration_us=MIN),
        AnalyticCall(ISFIRST, "first", duration_us=MIN),
    ]
    expected = expected_values(rows, calls)
    assert sum(r["prev"] is None for r in expected) == 1  # exactly one of the tied events comes first
    with TestPipeline() as p:
        out = p | beam.Create(stamped(list(reversed(rows)))) | AnalyticFunctions(calls)
        assert_that(out["rows"], equal_to(expected))


def test_call_validation():
    with pytest.raises(ValueError, match="LIMIT DURATION"):
        AnalyticCall(LAG, "x", lambda r: 1)
    with pytest.raises(ValueError, match="offset"):
        AnalyticCall(LAG, "x", lambda r: 1, offset=0, duration_us=S)
    with pytest.raises(ValueError, match="expression"):
        AnalyticCall(LAST, "x", duration_us=S)
    with pytest.raises(ValueError, match="unknown"):
        AnalyticCall("lead", "x", duration_us=S)
    with pytest.raises(ValueError, match="expression"):
        AnalyticCall("sum", "x", duration_us=S)
    AnalyticCall("count", "x", duration_us=S)  # COUNT(*) needs none


def test_aggregates_over_a_duration_without_a_window():
    """COUNT(*) / SUM / AVG OVER (PARTITION BY sensorId LIMIT DURATION(minute, 30)): events in (t - 30 min, t]."""
    calls = [
        AnalyticCall("count", "n", partition=sensor, duration_us=30 * MIN),
        AnalyticCall("sum", "total", lambda r: r["reading"], partition=sensor, duration_us=30 * MIN),
        AnalyticCall("avg", "mean", lambda r: r["reading"], partition=sensor, duration_us=30 * MIN),
    ]
    expected = expected_values(READINGS, calls)
    # By hand for sensor 1: 10.0 | 10.0, 12.5 | +NULL (counted by COUNT(*) only) | at 12:30 the
    # 12:00 event is exactly 30 min old: out | 14.0 comes an hour after 13.0: alone.
    ones = [(r["n"], r["total"], r["mean"]) for r in expected if r["sensorId"] == 1]
    assert ones == [(1, 10.0, 10.0), (2, 22.5, 11.25), (3, 22.5, 11.25), (3, 25.5, 12.75), (1, 14.0, 14.0)]
    with TestPipeline() as p:
        out = p | beam.Create(stamped(READINGS)) | AnalyticFunctions(calls)
        assert_that(out["rows"], equal_to(expected))


# --- random data: several PARTITION BY groups, batch and TestStream --------------------------


def random_rows(seed: int, n: int = 80):
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "dev": rng.choice("abc"),
            "site": rng.choice([1, 2]),
            "v": rng.choice([None, 1, 2, 3, 50, 60]),
            "time": at(rng.randrange(0, 600) * S + rng.choice([0, 0, 500 * MS])),
        }
        for i in range(n)
    ]


def random_calls():
    by_dev = lambda r: (r["dev"],)  # noqa: E731  (one callable object shared: one group)
    by_site = lambda r: (r["site"],)  # noqa: E731
    high = lambda r: r["v"] is not None and r["v"] > 10  # noqa: E731
    return [
        AnalyticCall(LAG, "lag1", lambda r: r["v"], partition=by_dev, duration_us=MIN),
        AnalyticCall(LAG, "lag3", lambda r: r["id"], offset=3, default=-1, partition=by_dev, duration_us=2 * MIN),
        AnalyticCall(LAST, "last_high", lambda r: r["id"], partition=by_site, duration_us=90 * S, when=high),
        AnalyticCall(ISFIRST, "first", partition=by_site, duration_us=MIN, when=lambda r: r["v"] is not None),
        AnalyticCall(ISFIRST, "first_all", duration_us=30 * S),
        AnalyticCall(LAG, "lag_all", lambda r: r["id"], duration_us=10 * S),
        AnalyticCall("count", "n_dev", partition=by_dev, duration_us=MIN),
        AnalyticCall("count", "n_v", lambda r: r["v"], partition=by_dev, duration_us=MIN),
        AnalyticCall("sum", "sum_high", lambda r: r["v"], partition=by_site, duration_us=90 * S, when=high),
        AnalyticCall("avg", "avg_all", lambda r: r["v"], duration_us=30 * S),
        AnalyticCall("min", "min_dev", lambda r: r["v"], partition=by_dev, duration_us=2 * MIN),
        AnalyticCall("max", "max_site", lambda r: r["id"], partition=by_site, duration_us=10 * S),
    ]


def test_random_events_batch_match_brute_force():
    rows, calls = random_rows(3), random_calls()
    with TestPipeline() as p:
        out = p | beam.Create(stamped(rows)) | AnalyticFunctions(calls)
        assert_that(out["rows"], equal_to(expected_values(rows, calls)))


@pytest.mark.parametrize("single_group", [True, False])
def test_random_events_streaming_out_of_order_match_brute_force(single_group):
    rows, calls = random_rows(5), random_calls()
    if single_group:
        calls = calls[:2]  # same PARTITION BY: no merge step
    rng = random.Random(1)
    arrival = sorted(rows, key=lambda r: t_us(r["time"]) + rng.randrange(0, 20 * S))  # up to 20 s out of order
    stream = TestStream()
    for n in range(0, len(arrival), 8):
        stream.add_elements(stamped(arrival[n:n + 8]))
        rest = [t_us(r["time"]) for r in arrival[n + 8:]]
        if rest:
            stream.advance_watermark_to(Timestamp(micros=min(rest) - MS))
    # A finite watermark first: the DirectRunner holds no watermark for timers (see test_joins.finish).
    stream.advance_watermark_to(Timestamp(micros=t_us(at(HOUR)))).advance_watermark_to_infinity()
    with TestPipeline(options=PipelineOptions(streaming=True)) as p:
        out = p | stream | AnalyticFunctions(calls)
        assert_that(out["rows"], equal_to(expected_values(rows, calls)))
        # Rows keep their event timestamps.
        windowed = (
            out["rows"]
            | beam.WindowInto(FixedWindows(3600))
            | beam.Map(lambda r, t=beam.DoFn.TimestampParam: t.micros == t_us(r["time"]))
        )
        assert_that(windowed, equal_to([True] * len(rows)), label="timestamps")
