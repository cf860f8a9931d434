"""Tokens → syntax tree for the ASA query language: a hand-written recursive-descent parser.

Strict where ASA is strict (``SELECT a, FROM i`` is an error); every error carries the
line and column of the offending token and says what was expected.

>>> parse("SELECT a INTO out FROM inp WHERE a > 1").statements[0].query.into
'out'
"""

from __future__ import annotations

import dataclasses

from transforms.errors import QueryError
from transforms.query import ast
from transforms.query.tokens import Token, tokenize

_COMPARISONS = ("=", "!=", "<>", "<", "<=", ">", ">=")
_NAMESPACES = ("udf", "uda")

# How deeply expressions and queries may nest (parentheses, calls, CASE, unary operators, and
# each link of a chain of + - * / %, which nests the syntax tree one level): deeper text is a
# QueryError, never a RecursionError, and stays well inside what the code generated from it may
# nest (Python allows 200 nested parentheses; a level generates at most three).
MAX_DEPTH = 60
# AND/OR chains longer than this become balanced trees (three-valued AND and OR are
# associative), so a WHERE with hundreds of ORs nests only log2(n) deep.
_BALANCE_AFTER = 8


def parse(text: str) -> ast.Script:
    """Parse a whole query (one or more statements)."""
    return Parser(tokenize(text)).script()


def parse_expression(text: str) -> ast.Expr:
    """Parse a single expression (for tests and the Python API)."""
    p = Parser(tokenize(text))
    expr = p.expr()
    p.expect_eof()
    return expr


def _too_deep(line: int, column: int) -> QueryError:
    return QueryError(f"the query nests too deeply (more than {MAX_DEPTH} levels of parentheses, calls or "
                      "operators); simplify it or split it into WITH steps", line, column)


def check_depth(root: ast.Expr) -> None:
    """QueryError at the first node deeper than MAX_DEPTH (iterative: safe on any tree)."""
    stack: list[tuple[object, int]] = [(root, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, tuple):
            stack.extend((x, level) for x in node)
            continue
        if not isinstance(node, ast.Expr):
            continue
        if level > MAX_DEPTH:
            raise _too_deep(*node.pos)
        for f in dataclasses.fields(node):  # type: ignore[arg-type]
            value = getattr(node, f.name)
            if isinstance(value, (ast.Expr, tuple)):
                stack.append((value, level + 1))


class Parser:
    def __init__(self, tokens: list[Token]):
        self.toks = tokens
        self.i = 0
        self.depth = 0

    def enter(self) -> None:
        """One level deeper in the parser's recursion (checked before Python's own limit is near)."""
        if self.depth >= MAX_DEPTH:
            t = self.tok
            raise _too_deep(t.line, t.column)
        self.depth += 1

    def leave(self) -> None:
        self.depth -= 1

    def word(self, *words: str, tok: Token | None = None) -> bool:
        """A non-reserved word with a meaning here (TIMESTAMP BY, PARTITION BY, LIMIT, APPLY, CAST, ...)."""
        t = tok or self.tok
        return t.kind == "ident" and t.text.lower() in words

    # -- token helpers -------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def advance(self) -> Token:
        t = self.toks[self.i]
        if t.kind != "eof":
            self.i += 1
        return t

    def error(self, expected: str, tok: Token | None = None) -> QueryError:
        t = tok or self.tok
        return QueryError(f"expected {expected}, found {t.describe()}", t.line, t.column)

    def accept_kw(self, *words: str) -> Token | None:
        if self.tok.is_keyword(*words):
            return self.advance()
        return None

    def expect_kw(self, word: str) -> Token:
        if not self.tok.is_keyword(word):
            raise self.error(word.upper())
        return self.advance()

    def accept_op(self, *ops: str) -> Token | None:
        if self.tok.is_op(*ops):
            return self.advance()
        return None

    def expect_op(self, op: str, what: str | None = None) -> Token:
        if not self.tok.is_op(op):
            raise self.error(what or f"'{op}'")
        return self.advance()

    def expect_eof(self) -> None:
        if self.tok.kind != "eof":
            raise self.error("end of query")

    def name(self, what: str) -> str:
        if self.tok.kind in ("ident", "qident"):
            return self.advance().text
        raise self.error(what)

    @staticmethod
    def pos(t: Token) -> ast.Pos:
        return (t.line, t.column)

    # -- statements ----------------------------------------------------------------------------
    def script(self) -> ast.Script:
        statements = []
        tables = []
        while True:
            while self.accept_op(";"):
                pass
            if self.tok.kind == "eof":
                break
            if self.tok.is_keyword("create"):
                tables.append(self.create_table())
            else:
                statements.append(self.statement())
            if not (self.tok.is_op(";", "(") or self.tok.kind == "eof"
                    or self.tok.is_keyword("select", "with", "create")):
                raise self.error("';', SELECT, WITH or end of query")
        if not statements:
            if tables:
                raise QueryError("the query has CREATE TABLE but no SELECT", *tables[-1].pos)
            raise QueryError("the query is empty", 1, 1)
        return ast.Script(tuple(statements), tuple(tables))

    def create_table(self) -> ast.CreateTable:
        """``CREATE TABLE input (column type [, ...])`` (ASA: the schema of an input's events)."""
        start = self.expect_kw("create")
        self.expect_kw("table")
        name = self.name("an input name after CREATE TABLE")
        self.expect_op("(", "'(' and the column list")
        columns = []
        while True:
            col = self.name("a column name")
            type_tok = self.tok
            columns.append((col, self.type_name(), self.pos(type_tok)))
            if not self.accept_op(","):
                break
        self.expect_op(")", "',' or ')' closing the column list")
        return ast.CreateTable(name, tuple(columns), self.pos(start))

    def type_name(self) -> str:
        t = self.tok
        if t.kind not in ("ident", "qident"):
            raise self.error("a type name (bigint, float, nvarchar(max), datetime, bit, record, array)")
        type_name = self.advance().text
        if self.accept_op("("):
            size = self.tok
            if size.kind not in ("ident", "number"):
                raise self.error("a size such as max")
            self.advance()
            self.expect_op(")")
            type_name = f"{type_name}({size.text})"
        return type_name

    def statement(self) -> ast.Statement:
        start = self.tok
        steps: list[ast.WithStep] = []
        if self.accept_kw("with"):
            while True:
                t = self.tok
                name = self.name("a step name after WITH")
                self.expect_kw("as")
                self.expect_op("(", "'(' after AS")
                query = self.query_expr()
                self.expect_op(")", "')' closing the step")
                steps.append(ast.WithStep(name, query, self.pos(t)))
                if not self.accept_op(","):
                    break
        if not (self.tok.is_keyword("select") or self.tok.is_op("(")):
            raise self.error("SELECT" if steps else "SELECT or WITH")
        return ast.Statement(tuple(steps), self.query_expr(), self.pos(start))

    def query_expr(self) -> ast.QueryExpr:
        start = self.tok
        parts = self.query_operand()
        while self.accept_kw("union"):
            self.accept_kw("all")
            if not (self.tok.is_keyword("select") or self.tok.is_op("(")):
                raise self.error("SELECT after UNION")
            for part in self.query_operand():
                if part.into is not None:
                    raise QueryError("INTO belongs to the first SELECT of a UNION", *part.into_pos)
                parts.append(part)
        return parts[0] if len(parts) == 1 else ast.Union(tuple(parts), self.pos(start))

    def query_operand(self) -> list[ast.Select]:
        """A SELECT, or a parenthesised query: ``(SELECT ...) UNION (SELECT ...)``."""
        if not self.tok.is_op("("):
            return [self.select()]
        self.advance()
        self.enter()
        try:
            if not (self.tok.is_keyword("select") or self.tok.is_op("(")):
                raise self.error("SELECT")
            inner = self.query_expr()
            self.expect_op(")", "')' closing the query")
        finally:
            self.leave()
        return list(inner.parts) if isinstance(inner, ast.Union) else [inner]

    def select(self) -> ast.Select:
        start = self.expect_kw("select")
        distinct = bool(self.accept_kw("distinct"))
        items = [self.select_item()]
        while self.accept_op(","):
            items.append(self.select_item())
        into, into_pos = None, (0, 0)
        if self.accept_kw("into"):
            into_pos = self.pos(self.tok)
            into = self.name("an output name after INTO")
        if not self.tok.is_keyword("from"):
            raise self.error("',' or FROM" if into is None else "FROM")
        self.advance()
        source = self.table_ref()
        joins: list[ast.Join] = []
        applies: list[ast.Apply] = []
        while True:
            t = self.tok
            if self.tok.is_keyword("join", "inner", "left"):
                kind = "inner"
                if self.accept_kw("left"):
                    self.accept_kw("outer")
                    kind = "left"
                else:
                    self.accept_kw("inner")
                self.expect_kw("join")
                table = self.table_ref()
                self.expect_kw("on")
                joins.append(ast.Join(kind, table, self.expr(), self.pos(t)))
            elif self.tok.is_keyword("cross", "outer") and self.word("apply", tok=self.peek()):
                kind = self.advance().text.lower()
                self.advance()
                call = self.primary()
                if not isinstance(call, ast.Call):
                    raise QueryError("expected a function call after APPLY", t.line, t.column)
                self.accept_kw("as")
                alias = self.name("an alias for the APPLY result")
                applies.append(ast.Apply(kind, call, alias, self.pos(t)))
            else:
                break
        where = self.expr() if self.accept_kw("where") else None
        group_by: list[ast.Expr] = []
        if self.accept_kw("group"):
            self.expect_kw("by")
            group_by.append(self.expr())
            while self.accept_op(","):
                group_by.append(self.expr())
        having = self.expr() if self.accept_kw("having") else None
        return ast.Select(tuple(items), source, into, tuple(joins), tuple(applies), where, tuple(group_by),
                          having, distinct, into_pos, self.pos(start))

    def select_item(self) -> ast.SelectItem:
        t = self.tok
        if t.is_keyword("from", "into") or t.kind == "eof":
            raise self.error("a column or expression")
        if self.accept_op("*"):
            return ast.SelectItem(ast.Star(None, self.pos(t)), None, self.pos(t))
        if t.kind in ("ident", "qident") and self.peek().is_op("="):
            # T-SQL's "column_alias = expression", which ASA's SELECT also accepts.
            self.advance()
            self.advance()
            return ast.SelectItem(self.expr(), t.text, self.pos(t))
        expr = self.expr()
        alias = None
        if self.accept_kw("as"):
            # AS 'name' is accepted too (Microsoft's JSON-parsing page: V.smValue AS 'smVersion').
            alias = self.advance().text if self.tok.kind == "string" else self.name("a column name after AS")
        elif self.tok.kind in ("ident", "qident"):
            alias = self.advance().text
        return ast.SelectItem(expr, alias, self.pos(t))

    def table_ref(self) -> ast.TableRef:
        t = self.tok
        name = self.name("an input or step name")
        alias = None
        if self.accept_kw("as"):
            alias = self.name("an alias after AS")
        elif self.tok.kind in ("ident", "qident") and not self.clause_word():
            alias = self.advance().text
        timestamp_by: ast.Expr | None = None
        timestamp_over: list[ast.Expr] = []
        partition_by: list[ast.Expr] = []
        while True:
            if self.word("timestamp") and self.peek().is_keyword("by"):
                self.advance()
                self.expect_kw("by")
                timestamp_by = self.expr()
                if self.accept_kw("over"):
                    timestamp_over = self.expr_list()
            elif self.word("partition") and self.peek().is_keyword("by"):
                self.advance()
                self.expect_kw("by")
                partition_by = self.expr_list()
            else:
                break
        return ast.TableRef(name, alias, timestamp_by, tuple(timestamp_over), tuple(partition_by), self.pos(t))

    def clause_word(self) -> bool:
        """TIMESTAMP BY / PARTITION BY after a FROM name: a clause, not an alias."""
        return self.word("timestamp", "partition") and self.tok.kind == "ident" and self.peek().is_keyword("by")

    def expr_list(self) -> list[ast.Expr]:
        items = [self.expr()]
        while self.accept_op(","):
            items.append(self.expr())
        return items

    # -- expressions ---------------------------------------------------------------------------
    def expr(self) -> ast.Expr:
        outermost = self.depth == 0
        self.enter()
        try:
            e = self.or_expr()
        finally:
            self.leave()
        if outermost:
            check_depth(e)  # operator chains nest the tree without recursing in the parser
        return e

    def or_expr(self) -> ast.Expr:
        return self.logical_chain("or", self.and_expr)

    def and_expr(self) -> ast.Expr:
        return self.logical_chain("and", self.not_expr)

    def logical_chain(self, op: str, operand) -> ast.Expr:
        items = [operand()]
        ops: list[ast.Pos] = []
        while (t := self.accept_kw(op)) is not None:
            ops.append(self.pos(t))
            items.append(operand())
        if len(items) <= _BALANCE_AFTER:
            left = items[0]
            for pos, right in zip(ops, items[1:], strict=True):
                left = ast.Binary(op, left, right, pos)
            return left

        def build(lo: int, hi: int) -> ast.Expr:  # items[lo:hi], split in the middle
            if hi - lo == 1:
                return items[lo]
            mid = (lo + hi + 1) // 2
            return ast.Binary(op, build(lo, mid), build(mid, hi), ops[mid - 1])

        return build(0, len(items))

    def not_expr(self) -> ast.Expr:
        if (t := self.accept_kw("not")) is not None:
            self.enter()
            try:
                return ast.Unary("not", self.not_expr(), self.pos(t))
            finally:
                self.leave()
        return self.predicate()

    def predicate(self) -> ast.Expr:
        left = self.additive()
        t = self.tok
        if t.kind == "op" and t.text in _COMPARISONS:
            self.advance()
            op = "!=" if t.text == "<>" else t.text
            return ast.Binary(op, left, self.additive(), self.pos(t))
        if self.accept_kw("is"):
            negated = bool(self.accept_kw("not"))
            self.expect_kw("null")
            return ast.IsNull(left, negated, self.pos(t))
        negated = False
        if t.is_keyword("not") and self.peek().is_keyword("like", "in", "between"):
            self.advance()
            negated = True
        if self.accept_kw("like"):
            pattern = self.additive()
            escape = self.additive() if self.accept_kw("escape") else None
            return ast.Like(left, pattern, negated, escape, self.pos(t))
        if self.accept_kw("in"):
            self.expect_op("(", "'(' after IN")
            items = self.expr_list()
            self.expect_op(")", "',' or ')' closing the IN list")
            return ast.In(left, tuple(items), negated, self.pos(t))
        if self.accept_kw("between"):
            low = self.additive()
            self.expect_kw("and")
            high = self.additive()
            return ast.Between(left, low, high, negated, self.pos(t))
        return left

    def additive(self) -> ast.Expr:
        left = self.multiplicative()
        # & ^ | (bitwise) bind like + and -, as in T-SQL, whose operator precedence ASA follows.
        while (t := self.accept_op("+", "-", "||", "&", "^", "|")) is not None:
            left = ast.Binary("+" if t.text == "||" else t.text, left, self.multiplicative(), self.pos(t))
        return left

    def multiplicative(self) -> ast.Expr:
        left = self.unary()
        while (t := self.accept_op("*", "/", "%")) is not None:
            left = ast.Binary(t.text, left, self.unary(), self.pos(t))
        return left

    def unary(self) -> ast.Expr:
        if (t := self.accept_op("~")) is not None:
            return ast.Unary("~", self.unary(), self.pos(t))
        if (t := self.accept_op("-", "+")) is not None:
            self.enter()
            try:
                operand = self.unary()
            finally:
                self.leave()
            if t.text == "-" and isinstance(operand, ast.Literal) and isinstance(operand.value, (int, float)) \
                    and not isinstance(operand.value, bool):
                return ast.Literal(-operand.value, self.pos(t))
            return ast.Unary(t.text, operand, self.pos(t))
        return self.postfix()

    def postfix(self) -> ast.Expr:
        expr = self.primary()
        while self.tok.is_op(".") and not isinstance(expr, (ast.Name, ast.Star)):
            self.advance()
            expr = ast.Field(expr, self.field_name(), expr.pos)
        return expr

    def field_name(self) -> str:
        t = self.tok
        if t.kind in ("ident", "qident"):
            return self.advance().text
        if t.kind == "keyword":  # a field may be called e.g. "timestamp" or "end"
            return self.advance().text
        raise self.error("a field name after '.'")

    def primary(self) -> ast.Expr:
        t = self.tok
        p = self.pos(t)
        if t.kind == "number":
            self.advance()
            text = t.text
            if any(c in text for c in ".eE"):
                value = float(text)
                if value in (float("inf"), float("-inf")):
                    raise QueryError(f"the number {text} is out of the float range", *p)
                return ast.Literal(value, p)
            return ast.Literal(int(text), p)
        if t.kind == "string":
            self.advance()
            return ast.Literal(t.text, p)
        if t.is_keyword("null"):
            self.advance()
            return ast.Literal(None, p)
        if self.word("true", "false") and not self.peek().is_op("(", "."):
            self.advance()
            return ast.Literal(t.text.lower() == "true", p)
        if t.is_op("("):
            self.advance()
            inner = self.expr()
            self.expect_op(")", "')'")
            return inner
        if t.is_keyword("case"):
            return self.case()
        if self.word("cast", "try_cast") and self.peek().is_op("("):
            return self.cast()
        if t.is_keyword("left", "right") and self.peek().is_op("("):
            self.advance()
            return self.call(t.text.upper(), None, p)
        if t.kind == "qident" and t.quote == '"' and not self.peek().is_op(".", "("):
            # ASA reads "text" standing alone in an expression as a string: Microsoft's examples
            # ("Alert : Sensor above threshold" AS AlertMessage, WHEN Make = "Make1" THEN "A")
            # output the text. As an alias, or before '.'/'(', it stays a quoted name.
            self.advance()
            return ast.Literal(t.text, p)
        if t.kind in ("ident", "qident"):
            return self.name_or_call()
        if t.is_op("*"):
            raise self.error("an expression ('*' is only allowed alone in the SELECT list)")
        raise self.error("an expression")

    def name_or_call(self) -> ast.Expr:
        first = self.advance()
        p = self.pos(first)
        parts = [first.text]
        quoted_last = first.kind == "qident"
        while self.tok.is_op("."):
            nxt = self.peek()
            if nxt.is_op("*"):
                self.advance()
                self.advance()
                return ast.Star(parts[0], p, tuple(parts[1:]))
            self.advance()
            t = self.tok
            parts.append(self.field_name())
            quoted_last = t.kind == "qident"
        if self.tok.is_op("(") and not quoted_last:
            namespace = ".".join(parts[:-1]).lower() or None
            return self.call(parts[-1], namespace, p)
        return ast.Name(tuple(parts), p)

    def call(self, name: str, namespace: str | None, p: ast.Pos) -> ast.Call:
        self.expect_op("(")
        args: list[ast.Expr] = []
        distinct = star = False
        if self.accept_op("*"):
            star = True
        elif not self.tok.is_op(")"):
            distinct = bool(self.accept_kw("distinct"))
            args = self.expr_list()
        self.expect_op(")", "',' or ')' closing the argument list")
        over = self.over() if self.tok.is_keyword("over") else None
        return ast.Call(name, tuple(args), namespace, distinct, star, over, p)

    def over(self) -> ast.Over:
        t = self.expect_kw("over")
        self.expect_op("(", "'(' after OVER")
        partition: list[ast.Expr] = []
        order: list[tuple[ast.Expr, bool]] = []
        limit = None
        when = None
        if self.word("partition") and self.peek().is_keyword("by"):
            self.advance()
            self.expect_kw("by")
            partition = self.expr_list()
        if self.tok.kind == "ident" and self.tok.text.lower() == "order" and self.peek().is_keyword("by"):
            self.advance()
            self.advance()
            while True:
                e = self.expr()
                desc = False
                if self.tok.kind == "ident" and self.tok.text.lower() in ("asc", "desc"):
                    desc = self.advance().text.lower() == "desc"
                order.append((e, desc))
                if not self.accept_op(","):
                    break
        if self.word("limit"):
            self.advance()
            d = self.tok
            if not (d.kind == "ident" and d.text.lower() == "duration"):
                raise self.error("DURATION after LIMIT")
            self.advance()
            self.expect_op("(")
            unit = self.name("a time unit")
            self.expect_op(",")
            size = self.expr()
            self.expect_op(")")
            limit = (unit, size)
        if self.accept_kw("when"):
            when = self.expr()
        self.expect_op(")", "')' closing OVER")
        return ast.Over(tuple(partition), limit, when, tuple(order), self.pos(t))

    def case(self) -> ast.Case:
        t = self.expect_kw("case")
        operand = None if self.tok.is_keyword("when") else self.expr()
        whens = []
        while self.accept_kw("when"):
            cond = self.expr()
            self.expect_kw("then")
            whens.append((cond, self.expr()))
        if not whens:
            raise self.error("WHEN")
        default = self.expr() if self.accept_kw("else") else None
        self.expect_kw("end")
        return ast.Case(operand, tuple(whens), default, self.pos(t))

    def cast(self) -> ast.Cast:
        t = self.advance()
        self.expect_op("(")
        operand = self.expr()
        self.expect_kw("as")
        type_name = self.type_name()
        self.expect_op(")", "')' closing CAST")
        return ast.Cast(operand, type_name, t.text.lower() == "try_cast", self.pos(t))
