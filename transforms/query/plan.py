"""The logical plan: what the compiler turns into PTransforms, and what ``explain`` prints.

Between parser and compiler sits this explicit, printable structure: a list of steps in
dependency order, each reading one input or earlier step, and the outputs they feed.
Expressions in a plan are *bound*: column names are resolved against the step's source
(``FieldRef``/``RowRef``), built-in functions are looked up (``BuiltinCall``) and every
``udf.<name>(...)`` call has been hoisted into a ``UdfCall`` whose result the expressions
read from a hidden column (``HiddenRef``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transforms.query import ast

HIDDEN_PREFIX = "\x00"  # hidden columns (UDF results, event time, group keys, ...) never reach an output


# -- bound expression leaves (the other node types are reused from ast with bound children) ---
@dataclass(frozen=True)
class RowRef(ast.Expr):
    """The whole source row as a record (``udf.score(Dataframe)``)."""

    strip_hidden: bool = False
    pos: ast.Pos = field(default=(0, 0), compare=False, repr=False)


@dataclass(frozen=True)
class FieldRef(ast.Expr):
    """A (nested) field of the source row, looked up case-insensitively."""

    path: tuple[str, ...]
    pos: ast.Pos = field(default=(0, 0), compare=False, repr=False)


@dataclass(frozen=True)
class HiddenRef(ast.Expr):
    """The result of a hoisted UDF call."""

    column: str
    pos: ast.Pos = field(default=(0, 0), compare=False, repr=False)


@dataclass(frozen=True)
class BuiltinCall(ast.Expr):
    name: str  # canonical name, for printing
    fn: Callable[..., Any] = field(compare=False)
    args: tuple[ast.Expr, ...] = ()
    null_in_null_out: bool = True
    pos: ast.Pos = field(default=(0, 0), compare=False, repr=False)


@dataclass(frozen=True)
class Truth(ast.Expr):
    """``expr IS TRUE`` (want=True) or ``expr IS NOT TRUE`` (want=False): used in call guards."""

    operand: ast.Expr
    want: bool
    pos: ast.Pos = field(default=(0, 0), compare=False, repr=False)


# -- steps ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class UdfCall:
    """A ``udf.f(args)`` hoisted out of a step: evaluated in ``stage`` (1 = first), result in ``column``.

    ``phase`` is "where" for calls the WHERE clause needs (evaluated before filtering) and
    "select" for the rest (evaluated only on rows that pass). ``guard`` limits the call to the
    rows that take the CASE branch holding it.
    """

    column: str
    function: str
    args: tuple[ast.Expr, ...]
    guard: ast.Expr | None
    stage: int
    phase: str
    pos: ast.Pos = (0, 0)


@dataclass(frozen=True)
class OutputColumn:
    name: str | None  # None for a star item
    expr: ast.Expr | None  # None for a star item
    star_strip_hidden: bool = False


@dataclass(frozen=True)
class SelectStep:
    name: str
    source: str  # canonical name of an input or an earlier step
    alias: str
    columns: tuple[OutputColumn, ...]
    where: ast.Expr | None = None
    calls: tuple[UdfCall, ...] = ()
    static_columns: tuple[str, ...] | None = None  # known output names (None when '*' is used)
    pos: ast.Pos = (0, 0)

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)


@dataclass(frozen=True)
class UnionStep:
    """All rows of the parts (ASA UNION keeps duplicates); columns named by the first part, by position."""

    name: str
    parts: tuple[str, ...]
    rename: tuple[tuple[str, ...] | None, ...] = ()  # per part: its column names, when they must be renamed
    static_columns: tuple[str, ...] | None = None
    pos: ast.Pos = (0, 0)

    @property
    def sources(self) -> tuple[str, ...]:
        return self.parts


Step = SelectStep | UnionStep


@dataclass(frozen=True)
class OutputBinding:
    output: str
    step: str


@dataclass(frozen=True)
class Plan:
    inputs: tuple[str, ...]
    steps: tuple[Step, ...]
    outputs: tuple[OutputBinding, ...]

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def output_names(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for o in self.outputs:
            seen.setdefault(o.output)
        return tuple(seen)

    def functions_used(self) -> tuple[str, ...]:
        names: dict[str, None] = {}
        for s in self.steps:
            if isinstance(s, SelectStep):
                for c in s.calls:
                    names.setdefault(c.function)
        return tuple(names)

    def __str__(self) -> str:
        return format_plan(self)


# -- printing ------------------------------------------------------------------------------
def format_plan(plan: Plan) -> str:
    lines = [f"inputs: {', '.join(plan.inputs) or '(none)'}"]
    for s in plan.steps:
        if isinstance(s, SelectStep):
            lines.append(f"step {s.name}: SELECT from {s.source}" + (f" AS {s.alias}" if s.alias != s.source else ""))
            for c in sorted(s.calls, key=lambda c: (c.phase != "where", c.stage)):
                guard = f" only where {to_sql(c.guard)}" if c.guard is not None else ""
                args = ", ".join(to_sql(a) for a in c.args)
                target = _hidden_name(c.column)
                lines.append(f"  call [{c.phase} stage {c.stage}] {target} = udf.{c.function}({args}){guard}")
            if s.where is not None:
                lines.append(f"  where {to_sql(s.where)}")
            cols = ", ".join("*" if c.name is None else f"{to_sql(c.expr)} AS [{c.name}]" for c in s.columns)
            lines.append(f"  select {cols}")
        else:
            lines.append(f"step {s.name}: UNION of {', '.join(s.parts)}")
    for o in plan.outputs:
        lines.append(f"output {o.output} <- {o.step}")
    return "\n".join(lines)


def _hidden_name(column: str) -> str:
    return "$" + column[len(HIDDEN_PREFIX):] if column.startswith(HIDDEN_PREFIX) else column


def _quote(name: str) -> str:
    return name if name.replace("_", "a").isalnum() and not name[0].isdigit() else f"[{name}]"


def to_sql(e: ast.Expr | None) -> str:
    """A bound or unbound expression as query-like text (for explain and messages)."""
    if e is None:
        return ""
    match e:
        case ast.Literal(value=v):
            if v is None:
                return "NULL"
            if isinstance(v, bool):
                return "1" if v else "0"
            if isinstance(v, str):
                return "'" + v.replace("'", "''") + "'"
            return repr(v)
        case RowRef():
            return "<row>"
        case FieldRef(path=p):
            return ".".join(_quote(x) for x in p)
        case HiddenRef(column=c):
            return _hidden_name(c)
        case ast.Name(parts=p):
            return ".".join(_quote(x) for x in p)
        case ast.Field(base=b, name=n):
            return f"{to_sql(b)}.{_quote(n)}"
        case ast.Unary(op=op, operand=x):
            return f"NOT {to_sql(x)}" if op == "not" else f"{op}{to_sql(x)}"
        case ast.Binary(op=op, left=a, right=b):
            return f"({to_sql(a)} {op.upper()} {to_sql(b)})"
        case ast.IsNull(operand=x, negated=n):
            return f"{to_sql(x)} IS {'NOT ' if n else ''}NULL"
        case ast.Like(operand=x, pattern=p, negated=n):
            return f"{to_sql(x)} {'NOT ' if n else ''}LIKE {to_sql(p)}"
        case ast.In(operand=x, items=items, negated=n):
            return f"{to_sql(x)} {'NOT ' if n else ''}IN ({', '.join(to_sql(i) for i in items)})"
        case ast.Between(operand=x, low=lo, high=hi, negated=n):
            return f"{to_sql(x)} {'NOT ' if n else ''}BETWEEN {to_sql(lo)} AND {to_sql(hi)}"
        case ast.Case(operand=op, whens=whens, default=d):
            parts = ["CASE"] + ([to_sql(op)] if op is not None else [])
            parts += [f"WHEN {to_sql(c)} THEN {to_sql(r)}" for c, r in whens]
            if d is not None:
                parts.append(f"ELSE {to_sql(d)}")
            return " ".join(parts + ["END"])
        case ast.Cast(operand=x, type_name=t, try_=tr):
            return f"{'TRY_CAST' if tr else 'CAST'}({to_sql(x)} AS {t})"
        case BuiltinCall(name=n, args=args):
            return f"{n}({', '.join(to_sql(a) for a in args)})"
        case Truth(operand=x, want=w):
            return f"{to_sql(x)} IS {'' if w else 'NOT '}TRUE"
        case ast.Call(name=n, args=args, namespace=ns):
            return f"{ns + '.' if ns else ''}{n}({', '.join(to_sql(a) for a in args)})"
        case ast.Star(qualifier=q):
            return f"{q}.*" if q else "*"
    return type(e).__name__
