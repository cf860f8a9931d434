"""Focused tests of the fixes the golden corpus needed (each names the case that found it)."""

from transforms.query import ast
from transforms.query.parser import parse


def _select(query: str) -> ast.Select:
    return parse(query).statements[0].query


def test_double_quoted_text_in_an_expression_is_a_string():
    # pj_getrecordpropertyvalue_join, qp_case_lane_fixed: "Alert : ..." AS AlertMessage outputs the text.
    item = _select('SELECT "Alert : Sensor above threshold" AS AlertMessage FROM input').items[0]
    assert item.expr == ast.Literal("Alert : Sensor above threshold", item.expr.pos)
    assert item.alias == "AlertMessage"

def test_double_quoted_name_before_a_dot_or_as_an_alias_stays_a_name():
    items = _select('SELECT "rec".x AS "my col" FROM input').items
    assert isinstance(items[0].expr, ast.Name) and items[0].expr.parts == ("rec", "x")
    assert items[0].alias == "my col"

def test_single_quoted_alias_after_as():
    # pj_pivot_zero_width_join: V.smValue AS 'smVersion'.
    assert _select("SELECT a AS 'smVersion' FROM input").items[0].alias == "smVersion"
