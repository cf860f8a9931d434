"""JavaScript UDAs (uda.<alias>) per window, in the sandboxed QuickJS engine."""

import datetime as dt

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.errors import FunctionConfigError, QueryError
from transforms.functions.javascript.uda import JavaScriptAggregate
from transforms.functions.registry import FunctionRegistry
from transforms.operators.compile import AsaQuery

UTC = dt.timezone.utc
# ASA's UDA doc example shape: a time-weighted sum using accumulate(value, timestamp).
TWA = """function main() {
  this.init = function () { this.state = 0; this.last = null; this.n = 0; };
  this.accumulate = function (value, timestamp) {
    this.n += 1;
    if (this.last !== null) { this.state += value * (timestamp.getTime() - this.last) / 1000; }
    this.last = timestamp.getTime();
  };
  this.computeResult = function () { return this.n === 0 ? null : this.state; };
}"""


def test_uda_per_tumbling_window():
    rows = [{"k": "a", "v": 2, "t": "2024-01-01T10:00:10Z"}, {"k": "a", "v": 4, "t": "2024-01-01T10:00:40Z"},
            {"k": "a", "v": 1, "t": "2024-01-01T10:00:30Z"}, {"k": "b", "v": 9, "t": "2024-01-01T10:00:05Z"},
            {"k": "a", "v": 5, "t": "2024-01-01T10:01:30Z"}]
    q = """SELECT k, uda.twa(v) AS twa, COUNT(*) AS n FROM input TIMESTAMP BY t
           GROUP BY k, TumblingWindow(minute, 1)"""
    # By hand, in event-time order: a in (10:00, 10:01]: 10→30 (+1*20), 30→40 (+4*10) = 60; b: one event = 0;
    # a in (10:01, 10:02]: one event = 0.
    fn = JavaScriptAggregate("TWA", TWA, output_type="float")
    with TestPipeline() as p:
        out = {"input": p | beam.Create(rows)} | AsaQuery(q, FunctionRegistry([fn]))
        assert_that(out["output"], equal_to([{"k": "a", "twa": 60.0, "n": 3}, {"k": "b", "twa": 0.0, "n": 1},
                                             {"k": "a", "twa": 0.0, "n": 1}]))


def test_uda_errors_are_check_time():
    fn = JavaScriptAggregate("TWA", TWA)
    reg = FunctionRegistry([fn])
    with pytest.raises(QueryError, match="needs GROUP BY"):
        AsaQuery("SELECT a FROM input WHERE uda.twa(v) > 1", reg)
    with pytest.raises(QueryError, match="unknown aggregate 'uda.nope'"):
        AsaQuery("SELECT uda.nope(v) AS x FROM input GROUP BY TumblingWindow(minute, 1)", reg)
    with pytest.raises(FunctionConfigError):
        JavaScriptAggregate("bad", "function main( {").validate()
