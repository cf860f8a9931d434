"""ASA data types and the conversion rules CAST, TRY_CAST, JS UDFs and ML signatures share.

Values are plain Python: bigint → int, float → float, nvarchar(max) → str,
datetime → timezone-aware ``datetime`` (UTC), bit → bool, record → dict, array → list,
NULL → None. Types belong to values, not columns (ASA data types).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Any

from transforms.deadletter import RowError, json_default

BIGINT, FLOAT, NVARCHAR, DATETIME, BIT, RECORD, ARRAY, ANY = (
    "bigint", "float", "nvarchar(max)", "datetime", "bit", "record", "array", "any",
)
TYPES = (BIGINT, FLOAT, NVARCHAR, DATETIME, BIT, RECORD, ARRAY, ANY)

_ALIASES = {
    "bigint": BIGINT, "int": BIGINT, "integer": BIGINT, "long": BIGINT,
    "float": FLOAT, "double": FLOAT, "real": FLOAT,
    "nvarchar(max)": NVARCHAR, "nvarchar": NVARCHAR, "string": NVARCHAR,
    "datetime": DATETIME, "bit": BIT, "boolean": BIT,
    "record": RECORD, "array": ARRAY, "any": ANY,
}

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def normalize_type(name: str) -> str:
    """Canonical ASA type name for ``name`` (case and spacing insensitive); ValueError if unknown."""
    key = "".join(name.lower().split())
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(f"unknown ASA type '{name}'; expected one of: {', '.join(TYPES)}")


def type_of(value: Any) -> str:
    """The ASA type of a value (what GetType returns), ``"null"`` for None."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return BIT
    if isinstance(value, int):
        return BIGINT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return NVARCHAR
    if isinstance(value, _dt.datetime):
        return DATETIME
    if isinstance(value, dict):
        return RECORD
    if isinstance(value, (list, tuple)):
        return ARRAY
    return type(value).__name__


def _fail(value: Any, target: str, why: str = "") -> RowError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    msg = f"cannot cast {type_of(value)} value {shown} to {target}"
    return RowError("cast_error", msg + (f": {why}" if why else ""))


def parse_datetime(text: str) -> _dt.datetime:
    """ISO 8601 text → aware UTC datetime (naive values are taken as UTC, as ASA does)."""
    try:  # the common case, fast: Python 3.11 reads most ISO 8601 forms, 'Z' included
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        if value.tzinfo is None:
            return value.replace(tzinfo=_dt.timezone.utc)
        return value if value.tzinfo is _dt.timezone.utc else value.astimezone(_dt.timezone.utc)
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    # Python accepts at most 6 fractional digits; ASA writes 7 (100 ns).
    if "." in s:
        head, _, rest = s.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, tail = rest[:digits], rest[digits:]
        s = f"{head}.{frac[:6].ljust(6, '0')}{tail}" if frac else head + tail
    value = _dt.datetime.fromisoformat(s)
    if value.tzinfo is None:
        return value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc)


def to_bigint(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise _fail(value, BIGINT)
        result = int(value)  # truncates toward zero, like T-SQL
    elif isinstance(value, str):
        s = value.strip()
        try:
            result = int(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                raise _fail(value, BIGINT) from None
            if math.isnan(f) or math.isinf(f):
                raise _fail(value, BIGINT) from None
            result = int(f)
    else:
        raise _fail(value, BIGINT)
    if not INT64_MIN <= result <= INT64_MAX:
        raise _fail(value, BIGINT, "out of the 64-bit range")
    return result


def to_float(value: Any) -> float:
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise _fail(value, FLOAT) from None
        # Text must be a finite number: 'NaN', 'Infinity' and '1e999' do not convert
        # (ASA's input-validation page: TRY_CAST('NaN' AS float) is NULL).
        if math.isnan(result) or math.isinf(result):
            raise _fail(value, FLOAT, "not a finite number")
        return result
    raise _fail(value, FLOAT)


def to_nvarchar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() or abs(value) >= 1e16 else str(int(value))
    if isinstance(value, _dt.datetime):
        return json_default(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=json_default, separators=(",", ":"))
    raise _fail(value, NVARCHAR)


def to_datetime(value: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)
    if isinstance(value, str):
        try:
            return parse_datetime(value)
        except ValueError:
            raise _fail(value, DATETIME, "expected ISO 8601") from None
    raise _fail(value, DATETIME)


def to_bit(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        s = value.strip().lower()
        if s in ("1", "true"):
            return True
        if s in ("0", "false"):
            return False
    raise _fail(value, BIT)


def to_record(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    raise _fail(value, RECORD)


def to_array(value: Any) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    raise _fail(value, ARRAY)


CONVERTERS = {
    BIGINT: to_bigint, FLOAT: to_float, NVARCHAR: to_nvarchar, DATETIME: to_datetime,
    BIT: to_bit, RECORD: to_record, ARRAY: to_array,
}


def cast(value: Any, target: str) -> Any:
    """CAST semantics: NULL stays NULL; a value that does not convert raises RowError(cast_error)."""
    if value is None or target == ANY:
        return value
    return CONVERTERS[target](value)


def try_cast(value: Any, target: str) -> Any:
    """TRY_CAST semantics: NULL when the value does not convert."""
    try:
        return cast(value, target)
    except RowError:
        return None


def implicit(value: Any, target: str) -> Any:
    """Implicit conversion (no precision loss): bigint ↔ exact float, numbers/bits ↔ text.

    Used where a declared type (a JS UDF output type, an ML signature) meets a value.
    Raises RowError(cast_error) when the value cannot be converted without loss.
    """
    if value is None or target == ANY:
        return value
    if target == BIGINT and isinstance(value, float) and not value.is_integer():
        raise _fail(value, BIGINT, "it has a fractional part")
    return CONVERTERS[target](value)
