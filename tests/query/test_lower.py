"""Binding: names, functions, hoisted UDF calls, and check-time errors with line:column."""

import pytest

from transforms.errors import QueryError
from transforms.functions.python import PythonFunction
from transforms.functions.registry import FunctionRegistry
from transforms.query.lower import lower
from transforms.query.parser import parse
from transforms.query.plan import TS_COLUMN, FieldRef, HiddenRef, RowRef, SelectStep, UnionStep, WindowDef

FUNCS = FunctionRegistry([PythonFunction("score", lambda x: x, arity=(1, 1)),
                          PythonFunction("createArray", lambda *a: list(a))])


def plan(query, inputs=("input",), outputs=("output", "out2")):
    return lower(parse(query), FUNCS, inputs, outputs)


def test_seed_array_query_hoists_both_calls_in_order():
    p = plan("""WITH ModelInput AS (
        SELECT udf.createArray(vendorid, weekday) AS inputArray FROM input)
        SELECT udf.score(inputArray) INTO output FROM ModelInput WHERE inputArray IS NOT NULL""")
    model_input, final = p.steps
    assert model_input.name == "ModelInput" and model_input.static_columns == ("inputArray",)
    (call,) = model_input.calls
    assert call.function == "createArray" and call.args == (FieldRef(("vendorid",)), FieldRef(("weekday",)))
    (score,) = final.calls
    assert score.phase == "select" and score.guard is None
    assert final.columns[0].name == "score" and isinstance(final.columns[0].expr, HiddenRef)
    assert [(o.output, o.step) for o in p.outputs] == [("output", "Select into output")]


def test_alias_alone_is_the_whole_row():
    p = plan("""WITH Dataframe AS (SELECT vendorid, distance FROM input)
        SELECT udf.score(Dataframe) AS result INTO output FROM Dataframe WHERE Dataframe IS NOT NULL""")
    final = p.steps[1]
    assert final.calls[0].args == (RowRef(True),)


@pytest.mark.parametrize("where, kept", [
    ("Dataframe IS NOT NULL", None),                                   # always true: no WHERE
    ("Dataframe IS NOT NULL AND distance > 1", "(distance > 1)"),
    ("distance > 1 AND Dataframe IS NOT NULL", "(distance > 1)"),
    ("Dataframe IS NULL", "<row> IS NULL"),                            # never true: kept, folds to FALSE
    ("Dataframe IS NOT NULL OR distance > 1", "(<row> IS NOT NULL OR (distance > 1))"),
    ("distance IS NOT NULL", "distance IS NOT NULL"),                  # a column may be NULL
])
def test_where_drops_the_whole_row_is_not_null_test(where, kept):
    # A single source's row is a record, never NULL (Microsoft's ML example filters on it).
    p = plan(f"WITH Dataframe AS (SELECT vendorid, distance FROM input) "
             f"SELECT udf.score(Dataframe) AS result INTO output FROM Dataframe WHERE {where}")
    final = p.steps[1]
    if kept is None:
        assert final.where is None
    else:
        assert f"where {kept}\n" in str(p)


def test_nested_calls_get_later_stages():
    p = plan("SELECT udf.score(udf.createArray(a, b)) AS s INTO output FROM input")
    stages = sorted((c.function, c.stage) for c in p.steps[0].calls)
    assert stages == [("createArray", 1), ("score", 2)]


def test_call_in_case_is_guarded_by_its_branch():
    p = plan("SELECT CASE WHEN a > 1 THEN udf.score(a) ELSE 0 END AS s INTO output FROM input")
    (call,) = p.steps[0].calls
    assert call.guard is not None and "(a > 1) IS TRUE" in str(p)


def test_call_in_where_runs_before_the_filter():
    p = plan("SELECT a INTO output FROM input WHERE udf.score(a) > 1")
    assert p.steps[0].calls[0].phase == "where"


def test_union_renames_by_position_to_the_first_part():
    p = plan("SELECT a AS x, b FROM input UNION SELECT c, d FROM input")
    union = p.steps[-1]
    assert isinstance(union, UnionStep) and union.static_columns == ("x", "b")
    assert union.rename == (None, ("c", "d"))


def test_identifiers_are_case_insensitive_and_keep_written_names():
    p = plan("WITH S AS (SELECT VendorId FROM INPUT) SELECT vendorid AS Vid INTO OUTPUT FROM s")
    assert isinstance(p.steps[1], SelectStep) and p.steps[1].source == "S"
    assert p.inputs == ("input",) and p.outputs[0].output == "output"
    assert p.steps[1].static_columns == ("Vid",)


def test_step_read_by_two_statements_is_one_step():
    p = plan("WITH s AS (SELECT a FROM input) SELECT a INTO output FROM s SELECT a INTO out2 FROM s")
    assert [s.name for s in p.steps].count("s") == 1
    assert {o.step for o in p.outputs} == {"Select into output", "Select into out2"}


@pytest.mark.parametrize("query, line, column, fragment", [
    ("SELECT a INTO output FROM nowhere", 1, 27, "unknown input or step 'nowhere'"),
    ("SELECT a INTO elsewhere FROM input", 1, 15, "unknown output 'elsewhere'"),
    ("SELECT udf.nope(a) INTO output FROM input", 1, 8, "unknown function 'udf.nope'"),
    ("SELECT FOO(a) INTO output FROM input", 1, 8, "unknown function 'FOO'"),
    ("SELECT udf.score(a, b) INTO output FROM input", 1, 8, "udf.score takes 1 argument(s), got 2"),
    ("SELECT SUBSTRING(a) INTO output FROM input", 1, 8, "SUBSTRING takes"),
    ("WITH s AS (SELECT a FROM input)\nSELECT b INTO output FROM s", 2, 8, "'b' is not a column of 's'"),
    ("SELECT a, a INTO output FROM input", 1, 11, "selected twice"),
    ("SELECT CAST(a AS money) INTO output FROM input", 1, 8, "unknown ASA type 'money'"),
    ("SELECT DATEADD(fortnight, 1, t) INTO output FROM input", 1, 16, "fortnight"),
    ("SELECT b, COUNT(*) INTO output FROM input GROUP BY a, TumblingWindow(minute, 1)", 1, 8,
     "'b' must appear in GROUP BY or inside an aggregate"),
    ("SELECT COUNT(*) INTO output FROM input WHERE SUM(a) > 1", 1, 46, "aggregate SUM needs GROUP BY"),
    ("SELECT a INTO output FROM input GROUP BY a, TumblingWindow(fortnight, 1)", 1, 60, "expected a time unit"),
    ("SELECT a INTO output FROM input GROUP BY a, TumblingWindow(day, 8)", 1, 65, "longer than 7 days"),
    ("SELECT a INTO output FROM input GROUP BY a, HoppingWindow(minute, 5, 10)", 1, 70, "hop size"),
    ("SELECT a INTO output FROM input GROUP BY a HAVING b > 1", 1, 51, "'b' must appear in GROUP BY"),
    ("SELECT SUM(COUNT(a)) INTO output FROM input GROUP BY a", 1, 12, "cannot be nested"),
    ("SELECT a INTO output FROM input HAVING a > 1", 1, 42, "HAVING needs GROUP BY"),
    ("SELECT a.x INTO output FROM input a JOIN input b ON a.x = b.x", 1, 37, "must bound time with DATEDIFF"),
    ("SELECT LAG(a) OVER (PARTITION BY k) INTO output FROM input", 1, 15, "LIMIT DURATION"),
    ("SELECT SUM(a) OVER (PARTITION BY k) INTO output FROM input", 1, 15, "LIMIT DURATION"),
    ("SELECT COUNT(DISTINCT a) OVER (LIMIT DURATION(hour, 1)) INTO output FROM input", 1, 8, "DISTINCT"),
    ("SELECT AVG(a, b) OVER (LIMIT DURATION(hour, 1)) INTO output FROM input", 1, 8, "one argument"),
    ("SELECT a INTO output FROM input CROSS APPLY Foo(a) AS f", 1, 45, "GetArrayElements"),
    ("SELECT a FROM input UNION SELECT a, b FROM input", 1, 27, "same number of columns"),
    ("WITH input AS (SELECT a FROM input) SELECT a FROM input", 1, 6, "name of an input"),
])
def test_binding_errors(query, line, column, fragment):
    with pytest.raises(QueryError) as err:
        plan(query)
    assert fragment in err.value.message
    assert (err.value.line, err.value.column) == (line, column)


def test_group_by_window_keys_aggregates_and_having():
    p = plan("""SELECT System.Timestamp() AS WindowEnd, TollId, COUNT(*) AS n, AVG(toll) AS avgToll
        INTO output FROM input TIMESTAMP BY EntryTime
        GROUP BY TUMBLINGWINDOW(minute, 3), tollid HAVING COUNT(*) > 2""")
    st = p.steps[0]
    g = st.grouping
    assert g.window == WindowDef("tumbling", size_us=180_000_000)
    assert g.keys == (FieldRef(("tollid",)),)
    assert [(a.name, a.star, a.args) for a in g.aggregates] == [
        ("COUNT", True, ()), ("AVG", False, (FieldRef(("toll",)),)), ("COUNT", True, ())]
    assert st.timestamp_by == FieldRef(("EntryTime",))
    names = [c.name for c in st.columns]
    assert names == ["WindowEnd", "TollId", "n", "avgToll"]
    assert st.columns[0].expr == HiddenRef(TS_COLUMN) and st.columns[1].expr == HiddenRef(g.key_columns[0])


@pytest.mark.parametrize("window, expected", [
    ("TumblingWindow(second, 10)", WindowDef("tumbling", size_us=10_000_000)),
    ("Tumbling(Duration(hour, 1), Offset(millisecond, -1))", WindowDef("tumbling", size_us=3_600_000_000,
                                                                        offset_us=-1000)),
    ("HoppingWindow(minute, 10, 5)", WindowDef("hopping", size_us=600_000_000, hop_us=300_000_000)),
    ("HOPPING(Duration(minute, 10), Hop(minute, 5), Offset(millisecond, -1))",
     WindowDef("hopping", size_us=600_000_000, hop_us=300_000_000, offset_us=-1000)),
    ("SlidingWindow(mi, 5)", WindowDef("sliding", size_us=300_000_000)),
    ("SessionWindow(minute, 5, 10)", WindowDef("session", timeout_us=300_000_000, max_duration_us=600_000_000)),
    ("Session(Timeout(second, 1), MaxDuration(second, 9))", WindowDef("session", timeout_us=1_000_000,
                                                                       max_duration_us=9_000_000)),
    ("System.Timestamp()", WindowDef("snapshot")),
])
def test_window_syntaxes(window, expected):
    p = plan(f"SELECT COUNT(*) AS n INTO output FROM input GROUP BY {window}")
    assert p.steps[0].grouping.window == expected


def test_session_partition_becomes_a_key():
    p = plan("SELECT u, COUNT(*) INTO output FROM input GROUP BY u, SessionWindow(minute, 5, 10) OVER (PARTITION BY u)")
    assert p.steps[0].grouping.keys == (FieldRef(("u",)),)


def test_join_keys_bound_and_residual():
    p = plan("""SELECT A.id, B.status INTO output FROM input A TIMESTAMP BY t1
        JOIN input B TIMESTAMP BY t2 ON A.id = B.id AND DATEDIFF(minute, B, A) BETWEEN 0 AND 15 AND B.x > A.x""")
    (j,) = p.steps[0].joins
    assert j.bound == ("minute", -15, 0) and j.kind == "inner"
    assert j.right_keys == (FieldRef(("id",)),) and j.timestamp_by == FieldRef(("t2",))
    assert j.residual is not None and p.steps[0].source_key is not None


def test_cross_apply_adds_a_source():
    p = plan("SELECT e.id, flat.ArrayValue AS v INTO output FROM input e CROSS APPLY GetArrayElements(e.arr) AS flat")
    (a,) = p.steps[0].applies
    assert a.function == "GetArrayElements" and a.alias == "flat"


def test_analytic_calls_are_hoisted():
    p = plan("SELECT LAG(v, 2, 0) OVER (PARTITION BY k LIMIT DURATION(hour, 1)) AS prev INTO output FROM input "
             "WHERE ISFIRST(minute, 10) OVER (PARTITION BY k) = 1")
    kinds = [(a.kind, a.offset, a.duration_us) for a in p.steps[0].analytic]
    assert kinds == [("isfirst", 1, 600_000_000), ("lag", 2, 3_600_000_000)]


# --- issue 9 -----------------------------------------------------------------------------------

def test_create_table_declares_an_input_schema():
    p = plan("CREATE TABLE Input (TollId BIGINT, Toll float, Plate nvarchar(MAX), Loc record);"
             "SELECT TollId INTO output FROM input")
    (sc,) = p.schemas
    assert sc.input == "input"  # the job's spelling
    assert sc.columns == (("TollId", "bigint"), ("Toll", "float"), ("Plate", "nvarchar(max)"), ("Loc", "record"))
    assert "schema input: TollId bigint" in str(p)


@pytest.mark.parametrize("query, line, column, fragment", [
    ("CREATE TABLE other (a bigint); SELECT a INTO output FROM input", 1, 1, "does not name an input"),
    ("CREATE TABLE input (a bigint, b varchar); SELECT a INTO output FROM input", 1, 33, "unknown ASA type"),
    ("CREATE TABLE input (a bigint, A float); SELECT a INTO output FROM input", 1, 33, "declared twice"),
    ("CREATE TABLE input (a bigint); CREATE TABLE input (b bigint); SELECT a INTO output FROM input", 1, 32,
     "declared twice"),
    ("CREATE TABLE input (a bigint);", 1, 1, "no SELECT"),
])
def test_create_table_errors(query, line, column, fragment):
    with pytest.raises(QueryError) as err:
        plan(query)
    assert fragment in err.value.message
    assert (err.value.line, err.value.column) == (line, column)


def test_having_names_a_select_alias():
    # https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-stream-analytics-query-patterns
    p = plan("""SELECT Make, COUNT(*) AS [Count] INTO output FROM input TIMESTAMP BY Time
        GROUP BY Make, TumblingWindow(second, 10) HAVING [Count] >= 3""")
    g = p.steps[0].grouping
    by_column = {a.column: a for a in g.aggregates}
    counted = by_column[g.having.left.column]  # the alias stands for COUNT(*)
    assert (counted.name, counted.star) == ("COUNT", True)


def test_having_alias_does_not_shadow_a_group_key():
    p = plan("SELECT k AS x, COUNT(*) AS k INTO output FROM input GROUP BY k HAVING k > 1")
    g = p.steps[0].grouping
    assert g.having.left == HiddenRef(g.key_columns[0])


def test_record_star_selects_a_record_s_fields():
    p = plan("SELECT input.DeviceID, input.Location.*, Other.* INTO output FROM input")
    cols = p.steps[0].columns
    assert cols[1].name is None and cols[1].expr == FieldRef(("Location",))
    assert cols[2].name is None and cols[2].expr == FieldRef(("Other",))
    assert p.steps[0].static_columns is None


def test_reference_join_on_any_predicate(tmp_path):
    p = lower(parse("SELECT i.a, r.b INTO output FROM input i JOIN ref r ON 1 = 1"), FUNCS, ("input", "ref"),
              ("output",), reference_inputs=["ref"])
    (j,) = p.steps[0].joins
    assert j.left_keys == () and j.residual is not None
    p = lower(parse("SELECT i.a INTO output FROM input i JOIN ref r ON i.a BETWEEN r.lo AND r.hi"), FUNCS,
              ("input", "ref"), ("output",), reference_inputs=["ref"])
    assert p.steps[0].joins[0].left_keys == ()


@pytest.mark.parametrize("on", ["DATEDIFF(ms, a, b) = 0", "0 = DATEDIFF(millisecond, a, b)",
                                "DATEDIFF(ms, a, b) BETWEEN 0 AND 0"])
def test_zero_width_stream_join_bound(on):
    p = plan(f"SELECT a.x INTO output FROM input a JOIN input b ON a.k = b.k AND {on}")
    assert p.steps[0].joins[0].bound[1:] == (0, 0)


@pytest.mark.parametrize("on, bound", [
    ("DATEDIFF(second, a, b) >= 0 AND DATEDIFF(second, a, b) <= 10", (0, 10_000_000)),
    ("DATEDIFF(second, a, b) > 0 AND 10 > DATEDIFF(second, a, b)", (1, 9_999_999)),
    ("DATEDIFF(minute, b, a) <= 0 AND DATEDIFF(second, a, b) < 30", (0, 29_999_999)),  # mirrored
    ("DATEDIFF(second, a, b) BETWEEN 0 AND 60 AND DATEDIFF(ms, a, b) <= 1500", (0, 1_500_000)),
])
def test_one_sided_datediff_limits_are_intersected(on, bound):
    p = plan(f"SELECT a.x INTO output FROM input a JOIN input b ON a.k = b.k AND {on}")
    assert p.steps[0].joins[0].bound == ("microsecond", *bound)


@pytest.mark.parametrize("on, fragment", [
    ("DATEDIFF(second, a, b) >= 0", "on both sides"),
    ("DATEDIFF(second, a, b) >= 5 AND DATEDIFF(second, a, b) < 5", "empty"),
])
def test_one_sided_datediff_errors(on, fragment):
    with pytest.raises(QueryError) as err:
        plan(f"SELECT a.x INTO output FROM input a JOIN input b ON a.k = b.k AND {on}")
    assert fragment in err.value.message and err.value.line == 1
