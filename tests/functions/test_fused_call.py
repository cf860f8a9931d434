"""A step whose only UDF call is an Azure ML function runs its WHERE, the call and its projection
in the call's own DoFn on bounded input (``fused_call``), and apart, as before, when streaming.

Either way the results, the dead letters and the row accounting must be those of the unfused
step: rows the WHERE filters are never sent, a projection error dead-letters only its row, and
every step's rows add up. The fake endpoint (records style) scores ``id + x``.
"""

import sys
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]
from fixtures_azureml import collect, pipeline_options  # noqa: E402

from pipelines.run import describe_pipeline  # noqa: E402
from pipelines.runners import LocalDirectRunner  # noqa: E402
from pipelines.serving.fake import swagger_for  # noqa: E402
from transforms.functions.azureml import AzureMLConfig, AzureMLFunction  # noqa: E402
from transforms.functions.base import RowStage  # noqa: E402
from transforms.operators.accounting import counters_of  # noqa: E402
from transforms.operators.compile import AsaQuery, fused_call  # noqa: E402
from transforms.query.lower import lower  # noqa: E402
from transforms.query.parser import parse  # noqa: E402

QUERY = """WITH D AS (SELECT id, x FROM input)
SELECT D.id, udf.score(D).[Scored Labels] AS s, 10 / (D.id - 13) AS inv INTO output FROM D WHERE D.id >= 10"""


def _function(ep, **cfg) -> AzureMLFunction:
    return AzureMLFunction("score", AzureMLConfig(endpoint=ep.url, swagger=swagger_for("records"),
                                                  batch_size=4, parallel_requests=2, **cfg))


def _data(n: int = 30) -> list[dict]:
    return [{"id": i, "x": i / 4} for i in range(n)]


def _expected(data: list[dict]) -> list[dict]:
    # by hand: the WHERE keeps id >= 10; id 13 divides by zero (a dead letter,
    # arithmetic_error) and "/" divides as floats; the fake endpoint's "Scored Labels" is id + x
    return [{"id": r["id"], "s": r["id"] + r["x"], "inv": 10 / (r["id"] - 13)}
            for r in data if r["id"] >= 10 and r["id"] != 13]


def _step_labels(p: beam.Pipeline) -> list[str]:
    return [t.unique_name for t in p.to_runner_api().components.transforms.values()
            if t.unique_name.startswith("AsaQuery/Select into output/") and not t.subtransforms]


def test_where_call_and_projection_share_one_dofn_with_the_same_results(fake_endpoint):
    ep = fake_endpoint("records")
    data = _data()
    p = TestPipeline(options=pipeline_options())
    rows = p | beam.Create(data)
    out = {"input": rows} | AsaQuery(QUERY, [_function(ep)])
    assert_that(out["output"], equal_to(_expected(data)), label="scored")
    assert_that(out.failed | beam.Map(lambda d: (d.step, d.reason, d.row["id"])),
                equal_to([("Select into output", "arithmetic_error", 13)]), label="dead letters")
    labels = _step_labels(p)
    result = p.run()
    result.wait_until_finish()
    # one Beam step does it all: no separate WHERE or SELECT ParDo in the step
    assert [x for x in labels if "/Where/" in x or "/Select/" in x] == [], labels
    assert any("ScoreRowsDoFn" in x for x in labels), labels
    # rows the WHERE filters never reach the endpoint
    assert sum(r.rows for r in ep.log) == 20
    counters = counters_of(result)
    assert [b.message() for b in out.ledger.check(counters)] == []
    # counted by the fused DoFn under the names the unfused WHERE and SELECT use
    assert counters["step.Select into output.where.filtered"] == 10
    assert counters["step.Select into output.out"] == 19


def test_streaming_runs_the_stages_apart_with_the_same_results(fake_endpoint):
    ep = fake_endpoint("records")
    data = _data(24)
    stream = BeamTestStream().add_elements([TimestampedValue(r, 1_700_000_000 + r["id"]) for r in data])
    stream = stream.advance_processing_time(5).advance_watermark_to_infinity()
    # asa-beam's local streaming runner: Beam's DirectRunner keeps only each step's first
    # bundle's metrics, this one counts every bundle (pipelines.runners)
    p = beam.Pipeline(runner=LocalDirectRunner(), options=pipeline_options("--streaming"))
    out = {"input": p | stream} | AsaQuery(QUERY, [_function(ep, max_buffering_s=0.2)])
    got = collect(out["output"], "rows")
    failed = collect(out.failed | beam.Map(lambda d: (d.reason, d.row["id"])), "failed")
    labels = _step_labels(p)
    result = p.run()
    result.wait_until_finish()
    assert sorted(got(), key=lambda r: r["id"]) == _expected(data)
    assert [b.message() for b in out.ledger.check(counters_of(result))] == []
    assert failed() == [("arithmetic_error", 13)]
    assert any("/Before/" in x for x in labels) and any("/After/" in x for x in labels), labels
    assert sum(r.rows for r in ep.log) == 14


@pytest.mark.parametrize("query, fused", [
    ("SELECT udf.score(input) AS s INTO o FROM input WHERE id > 1", True),
    ("SELECT udf.score(input) AS s INTO o FROM input", True),
    # the call is in the WHERE: it must run before the WHERE
    ("SELECT id INTO o FROM input WHERE udf.score(input).[Scored Labels] > 1", False),
    # two calls, or GROUP BY: the call stages stay apart
    ("SELECT udf.score(input) AS a, udf.score(input) AS b INTO o FROM input", False),
    ("SELECT id, COUNT(*) AS n, udf.score(id) AS s INTO o FROM input GROUP BY id, TumblingWindow(s, 1)", False),
])
def test_which_steps_fuse(query, fused, fake_endpoint):
    from transforms.functions.registry import FunctionRegistry

    registry = FunctionRegistry([_function(fake_endpoint("records"))])
    plan = lower(parse(query), registry)
    step = plan.steps[-1]
    assert (fused_call(step, registry) is not None) is fused


@pytest.mark.parametrize("query, arg_is_row", [
    ("WITH D AS (SELECT id, x FROM input) SELECT udf.score(D) AS s INTO o FROM D", True),
    ("SELECT udf.score(input) AS s INTO o FROM input", True),
    ("SELECT udf.score(x) AS s INTO o FROM input", False),
    ("SELECT udf.score(CASE WHEN id > 1 THEN input ELSE NULL END) AS s INTO o FROM input", False),
])
def test_a_call_on_the_whole_row_is_marked(query, arg_is_row, fake_endpoint):
    """``CallSite.arg_is_row`` lets the scoring DoFn read the row's columns in place."""
    from transforms.functions.base import CallSite

    sites: list[CallSite] = []
    fn = _function(fake_endpoint("records"))
    original = fn.call_transform
    fn.call_transform = lambda site: (sites.append(site), original(site))[1]
    with TestPipeline() as p:
        _ = {"input": p | beam.Create([{"id": 1, "x": 0.5}])} | AsaQuery(query, [fn])
    assert [s.arg_is_row for s in sites] == [arg_is_row]


def test_explain_names_the_fused_step(tmp_path, fake_endpoint):
    from pipelines.job import load_job

    ep = fake_endpoint("records")
    (tmp_path / "q.asaql").write_text(QUERY)
    (tmp_path / "job.yaml").write_text(
        "query: q.asaql\ninputs: {input: {path: in.jsonl}}\noutputs: {output: {path: out/w}}\n"
        f"functions: {{score: {{type: azureml, endpoint: '{ep.url}'}}}}\n")
    (tmp_path / "in.jsonl").write_text("")
    text = describe_pipeline(load_job(tmp_path / "job.yaml"))
    assert "Where, udf.score" in text and "Select: in the call's own DoFn on bounded input" in text


def test_a_row_stage_counts_and_dead_letters():
    stage = RowStage("S", lambda row: row if row["a"] > 0 else None, filtered="step.S.filtered", out="step.S.out",
                     rows_in=("step.S.in", "rows_read.input@S"))
    stage.setup()
    outs = [stage.apply({"a": 1}), stage.apply({"a": 0}), stage.apply({})]
    assert outs[:2] == [{"a": 1}, None]
    assert (outs[2].step, outs[2].reason, outs[2].row) == ("S", "evaluation_error", {})
    assert (stage._n_in, stage._n_filtered, stage._n_out) == (3, 1, 1)


@pytest.mark.parametrize("query, outputs_read_event_time, keeps", [
    ("SELECT udf.score(input) AS s INTO o FROM input", False, False),
    ("SELECT udf.score(input) AS s INTO o FROM input", True, True),       # the default: a writer may read it
    ("SELECT udf.score(input) AS s, System.Timestamp() AS t INTO o FROM input", False, True),
    ("SELECT udf.score(input) AS s INTO o FROM input "
     "SELECT COUNT(*) AS n INTO o2 FROM input GROUP BY TumblingWindow(second, 10)", False, True),
    ("WITH S AS (SELECT udf.score(input) AS s FROM input) "
     "SELECT COUNT(*) AS n INTO o FROM S GROUP BY TumblingWindow(second, 10)", False, True),
])
def test_calls_carry_event_time_unless_nothing_reads_it(query, outputs_read_event_time, keeps, fake_endpoint):
    """``CallSite.keeps_event_time``: False only when no step and no writer reads a row's time."""
    from transforms.functions.base import CallSite

    sites: list[CallSite] = []
    fn = _function(fake_endpoint("records"))
    original = fn.call_transform
    fn.call_transform = lambda site: (sites.append(site), original(site))[1]
    with TestPipeline() as p:
        _ = {"input": p | beam.Create([{"id": 1, "x": 0.5}])} | AsaQuery(
            query, [fn], outputs_read_event_time=outputs_read_event_time)
    assert [s.keeps_event_time for s in sites] == [keeps]


@pytest.mark.parametrize("output, dead_letters, untimed", [
    ("out/w", "dead/d", True),
    ("out/{date}/w", "dead/d", False),     # rows placed by their System.Timestamp()
    ("out/w", "dead/{date}/{time}/d", False),
])
def test_a_job_scores_without_event_time_only_when_no_writer_reads_it(output, dead_letters, untimed, tmp_path,
                                                                       fake_endpoint):
    from pipelines.job import load_job
    from pipelines.run import build_pipeline

    ep = fake_endpoint("records")
    (tmp_path / "q.asaql").write_text("SELECT udf.score(input) AS s INTO output FROM input")
    (tmp_path / "job.yaml").write_text(
        f"query: q.asaql\ninputs: {{input: {{path: in.jsonl}}}}\noutputs: {{output: {{path: '{output}'}}}}\n"
        f"dead_letter: {{path: '{dead_letters}'}}\n"
        f"functions: {{score: {{type: azureml, endpoint: '{ep.url}'}}}}\n")
    (tmp_path / "in.jsonl").write_text('{"id": 1, "x": 0.5}\n')
    p = beam.Pipeline()
    build_pipeline(load_job(tmp_path / "job.yaml"), p)
    names = {t.unique_name.rsplit("/", 1)[-1] for t in p.to_runner_api().components.transforms.values()}
    assert ("ParDo(ScoreRowsUntimedDoFn)" in names) is untimed
    assert ("ParDo(ScoreRowsDoFn)" in names) is not untimed
