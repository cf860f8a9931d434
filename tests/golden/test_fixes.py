"""Focused tests of the fixes the golden corpus needed (each names the case that found it)."""

import pytest

from transforms.deadletter import RowError
from transforms.query import ast, runtime
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


def test_bitwise_operators_parse_with_t_sql_precedence():
    # ref_bitwise_*: & ^ | bind like + and - (left to right), ~ binds like unary minus.
    expr = _select("SELECT 1 + 2 & 3 | ~4 FROM input").items[0].expr
    assert isinstance(expr, ast.Binary) and expr.op == "|"
    assert isinstance(expr.left, ast.Binary) and expr.left.op == "&"
    assert isinstance(expr.left.left, ast.Binary) and expr.left.left.op == "+"
    assert isinstance(expr.right, ast.Unary) and expr.right.op == "~"


def test_bitwise_runtime_keeps_bit_and_bigint_types():
    assert runtime.bit_and(True, False) is False and runtime.bit_or(True, False) is True
    assert runtime.bit_xor(True, True) is False and runtime.bit_not(False) is True
    assert runtime.bit_and(170, 75) == 10 and runtime.bit_or(170, 75) == 235 and runtime.bit_xor(170, 75) == 225
    assert runtime.bit_not(170) == -171
    assert runtime.bit_and(True, 3) == 1 and not isinstance(runtime.bit_and(True, 3), bool)  # bit & bigint: bigint
    assert runtime.bit_or(None, 1) is None and runtime.bit_not(None) is None
    with pytest.raises(RowError, match="bit or bigint"):
        runtime.bit_and(1.5, 1)
