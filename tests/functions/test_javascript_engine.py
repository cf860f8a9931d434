"""The JavaScript engine: value mapping both ways, sandboxing, limits and recovery, compiling."""

from __future__ import annotations

import datetime as dt
import math
import threading

import pytest

from transforms.deadletter import RowError
from transforms.functions.javascript.engine import (
    JsCompileError,
    JsStateLost,
    QuickJsEngine,
)

UTC = dt.timezone.utc
IDENTITY = "function (x) { return x; }"

KIND_JS = """function kind(x) {
  if (x === null) return "null";
  if (Array.isArray(x)) return "array";
  if (x instanceof Date) return "date";
  return typeof x;
}"""


@pytest.fixture
def engine():
    with QuickJsEngine(label="udf.t", timeout_ms=150) as e:
        yield e


def call(engine: QuickJsEngine, source: str, *values):
    """Compile ``source`` and call it once per value (one argument each), in one batch."""
    target = engine.compile(source)
    return engine.call_batch(target, [(v,) for v in values])


def one(engine: QuickJsEngine, source: str, *args):
    target = engine.compile(source)
    return engine.call_batch(target, [args])[0]


# -- ASA → JavaScript ------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "kind"), [
    (7, "number"), (-(2**63), "number"), (1.25, "number"), ("text", "string"), (True, "boolean"),
    (dt.datetime(2024, 1, 2, tzinfo=UTC), "date"), ({"a": 1}, "object"), ([1, 2], "array"),
    ((1, 2), "array"), (None, "null"),
])
def test_asa_values_arrive_as_the_mapped_javascript_types(engine, value, kind):
    assert one(engine, KIND_JS, value) == kind


def test_bigint_is_exact_only_to_2_pow_53_in_javascript(engine):
    show = "function (x) { return [String(x), x === 9007199254740992]; }"
    assert one(engine, show, 2**53) == ["9007199254740992", True]
    assert one(engine, show, 2**53 + 1) == ["9007199254740992", True]  # rounds, as ASA documents
    assert one(engine, show, 2**31 + 5) == ["2147483653", False]  # not wrapped to int32
    assert one(engine, show, -(2**63)) == ["-9223372036854776000", False]


def test_datetime_arrives_as_a_date_with_millisecond_precision(engine):
    iso = "function (d) { return d.toISOString(); }"
    value = dt.datetime(2024, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)
    assert one(engine, iso, value) == "2024-01-02T03:04:05.678Z"
    # A naive datetime is UTC; another zone is converted.
    assert one(engine, iso, dt.datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05.000Z"
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert one(engine, iso, dt.datetime(2024, 1, 2, 3, 0, tzinfo=plus2)) == "2024-01-02T01:00:00.000Z"
    assert one(engine, iso, dt.datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"


def test_nested_datetimes_arrive_as_dates(engine):
    src = "function (r) { return [r.when instanceof Date, r.list[1].at.getUTCFullYear(), r.list[0]]; }"
    row = {"when": dt.datetime(2020, 5, 6, tzinfo=UTC),
           "list": ["plain", {"at": dt.datetime(1999, 12, 31, tzinfo=UTC)}]}
    assert one(engine, src, row) == [True, 1999, "plain"]


def test_records_and_arrays_arrive_nested(engine):
    src = "function (r) { return r.a.b[2].c + r.s.length + r.t[0]; }"
    assert one(engine, src, {"a": {"b": [0, 1, {"c": 40}]}, "s": "xy", "t": (1,)}) == 43


def test_non_finite_floats_cross_both_ways(engine):
    src = "function (x) { return [isNaN(x[0]), x[1] === Infinity, x[2] === -Infinity, x]; }"
    out = one(engine, src, [math.nan, math.inf, -math.inf])
    assert out[:3] == [True, True, True]
    assert math.isnan(out[3][0]) and out[3][1:] == [math.inf, -math.inf]


def test_strings_keep_unicode_nul_and_lone_surrogates(engine):
    values = ["é€𝄞", "a\u0000b", "\ud800", ""]
    assert call(engine, IDENTITY, *values) == values


def test_whole_row_arrives_as_an_object(engine):
    assert one(engine, "function (row) { return row.vendorid * 2 + row.passenger; }",
               {"vendorid": 2, "passenger": 1}) == 5


# -- JavaScript → ASA ------------------------------------------------------------------------------

@pytest.mark.parametrize(("expression", "expected"), [
    ("42", 42),
    ("-0", 0),
    ("1.5", 1.5),
    ("1e-7", 1e-7),
    ("2 ** 53", 2**53),
    ("2 ** 53 + 2", 2**53 + 2),
    ("2 ** 60", 2**60),                       # exact, not the 1152921504606847000 JSON prints
    ("2 ** 63 - 1024", 2**63 - 1024),          # the largest double below 2^63
    ("-(2 ** 63)", -(2**63)),                  # int64 minimum stays a bigint
    ("'text'", "text"),
    ("true", True),
    ("null", None),
    ("undefined", None),
    ("[1, 'a', null, undefined, [2.5]]", [1, "a", None, None, [2.5]]),
    ("[1, 2 ** 60, -(2 ** 63), true]", [1, 2**60, -(2**63), True]),   # flat arrays needing exact digits
    ("[1, , 3]", [1, None, 3]),                                         # a hole is undefined
    ("['a', new Date(0)]", ["a", dt.datetime(1970, 1, 1, tzinfo=UTC)]),
    ("({a: {b: [1, {c: null}]}, u: undefined})", {"a": {"b": [1, {"c": None}]}, "u": None}),
    ("new (class P { constructor() { this.x = 1; } })()", {"x": 1}),
    ("Object.create(null)", {}),
])
def test_javascript_results_map_to_asa_values(engine, expression, expected):
    result = one(engine, f"function () {{ return {expression}; }}")
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("expression", ["2 ** 63", "-(2 ** 63) * 2", "1e300", "2 ** 70"])
def test_whole_numbers_outside_int64_come_back_as_float(engine, expression):
    result = one(engine, f"function () {{ return {expression}; }}")
    assert type(result) is float
    assert result == one(engine, f"function () {{ return {expression} / 2; }}") * 2


def test_nan_and_infinity_come_back_as_floats(engine):
    out = one(engine, "function () { return [NaN, Infinity, -Infinity, {n: NaN}]; }")
    assert math.isnan(out[0]) and out[1:3] == [math.inf, -math.inf] and math.isnan(out[3]["n"])


def test_dates_come_back_as_utc_datetimes_also_nested(engine):
    src = """function () {
      var d = new Date(Date.UTC(2020, 0, 2, 3, 4, 5, 678));
      return [d, {at: d, list: [d]}];
    }"""
    want = dt.datetime(2020, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert one(engine, src) == [want, {"at": want, "list": [want]}]
    assert one(engine, "function () { return new Date(-62135596800000); }") == dt.datetime(1, 1, 1, tzinfo=UTC)


def test_dates_round_trip(engine):
    value = {"at": dt.datetime(2021, 7, 8, 9, 10, 11, 123000, tzinfo=UTC), "n": [dt.datetime(1970, 1, 1, tzinfo=UTC)]}
    assert one(engine, IDENTITY, value) == value


@pytest.mark.parametrize(("expression", "words"), [
    ("function () {}", "function"),
    ("Symbol('s')", "symbol"),
    ("10n", "bigint"),
    ("new Error('e')", "Error"),
    ("new Map()", "Map"),
    ("new Set([1])", "Set"),
    ("/re/", "RegExp"),
    ("new Uint8Array(2)", "Uint8Array"),
    ("new Number(3)", "Number"),
    ("Promise.resolve(1)", "Promise"),
    ("[1, {f: function () {}}]", "function"),
    ("new Date(NaN)", "invalid Date"),
    ("new Date(8.64e15)", "years 1-9999"),
    ("(function () { var o = {}; o.self = o; return o; })()", "cyclic"),
])
def test_values_without_an_asa_type_fail_the_row(engine, expression, words):
    result = one(engine, f"function () {{ return {expression}; }}")
    assert isinstance(result, RowError) and result.reason == "js_error"
    assert words in result.message and result.message.startswith("udf.t: ")


# -- exceptions, limits, recovery ------------------------------------------------------------------

def test_a_thrown_error_fails_only_its_row_with_message_and_line(engine):
    src = "function f(x) {\n  if (x === 2) {\n    throw new TypeError('bad value ' + x);\n  }\n  return x;\n}"
    out = call(engine, src, 1, 2, 3)
    assert out[0] == 1 and out[2] == 3
    assert out[1].reason == "js_error"
    assert out[1].message == "udf.t: TypeError: bad value 2 (line 3)"


def test_a_runtime_error_reports_the_line_where_it_happened(engine):
    src = "function f(x) {\n  var y = 1;\n  return x.missing.field + y;\n}"
    err = one(engine, src, {})
    assert "TypeError" in err.message and "(line 3)" in err.message


def test_thrown_non_errors_are_described(engine):
    out = call(engine, "function (x) { throw x; }", "bad input", {"code": 7}, 3)
    assert [e.message for e in out] == ['udf.t: threw "bad input"', 'udf.t: threw {"code":7}', "udf.t: threw 3"]


def test_stack_overflow_fails_the_row_and_the_context_goes_on(engine):
    out = call(engine, "function r(n) { return n === 0 ? 'ok' : r(n < 0 ? n : n - 1); }", 10, -1, 5)
    assert out[0] == "ok" and out[2] == "ok"
    assert out[1].reason == "js_error" and "call stack" in out[1].message


def test_an_infinite_loop_times_out_and_the_rest_of_the_chunk_continues(engine):
    src = "function (x) { if (x === 'loop') { while (true) {} } return x + '!'; }"
    out = call(engine, src, "a", "loop", "b", "c")
    assert out[0] == "a!" and out[2:] == ["b!", "c!"]
    assert out[1].reason == "js_timeout" and "150 ms" in out[1].message
    assert engine.resets >= 1


def test_a_row_timing_out_first_in_a_crossing_is_not_run_twice(engine):
    src = "function (x) { if (x === 'loop') { while (true) {} } return x; }"
    out = call(engine, src, "loop", "a", "b")
    assert out[0].reason == "js_timeout" and out[1:] == ["a", "b"]
    assert engine.crossings == 2 and engine.resets == 1


def test_slow_rows_sharing_a_crossing_are_not_charged_for_each_other():
    # Each row takes ~40% of the limit: the crossing times out on the third row, which then
    # runs alone and succeeds. Only a row that is slow on its own times out.
    busy = "function (ms) { var end = Date.now() + ms; while (Date.now() < end) {} return ms; }"
    with QuickJsEngine(label="udf.t", timeout_ms=200) as engine:
        out = call(engine, busy, 80, 80, 80, 80, 80)
    assert out == [80, 80, 80, 80, 80]


def test_a_memory_bomb_fails_its_row_and_a_fresh_context_continues():
    counting = """function (x) {
      globalThis.calls = (globalThis.calls || 0) + 1;
      if (x === 'bomb') { var a = []; while (true) a.push(new Array(100000).fill(1)); }
      return globalThis.calls;
    }"""
    with QuickJsEngine(label="udf.t", memory_limit_mb=16) as engine:
        out = call(engine, counting, "a", "b", "bomb", "c")
        assert out[:2] == [1, 2]
        assert out[2].reason == "js_error" and "out of memory (limit 16 MB)" in out[2].message
        assert out[3] == 1  # globals start over: the context is new
        assert engine.resets >= 1


def test_a_chunk_too_big_for_the_memory_limit_runs_row_by_row():
    # The chunk's JSON alone exhausts the heap before any row runs: no row is to blame, so each
    # row runs alone in a fresh context, and each fits.
    with QuickJsEngine(label="udf.t", memory_limit_mb=2) as engine:
        out = call(engine, "function (s) { return s.length; }", *["x" * 300_000] * 12)
        assert out == [300_000] * 12
        assert engine.resets == 1 and engine.crossings == 13


def test_a_huge_string_fails_its_row(engine):
    out = call(engine, "function (n) { return 'x'.repeat(n); }", 3, 2**30, 2)
    assert out[0] == "xxx" and out[2] == "xx"
    assert out[1].reason == "js_error"


def test_arguments_javascript_cannot_hold_fail_only_their_row(engine):
    target = engine.compile(IDENTITY)
    out = engine.call_batch(target, [(1,), (b"bytes",), ({"s": {1, 2}},), ("ok",)])
    assert out[0] == 1 and out[3] == "ok"
    assert out[1].reason == "js_error" and "bytes" in out[1].message
    assert "set" in out[2].message


def test_one_engine_is_safe_to_share_between_threads(engine):
    target = engine.compile("function (x) { var s = 0; for (var i = 0; i < 1000; i++) s += x; return s; }")
    failures = []

    def work(k):
        for _ in range(20):
            if engine.call_batch(target, [(k,)] * 50) != [1000 * k] * 50:
                failures.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# -- sandbox ---------------------------------------------------------------------------------------

STANDARD_GLOBALS = {
    "Object", "Function", "Array", "Number", "parseFloat", "parseInt", "Infinity", "NaN", "undefined",
    "Boolean", "String", "Symbol", "Date", "Promise", "RegExp", "Error", "AggregateError", "EvalError",
    "RangeError", "ReferenceError", "SyntaxError", "TypeError", "URIError", "globalThis", "JSON", "Math",
    "ArrayBuffer", "SharedArrayBuffer", "Atomics", "DataView", "Map", "Set", "WeakMap", "WeakSet",
    "WeakRef", "FinalizationRegistry", "Proxy", "Reflect", "BigInt", "Int8Array", "Uint8Array",
    "Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array", "Uint32Array", "Float16Array",
    "Float32Array", "Float64Array", "BigInt64Array", "BigUint64Array", "decodeURI", "decodeURIComponent",
    "encodeURI", "encodeURIComponent", "escape", "unescape", "eval", "isFinite", "isNaN", "Iterator",
    "InternalError", "SuppressedError", "DisposableStack", "AsyncDisposableStack",
    # Web-platform pure functions QuickJS adds: no I/O.
    "queueMicrotask", "DOMException", "atob", "btoa", "performance",
}


def test_the_global_object_holds_only_standard_builtins(engine):
    names = one(engine, "function () { return Object.getOwnPropertyNames(Function('return this')()); }")
    assert set(names) <= STANDARD_GLOBALS, set(names) - STANDARD_GLOBALS


@pytest.mark.parametrize("source", [
    "function () { return require('fs').readFileSync('/etc/passwd', 'utf8'); }",
    "function () { return process.env; }",
    "function () { return this.constructor.constructor('return process')().env; }",
    "function () { return Function('return std')().loadFile('/etc/passwd'); }",
    "function () { return globalThis.os.exec(['ls']); }",
    "function () { return eval('require')('child_process'); }",
    "function () { return fetch('http://example.com'); }",
    "function () { return new XMLHttpRequest(); }",
])
def test_no_host_access_is_reachable(engine, source):
    result = one(engine, source)
    assert isinstance(result, RowError) and result.reason == "js_error"
    assert "ReferenceError" in result.message or "TypeError" in result.message


def test_dynamic_import_cannot_load_modules(engine):
    # import() yields a Promise that no job queue ever settles, and a Promise has no ASA type.
    result = one(engine, "function () { return import('fs'); }")
    assert isinstance(result, RowError) and "Promise" in result.message
    probe = one(engine, "function () { var out = 'unset'; import('os').then(function (m) { out = m; },"
                        " function (e) { out = String(e); }); return out; }")
    assert probe == "unset"


def test_host_names_are_undefined(engine):
    src = "function () { return [typeof require, typeof process, typeof std, typeof os, typeof console," \
          " typeof print, typeof scriptArgs, typeof setTimeout, typeof module, typeof exports]; }"
    assert one(engine, src) == ["undefined"] * 10


# -- compiling -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "name", "params"), [
    ("function createArray(a, b, c, d, e) { return [a, b, c, d, e]; }", "createArray", 5),
    ("function (x, y) { return x + y; }", "", 2),                  # ASA's REST form
    ("function (x) { return x; };\n", "", 1),
    ("(x) => x * 2", "", 1),
    ("// a comment\n/* and another */\nfunction hex2Int(h) { return parseInt(h, 16); } // trailing", "hex2Int", 1),
    ("'use strict';\nfunction main(x) { return x; }\nmain.cache = {};", "main", 1),
    ("const double = (x) => x * 2;", "double", 1),
    ("// function Date(x) is not declared here\nfunction outer(x) {\n  function inner() {}\n  return inner;\n}",
     "outer", 1),
    ("scale = function (x, k) { return x * k; };", "scale", 2),
])
def test_scripts_holding_one_function_compile(engine, source, name, params):
    target = engine.compile(source)
    assert (target.name, target.params) == (name, params)


def test_helpers_are_allowed_when_the_function_is_named_like_the_alias(engine):
    src = "function helper(x) { return x * 2; }\nfunction twice(x) { return helper(x); }"
    target = engine.compile(src, prefer="twice")
    assert engine.call_batch(target, [(4,)]) == [8]
    with pytest.raises(JsCompileError, match="several functions"):
        engine.compile(src, prefer="other")


@pytest.mark.parametrize(("source", "message", "line"), [
    ("function f(a) {\n  var x = ;\n  return a;\n}", "SyntaxError", 2),
    ("function (x) {\n  return x +* 2;\n}", "SyntaxError", 2),
    ("function f(x) {\n  return x;\n", "SyntaxError", 3),
    ("function f(", "SyntaxError", 1),
    ("var x = 1;\nthrow new Error('top-level failure');", "Error: top-level failure", 2),
])
def test_scripts_that_do_not_compile_report_message_and_line(engine, source, message, line):
    with pytest.raises(JsCompileError) as info:
        engine.compile(source)
    assert message in info.value.message
    assert info.value.line == line
    assert f"line {line}" in str(info.value)


@pytest.mark.parametrize(("source", "message"), [
    ("var x = 1;", "does not define a function"),
    ("1 + 2", "does not define a function"),
    ("", "does not define a function"),
    ("function a() {}\nfunction b() {}", "several functions (a, b)"),
])
def test_scripts_without_exactly_one_function_are_rejected(engine, source, message):
    with pytest.raises(JsCompileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        engine.compile(source)


def test_top_level_code_that_never_finishes_is_a_compile_error():
    with QuickJsEngine(timeout_ms=50) as engine:
        ok = engine.compile(IDENTITY)
        with pytest.raises(JsCompileError, match="did not finish loading"):
            engine.compile("while (true) {}\nfunction f() {}")
        assert engine.call_batch(ok, [(1,)]) == [1]  # earlier scripts still work


# -- objects (the shape JavaScript UDAs need) ------------------------------------------------------

UDA = """function main() {
  this.init = function () { this.state = 0; };
  this.accumulate = function (value, timestamp) { this.state += value; };
  this.deaccumulate = function (value, timestamp) { this.state -= value; };
  this.computeResult = function () { return this.state; };
}"""


def test_objects_can_be_constructed_and_their_methods_called_in_batches(engine):
    ctor = engine.compile(UDA)
    acc = engine.construct(ctor)
    other = engine.construct(ctor)
    ts = dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert engine.call_batch(acc, [()], method="init") == [None]
    assert engine.call_batch(other, [()], method="init") == [None]
    assert engine.call_batch(acc, [(1, ts), (2, ts), (5, ts)], method="accumulate") == [None] * 3
    engine.call_batch(acc, [(2, ts)], method="deaccumulate")
    assert engine.call_batch(acc, [()], method="computeResult") == [6]
    assert engine.call_batch(other, [()], method="computeResult") == [0]
    missing = engine.call_batch(acc, [(), ()], method="nope")
    assert all(isinstance(m, RowError) and "no method nope" in m.message for m in missing)
    assert engine.call_batch(acc, [()], method="computeResult") == [6]  # the object survived
    assert engine.resets == 0


def test_objects_are_lost_when_the_context_is_recreated(engine):
    acc = engine.construct(engine.compile(UDA))
    looping = engine.compile("function () { while (true) {} }")
    assert engine.call_batch(looping, [()])[0].reason == "js_timeout"
    with pytest.raises(JsStateLost):
        engine.call_batch(acc, [()], method="computeResult")
    assert engine.construct(0) is not None  # compiled scripts were loaded again
