"""Parser: one line per query shape, and errors with line:column."""

import functools

import pytest

from transforms.errors import QueryError
from transforms.query import ast
from transforms.query.parser import parse, parse_expression


def sel(query: str) -> ast.Select:
    return parse(query).statements[0].query


N = lambda *p: ast.Name(tuple(p))  # noqa: E731
L = ast.Literal


@pytest.mark.parametrize("text, expected", [
    ("a", N("a")),
    ("a.b.c", N("a", "b", "c")),
    ("[Scored Labels]", N("Scored Labels")),
    ("r.[Scored Labels]", N("r", "Scored Labels")),
    ("a.[x y].z", N("a", "x y", "z")),
    ("1", L(1)),
    ("1.5", L(1.5)),
    ("1e3", L(1000.0)),
    ("-2", L(-2)),
    ("'it''s'", L("it's")),
    ("NULL", L(None)),
    ("a + b * c", ast.Binary("+", N("a"), ast.Binary("*", N("b"), N("c")))),
    ("(a + b) * c", ast.Binary("*", ast.Binary("+", N("a"), N("b")), N("c"))),
    ("a - b - c", ast.Binary("-", ast.Binary("-", N("a"), N("b")), N("c"))),
    ("a <> b", ast.Binary("!=", N("a"), N("b"))),
    ("a != b", ast.Binary("!=", N("a"), N("b"))),
    ("a >= 1 AND b < 2 OR c = 3", ast.Binary("or", ast.Binary("and", ast.Binary(">=", N("a"), L(1)),
                                                                 ast.Binary("<", N("b"), L(2))),
                                               ast.Binary("=", N("c"), L(3)))),
    ("NOT a = 1", ast.Unary("not", ast.Binary("=", N("a"), L(1)))),
    ("a IS NULL", ast.IsNull(N("a"))),
    ("a IS NOT NULL", ast.IsNull(N("a"), True)),
    ("a LIKE 'x%'", ast.Like(N("a"), L("x%"))),
    ("a NOT LIKE 'x%'", ast.Like(N("a"), L("x%"), True)),
    ("a IN (1, 2)", ast.In(N("a"), (L(1), L(2)))),
    ("a NOT IN (1)", ast.In(N("a"), (L(1),), True)),
    ("a BETWEEN 1 AND 2", ast.Between(N("a"), L(1), L(2))),
    ("a NOT BETWEEN 1 AND 2 AND b", ast.Binary("and", ast.Between(N("a"), L(1), L(2), True), N("b"))),
    ("CASE WHEN a THEN 1 ELSE 2 END", ast.Case(None, ((N("a"), L(1)),), L(2))),
    ("CASE a WHEN 1 THEN 'x' WHEN 2 THEN 'y' END", ast.Case(N("a"), ((L(1), L("x")), (L(2), L("y"))))),
    ("CAST(a AS bigint)", ast.Cast(N("a"), "bigint")),
    ("TRY_CAST(a AS nvarchar(max))", ast.Cast(N("a"), "nvarchar(max)", True)),
    ("udf.score(x)", ast.Call("score", (N("x"),), "udf")),
    ("UDF.createArray(a, b)", ast.Call("createArray", (N("a"), N("b")), "udf")),
    ("udf.score(x).[Scored Labels]", ast.Field(ast.Call("score", (N("x"),), "udf"), "Scored Labels")),
    ("COALESCE(a, b, 0)", ast.Call("COALESCE", (N("a"), N("b"), L(0)))),
    ("LEFT(a, 2)", ast.Call("LEFT", (N("a"), L(2)))),
    ("COUNT(*)", ast.Call("COUNT", (), star=True)),
    ("System.Timestamp()", ast.Call("Timestamp", (), "system")),
    ("DATEADD(minute, 5, t)", ast.Call("DATEADD", (N("minute"), L(5), N("t")))),
])
def test_expression_shapes(text, expected):
    assert parse_expression(text) == expected


def test_select_parts():
    s = sel("SELECT a AS x, b y, z = c + 1, * INTO out FROM inp AS i WHERE a > 1")
    assert [it.alias for it in s.items] == ["x", "y", "z", None]
    assert s.into == "out" and s.source == ast.TableRef("inp", "i")
    assert s.where == ast.Binary(">", N("a"), L(1))


def test_alias_star_and_statements_without_separator():
    script = parse("SELECT i.* INTO a FROM inp i SELECT b INTO c FROM inp; SELECT d FROM inp;")
    assert len(script.statements) == 3
    assert script.statements[0].query.items[0].expr == ast.Star("i")


def test_with_steps_and_union():
    script = parse("""
        WITH s1 AS (SELECT a FROM inp), s2 AS (SELECT a FROM s1 UNION SELECT a FROM inp)
        SELECT * INTO out FROM s2""")
    st = script.statements[0]
    assert [w.name for w in st.steps] == ["s1", "s2"]
    assert isinstance(st.steps[1].query, ast.Union) and len(st.steps[1].query.parts) == 2


def test_comments():
    s = sel("SELECT a -- the a\n/* block\ncomment */ INTO o FROM i")
    assert s.into == "o"


@pytest.mark.parametrize("query, line, column, fragment", [
    ("SELECT a, FROM i", 1, 11, "expected a column or expression, found FROM"),
    ("SELECT a FROM", 1, 14, "expected an input or step name"),
    ("SELECT a\nFROM i\nWHERE a >", 3, 10, "expected an expression"),
    ("SELECT a FROM i WHERE a IN (1, 2", 1, 33, "closing the IN list"),
    ("SELECT CASE WHEN a THEN 1 FROM i", 1, 27, "expected END"),
    ("SELECT 'abc FROM i", 1, 8, "unterminated string"),
    ("SELECT [abc FROM i", 1, 8, "unterminated quoted name"),
    ("SELECT a FROM i /* open", 1, 17, "unterminated /* comment"),
    ("SELECT a INTO FROM i", 1, 15, "expected an output name"),
    ("SELECT a FROM i WHERE", 1, 22, "expected an expression"),
    ("SELECT a FROM i x y", 1, 19, "expected ';', SELECT, WITH or end of query"),
    ("WITH s AS SELECT a FROM i", 1, 11, "'(' after AS"),
    ("SELECT a FROM i UNION SELECT b INTO o FROM j", 1, 37, "INTO belongs to the first SELECT"),
    ("SELECT CAST(a AS) FROM i", 1, 17, "a type name"),
    ("SELECT a $ b FROM i", 1, 10, "unexpected character"),
    ("SELECT 1e999 FROM i", 1, 8, "out of the float range"),
    ("", 1, 1, "the query is empty"),
])
def test_errors_have_line_and_column(query, line, column, fragment):
    with pytest.raises(QueryError) as err:
        parse(query)
    assert (err.value.line, err.value.column) == (line, column)
    assert fragment in err.value.message


# --- issue 9: the language as real ASA jobs write it ------------------------------------------

def test_create_table_before_the_query():
    # https://learn.microsoft.com/en-us/stream-analytics-query/create-table-stream-analytics
    script = parse("""CREATE TABLE Entry (TollId bigint, EntryTime datetime, LicensePlate nvarchar(max), Toll float);
        SELECT TollId INTO o FROM Entry""")
    (t,) = script.tables
    assert t.name == "Entry"
    assert [(c, ty) for c, ty, _ in t.columns] == [
        ("TollId", "bigint"), ("EntryTime", "datetime"), ("LicensePlate", "nvarchar(max)"), ("Toll", "float")]
    assert t.columns[1][2] == (1, 46)  # the position of the type, for errors
    assert len(script.statements) == 1


@pytest.mark.parametrize("query", [
    "SELECT System.Timestamp() AS timestamp FROM i",
    "SELECT System.Timestamp() timestamp FROM i",
    "SELECT time, date, value, type, partition, limit, apply, cast, true, duration FROM i",
    "SELECT timestamp FROM i TIMESTAMP BY timestamp",
    "SELECT a FROM i timestamp TIMESTAMP BY t",  # 'timestamp' as the FROM alias
    "SELECT LAG(value) OVER (PARTITION BY type LIMIT DURATION(hour, 1)) AS prev FROM i",
    "SELECT i.timestamp, i.[from] FROM i PARTITION BY partition",
])
def test_non_reserved_words_are_names(query):
    parse(query)


def test_timestamp_as_name_and_clause():
    s = sel("SELECT timestamp AS time FROM i AS value TIMESTAMP BY timestamp")
    assert s.items[0] == ast.SelectItem(N("timestamp"), "time")
    assert s.source.alias == "value" and s.source.timestamp_by == N("timestamp")
    assert parse_expression("cast + true") == ast.Binary("+", N("cast"), L(True))
    assert parse_expression("[true]") == N("true")


@pytest.mark.parametrize("query, column", [
    ("SELECT from FROM i", 8),
    ("SELECT a AS select FROM i", 13),
    ("SELECT a AS table FROM i", 13),
])
def test_reserved_words_are_not_names(query, column):
    with pytest.raises(QueryError) as err:
        parse(query)
    assert err.value.column == column


def test_record_star():
    assert sel("SELECT Location.* FROM input").items[0].expr == ast.Star("Location")
    star = sel("SELECT input.DeviceID, input.Location.* FROM input").items[1].expr
    assert star == ast.Star("input", path=("Location",))


def test_parenthesised_queries_and_expressions():
    q = parse("(SELECT a INTO o FROM x) UNION (SELECT b FROM y) UNION SELECT c FROM z").statements[0].query
    assert isinstance(q, ast.Union) and [p.source.name for p in q.parts] == ["x", "y", "z"]
    assert q.into == "o"
    nested = parse("WITH s AS ((SELECT a FROM x) UNION ((SELECT a FROM y))) SELECT * FROM s").statements[0]
    assert len(nested.steps[0].query.parts) == 2
    assert parse("(SELECT a FROM x)").statements[0].query.source.name == "x"
    assert sel("SELECT a FROM i WHERE (a > 1 AND (b < 2))").where == ast.Binary(
        "and", ast.Binary(">", N("a"), L(1)), ast.Binary("<", N("b"), L(2)))


def test_chains_up_to_the_depth_limit_parse():
    assert parse_expression(" + ".join(["a"] * 60)).op == "+"  # 59 links: 60 levels


def test_long_or_chains_are_balanced():
    e = parse_expression(" OR ".join(f"a = {k}" for k in range(1000)))

    def depth(x):
        return 1 + max(depth(x.left), depth(x.right)) if isinstance(x, ast.Binary) and x.op == "or" else 0

    assert depth(e) == 10  # ceil(log2(1000)), not 999


@pytest.mark.parametrize("query", [
    "SELECT " + "(" * 300 + "a" + ")" * 300 + " FROM i",
    "SELECT a FROM i WHERE " + "(" * 10_000 + "a" + ")" * 10_000,
    "SELECT " + "- " * 5000 + "a FROM i",
    "SELECT a FROM i WHERE " + "NOT " * 5000 + "a",
    "SELECT " + " + ".join(["a"] * 5000) + " FROM i",
    "SELECT " + "f(" * 500 + "a" + ")" * 500 + " FROM i",
    "SELECT " + "(" * 500 + "SELECT a FROM i" + ")" * 500,
    "SELECT a FROM i WHERE " + "CASE WHEN " * 500 + "a" + " THEN 1 END" * 500,
    "SELECT " + functools.reduce(lambda e, _: f"({e}{' + a' * 30})", range(3), "a") + " FROM i",  # 93 deep
])
def test_hostile_nesting_is_a_query_error_with_position(query):
    with pytest.raises(QueryError) as err:
        parse(query)
    assert "nests too deeply" in err.value.message
    assert err.value.line == 1 and err.value.column > 1
