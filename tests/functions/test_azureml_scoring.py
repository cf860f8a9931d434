"""The scoring transform on DirectRunner against the fault-injecting endpoint.

Every test checks the rule: each row that reaches the UDF ends in the step's output or in the
dead letter, exactly once.
"""

import logging
import sys
import time
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Timestamp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]
pytest.register_assert_rewrite("fixtures_azureml")
from fixtures_azureml import (  # noqa: E402
    NO_WAIT,
    collect,
    pipeline_options,
    run_scoring,
)

from pipelines.serving.fake import Fault, swagger_for  # noqa: E402
from transforms.deadletter import RowError  # noqa: E402
from transforms.errors import EndpointConfigError  # noqa: E402
from transforms.functions.azureml import (  # noqa: E402
    AzureMLConfig,
    AzureMLFunction,
    ScoreRows,
    find_endpoint_error,
)
from transforms.functions.azureml.scoring import BUNDLE, STATEFUL, GilHandoff, choose_batching  # noqa: E402
from transforms.functions.base import CallSite  # noqa: E402


@pytest.fixture(autouse=True)
def switch_interval_is_restored():
    """The GIL switch interval is lowered only while requests are in flight, whatever happens."""
    before = sys.getswitchinterval()
    yield
    assert GilHandoff._holds == 0
    assert sys.getswitchinterval() == before


def rows(n, start=0):
    return [{"id": i, "x": i * 0.25, "tag": f"r{i}"} for i in range(start, start + n)]


def features(row):
    return [row["id"], row["x"]]


def function_for(ep, alias="score", **cfg) -> AzureMLFunction:
    cfg.setdefault("backoff_base_s", 0.01)
    return AzureMLFunction(alias, AzureMLConfig(endpoint=ep.url, swagger=swagger_for(ep.style), **cfg))


def score(ep, **cfg):
    return ScoreRows(function_for(ep, **cfg), argument=features, column="s", timing=NO_WAIT)


def assert_exactly_once(inputs, outcome):
    ids = [r["id"] for r in outcome.rows] + [d.row["id"] for d in outcome.failed]
    dup = [k for k, v in Counter(ids).items() if v > 1]
    assert not dup, f"duplicated rows: {dup[:10]}"
    assert sorted(ids) == sorted(r["id"] for r in inputs), "rows were lost"


def assert_scored_right(outcome):
    for r in outcome.rows:
        assert r["s"] == r["id"] + r["x"], r
        assert set(r) == {"id", "x", "tag", "s"}


def test_scores_every_row_once_in_parallel(fake_endpoint):
    ep = fake_endpoint(latency_s=0.02)
    data = rows(1200)
    out = run_scoring(data, score(ep, batch_size=100, parallel_requests=3))
    assert_exactly_once(data, out)
    assert_scored_right(out)
    assert not out.failed
    assert all(r.rows <= 100 for r in ep.log)
    assert sum(r.rows for r in ep.log) == 1200
    assert 1 < ep.max_active <= 3
    assert out.metrics["score.function_requests"] == len(ep.log)
    assert out.metrics["score.function_events"] == 1200
    assert out.metrics["score.request_latency_ms"].count == len(ep.log)
    assert out.metrics.get("score.failed_function_requests", 0) == 0


def test_full_batches_in_batch_mode(fake_endpoint):
    ep = fake_endpoint()
    data = rows(1000)
    run_scoring(data, score(ep, batch_size=250))
    sizes = sorted((r.rows for r in ep.log), reverse=True)
    assert sizes[:3] == [250, 250, 250] and sum(sizes) == 1000


def test_case_guard_false_rows_pass_through_unsent(fake_endpoint):
    ep = fake_endpoint()
    data = rows(300)
    site = CallSite(step="s1", function="score", column="s", args=lambda r: (features(r),),
                    guard=lambda r: r["id"] % 3 == 0)
    out = run_scoring(data, ScoreRows(function_for(ep, batch_size=64), site, timing=NO_WAIT))
    assert_exactly_once(data, out)
    for r in out.rows:
        assert r["s"] == (r["id"] + r["x"] if r["id"] % 3 == 0 else None)
    assert sum(r.rows for r in ep.log) == 100


def test_null_and_mistyped_inputs_are_dead_lettered_unsent(fake_endpoint):
    ep = fake_endpoint()
    data = rows(50) + [{"id": 100, "x": None, "tag": "null"}, {"id": 101, "x": "abc", "tag": "text"},
                       {"id": 102, "x": "2.5", "tag": "numeric text"}]

    def arg(row):
        if row["tag"] == "null":
            return None
        return features(row)

    out = run_scoring(data, ScoreRows(function_for(ep), argument=arg, column="s", timing=NO_WAIT))
    assert_exactly_once(data, out)
    failed = {d.row["id"]: d for d in out.failed}
    assert set(failed) == {100, 101}
    assert all(d.reason == "schema_mismatch" and d.step == "udf.score" for d in failed.values())
    assert "NULL" in failed[100].message and "expects a number" in failed[101].message
    assert [r["s"] for r in out.rows if r["id"] == 102] == [104.5]  # "2.5" implicitly converted
    assert sum(r.rows for r in ep.log) == 51


def test_argument_errors_keep_their_reason(fake_endpoint):
    ep = fake_endpoint()
    data = rows(20)

    def arg(row):
        if row["id"] == 7:
            raise RowError("cast_error", "cannot cast")
        return features(row)

    out = run_scoring(data, ScoreRows(function_for(ep), argument=arg, column="s", timing=NO_WAIT))
    assert_exactly_once(data, out)
    assert [(d.row["id"], d.reason) for d in out.failed] == [(7, "cast_error")]


def test_only_poison_rows_are_dead_lettered(fake_endpoint):
    ep = fake_endpoint(poison=lambda row: int(row[0]) % 97 == 13)
    data = rows(2000)
    out = run_scoring(data, score(ep, batch_size=500, parallel_requests=2))
    assert_exactly_once(data, out)
    assert_scored_right(out)
    poison = {r["id"] for r in data if r["id"] % 97 == 13}
    assert {d.row["id"] for d in out.failed} == poison
    for d in out.failed:
        assert d.reason == "endpoint_rejected_row" and d.status == 400
        assert "the model cannot score" in d.message
    # bisection: far fewer requests than one per row
    assert len(ep.log) < 4 + 2 * len(poison) * 10


def test_503_bursts_and_429_are_retried(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(status=503, count=3), Fault(status=429, retry_after="1"), Fault(status=502),
            Fault(status=504), Fault(status=500))
    data = rows(600)
    out = run_scoring(data, score(ep, batch_size=100, max_attempts=8))
    assert_exactly_once(data, out)
    assert not out.failed and len(out.rows) == 600
    assert out.metrics["score.retries"] == 7
    assert out.metrics["score.failed_function_requests"] == 7


def test_slow_responses_and_dropped_connections_do_not_duplicate(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(delay=1.5), Fault(drop=True), Fault(delay=1.5))
    data = rows(400)
    t0 = time.monotonic()
    out = run_scoring(data, score(ep, batch_size=100, request_timeout_s=0.25))
    assert time.monotonic() - t0 < 30
    assert_exactly_once(data, out)
    assert_scored_right(out)
    assert not out.failed
    assert out.metrics["score.retries"] == 3


def test_batches_that_keep_failing_are_dead_lettered_with_the_status(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(status=503, count=3))  # exactly the first batch's three attempts
    data = rows(300)
    out = run_scoring(data, score(ep, batch_size=100, max_attempts=3))
    assert_exactly_once(data, out)
    assert len(out.failed) == 100 and len(out.rows) == 200
    assert {(d.reason, d.status) for d in out.failed} == {("endpoint_unavailable", 503)}
    assert "after 3 attempt(s)" in out.failed[0].message


def test_wrong_result_count_fails_those_rows(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(status=200, body=[1.0, 2.0]))
    data = rows(30)
    out = run_scoring(data, score(ep, batch_size=10))
    assert_exactly_once(data, out)
    assert len(out.failed) == 10
    assert {d.reason for d in out.failed} == {"endpoint_bad_response"}


@pytest.mark.parametrize("status", [401, 404])
def test_config_errors_stop_the_job_quickly_without_the_key(fake_endpoint, status, caplog):
    key = "k3y-do-not-print"
    ep = fake_endpoint(key=key if status == 401 else None)
    if status == 404:
        ep.plan(Fault(status=404, count=1000))
    fn = AzureMLFunction("score", AzureMLConfig(endpoint=ep.url, swagger=swagger_for("arrays"),
                                                key="wrong-" + key, batch_size=10, parallel_requests=2))
    p = beam.Pipeline(options=pipeline_options())
    _ = p | beam.Create(rows(500)) | ScoreRows(fn, argument=features, column="s", timing=NO_WAIT)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO), pytest.raises(Exception) as e:
        p.run().wait_until_finish()
    assert time.monotonic() - t0 < 20
    text = str(e.value)
    assert f"HTTP {status}" in text and "function 'score'" in text and ep.url in text
    assert key not in text and key not in caplog.text
    found = find_endpoint_error(e.value)
    assert isinstance(found, EndpointConfigError) and found.status == status and found.function == "score"
    assert len(ep.log) <= 12  # stopped at once, not after 50 batches


def test_find_endpoint_error_parses_remote_text():
    err = EndpointConfigError("score", "http://h/score", 403, "forbidden")
    wrapped = RuntimeError(f"Traceback ...\ntransforms.errors.EndpointConfigError: {err} [while running 'X']")
    found = find_endpoint_error(wrapped)
    assert (found.function, found.url, found.status, found.detail) == ("score", "http://h/score", 403, "forbidden")
    assert find_endpoint_error(RuntimeError("something else")) is None


def test_bundle_mode_is_equivalent(fake_endpoint):
    ep = fake_endpoint(poison=lambda row: int(row[0]) == 77)
    data = rows(700)
    out = run_scoring(data, score(ep, batch_size=128, batching=BUNDLE, parallel_requests=2))
    assert_exactly_once(data, out)
    assert_scored_right(out)
    assert [d.row["id"] for d in out.failed] == [77]
    assert all(r.rows <= 128 for r in ep.log)


def test_batching_is_stateful_unless_bundle_is_requested():
    assert choose_batching(beam.Pipeline(), "auto") == STATEFUL
    assert choose_batching(beam.Pipeline(), BUNDLE) == BUNDLE


def test_records_style_and_result_fields(fake_endpoint):
    ep = fake_endpoint("records")
    data = rows(250)
    fn = function_for(ep, batch_size=60)
    out = run_scoring(data, ScoreRows(fn, argument=lambda r: {"ID": r["id"], "x": r["x"], "tag": r["tag"]},
                                      column="result", timing=NO_WAIT))
    assert_exactly_once(data, out)
    for r in out.rows:
        assert r["result"] == {"id": r["id"], "Scored Labels": r["id"] + r["x"]}


def test_input_rows_are_not_mutated(fake_endpoint):
    ep = fake_endpoint()
    data = rows(40)
    p = beam.Pipeline(options=pipeline_options())
    src = p | beam.Create(data)
    out = src | score(ep)
    seen_src = collect(src, "src")
    collect(out["rows"], "rows")
    p.run().wait_until_finish()
    assert all("s" not in r for r in seen_src())


def test_windows_and_timestamps_are_kept(fake_endpoint):
    ep = fake_endpoint()
    data = rows(120)
    p = beam.Pipeline(options=pipeline_options())
    stamped = (p | beam.Create(data)
               | beam.Map(lambda r: beam_window.TimestampedValue(r, 1000 + r["id"]))
               | beam.WindowInto(beam_window.FixedWindows(30)))
    out = stamped | score(ep, batch_size=50)
    got = collect(out["rows"], "rows", with_timestamps=True)
    p.run().wait_until_finish()
    result = got()
    assert len(result) == 120
    for row, ts, win in result:
        assert ts == Timestamp(1000 + row["id"])
        assert win.start <= ts < win.end and win.end - win.start == 30


def test_streaming_with_test_stream(fake_endpoint):
    ep = fake_endpoint()
    data = rows(90)
    stream = BeamTestStream()
    for i in range(0, 90, 30):
        stream = stream.add_elements([beam_window.TimestampedValue(r, 100 + r["id"]) for r in data[i:i + 30]])
        stream = stream.advance_watermark_to(100 + i + 30).advance_processing_time(5)
    stream = stream.advance_watermark_to_infinity()
    p = beam.Pipeline(options=pipeline_options("--streaming"))
    out = p | stream | score(ep, batch_size=40, max_buffering_s=0.5)
    got = collect(out["rows"], "rows", with_timestamps=True)
    failed = collect(out["failed"], "failed")
    p.run().wait_until_finish()
    result = got()
    assert sorted(r["id"] for r, _, _ in result) == list(range(90)) and not failed()
    assert all(ts == Timestamp(100 + r["id"]) and r["s"] == r["id"] + r["x"] for r, ts, _ in result)
    assert all(r.rows <= 40 for r in ep.log)
