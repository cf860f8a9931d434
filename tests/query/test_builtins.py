"""ASA built-in scalar functions: one table row per case, expected values worked out by hand
or taken from the examples on the ASA reference pages (learn.microsoft.com/stream-analytics-query).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from transforms.deadletter import RowError
from transforms.query.builtins import (
    SCALAR_FUNCTIONS,
    UNIMPLEMENTED,
    Builtin,
    normalize_datepart,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.timezone.utc)


def call(name: str, *args: Any) -> Any:
    """Call a builtin the way the compiler does: arity check, then NULL in → NULL out."""
    b: Builtin = SCALAR_FUNCTIONS[name.lower()]
    assert len(args) >= b.min_args and (b.max_args is None or len(args) <= b.max_args), args
    if b.null_in_null_out and any(a is None for a in args):
        return None
    return b.fn(*args)


def same(actual: Any, expected: Any) -> bool:
    """Equal in value *and* ASA type (1 is not 1.0, True is not 1)."""
    return type(actual) is type(expected) and actual == expected


# --------------------------------------------------------------------------- the table


def test_table_keys_are_lowercase_canonical_names():
    for key, b in SCALAR_FUNCTIONS.items():
        assert key == b.name.lower()
        assert b.min_args >= 0 and (b.max_args is None or b.max_args >= b.min_args)


def test_every_documented_scalar_function_is_present():
    documented = """
        charindex concat concat_ws left len lower ltrim nchar patindex regexmatch replace replicate
        reverse right rtrim space stuff substring translate trim unicode upper
        abs ceiling exp floor power round sign sqrt square
        dateadd datediff datepart datename day month year datetimefromparts
        getarrayelement getarraylength getrecordpropertyvalue gettype json_parse
    """.split()
    assert sorted(documented) == sorted(SCALAR_FUNCTIONS)


def test_flags():
    assert {k for k, b in SCALAR_FUNCTIONS.items() if b.datepart_first} == {
        "dateadd", "datediff", "datepart", "datename",
    }
    assert {k for k, b in SCALAR_FUNCTIONS.items() if not b.null_in_null_out} == {
        "concat", "concat_ws", "gettype",
    }


def test_unimplemented_names_are_lowercase_and_distinct():
    assert UNIMPLEMENTED
    for key, reason in UNIMPLEMENTED.items():
        assert key == key.lower() and key not in SCALAR_FUNCTIONS and reason
    assert {"createpoint", "st_distance", "anomalydetection_spikeanddip"} <= set(UNIMPLEMENTED)


# --------------------------------------------------------------------------- values

CASES = [
    # CHARINDEX (1-based; start < 1 searches from the start)
    ("charindex", ("us", "Focus"), 4),
    ("charindex", ("a", "banana", 3), 4),
    ("charindex", ("a", "banana", 0), 2),
    ("charindex", ("a", "banana", -5), 2),
    ("charindex", ("a", "banana", 7), 0),
    ("charindex", ("x", "abc"), 0),
    ("charindex", ("", "abc"), 0),
    ("charindex", ("A", "abc"), 0),
    # CONCAT / CONCAT_WS (docs examples; NULL is skipped)
    ("concat", ("Make:", "Ford", " And Model:", "Focus"), "Make:Ford And Model:Focus"),
    ("concat", ("a", None, "b"), "ab"),
    ("concat", (None, None), ""),
    ("concat", ("x", 1, 2.5, True), "x12.51"),
    ("concat_ws", (", ", "1 Microsoft Way", None, "Redmond", "WA", "98052", None),
     "1 Microsoft Way, Redmond, WA, 98052"),
    ("concat_ws", ("-", None, None), ""),
    ("concat_ws", (None, "a", "b"), "ab"),
    # LEFT / RIGHT
    ("left", ("abcdefg", 2), "ab"),
    ("left", ("ab", 5), "ab"),
    ("left", ("ab", 0), ""),
    ("right", ("abcdefg", 2), "fg"),
    ("right", ("ab", 5), "ab"),
    ("right", ("ab", 0), ""),
    # LEN excludes trailing blanks only
    ("len", ("abc  ",), 3),
    ("len", ("  abc",), 5),
    ("len", ("abc\t",), 4),
    ("len", ("",), 0),
    ("lower", ("AbC",), "abc"),
    ("upper", ("AbC",), "ABC"),
    # TRIM family: .NET white space, not only char(32)
    ("ltrim", ("      Left test",), "Left test"),
    ("ltrim", ("\u00a0\tx ",), "x "),
    ("rtrim", ("LastName  ",), "LastName"),
    ("rtrim", (" x\u3000\r\n",), " x"),
    ("trim", ("      a test    ",), "a test"),
    ("trim", ("\x1cx\x1c",), "\x1cx\x1c"),
    # NCHAR / UNICODE (docs: 33590 is 茶)
    ("nchar", (33590,), "茶"),
    ("nchar", (65,), "A"),
    ("nchar", (0x1F600,), "😀"),
    ("nchar", (-1,), None),
    ("nchar", (0x110000,), None),
    ("nchar", (0xD800,), None),
    ("unicode", ("茶",), 33590),
    ("unicode", ("AB",), 65),
    ("unicode", ("",), None),
    # PATINDEX (LIKE pattern must cover the whole string)
    ("patindex", ("%100%", "AB100CD"), 3),
    ("patindex", ("%ter%", "interesting"), 3),
    ("patindex", ("abc%", "xabc"), 0),
    ("patindex", ("a%", "abc"), 1),
    ("patindex", ("%c", "abc"), 3),
    ("patindex", ("%c", "abcd"), 0),
    ("patindex", ("%b_d%", "abcd"), 2),
    ("patindex", ("%[0-9]%", "ab7c"), 3),
    ("patindex", ("%[^a-c]%", "abcd"), 4),
    ("patindex", ("%[%]%", "a%b"), 2),
    ("patindex", ("%.%", "a.b"), 2),
    ("patindex", ("%", "abc"), 1),
    ("patindex", ("%z%", "abc"), 0),
    # REGEXMATCH: 1-based position, case-insensitive, invalid pattern → 0
    ("regexmatch", ("ABC123", "[0-9][0-9][0-9]"), 4),
    ("regexmatch", ("abc", "B"), 2),
    ("regexmatch", ("abc", "z"), 0),
    ("regexmatch", ("abc", "("), 0),
    # REPLACE (docs table)
    ("replace", ("abcde", "cd", "xx"), "abxxe"),
    ("replace", ("cdabcd", "cd", "x"), "xabx"),
    ("replace", ("cd", "cd", "xxx"), "xxx"),
    ("replace", ("abcde", "gh", "xx"), "abcde"),
    ("replace", ("abcde", "cde", ""), "ab"),
    ("replace", ("abcde", "", "xxx"), "abcde"),
    ("replace", ("", "cde", "xxx"), ""),
    ("replace", (None, "cde", "xxx"), None),
    ("replace", ("abcde", None, "xxx"), None),
    ("replace", ("abcde", "cde", None), None),
    # REPLICATE / SPACE: negative → NULL
    ("replicate", ("0", 3), "000"),
    ("replicate", ("ab", 0), ""),
    ("replicate", ("a", -1), None),
    ("space", (2,), "  "),
    ("space", (0,), ""),
    ("space", (-1,), None),
    ("reverse", ("abcdefg",), "gfedcba"),
    # STUFF (docs example) and edges
    ("stuff", ("abcdef", 2, 3, "ijklmn"), "aijklmnef"),
    ("stuff", ("abc", 2, 0, "X"), "aXbc"),
    ("stuff", ("abc", 2, 10, "X"), "aX"),
    ("stuff", ("abc", 5, 1, "X"), ""),
    # SUBSTRING (1-based; start < 1 shortens the result)
    ("substring", ("abcdef", 2, 3), "bcd"),
    ("substring", ("abcdef", 0, 3), "ab"),
    ("substring", ("abcdef", -1, 3), "a"),
    ("substring", ("abc", 5, 2), ""),
    ("substring", ("abc", 2, 10), "bc"),
    ("substring", ("abc", 2.9, 1), "b"),
    ("substring", (None, 1, 1), None),
    # TRANSLATE (docs example; each character replaced once)
    ("translate", ("2*[3+4]/{7-2}", "[]{}", "()()"), "2*(3+4)/(7-2)"),
    ("translate", ("abc", "ab", "ba"), "bac"),
    ("translate", ("aab", "aa", "xy"), "xxb"),
    # ABS / CEILING / FLOOR / SIGN keep the input type
    ("abs", (-5,), 5),
    ("abs", (-1.5,), 1.5),
    ("abs", (True,), 1),
    ("ceiling", (1.2,), 2.0),
    ("ceiling", (-1.2,), -1.0),
    ("ceiling", (5,), 5),
    ("floor", (1.8,), 1.0),
    ("floor", (-1.2,), -2.0),
    ("floor", (5,), 5),
    ("sign", (-3,), -1),
    ("sign", (0,), 0),
    ("sign", (2.5,), 1.0),
    ("sign", (-0.1,), -1.0),
    # EXP / SQRT / SQUARE return float
    ("exp", (0,), 1.0),
    ("exp", (1,), 2.718281828459045),
    ("sqrt", (16,), 4.0),
    ("sqrt", (2.25,), 1.5),
    ("square", (3,), 9.0),
    ("square", (-1.5,), 2.25),
    # POWER: the base's type is the result's type
    ("power", (2, 10), 1024),
    ("power", (-2, 63), INT64_MIN),
    ("power", (2, -1), 0),
    ("power", (2.0, 3), 8.0),
    ("power", (4.0, 0.5), 2.0),
    ("power", (2.0, -1), 0.5),
    # ROUND (docs table), half away from zero, and the T-SQL truncate flag
    ("round", (1, 0), 1),
    ("round", (0, 0), 0),
    ("round", (-1, 0), -1),
    ("round", (1.0, 0), 1.0),
    ("round", (0.5, 0), 1.0),
    ("round", (-0.5, 0), -1.0),
    ("round", (1.234, 2), 1.23),
    ("round", (1.234, 10), 1.234),
    ("round", (123.4, -1), 120.0),
    ("round", (123.4, -10), 0.0),
    ("round", (501.0101, -3), 1000.0),
    ("round", (123.9995, 3), 124.0),
    ("round", (2.5, 0), 3.0),
    ("round", (-0.4, 0), 0.0),
    ("round", (15, -1), 20),
    ("round", (-15, -1), -20),
    ("round", (14, -1), 10),
    ("round", (123, -25), 0),
    ("round", (1.239, 2, 1), 1.23),
    ("round", (19, -1, 1), 10),
    ("round", (1.5, None), None),
    # date parts from datetimes and ISO 8601 strings (Sunday 2024-03-10 is in week 11)
    ("datepart", ("year", utc(2024, 3, 10, 13, 45, 30, 123456)), 2024),
    ("datepart", ("yyyy", utc(2024, 3, 10, 13, 45, 30, 123456)), 2024),
    ("datepart", ("qq", utc(2024, 3, 10, 13, 45, 30, 123456)), 1),
    ("datepart", ("q", utc(2024, 10, 1)), 4),
    ("datepart", ("m", utc(2024, 3, 10, 13, 45, 30, 123456)), 3),
    ("datepart", ("dayofyear", utc(2024, 3, 10, 13, 45, 30, 123456)), 70),
    ("datepart", ("dd", utc(2024, 3, 10, 13, 45, 30, 123456)), 10),
    ("datepart", ("week", utc(2024, 3, 10, 13, 45, 30, 123456)), 11),
    ("datepart", ("wk", utc(2024, 1, 6)), 1),
    ("datepart", ("wk", utc(2023, 1, 7)), 1),
    ("datepart", ("wk", utc(2023, 1, 8)), 2),
    ("datepart", ("weekday", utc(2024, 3, 10, 13, 45, 30, 123456)), 1),
    ("datepart", ("dw", utc(2024, 3, 16)), 7),
    ("datepart", ("hh", utc(2024, 3, 10, 13, 45, 30, 123456)), 13),
    ("datepart", ("n", utc(2024, 3, 10, 13, 45, 30, 123456)), 45),
    ("datepart", ("ss", utc(2024, 3, 10, 13, 45, 30, 123456)), 30),
    ("datepart", ("ms", utc(2024, 3, 10, 13, 45, 30, 123456)), 123),
    ("datepart", ("mcs", utc(2024, 3, 10, 13, 45, 30, 123456)), 123456),
    ("datepart", ("hour", "2024-03-10T13:45:30.1234567Z"), 13),
    ("datepart", ("hour", "2024-03-10T23:30:00-02:00"), 1),
    ("datepart", ("hour", None), None),
    ("datename", ("month", utc(2024, 3, 10)), "March"),
    ("datename", ("weekday", utc(2024, 3, 10)), "Sunday"),
    ("datename", ("yy", utc(2024, 3, 10)), "2024"),
    ("datename", ("dy", utc(2024, 3, 10)), "70"),
    ("day", ("2024-03-10T13:45:30Z",), 10),
    ("day", ("2024-03-10T23:30:00-02:00",), 11),
    ("month", (utc(2024, 3, 10),), 3),
    ("year", (utc(2024, 3, 10),), 2024),
    ("datetimefromparts", (2014, 9, 10, 12, 10, 0, 0), utc(2014, 9, 10, 12, 10)),
    ("datetimefromparts", (2024, 2, 29, 23, 59, 59, 500), utc(2024, 2, 29, 23, 59, 59, 500000)),
    ("datetimefromparts", (2024, None, 1, 0, 0, 0, 0), None),
    # DATEADD: month arithmetic clamps to the month's last day; fractions are truncated
    ("dateadd", ("month", 1, utc(2024, 1, 31)), utc(2024, 2, 29)),
    ("dateadd", ("yy", 1, utc(2024, 2, 29)), utc(2025, 2, 28)),
    ("dateadd", ("quarter", 1, utc(2024, 11, 30, 10)), utc(2025, 2, 28, 10)),
    ("dateadd", ("mm", -13, utc(2024, 1, 15)), utc(2022, 12, 15)),
    ("dateadd", ("hour", 2, "2014-09-10T12:00:00Z"), utc(2014, 9, 10, 14)),
    ("dateadd", ("mi", -90, utc(2024, 1, 1, 0, 30)), utc(2023, 12, 31, 23)),
    ("dateadd", ("week", 2, utc(2024, 1, 1)), utc(2024, 1, 15)),
    ("dateadd", ("dy", 1, utc(2024, 12, 31)), utc(2025, 1, 1)),
    ("dateadd", ("dw", 1, utc(2024, 12, 31)), utc(2025, 1, 1)),
    ("dateadd", ("d", 2.9, utc(2024, 1, 1)), utc(2024, 1, 3)),
    ("dateadd", ("s", 61, utc(2024, 1, 1)), utc(2024, 1, 1, 0, 1, 1)),
    ("dateadd", ("ms", 1500, utc(2024, 1, 1)), utc(2024, 1, 1, 0, 0, 1, 500000)),
    ("dateadd", ("mcs", 1, utc(2024, 1, 1)), utc(2024, 1, 1, 0, 0, 0, 1)),
    ("dateadd", ("day", 1, None), None),
    # DATEDIFF counts boundaries crossed
    ("datediff", ("year", utc(2023, 12, 31, 23, 59, 59), utc(2024, 1, 1)), 1),
    ("datediff", ("year", utc(2024, 1, 1), utc(2024, 12, 31)), 0),
    ("datediff", ("quarter", utc(2024, 3, 31), utc(2024, 4, 1)), 1),
    ("datediff", ("qq", utc(2024, 1, 1), utc(2024, 3, 31)), 0),
    ("datediff", ("month", utc(2024, 1, 31), utc(2024, 2, 1)), 1),
    ("datediff", ("month", utc(2024, 3, 1), utc(2023, 1, 31)), -14),
    ("datediff", ("day", utc(2024, 1, 1, 23, 59), utc(2024, 1, 2, 0, 1)), 1),
    ("datediff", ("dayofyear", utc(2024, 1, 1), utc(2024, 3, 1)), 60),
    ("datediff", ("week", utc(2024, 1, 6), utc(2024, 1, 7)), 1),
    ("datediff", ("ww", utc(2024, 1, 7), utc(2024, 1, 13)), 0),
    ("datediff", ("hour", utc(2024, 1, 1, 10, 59, 59), utc(2024, 1, 1, 11)), 1),
    ("datediff", ("minute", utc(2014, 9, 10, 12), "2014-09-10T14:00:00Z"), 120),
    ("datediff", ("second", utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 1)), -1),
    ("datediff", ("second", utc(2024, 1, 1, 0, 0, 0, 500000), utc(2024, 1, 1, 0, 0, 0, 400000)), 0),
    ("datediff", ("ms", utc(2024, 1, 1, 0, 0, 0, 900), utc(2024, 1, 1, 0, 0, 0, 1000)), 1),
    ("datediff", ("mcs", utc(2024, 1, 1), utc(2024, 1, 1, 0, 0, 0, 1)), 1),
    ("datediff", ("day", None, utc(2024, 1, 1)), None),
    # arrays and records
    ("getarrayelement", ([1, 1, 0], 0), 1),
    ("getarrayelement", ([0, 1, 0], 1), 1),
    ("getarrayelement", ([{"a": 1}], 0), {"a": 1}),
    ("getarrayelement", ([1, 2], 2), None),
    ("getarrayelement", ([1, 2], -1), None),
    ("getarrayelement", ([1, 2], None), None),
    ("getarraylength", ([1, 2, 3],), 3),
    ("getarraylength", ([],), 0),
    ("getrecordpropertyvalue", ({"Temperature": 80}, "Temperature"), 80),
    ("getrecordpropertyvalue", ({"Temperature": 80}, "temperature"), 80),
    ("getrecordpropertyvalue", ({"a": {"b": {"c": 3}}}, "a.b.c"), 3),
    ("getrecordpropertyvalue", ({"a.b": 1}, "a.b"), 1),
    ("getrecordpropertyvalue", ({"x.y": {"z": 3}}, "[x.y].z"), 3),
    ("getrecordpropertyvalue", ({"a": 1}, "b"), None),
    ("getrecordpropertyvalue", ({"a": 1}, "a.b"), None),
    ("getrecordpropertyvalue", ({"a": [1]}, "[a"), None),
    # types
    ("gettype", (1,), "bigint"),
    ("gettype", (1.5,), "float"),
    ("gettype", ("a",), "nvarchar(max)"),
    ("gettype", (utc(2024, 1, 1),), "datetime"),
    ("gettype", (True,), "bit"),
    ("gettype", ({},), "record"),
    ("gettype", ([],), "array"),
    ("json_parse", ('{"SalesOrderID": "65191", "n": [1, 2.5]}',), {"SalesOrderID": "65191", "n": [1, 2.5]}),
    ("json_parse", ("not json",), None),
    ("json_parse", ("[1, 2]",), None),
    ("json_parse", ('{"a": NaN}',), None),
    ("json_parse", (5,), None),
]


@pytest.mark.parametrize(("name", "args", "expected"), CASES, ids=[f"{c[0]}{c[1]!r}" for c in CASES])
def test_value(name: str, args: tuple, expected: Any):
    actual = call(name, *args)
    assert same(actual, expected), f"{name}{args!r} = {actual!r}, expected {expected!r}"


def test_dateadd_result_is_utc_and_round_trips_with_datediff():
    start = utc(2024, 5, 31, 8, 15)
    for part in ("year", "quarter", "month", "day", "week", "hour", "minute", "second", "millisecond"):
        later = call("dateadd", part, 7, start)
        assert later.tzinfo is not None and later.utcoffset() == dt.timedelta(0)
        assert call("datediff", part, start, later) == 7, part


def test_gettype_of_null_is_not_null_in_null_out():
    assert call("gettype", None) == "null"


def test_sign_and_ceiling_pass_non_finite_floats_through():
    assert math.isnan(call("sign", math.nan))
    assert call("ceiling", math.inf) == math.inf


# --------------------------------------------------------------------------- errors

ERRORS = [
    ("left", ("ab", -1)),
    ("right", ("ab", -1)),
    ("substring", ("abc", 1, -1)),
    ("substring", (123, 1, 1)),
    ("substring", ("abc", "1", 1)),
    ("stuff", ("abc", 2, -1, "X")),
    ("translate", ("abc", "ab", "x")),
    ("upper", (5,)),
    ("len", ([1],)),
    ("concat", ("a", [1])),
    ("charindex", ("a", "abc", math.nan)),
    ("replicate", ("ab", 60_000_000)),
    ("abs", (INT64_MIN,)),
    ("abs", ("5",)),
    ("exp", (1000,)),
    ("power", (2, 63)),
    ("power", (10, 100)),
    ("power", (0.0, -1)),
    ("power", (-8.0, 1 / 3)),
    ("power", (1e300, 2)),
    ("round", (INT64_MAX, -1)),
    ("round", (1.7e308, -308)),
    ("sqrt", (-1,)),
    ("square", (1e200,)),
    ("dateadd", ("fortnight", 1, utc(2024, 1, 1))),
    ("dateadd", ("year", 1, utc(9999, 6, 1))),
    ("dateadd", ("day", "1", utc(2024, 1, 1))),
    ("dateadd", ("day", 1, 20240101)),
    ("datediff", ("ns", utc(2024, 1, 1), utc(2024, 1, 2))),
    ("datepart", ("hour", "yesterday")),
    ("year", (5,)),
    ("datetimefromparts", (2024, 13, 1, 0, 0, 0, 0)),
    ("datetimefromparts", (2024, 2, 30, 0, 0, 0, 0)),
    ("datetimefromparts", (2024, 1, 1, 24, 0, 0, 0)),
    ("datetimefromparts", (2024, 1, 1, 0, 0, 0, 1000)),
    ("getarrayelement", ("abc", 0)),
    ("getarrayelement", ({"a": 1}, 0)),
    ("getarraylength", ({},)),
    ("getrecordpropertyvalue", ([1], "a")),
    ("getrecordpropertyvalue", ({"a": 1}, 1)),
]


@pytest.mark.parametrize(("name", "args"), ERRORS, ids=[f"{e[0]}{e[1]!r}" for e in ERRORS])
def test_bad_argument_is_a_row_error(name: str, args: tuple):
    with pytest.raises(RowError) as info:
        call(name, *args)
    assert info.value.reason == "function_error"
    assert info.value.message.upper().startswith(SCALAR_FUNCTIONS[name].name.upper() + ":")


# --------------------------------------------------------------------------- dateparts

@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("year", "year"), ("yy", "year"), ("yyyy", "year"), ("YYYY", "year"),
        ("quarter", "quarter"), ("qq", "quarter"), ("q", "quarter"),
        ("month", "month"), ("mm", "month"), ("m", "month"),
        ("dayofyear", "dayofyear"), ("dy", "dayofyear"), ("y", "dayofyear"),
        ("day", "day"), ("dd", "day"), ("d", "day"),
        ("week", "week"), ("wk", "week"), ("ww", "week"),
        ("weekday", "weekday"), ("dw", "weekday"), ("w", "weekday"),
        ("hour", "hour"), ("hh", "hour"),
        ("minute", "minute"), ("mi", "minute"), ("n", "minute"),
        ("second", "second"), ("ss", "second"), ("s", "second"),
        ("millisecond", "millisecond"), ("ms", "millisecond"),
        ("microsecond", "microsecond"), ("mcs", "microsecond"),
    ],
)
def test_normalize_datepart(text: str, canonical: str):
    assert normalize_datepart(text) == canonical


@pytest.mark.parametrize("text", ["nanosecond", "ns", "fortnight", "", "iso_week"])
def test_normalize_datepart_rejects_unknown(text: str):
    with pytest.raises(ValueError, match="unknown datepart"):
        normalize_datepart(text)
