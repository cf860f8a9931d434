"""Every name a query can call without ``udf.``: the built-in scalar table plus the few
functions the language itself defines (COALESCE, NULLIF) and the aggregate names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

AGGREGATES = frozenset(
    "avg count collect collecttop max min percentile_cont percentile_disc stdev stdevp sum topone var varp".split()
)


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    fn: Callable[..., Any]
    min_args: int
    max_args: int | None
    null_in_null_out: bool = True
    datepart_first: bool = False


def _coalesce(*args: Any) -> Any:
    for a in args:
        if a is not None:
            return a
    return None


def _nullif(a: Any, b: Any) -> Any:
    from transforms.query.runtime import eq

    return None if eq(a, b) is True else a


_LANGUAGE = {
    "coalesce": FunctionSpec("COALESCE", _coalesce, 1, None, null_in_null_out=False),
    "nullif": FunctionSpec("NULLIF", _nullif, 2, 2, null_in_null_out=False),
}


def _builtins() -> Any:
    from transforms.query import builtins

    return builtins


def lookup(name: str) -> FunctionSpec | None:
    key = name.lower()
    if key in _LANGUAGE:
        return _LANGUAGE[key]
    b = _builtins().SCALAR_FUNCTIONS.get(key)
    if b is None:
        return None
    return FunctionSpec(b.name, b.fn, b.min_args, b.max_args, b.null_in_null_out, b.datepart_first)


def unimplemented() -> dict[str, str]:
    return {k.lower(): v for k, v in getattr(_builtins(), "UNIMPLEMENTED", {}).items()}


def normalize_datepart(text: str) -> str:
    return _builtins().normalize_datepart(text)
