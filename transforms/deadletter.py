"""The one record every failed row becomes, and the tag of the side output that carries it.

Every input row ends in exactly one place: an output, filtered out by the query, or here.
Transforms that can fail a row emit ``DeadLetter`` records on the ``FAILED`` tagged output;
the compiler flattens all of them into ``AsaQuery(...).failed``.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, NamedTuple

FAILED = "failed"  # tag of the side output carrying DeadLetter records


class DeadLetter(NamedTuple):
    """A row that could not be processed, and why.

    ``reason`` is machine readable (``malformed_json``, ``cast_error``, ``schema_mismatch``,
    ``endpoint_rejected_row``, ``endpoint_unavailable``, ``js_error``, ``js_timeout``, ...);
    ``message`` is for people. ``row`` is the row as it reached ``step``; ``raw`` is the
    source text when the row never parsed. ``status`` is the HTTP status for endpoint errors.
    """

    step: str
    reason: str
    message: str
    row: Any = None
    raw: str | None = None
    status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step, "reason": self.reason, "message": self.message}
        if self.row is not None:
            out["row"] = self.row
        if self.raw is not None:
            out["raw"] = self.raw
        if self.status is not None:
            out["status"] = self.status
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeadLetter:
        return cls(d["step"], d["reason"], d["message"], d.get("row"), d.get("raw"), d.get("status"))


class RowError(Exception):
    """Raised while processing one row; becomes a DeadLetter for that row only."""

    def __init__(self, reason: str, message: str, status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status

    def dead_letter(self, step: str, row: Any = None, raw: str | None = None) -> DeadLetter:
        return DeadLetter(step, self.reason, self.message, row=row, raw=raw, status=self.status)

    def __reduce__(self):  # picklable across Beam stage boundaries
        return (RowError, (self.reason, self.message, self.status))


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for row values that JSON lacks (datetimes, bytes)."""
    if isinstance(value, _dt.datetime):
        return format_datetime(value)
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, DeadLetter):
        return value.to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def format_datetime(value: _dt.datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as ASA writes datetimes."""
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    text = value.isoformat()
    if "." not in text:
        text += ".0000000"
    else:
        head, frac = text.split(".")
        text = f"{head}.{frac.ljust(7, '0')}"
    return text + "Z"
