"""What every project reader shares: lenient JSON files, case-insensitive keys, paths, secrets.

Real ASA projects were written by several tools over several years (Visual Studio, VS Code,
the portal's export, hand edits on Windows): files may open with a UTF-8 BOM and use CRLF,
key names vary in case (``InputAlias`` / ``inputAlias``), paths use ``\\`` or ``/``, secrets are
``null`` or masked as ``"********"``.

>>> keys = Keys({"InputAlias": "in", "FILEPATH": "a\\\\b.json"})
>>> keys.get("inputalias"), keys.get("FilePath")
('in', 'a\\\\b.json')
>>> is_secret("********"), is_secret(None), is_secret("")
(False, False, False)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from transforms.errors import JobConfigError

MASKED = re.compile(r"^\*+$")


class ProjectError(JobConfigError):
    """A project file that cannot be used; the message names the file (and line/column for JSON)."""


def read_text(path: Path) -> str:
    """A text file without its BOM, with ``\\n`` line ends (CRLF and CR are normalised)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ProjectError(f"cannot read {path}: {e.strerror or e}") from None
    text = data.decode("utf-8-sig", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_json(path: Path) -> Any:
    """A JSON file, BOM and CRLF tolerated; a syntax error names the file, line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ProjectError(f"{path}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


class Keys(Mapping):
    """A read-only view of a JSON object with case-insensitive keys (``get("filepath")``)."""

    def __init__(self, data: Mapping | None):
        self._data = dict(data or {})
        self._lower = {str(k).lower(): k for k in self._data}

    def __getitem__(self, key: str) -> Any:
        return self._data[self._lower[key.lower()]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lower

    def get(self, *names: str, default: Any = None) -> Any:  # type: ignore[override]
        """The value of the first of ``names`` present (case-insensitive) and not null."""
        for name in names:
            key = self._lower.get(name.lower())
            if key is not None and self._data[key] is not None:
                return self._data[key]
        return default

    def sub(self, *names: str) -> Keys:
        """A nested object as ``Keys`` (an empty one when absent or not an object)."""
        value = self.get(*names)
        return Keys(value if isinstance(value, Mapping) else {})

    def items_matching(self, suffix: str) -> Iterator[tuple[str, Keys]]:
        """Nested objects whose key ends with ``suffix`` (e.g. every ``*Properties``), non-null only."""
        for k, v in self._data.items():
            if str(k).lower().endswith(suffix.lower()) and isinstance(v, Mapping):
                yield str(k), Keys(v)


def is_secret(value: Any) -> bool:
    """True when ``value`` is a real secret: not null, not empty, not masked (``"********"``)."""
    return isinstance(value, str) and bool(value.strip()) and not MASKED.match(value.strip())


def local_path(base: Path, given: str) -> Path:
    """A path from a project file, resolved against ``base`` (the declaring file's folder).

    ``\\`` and ``/`` both separate; a Windows drive path (``D:\\data\\x.json``) cannot exist on
    Linux or macOS, so its file name is looked up beside ``base`` instead (and the caller's
    error names both when neither exists).
    """
    text = str(given).strip()
    if re.match(r"^[A-Za-z]:[\\/]", text) or text.startswith("\\\\"):
        return base / PureWindowsPath(text).name
    text = text.replace("\\", "/")
    path = Path(os.path.expanduser(text))
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def lower_word(value: Any) -> str:
    """``"Reference Data"`` → ``"reference data"``: enumerations compare case- and space-insensitively."""
    return re.sub(r"\s+", " ", str(value or "")).strip().lower()


def as_int(value: Any, what: str, where: Path) -> int | None:
    """An int written as a number or a string (``StreamingUnits: "3"``); ``"1/3"`` → None (fractional SU)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"\d+\s*/\s*\d+", text):
        return None
    raise ProjectError(f"{where}: {what} must be a whole number, got {value!r}")


@dataclass
class Translation:
    """A project translated into a job document (the job.yaml shape) plus what ``check`` reports.

    ``doc`` is what ``pipelines.job.build_job`` validates; every path in it is absolute.
    ``notes`` are things the user should know (a sink written locally instead, a key ignored);
    ``unavailable`` maps an input alias to why it has no local data (a live Event Hub, ...).
    """

    source: Path
    kind: str
    doc: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    query_origin: str | None = None
