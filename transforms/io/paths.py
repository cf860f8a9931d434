"""Paths: local files and Azure blobs alike, and ASA's blob path patterns.

Every path asa-beam reads or writes goes through Beam's ``FileSystems``, so a local path and
an Azure blob (``azfs://account/container/path``, Beam's Azure Blob Storage filesystem) take
one code path: globs, ``.gz``, file metadata (size, last-modified time) and streaming watches
work the same on both. ``normalize_path`` also accepts the other names Azure users write for a
blob — ADLS Gen2 ``abfs[s]://container@account.dfs.core.windows.net/path`` and
``https://account.blob.core.windows.net/container/path`` — and maps them to ``azfs://`` (the
Blob endpoint serves ADLS Gen2 accounts too).

ASA's path patterns (https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-define-inputs,
https://learn.microsoft.com/en-us/azure/stream-analytics/blob-storage-azure-data-lake-gen2-output,
https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-custom-path-patterns-blob-storage-output):

* input: ``{date}``, ``{time}`` (in ``date_format`` / ``time_format``) and ``{partition}``
  select the blobs whose names hold a date, an hour, a partition there — ``input_glob``;
* output: ``{date}``, ``{time}``, ``{datetime:<specifier>}`` and one ``{field}`` name the
  folder each row is written to, from the row's ``System.Timestamp()`` (UTC) and the field's
  value — ``OutputPattern``.
"""

from __future__ import annotations

import datetime as _dt
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from transforms.io.formats import UTC, to_text

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ABFS = re.compile(r"^abfss?://([^@/]+)@([a-z0-9]{3,24})\.dfs\.core\.windows\.net(?:/(.*))?$")
_HTTPS_BLOB = re.compile(r"^https://([a-z0-9]{3,24})\.(?:blob|dfs)\.core\.windows\.net/([^/]+)(?:/(.*))?$")

DEFAULT_DATE_FORMAT = "YYYY/MM/DD"  # ASA's default (the portal's first choice; ARM writes "yyyy/MM/dd")
DEFAULT_TIME_FORMAT = "HH"


def is_url(path: str) -> bool:
    """Whether ``path`` names a filesystem by scheme (``azfs://``, ``gs://``, ...) rather than a local file."""
    return bool(_SCHEME.match(path))


def is_blob(path: str) -> bool:
    return path.startswith("azfs://")


def normalize_path(path: str) -> str:
    """``path`` with Azure's other blob URL forms rewritten to Beam's ``azfs://account/container/path``.

    >>> normalize_path("abfss://events@myaccount.dfs.core.windows.net/logs/*.json")
    'azfs://myaccount/events/logs/*.json'
    >>> normalize_path("https://myaccount.blob.core.windows.net/events/logs/a.json")
    'azfs://myaccount/events/logs/a.json'
    >>> normalize_path("data/a.json")
    'data/a.json'
    """
    m = _ABFS.match(path)
    if m:
        return f"azfs://{m.group(2)}/{m.group(1)}/{m.group(3) or ''}"
    m = _HTTPS_BLOB.match(path)
    if m:
        return f"azfs://{m.group(1)}/{m.group(2)}/{m.group(3) or ''}"
    return path


def dirname(path: str) -> str:
    """The folder of ``path`` (a URL keeps its scheme and ``//``)."""
    if is_url(path):
        head, _, _ = path.rstrip("/").rpartition("/")
        return head
    return posixpath.dirname(path) if "/" in path else "."


def blob_folder(prefix: str) -> str:
    """The glob listing the folder an output prefix writes to (above any path pattern token).

    >>> blob_folder("azfs://acct/c1/out/{date}/scored")
    'azfs://acct/c1/out/*'
    """
    head = prefix.split("{", 1)[0]
    folder = head.rstrip("/") if head.endswith("/") else dirname(head)
    return folder + "/*"


def join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name if is_url(folder) else posixpath.join(folder, name)


# -- ASA's date and time formats ---------------------------------------------------------------

# ASA's portal offers YYYY/MM/DD, MM/DD/YYYY, DD/MM/YYYY, YYYY-MM-DD, MM-DD-YYYY, DD-MM-YYYY
# (ARM templates write them .NET-style: yyyy/MM/dd); time: HH.
_DATE_TOKENS = {"YYYY": ("%Y", "[0-9]" * 4), "MM": ("%m", "[0-9]" * 2), "DD": ("%d", "[0-9]" * 2)}
_TIME_TOKENS = {"HH": ("%H", "[0-9]" * 2), "MM": ("%M", "[0-9]" * 2)}
_SEPARATORS = "/-_."


def _parse_format(fmt: str, tokens: dict[str, tuple[str, str]], what: str) -> list[tuple[str, str]]:
    """``fmt`` → [(strftime piece, glob piece)]; tokens are case-insensitive, separators kept."""
    out = []
    rest = str(fmt).strip()
    if not rest:
        raise ValueError(f"{what} is empty")
    while rest:
        for token, pieces in tokens.items():
            if rest[: len(token)].upper() == token:
                out.append(pieces)
                rest = rest[len(token):]
                break
        else:
            if rest[0] in _SEPARATORS:
                out.append((rest[0], rest[0]))
                rest = rest[1:]
            else:
                names = ", ".join(tokens)
                raise ValueError(f"{what} '{fmt}': unexpected '{rest}'; use {names} with {_SEPARATORS} between")
    return out


def date_format(fmt: str | None) -> tuple[str, str]:
    """An ASA date format (``YYYY/MM/DD``, ``yyyy-MM-dd``, ``DD-MM-YYYY``, ...) → (strftime, glob).

    >>> date_format("yyyy/MM/dd")
    ('%Y/%m/%d', '[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]')
    """
    parts = _parse_format(fmt or DEFAULT_DATE_FORMAT, _DATE_TOKENS, "date_format")
    return "".join(p[0] for p in parts), "".join(p[1] for p in parts)


def time_format(fmt: str | None) -> tuple[str, str]:
    """An ASA time format (``HH``; also ``HH/mm``, ``HH-mm``) → (strftime, glob)."""
    parts = _parse_format(fmt or DEFAULT_TIME_FORMAT, _TIME_TOKENS, "time_format")
    if parts[0][0] != "%H":
        raise ValueError(f"time_format '{fmt}': must start with HH")
    return "".join(p[0] for p in parts), "".join(p[1] for p in parts)


# {datetime:<specifier>}: the specifiers ASA allows (yyyy, MM, M, dd, d, HH, H, mm, m, ss, s).
_DATETIME_SPECIFIERS = {
    "yyyy": lambda t: f"{t.year:04d}", "MM": lambda t: f"{t.month:02d}", "M": lambda t: str(t.month),
    "dd": lambda t: f"{t.day:02d}", "d": lambda t: str(t.day), "HH": lambda t: f"{t.hour:02d}",
    "H": lambda t: str(t.hour), "mm": lambda t: f"{t.minute:02d}", "m": lambda t: str(t.minute),
    "ss": lambda t: f"{t.second:02d}", "s": lambda t: str(t.second),
}
_DATETIME_GLOBS = {"yyyy": "[0-9]" * 4, "MM": "[0-9]" * 2, "dd": "[0-9]" * 2, "HH": "[0-9]" * 2,
                   "mm": "[0-9]" * 2, "ss": "[0-9]" * 2}
_TOKEN = re.compile(r"\{([^{}]*)\}")


def has_tokens(path: str) -> bool:
    """Whether ``path`` holds an ASA path-pattern token (``{date}``, ``{time}``, ``{datetime:..}``, ``{field}``)."""
    return bool(_TOKEN.search(path))


def input_glob(pattern: str, date_fmt: str | None = None, time_fmt: str | None = None) -> str:
    """An input path pattern → the glob of the blobs (or files) it selects.

    ``{date}`` and ``{time}`` match a date / an hour written in ``date_fmt`` / ``time_fmt``
    (ASA's DateFormat / TimeFormat, default ``YYYY/MM/DD`` and ``HH``), ``{datetime:<spec>}``
    the digits of that specifier, ``{partition}`` any one path segment. As in ASA, the pattern
    names folders: a pattern ending with a token reads every blob below the folders it
    names (``.../{date}/{time}`` → ``.../{date}/{time}/**``; give ``format`` then).

    >>> input_glob("azfs://acct/logs/cluster1/{date}/{time}", "YYYY-MM-DD")
    'azfs://acct/logs/cluster1/[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]/[0-9][0-9]/**'
    """
    def replace(m: re.Match) -> str:
        token = m.group(1)
        key = token.strip().lower()
        if key == "date":
            return date_format(date_fmt)[1]
        if key == "time":
            return time_format(time_fmt)[1]
        if key == "partition":
            return "*"
        if key.startswith("datetime:"):
            spec = token.split(":", 1)[1].strip()
            if spec not in _DATETIME_SPECIFIERS:
                raise ValueError(f"path pattern '{pattern}': unknown specifier {{{token}}}; "
                                 f"expected one of {', '.join(_DATETIME_SPECIFIERS)}")
            return _DATETIME_GLOBS.get(spec, "[0-9]*")
        raise ValueError(f"path pattern '{pattern}': an input pattern takes {{date}}, {{time}}, "
                         f"{{partition}} and {{datetime:<specifier>}}, not {{{token}}}")

    glob = _TOKEN.sub(replace, pattern)
    if _TOKEN.search(pattern.rsplit("/", 1)[-1]) and "*" not in glob.rsplit("/", 1)[-1]:
        glob += "/**"  # the pattern ends with a token: it names folders, whose blobs are read
    return glob


# -- output patterns ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    kind: str  # "text", "time" (a strftime or specifier function), "field"
    value: Any


class OutputPattern:
    """An output path pattern: where each row is written, from its time and fields (ASA's rules).

    ``{date}`` / ``{time}`` are the row's ``System.Timestamp()`` in ``date_fmt`` / ``time_fmt``
    (UTC: "System.Timestamp is the time used for all time based partitioning"),
    ``{datetime:<specifier>}`` one part of it, ``{name}`` the value of the row's column
    ``name`` (case-insensitive, as ASA's partition keys are). A value is written as
    ``CAST(value AS nvarchar(max))``; a ``/`` inside it makes sub-folders (as in ASA), ``.`` and
    ``..`` segments are dropped so no row can be written outside the pattern's folder; NULL
    and empty values go to the folder ``null``.

    >>> import datetime as dt
    >>> p = OutputPattern("out/{client_id}/{date}/{time}/scored", "YYYY-MM-DD")
    >>> p.resolve({"Client_Id": 6}, dt.datetime(2018, 1, 2, 10, 6, 8, tzinfo=dt.timezone.utc))
    'out/6/2018-01-02/10/scored'
    """

    def __init__(self, pattern: str, date_fmt: str | None = None, time_fmt: str | None = None):
        self.pattern = pattern
        pieces: list[_Piece] = []
        fields = []
        pos = 0
        for m in _TOKEN.finditer(pattern):
            if m.start() > pos:
                pieces.append(_Piece("text", pattern[pos:m.start()]))
            token = m.group(1).strip()
            key = token.lower()
            if key == "date":
                pieces.append(_Piece("strftime", date_format(date_fmt)[0]))
            elif key == "time":
                pieces.append(_Piece("strftime", time_format(time_fmt)[0]))
            elif key.startswith("datetime:"):
                spec = token.split(":", 1)[1].strip()
                if spec not in _DATETIME_SPECIFIERS:
                    raise ValueError(f"path pattern '{pattern}': unknown specifier {{{token}}}; "
                                     f"expected one of {', '.join(_DATETIME_SPECIFIERS)}")
                pieces.append(_Piece("specifier", _DATETIME_SPECIFIERS[spec]))
            elif re.fullmatch(r"[\w \-]+", token):
                pieces.append(_Piece("field", key))
                fields.append(token)
            else:
                raise ValueError(f"path pattern '{pattern}': {{{token}}} is neither {{date}}, {{time}}, "
                                 f"{{datetime:<specifier>}} nor a column name (letters, digits, _, -, space)")
            pos = m.end()
        if pos < len(pattern):
            pieces.append(_Piece("text", pattern[pos:]))
        self._pieces = tuple(pieces)
        self.fields = tuple(fields)
        self.uses_time = any(p.kind in ("strftime", "specifier") for p in pieces)

    def resolve(self, row: dict, when: _dt.datetime) -> str:
        """The path (prefix) of ``row`` whose ``System.Timestamp()`` is ``when`` (aware, any zone)."""
        when = when.astimezone(UTC)
        lowered = None
        out = []
        for p in self._pieces:
            if p.kind == "text":
                out.append(p.value)
            elif p.kind == "strftime":
                out.append(when.strftime(p.value))
            elif p.kind == "specifier":
                out.append(p.value(when))
            else:
                value = row.get(p.value)
                if value is None:
                    if lowered is None:
                        lowered = {str(k).lower(): v for k, v in row.items()}
                    value = lowered.get(p.value)
                out.append(_segment_text(value))
        return "".join(out)

    def __repr__(self) -> str:
        return f"OutputPattern({self.pattern!r})"


def _segment_text(value: Any) -> str:
    text = "" if value is None else to_text(value)
    parts = [s for s in text.replace("\\", "/").split("/") if s not in ("", ".", "..")]
    return "/".join(parts) or "null"
