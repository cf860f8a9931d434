"""The fast JSON path gives byte for byte the standard library's results (issue 11).

The reference encoder and parser below are written here from the standard ``json`` module
and the project's rules (README, "Non-finite floats"): compact separators, no ASCII escaping,
key order kept, datetimes as ISO 8601 UTC with 7 fractional digits and ``Z`` (ASA's format),
NaN/±Infinity written as ``null``, lone surrogates as U+FFFD (.NET's UTF-8 encoder does the
same); reading drops a BOM, takes ``NaN``/``Infinity``/``1e999`` as floats, refuses rows
nested deeper than 64 levels (Json.NET's default MaxDepth).
"""

import datetime as dt
import json
import math

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.io import jsoncodec

UTC = dt.timezone.utc


def _reference_default(v):
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC)
        return v.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    raise TypeError(type(v).__name__)


def _finite(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def reference_encode(value) -> bytes:
    text = json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      default=_reference_default)
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def reference_parse(line: bytes):
    """("row", repr of the row) | ("blank",) | ("bad", message)."""
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return ("bad", f"not valid UTF-8: {e}")
    if not text.strip(" \t\r\n"):
        return ("blank",)
    try:
        value = json.loads(text)
    except RecursionError:
        return ("bad", "nested deeper than 64 levels of objects and arrays")
    except ValueError as e:
        return ("bad", f"not valid JSON: {e}")
    if not isinstance(value, dict):
        return ("bad", "expected a JSON object, got " + {
            list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(type(value), "a number"))
    if _depth(value) > 64:
        return ("bad", "nested deeper than 64 levels of objects and arrays")
    # Lone surrogates become U+FFFD (UTF-8 cannot hold them; Beam's coders refuse them).
    value = json.loads(json.dumps(value, ensure_ascii=False).encode("utf-16", "surrogatepass").decode(
        "utf-16", "replace"))
    return ("row", repr(value))


def _depth(v) -> int:
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


def parse_outcome(line: bytes):
    try:
        row = jsoncodec.parse_row(line)
    except jsoncodec.BadLine as e:
        return ("bad", str(e))
    return ("blank",) if row is None else ("row", repr(row))


def strict_loads(data: bytes):
    """A strict parser: UTF-8 only, no NaN/Infinity constants."""
    def reject(name):
        raise ValueError(f"non-standard constant {name}")
    return json.loads(data.decode("utf-8", "strict"), parse_constant=reject)


TRICKY = [
    {"int53": 2**53 + 1, "int63": 2**63, "int64": 2**64, "neg": -(2**63) - 1, "huge": 10**40, "small": -(10**30)},
    {"f": 0.1, "e16": 1e16, "e15": 1e15 + 0.3, "tiny": 1e-5, "e4": 1e-4, "big": 1.5e300, "denorm": 5e-324,
     "negzero": -0.0, "third": 1 / 3, "whole": 3.0, "neg_e": -1.2345678901234567e-7, "e17": 123456789012345680.0},
    {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "in_list": [1.0, float("nan")],
     "deep": {"x": [{"y": float("inf")}]}},
    {"u": "é 😀 \u2028\u2029 \x00\x1f\x7f \"quote\" back\\slash /slash \t\n\r", "key é": "ü", "😀": 1},
    {"lone": "a\ud800b", "pair_as_two": "\ud83d\ude00", "lone_low": "\udc00"},
    {"z": 1, "a": 2, "m": {"z": None, "a": [True, False, None, [], {}]}},
    {"t": dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
     "t0": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
     "plus2": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
     "naive": dt.datetime(1999, 12, 31, 23, 59, 59, 1), "in_list": [dt.datetime(2020, 2, 29, tzinfo=UTC)]},
    {},
]


@pytest.mark.parametrize("row", TRICKY, ids=range(len(TRICKY)))
def test_encode_is_byte_for_byte_the_reference(row):
    out = jsoncodec.encode(row)
    assert out == reference_encode(row)
    assert out == jsoncodec.encode_stdlib(row)
    strict_loads(out)


def test_known_bytes():
    # Written by hand: Python's repr of floats, null for non-finite, every digit of big ints.
    assert jsoncodec.encode({"a": 1e16, "b": 1e-05, "c": float("nan"), "d": 2**64, "e": 0.1}) == (
        b'{"a":1e+16,"b":1e-05,"c":null,"d":18446744073709551616,"e":0.1}')
    assert jsoncodec.encode({"t": dt.datetime(2024, 5, 6, 7, 8, 9, 5, tzinfo=UTC)}) == (
        b'{"t":"2024-05-06T07:08:09.0000050Z"}')
    assert jsoncodec.encode({"s": "\ud800"}) == '{"s":"\ufffd"}'.encode()


json_values = st.recursive(
    st.none() | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec=None)),  # includes lone surrogates and controls
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)
rows = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(rows)
def test_encode_fuzz_matches_reference_and_is_strict_json(row):
    out = jsoncodec.encode(row)
    assert out == reference_encode(row)
    strict_loads(out)


LINES = [
    b'{"a": 1}', b'{"big": 123456789012345678901234567890, "neg": -9223372036854775809}',
    b'{"n": NaN, "i": Infinity, "m": -Infinity, "e": 1e999, "z": -1e999, "u": 1e-999}',
    b'\xef\xbb\xbf{"bom": true}', b'{"bad": "\xff"}', b'\xed\xa0\x80', b'{"s": "\\ud800 lone"}',
    b'{"s": "\\ud83d\\ude00 pair"}', b'{"a": 1, "a": 2, "b": 3}', b'{"a": "x\x00y"}', b'{"a": "\\u0000"}',
    b'[1, 2]', b'"text"', b'null', b'true', b'12', b'', b'   \t', b'not json', b'{"a": 1}}', b'{"a":',
    b'{"d": ' + b"[" * 64 + b"]" * 64 + b"}", b'{"d": ' + b"[" * 63 + b"]" * 63 + b"}",
    b'{"d": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"[" * 100_000, b'{"n": ' + b"1" * 5000 + b"}",
    b'{"n": ' + b"1" * 4300 + b"}", b'{"x": 1.5, "y": -0, "w": -0.0, "v": 1E2, "t": 0.1e1}',
    b'{"\xc3\xa9": "\xf0\x9f\x98\x80"}', b'\x00', b'{"a": 1}\x00', b'{"a": "' + b"x" * (10 << 20) + b'"}',
]


@pytest.mark.parametrize("line", LINES, ids=[repr(x[:30]) for x in LINES])
def test_parse_matches_the_reference(line):
    assert parse_outcome(line) == reference_parse(line)


def test_parse_values():
    row = jsoncodec.parse_row(b'{"n": NaN, "e": 1e999, "big": 123456789012345678901234567890}')
    assert math.isnan(row["n"]) and row["e"] == math.inf and row["big"] == 123456789012345678901234567890


json_texts = st.one_of(
    rows.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    rows.map(lambda r: json.dumps(r).encode()),
    st.binary(max_size=40),
    st.lists(st.sampled_from([b"{", b"}", b"[", b"]", b'"a"', b":", b",", b"1", b"-", b"NaN", b"Infinity",
                              b"1e999", b"\\u", b"\xef\xbb\xbf", b" ", b"\x00", b"\xff", b"99999999999999999999",
                              b'"\\ud800"', b"true", b"null", b".", b"e", b"0"]), max_size=30).map(b"".join),
)


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(json_texts)
def test_parse_fuzz_matches_reference(line):
    assert parse_outcome(line) == reference_parse(line)


def test_msgspec_alone_would_differ():
    # Why the fallbacks exist (if msgspec changes, the fallbacks stay correct, just slower).
    assert msgspec.json.encode(1e16) != jsoncodec.encode(1e16)
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(b"NaN")
