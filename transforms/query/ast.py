"""The syntax tree of an ASA query, as written (no name binding yet).

Nodes are frozen dataclasses; ``pos`` (line, column) is left out of equality so tests can
compare trees built by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Pos = tuple[int, int]


def _pos() -> Any:
    return field(default=(0, 0), compare=False, repr=False)


class Expr:
    """Base class of expressions."""

    pos: Pos


@dataclass(frozen=True)
class Literal(Expr):
    value: Any  # int, float, str, bool or None (NULL)
    pos: Pos = _pos()


@dataclass(frozen=True)
class Name(Expr):
    """A dotted path as written: ``a``, ``a.b.c``, ``alias.[x y]``. Bound later to a row, field or alias."""

    parts: tuple[str, ...]
    pos: Pos = _pos()


@dataclass(frozen=True)
class Field(Expr):
    """Field access on a computed value: ``udf.score(x).[Scored Labels]``, ``(expr).a``."""

    base: Expr
    name: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class Star(Expr):
    """``*``, ``alias.*``, or all fields of a record: ``Location.*``, ``alias.record.*``."""

    qualifier: str | None = None  # the first name before ``.*``
    pos: Pos = _pos()
    path: tuple[str, ...] = ()  # the names after the qualifier


@dataclass(frozen=True)
class Unary(Expr):
    op: str  # "-", "+", "not"
    operand: Expr
    pos: Pos = _pos()


@dataclass(frozen=True)
class Binary(Expr):
    op: str  # + - * / % = != < <= > >= and or
    left: Expr
    right: Expr
    pos: Pos = _pos()


@dataclass(frozen=True)
class IsNull(Expr):
    operand: Expr
    negated: bool = False
    pos: Pos = _pos()


@dataclass(frozen=True)
class Like(Expr):
    operand: Expr
    pattern: Expr
    negated: bool = False
    escape: Expr | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class In(Expr):
    operand: Expr
    items: tuple[Expr, ...]
    negated: bool = False
    pos: Pos = _pos()


@dataclass(frozen=True)
class Between(Expr):
    operand: Expr
    low: Expr
    high: Expr
    negated: bool = False
    pos: Pos = _pos()


@dataclass(frozen=True)
class Case(Expr):
    operand: Expr | None  # simple CASE x WHEN v ... ; None for searched CASE
    whens: tuple[tuple[Expr, Expr], ...]
    default: Expr | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class Cast(Expr):
    operand: Expr
    type_name: str  # as written, e.g. "nvarchar(max)"
    try_: bool = False
    pos: Pos = _pos()


@dataclass(frozen=True)
class Over(Expr):
    """``OVER ([PARTITION BY ...] [LIMIT DURATION(unit, n)] [WHEN cond])``."""

    partition_by: tuple[Expr, ...] = ()
    limit_duration: tuple[str, Expr] | None = None
    when: Expr | None = None
    order_by: tuple[tuple[Expr, bool], ...] = ()  # (expr, descending) for CollectTOP/TopOne/Percentile_*
    pos: Pos = _pos()


@dataclass(frozen=True)
class Call(Expr):
    """A function call: ``name(args)``; ``namespace`` is "udf"/"uda" for user functions,
    a dotted prefix such as "system" for ``System.Timestamp()``, else None."""

    name: str
    args: tuple[Expr, ...]
    namespace: str | None = None
    distinct: bool = False
    star: bool = False  # COUNT(*)
    over: Over | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class SelectItem:
    expr: Expr
    alias: str | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class TableRef:
    """``FROM name [AS alias] [PARTITION BY ...] [TIMESTAMP BY expr [OVER ...]]``."""

    name: str
    alias: str | None = None
    timestamp_by: Expr | None = None
    timestamp_over: tuple[Expr, ...] = ()
    partition_by: tuple[Expr, ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Join:
    kind: str  # "inner" | "left"
    table: TableRef
    on: Expr
    pos: Pos = _pos()


@dataclass(frozen=True)
class Apply:
    kind: str  # "cross" | "outer"
    call: Call
    alias: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class Select:
    items: tuple[SelectItem, ...]
    source: TableRef
    into: str | None = None
    joins: tuple[Join, ...] = ()
    applies: tuple[Apply, ...] = ()
    where: Expr | None = None
    group_by: tuple[Expr, ...] = ()
    having: Expr | None = None
    distinct: bool = False
    into_pos: Pos = _pos()
    pos: Pos = _pos()


@dataclass(frozen=True)
class Union:
    """``SELECT ... UNION SELECT ...``: all rows kept (ASA's UNION is UNION ALL)."""

    parts: tuple[Select, ...]
    pos: Pos = _pos()

    @property
    def into(self) -> str | None:
        return self.parts[0].into


QueryExpr = Select | Union


@dataclass(frozen=True)
class WithStep:
    name: str
    query: QueryExpr
    pos: Pos = _pos()


@dataclass(frozen=True)
class Statement:
    """One top-level statement: optional WITH steps, then a SELECT (or UNION) writing INTO an output."""

    steps: tuple[WithStep, ...]
    query: QueryExpr
    pos: Pos = _pos()


@dataclass(frozen=True)
class CreateTable:
    """``CREATE TABLE input (column type, ...)``: the declared schema of an input's events."""

    name: str
    columns: tuple[tuple[str, str, Pos], ...]  # (column, type as written, position of the type)
    pos: Pos = _pos()


@dataclass(frozen=True)
class Script:
    statements: tuple[Statement, ...]
    tables: tuple[CreateTable, ...] = ()
