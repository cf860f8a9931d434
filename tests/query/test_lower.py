"""Binding: names, functions, hoisted UDF calls, and check-time errors with line:column."""

import pytest

from transforms.errors import QueryError
from transforms.functions.python import PythonFunction
from transforms.functions.registry import FunctionRegistry
from transforms.query.lower import lower
from transforms.query.parser import parse
from transforms.query.plan import FieldRef, HiddenRef, RowRef, SelectStep, UnionStep

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
    assert final.calls[0].args == (RowRef(),)


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
    ("SELECT COUNT(*) INTO output FROM input", 1, 8, "not supported yet"),
    ("SELECT a INTO output FROM input GROUP BY a", 1, 42, "GROUP BY is not supported yet"),
    ("SELECT a FROM input UNION SELECT a, b FROM input", 1, 27, "same number of columns"),
    ("WITH input AS (SELECT a FROM input) SELECT a FROM input", 1, 6, "name of an input"),
    ("SELECT x.* INTO output FROM input", 1, 8, "does not name the FROM source"),
])
def test_binding_errors(query, line, column, fragment):
    with pytest.raises(QueryError) as err:
        plan(query)
    assert fragment in err.value.message
    assert (err.value.line, err.value.column) == (line, column)
