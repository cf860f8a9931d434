"""Seeded fuzzing of the front end: any query text gives a QueryError with line and column, or a
plan whose every expression compiles — never another exception (RecursionError, SyntaxError from
generated code, KeyError, ...). Bounded so it runs in seconds; derandomized, so a failure is
reproducible.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.deadletter import RowError
from transforms.errors import QueryError
from transforms.functions.python import PythonFunction
from transforms.functions.registry import FunctionRegistry
from transforms.query.expressions import compile_args, compile_predicate_3vl, compile_projection, compile_value
from transforms.query.lower import lower
from transforms.query.parser import parse
from transforms.query.plan import SelectStep

FUNCS = FunctionRegistry([PythonFunction("score", lambda x: x, arity=(1, 1)),
                          PythonFunction("f", lambda *a: list(a))])
ROWS = [{}, {"a": 1, "b": "x", "Time": "2024-01-01T00:00:00Z", "Location": {"Lat": 1}, "value": None},
        {"a": "2", "b": 2.5, "timestamp": [1, 2], "i": {"Location": None}}]
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def front_end(text: str) -> None:
    """Parse, bind and generate code; only QueryError (with a position) may escape."""
    try:
        plan = lower(parse(text), FUNCS)
    except QueryError as e:
        assert e.line is not None and e.line >= 1 and e.column is not None and e.column >= 1, repr(e)
        return
    for step in plan.steps:
        if not isinstance(step, SelectStep):
            continue
        project = compile_projection(step.columns, step.where)
        if not (step.calls or step.joins or step.applies or step.analytic or step.grouping or step.uses_timestamp):
            for row in ROWS:  # a row may fail (a RowError: dead letter), never crash the step's code
                try:
                    project(row)
                except RowError:
                    pass
        for expr in (step.timestamp_by, *(c.guard for c in step.calls)):
            if expr is not None:
                compile_value(expr)
        for call in step.calls:
            compile_args(call.args)
        for j in step.joins:
            compile_args(j.left_keys)
            compile_args(j.right_keys)
            if j.residual is not None:
                compile_predicate_3vl(j.residual)
        for a in step.analytic:
            for e in (a.value, a.when, a.default):
                if e is not None:
                    compile_value(e)
        if step.grouping is not None:
            compile_args(step.grouping.keys)
            for ag in step.grouping.aggregates:
                compile_args(ag.args)


# -- query-shaped text: a small grammar, then token-level damage --------------------------------
NAMES = st.sampled_from(["a", "b", "Time", "timestamp", "value", "type", "[x y]", "input.a", "i.Location",
                         "date", "partition", "limit", "t.[from]"])
LITERALS = st.sampled_from(["1", "2.5", "-3", "'text'", "'2024-01-01T00:00:00Z'", "NULL", "true", "1e999"])
FUNCTIONS = st.sampled_from(["ABS", "LEN", "UPPER", "COALESCE", "DATEADD", "udf.score", "udf.f", "GetType",
                             "SUBSTRING", "nosuch"])


def expressions() -> st.SearchStrategy[str]:
    def extend(inner):
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%", "=", "<>", "<", ">=", "AND", "OR"]),
                      inner).map(" ".join),
            inner.map(lambda e: f"({e})"),
            inner.map(lambda e: f"NOT {e}"),
            inner.map(lambda e: f"- {e}"),
            st.tuples(FUNCTIONS, st.lists(inner, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
            st.tuples(inner, inner, inner).map(lambda t: f"CASE WHEN {t[0]} THEN {t[1]} ELSE {t[2]} END"),
            st.tuples(inner, st.sampled_from(["bigint", "float", "nvarchar(max)", "datetime", "record", "blob"]))
            .map(lambda t: f"TRY_CAST({t[0]} AS {t[1]})"),
            inner.map(lambda e: f"{e} IS NOT NULL"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]} BETWEEN {t[1]} AND 1"),
            st.tuples(inner, st.lists(inner, min_size=1, max_size=3)).map(lambda t: f"{t[0]} IN ({', '.join(t[1])})"),
        )

    return st.recursive(st.one_of(NAMES, LITERALS), extend, max_leaves=12)


EXPR = expressions()


@st.composite
def selects(draw) -> str:
    items = draw(st.lists(st.one_of(EXPR.map(lambda e: e + " AS c" + str(abs(hash(e)) % 97)), st.just("*"),
                                    st.just("Location.*"), st.just("COUNT(*) AS [Count]"),
                                    st.just("System.Timestamp() AS timestamp"),
                                    st.just("LAG(a) OVER (PARTITION BY b LIMIT DURATION(hour, 1)) AS prev")),
                          min_size=1, max_size=4))
    q = f"SELECT {', '.join(items)} FROM {draw(st.sampled_from(['input', 'input i', 's', 'input TIMESTAMP BY Time']))}"
    if draw(st.booleans()):
        q += " JOIN ref r ON " + draw(st.sampled_from(["1 = 1", "i.a = r.a", "DATEDIFF(ms, i, r) = 0"]))
    if draw(st.booleans()):
        q += f" WHERE {draw(EXPR)}"
    if draw(st.booleans()):
        q += f" GROUP BY {draw(st.sampled_from(['a', 'a, TumblingWindow(second, 10)', 'b, SlidingWindow(minute, 0)']))}"
        if draw(st.booleans()):
            q += f" HAVING {draw(st.sampled_from(['[Count] > 1', 'COUNT(*) >= 3', 'c1 = 2']))}"
    return q


@st.composite
def queries(draw) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(["CREATE TABLE input (a bigint, Time datetime);",
                                           "CREATE TABLE input (a blob);", "CREATE TABLE x (a bigint)"])))
    body = draw(selects())
    if draw(st.booleans()):
        body = f"({body}) UNION ({draw(selects())})"
    if draw(st.booleans()):
        body = f"WITH s AS ({draw(selects())}) {body}"
    parts.append(body)
    return " ".join(parts)


def damaged(text: str, data) -> str:
    """Delete, duplicate or swap a few tokens (by whitespace) of a generated query."""
    words = text.split(" ")
    for _ in range(data.draw(st.integers(0, 3))):
        if not words:
            break
        i = data.draw(st.integers(0, len(words) - 1))
        op = data.draw(st.sampled_from(["delete", "duplicate", "paren", "keyword"]))
        if op == "delete":
            del words[i]
        elif op == "duplicate":
            words.insert(i, words[i])
        elif op == "paren":
            words.insert(i, data.draw(st.sampled_from(["(", ")", "((", "))"])))
        else:
            words.insert(i, data.draw(st.sampled_from(["SELECT", "FROM", "UNION", "CREATE", "TABLE", "OVER", ",",
                                                       "AS", "TIMESTAMP", "BY", "*", ".", "'", "[", "/*", "--"])))
    return " ".join(words)


@FUZZ
@given(queries(), st.data())
def test_generated_queries_give_a_plan_or_a_positioned_query_error(query, data):
    front_end(query)
    front_end(damaged(query, data))


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("SELECT FROMWHERE()[]'\".,;*+-/<>=0123456789abc_\n\t-/*")),
               max_size=120))
def test_arbitrary_text_gives_a_plan_or_a_positioned_query_error(text):
    front_end(text)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.integers(0, 12_000), st.sampled_from(["(", "NOT ", "- ", "ABS(", "CASE WHEN 1 THEN ", "(SELECT a FROM i ",
                                                "a + ", "a * ", "a OR ", "udf.f(a).x.y.z."]))
def test_deep_nesting_is_a_positioned_query_error_or_a_plan(depth, opener):
    closer = {"(": ")", "NOT ": "", "- ": "", "ABS(": ")", "CASE WHEN 1 THEN ": " END", "(SELECT a FROM i ": ")",
              "a + ": "", "a * ": "", "a OR ": "", "udf.f(a).x.y.z.": ""}
    if opener.startswith("(SELECT"):
        text = "SELECT a FROM i UNION " + opener * depth + ")" * depth
    else:
        text = "SELECT " + opener * depth + "a" + closer[opener] * depth + " FROM i"
    front_end(text)


@pytest.mark.parametrize("depth", [300, 10_000])
def test_nested_parentheses_name_line_and_column(depth):
    with pytest.raises(QueryError) as err:
        parse("SELECT a\nFROM i\nWHERE " + "(" * depth + "a > 1" + ")" * depth)
    assert (err.value.line, err.value.column) == (3, 67)  # the token where the limit is crossed
    assert "nests too deeply" in str(err.value)
