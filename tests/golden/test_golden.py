"""Golden corpus: Microsoft's published ASA examples, run through ``AsaQuery``.

Each ``cases/*.yaml`` holds one example as its page shows it: the page URL, the query, the input
rows, the reference-data rows and the expected output rows, typed in from the page (never
produced by running asa-beam). Rows are compared as ASA's local test tool does
(``transforms.testing.compare_rows``: rows as objects, order ignored, numbers within a small
tolerance, datetimes as instants). A case may also list ``ignore_fields`` (as the test tool's
``IgnoreFields``) and must say why in ``notes``.

Inputs read without ``TIMESTAMP BY`` get an arrival time: ``arrival`` in the case (one instant for
all the input's rows, as a blob's rows share its last-modified time, or one per row); by default
every row arrives at ``DEFAULT_ARRIVAL``, as ASA's local runs load all records "on a single
timestamp, the run start time" (input-validation page).

A page that shows an output's values without column names (an un-aliased expression) sets
``positional: true``: rows are then compared by their values in SELECT order.

Every case must also run without dead letters (ASA shows these outputs for runs without errors),
and every step's rows must add up (the row accounting of ``transforms.operators.accounting``).
Cases that fail for a known reason are marked ``xfail`` (the ``xfail`` key of the case) and listed
in the README's "Golden corpus" section.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import apache_beam as beam
import pytest
import yaml
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from transforms import AsaQuery, JavaScriptFunction
from transforms.operators.accounting import counters_of
from transforms.testing import asa_equal_to

CASES_DIR = Path(__file__).parent / "cases"
CASE_FILES = sorted(CASES_DIR.glob("*.yaml"))
DEFAULT_ARRIVAL = "2024-01-01T00:00:00Z"
REQUIRED = {"url", "title", "query", "inputs", "outputs"}


def load(path: Path) -> dict:
    case = yaml.safe_load(path.read_text())
    missing = REQUIRED - case.keys()
    assert not missing, f"{path.name}: missing {sorted(missing)}"
    assert case["url"].startswith("https://learn.microsoft.com/"), f"{path.name}: url must be the page's"
    return case


def _instant(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _arrivals(case: dict, name: str, n: int) -> list[float]:
    spec = (case.get("arrival") or {}).get(name, DEFAULT_ARRIVAL)
    if isinstance(spec, list):
        assert len(spec) == n, f"arrival of {name}: {len(spec)} times for {n} rows"
        return [_instant(s) for s in spec]
    return [_instant(spec)] * n


def _functions(case: dict) -> list:
    out = []
    for alias, spec in (case.get("functions") or {}).items():
        assert spec["type"] == "javascript", "the corpus uses JavaScript UDFs only"
        out.append(JavaScriptFunction(alias, spec["script"], output_type=spec.get("output_type", "any")))
    return out


def _positional(row: dict) -> dict:
    return {f"value{i}": v for i, v in enumerate(row.values(), 1)}


def _params():
    for path in CASE_FILES:
        case = load(path)
        marks = [pytest.mark.xfail(reason=case["xfail"], strict=False)] if case.get("xfail") else []
        yield pytest.param(path, id=path.stem, marks=marks)


def test_corpus_is_broad():
    assert len(CASE_FILES) >= 30
    pages = {load(p)["url"].split("#")[0] for p in CASE_FILES}
    assert len(pages) >= 4


@pytest.mark.parametrize("path", list(_params()))
def test_golden_case(path):
    case = load(path)
    reference = case.get("reference") or {}
    query = AsaQuery(case["query"], functions=_functions(case), reference_inputs=list(reference))
    ignore = case.get("ignore_fields") or ()
    p = TestPipeline()
    sources = {}
    for name, rows in {**case["inputs"], **reference}.items():
        rows = rows or []
        pairs = list(zip(rows, _arrivals(case, name, len(rows)), strict=True))
        sources[name] = (p | f"Input {name}" >> beam.Create(pairs)
                         | f"Arrival {name}" >> beam.MapTuple(TimestampedValue))
    out = sources | query
    written = {k.lower(): v for k, v in out.items()}
    assert {k.lower() for k in case["outputs"]} == written.keys(), "the query writes other outputs"
    for name, rows in case["outputs"].items():
        actual = written[name.lower()]
        if case.get("positional"):
            actual = actual | f"Positional {name}" >> beam.Map(_positional)
            rows = [_positional(r) for r in rows or []]
        assert_that(actual, asa_equal_to(rows or [], ignore), label=f"Output {name}")
    assert_that(out.failed | beam.Map(lambda d: f"{d.step}: {d.reason}: {d.message}"),
                equal_to([]), label="No dead letters")
    result = p.run()
    result.wait_until_finish()
    # Every step's rows add up (issue 12): none lost without a trace.
    counters = counters_of(result)
    assert counters or not any(case["inputs"].values()), "the runner gave no row counts"
    assert [b.message() for b in out.ledger.check(counters)] == []


def test_every_exception_is_listed_in_the_readme():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Golden corpus"):]
    section = section[:section.index("\n## ")]
    unlisted = [p.stem for p in CASE_FILES if load(p).get("xfail") and f"`{p.stem}`" not in section]
    assert not unlisted, f"xfail cases missing from the README's Golden corpus section: {unlisted}"
    assert f"**{len(CASE_FILES)} cases:" in section, "the README's case count is stale"
