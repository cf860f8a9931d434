"""Query shapes real ASA jobs use, run end to end on TestPipeline (issue 9's failure classes).

Expected rows are computed by hand in the comments, or typed in from the Microsoft page cited.
"""

import datetime as dt

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.operators.compile import AsaQuery

# Eight readings one minute apart (the LAG-over-LAG shape of issue 9).
READINGS = [{"t": f"2024-01-01T00:0{i}:00Z", "x": v}
            for i, v in enumerate([10000, 30000, 15000, 25000, 5000, 40000, 12000, 18000])]


def run(query, inputs, **kw):
    """Runs ``query`` on {name: rows}; returns (pipeline, outputs) inside the TestPipeline context."""
    p = TestPipeline()
    out = {name: p | f"in {name}" >> beam.Create(rows) for name, rows in inputs.items()} | AsaQuery(query, **kw)
    return p, out


def test_analytic_over_a_step_that_used_analytic_functions():
    # s.prev = the previous x. Candidates of the second LAG: rows whose prev < 20000, i.e. the rows
    # at 01 (prev 10000), 03 (15000), 05 (5000), 07 (12000). lastlow = t of the latest candidate
    # strictly before the row; WHERE (after analytic functions) drops x <= 10000 (rows 00 and 04).
    q = """WITH s AS (SELECT *, LAG(x) OVER (LIMIT DURATION(hour, 24)) AS prev FROM input TIMESTAMP BY t)
    SELECT t, x, prev, LAG(t) OVER (LIMIT DURATION(hour, 24) WHEN prev < 20000) AS lastlow
    INTO output FROM s WHERE x > 10000"""
    m = "2024-01-01T00:0{}:00Z".format
    expected = [
        {"t": m(1), "x": 30000, "prev": 10000, "lastlow": None},
        {"t": m(2), "x": 15000, "prev": 30000, "lastlow": m(1)},
        {"t": m(3), "x": 25000, "prev": 15000, "lastlow": m(1)},
        {"t": m(5), "x": 40000, "prev": 5000, "lastlow": m(3)},
        {"t": m(6), "x": 12000, "prev": 40000, "lastlow": m(5)},
        {"t": m(7), "x": 18000, "prev": 12000, "lastlow": m(5)},
    ]
    p, out = run(q, {"input": READINGS})
    with p:
        assert_that(out["output"], equal_to(expected))
        assert_that(out.failed, equal_to([]), label="no failures")


def test_sliding_window_over_an_analytic_step():
    # Same root cause as above (two stateful steps with a timer of the same name in one stage).
    # Sliding window of 90 s over the minute-spaced readings: an output at every event (00..07,
    # counts 1,2,2,...) and at every event + 90 s (01:30..08:30: the window then holds the event
    # one minute after it, except after the last event: 08:30 holds nothing → no output).
    q = """WITH s AS (SELECT *, LAG(x) OVER (LIMIT DURATION(hour, 1)) AS prev FROM input TIMESTAMP BY t)
    SELECT COUNT(*) AS n, SUM(prev) AS sp INTO output FROM s GROUP BY SlidingWindow(second, 90)"""
    x = [r["x"] for r in READINGS]
    prev = [None] + x[:-1]
    at_events = [{"n": 1, "sp": None}] + [{"n": 2, "sp": sum(v for v in prev[i - 1:i + 1] if v is not None)}
                                          for i in range(1, 8)]
    # At event i + 90 s the window (i + 30 s, i + 90 s] holds event i + 1 only.
    at_exits = [{"n": 1, "sp": prev[i + 1]} for i in range(7)]
    p, out = run(q, {"input": READINGS})
    with p:
        assert_that(out["output"], equal_to(at_events + at_exits))


def reasons(failed):
    return failed | "reasons" >> beam.Map(lambda d: (d.step, d.reason, d.row))


def test_create_table_converts_declared_columns_and_dead_letters_what_does_not_convert():
    # https://learn.microsoft.com/en-us/stream-analytics-query/create-table-stream-analytics: values
    # are read as the declared types; a row that does not convert is dropped by ASA (here: dead letter).
    q = """CREATE TABLE Entry (TollId bigint, EntryTime datetime, Toll float, Paid bit);
    SELECT TollId, EntryTime, Toll, Paid, Plate INTO output FROM Entry"""
    rows = [
        {"TollId": "1", "EntryTime": "2014-09-10T12:01:00Z", "Toll": "4.5", "Paid": "true", "Plate": "JNB 7001"},
        {"TollId": 2.0, "EntryTime": None, "Toll": 6, "Paid": 0, "Plate": "YXZ 1001"},
        {"tollid": 3, "Plate": "ABC 1004"},  # missing columns stay missing; names are case-insensitive
        {"TollId": "3.5", "EntryTime": "2014-09-10T12:03:00Z", "Toll": 1, "Paid": 1, "Plate": "lossy"},
        {"TollId": 4, "EntryTime": "yesterday", "Toll": 1, "Paid": 1, "Plate": "not a time"},
        {"TollId": 5, "EntryTime": "2014-09-10T12:05:00Z", "Toll": "NaN", "Paid": 1, "Plate": "nan"},
    ]
    t1 = dt.datetime(2014, 9, 10, 12, 1, tzinfo=dt.timezone.utc)
    expected = [
        {"TollId": 1, "EntryTime": t1, "Toll": 4.5, "Paid": True, "Plate": "JNB 7001"},
        {"TollId": 2, "EntryTime": None, "Toll": 6.0, "Paid": False, "Plate": "YXZ 1001"},
        {"TollId": 3, "EntryTime": None, "Toll": None, "Paid": None, "Plate": "ABC 1004"},
    ]
    p, out = run(q, {"Entry": rows})
    with p:
        assert_that(out["output"], equal_to(expected))
        assert_that(reasons(out.failed), equal_to([("CREATE TABLE Entry", "schema_mismatch", r) for r in rows[3:]]),
                    label="dead letters")


def test_having_on_a_select_alias_query_patterns_page():
    # https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-stream-analytics-query-patterns
    # ("Send data to multiple outputs": AlertOutput).
    rows = [{"Make": m, "Time": f"2023-01-01T00:00:0{s}.0000000Z"}
            for m, s in [("Make1", 1), ("Make1", 2), ("Make2", 1), ("Make2", 2), ("Make2", 3)]]
    q = """SELECT * INTO ArchiveOutput FROM Input TIMESTAMP BY Time
    SELECT Make, System.Timestamp() AS Time, COUNT(*) AS [Count] INTO AlertOutput FROM Input TIMESTAMP BY Time
    GROUP BY Make, TumblingWindow(second, 10) HAVING [Count] >= 3"""
    p, out = run(q, {"Input": rows})
    with p:
        assert_that(out["AlertOutput"], equal_to(
            [{"Make": "Make2", "Time": dt.datetime(2023, 1, 1, 0, 0, 10, tzinfo=dt.timezone.utc), "Count": 3}]))
        assert_that(out["ArchiveOutput"], equal_to(rows), label="archive")


def test_all_fields_of_a_nested_record_json_parsing_page():
    # https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-parsing-json
    # ("Select all properties": SELECT input.DeviceID, input.Location.* FROM input).
    rows = [{"DeviceId": "12345", "Location": {"Lat": 47, "Long": 122},
             "SensorReadings": {"Temperature": 80, "Humidity": 70}},
            {"DeviceId": "6789", "Location": None}]
    q = """SELECT input.DeviceID, input.Location.* INTO output FROM input
    SELECT DeviceId AS id, SensorReadings.*, Location.* INTO flat FROM input"""
    p, out = run(q, {"input": rows})
    with p:
        assert_that(out["output"], equal_to([{"DeviceID": "12345", "Lat": 47, "Long": 122}, {"DeviceID": "6789"}]))
        assert_that(out["flat"], equal_to([
            {"id": "12345", "Temperature": 80, "Humidity": 70, "Lat": 47, "Long": 122}, {"id": "6789"}]),
            label="flat")


def test_parenthesised_union_operands_and_conditions():
    q = """(SELECT a, 'x' AS src INTO output FROM input WHERE (a > 1 AND (a < 4)))
    UNION (SELECT b, 'y' FROM input WHERE ((b IS NOT NULL)))"""
    rows = [{"a": 1, "b": None}, {"a": 2, "b": 20}, {"a": 5, "b": 50}]
    p, out = run(q, {"input": rows})
    with p:
        assert_that(out["output"], equal_to([{"a": 2, "src": "x"}, {"a": 20, "src": "y"}, {"a": 50, "src": "y"}]))


def test_reference_join_on_one_equals_one_fans_out_and_non_equality_predicates():
    events = [{"id": 1, "v": 5}, {"id": 2, "v": 15}]
    ref = [{"name": "low", "lo": 0, "hi": 10}, {"name": "high", "lo": 10, "hi": 20}, {"name": "all", "lo": 0, "hi": 99}]
    q = """SELECT e.id, r.name INTO everyRow FROM events e JOIN ref r ON 1 = 1
    SELECT e.id, r.name INTO bands FROM events e JOIN ref r ON e.v >= r.lo AND e.v < r.hi AND r.name <> 'all'
    SELECT e.id, r.name INTO orBands FROM events e LEFT JOIN ref r ON e.v > 50 OR r.name = 'low'"""
    p, out = run(q, {"events": events, "ref": ref}, reference_inputs=["ref"])
    with p:
        assert_that(out["everyRow"], equal_to([{"id": i, "name": n} for i in (1, 2) for n in ("low", "high", "all")]))
        assert_that(out["bands"], equal_to([{"id": 1, "name": "low"}, {"id": 2, "name": "high"}]), label="bands")
        assert_that(out["orBands"], equal_to([{"id": 1, "name": "low"}, {"id": 2, "name": "low"}]), label="or")


def test_zero_width_stream_join_pairs_results_of_the_same_window():
    # Each 10-second window's count joined with the same window's sum (both at the window end).
    rows = [{"k": "a", "v": 2, "t": "2024-01-01T00:00:01Z"}, {"k": "a", "v": 3, "t": "2024-01-01T00:00:02Z"},
            {"k": "a", "v": 7, "t": "2024-01-01T00:00:12Z"}, {"k": "b", "v": 1, "t": "2024-01-01T00:00:13Z"}]
    steps = """WITH c AS (SELECT k, COUNT(*) AS n FROM input TIMESTAMP BY t GROUP BY k, TumblingWindow(second, 10)),
    s AS (SELECT k, SUM(v) AS total FROM input TIMESTAMP BY t GROUP BY k, TumblingWindow(second, 10))"""
    expected = [{"k": "a", "n": 2, "total": 5}, {"k": "a", "n": 1, "total": 7}, {"k": "b", "n": 1, "total": 1}]
    q = steps + """
    SELECT c.k, c.n, s.total INTO eq FROM c JOIN s ON c.k = s.k AND DATEDIFF(ms, c, s) = 0
    SELECT c.k, c.n, s.total INTO btw FROM c JOIN s ON c.k = s.k AND DATEDIFF(millisecond, c, s) BETWEEN 0 AND 0"""
    p, out = run(q, {"input": rows})
    with p:
        assert_that(out["eq"], equal_to(expected))
        assert_that(out["btw"], equal_to(expected), label="between")


def test_strings_order_like_asa_in_topone_collecttop_min_and_max():
    # ISO 8601 times kept as text (JSON input without TIMESTAMP BY on them): ordinal string order.
    rows = [{"k": 1, "Time": "2024-01-01T00:00:02Z", "v": "b"}, {"k": 1, "Time": "2024-01-01T00:00:10Z", "v": "c"},
            {"k": 1, "Time": "2024-01-01T00:00:01Z", "v": "a"}, {"k": 2, "Time": "2024-01-01T00:00:05Z", "v": "Z"}]
    q = """SELECT k, MIN(Time) AS first, MAX(v) AS maxv, TopOne() OVER (ORDER BY Time DESC) AS latest,
    CollectTop(2) OVER (ORDER BY v ASC) AS two INTO output FROM input GROUP BY k"""
    expected = [
        {"k": 1, "first": "2024-01-01T00:00:01Z", "maxv": "c", "latest": rows[1],
         "two": [{"rank": 1, "value": rows[2]}, {"rank": 2, "value": rows[0]}]},
        {"k": 2, "first": "2024-01-01T00:00:05Z", "maxv": "Z", "latest": rows[3],
         "two": [{"rank": 1, "value": rows[3]}]},
    ]
    p, out = run(q, {"input": rows})
    with p:
        assert_that(out["output"], equal_to(expected))
        assert_that(out.failed, equal_to([]), label="no failures")


def test_try_cast_of_non_finite_text_is_null_and_cast_dead_letters():
    # https://learn.microsoft.com/en-us/azure/stream-analytics/input-validation: TRY_CAST('NaN' AS float) is NULL.
    rows = [{"s": "NaN"}, {"s": "Infinity"}, {"s": "-Infinity"}, {"s": "1e999"}, {"s": "2.5"}]
    p, out = run("SELECT s, TRY_CAST(s AS float) AS f INTO output FROM input "
                 "SELECT CAST(s AS float) AS f INTO strict FROM input", {"input": rows})
    with p:
        assert_that(out["output"], equal_to([{"s": r["s"], "f": 2.5 if r["s"] == "2.5" else None} for r in rows]))
        assert_that(out["strict"], equal_to([{"f": 2.5}]), label="strict")
        assert_that(reasons(out.failed), equal_to([("Select into strict", "cast_error", r) for r in rows[:4]]),
                    label="dead letters")


def test_non_reserved_words_as_column_names_end_to_end():
    rows = [{"time": "2024-01-01T00:00:01Z", "value": 3, "type": "t", "date": "d"}]
    q = """SELECT System.Timestamp() AS timestamp, value, type, date AS [partition] INTO output
    FROM input TIMESTAMP BY time"""
    p, out = run(q, {"input": rows})
    with p:
        assert_that(out["output"], equal_to([{"timestamp": dt.datetime(2024, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc),
                                              "value": 3, "type": "t", "partition": "d"}]))


def test_stream_join_without_an_equality_tests_every_pair_in_the_bound():
    # ON has a time bound and a non-equality only: every pair within 5 s whose values satisfy a.v < b.v.
    a = [{"id": "a1", "v": 1, "t": "2024-01-01T00:00:00Z"}, {"id": "a2", "v": 9, "t": "2024-01-01T00:00:10Z"}]
    b = [{"id": "b1", "v": 5, "t": "2024-01-01T00:00:03Z"}, {"id": "b2", "v": 0, "t": "2024-01-01T00:00:04Z"},
         {"id": "b3", "v": 10, "t": "2024-01-01T00:00:12Z"}]
    q = """SELECT x.id AS l, y.id AS r INTO output FROM a x TIMESTAMP BY t JOIN b y TIMESTAMP BY t
    ON DATEDIFF(second, x, y) BETWEEN 0 AND 5 AND x.v < y.v
    SELECT x.id AS l, y.id AS r INTO limits FROM a x TIMESTAMP BY t JOIN b y TIMESTAMP BY t
    ON DATEDIFF(second, x, y) >= 0 AND DATEDIFF(second, x, y) < 3 AND x.v < y.v"""
    p, out = run(q, {"a": a, "b": b})
    with p:
        # a1 (00) pairs with b1 (03, 5 > 1) and not b2 (0 < 1); a2 (10) with b3 (12, 10 > 9).
        assert_that(out["output"], equal_to([{"l": "a1", "r": "b1"}, {"l": "a2", "r": "b3"}]))
        # < 3 s excludes b1 (exactly 3 s after a1).
        assert_that(out["limits"], equal_to([{"l": "a2", "r": "b3"}]), label="one-sided limits")


def test_create_table_types_reference_data():
    # Exported jobs declare CSV reference data: the declared types apply before the join.
    events = [{"id": 1}, {"id": 2}]
    ref = [{"id": "1", "limit": "10.5"}, {"id": "2", "limit": "n/a"}]
    q = """CREATE TABLE ref (id bigint, limit float);
    SELECT e.id, r.id AS rid, r.limit INTO output FROM events e JOIN ref r ON e.id = r.id"""
    p, out = run(q, {"events": events, "ref": ref}, reference_inputs=["ref"])
    with p:
        assert_that(out["output"], equal_to([{"id": 1, "rid": 1, "limit": 10.5}]))
        assert_that(reasons(out.failed), equal_to([("CREATE TABLE ref", "schema_mismatch", ref[1])]), label="dead")
