"""Golden corpus: ASA queries from the docs and the reference, each parsed, planned and
(for the core ones) run, with expected rows computed here independently of the compiler."""

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.functions.javascript.uda import JavaScriptAggregate
from transforms.functions.python import PythonFunction
from transforms.functions.registry import FunctionRegistry
from transforms.operators.compile import AsaQuery
from transforms.query.lower import lower
from transforms.query.parser import parse

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(CORPUS.glob("*.asaql"))


def expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("-- expect: "), f"{path.name} must start with '-- expect: parse|plan|run'"
    return first.split(":", 1)[1].strip()


def registry() -> FunctionRegistry:
    return FunctionRegistry([
        PythonFunction("score", lambda x: 1.0, arity=(1, 1)),
        PythonFunction("createArray", lambda *a: list(a)),
        PythonFunction("sentiment", lambda t: {"Score": 0.5}, arity=(1, 1)),
        JavaScriptAggregate("TWA", "function main() { this.init = function () { this.s = 0; };"
                                   " this.accumulate = function (v, t) { this.s += 1; };"
                                   " this.computeResult = function () { return this.s; }; }"),
    ])


def test_corpus_is_not_empty():
    assert len(FILES) >= 15


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_corpus_parses_and_plans(path):
    script = parse(path.read_text())
    assert script.statements
    if expectation(path) in ("plan", "run"):
        plan = lower(script, registry())
        assert plan.steps and plan.outputs
        assert str(plan)  # printable


ROWS = [
    {"vendorid": 1, "weekday": "Mon", "distance": "3.2", "passenger": "2", "fare": 10.0, "tip": 1.5,
     "pickup": {"zone id": 42}},
    {"vendorid": 2, "weekday": "Tue", "distance": "0.5", "passenger": "x", "fare": 4.0, "tip": None,
     "pickup": {}},
    {"vendorid": 1, "weekday": "Sat", "distance": "12", "passenger": "1", "fare": None, "tip": 2.0},
    {"vendorid": 2, "weekday": "Wed", "distance": None, "passenger": "3", "fare": 7.0},
    {"vendorid": 3, "weekday": "Sun", "distance": "7.5", "passenger": "4", "fare": 20.0, "tip": 0.0,
     "pickup": {"zone id": 7}},
]


def expected_core_filter_cast(rows):
    out = []
    for r in rows:
        d = float(r["distance"]) if r["distance"] is not None else None
        if d is not None and d > 1.5 and r["weekday"] in ("Mon", "Tue"):
            p = int(r["passenger"]) if r["passenger"].isdigit() else None
            out.append({"vendorid": r["vendorid"], "distance": d, "passenger": p})
    return out


def expected_core_case_nested(rows):
    out = []
    for r in rows:
        if r["fare"] is None or r["weekday"].startswith("W"):
            continue
        zone = (r.get("pickup") or {}).get("zone id")
        out.append({"vendor": r["vendorid"],
                    "dayType": "weekend" if r["weekday"] in ("Sat", "Sun") else "weekday",
                    "zone": "unknown" if zone is None else zone,
                    "total": (r.get("tip") if r.get("tip") is not None else 0) + r["fare"]})
    return out


def expected_core_multi_statement(rows):
    clean = [{"vendorid": r["vendorid"], "weekday": r["weekday"], "distance": float(r["distance"])}
             for r in rows if r["distance"] is not None]
    return ([c for c in clean if c["distance"] >= 5]
            + [{"vendorid": c["vendorid"], "distance": c["distance"]} for c in clean if 0 <= c["distance"] <= 1])


EXPECTED = {
    "core_filter_cast": expected_core_filter_cast,
    "core_case_nested": expected_core_case_nested,
    "core_multi_statement": expected_core_multi_statement,
}
RUNNABLE = [p for p in FILES if expectation(p) == "run"]


def test_every_runnable_query_has_an_expectation():
    assert {p.stem for p in RUNNABLE} == set(EXPECTED)


@pytest.mark.parametrize("path", RUNNABLE, ids=[p.stem for p in RUNNABLE])
def test_core_queries_run(path):
    with TestPipeline() as p:
        out = {"input": p | beam.Create(ROWS)} | AsaQuery(path.read_text(), registry())
        assert_that(out["output"], equal_to(EXPECTED[path.stem](ROWS)))
        assert_that(out.failed, equal_to([]), label="no failures")
