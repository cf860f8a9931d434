"""ASA built-in scalar functions, as a table the query compiler binds calls through.

Every function receives already-evaluated ASA values (see ``transforms.types``) and returns
an ASA value. A bad argument raises ``RowError("function_error", "<FUNC>: ...")``, which
dead-letters that row only. Unless a ``Builtin`` says otherwise (``null_in_null_out=False``),
the compiler returns NULL when any argument is NULL without calling the function.

CAST, TRY_CAST, COALESCE, NULLIF and CASE are compiled as expressions, not looked up here.
Aggregates, analytic functions (LAG, ISFIRST, LAST), windows and the CROSS APPLY table
functions (GetArrayElements, GetRecordProperties) are not scalar and live elsewhere.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import decimal
import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transforms import types
from transforms.deadletter import RowError


@dataclass(frozen=True)
class Builtin:
    """One scalar function: its canonical name, implementation and arity."""

    name: str  # canonical spelling, e.g. "DATEADD"
    fn: Callable[..., Any]  # receives evaluated ASA values, returns an ASA value
    min_args: int
    max_args: int | None  # None = variadic
    null_in_null_out: bool = True  # compiler returns NULL for any NULL argument without calling fn
    datepart_first: bool = False  # first argument is a datepart keyword, passed as a lowercase str


# Longest string REPLICATE/SPACE will build; a runaway count should fail one row, not the worker.
MAX_STRING_LENGTH = 100_000_000


# --------------------------------------------------------------------------- argument helpers


def _error(fn: str, message: str) -> RowError:
    return RowError("function_error", f"{fn}: {message}")


def _describe(value: Any) -> str:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{types.type_of(value)} value {shown}"


def _str(fn: str, value: Any, what: str = "argument") -> str:
    if isinstance(value, str):
        return value
    raise _error(fn, f"{what} must be nvarchar(max), got {_describe(value)}")


def _int(fn: str, value: Any, what: str = "argument") -> int:
    """A bigint argument; floats are truncated toward zero, as ASA does for DATEADD's number."""
    if isinstance(value, int):  # bool included: bit converts to 0/1
        return int(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise _error(fn, f"{what} must be a finite number, got {value!r}")
        return int(value)
    raise _error(fn, f"{what} must be bigint, got {_describe(value)}")


def _num(fn: str, value: Any) -> int | float:
    """A bigint or float argument (bit counts as bigint 0/1)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    raise _error(fn, f"argument must be bigint or float, got {_describe(value)}")


def _float(fn: str, value: Any) -> float:
    return float(_num(fn, value))


def _check_bigint(fn: str, value: int) -> int:
    if not types.INT64_MIN <= value <= types.INT64_MAX:
        raise _error(fn, "bigint result out of the 64-bit range")
    return value


def _finite(fn: str, value: float) -> float:
    # T-SQL raises an arithmetic error rather than producing NaN/Infinity, which JSON cannot carry.
    if math.isnan(value) or math.isinf(value):
        raise _error(fn, "invalid floating point operation (result is not a finite number)")
    return value


def _datetime(fn: str, value: Any) -> _dt.datetime:
    """A UTC datetime argument; ISO 8601 strings convert implicitly, as in ASA."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc)
    if isinstance(value, str):
        try:
            return types.parse_datetime(value)
        except ValueError:
            raise _error(fn, f"cannot convert {value!r} to datetime (expected ISO 8601)") from None
    raise _error(fn, f"argument must be datetime, got {_describe(value)}")


def _text(fn: str, value: Any) -> str:
    """CONCAT's implicit conversion of a scalar to text."""
    if isinstance(value, (dict, list, tuple)):
        raise _error(fn, f"cannot concatenate {_describe(value)}")
    try:
        return types.to_nvarchar(value)
    except RowError:
        raise _error(fn, f"cannot convert {_describe(value)} to nvarchar(max)") from None


# --------------------------------------------------------------------------- string functions
# Positions are 1-based, comparisons ordinal (case-sensitive) except REGEXMATCH, which the
# docs define as case-insensitive.

# .NET Char.IsWhiteSpace, which ASA's TRIM/LTRIM/RTRIM use (not just T-SQL's char(32)).
# Python's str.strip() would also strip U+001C..U+001F, so the set is spelled out.
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x85\u2028\u2029"
    " \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u202f\u205f\u3000"
)


def charindex(find: Any, search: Any, start: Any = 1) -> int:
    needle, haystack = _str("CHARINDEX", find), _str("CHARINDEX", search)
    begin = _int("CHARINDEX", start, "start_location")
    if not needle:
        return 0  # T-SQL: an empty expressionToFind is never found
    begin = max(begin, 1)  # 0 or negative: search from the start
    return haystack.find(needle, begin - 1) + 1


def concat(*values: Any) -> str:
    # NULL is an empty string; all-NULL gives '' (ASA docs).
    return "".join(_text("CONCAT", v) for v in values if v is not None)


def concat_ws(separator: Any, *values: Any) -> str:
    # NULL values are skipped together with their separator; a NULL separator acts as ''.
    sep = "" if separator is None else _text("CONCAT_WS", separator)
    return sep.join(_text("CONCAT_WS", v) for v in values if v is not None)


def left(value: Any, length: Any) -> str:
    s, n = _str("LEFT", value), _int("LEFT", length, "length")
    if n < 0:
        raise _error("LEFT", f"length must not be negative, got {n}")
    return s[:n]


def right(value: Any, length: Any) -> str:
    s, n = _str("RIGHT", value), _int("RIGHT", length, "length")
    if n < 0:
        raise _error("RIGHT", f"length must not be negative, got {n}")
    return s[len(s) - n:] if n < len(s) else s


def len_(value: Any) -> int:
    # "excluding trailing blanks": trailing spaces only, as in T-SQL.
    return len(_str("LEN", value).rstrip(" "))


def lower(value: Any) -> str:
    return _str("LOWER", value).lower()


def upper(value: Any) -> str:
    return _str("UPPER", value).upper()


def ltrim(value: Any) -> str:
    return _str("LTRIM", value).lstrip(_WHITESPACE)


def rtrim(value: Any) -> str:
    return _str("RTRIM", value).rstrip(_WHITESPACE)


def trim(value: Any) -> str:
    return _str("TRIM", value).strip(_WHITESPACE)


def nchar(code: Any) -> str | None:
    n = _int("NCHAR", code)
    # Outside 0..0x10FFFF → NULL (docs). Lone surrogates cannot be written as UTF-8, so NULL too.
    if not 0 <= n <= 0x10FFFF or 0xD800 <= n <= 0xDFFF:
        return None
    return chr(n)


def unicode(value: Any) -> int | None:
    s = _str("UNICODE", value)
    return ord(s[0]) if s else None


@functools.lru_cache(maxsize=256)
def _like_regex(pattern: str) -> re.Pattern[str]:
    """SQL LIKE pattern (%, _, [abc], [a-z], [^a]) → regex with the match start as group 1's end."""
    body = pattern.lstrip("%")
    lead = ".*?" if len(body) != len(pattern) else ""
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        elif c == "[" and body.find("]", i + 2) > 0:
            # A class needs at least one character: "[]" and an unclosed "[" are literal.
            close = body.find("]", i + 2)
            inner = body[i + 1:close]
            negate = inner.startswith("^") and len(inner) > 1
            if negate:
                inner = inner[1:]
            # Keep ranges (a-z); escape what is special inside a regex class.
            escaped = "".join("\\" + ch if ch in "\\[]^" else ch for ch in inner)
            out.append(("[^" if negate else "[") + escaped + "]")
            i = close + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile(f"({lead})(?:{''.join(out)})", re.DOTALL)


def patindex(pattern: Any, value: Any) -> int:
    p, s = _str("PATINDEX", pattern, "pattern"), _str("PATINDEX", value)
    if p and not p.strip("%"):
        return 1 if s else 0  # only wildcards: matches at the first character
    # LIKE semantics: the pattern must cover the whole string, so leading % finds the position.
    m = _like_regex(p).fullmatch(s)
    return m.end(1) + 1 if m else 0


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except (re.error, OverflowError, RecursionError):
        return None


def regexmatch(value: Any, pattern: Any) -> int:
    s, p = _str("REGEXMATCH", value), _str("REGEXMATCH", pattern, "pattern")
    compiled = _regex(p)
    if compiled is None:
        return 0  # an invalid pattern returns 0 (docs)
    m = compiled.search(s)
    return m.start() + 1 if m else 0


def replace(value: Any, pattern: Any, replacement: Any) -> str:
    s = _str("REPLACE", value)
    old = _str("REPLACE", pattern, "stringPattern")
    new = _str("REPLACE", replacement, "stringReplacement")
    return s.replace(old, new) if old else s


def _repeat(fn: str, unit: str, count: int) -> str | None:
    if count < 0:
        return None  # docs: a negative count gives NULL
    if len(unit) * count > MAX_STRING_LENGTH:
        raise _error(fn, f"result would exceed {MAX_STRING_LENGTH} characters")
    return unit * count


def replicate(value: Any, count: Any) -> str | None:
    return _repeat("REPLICATE", _str("REPLICATE", value), _int("REPLICATE", count, "count"))


def space(count: Any) -> str | None:
    return _repeat("SPACE", " ", _int("SPACE", count, "count"))


def reverse(value: Any) -> str:
    return _str("REVERSE", value)[::-1]


def stuff(value: Any, start: Any, length: Any, inserted: Any) -> str:
    s = _str("STUFF", value)
    begin, n = _int("STUFF", start, "start"), _int("STUFF", length, "length")
    ins = _str("STUFF", inserted, "inserted_expression")
    if n < 0:
        raise _error("STUFF", f"length must not be negative, got {n}")
    if begin > len(s):
        return ""  # docs: a start beyond the string gives a zero-length result
    begin = max(begin, 1)  # docs: a start below 1 begins at the first character
    return s[:begin - 1] + ins + s[begin - 1 + n:]


def substring(value: Any, start: Any, length: Any) -> str:
    s = _str("SUBSTRING", value)
    begin, n = _int("SUBSTRING", start, "start"), _int("SUBSTRING", length, "length")
    if n < 0:
        raise _error("SUBSTRING", f"length must not be negative, got {n}")
    # T-SQL: characters from position `start` up to `start + length - 1`, clipped to the string.
    end = begin - 1 + n
    return s[max(begin, 1) - 1:max(end, 0)]


def translate(value: Any, characters: Any, translations: Any) -> str:
    s = _str("TRANSLATE", value)
    src = _str("TRANSLATE", characters, "characters")
    dst = _str("TRANSLATE", translations, "translations")
    if len(src) != len(dst):
        raise _error("TRANSLATE", "characters and translations must have the same length")
    table: dict[int, str] = {}
    for a, b in zip(src, dst, strict=True):
        table.setdefault(ord(a), b)  # the first mapping of a repeated character wins
    return s.translate(table)


# --------------------------------------------------------------------------- math functions
# Result types follow the docs: ABS, CEILING, FLOOR, SIGN, ROUND and POWER keep the input type
# (bigint stays bigint); EXP, SQRT and SQUARE return float.


def abs_(value: Any) -> int | float:
    x = _num("ABS", value)
    return _check_bigint("ABS", abs(x)) if isinstance(x, int) else abs(x)


def ceiling(value: Any) -> int | float:
    x = _num("CEILING", value)
    if isinstance(x, int) or math.isnan(x) or math.isinf(x):
        return x
    return float(math.ceil(x))


def floor(value: Any) -> int | float:
    x = _num("FLOOR", value)
    if isinstance(x, int) or math.isnan(x) or math.isinf(x):
        return x
    return float(math.floor(x))


def exp(value: Any) -> float:
    try:
        return math.exp(_float("EXP", value))
    except OverflowError:
        raise _error("EXP", "result out of the float range") from None


def power(base: Any, exponent: Any) -> int | float:
    b, e = _num("POWER", base), _num("POWER", exponent)
    if isinstance(b, int) and isinstance(e, int) and e >= 0:
        if abs(b) > 1 and e > 64:  # |b|**e cannot fit in 64 bits; fail before building it
            raise _error("POWER", "bigint result out of the 64-bit range")
        return _check_bigint("POWER", b**e)
    try:
        result = math.pow(float(b), float(e))
    except (OverflowError, ValueError, ZeroDivisionError):
        raise _error("POWER", f"invalid floating point operation POWER({b!r}, {e!r})") from None
    if isinstance(b, int):  # a bigint base gives a bigint result (docs), truncated like T-SQL
        return _check_bigint("POWER", int(_finite("POWER", result)))
    return result


_DEC_CONTEXT = decimal.Context(prec=1000)


def round_(value: Any, length: Any, function: Any = 0) -> int | float:
    """T-SQL ROUND: half away from zero at 10**-length; a non-zero ``function`` truncates."""
    x, n = _num("ROUND", value), _int("ROUND", length, "length")
    truncate = _int("ROUND", function, "function") != 0
    mode = decimal.ROUND_DOWN if truncate else decimal.ROUND_HALF_UP
    if isinstance(x, int):
        if n >= 0:
            return x
        if n < -19:  # beyond any bigint's digits
            return 0
        step = 10**-n
        q, r = divmod(abs(x), step)
        if not truncate and 2 * r >= step:
            q += 1
        return _check_bigint("ROUND", (q * step) * (1 if x >= 0 else -1))
    if math.isnan(x) or math.isinf(x):
        return x
    if n > 400:  # more decimals than any float's exact expansion has
        return x
    if n < -400:
        return 0.0
    # Round the shortest decimal form (repr), so ROUND(123.9995, 3) is 124.0 as documented,
    # not 123.999 from the binary value just below 123.9995.
    d = decimal.Decimal(repr(x))
    rounded = d.quantize(decimal.Decimal(1).scaleb(-n), rounding=mode, context=_DEC_CONTEXT)
    return _finite("ROUND", float(rounded)) + 0.0  # + 0.0 turns -0.0 into 0.0


def sign(value: Any) -> int | float:
    x = _num("SIGN", value)
    if isinstance(x, int):
        return (x > 0) - (x < 0)
    if math.isnan(x):
        return x
    return float((x > 0) - (x < 0))


def sqrt(value: Any) -> float:
    x = _float("SQRT", value)
    if x < 0:
        raise _error("SQRT", f"argument must be non-negative, got {x!r}")
    return math.sqrt(x)


def square(value: Any) -> float:
    x = _float("SQUARE", value)
    result = x * x
    if math.isinf(result) and not math.isinf(x):
        raise _error("SQUARE", "result out of the float range")
    return result


# --------------------------------------------------------------------------- date and time
# All datetimes are UTC. Weeks start on Sunday and weekday numbers Sunday=1 (T-SQL defaults).

_DATEPARTS: dict[str, str] = {}
for _canonical, _aliases in {
    "year": ("yy", "yyyy"),
    "quarter": ("qq", "q"),
    "month": ("mm", "m"),
    "dayofyear": ("dy", "y"),
    "day": ("dd", "d"),
    "week": ("wk", "ww"),
    "weekday": ("dw", "w"),
    "hour": ("hh",),
    "minute": ("mi", "n"),
    "second": ("ss", "s"),
    "millisecond": ("ms",),
    "microsecond": ("mcs",),
}.items():
    _DATEPARTS[_canonical] = _canonical
    for _alias in _aliases:
        _DATEPARTS[_alias] = _canonical

DATEPARTS: tuple[str, ...] = tuple(dict.fromkeys(_DATEPARTS.values()))

# Fixed-length parts, in microseconds (Python datetimes carry microseconds, ASA 100 ns).
_UNIT_US = {
    "week": 7 * 86_400_000_000,
    "day": 86_400_000_000,
    "dayofyear": 86_400_000_000,
    "weekday": 86_400_000_000,
    "hour": 3_600_000_000,
    "minute": 60_000_000,
    "second": 1_000_000,
    "millisecond": 1_000,
    "microsecond": 1,
}
_MONTHS = {"year": 12, "quarter": 3, "month": 1}
_EPOCH = _dt.datetime(1, 1, 1, tzinfo=_dt.timezone.utc)


def normalize_datepart(text: str) -> str:
    """Canonical datepart name for a datepart or its abbreviation; ValueError if unknown."""
    key = text.strip().lower()
    if key in _DATEPARTS:
        return _DATEPARTS[key]
    raise ValueError(f"unknown datepart '{text}'; expected one of: {', '.join(DATEPARTS)}")


def _part(fn: str, text: Any) -> str:
    if not isinstance(text, str):
        raise _error(fn, f"datepart must be a keyword, got {_describe(text)}")
    try:
        return normalize_datepart(text)
    except ValueError as e:
        raise _error(fn, str(e)) from None


def _add_months(d: _dt.datetime, months: int) -> _dt.datetime:
    total = d.year * 12 + (d.month - 1) + months
    year, month = divmod(total, 12)
    if not 1 <= year <= 9999:
        raise OverflowError
    # T-SQL: the day is clamped to the last day of the target month (Jan 31 + 1 month = Feb 28/29).
    day = min(d.day, calendar.monthrange(year, month + 1)[1])
    return d.replace(year=year, month=month + 1, day=day)


def dateadd(part: Any, number: Any, date: Any) -> _dt.datetime:
    p = _part("DATEADD", part)
    n = _int("DATEADD", number, "number")  # a fraction is truncated, not rounded (docs)
    d = _datetime("DATEADD", date)
    try:
        if p in _MONTHS:
            return _add_months(d, n * _MONTHS[p])
        return d + _dt.timedelta(microseconds=n * _UNIT_US[p])
    except OverflowError:
        raise _error("DATEADD", f"adding {n} {p} to {d.isoformat()} leaves the datetime range") from None


def _ticks(d: _dt.datetime) -> int:
    delta = d - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def datediff(part: Any, start: Any, end: Any) -> int:
    """Number of ``part`` boundaries crossed from start to end (T-SQL), negative if end < start."""
    p = _part("DATEDIFF", part)
    a, b = _datetime("DATEDIFF", start), _datetime("DATEDIFF", end)
    if p in _MONTHS:
        months = _MONTHS[p]
        return ((b.year * 12 + b.month - 1) // months) - ((a.year * 12 + a.month - 1) // months)
    if p == "week":
        # Week boundaries are Sundays: date ordinals count from Monday 0001-01-01 = 1,
        # so ordinal // 7 steps up on every Sunday.
        return b.date().toordinal() // 7 - a.date().toordinal() // 7
    unit = _UNIT_US[p]
    return _ticks(b) // unit - _ticks(a) // unit


def _week_of_year(d: _dt.datetime) -> int:
    # T-SQL week: January 1 is in week 1 and each Sunday starts a new week.
    jan1_weekday = _dt.date(d.year, 1, 1).isoweekday() % 7  # Sunday = 0
    return (d.timetuple().tm_yday - 1 + jan1_weekday) // 7 + 1


def _datepart(p: str, d: _dt.datetime) -> int:
    if p == "year":
        return d.year
    if p == "quarter":
        return (d.month - 1) // 3 + 1
    if p == "month":
        return d.month
    if p == "dayofyear":
        return d.timetuple().tm_yday
    if p == "day":
        return d.day
    if p == "week":
        return _week_of_year(d)
    if p == "weekday":
        return d.isoweekday() % 7 + 1  # Sunday = 1 ... Saturday = 7
    if p == "hour":
        return d.hour
    if p == "minute":
        return d.minute
    if p == "second":
        return d.second
    if p == "millisecond":
        return d.microsecond // 1000
    return d.microsecond  # microsecond: the fraction of the second, in microseconds


def datepart(part: Any, date: Any) -> int:
    return _datepart(_part("DATEPART", part), _datetime("DATEPART", date))


def datename(part: Any, date: Any) -> str:
    p = _part("DATENAME", part)
    d = _datetime("DATENAME", date)
    # T-SQL names months and weekdays (us_english); every other part is its number as text.
    if p == "month":
        return calendar.month_name[d.month]
    if p == "weekday":
        return calendar.day_name[d.weekday()]
    return str(_datepart(p, d))


def day(date: Any) -> int:
    return _datetime("DAY", date).day


def month(date: Any) -> int:
    return _datetime("MONTH", date).month


def year(date: Any) -> int:
    return _datetime("YEAR", date).year


def datetimefromparts(
    year_: Any, month_: Any, day_: Any, hour: Any, minute: Any, seconds: Any, milliseconds: Any
) -> _dt.datetime:
    fn = "DATETIMEFROMPARTS"
    parts = [_int(fn, v) for v in (year_, month_, day_, hour, minute, seconds, milliseconds)]
    y, mo, d, h, mi, s, ms = parts
    if not 0 <= ms <= 999:
        raise _error(fn, f"milliseconds must be 0..999, got {ms}")
    try:
        return _dt.datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=_dt.timezone.utc)
    except (ValueError, OverflowError) as e:
        raise _error(fn, f"invalid date/time {parts}: {e}") from None


# --------------------------------------------------------------------------- arrays, records, types


def getarrayelement(array: Any, index: Any) -> Any:
    if not isinstance(array, (list, tuple)):
        raise _error("GetArrayElement", f"first argument must be an array, got {_describe(array)}")
    i = _int("GetArrayElement", index, "index")
    # Out of range (or negative) → NULL, like a missing record property.
    return array[i] if 0 <= i < len(array) else None


def getarraylength(array: Any) -> int:
    if not isinstance(array, (list, tuple)):
        raise _error("GetArrayLength", f"argument must be an array, got {_describe(array)}")
    return len(array)


def _split_path(path: str) -> list[str] | None:
    """'a.b.[c.d]' → ['a', 'b', 'c.d']; ``[...]`` quotes a name (``]]`` is a literal ``]``)."""
    segments: list[str] = []
    i, n = 0, len(path)
    while True:
        if i < n and path[i] == "[":
            name: list[str] = []
            i += 1
            while True:
                if i >= n:
                    return None  # unclosed bracket
                if path[i] == "]":
                    if i + 1 < n and path[i + 1] == "]":
                        name.append("]")
                        i += 2
                        continue
                    i += 1
                    break
                name.append(path[i])
                i += 1
            segments.append("".join(name))
        else:
            j = path.find(".", i)
            j = n if j < 0 else j
            segments.append(path[i:j])
            i = j
        if i >= n:
            return segments
        if path[i] != ".":
            return None  # e.g. text after a closing bracket
        i += 1


def _lookup(record: dict, key: str) -> tuple[bool, Any]:
    if key in record:
        return True, record[key]
    # ASA field names are case-insensitive (it rejects events whose names differ only in case).
    folded = key.casefold()
    for k, v in record.items():
        if isinstance(k, str) and k.casefold() == folded:
            return True, v
    return False, None


def getrecordpropertyvalue(record: Any, path: Any) -> Any:
    fn = "GetRecordPropertyValue"
    if not isinstance(record, dict):
        raise _error(fn, f"first argument must be a record, got {_describe(record)}")
    name = _str(fn, path, "property name")
    found, value = _lookup(record, name)  # a name that itself contains dots or brackets
    if found:
        return value
    segments = _split_path(name)
    if segments is None:
        return None
    current: Any = record
    for segment in segments:
        if not isinstance(current, dict):
            return None
        found, current = _lookup(current, segment)
        if not found:
            return None
    return current


def gettype(value: Any) -> str:
    return types.type_of(value)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def json_parse(text: Any) -> dict | None:
    # Non-throwing by definition (docs): anything that is not a JSON object string gives NULL.
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


# --------------------------------------------------------------------------- the table

_TABLE: tuple[Builtin, ...] = (
    # string
    Builtin("CHARINDEX", charindex, 2, 3),
    Builtin("CONCAT", concat, 2, None, null_in_null_out=False),
    Builtin("CONCAT_WS", concat_ws, 3, None, null_in_null_out=False),
    Builtin("LEFT", left, 2, 2),
    Builtin("LEN", len_, 1, 1),
    Builtin("LOWER", lower, 1, 1),
    Builtin("LTRIM", ltrim, 1, 1),
    Builtin("NCHAR", nchar, 1, 1),
    Builtin("PATINDEX", patindex, 2, 2),
    Builtin("REGEXMATCH", regexmatch, 2, 2),
    Builtin("REPLACE", replace, 3, 3),
    Builtin("REPLICATE", replicate, 2, 2),
    Builtin("REVERSE", reverse, 1, 1),
    Builtin("RIGHT", right, 2, 2),
    Builtin("RTRIM", rtrim, 1, 1),
    Builtin("SPACE", space, 1, 1),
    Builtin("STUFF", stuff, 4, 4),
    Builtin("SUBSTRING", substring, 3, 3),
    Builtin("TRANSLATE", translate, 3, 3),
    Builtin("TRIM", trim, 1, 1),
    Builtin("UNICODE", unicode, 1, 1),
    Builtin("UPPER", upper, 1, 1),
    # math
    Builtin("ABS", abs_, 1, 1),
    Builtin("CEILING", ceiling, 1, 1),
    Builtin("EXP", exp, 1, 1),
    Builtin("FLOOR", floor, 1, 1),
    Builtin("POWER", power, 2, 2),
    Builtin("ROUND", round_, 2, 3),
    Builtin("SIGN", sign, 1, 1),
    Builtin("SQRT", sqrt, 1, 1),
    Builtin("SQUARE", square, 1, 1),
    # date and time
    Builtin("DATEADD", dateadd, 3, 3, datepart_first=True),
    Builtin("DATEDIFF", datediff, 3, 3, datepart_first=True),
    Builtin("DATEPART", datepart, 2, 2, datepart_first=True),
    Builtin("DATENAME", datename, 2, 2, datepart_first=True),
    Builtin("DAY", day, 1, 1),
    Builtin("MONTH", month, 1, 1),
    Builtin("YEAR", year, 1, 1),
    Builtin("DATETIMEFROMPARTS", datetimefromparts, 7, 7),
    # arrays, records, types
    Builtin("GetArrayElement", getarrayelement, 2, 2),
    Builtin("GetArrayLength", getarraylength, 1, 1),
    Builtin("GetRecordPropertyValue", getrecordpropertyvalue, 2, 2),
    Builtin("GetType", gettype, 1, 1, null_in_null_out=False),
    Builtin("JSON_PARSE", json_parse, 1, 1),
)

SCALAR_FUNCTIONS: dict[str, Builtin] = {b.name.lower(): b for b in _TABLE}

# ASA functions that exist but asa-beam does not implement (yet): the compiler reports these
# as "not supported" instead of "unknown function".
_GEOSPATIAL = "geospatial functions are not implemented in asa-beam"
_ANOMALY = "anomaly detection (a trained model over a sliding history) is not implemented in asa-beam"
UNIMPLEMENTED: dict[str, str] = {
    "createpoint": _GEOSPATIAL,
    "createlinestring": _GEOSPATIAL,
    "createpolygon": _GEOSPATIAL,
    "st_distance": _GEOSPATIAL,
    "st_intersects": _GEOSPATIAL,
    "st_overlaps": _GEOSPATIAL,
    "st_within": _GEOSPATIAL,
    "anomalydetection_spikeanddip": _ANOMALY,
    "anomalydetection_changepoint": _ANOMALY,
    "getmetadatapropertyvalue": "input metadata (EventEnqueuedUtcTime, PartitionId, ...) is not exposed "
    "to queries by asa-beam",
}
