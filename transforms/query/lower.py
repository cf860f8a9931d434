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
    HIDDEN_PREFIX,
    BuiltinCall,
    FieldRef,
    HiddenRef,
    OutputBinding,
    OutputColumn,
    Plan,
    RowRef,
    SelectStep,
    Step,
    Truth,
    UdfCall,
    UnionStep,
)

DEFAULT_OUTPUT = "output"


def lower(script: ast.Script, functions: FunctionRegistry | None = None,
          inputs: Iterable[str] | None = None, outputs: Iterable[str] | None = None) -> Plan:
    """Bind a parsed query. ``inputs``/``outputs``: the declared names (None: accept any name)."""
    return _Lowering(functions or FunctionRegistry(), inputs, outputs).run(script)


def _not_supported(what: str, pos: ast.Pos) -> QueryError:
    return QueryError(f"{what} is not supported yet", *pos)


class _Lowering:
    def __init__(self, functions: FunctionRegistry, inputs: Iterable[str] | None, outputs: Iterable[str] | None):
        self.functions = functions
        self.declared_inputs = {n.lower(): n for n in inputs} if inputs is not None else None
        self.declared_outputs = {n.lower(): n for n in outputs} if outputs is not None else None
        self.inputs: dict[str, str] = {}  # lower → canonical
        self.steps: dict[str, Step] = {}  # lower → step
        self.order: list[Step] = []
        self.outputs: list[OutputBinding] = []
        self.hidden_counter = 0

    def run(self, script: ast.Script) -> Plan:
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
        return Plan(tuple(self.inputs.values()), tuple(self.order), tuple(self.outputs))

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
        for what, present, pos in (
            ("JOIN", sel.joins, sel.joins[0].pos if sel.joins else None),
            ("APPLY", sel.applies, sel.applies[0].pos if sel.applies else None),
            ("GROUP BY", sel.group_by, sel.group_by[0].pos if sel.group_by else None),
            ("HAVING", sel.having, sel.having.pos if sel.having else None),
            ("TIMESTAMP BY", sel.source.timestamp_by, sel.source.timestamp_by.pos if sel.source.timestamp_by else None),
            ("SELECT DISTINCT", sel.distinct, sel.pos),
        ):
            if present:
                raise _not_supported(what, pos)
        source = self.bind_source(sel.source)
        alias = sel.source.alias or sel.source.name
        scope = _Scope(self, name, source, alias)
        where = scope.bind(sel.where, "where") if sel.where is not None else None
        columns: list[OutputColumn] = []
        names: list[str] = []
        static = True
        for idx, item in enumerate(sel.items, start=1):
            if isinstance(item.expr, ast.Star):
                q = item.expr.qualifier
                if q is not None and q.lower() not in (alias.lower(), sel.source.name.lower()):
                    raise QueryError(f"'{q}.*' does not name the FROM source ('{alias}')", *item.pos)
                columns.append(OutputColumn(None, None))
                static = False
                continue
            col_name = item.alias or _default_name(item.expr, idx)
            if col_name.lower() in (n.lower() for n in names):
                raise QueryError(f"column '{col_name}' is selected twice; give one of them another name with AS",
                                 *item.pos)
            names.append(col_name)
            columns.append(OutputColumn(col_name, scope.bind(item.expr, "select")))
        has_calls = bool(scope.calls)
        columns = [dataclasses.replace(c, star_strip_hidden=has_calls) if c.name is None else c for c in columns]
        return SelectStep(name, source, alias, tuple(columns), where, tuple(scope.calls),
                          tuple(names) if static else None, sel.pos)

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


class _Scope:
    """Binds the expressions of one SELECT against its single source."""

    def __init__(self, lowering: _Lowering, step: str, source: str, alias: str):
        self.lw = lowering
        self.step = step
        self.source = source
        self.alias = alias
        src = lowering.steps.get(source.lower())
        self.columns = src.static_columns if src is not None else None
        self.calls: list[UdfCall] = []
        self.phase = "select"

    def bind(self, expr: ast.Expr, phase: str) -> ast.Expr:
        self.phase = phase
        return self.expr(expr, ())

    def stage_of(self, expr: ast.Expr | None) -> int:
        """Highest call stage an expression reads (0: none)."""
        if expr is None:
            return 0
        stages = {c.column: c.stage for c in self.calls}
        best = 0

        def walk(e: object) -> None:
            nonlocal best
            if isinstance(e, HiddenRef):
                best = max(best, stages[e.column])
            elif dataclasses.is_dataclass(e):
                for f in dataclasses.fields(e):
                    walk(getattr(e, f.name))
            elif isinstance(e, tuple):
                for x in e:
                    walk(x)

        walk(expr)
        return best

    def expr(self, e: ast.Expr, guard: tuple[ast.Expr, ...]) -> ast.Expr:
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
        if parts[0].lower() in (self.alias.lower(), self.source.lower()):
            if len(parts) == 1:
                return RowRef(False, pos)
            parts = parts[1:]
        if self.columns is not None and parts[0].lower() not in (c.lower() for c in self.columns):
            raise QueryError(f"'{parts[0]}' is not a column of '{self.source}' (it has: {', '.join(self.columns)})",
                             *pos)
        return FieldRef(tuple(parts), pos)

    def call(self, e: ast.Call, guard: tuple[ast.Expr, ...]) -> ast.Expr:
        if e.over is not None:
            raise _not_supported("OVER (analytic functions)", e.over.pos)
        ns = (e.namespace or "").lower()
        if ns == "udf":
            return self.udf(e, guard)
        if ns == "uda":
            raise _not_supported("JavaScript UDAs (uda.)", e.pos)
        if ns == "system" and e.name.lower() == "timestamp":
            raise _not_supported("System.Timestamp()", e.pos)
        if ns:
            raise QueryError(f"unknown function '{ns}.{e.name}'", *e.pos)
        if e.star or e.distinct:
            raise _not_supported(f"aggregate {e.name.upper()}", e.pos)
        return self.builtin(e, guard)

    def builtin(self, e: ast.Call, guard: tuple[ast.Expr, ...]) -> ast.Expr:
        key = e.name.lower()
        if key in qfn.AGGREGATES:
            raise _not_supported(f"aggregate {e.name.upper()} (GROUP BY and windows)", e.pos)
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


def _and_all(conds: tuple[ast.Expr, ...]) -> ast.Expr | None:
    if not conds:
        return None
    out = conds[0]
    for c in conds[1:]:
        out = ast.Binary("and", out, c, c.pos)
    return out
