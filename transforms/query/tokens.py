"""Query text → tokens, each with its 1-based line and column."""

from __future__ import annotations

from dataclasses import dataclass

from transforms.errors import QueryError

# Reserved words: they cannot be bare identifiers (bracket-quote them: [from]). ASA reserves
# T-SQL's words; these are the ones its grammar needs to tell clauses apart. Every other word
# the language knows is only special where it stands (TIMESTAMP BY, PARTITION BY, LIMIT
# DURATION, CROSS APPLY, CAST(, TRUE/FALSE, ...) and is an ordinary name elsewhere, so a
# column may be called timestamp, time, date, value, type, partition or limit.
KEYWORDS = frozenset(
    """
    select from where into with as union all and or not null is like in between case when then
    else end group by having join on inner left right full outer cross over distinct escape
    create table
    """.split()
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "ident", "qident" (bracket/double-quoted), "keyword", "number", "string", "op", "eof"
    text: str  # identifier or keyword as written, literal text, or operator
    line: int
    column: int
    quote: str = ""  # for "qident": the opening quote, '[' or '"'

    def is_keyword(self, *words: str) -> bool:
        return self.kind == "keyword" and self.text.lower() in words

    def is_op(self, *ops: str) -> bool:
        return self.kind == "op" and self.text in ops

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of query"
        if self.kind == "keyword":
            return self.text.upper()
        if self.kind == "string":
            return f"'{self.text}'"
        if self.kind == "qident":
            return f"[{self.text}]"
        return f"'{self.text}'"


_OPS = ("<>", "!=", "<=", ">=", "||", "=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ",", ".", ";",
        "&", "|", "^", "~")  # the last four: bitwise AND, OR, XOR, NOT


def tokenize(text: str) -> list[Token]:
    """Split query text into tokens; comments (``--`` and ``/* */``) and whitespace are dropped."""
    tokens: list[Token] = []
    i, line, line_start, n = 0, 1, 0, len(text)

    def error(msg: str, at: int) -> QueryError:
        return QueryError(msg, line, at - line_start + 1)

    while i < n:
        c = text[i]
        if c == "\n":
            i += 1
            line, line_start = line + 1, i
            continue
        if c.isspace():
            i += 1
            continue
        col = i - line_start + 1
        if text.startswith("--", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise error("unterminated /* comment", i)
            for ch_i in range(i, end):
                if text[ch_i] == "\n":
                    line, line_start = line + 1, ch_i + 1
            i = end + 2
            continue
        if c == "'":
            start_line, j, buf = line, i + 1, []
            while True:
                if j >= n:
                    raise QueryError("unterminated string literal", start_line, col)
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                if text[j] == "\n":
                    line, line_start = line + 1, j + 1
                buf.append(text[j])
                j += 1
            tokens.append(Token("string", "".join(buf), start_line, col))
            i = j + 1
            continue
        if c == "[" or c == '"':
            close = "]" if c == "[" else '"'
            j, buf = i + 1, []
            while True:
                if j >= n or text[j] == "\n":
                    raise QueryError(f"unterminated quoted name (missing {close})", line, col)
                if text[j] == close:
                    if j + 1 < n and text[j + 1] == close:
                        buf.append(close)
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            tokens.append(Token("qident", "".join(buf), line, col, c))
            i = j + 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            j = i
            while j < n and text[j].isdigit():
                j += 1
            if j < n and text[j] == "." and (j + 1 >= n or text[j + 1].isdigit() or not text[j + 1].isalpha()):
                j += 1
                while j < n and text[j].isdigit():
                    j += 1
            if j < n and text[j] in "eE":
                k = j + 1
                if k < n and text[k] in "+-":
                    k += 1
                if k < n and text[k].isdigit():
                    j = k
                    while j < n and text[j].isdigit():
                        j += 1
            if j < n and (text[j].isalpha() or text[j] == "_"):
                raise QueryError(f"invalid number '{text[i:j + 1]}'", line, col)
            tokens.append(Token("number", text[i:j], line, col))
            i = j
            continue
        if c.isalpha() or c in "_@#":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "_@#$"):
                j += 1
            word = text[i:j]
            if word.lower() in KEYWORDS:
                tokens.append(Token("keyword", word, line, col))
            else:
                tokens.append(Token("ident", word, line, col))
            i = j
            continue
        for op in _OPS:
            if text.startswith(op, i):
                tokens.append(Token("op", op, line, col))
                i += len(op)
                break
        else:
            raise error(f"unexpected character {c!r}", i)
    tokens.append(Token("eof", "", line, i - line_start + 1))
    return tokens
