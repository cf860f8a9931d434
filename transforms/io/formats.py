"""File formats, and the value conversions readers and writers share.

ASA has no bytes type: binary values read from Avro (``bytes``/``fixed``) or Parquet (``binary``)
become text — the UTF-8 decoding when the bytes are valid UTF-8 (the common case: Event Hubs
Capture stores each event's JSON body as Avro ``bytes``), else their standard base64 encoding.
"""

from __future__ import annotations

import base64
import datetime as _dt
import posixpath
from typing import Any

from transforms.deadletter import format_datetime, json_default
from transforms.types import to_nvarchar

FORMATS = ("json", "csv", "avro", "parquet")

# File name extension → format; ``.gz`` is stripped before the lookup.
_EXTENSIONS = {
    ".json": "json", ".jsonl": "json", ".ndjson": "json",
    ".csv": "csv", ".avro": "avro", ".parquet": "parquet",
}
# Extension of the files each format writes.
SUFFIXES = {"json": ".json", "csv": ".csv", "avro": ".avro", "parquet": ".parquet"}

UTC = _dt.timezone.utc


def format_from_path(path: str) -> str:
    """The format of ``path`` (a file or a glob) from its extension, ignoring a trailing ``.gz``.

    A glob's trailing ``*`` is ignored too, so ``in/*.csv*`` (plain and gzipped files) is csv.

    >>> format_from_path("in/events-*.jsonl.gz")
    'json'
    """
    # rstrip("*"): "*.csv*" is a natural glob for "a.csv" and "b.csv.gz".
    name = posixpath.basename(path.replace("\\", "/")).lower().rstrip("*")
    if name.endswith(".gz"):
        name = name[:-3]
    ext = posixpath.splitext(name)[1]
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    known = ", ".join(sorted(_EXTENSIONS)) + " (optionally followed by .gz)"
    raise ValueError(
        f"cannot tell the format of '{path}' from its extension; expected one of {known}, "
        f"or give the format explicitly ({', '.join(FORMATS)})"
    )


def check_format(fmt: str) -> str:
    """``fmt`` normalised to one of FORMATS; ValueError if it is not one."""
    key = fmt.strip().lower()
    if key in ("jsonl", "ndjson", "jsonlines"):
        key = "json"
    if key not in FORMATS:
        raise ValueError(f"unknown file format '{fmt}'; expected one of: {', '.join(FORMATS)}")
    return key


def bytes_to_text(value: bytes) -> str:
    """Binary → text: UTF-8 when it decodes, base64 otherwise (see the module docstring)."""
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii")


def to_text(value: Any) -> str:
    """A non-NULL value as text, as ``CAST(value AS nvarchar(max))`` renders it.

    Records and arrays become compact JSON, datetimes ISO 8601 UTC with ``Z``.
    """
    if type(value) is str:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes_to_text(value)
    if isinstance(value, _dt.datetime):
        return format_datetime(value)
    if isinstance(value, (dict, list, tuple)):
        from transforms.io.jsoncodec import encode_text  # NaN/±Infinity inside → null: valid JSON

        return encode_text(value)
    try:
        return to_nvarchar(value)
    except Exception:  # a type ASA does not know (Decimal, date, ...): its JSON or str form
        try:
            return str(json_default(value))
        except TypeError:
            return str(value)
