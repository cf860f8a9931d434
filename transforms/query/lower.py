"""Syntax tree → logical plan: name binding, function binding, UDF hoisting, strictness checks.

Identifiers are case-insensitive (inputs, outputs, steps, columns, functions); output
columns keep the spelling written in the query. Every problem is a QueryError with the
line and column of the offending name, found before any data is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from transforms import types
from transforms.errors import QueryError
from transforms.functions.registry import FunctionRegistry
from transforms.query import ast
from transforms.query import catalog as qfn
from transforms.query.plan import (
    AGGREGATE_KINDS,
    HIDDEN_PREFIX,
    SOURCE_PREFIX,
    TS_COLUMN,
    AggregateDef,
    AnalyticDef,
    AnyFieldRef,
    ApplyDef,
    BuiltinCall,
    FieldRef,
    Grouping,
    HiddenRef,
    InputSchema,
    JoinDef,
    OutputBinding,
    OutputColumn,
    Plan,
    RowRef,
    SelectStep,
    Step,
    Truth,
    UdfCall,
    UnionStep,
    WindowDef,
    to_sql,
)

DEFAULT_OUTPUT = "output"


def lower(script: ast.Script, functions: FunctionRegistry | None = None,
          inputs: Iterable[str] | None = None, outputs: Iterable[str] | None = None,
          reference_inputs: Iterable[str] = ()) -> Plan:
    """Bind a parsed query. ``inputs``/``outputs``: the declared names (None: accept any name);
    ``reference_inputs``: inputs holding reference data (joined without a time bound)."""
    return _Lowering(functions or FunctionRegistry(), inputs, outputs, reference_inputs).run(script)


def _not_supported(what: str, pos: ast.Pos) -> QueryError:
    return QueryError(f"{what} is not supported yet", *pos)


class _Lowering:
    def __init__(self, functions: FunctionRegistry, inputs: Iterable[str] | None, outputs: Iterable[str] | None,
                 reference_inputs: Iterable[str] = ()):
        self.functions = functions
        self.reference_inputs = {n.lower() for n in reference_inputs}
        self.declared_inputs = {n.lower(): n for n in inputs} if inputs is not None else None
        self.declared_outputs = {n.lower(): n for n in outputs} if outputs is not None else None
        self.inputs: dict[str, str] = {}  # lower → canonical
        self.steps: dict[str, Step] = {}  # lower → step
        self.order: list[Step] = []
        self.outputs: list[OutputBinding] = []
        self.hidden_counter = 0

    def run(self, script: ast.Script) -> Plan:
        schemas = self.schemas(script.tables)
        select_count = 0
        for stmt in script.statements:
            for ws in stmt.steps:
                key = ws.name.lower()
                if key in self.steps:
                    raise QueryError(f"step '{ws.name}' is defined twice", *ws.pos)
                if self.declared_inputs is not None and key in self.declared_inputs:
                    raise QueryError(f"step '{ws.name}' has the name of an input", *ws.pos)
                self.add_query(ws.name, ws.query)
            select_count += 1
            query = stmt.query
            into_pos = query.parts[0].into_pos if isinstance(query, ast.Union) else query.into_pos
            output = self.bind_output(query.into or DEFAULT_OUTPUT, into_pos if query.into else stmt.query.pos)
            n = sum(1 for o in self.outputs if o.output == output)
            name = f"Select into {output}" + (f" #{n + 1}" if n else "")
            step = self.add_query(name, query)
            self.outputs.append(OutputBinding(output, step.name))
        return Plan(tuple(self.inputs.values()), tuple(self.order), tuple(self.outputs),
                    tuple(sc for sc in schemas if sc.input.lower() in self.inputs))

    def schemas(self, tables: tuple[ast.CreateTable, ...]) -> list[InputSchema]:
        """CREATE TABLE statements → the declared schema of each input (checked before any data is read)."""
        out: dict[str, InputSchema] = {}
        for t in tables:
            key = t.name.lower()
            if key in out:
                raise QueryError(f"CREATE TABLE '{t.name}' is declared twice", *t.pos)
            if self.declared_inputs is not None and key not in self.declared_inputs:
                known = ", ".join(self.declared_inputs.values()) or "none"
                raise QueryError(f"CREATE TABLE '{t.name}' does not name an input; inputs: {known}", *t.pos)
            columns: list[tuple[str, str]] = []
            for name, type_name, pos in t.columns:
                if name.lower() in (c.lower() for c, _ in columns):
                    raise QueryError(f"column '{name}' is declared twice in CREATE TABLE '{t.name}'", *pos)
                try:
                    canonical = types.normalize_type(type_name)
                except ValueError as err:
                    raise QueryError(str(err), *pos) from None
                if canonical == types.ANY:
                    raise QueryError("CREATE TABLE columns need a type other than 'any'", *pos)
                columns.append((name, canonical))
            name = self.declared_inputs[key] if self.declared_inputs is not None else t.name
            out[key] = InputSchema(name, tuple(columns), t.pos)
        return list(out.values())

    def bind_output(self, name: str, pos: ast.Pos) -> str:
        if self.declared_outputs is None:
            return name
        canonical = self.declared_outputs.get(name.lower())
        if canonical is None:
            known = ", ".join(self.declared_outputs.values()) or "none"
            raise QueryError(f"unknown output '{name}'; declared outputs: {known}", *pos)
        return canonical

    def add(self, step: Step) -> Step:
        self.steps[step.name.lower()] = step
        self.order.append(step)
        return step

    def add_query(self, name: str, query: ast.QueryExpr) -> Step:
        if isinstance(query, ast.Select):
            return self.add(self.select(name, query))
        parts = [self.add(self.select(f"{name} (part {i + 1})", part)) for i, part in enumerate(query.parts)]
        first = parts[0].static_columns
        rename: list[tuple[str, ...] | None] = []
        for part, sel in zip(parts, query.parts, strict=True):
            cols = part.static_columns
            if first is not None and cols is not None:
                if len(cols) != len(first):
                    raise QueryError(
                        f"UNION parts must have the same number of columns: the first has {len(first)}, "
                        f"this one {len(cols)}", *sel.pos)
                rename.append(None if cols == first else cols)
            else:
                rename.append(None)
        return self.add(UnionStep(name, tuple(p.name for p in parts), tuple(rename), first, query.pos))

    # -- one SELECT --------------------------------------------------------------------------
    def select(self, name: str, sel: ast.Select) -> SelectStep:
        if sel.distinct:
            raise _not_supported("SELECT DISTINCT", sel.pos)
        multi = bool(sel.joins or sel.applies)
        source = self.bind_source(sel.source)
        alias = sel.source.alias or sel.source.name
        if source.lower() in self.reference_inputs:
            raise QueryError(f"'{source}' is reference data: it can only be JOINed", *sel.source.pos)
        scope = _Scope(self, name)
        timestamp_by = None
        if sel.source.timestamp_by is not None:
            timestamp_by = self.single_scope(name, alias, sel.source).bind(sel.source.timestamp_by, "where")
        scope.add_source(alias, sel.source.name, source, SOURCE_PREFIX + alias.lower() if multi else None)
        joins = tuple(self.join(scope, j) for j in sel.joins)
        applies = []
        for ap in sel.applies:
            fname = ap.call.name.lower()
            if fname not in ("getarrayelements", "getrecordproperties") or ap.call.namespace or len(ap.call.args) != 1:
                raise QueryError("APPLY takes GetArrayElements(array) or GetRecordProperties(record)", *ap.call.pos)
            arg = scope.bind(ap.call.args[0], "where")
            key = SOURCE_PREFIX + ap.alias.lower()
            cols = ("ArrayIndex", "ArrayValue") if fname == "getarrayelements" else ("PropertyName", "PropertyValue")
            scope.add_source(ap.alias, ap.alias, None, key, columns=cols)
            canonical = "GetArrayElements" if fname == "getarrayelements" else "GetRecordProperties"
            applies.append(ApplyDef(ap.kind, canonical, arg, ap.alias, key))
        where = _drop_row_not_null(scope.bind(sel.where, "where")) if sel.where is not None else None
        grouping_parts = self.group_by(scope, sel) if (sel.group_by or _has_aggregate(sel)) else None
        if grouping_parts is None and sel.having is not None:
            raise QueryError("HAVING needs GROUP BY", *sel.having.pos)
        phase = "post" if grouping_parts is not None else "select"
        columns: list[OutputColumn] = []
        names: list[str] = []
        static = True
        for idx, item in enumerate(sel.items, start=1):
            if isinstance(item.expr, ast.Star):
                if grouping_parts is not None:
                    raise QueryError("'*' cannot be used with GROUP BY", *item.pos)
                q = item.expr.qualifier
                if q is None:
                    if multi:
                        raise _not_supported("'*' in a step with JOIN or APPLY (name a source: alias.*)", item.pos)
                    columns.append(OutputColumn(None, None))
                else:
                    # alias.* (a source's fields), or all fields of a record: Location.*, alias.record.*
                    record = scope.bind(ast.Name((q, *item.expr.path), item.pos), phase)
                    columns.append(OutputColumn(None, None if isinstance(record, RowRef) else record))
                static = False
                continue
            col_name = item.alias or _default_name(item.expr, idx)
            if col_name.lower() in (n.lower() for n in names):
                raise QueryError(f"column '{col_name}' is selected twice; give one of them another name with AS",
                                 *item.pos)
            names.append(col_name)
            columns.append(OutputColumn(col_name, scope.bind(item.expr, phase)))
        grouping = None
        if grouping_parts is not None:
            window, keys, key_columns = grouping_parts
            having = scope.bind(_having_aliases(sel, scope), "post") if sel.having is not None else None
            grouping = Grouping(window, keys, key_columns, tuple(scope.aggregates), having)
        hidden = bool(scope.calls or scope.analytic or scope.uses_timestamp)
        columns = [dataclasses.replace(c, star_strip_hidden=hidden) if c.name is None else c for c in columns]
        needs_time = bool(grouping or joins or scope.analytic or scope.uses_timestamp)
        return SelectStep(name, source, alias, tuple(columns), where, tuple(scope.calls),
                          tuple(names) if static else None, sel.pos, timestamp_by,
                          SOURCE_PREFIX + alias.lower() if multi else None, joins, tuple(applies),
                          tuple(scope.analytic), grouping, scope.uses_timestamp and grouping is None, needs_time)

    def single_scope(self, step: str, alias: str, ref: ast.TableRef) -> _Scope:
        scope = _Scope(self, step)
        scope.add_source(alias, ref.name, self.bind_source(ref), None)
        scope.no_calls = "TIMESTAMP BY"
        return scope

    def join(self, scope: _Scope, j: ast.Join) -> JoinDef:
        source = self.bind_source(j.table)
        alias = j.table.alias or j.table.name
        if alias.lower() in scope.aliases():
            raise QueryError(f"alias '{alias}' is used twice in FROM", *j.table.pos)
        reference = source.lower() in self.reference_inputs
        timestamp_by = None
        if j.table.timestamp_by is not None:
            if reference:
                raise QueryError("reference data has no TIMESTAMP BY", *j.table.timestamp_by.pos)
            timestamp_by = self.single_scope(scope.step, alias, j.table).bind(j.table.timestamp_by, "where")
        left_aliases = set(scope.aliases())
        right_scope = self.single_scope(scope.step, alias, j.table)
        right_scope.no_calls = "JOIN ... ON"
        key = SOURCE_PREFIX + alias.lower()
        scope.add_source(alias, j.table.name, source, key)
        left_keys, right_keys, residual, bound = [], [], [], None
        limits: list[tuple[int | None, int | None]] = []  # one-sided DATEDIFF comparisons, in µs
        for conj in _conjuncts(j.on):
            if (b := _datediff_bound(conj, left_aliases, alias.lower())) is not None:
                if bound is not None:
                    raise QueryError("only one DATEDIFF bound per JOIN", *conj.pos)
                bound = b
                continue
            if (lim := _datediff_limit(conj, left_aliases, alias.lower())) is not None:
                limits.append(lim)
                continue
            if isinstance(conj, ast.Binary) and conj.op == "=":
                sides = (_aliases_of(conj.left, scope), _aliases_of(conj.right, scope))
                for lhs, rhs, (la, ra) in ((conj.left, conj.right, sides), (conj.right, conj.left, sides[::-1])):
                    if la and ra == {alias.lower()} and la <= left_aliases:
                        scope.no_calls = "JOIN ... ON"
                        left_keys.append(scope.bind(lhs, "where"))
                        scope.no_calls = None
                        right_keys.append(right_scope.bind(_unqualify(rhs, alias), "where"))
                        break
                else:
                    residual.append(conj)
                continue
            residual.append(conj)
        if limits:  # DATEDIFF(unit, a, b) <= 10 AND DATEDIFF(unit, a, b) >= 0, ...: intersected, in µs
            if bound is not None:
                unit_us = TIME_UNITS_US[bound[0]]
                limits.append((bound[1] * unit_us, bound[2] * unit_us))
            lo = max((x for x, _ in limits if x is not None), default=None)
            hi = min((y for _, y in limits if y is not None), default=None)
            if lo is None or hi is None:
                raise QueryError("DATEDIFF in ON must bound the time difference on both sides "
                                 "(e.g. DATEDIFF(...) >= 0 AND DATEDIFF(...) <= 10)", *j.pos)
            if lo > hi:
                raise QueryError("the DATEDIFF bound is empty (low > high)", *j.pos)
            if max(abs(lo), abs(hi)) > MAX_WINDOW_US:
                raise QueryError("a JOIN's DATEDIFF bound may span at most 7 days", *j.pos)
            bound = ("microsecond", lo, hi)
        if not reference and bound is None:
            raise QueryError("a JOIN between streams must bound time with DATEDIFF(unit, a, b) BETWEEN x AND y in ON"
                             " (or join reference data)", *j.pos)
        if bound is not None and reference:
            raise QueryError("a reference-data JOIN takes no DATEDIFF bound", *j.pos)
        # No equality between the sides: every pair is a candidate (one key for all rows), and ON
        # is checked on each pair: JOIN Ref ON 1 = 1 fans a row out to every reference row.
        scope.no_calls = "JOIN ... ON"
        bound_residual = scope.bind(_and_all(tuple(residual)), "where") if residual else None
        scope.no_calls = None
        return JoinDef(j.kind, source, alias, key, timestamp_by, tuple(left_keys), tuple(right_keys), bound,
                       bound_residual, reference)

    def group_by(self, scope: _Scope, sel: ast.Select):
        window: WindowDef | None = None
        keys: list[ast.Expr] = []
        key_columns: list[str] = []
        canon: dict[str, str] = {}
        for item in sel.group_by:
            w = _window(item)
            if w is not None:
                if window is not None:
                    raise _not_supported("more than one window in GROUP BY", item.pos)
                window = w
                if isinstance(item, ast.Call) and item.over is not None:
                    partition_columns = []
                    for k in item.over.partition_by:  # session OVER (PARTITION BY k): part of the group key
                        if _canon(k, scope) not in canon:
                            self._add_key(scope, k, keys, key_columns, canon)
                        partition_columns.append(canon[_canon(k, scope)])
                    window = dataclasses.replace(window, partition=tuple(partition_columns))  # type: ignore[arg-type]
                continue
            if _canon(item, scope) not in canon:
                self._add_key(scope, item, keys, key_columns, canon)
        scope.group_keys = canon
        if window is not None and window.partition is not None:
            window = dataclasses.replace(window, partition=tuple(key_columns.index(c) for c in window.partition))
        return window, tuple(keys), tuple(key_columns)

    def _add_key(self, scope: _Scope, e: ast.Expr, keys: list, key_columns: list, canon: dict) -> None:
        column = self.new_hidden("g")
        keys.append(scope.bind(e, "group"))
        key_columns.append(column)
        canon[_canon(e, scope)] = column

    def bind_source(self, ref: ast.TableRef) -> str:
        key = ref.name.lower()
        if key in self.steps:
            return self.steps[key].name
        if self.declared_inputs is not None:
            if key not in self.declared_inputs:
                steps = ", ".join(s.name for s in self.order if not s.name.startswith("Select into")) or "none"
                known = ", ".join(self.declared_inputs.values()) or "none"
                raise QueryError(f"unknown input or step '{ref.name}'; inputs: {known}; steps defined so far: {steps}",
                                 *ref.pos)
            canonical = self.declared_inputs[key]
        else:
            canonical = self.inputs.get(key, ref.name)
        self.inputs.setdefault(key, canonical)
        return canonical

    def new_hidden(self, kind: str = "udf") -> str:
        self.hidden_counter += 1
        return f"{HIDDEN_PREFIX}{kind}{self.hidden_counter}"


# -- helpers on syntax trees -----------------------------------------------------------------
TIME_UNITS_US = {
    "day": 86_400_000_000, "dd": 86_400_000_000, "d": 86_400_000_000,
    "hour": 3_600_000_000, "hh": 3_600_000_000,
    "minute": 60_000_000, "mi": 60_000_000, "n": 60_000_000,
    "second": 1_000_000, "ss": 1_000_000, "s": 1_000_000,
    "millisecond": 1_000, "ms": 1_000,
    "microsecond": 1, "mcs": 1,
}
MAX_WINDOW_US = 7 * 86_400_000_000
_WINDOWS = {"tumblingwindow": "tumbling", "tumbling": "tumbling", "hoppingwindow": "hopping", "hopping": "hopping",
            "slidingwindow": "sliding", "sliding": "sliding", "sessionwindow": "session", "session": "session"}
_ANALYTIC = ("lag", "isfirst", "last")


def _is_timestamp(e: ast.Expr) -> bool:
    if isinstance(e, ast.Call):
        return (e.namespace or "").lower() == "system" and e.name.lower() == "timestamp" and not e.args
    return isinstance(e, ast.Name) and tuple(p.lower() for p in e.parts) == ("system", "timestamp")


def _unit_us(e: ast.Expr) -> tuple[str, int]:
    if isinstance(e, ast.Name) and len(e.parts) == 1 and e.parts[0].lower() in TIME_UNITS_US:
        return e.parts[0].lower(), TIME_UNITS_US[e.parts[0].lower()]
    raise QueryError("expected a time unit: day, hour, minute, second, millisecond or microsecond", *e.pos)


def _int_literal(e: ast.Expr, what: str) -> int:
    if isinstance(e, ast.Literal) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return e.value
    raise QueryError(f"expected a whole number for {what}", *e.pos)


def _duration(unit: ast.Expr, size: ast.Expr, what: str, allow_negative: bool = False) -> int:
    _, us = _unit_us(unit)
    n = _int_literal(size, what)
    if n < 0 and not allow_negative or n == 0 and what != "offset":
        raise QueryError(f"{what} must be positive", *size.pos)
    if abs(n * us) > MAX_WINDOW_US:
        raise QueryError(f"{what} is longer than 7 days, the most ASA allows", *size.pos)
    return n * us


def _named_durations(args: tuple[ast.Expr, ...]) -> dict[str, int] | None:
    """``Duration(minute, 10), Hop(minute, 5), Offset(millisecond, -1)`` → {name: µs}; None for the plain form."""
    if not args or not all(isinstance(a, ast.Call) and not a.namespace for a in args):
        return None
    out = {}
    for a in args:
        assert isinstance(a, ast.Call)
        key = a.name.lower()
        if key not in ("duration", "hop", "offset", "timeout", "maxduration") or len(a.args) != 2:
            raise QueryError(f"unexpected '{a.name}' in a window; expected Duration, Hop, Offset, Timeout "
                             "or MaxDuration(unit, n)", *a.pos)
        out[key] = _duration(a.args[0], a.args[1], key, allow_negative=key == "offset")
    return out


def _window(e: ast.Expr) -> WindowDef | None:
    if _is_timestamp(e):
        return WindowDef("snapshot")
    if not isinstance(e, ast.Call) or e.namespace or e.name.lower() not in _WINDOWS:
        return None
    kind = _WINDOWS[e.name.lower()]
    named = _named_durations(e.args)
    a = e.args
    try:
        if kind == "tumbling":
            if named is not None:
                return WindowDef(kind, size_us=named["duration"], offset_us=named.get("offset", 0))
            offset = _duration(a[0], a[2], "offset", True) if len(a) > 2 else 0
            return WindowDef(kind, size_us=_duration(a[0], a[1], "window size"), offset_us=offset)
        if kind == "hopping":
            if named is not None:
                return WindowDef(kind, size_us=named["duration"], hop_us=named["hop"], offset_us=named.get("offset", 0))
            offset = _duration(a[0], a[3], "offset", True) if len(a) > 3 else 0
            size, hop = _duration(a[0], a[1], "window size"), _duration(a[0], a[2], "hop size")
            if hop > size:
                raise QueryError("the hop size must not exceed the window size", *a[2].pos)
            return WindowDef(kind, size_us=size, hop_us=hop, offset_us=offset)
        if kind == "sliding":
            if named is not None:
                return WindowDef(kind, size_us=named["duration"])
            return WindowDef(kind, size_us=_duration(a[0], a[1], "window size"))
        if named is not None:
            return WindowDef(kind, timeout_us=named["timeout"], max_duration_us=named["maxduration"])
        timeout, maximum = _duration(a[0], a[1], "timeout"), _duration(a[0], a[2], "maximum duration")
        if timeout > maximum:
            raise QueryError("the session timeout must not exceed its maximum duration", *a[1].pos)
        return WindowDef(kind, timeout_us=timeout, max_duration_us=maximum)
    except (IndexError, KeyError):
        raise QueryError(f"wrong arguments for {e.name}; see the ASA window syntax", *e.pos) from None


def _walk(e: object):
    yield e
    if dataclasses.is_dataclass(e) and not isinstance(e, type):
        for f in dataclasses.fields(e):
            yield from _walk(getattr(e, f.name))
    elif isinstance(e, tuple):
        for x in e:
            yield from _walk(x)


def _has_aggregate(sel: ast.Select) -> bool:
    exprs = [i.expr for i in sel.items] + ([sel.having] if sel.having is not None else [])
    return any(isinstance(n, ast.Call) and ((n.namespace or "").lower() == "uda" or (
        not n.namespace and n.name.lower() in qfn.AGGREGATES
        and not (n.name.lower() in ("count", "sum", "avg", "min", "max") and n.over is not None)))
        for e in exprs for n in _walk(e))


def _having_aliases(sel: ast.Select, scope: _Scope) -> ast.Expr:
    """HAVING may name a SELECT alias (``SELECT COUNT(*) AS [Count] ... HAVING [Count] >= 3``, as ASA's
    query-patterns page does): such a name stands for the aliased expression, unless it is a GROUP BY
    key. Inside aggregate arguments names are the input's columns, as everywhere."""
    aliases = {i.alias.lower(): i.expr for i in sel.items if i.alias and not isinstance(i.expr, ast.Star)}
    keys = scope.group_keys or {}

    def sub(e):
        if isinstance(e, ast.Name) and len(e.parts) == 1 and e.parts[0].lower() in aliases \
                and _canon(e, scope) not in keys:
            return aliases[e.parts[0].lower()]
        if isinstance(e, ast.Call) and not e.namespace and e.name.lower() in qfn.AGGREGATES:
            return e
        if isinstance(e, tuple):
            return tuple(sub(x) for x in e)
        if dataclasses.is_dataclass(e) and isinstance(e, ast.Expr):
            changes = {f.name: sub(getattr(e, f.name)) for f in dataclasses.fields(e)
                       if isinstance(getattr(e, f.name), (ast.Expr, tuple))}
            return dataclasses.replace(e, **changes) if changes else e
        return e

    assert sel.having is not None
    return sub(sel.having)


def _conjuncts(e: ast.Expr) -> list[ast.Expr]:
    if isinstance(e, ast.Binary) and e.op == "and":
        return _conjuncts(e.left) + _conjuncts(e.right)
    return [e]


def _aliases_of(e: ast.Expr, scope: _Scope) -> set[str] | None:
    """The FROM aliases an expression reads; None when it reads an unqualified name."""
    found: set[str] = set()
    aliases = scope.aliases()
    for n in _walk(e):
        if isinstance(n, ast.Name):
            first = n.parts[0].lower()
            if first not in aliases:
                return None
            found.add(first)
    return found


def _unqualify(e: ast.Expr, alias: str) -> ast.Expr:
    """Rewrite ``alias.x`` to ``x`` (for binding against that source alone)."""
    if isinstance(e, ast.Name) and len(e.parts) > 1 and e.parts[0].lower() == alias.lower():
        return ast.Name(e.parts[1:], e.pos)
    if dataclasses.is_dataclass(e):
        changes = {}
        for f in dataclasses.fields(e):
            v = getattr(e, f.name)
            if isinstance(v, ast.Expr):
                changes[f.name] = _unqualify(v, alias)
            elif isinstance(v, tuple) and v and all(isinstance(x, ast.Expr) for x in v):
                changes[f.name] = tuple(_unqualify(x, alias) for x in v)
        return dataclasses.replace(e, **changes) if changes else e
    return e


def _is_datediff(e: ast.Expr) -> bool:
    return (isinstance(e, ast.Call) and e.name.lower() == "datediff" and not e.namespace and len(e.args) == 3
            and not e.star and e.over is None)


def _datediff_bound(e: ast.Expr, left: set[str], right: str) -> tuple[str, int, int] | None:
    """``DATEDIFF(unit, a, b) BETWEEN lo AND hi`` (or ``= n``: a zero-width bound, the same instant
    when n = 0) → (unit, lo, hi) for right.ts − left.ts, else None."""
    if isinstance(e, ast.Binary) and e.op == "=" and (_is_datediff(e.left) or _is_datediff(e.right)):
        call, n = (e.left, e.right) if _is_datediff(e.left) else (e.right, e.left)
        if not isinstance(n, ast.Literal):
            return None
        e = ast.Between(call, n, n, False, e.pos)
    if not (isinstance(e, ast.Between) and not e.negated and _is_datediff(e.operand)):
        return None
    assert isinstance(e.operand, ast.Call)
    unit_e, a, b = e.operand.args
    if not all(isinstance(x, ast.Name) and len(x.parts) == 1 for x in (a, b)):
        return None
    unit, us = _unit_us(unit_e)
    lo, hi = _int_literal(e.low, "the DATEDIFF bound"), _int_literal(e.high, "the DATEDIFF bound")
    if lo > hi:
        raise QueryError("the DATEDIFF bound is empty (low > high)", *e.pos)
    if max(abs(lo), abs(hi)) * us > MAX_WINDOW_US:
        raise QueryError("a JOIN's DATEDIFF bound may span at most 7 days", *e.pos)
    first, second = a.parts[0].lower(), b.parts[0].lower()
    if first in left and second == right:
        return (unit, lo, hi)
    if first == right and second in left:
        return (unit, -hi, -lo)
    raise QueryError("DATEDIFF in JOIN ... ON takes the two joined aliases", *e.operand.pos)


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _datediff_limit(e: ast.Expr, left: set[str], right: str) -> tuple[int | None, int | None] | None:
    """``DATEDIFF(unit, a, b) < n`` (also ``<= > >=``, either side) → (low, high) µs limits of
    right.ts − left.ts (one of them None), else None. The difference is exact, so ``< 10`` seconds
    is at most 10 s − 1 µs."""
    if not (isinstance(e, ast.Binary) and e.op in _FLIP and (_is_datediff(e.left) or _is_datediff(e.right))):
        return None
    call, n, op = (e.left, e.right, e.op) if _is_datediff(e.left) else (e.right, e.left, _FLIP[e.op])
    assert isinstance(call, ast.Call)
    unit_e, a, b = call.args
    if not isinstance(n, ast.Literal) or not all(isinstance(x, ast.Name) and len(x.parts) == 1 for x in (a, b)):
        return None
    _, us = _unit_us(unit_e)
    v = _int_literal(n, "the DATEDIFF bound") * us
    first, second = a.parts[0].lower(), b.parts[0].lower()
    if first == right and second in left:  # DATEDIFF(unit, right, left): the same limit, mirrored
        v, op = -v, _FLIP[op]
    elif not (first in left and second == right):
        raise QueryError("DATEDIFF in JOIN ... ON takes the two joined aliases", *call.pos)
    return {"<": (None, v - 1), "<=": (None, v), ">": (v + 1, None), ">=": (v, None)}[op]


def _canon(e: ast.Expr, scope: _Scope) -> str:
    """A case-insensitive text for matching SELECT expressions with GROUP BY expressions."""
    aliases = scope.aliases()

    def strip(x: ast.Expr) -> ast.Expr:
        if isinstance(x, ast.Name) and len(x.parts) > 1 and x.parts[0].lower() in aliases and len(aliases) == 1:
            return ast.Name(x.parts[1:], x.pos)
        return x

    def rebuild(x):
        x = strip(x) if isinstance(x, ast.Expr) else x
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            changes = {}
            for f in dataclasses.fields(x):
                v = getattr(x, f.name)
                if isinstance(v, ast.Expr) or isinstance(v, tuple):
                    changes[f.name] = rebuild(v)
            return dataclasses.replace(x, **changes)
        if isinstance(x, tuple):
            return tuple(rebuild(v) for v in x)
        return x

    return to_sql(rebuild(e)).lower()


def _default_name(expr: ast.Expr, index: int) -> str:
    """Name of an un-aliased SELECT item: a column keeps its (last) name, a call its function name."""
    if isinstance(expr, ast.Name):
        return expr.parts[-1]
    if isinstance(expr, ast.Field):
        return expr.name
    if isinstance(expr, ast.Call):
        return expr.name
    if isinstance(expr, ast.Cast):
        return _default_name(expr.operand, index)
    return f"Column{index}"


@dataclasses.dataclass
class _Source:
    alias: str
    name: str
    key: str | None  # SOURCE_PREFIX + alias in steps with JOIN/APPLY
    columns: tuple[str, ...] | None


class _Scope:
    """Binds the expressions of one SELECT against its sources (one, or several with JOIN/APPLY)."""

    def __init__(self, lowering: _Lowering, step: str):
        self.lw = lowering
        self.step = step
        self.sources: list[_Source] = []
        self.calls: list[UdfCall] = []
        self.aggregates: list[AggregateDef] = []
        self.analytic: list[AnalyticDef] = []
        self.group_keys: dict[str, str] | None = None
        self.uses_timestamp = False
        self.no_calls: str | None = None  # set where UDF calls cannot be hoisted
        self.phase = "select"

    def add_source(self, alias: str, written: str, source: str | None, key: str | None,
                   columns: tuple[str, ...] | None = None) -> None:
        if columns is None and source is not None:
            src = self.lw.steps.get(source.lower())
            columns = src.static_columns if src is not None else None
        self.sources.append(_Source(alias, written, key, columns))

    def aliases(self) -> set[str]:
        return {s.alias.lower() for s in self.sources} | {s.name.lower() for s in self.sources}

    def bind(self, expr: ast.Expr, phase: str) -> ast.Expr:
        self.phase = phase
        return self.expr(expr, ())

    def stage_of(self, expr: ast.Expr | None) -> int:
        """Highest call stage an expression reads (0: none)."""
        if expr is None:
            return 0
        stages = {c.column: c.stage for c in self.calls}
        return max([stages.get(n.column, 0) for n in _walk(expr) if isinstance(n, HiddenRef)], default=0)

    def expr(self, e: ast.Expr, guard: tuple[ast.Expr, ...]) -> ast.Expr:
        if self.phase == "post":
            if _is_timestamp(e):
                return HiddenRef(TS_COLUMN, e.pos)
            column = (self.group_keys or {}).get(_canon(e, self))
            if column is not None:
                return HiddenRef(column, e.pos)
            if isinstance(e, ast.Name):
                raise QueryError(f"'{to_sql(e)}' must appear in GROUP BY or inside an aggregate", *e.pos)
            if isinstance(e, ast.Call) and not e.namespace and e.name.lower() in qfn.AGGREGATES:
                return self.aggregate(e)
        elif _is_timestamp(e):
            self.uses_timestamp = True
            return HiddenRef(TS_COLUMN, e.pos)
        rec = lambda x: self.expr(x, guard)  # noqa: E731
        match e:
            case ast.Literal():
                return e
            case ast.Name(parts=parts):
                return self.name(parts, e.pos)
            case ast.Star():
                raise QueryError("'*' is only allowed alone in the SELECT list", *e.pos)
            case ast.Field(base=b, name=n):
                return ast.Field(rec(b), n, e.pos)
            case ast.Unary(op=op, operand=x):
                return ast.Unary(op, rec(x), e.pos)
            case ast.Binary(op=op, left=a, right=b):
                return ast.Binary(op, rec(a), rec(b), e.pos)
            case ast.IsNull(operand=x, negated=n):
                return ast.IsNull(rec(x), n, e.pos)
            case ast.Like(operand=x, pattern=p, negated=n, escape=esc):
                return ast.Like(rec(x), rec(p), n, rec(esc) if esc is not None else None, e.pos)
            case ast.In(operand=x, items=items, negated=n):
                return ast.In(rec(x), tuple(rec(i) for i in items), n, e.pos)
            case ast.Between(operand=x, low=lo, high=hi, negated=n):
                return ast.Between(rec(x), rec(lo), rec(hi), n, e.pos)
            case ast.Cast(operand=x, type_name=t, try_=tr):
                try:
                    canonical = types.normalize_type(t)
                except ValueError as err:
                    raise QueryError(str(err), *e.pos) from None
                if canonical == types.ANY:
                    raise QueryError("CAST to 'any' is not allowed", *e.pos)
                return ast.Cast(rec(x), canonical, tr, e.pos)
            case ast.Case():
                return self.case(e, guard)
            case ast.Call():
                return self.call(e, guard)
        raise QueryError(f"unexpected {type(e).__name__} here", *e.pos)

    def case(self, e: ast.Case, guard: tuple[ast.Expr, ...]) -> ast.Expr:
        operand = self.expr(e.operand, guard) if e.operand is not None else None
        whens = []
        branch_guard = guard
        for cond, result in e.whens:
            bcond = self.expr(cond, branch_guard)
            test = ast.Binary("=", operand, bcond, cond.pos) if operand is not None else bcond
            whens.append((bcond, self.expr(result, branch_guard + (Truth(test, True),))))
            branch_guard = branch_guard + (Truth(test, False),)
        default = self.expr(e.default, branch_guard) if e.default is not None else None
        return ast.Case(operand, tuple(whens), default, e.pos)

    def name(self, parts: tuple[str, ...], pos: ast.Pos) -> ast.Expr:
        first = parts[0].lower()
        for src in self.sources:
            if first in (src.alias.lower(), src.name.lower()):
                rest = parts[1:]
                if rest and src.columns is not None and rest[0].lower() not in (c.lower() for c in src.columns):
                    raise QueryError(f"'{rest[0]}' is not a column of '{src.alias}' (it has: "
                                     f"{', '.join(src.columns)})", *pos)
                if src.key is None:
                    return FieldRef(rest, pos) if rest else RowRef(True, pos)
                return FieldRef((src.key, *rest), pos)
        if len(self.sources) == 1:
            src = self.sources[0]
            if src.columns is not None and first not in (c.lower() for c in src.columns):
                raise QueryError(f"'{parts[0]}' is not a column of '{src.name}' (it has: {', '.join(src.columns)})",
                                 *pos)
            return FieldRef(tuple(parts), pos) if src.key is None else FieldRef((src.key, *parts), pos)
        candidates = [s for s in self.sources if s.columns is None or first in (c.lower() for c in s.columns)]
        if not candidates:
            raise QueryError(f"no source in FROM has a column '{parts[0]}'", *pos)
        return AnyFieldRef(tuple(s.key for s in candidates if s.key is not None), tuple(parts), pos)

    def call(self, e: ast.Call, guard: tuple[ast.Expr, ...]) -> ast.Expr:
        ns = (e.namespace or "").lower()
        key = e.name.lower()
        if not ns and key in _ANALYTIC and (e.over is not None or key == "isfirst"):
            return self.analytic_call(e)
        if not ns and key in qfn.AGGREGATES:
            if e.over is not None and key in AGGREGATE_KINDS and not e.over.order_by:
                return self.analytic_call(e)
            raise QueryError(f"aggregate {e.name.upper()} needs GROUP BY (and is allowed only in SELECT and HAVING)",
                             *e.pos)
        if e.over is not None:
            raise QueryError(f"OVER does not apply to {e.name}", *e.over.pos)
        if ns == "udf":
            return self.udf(e, guard)
        if ns == "uda":
            fn = self.lw.functions.lookup(e.name)
            if fn is None or fn.kind != "javascript_uda":
                known = ", ".join(f.alias for f in self.lw.functions if f.kind == "javascript_uda") or "none"
                raise QueryError(f"unknown aggregate 'uda.{e.name}'; JavaScript UDAs defined: {known}", *e.pos)
            if self.phase != "post":
                raise QueryError(f"uda.{e.name} is an aggregate: it needs GROUP BY and belongs in SELECT or HAVING",
                                 *e.pos)
            if len(e.args) != 1:
                raise QueryError(f"uda.{e.name} takes one argument", *e.pos)
            saved, self.phase = self.phase, "group"
            try:
                arg = self.expr(e.args[0], ())
            finally:
                self.phase = saved
            column = self.lw.new_hidden("agg")
            self.aggregates.append(AggregateDef(column, f"UDA.{fn.alias.upper()}", (arg,), pos=e.pos,
                                                function=fn.alias))
            return HiddenRef(column, e.pos)
        if ns:
            raise QueryError(f"unknown function '{ns}.{e.name}'", *e.pos)
        if e.star or e.distinct:
            raise QueryError(f"'{'*' if e.star else 'DISTINCT'}' only applies to aggregates", *e.pos)
        if _window(e) is not None or key in ("duration", "hop", "offset", "timeout", "maxduration"):
            raise QueryError(f"{e.name} is only allowed in GROUP BY", *e.pos)
        return self.builtin(e, guard)

    def aggregate(self, e: ast.Call) -> ast.Expr:
        name = e.name.upper()
        key = e.name.lower()
        saved = self.phase
        self.phase = "group"
        try:
            params: tuple = ()
            args = e.args
            if key in ("collecttop", "percentile_cont", "percentile_disc"):
                most = 2 if key == "collecttop" else 1
                if not 1 <= len(args) <= most or not isinstance(args[0], ast.Literal):
                    raise QueryError(f"{name} takes a constant" + (" and an optional value" if most == 2 else ""),
                                     *e.pos)
                params, args = (args[0].value,), args[1:]
                if e.over is None or not e.over.order_by:
                    raise QueryError(f"{name} needs OVER (ORDER BY ...)", *e.pos)
            elif key == "topone":
                if args or e.over is None or not e.over.order_by:
                    raise QueryError("TopOne() takes no argument and needs OVER (ORDER BY ...)", *e.pos)
            elif key == "count":
                if not e.star and len(args) != 1:
                    raise QueryError("COUNT takes * or one argument", *e.pos)
            elif key == "collect":
                if len(args) > 1:
                    raise QueryError("Collect takes at most one argument", *e.pos)
            elif len(args) != 1:
                raise QueryError(f"{name} takes one argument", *e.pos)
            if e.over is not None and key not in ("collecttop", "topone", "percentile_cont", "percentile_disc"):
                raise QueryError(f"OVER does not apply to {name} in a GROUP BY step", *e.over.pos)
            for a in args:
                if any(isinstance(n, ast.Call) and not n.namespace and n.name.lower() in qfn.AGGREGATES
                       for n in _walk(a)):
                    raise QueryError("aggregates cannot be nested", *a.pos)
            bound_args = tuple(self.expr(a, ()) for a in args)
            order = tuple((self.expr(x, ()), desc) for x, desc in (e.over.order_by if e.over else ()))
        finally:
            self.phase = saved
        column = self.lw.new_hidden("agg")
        self.aggregates.append(AggregateDef(column, name, bound_args, e.distinct, e.star, params, order, e.pos))
        return HiddenRef(column, e.pos)

    def analytic_call(self, e: ast.Call) -> ast.Expr:
        if len(self.sources) != 1 or self.phase == "post":
            raise _not_supported(f"{e.name.upper()} in a step with JOIN, APPLY or GROUP BY", e.pos)
        key = e.name.lower()
        over = e.over or ast.Over()
        saved = self.phase
        self.phase = "where"
        self.no_calls, saved_no_calls = f"{e.name.upper()}", self.no_calls
        try:
            partition = tuple(self.expr(p, ()) for p in over.partition_by)
            when = self.expr(over.when, ()) if over.when is not None else None
            duration = _duration(ast.Name((over.limit_duration[0],), over.pos), over.limit_duration[1],
                                 "LIMIT DURATION") if over.limit_duration else None
            if key == "isfirst":
                if len(e.args) != 2:
                    raise QueryError("ISFIRST takes (unit, n)", *e.pos)
                if over.limit_duration:
                    raise QueryError("ISFIRST takes no LIMIT DURATION", *over.pos)
                defn = AnalyticDef(self.lw.new_hidden("an"), "isfirst", partition=partition,
                                   duration_us=_duration(e.args[0], e.args[1], "ISFIRST interval"), when=when)
            else:
                if duration is None:
                    raise QueryError(f"{e.name.upper()} needs OVER (... LIMIT DURATION(unit, n))", *over.pos)
                if key in AGGREGATE_KINDS:
                    if e.distinct:
                        raise _not_supported(f"{e.name.upper()}(DISTINCT ...) OVER (...)", e.pos)
                    if not (e.star and key == "count") and len(e.args) != 1:
                        raise QueryError(f"{e.name.upper()} takes {'* or ' if key == 'count' else ''}one argument",
                                         *e.pos)
                    value = None if e.star else self.expr(e.args[0], ())
                    defn = AnalyticDef(self.lw.new_hidden("an"), key, value, partition=partition,
                                       duration_us=duration, when=when)
                elif key == "lag":
                    if not 1 <= len(e.args) <= 3:
                        raise QueryError("LAG takes (expression [, offset [, default]])", *e.pos)
                    offset = _int_literal(e.args[1], "the LAG offset") if len(e.args) > 1 else 1
                    if offset < 1:
                        raise QueryError("the LAG offset must be at least 1", *e.args[1].pos)
                    default = self.expr(e.args[2], ()) if len(e.args) > 2 else None
                    defn = AnalyticDef(self.lw.new_hidden("an"), "lag", self.expr(e.args[0], ()), offset, default,
                                       partition, duration, when)
                else:
                    if len(e.args) != 1:
                        raise QueryError("LAST takes one expression", *e.pos)
                    defn = AnalyticDef(self.lw.new_hidden("an"), "last", self.expr(e.args[0], ()),
                                       partition=partition, duration_us=duration, when=when)
        finally:
            self.phase = saved
            self.no_calls = saved_no_calls
        self.analytic.append(defn)
        return HiddenRef(defn.column, e.pos)

    def builtin(self, e: ast.Call, guard: tuple[ast.Expr, ...]) -> ast.Expr:
        key = e.name.lower()
        spec = qfn.lookup(key)
        if spec is None:
            if key in qfn.unimplemented():
                raise _not_supported(f"function {e.name.upper()} ({qfn.unimplemented()[key]})", e.pos)
            raise QueryError(f"unknown function '{e.name}' (user functions are called as udf.{e.name}(...))",
                             *e.pos)
        n = len(e.args)
        if n < spec.min_args or (spec.max_args is not None and n > spec.max_args):
            want = (str(spec.min_args) if spec.max_args == spec.min_args else
                    f"{spec.min_args} or more" if spec.max_args is None else f"{spec.min_args} to {spec.max_args}")
            raise QueryError(f"{spec.name} takes {want} arguments, got {n}", *e.pos)
        args = list(e.args)
        if spec.datepart_first:
            first = args[0]
            if not (isinstance(first, ast.Name) and len(first.parts) == 1):
                raise QueryError(f"{spec.name} expects a date part such as minute or day first", *first.pos)
            try:
                part = qfn.normalize_datepart(first.parts[0])
            except ValueError as err:
                raise QueryError(str(err), *first.pos) from None
            args[0] = ast.Literal(part, first.pos)
        bound = tuple(self.expr(a, guard) for a in args)
        return BuiltinCall(spec.name, spec.fn, bound, spec.null_in_null_out, e.pos)

    def udf(self, e: ast.Call, guard: tuple[ast.Expr, ...]) -> ast.Expr:
        fn = self.lw.functions.lookup(e.name)
        if fn is None:
            known = ", ".join(f.alias for f in self.lw.functions) or "none"
            raise QueryError(f"unknown function 'udf.{e.name}'; functions defined: {known}", *e.pos)
        if self.no_calls:
            raise _not_supported(f"udf.{e.name} inside {self.no_calls}", e.pos)
        lo, hi = fn.arity()
        n = len(e.args)
        if n < lo or (hi is not None and n > hi):
            want = str(lo) if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
            raise QueryError(f"udf.{e.name} takes {want} argument(s), got {n}", *e.pos)
        args = tuple(self.expr(a, guard) for a in e.args)
        guard_expr = _and_all(guard)
        stage = 1 + max([self.stage_of(a) for a in args] + [self.stage_of(guard_expr)])
        column = self.lw.new_hidden()
        self.calls.append(UdfCall(column, fn.alias, args, guard_expr, stage, self.phase, e.pos))
        return HiddenRef(column, e.pos)


def _drop_row_not_null(where: ast.Expr) -> ast.Expr | None:
    """The WHERE without its ``Alias IS NOT NULL`` conjuncts on the whole row (``RowRef``).

    The row of a single source is a record, never NULL, so such a test always holds (the seed
    query of Microsoft's ML example filters on it). Dropped, it costs no row function: a
    WHERE left empty is no WHERE. (In a JOIN a side's alias is a keyed field, not a RowRef.)
    """
    match where:
        case ast.IsNull(operand=RowRef(), negated=True):
            return None
        case ast.Binary(op="and", left=a, right=b):
            a2, b2 = _drop_row_not_null(a), _drop_row_not_null(b)
            if a2 is None or b2 is None:
                return b2 if a2 is None else a2
            return where if (a2, b2) == (a, b) else ast.Binary("and", a2, b2, where.pos)
    return where


def _and_all(conds: tuple[ast.Expr, ...]) -> ast.Expr | None:
    if not conds:
        return None
    out = conds[0]
    for c in conds[1:]:
        out = ast.Binary("and", out, c, c.pos)
    return out
