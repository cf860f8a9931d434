"""JSON lines in and out: one row per line, fast, with exactly the standard library's results.

The reference semantics are those of Python's ``json`` module (``json.loads`` on the line
decoded as UTF-8; ``json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))`` with
datetimes as ISO 8601 UTC ``Z``, see ``deadletter.json_default``), plus the project's rules:

* **Reading** (``parse_row``): a leading BOM is dropped; an escaped lone UTF-16 surrogate
  (``"\\ud800"``) becomes U+FFFD (Beam's coders cannot carry it, UTF-8 cannot hold it); a line
  that is not UTF-8, not JSON, not a JSON object, or nested deeper than ``MAX_DEPTH`` levels is
  a ``BadLine`` (the reader makes it a ``malformed_json`` dead letter). ``NaN``, ``Infinity``,
  ``-Infinity`` and numbers beyond double range (``1e999``) are read as floats, as Json.NET
  (ASA's parser) reads them; integers keep every digit (beyond int64 and 2^53) up to Python's
  4300-digit limit.
* **Writing** (``encode``): non-finite floats are written as ``null`` (no output is ever
  invalid JSON); a lone UTF-16 surrogate in a string (``"\\ud800"`` in the input) is written
  as U+FFFD, as .NET's UTF-8 encoder does, since UTF-8 cannot hold it.

Speed: ``msgspec`` decodes and encodes (measured here ~5x and ~10x the ``json`` module on
taxi-trip rows; ``orjson`` was slower on this machine and turns integers beyond 64 bits into
floats silently). Wherever msgspec would differ from the reference, the row takes the
standard-library path instead, so results are byte for byte the same:

* decoding: any msgspec failure (``NaN`` literals, ``1e999``, lone surrogate escapes, BOMs,
  depth, invalid input) re-parses the line with ``json.loads``, whose result or error message
  is the answer; msgspec accepts nothing ``json.loads`` rejects and returns the same values.
* encoding: rows holding anything but str/int/float/bool/None/dict/list (datetimes, bytes,
  subclasses, non-str keys), or a float that ``repr`` writes in exponent form (|x| < 1e-4 or
  ≥ 1e16: msgspec writes ``1e16`` where Python writes ``1e+16``), are encoded by ``json``.

Deeply nested rows are refused at read time (``MAX_DEPTH``, Json.NET's default ``MaxDepth``)
because every later stage — the Beam coders, the query, the writers — recurses per level: a
100,000-deep line must become one dead letter, not a ``RecursionError`` that stops the job.

>>> parse_row(b'{"id": 12345678901234567890123, "x": NaN}')
{'id': 12345678901234567890123, 'x': nan}
>>> encode({"x": float("nan"), "big": 2**70, "f": 1e16})
b'{"x":null,"big":1180591620717411303424,"f":1e+16}'
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec

from transforms.deadletter import json_default

MAX_DEPTH = 64  # levels of objects/arrays in one row, the row itself being level 1
BOM = b"\xef\xbb\xbf"
_JSON_SPACE = " \t\r\n"


class BadLine(ValueError):
    """A line that is not one JSON object; ``args[0]`` is the dead letter's message."""


# -- Reading ----------------------------------------------------------------------------------

fast_decode = msgspec.json.Decoder().decode  # bytes → value; raises FAST_DECODE_ERRORS
FAST_DECODE_ERRORS = (msgspec.DecodeError, RecursionError)


def parse_row(line: bytes | str) -> dict | None:
    """One line (without its line break) → a row; None for a blank line; else ``BadLine``.

    >>> parse_row(b'{"a": [1, 2.5, "\\u00e9"]}')
    {'a': [1, 2.5, 'é']}
    >>> parse_row(b"[1]")
    Traceback (most recent call last):
    ...
    transforms.io.jsoncodec.BadLine: expected a JSON object, got an array
    """
    try:
        row = fast_decode(line)
    except FAST_DECODE_ERRORS:
        return parse_row_stdlib(line)
    if type(row) is not dict:
        raise BadLine(f"expected a JSON object, got {_json_kind(row)}")
    # A row deeper than MAX_DEPTH has at least 2 * MAX_DEPTH bracket bytes: most lines are
    # shorter than that, and counting brackets is cheap, so the walk runs on very few rows.
    if len(line) > 2 * MAX_DEPTH and line.count(b"[" if type(line) is bytes else "[") + line.count(
            b"{" if type(line) is bytes else "{") > MAX_DEPTH and too_deep(row):
        raise BadLine(_TOO_DEEP)
    return row


def parse_row_stdlib(line: bytes | str) -> dict | None:
    """``parse_row`` by the standard library alone: the reference semantics (and the slow path)."""
    if isinstance(line, (bytes, bytearray, memoryview)):
        line = bytes(line)
        if line.startswith(BOM):
            line = line[3:]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadLine(f"not valid UTF-8: {e}") from None
    else:
        text = line[1:] if line.startswith("\ufeff") else line
    if not text.strip(_JSON_SPACE):
        return None
    try:
        row = json.loads(text)
    except RecursionError:
        raise BadLine(_TOO_DEEP) from None
    except ValueError as e:  # JSONDecodeError, and integers of more than 4300 digits
        raise BadLine(f"not valid JSON: {e}") from None
    if type(row) is not dict:
        raise BadLine(f"expected a JSON object, got {_json_kind(row)}")
    if too_deep(row):
        raise BadLine(_TOO_DEEP)
    if "\\u" in text:  # an escaped lone surrogate ("\ud800") cannot cross a Beam coder: U+FFFD
        row = _no_lone_surrogates(row)
    return row


def _no_lone_surrogates(value: Any) -> Any:
    if type(value) is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value
    if type(value) is dict:
        return {_no_lone_surrogates(k): _no_lone_surrogates(v) for k, v in value.items()}
    if type(value) is list:
        return [_no_lone_surrogates(v) for v in value]
    return value


_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels of objects and arrays"


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``value`` nests dicts/lists more than ``limit`` levels (iterative: any depth)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        children = v.values() if type(v) is dict else v
        for x in children:
            if type(x) is dict or type(x) is list:
                stack.append((x, depth + 1))
    return False


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


# -- Writing ----------------------------------------------------------------------------------

_encode_fast = msgspec.json.Encoder().encode
_encode_std = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=json_default, allow_nan=False).encode
_PLAIN = frozenset({str, int, bool, type(None)})


def encode(value: Any) -> bytes:
    """A row (or any JSON-able value) → compact JSON as UTF-8 bytes, without a line break."""
    if _fast_ok(value):
        try:
            return _encode_fast(value)
        except (UnicodeEncodeError, TypeError, ValueError, OverflowError):
            pass  # a lone surrogate, an int beyond 4300 digits: the reference path decides
    return encode_stdlib(value)


def encode_text(value: Any) -> str:
    """``encode`` as text (for JSON inside CSV cells and other text outputs)."""
    return encode(value).decode("utf-8")


def encode_stdlib(value: Any) -> bytes:
    """``encode`` by the standard library alone: the reference semantics (and the slow path)."""
    try:
        text = _encode_std(value)
    except ValueError:  # "Out of range float values are not JSON compliant": NaN/Infinity → null
        text = _encode_std(finite(value))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: U+FFFD, as .NET's UTF-8 encoder writes them
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (recursively)."""
    if type(value) is float or isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _fast_ok(value: Any) -> bool:
    """True when msgspec writes ``value`` exactly as the reference does (see the module doc)."""
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                return False
            t = type(v)
            if t in _PLAIN:
                continue
            if t is float:
                if (v >= 1e16 or v <= -1e16 or -1e-4 < v < 1e-4) and v != 0.0 and v == v:
                    return False  # exponent form (NaN/inf fail no test: both write null)
                continue
            if not _fast_ok(v):
                return False
        return True
    if t is list:
        return all(_fast_ok(v) for v in value)
    if t in _PLAIN:
        return True
    if t is float:
        return not ((value >= 1e16 or value <= -1e16 or -1e-4 < value < 1e-4) and value != 0.0)
    return False

