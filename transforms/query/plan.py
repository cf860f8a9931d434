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


@dataclass(frozen=True)
class AnyFieldRef(ast.Expr):
    """An unqualified field in a step with several sources (JOIN/APPLY): the first source having it."""

    sources: tuple[str, ...]
    path: tuple[str, ...]
    pos: ast.Pos = field(default=(0, 0), compare=False, repr=False)


TS_COLUMN = HIDDEN_PREFIX + "ts"  # System.Timestamp(): the event time, or the window end after GROUP BY
SOURCE_PREFIX = HIDDEN_PREFIX + "src:"  # in steps with JOIN/APPLY a row is {SOURCE_PREFIX + alias: record}


# Aggregates allowed with OVER (PARTITION BY ... LIMIT DURATION ... WHEN ...) and no window.
AGGREGATE_KINDS = ("count", "sum", "avg", "min", "max")

# -- time-related step parts ----------------------------------------------------------------
@dataclass(frozen=True)
class WindowDef:
    """A window in GROUP BY, sizes in microseconds (ASA: tumbling and hopping windows are (start, end])."""

    kind: str  # tumbling | hopping | sliding | session | snapshot
    size_us: int = 0
    hop_us: int = 0
    offset_us: int = 0
    timeout_us: int = 0
    max_duration_us: int = 0
    partition: tuple[int, ...] | None = None  # session OVER (PARTITION BY ...): indexes into the group keys

    def __str__(self) -> str:
        parts = [f"{k}={v}us" for k, v in (("size", self.size_us), ("hop", self.hop_us), ("offset", self.offset_us),
                                              ("timeout", self.timeout_us), ("max", self.max_duration_us)) if v]
        return f"{self.kind}({', '.join(parts)})"


@dataclass(frozen=True)
class AggregateDef:
    """One aggregate call: arguments bound on the input row, result in ``column`` of the grouped row."""

    column: str
    name: str  # canonical upper-case name, e.g. COUNT, PERCENTILE_CONT
    args: tuple[ast.Expr, ...] = ()
    distinct: bool = False
    star: bool = False
    params: tuple = ()  # constants: CollectTOP's n, a percentile
    order_by: tuple[tuple[ast.Expr, bool], ...] = ()  # (expr, descending)
    pos: ast.Pos = (0, 0)
    function: str | None = None  # the alias of a JavaScript UDA (uda.<alias>)


@dataclass(frozen=True)
class Grouping:
    window: WindowDef | None
    keys: tuple[ast.Expr, ...]  # bound on the input row
    key_columns: tuple[str, ...]  # where each key's value sits in the grouped row
    aggregates: tuple[AggregateDef, ...]
    having: ast.Expr | None = None  # bound on the grouped row


@dataclass(frozen=True)
class ApplyDef:
    kind: str  # cross | outer
    function: str  # GetArrayElements | GetRecordProperties
    arg: ast.Expr  # bound on the composite row
    alias: str
    key: str  # SOURCE_PREFIX + alias


@dataclass(frozen=True)
class JoinDef:
    kind: str  # inner | left
    source: str
    alias: str
    key: str  # SOURCE_PREFIX + alias
    timestamp_by: ast.Expr | None
    left_keys: tuple[ast.Expr, ...]  # bound on the composite row of the sources so far
    right_keys: tuple[ast.Expr, ...]  # bound on the joined source's own row
    bound: tuple[str, int, int] | None  # DATEDIFF (unit, low, high); None for reference data
    residual: ast.Expr | None  # the rest of ON, bound on the composite row
    reference: bool = False


@dataclass(frozen=True)
class AnalyticDef:
    """LAG / ISFIRST / LAST / an aggregate with OVER, evaluated per event before WHERE; result in ``column``."""

    column: str
    kind: str  # lag | isfirst | last | count | sum | avg | min | max (value None: COUNT(*))
    value: ast.Expr | None = None
    offset: int = 1
    default: ast.Expr | None = None
    partition: tuple[ast.Expr, ...] = ()
    duration_us: int | None = None
    when: ast.Expr | None = None


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
    """A SELECT item. A star item has name None and expr None (``*``: the source row) or the
    record whose fields it selects (``Location.*``, ``alias.*`` in a JOIN)."""

    name: str | None
    expr: ast.Expr | None
    star_strip_hidden: bool = False


@dataclass(frozen=True)
class InputSchema:
    """``CREATE TABLE``: the declared type of each named column of an input's events."""

    input: str
    columns: tuple[tuple[str, str], ...]  # (column, canonical type)
    pos: ast.Pos = (0, 0)


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
    timestamp_by: ast.Expr | None = None  # bound on the primary source's row
    source_key: str | None = None  # SOURCE_PREFIX + alias when the step has JOIN/APPLY
    joins: tuple[JoinDef, ...] = ()
    applies: tuple[ApplyDef, ...] = ()
    analytic: tuple[AnalyticDef, ...] = ()
    grouping: Grouping | None = None
    uses_timestamp: bool = False  # System.Timestamp() read outside a grouping
    needs_event_time: bool = False  # windows, joins, analytic functions or System.Timestamp()

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source, *(j.source for j in self.joins))


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
    schemas: tuple[InputSchema, ...] = ()  # CREATE TABLE, for inputs the query reads

    def schema(self, input_name: str) -> InputSchema | None:
        for sc in self.schemas:
            if sc.input.lower() == input_name.lower():
                return sc
        return None

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
    for sc in plan.schemas:
        lines.append(f"schema {sc.input}: " + ", ".join(f"{_quote(c)} {t}" for c, t in sc.columns))
    for s in plan.steps:
        if isinstance(s, SelectStep):
            lines.append(f"step {s.name}: SELECT from {s.source}" + (f" AS {s.alias}" if s.alias != s.source else ""))
            if s.timestamp_by is not None:
                lines.append(f"  timestamp by {to_sql(s.timestamp_by)}")
            for j in s.joins:
                bound = (f" within DATEDIFF({j.bound[0]}) BETWEEN {j.bound[1]} AND {j.bound[2]}" if j.bound
                         else " (reference)")
                keys = ", ".join(f"{to_sql(a)} = {to_sql(b)}" for a, b in zip(j.left_keys, j.right_keys, strict=True)
                                 ) or "every pair"
                lines.append(f"  {j.kind} join {j.source} AS {j.alias} on {keys}{bound}"
                             + (f" and {to_sql(j.residual)}" if j.residual is not None else ""))
            for a in s.applies:
                lines.append(f"  {a.kind} apply {a.function}({to_sql(a.arg)}) AS {a.alias}")
            for an in s.analytic:
                arg = to_sql(an.value) if an.value is not None else "*" if an.kind == "count" else ""
                lines.append(f"  analytic {_hidden_name(an.column)} = {an.kind.upper()}({arg})")
            for c in sorted(s.calls, key=lambda c: (c.phase != "where", c.stage)):
                guard = f" only where {to_sql(c.guard)}" if c.guard is not None else ""
                args = ", ".join(to_sql(a) for a in c.args)
                target = _hidden_name(c.column)
                lines.append(f"  call [{c.phase} stage {c.stage}] {target} = udf.{c.function}({args}){guard}")
            if s.where is not None:
                lines.append(f"  where {to_sql(s.where)}")
            if s.grouping is not None:
                g = s.grouping
                keys = ", ".join(f"{_hidden_name(c)} = {to_sql(k)}" for c, k in zip(g.key_columns, g.keys, strict=True))
                lines.append(f"  group by window {g.window or 'none'}" + (f", keys {keys}" if keys else ""))
                for ag in g.aggregates:
                    args = "*" if ag.star else ", ".join(to_sql(x) for x in ag.args)
                    lines.append(f"  aggregate {_hidden_name(ag.column)} = {ag.name}("
                                 f"{'DISTINCT ' if ag.distinct else ''}{args})")
                if g.having is not None:
                    lines.append(f"  having {to_sql(g.having)}")
            cols = ", ".join(("*" if c.expr is None else f"{to_sql(c.expr)}.*") if c.name is None
                             else f"{to_sql(c.expr)} AS [{c.name}]" for c in s.columns)
            lines.append(f"  select {cols}")
        else:
            lines.append(f"step {s.name}: UNION of {', '.join(s.parts)}")
    for o in plan.outputs:
        lines.append(f"output {o.output} <- {o.step}")
    return "\n".join(lines)


def _hidden_name(column: str) -> str:
    if column.startswith(SOURCE_PREFIX):
        return column[len(SOURCE_PREFIX):]
    if column == TS_COLUMN:
        return "System.Timestamp()"
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
            return ".".join(_hidden_name(x) if x.startswith(SOURCE_PREFIX) else _quote(x) for x in p)
        case AnyFieldRef(path=p):
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
