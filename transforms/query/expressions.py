"""Bound expressions → Python functions, generated once per step (not a per-row interpreter).

A step's WHERE and SELECT list become the source of one small Python function, compiled
with ``exec`` against the runtime helpers. ``CompiledFunction`` pickles as that source and
its constants, so it travels to workers on any runner and is rebuilt there.

>>> from transforms.query.plan import FieldRef
>>> from transforms.query import ast
>>> f = compile_projection([("b", ast.Binary("+", FieldRef(("a",)), ast.Literal(1)))], None)
>>> f({"A": 41})
{'b': 42}
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from transforms import types
from transforms.query import ast, runtime
from transforms.query.plan import AnyFieldRef, BuiltinCall, FieldRef, HiddenRef, OutputColumn, RowRef, Truth

_BINARY = {
    "+": "_add", "-": "_sub", "*": "_mul", "/": "_div", "%": "_mod",
    "&": "_band", "|": "_bor", "^": "_bxor",
    "=": "_eq", "!=": "_ne", "<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge",
    "and": "_and", "or": "_or",
}

_HELPERS = {
    "_add": runtime.add, "_sub": runtime.sub, "_mul": runtime.mul, "_div": runtime.div, "_mod": runtime.mod,
    "_eq": runtime.eq, "_ne": runtime.ne, "_lt": runtime.lt, "_le": runtime.le, "_gt": runtime.gt,
    "_ge": runtime.ge, "_and": runtime.and_, "_or": runtime.or_, "_not": runtime.not_, "_neg": runtime.neg,
    "_like": runtime.like, "_likec": runtime.like_compiled, "_in": runtime.in_, "_between": runtime.between,
    "_ci": runtime.ci_get, "_field": runtime.field, "_path": runtime.path, "_strip": runtime.strip_hidden,
    "_merge": runtime.merge_star, "_mergerec": runtime.merge_record,
    "_any": runtime.any_field, "_truth": runtime.truth, "_nn": runtime.call_nn,
    "_cast": types.cast, "_try_cast": types.try_cast,
    "_band": runtime.bit_and, "_bor": runtime.bit_or, "_bxor": runtime.bit_xor, "_bnot": runtime.bit_not,
}


class CompiledFunction:
    """A generated function of one row; pickled as source + constants, rebuilt on unpickling."""

    def __init__(self, source: str, consts: dict[str, Any], entry: str = "_f"):
        self.source = source
        self.consts = consts
        self.entry = entry
        self.fn = self._build()

    def _build(self) -> Any:
        env: dict[str, Any] = {"__builtins__": {"None": None, "True": True, "False": False}, **_HELPERS,
                               **self.consts}
        exec(compile(self.source, "<asa-step>", "exec"), env)  # noqa: S102 - source generated from the plan
        return env[self.entry]

    def __call__(self, row: dict) -> Any:
        return self.fn(row)

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "consts": self.consts, "entry": self.entry}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.fn = self._build()

    def __repr__(self) -> str:
        return f"CompiledFunction({self.source!r})"


class _Generator:
    def __init__(self) -> None:
        self.consts: dict[str, Any] = {}
        self.n = 0

    def const(self, value: Any) -> str:
        self.n += 1
        name = f"_c{self.n}"
        self.consts[name] = value
        return name

    def tmp(self) -> str:
        self.n += 1
        return f"_t{self.n}"

    def expr(self, e: ast.Expr) -> str:
        match e:
            case ast.Literal(value=v):
                if v is None or isinstance(v, (bool, int, float, str)):
                    return repr(v)
                return self.const(v)
            case RowRef(strip_hidden=strip):
                return "_strip(r)" if strip else "r"
            case FieldRef(path=p):
                if len(p) == 1:
                    k = repr(p[0])
                    return f"(r[{k}] if {k} in r else _ci(r, {k}))"
                return f"_path(r, {p!r})"
            case AnyFieldRef(sources=keys, path=p):
                return f"_any(r, {keys!r}, {p!r})"
            case HiddenRef(column=c):
                return f"r[{c!r}]"
            case ast.Field(base=b, name=n):
                return f"_field({self.expr(b)}, {n!r})"
            case ast.Unary(op=op, operand=x):
                if op == "not":
                    return f"_not({self.expr(x)})"
                if op == "-":
                    return f"_neg({self.expr(x)})"
                if op == "~":
                    return f"_bnot({self.expr(x)})"
                return self.expr(x)
            case ast.Binary(op=op, left=a, right=b):
                return f"{_BINARY[op]}({self.expr(a)}, {self.expr(b)})"
            case ast.IsNull(operand=RowRef(), negated=n):  # a single source's row is never NULL
                return "True" if n else "False"
            case ast.IsNull(operand=x, negated=n):
                return f"({self.tested(x)} is {'not ' if n else ''}None)"
            case ast.Like(operand=x, pattern=p, negated=n, escape=esc):
                if isinstance(p, ast.Literal) and isinstance(p.value, str) and (
                        esc is None or isinstance(esc, ast.Literal)):
                    regex = runtime.like_regex(p.value, esc.value if esc is not None else None)
                    code = f"_likec({self.expr(x)}, {self.const(re.compile(regex.pattern, regex.flags))})"
                else:
                    code = f"_like({self.expr(x)}, {self.expr(p)}, {self.expr(esc) if esc is not None else 'None'})"
                return f"_not({code})" if n else code
            case ast.In(operand=x, items=items, negated=n):
                code = f"_in({self.expr(x)}, ({''.join(self.expr(i) + ', ' for i in items)}))"
                return f"_not({code})" if n else code
            case ast.Between(operand=x, low=lo, high=hi, negated=n):
                code = f"_between({self.expr(x)}, {self.expr(lo)}, {self.expr(hi)})"
                return f"_not({code})" if n else code
            case ast.Case(operand=op, whens=whens, default=d):
                # One flat conditional expression (Python's if-else chains to the right), so a CASE
                # with hundreds of WHENs does not nest parentheses in the generated code.
                default = self.expr(d) if d is not None else "None"
                if op is not None:
                    t = self.tmp()
                    # The operand is evaluated once, before the first WHEN.
                    chain = "".join(f"{self.expr(r)} if _eq({t}, {self.expr(c)}) is True else " for c, r in whens)
                    return f"(({t} := {self.expr(op)}), ({chain}{default}))[1]"
                chain = "".join(f"{self.expr(r)} if {self.tested(c)} is True else " for c, r in whens)
                return f"({chain}{default})"
            case ast.Cast(operand=x, type_name=t, try_=tr):
                return f"{'_try_cast' if tr else '_cast'}({self.expr(x)}, {t!r})"
            case BuiltinCall(fn=fn, args=args, null_in_null_out=nn):
                f = self.const(fn)
                inner = ", ".join(self.expr(a) for a in args)
                if nn and args:
                    return f"_nn({f}, {inner})"
                return f"{f}({inner})"
            case Truth(operand=x, want=w):
                return f"({self.tested(x)} is {'' if w else 'not '}True)"
        raise TypeError(f"cannot compile {type(e).__name__}")

    def tested(self, e: ast.Expr) -> str:
        """An operand of ``is``: a literal number or text becomes a constant (``1 is True`` is a
        SyntaxWarning in Python, ``_c1 is True`` is not; both are False)."""
        if isinstance(e, ast.Literal) and e.value is not None and not isinstance(e.value, bool):
            return self.const(e.value)
        return self.expr(e)


def compile_predicate(expr: ast.Expr) -> CompiledFunction:
    """row → True when the (three-valued) condition holds."""
    g = _Generator()
    body = g.tested(expr)
    return CompiledFunction(f"def _f(r):\n    return {body} is True\n", g.consts)


def compile_predicate_3vl(expr: ast.Expr) -> CompiledFunction:
    """row → True, False or None (NULL): the condition's three-valued result."""
    g = _Generator()
    body = g.expr(expr)
    return CompiledFunction(f"def _f(r):\n    return _truth({body})\n", g.consts)


def compile_value(expr: ast.Expr) -> CompiledFunction:
    """row → the value of one expression."""
    g = _Generator()
    body = g.expr(expr)
    return CompiledFunction(f"def _f(r):\n    return {body}\n", g.consts)


def compile_args(args: Sequence[ast.Expr]) -> CompiledFunction:
    """row → tuple of argument values."""
    g = _Generator()
    body = "".join(g.expr(a) + ", " for a in args)
    return CompiledFunction(f"def _f(r):\n    return ({body})\n", g.consts)


def compile_projection(columns: Sequence[tuple[str, ast.Expr] | OutputColumn],
                       where: ast.Expr | None) -> CompiledFunction:
    """row → projected row, or None when ``where`` does not hold.

    ``columns`` are (name, expr) pairs or OutputColumns (a star item has name None).
    """
    g = _Generator()
    cols = [c if isinstance(c, OutputColumn) else OutputColumn(c[0], c[1]) for c in columns]
    lines = ["def _f(r):"]
    if where is not None:
        lines.append(f"    if {g.tested(where)} is not True:")
        lines.append("        return None")
    stars = [c for c in cols if c.name is None]
    if len(cols) == 1 and stars and stars[0].expr is None:
        lines.append("    return _strip(r)" if stars[0].star_strip_hidden else "    return r")
    elif not stars:
        items = ", ".join(f"{c.name!r}: {g.expr(c.expr)}" for c in cols)
        lines.append(f"    return {{{items}}}")
    else:
        lines.append("    o = {}")
        seen_star = False
        for c in cols:
            if c.name is None:
                if c.expr is None:
                    lines.append(f"    _merge(o, r, {c.star_strip_hidden})")
                else:
                    lines.append(f"    _mergerec(o, {g.expr(c.expr)})")
                seen_star = True
            elif seen_star:
                # Columns on the left take precedence over columns on the right (ASA SELECT).
                t = g.tmp()
                lines.append(f"    {t} = {g.expr(c.expr)}")
                lines.append(f"    if {c.name.lower()!r} not in {{k.lower() for k in o}}:")
                lines.append(f"        o[{c.name!r}] = {t}")
            else:
                lines.append(f"    o[{c.name!r}] = {g.expr(c.expr)}")
        lines.append("    return o")
    return CompiledFunction("\n".join(lines) + "\n", g.consts)
