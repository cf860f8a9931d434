"""JavaScript UDFs as functions (job-file config, validation, output types) and as a Beam transform."""

from __future__ import annotations

import datetime as dt
import pickle

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.deadletter import RowError
from transforms.errors import FunctionConfigError
from transforms.functions.javascript import JavaScriptFunction, JavaScriptUdf, from_config
from transforms.functions.registry import FunctionRegistry

UTC = dt.timezone.utc
CREATE_ARRAY = ("function createArray(vendorid, weekday, pickuphour, passenger, distance) "
                "{ return [vendorid, weekday, pickuphour, passenger, distance]; }")
TAXI = [
    {"vendorid": 1, "weekday": 3, "pickuphour": 14, "passenger": 2, "distance": 3.5},
    {"vendorid": 2, "weekday": 6, "pickuphour": 0, "passenger": 1, "distance": 12.25},
    {"vendorid": 2, "weekday": 0, "pickuphour": 23, "passenger": None, "distance": 0.0},
]
FIELDS = ["vendorid", "weekday", "pickuphour", "passenger", "distance"]


# -- the transform in a pipeline -------------------------------------------------------------------

def test_create_array_through_the_transform():
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(TAXI) | JavaScriptUdf(CREATE_ARRAY, output_type="array", args=FIELDS,
                                                    output_column="features")
        assert_that(out["rows"], equal_to([{**r, "features": [r[f] for f in FIELDS]} for r in TAXI]),
                    label="rows")
        assert_that(out["failed"], equal_to([]), label="failed")


def test_failing_rows_are_dead_lettered_and_the_others_go_on():
    script = """function check(kind) {
  if (kind === "throw") {
    throw new RangeError("kind " + kind + " is not allowed");
  }
  if (kind === "loop") { while (true) {} }
  if (kind === "bomb") { var a = []; while (true) a.push(new Array(100000).fill(kind)); }
  if (kind === "fs") return require("fs").readFileSync("/etc/passwd");
  if (kind === "escape") return this.constructor.constructor("return process")().env;
  if (kind === "function") return function () {};
  if (kind === "date") return new Date(Date.UTC(2024, 1, 29, 12));
  return kind.toUpperCase();
}"""
    kinds = ["a", "throw", "b", "loop", "c", "bomb", "d", "fs", "escape", "function", "date", "e"]
    rows = [{"id": i, "kind": k} for i, k in enumerate(kinds)]
    ok = {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E", "date": dt.datetime(2024, 2, 29, 12, tzinfo=UTC)}
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(rows) | JavaScriptUdf(script, args=["kind"], output_column="out", step="score",
                                                    timeout_ms=100, memory_limit_mb=16)
        assert_that(out["rows"], equal_to([{**r, "out": ok[r["kind"]]} for r in rows if r["kind"] in ok]),
                    label="rows")
        failed = out["failed"] | beam.Map(lambda d: (d.step, d.reason, d.row["kind"]))
        assert_that(failed, equal_to([
            ("score", "js_error", "throw"), ("score", "js_timeout", "loop"), ("score", "js_error", "bomb"),
            ("score", "js_error", "fs"), ("score", "js_error", "escape"), ("score", "js_error", "function"),
        ]), label="failed")
        messages = out["failed"] | beam.Map(lambda d: (d.row["kind"], d.message))
        assert_that(messages | beam.Filter(lambda m: m[0] == "throw"),
                    equal_to([("throw", "udf.check: RangeError: kind throw is not allowed (line 3)")]),
                    label="message")


def test_whole_row_and_callable_arguments():
    rows = [{"a": 1, "b": 2}, {"a": 5, "b": None}]
    with test_pipeline.TestPipeline() as p:
        created = p | beam.Create(rows)
        whole = created | "whole" >> JavaScriptUdf(
            "function sum(row) { return row.a + (row.b === null ? 0 : row.b); }", output_type="bigint")
        computed = created | "computed" >> JavaScriptUdf(
            "function (x, y) { return x * y; }", args=["a", lambda r: r["a"] + 1], output_column="p", name="mul")
        assert_that(whole["rows"], equal_to([{"a": 1, "b": 2, "sum": 3}, {"a": 5, "b": None, "sum": 5}]),
                    label="whole")
        assert_that(computed["rows"], equal_to([{"a": 1, "b": 2, "p": 2}, {"a": 5, "b": None, "p": 30}]),
                    label="computed")


def test_missing_fields_arrive_as_null():
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create([{"a": 1}]) | JavaScriptUdf("function f(a, b) { return b === null; }",
                                                          args=["a", "b"])
        assert_that(out["rows"], equal_to([{"a": 1, "f": True}]))


def test_counters_report_errors_timeouts_and_context_resets():
    p = test_pipeline.TestPipeline()
    rows = [{"x": x} for x in ["ok", "throw", "loop", "ok2"]]
    _ = p | beam.Create(rows) | JavaScriptUdf(
        "function f(x) { if (x === 'throw') throw new Error(x); if (x === 'loop') for (;;) {} return x; }",
        args=["x"], timeout_ms=100)
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed
                for c in result.metrics().query(MetricsFilter().with_namespace("asa"))["counters"]}
    assert counters["f.js_errors"] == 1
    assert counters["f.js_timeouts"] == 1
    assert counters["f.js_context_resets"] >= 1
    assert counters["f.function_events"] == 4


def test_a_script_that_does_not_compile_fails_when_the_transform_is_built():
    with pytest.raises(FunctionConfigError, match=r"SyntaxError.*line 2"):
        JavaScriptUdf("function f(x) {\n  return x +;\n}", args=["x"])


def test_the_transform_reads_a_script_file(tmp_path):
    path = tmp_path / "double.js"
    path.write_text("// doubles\nfunction double(x) { return x * 2; }\n")
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create([{"x": 21}]) | JavaScriptUdf(str(path), args=["x"], output_type="bigint")
        assert_that(out["rows"], equal_to([{"x": 21, "double": 42}]))


# -- the function ---------------------------------------------------------------------------------

def test_output_type_converts_the_result_or_fails_the_row():
    f = JavaScriptFunction("conv", "function (x) { return x; }", output_type="bigint")
    out = f.call_batch([(7,), ("12",), (2.0,), (2.5,), (None,), ("x",)])
    assert out[:3] == [7, 12, 2] and type(out[2]) is int
    assert out[4] is None
    assert out[3].reason == "cast_error" and out[3].message.startswith("udf.conv returned a value that is not bigint")
    assert out[5].reason == "cast_error"
    as_date = JavaScriptFunction("d", "function (x) { return x; }", output_type="datetime")
    assert as_date.call_batch([("2024-01-02T03:04:05Z",)]) == [dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)]
    as_record = JavaScriptFunction("r", "function (x) { return x; }", output_type="record")
    assert as_record.call_batch([({"a": 1},), ([1],)])[1].reason == "cast_error"
    as_text = JavaScriptFunction("t", "function (x) { return x; }", output_type="nvarchar(max)")
    assert as_text.call_batch([(5,), ([1, "a"],)]) == ["5", '[1,"a"]']


def test_js_errors_pass_through_the_output_type_untouched():
    f = JavaScriptFunction("bad", "function f(x) {\n  throw new Error('no');\n}", output_type="bigint")
    [err] = f.call_batch([(1,)])
    assert isinstance(err, RowError) and err.reason == "js_error" and err.message == "udf.bad: Error: no (line 2)"


def test_the_function_pickles_with_its_source_only():
    f = JavaScriptFunction("inc", "function (x) { return x + 1; }", output_type="bigint")
    assert f.call_batch([(1,)]) == [2]  # an engine now exists
    assert not {"_engine", "_target", "_lock"} & set(f.__getstate__())
    g = pickle.loads(pickle.dumps(f))
    assert g._engine is None
    assert g.call_batch([(41,)]) == [42]
    f.teardown()
    assert f._engine is None


def test_validate_reports_syntax_errors_with_line_and_missing_functions():
    JavaScriptFunction("ok", CREATE_ARRAY).validate()
    with pytest.raises(FunctionConfigError) as info:
        JavaScriptFunction("broken", "function f(a) {\n  var x = ;\n}").validate()
    assert "function 'broken'" in str(info.value) and "SyntaxError" in str(info.value)
    assert "line 2" in str(info.value)
    with pytest.raises(FunctionConfigError, match="does not define a function"):
        JavaScriptFunction("nofn", "var x = 42;").validate()
    with pytest.raises(FunctionConfigError, match="several functions"):
        JavaScriptFunction("two", "function a() {}\nfunction b() {}").validate()
    # Several functions are fine when one is named like the alias.
    JavaScriptFunction("b", "function a() {}\nfunction b() { return a(); }").validate()


def test_describe_names_source_type_and_limits():
    f = JavaScriptFunction("createArray", CREATE_ARRAY, output_type="array", origin="createArray.js")
    assert f.describe() == ("javascript function createArray = createArray.js -> array "
                            "(quickjs, timeout 300 ms, memory 64 MB)")
    assert f.kind == "javascript"


# -- job-file config -----------------------------------------------------------------------------

def test_from_config_reads_the_script_relative_to_the_job_file(tmp_path):
    (tmp_path / "udfs").mkdir()
    (tmp_path / "udfs" / "createArray.js").write_text(CREATE_ARRAY)
    spec = {"type": "javascript", "script": "udfs/createArray.js", "output_type": "array",
            "timeout_ms": 200, "memory_limit_mb": 32}
    f = from_config("createArray", spec, tmp_path)
    assert (f.output_type, f.timeout_ms, f.memory_limit_mb, f.origin) == ("array", 200, 32, "udfs/createArray.js")
    assert f.call_batch([(1, 2, 3, 4, 5.5)]) == [[1, 2, 3, 4, 5.5]]


def test_from_config_takes_inline_source_and_defaults(tmp_path):
    f = from_config("hex2Int", {"type": "javascript", "script": "function (h) { return parseInt(h, 16); }"},
                    tmp_path)
    assert (f.output_type, f.timeout_ms, f.memory_limit_mb, f.origin) == ("any", 300, 64, "inline script")
    assert f.call_batch([("ff",)]) == [255]


@pytest.mark.parametrize(("spec", "message"), [
    ({"type": "javascript"}, "'script' is required"),
    ({"type": "javascript", "script": "missing.js"}, "missing.js not found"),
    ({"type": "javascript", "script": "function (x) { return x; }", "output_type": "money"}, "unknown ASA type"),
    ({"type": "javascript", "script": "function (x) { return x; }", "timeout_ms": 0}, "timeout_ms"),
    ({"type": "javascript", "script": "function (x) { return x; }", "memory_limit_mb": "lots"}, "memory_limit_mb"),
    ({"type": "javascript", "script": "function (x) { return x; }", "timeout": 5}, "unknown setting"),
    ({"type": "javascript", "script": "function (x) { return x; }", "engine": "v8"}, "unknown JavaScript engine"),
])
def test_from_config_rejects_bad_settings(tmp_path, spec, message):
    with pytest.raises(FunctionConfigError, match=message):
        from_config("f", spec, tmp_path)


def test_the_registry_builds_and_validates_javascript_functions(tmp_path):
    (tmp_path / "createArray.js").write_text(CREATE_ARRAY)
    registry = FunctionRegistry.from_config(
        {"createArray": {"type": "javascript", "script": "createArray.js", "output_type": "array"},
         "broken": {"type": "javascript", "script": "function f(x) {\n  return x +;\n}"}},
        tmp_path)
    assert registry.lookup("CREATEARRAY").kind == "javascript"
    with pytest.raises(FunctionConfigError, match=r"function 'broken'.*line 2"):
        registry.validate()
