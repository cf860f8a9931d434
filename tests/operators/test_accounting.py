"""Row accounting (transforms.operators.accounting): every step's rows add up on the golden
corpus, in one process and in two; an operator that drops rows without a trace is caught and
named, in a pipeline and through ``asa-beam run`` (exit code 4)."""

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import TimestampedValue

from transforms.functions.base import ROWS, CallInProcess
from transforms.functions.python import PythonFunction
from transforms.operators.accounting import counters_of
from transforms.operators.compile import AsaQuery
from transforms.query.lower import lower
from transforms.query.parser import parse

CORPUS = Path(__file__).parents[1] / "query" / "corpus"


def run_query(query, inputs: dict, functions=None, options=(), **kw):
    p = beam.Pipeline(runner="FnApiRunner", options=PipelineOptions(list(options)))
    out = {n: p | f"Create {n}" >> beam.Create(rows) for n, rows in inputs.items()} | AsaQuery(query, functions, **kw)
    result = p.run()
    result.wait_until_finish()
    counters = counters_of(result)
    return out.ledger, counters, [b.message() for b in out.ledger.check(counters)]


# Rows with the columns the corpus queries read; many fail casts or filters — they must still add up.
ROWS_IN = [
    {"vendorid": v % 3 + 1, "weekday": ["Mon", "Tue", "Wed", "Sun"][v % 4], "distance": str(v * 0.7),
     "passenger": str(v % 5), "fare": None if v % 6 == 0 else v * 1.5, "tip": v % 2,
     "pickup": {"zone id": v % 4}, "time": f"2024-01-01T00:{v:02d}:00Z", "deviceId": v % 2,
     "temperature": v * 3 % 17, "arr": list(range(v % 3)), "LicensePlate": f"P{v % 4}", "tollId": v % 2,
     "EntryTime": f"2024-01-01T00:{v:02d}:00Z", "ExitTime": f"2024-01-01T00:{v:02d}:30Z", "Make": "m"}
    for v in range(24)
]


def corpus_registry():
    from tests.query.test_corpus import registry  # noqa: PLC0415 - the corpus' own functions

    return registry()


CORPUS_FILES = sorted(p for p in CORPUS.glob("*.asaql") if "expect: parse" not in p.read_text().splitlines()[0])


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.stem for p in CORPUS_FILES])
def test_every_golden_query_balances(path):
    registry = corpus_registry()
    plan = lower(parse(path.read_text()), registry)
    inputs = {name: ROWS_IN for name in plan.inputs}
    ledger, counters, bad = run_query(plan, inputs, registry)
    assert bad == []
    # Every step reading an input saw all its rows (the counts are real, not all zero).
    assert set(ledger.inputs) == set(plan.inputs)
    assert all(counters.get(term) == len(ROWS_IN) for terms in ledger.inputs.values() for term in terms)


def test_join_apply_and_group_by_rows_are_accounted_for_by_hand():
    rows = [{"k": i % 3, "a": list(range(i % 3)), "t": f"2024-01-01T00:00:{i:02d}Z"} for i in range(12)]
    q = """WITH e AS (SELECT i.k, x.ArrayValue AS v, i.t FROM i CROSS APPLY GetArrayElements(i.a) AS x)
    SELECT e.k, COUNT(*) AS n INTO o FROM e TIMESTAMP BY t JOIN r ON e.k = r.k
    GROUP BY e.k, TumblingWindow(minute, 1)"""
    ledger, counters, bad = run_query(q, {"i": rows, "r": [{"k": 1}, {"k": 2}]}, reference_inputs=["r"])
    assert bad == []
    # By hand: k = i % 3 and 0, 1 or 2 elements: 4 rows have none; 4 give 1 row, 4 give 2 → 12 rows.
    e = ledger.steps["e"]
    assert [counters[n] for n in e.ins] == [12]
    assert counters["step.e.apply1.empty"] == 4 and counters["step.e.apply1.expanded"] == 8
    assert counters["step.e.out"] == 12
    # Joined with keys 1 and 2 only: the 12 rows all have k 1 or 2 (k 0 rows had no elements);
    # one 1-minute window, two keys → two groups.
    assert counters["step.Select into o.join1.left_in"] == 12
    assert counters["step.Select into o.join1.out"] == 12
    assert counters["step.Select into o.group.in"] == 12 and counters["step.Select into o.group.out"] == 2
    assert counters["step.Select into o.join1.matched"] == 12 and "step.Select into o.join1.unmatched" not in counters


def test_reference_join_counts_matched_and_unmatched_stream_rows():
    rows = [{"k": i % 3} for i in range(12)]
    for kind, written in (("JOIN", 4), ("LEFT OUTER JOIN", 12)):
        q = f"SELECT i.k, r.name INTO o FROM i {kind} r ON i.k = r.k"
        ledger, counters, bad = run_query(q, {"i": rows, "r": [{"k": 1, "name": "one"}]}, reference_inputs=["r"])
        assert bad == []
        # By hand: 4 rows have k = 1 (matched); 8 do not (INNER drops them, LEFT keeps them).
        assert counters["step.Select into o.join1.matched"] == 4
        assert counters["step.Select into o.join1.unmatched"] == 8
        assert counters["step.Select into o.out"] == written
        assert any(b.what.endswith("stream rows") for b in ledger.balances)


class _DropsEveryThirdRow(beam.PTransform):
    """A broken UDF call stage: rows vanish, neither output nor dead letter."""

    def __init__(self, inner):
        super().__init__()
        self._inner = inner

    def expand(self, rows):
        out = rows | "real call" >> self._inner
        return {ROWS: out[ROWS] | "lose rows" >> beam.Filter(lambda r: r["id"] % 3 != 0), "failed": out["failed"]}


class BrokenFunction(PythonFunction):
    def call_transform(self, site):
        return _DropsEveryThirdRow(CallInProcess(self, site))


def test_rows_dropped_without_a_trace_fail_the_check_naming_the_step():
    rows = [{"id": i} for i in range(30)]
    q = """WITH scored AS (SELECT id, udf.plus1(id) AS p FROM src WHERE id < 20)
    SELECT id, p INTO out FROM scored"""
    _, counters, bad = run_query(q, {"src": rows}, [BrokenFunction("plus1", lambda x: x + 1)])
    # 20 rows pass WHERE, 7 of them (0, 3, ..., 18) vanish in the broken call stage.
    assert bad == ["step scored: rows: 30 in, but out 13 + filtered by Where 10 + filtered by Select 0 "
                   "+ dead letters 0 = 23 (7 rows unaccounted for)"]
    # the same query with a working function balances
    _, _, ok = run_query(q, {"src": rows}, [PythonFunction("plus1", lambda x: x + 1)])
    assert ok == []


def test_multi_process_counts_are_summed_and_still_balance():
    rows = [{"id": i, "s": str(i) if i % 7 else "x"} for i in range(400)]
    q = "SELECT id, CAST(s AS bigint) AS v INTO out FROM src WHERE id % 4 <> 0"
    _, counters, bad = run_query(q, {"src": rows}, options=[
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert bad == []
    # By hand: 300 rows pass WHERE; ids divisible by 7 but not 4 fail the cast.
    dead = len([i for i in range(400) if i % 4 and i % 7 == 0])
    assert counters["step.Select into out.in"] == 400
    assert counters["step.Select into out.out"] == 300 - dead


def test_asa_beam_run_exits_4_naming_the_step_when_rows_vanish(tmp_path, monkeypatch, capsys):
    from pipelines.cli import EXIT_ACCOUNTING, main
    from transforms.operators import compile as compile_module

    (tmp_path / "in.jsonl").write_text("".join(f'{{"id": {i}}}\n' for i in range(10)))
    (tmp_path / "job.yaml").write_text(
        "query: SELECT id, System.Timestamp() AS t INTO result FROM src\n"
        "inputs:\n  src: {path: in.jsonl}\noutputs:\n  result: {path: out/result}\n")
    assert main(["run", str(tmp_path / "job.yaml")]) == 0
    assert "ROW ACCOUNTING" not in capsys.readouterr().out

    real = compile_module._AttachTimestamp.process

    def broken(self, row, ts=beam.DoFn.TimestampParam):  # loses odd ids, says nothing
        return real(self, row, ts) if row["id"] % 2 == 0 else ()

    monkeypatch.setattr(compile_module._AttachTimestamp, "process", broken)
    assert main(["run", str(tmp_path / "job.yaml")]) == EXIT_ACCOUNTING == 4
    captured = capsys.readouterr()
    message = ("step Select into result: rows: 10 in, but out 5 + filtered by Select 0 + dead letters 0 = 5 "
               "(5 rows unaccounted for)")
    assert message in captured.err and message in captured.out


ARRIVAL = 1_764_547_200  # 2025-12-01T00:00:00Z


def _corpus_outputs(tmp: Path, options: list[str]) -> dict[str, list[str]]:
    """Every golden query in one pipeline; each output's rows as sorted JSON text."""
    import json

    registry = corpus_registry()
    p = beam.Pipeline(runner="FnApiRunner", options=PipelineOptions(options))
    for path in CORPUS_FILES:
        plan = lower(parse(path.read_text()), registry)
        # one fixed arrival time: otherwise each run stamps the rows with its own "now", and two
        # runs either side of a window boundary close their windows at different times
        inputs = {n: p | f"{path.stem}: create {n}" >> beam.Create(ROWS_IN)
                  | f"{path.stem}: arrive {n}" >> beam.Map(TimestampedValue, ARRIVAL) for n in plan.inputs}
        out = inputs | path.stem >> AsaQuery(plan, registry)
        for name, pcoll in out.items():
            (pcoll | f"{path.stem}: json {name}" >> beam.Map(lambda r: json.dumps(r, sort_keys=True, default=str))
             | f"{path.stem}: write {name}" >> beam.io.WriteToText(str(tmp / path.stem / name)))
    p.run().wait_until_finish()
    return {f"{d.name}/{f.name.split('-')[0]}": sorted(line for f2 in d.glob(f"{f.name.split('-')[0]}-*")
                                                      for line in f2.read_text().splitlines())
            for d in tmp.iterdir() for f in d.iterdir()}


def test_golden_queries_on_two_worker_processes_give_the_single_process_results(tmp_path):
    one = _corpus_outputs(tmp_path / "one", [])
    two = _corpus_outputs(tmp_path / "two", ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert len(one) >= len(CORPUS_FILES) and any(one.values())
    assert two == one


def test_a_join_reading_a_union_balances_and_counts_each_source():
    rows = [{"k": i % 3, "v": i} for i in range(12)]
    q = """WITH a AS (SELECT k, v FROM i WHERE v < 6), b AS (SELECT k, v FROM i WHERE v >= 6),
    u AS (SELECT * FROM a UNION SELECT * FROM b)
    SELECT u.v, r.name INTO o FROM u JOIN r ON u.k = r.k"""
    ledger, counters, bad = run_query(q, {"i": rows, "r": [{"k": 1, "name": "one"}]}, reference_inputs=["r"])
    assert bad == []
    step = ledger.steps["Select into o"]
    # By hand: the union gives all 12 rows (6 + 6); the 4 with k = 1 match the one reference row.
    assert sum(counters[c] for c in step.ins) == 12
    assert [(alias, sum(counters[c] for c in terms)) for alias, terms in step.joined] == [("r", 1)]
    assert counters["step.Select into o.out"] == 4
