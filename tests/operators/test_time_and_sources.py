"""TIMESTAMP BY, System.Timestamp(), CROSS/OUTER APPLY, JOIN and analytic functions through AsaQuery."""

import datetime as dt

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.operators.compile import AsaQuery

UTC = dt.timezone.utc


def t(minute: int, second: int = 0) -> str:
    return f"2024-01-01T10:{minute:02d}:{second:02d}Z"


def test_timestamp_by_and_system_timestamp():
    rows = [{"id": 1, "at": t(5)}, {"id": 2, "at": "not a time"}, {"id": 3, "at": None}]
    q = "SELECT id, System.Timestamp() AS ts INTO output FROM input TIMESTAMP BY at"
    with TestPipeline() as p:
        out = {"input": p | beam.Create(rows)} | AsaQuery(q)
        assert_that(out["output"], equal_to([{"id": 1, "ts": dt.datetime(2024, 1, 1, 10, 5, tzinfo=UTC)}]))
        assert_that(out.failed | beam.Map(lambda d: (d.row["id"], d.reason)),
                    equal_to([(2, "invalid_timestamp"), (3, "invalid_timestamp")]), label="failed")


def test_cross_and_outer_apply():
    rows = [{"dev": "a", "r": [5, 6]}, {"dev": "b", "r": []}, {"dev": "c", "r": None}, {"dev": "d", "r": 3}]
    cross = ("SELECT e.dev, f.ArrayIndex AS i, f.ArrayValue AS v INTO output "
             "FROM input e CROSS APPLY GetArrayElements(e.r) AS f")
    outer = cross.replace("CROSS", "OUTER")
    props = ("SELECT p.PropertyName AS k, p.PropertyValue AS v INTO output "
             "FROM input CROSS APPLY GetRecordProperties(input.rec) p")
    with TestPipeline() as p:
        src = p | beam.Create(rows)
        out = {"input": src} | "cross" >> AsaQuery(cross)
        assert_that(out["output"], equal_to([{"dev": "a", "i": 0, "v": 5}, {"dev": "a", "i": 1, "v": 6}]), label="c")
        assert_that(out.failed | "cf" >> beam.Map(lambda d: (d.row["e"]["dev"], d.reason)),
                    equal_to([("d", "type_error")]), label="cf")
        out2 = {"input": src} | "outer" >> AsaQuery(outer)
        assert_that(out2["output"], equal_to([
            {"dev": "a", "i": 0, "v": 5}, {"dev": "a", "i": 1, "v": 6},
            {"dev": "b", "i": None, "v": None}, {"dev": "c", "i": None, "v": None}]), label="o")
        recs = p | "recs" >> beam.Create([{"rec": {"x": 1, "y": "z"}}])
        out3 = {"input": recs} | "props" >> AsaQuery(props)
        assert_that(out3["output"], equal_to([{"k": "x", "v": 1}, {"k": "y", "v": "z"}]), label="p")


def test_stream_join_with_datediff_and_left_outer():
    entries = [{"plate": "A", "at": t(0)}, {"plate": "B", "at": t(1)}, {"plate": "C", "at": t(2)}]
    exits = [{"plate": "A", "at": t(4), "gate": 1}, {"plate": "B", "at": t(30), "gate": 2},
             {"plate": "C", "at": t(1), "gate": 3}]
    q = """SELECT E.plate, X.gate, DATEDIFF(minute, E.at, X.at) AS mins
           INTO output FROM entry E TIMESTAMP BY at
           LEFT OUTER JOIN exits X TIMESTAMP BY at
           ON E.plate = X.plate AND DATEDIFF(minute, E, X) BETWEEN 0 AND 15"""
    # Expected by hand: A exits after 4 min (match); B after 29 min (outside); C exits before entering.
    with TestPipeline() as p:
        out = {"entry": p | "e" >> beam.Create(entries), "exits": p | "x" >> beam.Create(exits)} | AsaQuery(q)
        assert_that(out["output"], equal_to([{"plate": "A", "gate": 1, "mins": 4},
                                             {"plate": "B", "gate": None, "mins": None},
                                             {"plate": "C", "gate": None, "mins": None}]))


def test_reference_data_join():
    stream = [{"plate": "A", "speed": 80}, {"plate": "Z", "speed": 50}]
    cars = [{"Plate": "A", "owner": "ann"}]
    q = "SELECT s.plate, r.owner INTO output FROM stream s JOIN cars r ON s.plate = r.Plate"
    with TestPipeline() as p:
        out = {"stream": p | "s" >> beam.Create(stream), "cars": p | "c" >> beam.Create(cars)} | AsaQuery(
            q, reference_inputs=["cars"])
        assert_that(out["output"], equal_to([{"plate": "A", "owner": "ann"}]))


def test_lag_and_isfirst():
    rows = [{"s": "a", "v": 1, "at": t(0, 30)}, {"s": "a", "v": 2, "at": t(1)}, {"s": "b", "v": 9, "at": t(2)},
            {"s": "a", "v": 4, "at": t(12)}]
    q = """SELECT s, v, LAG(v) OVER (PARTITION BY s LIMIT DURATION(minute, 5)) AS prev,
                  ISFIRST(minute, 10) OVER (PARTITION BY s) AS first
           INTO output FROM input TIMESTAMP BY at"""
    # By hand (ISFIRST intervals align like tumbling windows, (start, end]): a@0:30 is first in
    # (10:00, 10:10]; a@1 is not, its LAG is 1; b@2 is first; a@12 is first in (10:10, 10:20] and
    # its previous event is 11 minutes old, beyond the 5-minute duration.
    with TestPipeline() as p:
        out = {"input": p | beam.Create(rows)} | AsaQuery(q)
        assert_that(out["output"], equal_to([
            {"s": "a", "v": 1, "prev": None, "first": 1}, {"s": "a", "v": 2, "prev": 1, "first": 0},
            {"s": "b", "v": 9, "prev": None, "first": 1}, {"s": "a", "v": 4, "prev": None, "first": 1}]))


def _arriving(events):
    """A TestStream where each (arrival second, row) arrives at that time, as a streaming source does."""
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    base = dt.datetime(2024, 1, 1, 10, tzinfo=UTC).timestamp()
    stream = TestStream()
    for arrival, row in events:
        stream = stream.add_elements([TimestampedValue(row, base + arrival)]).advance_watermark_to(base + arrival)
    return stream.advance_watermark_to_infinity()


def streaming_pipeline():
    from apache_beam.options.pipeline_options import PipelineOptions

    return TestPipeline(options=PipelineOptions(streaming=True))


def test_late_events_are_dropped_to_the_dead_letter_or_adjusted():
    from transforms.operators.compile import EventOrdering

    events = [(60, {"id": 1, "at": t(0, 58)}),    # 2 s before arrival: on time
              (120, {"id": 2, "at": t(1, 0)}),    # 60 s before arrival: late
              (180, {"id": 3, "at": t(2, 55)})]   # 5 s before arrival: exactly the tolerance, on time
    q = "SELECT id, System.Timestamp() AS ts INTO output FROM input TIMESTAMP BY at"
    with streaming_pipeline() as p:
        src = p | _arriving(events)
        drop = {"input": src} | "drop" >> AsaQuery(q, event_ordering=EventOrdering(5, 0, "drop"))
        assert_that(drop["output"] | "d ids" >> beam.Map(lambda r: r["id"]), equal_to([1, 3]), label="dropped")
        assert_that(drop.failed | "reasons" >> beam.Map(lambda d: (d.row["id"], d.reason)),
                    equal_to([(2, "late_event")]), label="dead")
        adjust = {"input": src} | "adjust" >> AsaQuery(q, event_ordering=EventOrdering(5, 0, "adjust"))
        assert_that(adjust["output"] | "a" >> beam.Map(lambda r: (r["id"], r["ts"].strftime("%M:%S"))),
                    equal_to([(1, "00:58"), (2, "01:55"), (3, "02:55")]), label="adjusted")


def test_without_timestamp_by_a_streaming_source_keeps_its_arrival_time():
    """ASA uses the arrival time without TIMESTAMP BY; a stream's element timestamp is that time."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    arrived = dt.datetime(2024, 1, 1, 10, 5, tzinfo=UTC)
    stream = (TestStream()
              .add_elements([TimestampedValue({"id": 1}, arrived.timestamp())])
              .advance_watermark_to_infinity())
    with TestPipeline(options=PipelineOptions(streaming=True)) as p:
        out = {"input": p | stream} | AsaQuery("SELECT id, System.Timestamp() AS ts INTO output FROM input")
        assert_that(out["output"], equal_to([{"id": 1, "ts": arrived}]))


def test_aggregates_with_over_and_no_window():
    """SUM/COUNT/AVG/MAX OVER (... LIMIT DURATION ... WHEN ...): per event, over (t - 5 min, t]; values by hand."""
    rows = [{"k": "a", "x": 1, "at": t(0)}, {"k": "a", "x": 2, "at": t(1)}, {"k": "b", "x": 5, "at": t(1, 30)},
            {"k": "a", "x": None, "at": t(5)}, {"k": "a", "x": 4, "at": t(6)}, {"k": "a", "x": "zz", "at": t(7)}]
    q = """SELECT k, x, COUNT(*) OVER (PARTITION BY k LIMIT DURATION(minute, 5)) AS n,
                  SUM(x) OVER (PARTITION BY k LIMIT DURATION(minute, 5)) AS s,
                  AVG(x) OVER (LIMIT DURATION(minute, 5)) AS a,
                  MAX(x) OVER (PARTITION BY k LIMIT DURATION(minute, 5) WHEN x > 1) AS m
           INTO output FROM input TIMESTAMP BY at"""
    with TestPipeline() as p:
        out = {"input": p | beam.Create(rows)} | AsaQuery(q)
        assert_that(out["output"] | beam.Map(lambda r: (r["k"], r["x"], r["n"], r["s"], r["a"], r["m"])), equal_to([
            ("a", 1, 1, 1, 1.0, None),
            ("a", 2, 2, 3, 1.5, 2),
            ("b", 5, 1, 5, 8 / 3, 5),
            ("a", None, 2, 2, 3.5, 2),  # 10:00 is exactly 5 min old at 10:05: out
            ("a", 4, 2, 4, 4.5, 4),
        ]))
        assert_that(out.failed | beam.Map(lambda d: (d.row["x"], d.reason)),
                    equal_to([("zz", "aggregate_type_error")]), label="failed")


TRIPS = [{"vendorid": 1, "fare": 2.0}, {"vendorid": 1, "fare": 3.0}, {"vendorid": 2, "fare": 1.0}]
ARRIVED = dt.datetime(2024, 1, 1, 10, 20, tzinfo=UTC)


def test_rows_without_a_timestamp_get_the_arrival_time_for_a_window_several_steps_later():
    """Reported bug: a GROUP BY over a step that needs no time crashed (OverflowError): the rows of
    beam.Create carry Beam's MIN_TIMESTAMP and only the step reading the input gave them an
    arrival time, and only when it needed one. Every input row now arrives at one instant
    (``arrival_time``; by default when the pipeline is built), whatever step reads time."""
    windowed = """WITH big AS (SELECT vendorid, fare FROM input)
                  SELECT vendorid, COUNT(*) AS n, SUM(fare) AS s, System.Timestamp() AS t
                  INTO output FROM big GROUP BY vendorid, TumblingWindow(hour, 1)"""
    unwindowed = """WITH big AS (SELECT vendorid, fare FROM input)
                    SELECT vendorid, COUNT(*) AS n, System.Timestamp() AS t INTO output FROM big GROUP BY vendorid"""
    passed_on = """WITH big AS (SELECT vendorid, fare FROM input), twice AS (SELECT * FROM big)
                   SELECT vendorid, System.Timestamp() AS t INTO output FROM twice"""
    hopping = """WITH big AS (SELECT vendorid FROM input)
                 SELECT COUNT(*) AS n, System.Timestamp() AS t INTO output FROM big
                 GROUP BY HoppingWindow(minute, 30, 15)"""
    at = dict(arrival_time=ARRIVED)
    with TestPipeline() as p:
        src = p | beam.Create(TRIPS)
        # By hand: 10:20 lies in the hour (10:00, 11:00]; vendor 1 has 2 rows (fare 5.0), vendor 2 one.
        out = {"input": src} | "windowed" >> AsaQuery(windowed, **at)
        assert_that(out["output"], equal_to([
            {"vendorid": 1, "n": 2, "s": 5.0, "t": dt.datetime(2024, 1, 1, 11, tzinfo=UTC)},
            {"vendorid": 2, "n": 1, "s": 1.0, "t": dt.datetime(2024, 1, 1, 11, tzinfo=UTC)}]), label="windowed")
        # No window: one group per key over all input, at its latest event time (the arrival).
        out = {"input": src} | "unwindowed" >> AsaQuery(unwindowed, **at)
        assert_that(out["output"], equal_to([{"vendorid": 1, "n": 2, "t": ARRIVED},
                                             {"vendorid": 2, "n": 1, "t": ARRIVED}]), label="unwindowed")
        out = {"input": src} | "passed on" >> AsaQuery(passed_on, **at)
        assert_that(out["output"], equal_to([{"vendorid": v, "t": ARRIVED} for v in (1, 1, 2)]), label="passed on")
        # Hopping 30 min every 15: 10:20 is in (10:00, 10:30] and (10:15, 10:45].
        out = {"input": src} | "hopping" >> AsaQuery(hopping, **at)
        assert_that(out["output"], equal_to([{"n": 3, "t": dt.datetime(2024, 1, 1, 10, m, tzinfo=UTC)}
                                             for m in (30, 45)]), label="hopping")
        assert_that(out.failed, equal_to([]), label="no dead letters")


def test_by_default_rows_without_a_timestamp_share_one_arrival_time_when_the_pipeline_is_built():
    q = """WITH big AS (SELECT vendorid FROM input)
           SELECT vendorid, COUNT(*) AS n, System.Timestamp() AS t INTO output FROM big GROUP BY vendorid"""
    before = dt.datetime.now(UTC)

    def check(lists):
        found = lists[0]
        assert sorted((r["vendorid"], r["n"]) for r in found) == [(1, 2), (2, 1)]
        # one instant for all rows (both groups' latest time is it), taken while the pipeline ran
        assert len({r["t"] for r in found}) == 1 and before <= found[0]["t"] <= dt.datetime.now(UTC)

    with TestPipeline() as p:
        out = {"input": p | beam.Create(TRIPS)} | AsaQuery(q)
        assert_that(out["output"] | beam.combiners.ToList(), check)


def test_asa_beam_run_windows_a_file_without_a_modification_time_at_the_run_time(tmp_path, capsys):
    """The CLI path of the same bug: a file whose filesystem gives no modification time (mtime 0,
    as some archives and reproducible builds leave it) has rows with no timestamp; the row
    accounting must balance and no row be lost."""
    import json
    import os

    from pipelines.cli import main

    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in TRIPS))
    os.utime(data, (0, 0))
    (tmp_path / "job.yaml").write_text(
        "query: |\n  WITH big AS (SELECT vendorid, fare FROM input)\n"
        "  SELECT vendorid, COUNT(*) AS n, System.Timestamp() AS t INTO output FROM big\n"
        "  GROUP BY vendorid, TumblingWindow(hour, 1)\n"
        "inputs:\n  input: {path: in.jsonl}\noutputs:\n  output: {path: out/output}\n")
    before = dt.datetime.now(UTC)
    assert main(["run", str(tmp_path / "job.yaml"), "--quiet"]) == 0
    after = dt.datetime.now(UTC)
    rows = [json.loads(line) for f in (tmp_path / "out").glob("output-*") for line in f.read_text().splitlines()]
    assert sorted((r["vendorid"], r["n"]) for r in rows) == [(1, 2), (2, 1)]
    # both groups in the one hour window holding the run's time: it ends at the next full hour
    ends = {dt.datetime.fromisoformat(r["t"].replace("0Z", "+00:00")) for r in rows}
    assert len(ends) == 1
    end = ends.pop()
    next_hour = after.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    assert end.minute == end.second == 0 and before < end <= next_hour
    dead = [line for f in (tmp_path / "out").glob("dead_letter-*") for line in f.read_text().splitlines()]
    assert dead == []
