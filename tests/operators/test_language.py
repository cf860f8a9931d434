"""Query shapes real ASA jobs use, run end to end on TestPipeline (issue 9's failure classes).

Expected rows are computed by hand in the comments, or typed in from the Microsoft page cited.
"""

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
