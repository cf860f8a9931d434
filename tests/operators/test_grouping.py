"""GROUP BY through AsaQuery: windows, keys, aggregates, HAVING, System.Timestamp(), a UDF inside an
aggregate, and a TestStream run. Expected rows are computed here by brute force, not by the engine."""

import datetime as dt
import math

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.functions.python import PythonFunction
from transforms.operators.compile import AsaQuery

UTC = dt.timezone.utc
BASE = dt.datetime(2024, 1, 1, 10, tzinfo=UTC)
# (second offset, toll id, amount): includes events exactly on minute boundaries.
EVENTS = [(0, 1, 5), (30, 1, 2), (60, 2, 7), (61, 1, 1), (119, 2, 3), (120, 1, 4), (185, 2, 8), (240, 1, 6)]
ROWS = [{"TollId": k, "Toll": v, "EntryTime": (BASE + dt.timedelta(seconds=s)).isoformat()} for s, k, v in EVENTS]


def windows_of(second: int, size: int, hop: int) -> list[int]:
    """Ends of the ASA windows (start, end] of ``size`` every ``hop`` seconds holding ``second``."""
    first_end = math.ceil(second / hop) * hop
    return [e for e in range(first_end, second + size, hop) if e - size < second <= e]


def expected_hopping(size: int, hop: int) -> list[dict]:
    groups: dict[tuple, list[int]] = {}
    for s, k, v in EVENTS:
        for end in windows_of(s, size, hop):
            groups.setdefault((end, k), []).append(v)
    return [{"WindowEnd": BASE + dt.timedelta(seconds=end), "TollId": k, "n": len(vs), "total": sum(vs)}
            for (end, k), vs in groups.items()]


QUERY = """SELECT System.Timestamp() AS WindowEnd, TollId, COUNT(*) AS n, SUM(Toll) AS total
FROM input TIMESTAMP BY EntryTime GROUP BY TollId, {window}"""


@pytest.mark.parametrize("window, size, hop", [
    ("TumblingWindow(minute, 1)", 60, 60),
    ("TumblingWindow(second, 120)", 120, 120),
    ("HoppingWindow(minute, 2, 1)", 120, 60),
    ("HoppingWindow(Duration(second, 90), Hop(second, 30))", 90, 30),
])
def test_tumbling_and_hopping_windows(window, size, hop):
    with TestPipeline() as p:
        out = {"input": p | beam.Create(ROWS)} | AsaQuery(QUERY.format(window=window))
        assert_that(out["output"], equal_to(expected_hopping(size, hop)))


def test_having_and_expressions_over_aggregates():
    q = """SELECT TollId, MAX(Toll) - MIN(Toll) AS spread, AVG(Toll) AS mean
           FROM input TIMESTAMP BY EntryTime GROUP BY TollId, TumblingWindow(minute, 5) HAVING COUNT(*) > 3"""
    groups: dict[tuple, list[int]] = {}
    for s, k, v in EVENTS:  # the event at exactly 10:00 closes the window (09:55, 10:00]
        groups.setdefault((windows_of(s, 300, 300)[0], k), []).append(v)
    expected = [{"TollId": k, "spread": max(vs) - min(vs), "mean": sum(vs) / len(vs)}
                for (_, k), vs in groups.items() if len(vs) > 3]
    with TestPipeline() as p:
        out = {"input": p | beam.Create(ROWS)} | AsaQuery(q)
        assert_that(out["output"], equal_to(expected))


def test_snapshot_window_groups_equal_timestamps():
    rows = [{"k": "a", "t": "2024-01-01T10:00:00Z"}, {"k": "b", "t": "2024-01-01T10:00:00Z"},
            {"k": "c", "t": "2024-01-01T10:00:01Z"}]
    q = "SELECT System.Timestamp() AS ts, COUNT(*) AS n FROM input TIMESTAMP BY t GROUP BY System.Timestamp()"
    with TestPipeline() as p:
        out = {"input": p | beam.Create(rows)} | AsaQuery(q)
        assert_that(out["output"], equal_to([{"ts": BASE, "n": 2}, {"ts": BASE + dt.timedelta(seconds=1), "n": 1}]))


def test_average_of_a_udf_per_window_and_key():
    """Scoring and windows together: AVG(udf.score(...)) per key and window."""
    score = PythonFunction("score", lambda rec: rec["Toll"] * 10.0, arity=(1, 1))
    q = """WITH Scored AS (SELECT TollId, EntryTime, udf.score(input) AS pred FROM input)
           SELECT TollId, AVG(pred) AS avgPred, System.Timestamp() AS windowEnd
           FROM Scored TIMESTAMP BY EntryTime GROUP BY TollId, TumblingWindow(minute, 2)"""
    groups: dict[tuple, list[float]] = {}
    for s, k, v in EVENTS:
        groups.setdefault((windows_of(s, 120, 120)[0], k), []).append(v * 10.0)
    expected = [{"TollId": k, "avgPred": sum(vs) / len(vs), "windowEnd": BASE + dt.timedelta(seconds=end)}
                for (end, k), vs in groups.items()]
    with TestPipeline() as p:
        out = {"input": p | beam.Create(ROWS)} | AsaQuery(q, [score])
        assert_that(out["output"], equal_to(expected))


def test_bad_aggregate_argument_is_dead_lettered():
    rows = [{"k": 1, "v": 2, "t": "2024-01-01T10:00:00Z"}, {"k": 1, "v": {"x": 1}, "t": "2024-01-01T10:00:01Z"}]
    q = "SELECT k, SUM(v) AS s FROM input TIMESTAMP BY t GROUP BY k, TumblingWindow(minute, 1)"
    with TestPipeline() as p:
        out = {"input": p | beam.Create(rows)} | AsaQuery(q)
        assert_that(out["output"], equal_to([{"k": 1, "s": 2}]))
        assert_that(out.failed | beam.Map(lambda d: d.row["v"]), equal_to([{"x": 1}]), label="failed")


def test_tumbling_window_under_teststream_with_out_of_order_events():
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    def at(s):
        return (BASE + dt.timedelta(seconds=s)).timestamp()

    def row(s, k):
        return {"k": k, "t": (BASE + dt.timedelta(seconds=s)).isoformat()}

    # Arrival order: 10, 50 (in the first minute), 70, then 40 out of order but before the watermark passes 60.
    stream = (TestStream()
              .add_elements([TimestampedValue(row(10, "a"), at(10)), TimestampedValue(row(50, "a"), at(50))])
              .add_elements([TimestampedValue(row(70, "a"), at(70)), TimestampedValue(row(40, "b"), at(40))])
              .advance_watermark_to(at(61))
              .add_elements([TimestampedValue(row(100, "b"), at(100))])
              .advance_watermark_to_infinity())
    q = ("SELECT k, COUNT(*) AS n, System.Timestamp() AS e FROM input TIMESTAMP BY t "
         "GROUP BY k, TumblingWindow(minute, 1)")
    minute = dt.timedelta(minutes=1)
    with TestPipeline(options=PipelineOptions(streaming=True)) as p:
        out = {"input": p | stream} | AsaQuery(q)
        assert_that(out["output"], equal_to([{"k": "a", "n": 2, "e": BASE + minute},
                                             {"k": "b", "n": 1, "e": BASE + minute},
                                             {"k": "a", "n": 1, "e": BASE + 2 * minute},
                                             {"k": "b", "n": 1, "e": BASE + 2 * minute}]))


def test_sliding_window_emits_when_events_enter_or_leave():
    # Brute force: candidate output times are every event time and every event time + size; an
    # output exists where the (T - size, T] window's content changed and is not empty.
    size = 60
    keyed = [(s, v) for s, k, v in EVENTS if k == 1]
    times = sorted({s for s, _ in keyed} | {s + size for s, _ in keyed})
    expected = []
    for end in times:
        inside = [v for s, v in keyed if end - size < s <= end]
        if inside:
            expected.append({"e": BASE + dt.timedelta(seconds=end), "n": len(inside), "total": sum(inside)})
    q = """SELECT System.Timestamp() AS e, COUNT(*) AS n, SUM(Toll) AS total
           FROM input TIMESTAMP BY EntryTime WHERE TollId = 1 GROUP BY SlidingWindow(second, 60)"""
    with TestPipeline() as p:
        out = {"input": p | beam.Create(ROWS)} | AsaQuery(q)
        assert_that(out["output"], equal_to(expected))


def test_a_row_whose_window_would_end_after_the_last_representable_time_is_a_dead_letter():
    """No row is lost and the job does not stop (it raised OverflowError): an event at
    9999-12-31T23:35Z fits a 10-minute window (ends 23:40) and a snapshot, but its hour window
    would end at 10000-01-01 and its sliding hour would close at 10000-01-01T00:35."""
    from transforms.operators.windows import MIN_TIME_US, WindowSpec, unplaceable

    rows = [{"k": 1, "at": "9999-12-31T23:35:00Z"}, {"k": 2, "at": "2024-01-01T10:20:00Z"}]
    end = dt.datetime(9999, 12, 31, 23, 40, tzinfo=UTC)
    last = dt.datetime(9999, 12, 31, 23, 35, tzinfo=UTC)
    with TestPipeline() as p:
        src = p | beam.Create(rows)
        for label, window in (("hour", "TumblingWindow(hour, 1)"), ("sliding", "SlidingWindow(hour, 1)")):
            out = {"input": src} | label >> AsaQuery(
                f"SELECT k, COUNT(*) AS n INTO output FROM input TIMESTAMP BY at GROUP BY k, {window}")
            assert_that(out["output"], equal_to([{"k": 2, "n": 1}]), label=f"{label} rows")
            assert_that(out.failed | f"{label} why" >> beam.Map(lambda d: (d.row["k"], d.reason, d.message)),
                        equal_to([(1, "invalid_timestamp", "the row cannot be placed in a window: its window "
                                   "would end after 9999-12-31T23:59:59.999999Z, the latest time there is")]),
                        label=f"{label} dead")
        out = {"input": src} | "ten" >> AsaQuery(
            "SELECT k, System.Timestamp() AS t INTO output FROM input TIMESTAMP BY at "
            "GROUP BY k, TumblingWindow(minute, 10)")
        assert_that(out["output"], equal_to([{"k": 1, "t": end},
                                             {"k": 2, "t": dt.datetime(2024, 1, 1, 10, 20, tzinfo=UTC)}]), label="10")
        out = {"input": src} | "snapshot" >> AsaQuery(
            "SELECT k, System.Timestamp() AS t INTO output FROM input TIMESTAMP BY at GROUP BY k, System.Timestamp()")
        assert_that(out["output"] | "k1" >> beam.Filter(lambda r: r["k"] == 1), equal_to([{"k": 1, "t": last}]),
                    label="snapshot")
    # Beam's minimum timestamp (a row that never got an event time) is not placed either.
    assert unplaceable(None, MIN_TIME_US - 1) == "the row has no event time (Beam's minimum timestamp)"
    assert unplaceable(WindowSpec.tumbling(600_000_000), MIN_TIME_US) is None
