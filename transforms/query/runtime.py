"""Operators of the query language on ASA values, as the generated step code calls them.

SQL three-valued logic: NULL (None) in → NULL out for arithmetic and comparisons; AND/OR
follow the SQL truth tables. Strings compare with numbers by converting the string (CSV
inputs arrive as text, as in ASA) and with datetimes by parsing ISO 8601.
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
from typing import Any

from transforms import types
from transforms.deadletter import RowError
from transforms.query.plan import HIDDEN_PREFIX

_NUM = (int, float)


def _type_error(op: str, a: Any, b: Any) -> RowError:
    return RowError("type_error", f"cannot apply {op} to {types.type_of(a)} and {types.type_of(b)}")


def _coerce_pair(op: str, a: Any, b: Any) -> tuple[Any, Any]:
    """Bring two non-NULL values to comparable types (ASA implicit conversions)."""
    ta, tb = type(a), type(b)
    if ta is tb or (isinstance(a, _NUM) and isinstance(b, _NUM)):
        return a, b
    if isinstance(a, str) and isinstance(b, _NUM):
        return _num(op, a, b), b
    if isinstance(b, str) and isinstance(a, _NUM):
        return a, _num(op, b, a)
    if isinstance(a, _dt.datetime) and isinstance(b, str):
        return a, _dt_or_fail(op, b, a)
    if isinstance(b, _dt.datetime) and isinstance(a, str):
        return _dt_or_fail(op, a, b), b
    if isinstance(a, _dt.datetime) and isinstance(b, _dt.datetime):
        return a, b
    raise _type_error(op, a, b)


def _num(op: str, text: str, other: Any) -> Any:
    try:
        return int(text) if isinstance(other, int) and text.strip().lstrip("-+").isdigit() else float(text)
    except ValueError:
        raise _type_error(op, text, other) from None


def _dt_or_fail(op: str, text: str, other: Any) -> _dt.datetime:
    try:
        return types.parse_datetime(text)
    except ValueError:
        raise _type_error(op, text, other) from None


# -- comparisons -------------------------------------------------------------------------
def eq(a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    if type(a) is type(b):
        return a == b
    a, b = _coerce_pair("=", a, b)
    return a == b


def ne(a: Any, b: Any) -> bool | None:
    r = eq(a, b)
    return None if r is None else not r


def _ordered(op: str, a: Any, b: Any) -> tuple[Any, Any]:
    if type(a) is not type(b):
        a, b = _coerce_pair(op, a, b)
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        raise _type_error(op, a, b)
    return a, b


def lt(a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    a, b = _ordered("<", a, b)
    return a < b


def le(a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    a, b = _ordered("<=", a, b)
    return a <= b


def gt(a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    a, b = _ordered(">", a, b)
    return a > b


def ge(a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    a, b = _ordered(">=", a, b)
    return a >= b


# -- logic -----------------------------------------------------------------------------
def truth(v: Any) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, _NUM):
        return v != 0
    raise RowError("type_error", f"expected a condition, got {types.type_of(v)}")


def and_(a: Any, b: Any) -> bool | None:
    a, b = truth(a), truth(b)
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def or_(a: Any, b: Any) -> bool | None:
    a, b = truth(a), truth(b)
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def not_(a: Any) -> bool | None:
    a = truth(a)
    return None if a is None else not a


# -- arithmetic -------------------------------------------------------------------------
def _arith_operands(op: str, a: Any, b: Any) -> tuple[Any, Any]:
    if isinstance(a, bool) or isinstance(b, bool) or not (isinstance(a, _NUM) and isinstance(b, _NUM)):
        if isinstance(a, str) and isinstance(b, _NUM) and not isinstance(b, bool):
            return _num(op, a, b), b
        if isinstance(b, str) and isinstance(a, _NUM) and not isinstance(a, bool):
            return a, _num(op, b, a)
        raise _type_error(op, a, b)
    return a, b


def _check_int(v: Any) -> Any:
    if isinstance(v, int) and not types.INT64_MIN <= v <= types.INT64_MAX:
        raise RowError("arithmetic_error", "bigint overflow")
    return v


def add(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if isinstance(a, str) and isinstance(b, str):
        return a + b  # string concatenation
    a, b = _arith_operands("+", a, b)
    return _check_int(a + b)


def sub(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    a, b = _arith_operands("-", a, b)
    return _check_int(a - b)


def mul(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    a, b = _arith_operands("*", a, b)
    return _check_int(a * b)


def div(a: Any, b: Any) -> Any:
    """Division; bigint / bigint is exact division giving a float (see the README)."""
    if a is None or b is None:
        return None
    a, b = _arith_operands("/", a, b)
    if b == 0:
        raise RowError("arithmetic_error", "division by zero")
    return a / b


def mod(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    a, b = _arith_operands("%", a, b)
    if b == 0:
        raise RowError("arithmetic_error", "division by zero")
    # T-SQL: the sign follows the dividend.
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def neg(a: Any) -> Any:
    if a is None:
        return None
    if isinstance(a, bool) or not isinstance(a, _NUM):
        raise RowError("type_error", f"cannot negate {types.type_of(a)}")
    return _check_int(-a)


# -- bitwise operators (& | ^ ~) ----------------------------------------------------------
# ASA's bitwise-operator pages: operands are bit or bigint; bit with bit gives bit, any bigint gives
# bigint; NULL gives NULL. Other types are row errors.
def _bit_operands(op: str, a: Any, b: Any) -> tuple[Any, Any]:
    for v in (a, b):
        if not isinstance(v, int):  # bool is an int: bit
            raise RowError("type_error", f"operator {op} takes bit or bigint, not {types.type_of(v)}")
    return a, b


def bit_and(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    a, b = _bit_operands("&", a, b)
    return a and b if isinstance(a, bool) and isinstance(b, bool) else int(a) & int(b)


def bit_or(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    a, b = _bit_operands("|", a, b)
    return a or b if isinstance(a, bool) and isinstance(b, bool) else int(a) | int(b)


def bit_xor(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    a, b = _bit_operands("^", a, b)
    return a != b if isinstance(a, bool) and isinstance(b, bool) else int(a) ^ int(b)


def bit_not(a: Any) -> Any:
    if a is None:
        return None
    _bit_operands("~", a, 0)
    return not a if isinstance(a, bool) else ~a


# -- predicates --------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def like_regex(pattern: str, escape: str | None = None) -> re.Pattern[str]:
    """SQL LIKE pattern → regex: % any run, _ one char, [abc]/[^a-z] classes; case-sensitive."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if escape is not None and c == escape and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                neg_ = body.startswith("^")
                body = body[1:] if neg_ else body
                out.append("[" + ("^" if neg_ else "") + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def like(value: Any, pattern: Any, escape: Any = None) -> bool | None:
    if value is None or pattern is None:
        return None
    if not isinstance(value, str) or not isinstance(pattern, str):
        raise RowError("type_error", f"LIKE needs strings, got {types.type_of(value)} and {types.type_of(pattern)}")
    return like_regex(pattern, escape).fullmatch(value) is not None


def like_compiled(value: Any, regex: re.Pattern[str]) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError("type_error", f"LIKE needs a string, got {types.type_of(value)}")
    return regex.fullmatch(value) is not None


def in_(value: Any, items: tuple) -> bool | None:
    if value is None:
        return None
    saw_null = False
    for item in items:
        r = eq(value, item)
        if r is True:
            return True
        if r is None:
            saw_null = True
    return None if saw_null else False


def between(value: Any, low: Any, high: Any) -> bool | None:
    return and_(ge(value, low), le(value, high))


# -- rows and fields ---------------------------------------------------------------------
def ci_get(row: dict, name: str) -> Any:
    """Case-insensitive field lookup (ASA identifiers are case-insensitive); missing → NULL."""
    low = name.lower()
    for k, v in row.items():
        if k.lower() == low:
            return v
    return None


def field(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return value[name] if name in value else ci_get(value, name)
    return None


def path(row: dict, names: tuple[str, ...]) -> Any:
    value: Any = row
    for name in names:
        if not isinstance(value, dict):
            return None
        value = value[name] if name in value else ci_get(value, name)
    return value


def any_field(row: dict, sources: tuple[str, ...], names: tuple[str, ...]) -> Any:
    """An unqualified name in a step with JOIN/APPLY: read from the first source that has the field."""
    low = names[0].lower()
    for key in sources:
        rec = row.get(key)
        if isinstance(rec, dict) and (names[0] in rec or any(k.lower() == low for k in rec)):
            return path(rec, names)
    return None


def strip_hidden(row: dict) -> dict:
    # most records have no hidden column: one C-level scan of the joined keys, then a plain copy
    if HIDDEN_PREFIX not in "".join(row):
        return dict(row)
    return {k: v for k, v in row.items() if not k.startswith(HIDDEN_PREFIX)}


def merge_star(out: dict, row: dict, strip: bool) -> None:
    """Add the row's fields that the SELECT list has not produced yet (left wins, case-insensitive)."""
    taken = {k.lower() for k in out}
    for k, v in row.items():
        if strip and k.startswith(HIDDEN_PREFIX):
            continue
        if k.lower() not in taken:
            out[k] = v


def merge_record(out: dict, value: Any) -> None:
    """``record.*``: add the record's fields the SELECT list has not produced yet (left wins)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise RowError("type_error", f"'.*' needs a record, got {types.type_of(value)}")
    merge_star(out, value, True)


def call_nn(fn: Any, *args: Any) -> Any:
    """Call a built-in that returns NULL when any argument is NULL."""
    for a in args:
        if a is None:
            return None
    return fn(*args)


# -- CREATE TABLE ------------------------------------------------------------------------------
def _declared(value: Any, target: str) -> Any:
    """A value read from an input as the type CREATE TABLE declares, converted only without loss
    (ASA's data-types page: conversions at input read without precision loss are implicit; a
    type conversion error at input read drops the event). Raises ValueError when it does not fit."""
    if target == types.BIGINT:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            result = value
        elif isinstance(value, float) and value.is_integer():
            result = int(value)
        elif isinstance(value, str):
            s = value.strip()
            try:
                result = int(s)
            except ValueError:
                f = float(s)  # "3.0" is 3; "3.5", "NaN" and "abc" do not fit
                if not f.is_integer():
                    raise ValueError from None
                result = int(f)
        else:
            raise ValueError
        if not types.INT64_MIN <= result <= types.INT64_MAX:
            raise ValueError
        return result
    if target == types.FLOAT:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            f = float(value.strip())
            if f != f or f in (float("inf"), float("-inf")):  # NaN/Infinity text is not a number here
                raise ValueError
            return f
        raise ValueError
    if target == types.NVARCHAR:
        if isinstance(value, (dict, list)):
            raise ValueError
        return types.to_nvarchar(value)
    if target == types.DATETIME:
        if isinstance(value, (_dt.datetime, str)):
            try:
                return types.to_datetime(value)
            except RowError:
                raise ValueError from None
        raise ValueError
    if target == types.BIT:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
            return value.strip().lower() in ("1", "true")
        raise ValueError
    if target == types.RECORD and isinstance(value, dict):
        return value
    if target == types.ARRAY and isinstance(value, list):
        return value
    raise ValueError


def conform_row(row: dict, input_name: str, columns: tuple[tuple[str, str], ...]) -> dict:
    """A row of an input with a CREATE TABLE: each declared column converted to its type.

    Missing columns and NULLs stay as they are; undeclared columns pass unchanged. A value that
    does not convert raises RowError("schema_mismatch") (ASA drops such events; asa-beam
    dead-letters them).

    >>> conform_row({"Toll": "4", "Plate": "NJB"}, "Entry", (("toll", "float"), ("State", "nvarchar(max)")))
    {'Toll': 4.0, 'Plate': 'NJB'}
    """
    out = dict(row)
    lower = None
    for name, target in columns:
        key = name
        if key not in out:
            lower = lower or {k.lower(): k for k in out}
            key = lower.get(name.lower())
            if key is None:
                continue
        value = out[key]
        if value is None:
            continue
        try:
            out[key] = _declared(value, target)
        except (ValueError, OverflowError):
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise RowError("schema_mismatch", f"CREATE TABLE {input_name}: column '{name}' is declared {target}; "
                                              f"the {types.type_of(value)} value {shown} does not convert") from None
    return out
