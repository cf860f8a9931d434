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
    metrics_of,
    pipeline_options,
    run_scoring,
)

from pipelines.serving.fake import Fault, poison_rate, swagger_for  # noqa: E402
from transforms.deadletter import RowError  # noqa: E402
from transforms.errors import EndpointConfigError  # noqa: E402
from transforms.functions.azureml import (  # noqa: E402
    AzureMLConfig,
    AzureMLFunction,
    ScoreRows,
    find_endpoint_error,
)
from transforms.functions.azureml.scoring import (  # noqa: E402
    BUNDLE,
    READ_AHEAD_ROWS,
    STATEFUL,
    GilHandoff,
    PoisonIsolation,
    choose_batching,
)
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


_THREADS_SEEN: list = []


def _threads_seen(row):
    import threading

    _THREADS_SEEN.append({t.name for t in threading.enumerate()})  # same process: in-process runner
    return row


def test_successful_batches_are_sent_and_read_by_the_pipelines_thread(fake_endpoint):
    # A pool thread per request costs several GIL hand-offs with the pipeline's thread; a batch
    # the endpoint scores whole is sent and read without one (the pool's threads start lazily).
    ep = fake_endpoint(latency_s=0.01)
    data = rows(900)
    _THREADS_SEEN.clear()
    p = beam.Pipeline(options=pipeline_options())
    out = p | beam.Create(data) | ScoreRows(function_for(ep, alias="here", batch_size=100, parallel_requests=2),
                                            argument=features, column="s", timing=NO_WAIT)
    got = collect(out["rows"] | beam.Map(_threads_seen), "rows")
    result = p.run()
    result.wait_until_finish()
    outcome = type("O", (), {"rows": got(), "failed": []})
    assert_exactly_once(data, outcome)
    assert_scored_right(outcome)
    assert len(_THREADS_SEEN) == 900
    assert not any(name.startswith("udf.here") for names in _THREADS_SEEN for name in names)
    metrics = metrics_of(result)
    assert metrics["here.function_requests"] == len(ep.log) == 9
    assert metrics["here.request_latency_ms"].count == 9
    assert metrics["here.request_latency_ms"].min >= 10  # the exchange's own time (latency_s=0.01)


def test_a_batch_whose_first_request_fails_goes_on_from_that_answer(fake_endpoint):
    # A 400 for the whole batch: the rejected row is isolated from there (the whole batch is not
    # sent a second time); a 503: retried; both in a pool thread, each row out once.
    ep = fake_endpoint(poison=lambda row: int(row[0]) == 37)
    ep.plan(Fault(status=503))
    seen = _scored_ids(ep)
    data = rows(100)
    out = run_scoring(data, score(ep, batch_size=100, parallel_requests=1))
    assert_exactly_once(data, out)
    assert_scored_right(out)
    assert [(d.row["id"], d.reason) for d in out.failed] == [(37, "endpoint_rejected_row")]
    assert sorted(seen) == [float(i) for i in range(100) if i != 37]  # each good row scored once
    whole = [r.status for r in ep.log if r.rows == 100]
    assert whole == [503, 400]  # the first request, retried once, then isolated in parts
    assert out.metrics["score.retries"] == 1
    assert out.metrics["score.function_requests"] == len(ep.log)
    assert out.metrics["score.function_events"] == sum(r.rows for r in ep.log)


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


def _untimed(ep, **cfg) -> ScoreRows:
    """``score`` at a call site whose rows' event time nothing reads (``keeps_event_time`` False)."""
    site = CallSite(step="udf.score", function="score", column="s", args=lambda row: (features(row),),
                    keeps_event_time=False)
    return ScoreRows(function_for(ep, **cfg), site, timing=NO_WAIT)


def _dofns(pipeline) -> set[str]:
    return {t.unique_name.rsplit("/", 1)[-1] for t in pipeline.to_runner_api().components.transforms.values()}


@pytest.mark.parametrize("untimed", [False, True])
def test_windows_and_timestamps_are_kept(untimed, fake_endpoint):
    # untimed: keeps_event_time False is only taken in the global window, so windowed rows keep theirs
    ep = fake_endpoint()
    data = rows(120)
    p = beam.Pipeline(options=pipeline_options())
    stamped = (p | beam.Create(data)
               | beam.Map(lambda r: beam_window.TimestampedValue(r, 1000 + r["id"]))
               | beam.WindowInto(beam_window.FixedWindows(30)))
    out = stamped | (_untimed(ep, batch_size=50) if untimed else score(ep, batch_size=50))
    got = collect(out["rows"], "rows", with_timestamps=True)
    assert "ParDo(ScoreRowsDoFn)" in _dofns(p) and "ParDo(ScoreRowsUntimedDoFn)" not in _dofns(p)
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


# -- flat memory, overlap, call sites ----------------------------------------------------------

_PRODUCED: list = []  # rows produced upstream so far (same process: the FnApiRunner runs in-process)
_AT_REQUEST: list = []  # (rows produced, rows answered) when each request reached the endpoint


def _count_produced(row):
    _PRODUCED.append(1)
    return row


def _score_watching_the_input(ep, n: int, on_request, **cfg) -> list:
    """``n`` rows through ``Map(_count_produced)`` into ``score(ep, **cfg)``; ``on_request(batch)``
    runs before the endpoint answers each request. The scored rows."""
    _PRODUCED.clear()
    _AT_REQUEST.clear()
    original = ep.answer

    def answer(batch):
        on_request(batch)
        return original(batch)

    ep.answer = answer
    p = beam.Pipeline(options=pipeline_options())
    out = p | beam.Create(rows(n)) | beam.Map(_count_produced) | score(ep, **cfg)
    got = collect(out["rows"], "rows")
    p.run().wait_until_finish()
    return got()


def test_bounded_input_is_scored_as_it_streams_past_not_after_it_is_all_read(fake_endpoint):
    """Flat memory: a request leaves once batch_size rows are prepared, while the input is still being
    read; at no time are more than batch_size x (parallel_requests + 1) + READ_AHEAD_ROWS rows held
    (the requests in flight, the full batches waiting for a slot, the buffer filling)."""
    answered = [0]

    def watch(batch):
        _AT_REQUEST.append((len(_PRODUCED), answered[0]))
        answered[0] += len(batch)

    ep = fake_endpoint()
    n = 4 * READ_AHEAD_ROWS
    scored = _score_watching_the_input(ep, n, watch, batch_size=200, parallel_requests=2)
    assert len(scored) == n and sum(r.rows for r in ep.log) == n
    assert all(r.rows <= 200 for r in ep.log)
    held = max(produced - done for produced, done in _AT_REQUEST)
    ahead = READ_AHEAD_ROWS // 200 * 200
    assert held <= 200 * (2 + 1) + ahead, held  # with a GroupByKey, the first request would see all n


def test_rows_are_read_on_while_every_request_slot_is_busy(fake_endpoint):
    """With every slot busy, full batches wait for a slot while the next ones fill, up to
    READ_AHEAD_ROWS rows of them: the pipeline's thread reads on instead of waiting for the
    endpoint, and waits when one more batch is full."""
    batch = 1000
    ahead = READ_AHEAD_ROWS // batch  # full batches that may wait
    stop = batch * (1 + ahead + 1)  # one in flight, `ahead` waiting, and the one that is one too many

    def hold_the_first(batch_rows):
        if not _AT_REQUEST:  # the first request: answered once the last batch the thread may read is filling
            deadline = time.monotonic() + 20
            while len(_PRODUCED) < stop - batch // 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        _AT_REQUEST.append(len(_PRODUCED))

    ep = fake_endpoint()
    n = stop + 2 * batch
    scored = _score_watching_the_input(ep, n, hold_the_first, batch_size=batch, parallel_requests=1)
    assert len(scored) == n and [r.rows for r in ep.log] == [batch] * (n // batch)
    # waiting for a slot at once, the thread would have stopped at row 2 x batch (and the answer at 20 s)
    assert _AT_REQUEST[0] >= stop - batch // 2
    assert _AT_REQUEST[0] <= stop  # ... and it stops there: memory stays flat


def test_one_function_at_two_call_sites_loses_no_rows(fake_endpoint):
    ep = fake_endpoint()
    fn = function_for(ep, batch_size=64, parallel_requests=2)
    data = rows(500)
    p = beam.Pipeline(options=pipeline_options())
    src = p | beam.Create(data)
    a = src | "A" >> ScoreRows(fn, argument=features, column="s", timing=NO_WAIT)
    b = src | "B" >> ScoreRows(fn, argument=lambda r: [r["id"], 1.0], column="t", step="second", timing=NO_WAIT)
    got_a, got_b = collect(a["rows"], "a"), collect(b["rows"], "b")
    p.run().wait_until_finish()
    assert sorted(r["id"] for r in got_a()) == list(range(500)) == sorted(r["id"] for r in got_b())
    assert all(r["t"] == r["id"] + 1.0 for r in got_b())


def test_sliding_windows_keep_every_window_and_are_sent_once(fake_endpoint):
    ep = fake_endpoint()
    data = rows(100)
    p = beam.Pipeline(options=pipeline_options())
    stamped = (p | beam.Create(data)
               | beam.Map(lambda r: beam_window.TimestampedValue(r, r["id"]))
               | beam.WindowInto(beam_window.SlidingWindows(20, 10)))
    out = stamped | score(ep, batch_size=30)
    got = collect(out["rows"], "rows", with_timestamps=True)
    p.run().wait_until_finish()
    per_row = Counter(r["id"] for r, _, _ in got())
    assert set(per_row.values()) == {2} and len(per_row) == 100  # each row in its two windows
    assert sum(r.rows for r in ep.log) == 100  # ... but sent once


# -- poison rows -------------------------------------------------------------------------------

def _scored_ids(ep):
    """The fake endpoint records which ids it scored (answered with 200)."""
    seen: list = []
    plain = ep.score

    def recording(row):
        seen.append(row[0])
        return plain(row)

    ep.score = recording
    return seen


@pytest.mark.parametrize(("rate", "n", "max_ratio"), [(0.02, 6000, 3.0), (0.001, 30000, 1.5)])
def test_poison_rows_cost_little_and_good_rows_are_scored_exactly_once(fake_endpoint, rate, n, max_ratio):
    poison = poison_rate(rate)
    ep = fake_endpoint(poison=poison)
    seen = _scored_ids(ep)
    data = rows(n)
    out = run_scoring(data, score(ep, batch_size=1000))
    assert_exactly_once(data, out)
    assert_scored_right(out)
    bad = {r["id"] for r in data if poison(features(r))}
    assert {d.row["id"] for d in out.failed} == bad and bad
    assert all(d.reason == "endpoint_rejected_row" for d in out.failed)
    assert sorted(seen) == sorted(float(r["id"]) for r in data if r["id"] not in bad)  # never twice
    sent = sum(r.rows for r in ep.log)
    assert sent <= max_ratio * n, f"{sent / n:.2f}x rows sent"  # the targets (bisection: 7.3x, 2.2x)
    assert out.metrics["score.function_events"] == sent


def test_poison_isolation_plans():
    iso = PoisonIsolation()
    assert iso.first_part(1000) == 1000  # nothing rejected yet: whole batches
    iso.observe(rows=10_000, rejected=200)
    first = iso.first_part(1000)
    assert 5 <= first <= 100  # most 1000-row batches would fail at 2%: smaller parts from the start
    assert iso.split_part(1) == 1 and iso.split_part(2) == 1  # two rows: alone is cheaper than halves
    for _ in range(2000):  # the rate follows what the job sees now: 2M clean rows later ...
        iso.observe(rows=1000, rejected=0)
    assert iso.first_part(1000) == 1000


# -- faults with the default settings ------------------------------------------------------------

def test_many_failed_attempts_cost_no_row_by_default(fake_endpoint):
    """No attempt cap by default: 60 dropped connections and 60 503s in a row, then recovery."""
    ep = fake_endpoint()
    ep.plan(Fault(drop=True, count=60), Fault(status=503, count=60))
    data = rows(2000)
    out = run_scoring(data, ScoreRows(AzureMLFunction("score", AzureMLConfig(
        endpoint=ep.url, swagger=swagger_for("arrays"))), argument=features, column="s", timing=NO_WAIT))
    assert_exactly_once(data, out)
    assert not out.failed and out.metrics["score.retries"] == 120
    assert out.metrics["score.retry_wait_ms"] > 0


def test_random_503_and_429_dead_letter_nothing_with_default_settings(fake_endpoint):
    ep = fake_endpoint(error_rate=0.2, error_statuses=(503, 429), error_retry_after="0.2")
    seen = _scored_ids(ep)
    data = rows(4000)
    fn = AzureMLFunction("score", AzureMLConfig(endpoint=ep.url, swagger=swagger_for("arrays"), batch_size=100))
    out = run_scoring(data, ScoreRows(fn, argument=features, column="s"))  # real time, default policy
    assert_exactly_once(data, out)
    assert_scored_right(out)
    assert not out.failed
    assert sorted(seen) == [float(i) for i in range(4000)]  # each row scored by the endpoint once
    assert out.metrics["score.retries"] >= 1 and out.metrics["score.retries"] == sum(
        1 for r in ep.log if r.status in (503, 429))


def test_a_60_second_outage_mid_job_dead_letters_nothing_with_default_settings(fake_endpoint):
    """The endpoint goes fully down after its 5th request: connections refused for 30 s, then 503
    for 30 s (a restart). Default settings: nothing dead-lettered, every row scored once.
    Takes about 70 s: real time, as the outage is."""
    ep = fake_endpoint(latency_s=0.05)
    ep.outage_after(5, refuse_s=30, unavailable_s=30)
    seen = _scored_ids(ep)
    data = rows(12_000)
    fn = AzureMLFunction("score", AzureMLConfig(endpoint=ep.url, swagger=swagger_for("arrays")))
    t0 = time.monotonic()
    out = run_scoring(data, ScoreRows(fn, argument=features, column="s"))
    assert time.monotonic() - t0 >= 60
    assert_exactly_once(data, out)
    assert not out.failed and len(out.rows) == 12_000
    assert sorted(seen) == [float(i) for i in range(12_000)]
    assert out.metrics["score.retries"] >= 5
    assert out.metrics["score.retry_wait_ms"] >= 50_000  # the batch in flight waited out the outage


def test_run_summary_shows_retries_and_time_spent_waiting(fake_endpoint, tmp_path, capsys):
    import json

    from pipelines.cli import main

    ep = fake_endpoint("records")
    ep.plan(Fault(status=503, count=2))  # no Retry-After: back-off of 0.25-0.5 s, then 0.5-1 s
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "x": i / 2}) + "\n" for i in range(50)))
    (tmp_path / "q.asaql").write_text(
        "WITH D AS (SELECT id, x FROM input)\nSELECT D.id, udf.score(D).[Scored Labels] AS s INTO output FROM D")
    (tmp_path / "job.yaml").write_text(
        "query: q.asaql\ninputs: {input: {path: in.jsonl}}\noutputs: {output: {path: out/w}}\n"
        f"functions: {{score: {{type: azureml, endpoint: '{ep.url}'}}}}\n")
    assert main(["run", str(tmp_path / "job.yaml")]) == 0
    summary = capsys.readouterr().out
    assert "dead-lettered: 0 rows" in summary
    line = next(x for x in summary.splitlines() if "udf.score:" in x)
    assert "retries 2" in line and "requests 3" in line
    waited = float(line.split("waiting to retry ")[1].split(" s")[0])
    assert 0.7 <= waited <= 1.6  # 0.25-0.5 s + 0.5-1 s of back-off, as the summary reports it


def _freeze_count_seen(row):
    import gc

    _FREEZE_COUNTS.append(gc.get_freeze_count())  # same process: the FnApiRunner runs in-process
    return row


_FREEZE_COUNTS: list = []


def test_scoring_freezes_the_objects_alive_at_setup_until_teardown(fake_endpoint):
    """Rows held while requests are in flight survive young collections; full collections would
    then walk every object of the worker each time. The objects alive at setup are frozen while
    the scoring DoFn lives, and unfrozen after it, so the next pipeline's garbage is collected."""
    import gc

    from transforms.functions.azureml.scoring import GcFreeze

    _FREEZE_COUNTS.clear()
    p = beam.Pipeline(options=pipeline_options())
    out = p | beam.Create(rows(10)) | score(fake_endpoint())
    out["rows"] | beam.Map(_freeze_count_seen)
    p.run().wait_until_finish()
    assert len(_FREEZE_COUNTS) == 10 and min(_FREEZE_COUNTS) > 10_000
    assert GcFreeze._holds == 0 and gc.get_freeze_count() == 0


def test_rows_whose_time_nothing_reads_are_scored_once_in_the_global_window(fake_endpoint):
    # the untimed DoFn: outputs leave during process() as plain values and in finish_bundle as
    # WindowedValues it makes; both must land in the global window, each row once
    ep = fake_endpoint(poison=lambda row: int(row[0]) % 97 == 13)
    data = rows(1500)
    p = beam.Pipeline(options=pipeline_options())
    out = p | beam.Create(data) | _untimed(ep, batch_size=200, parallel_requests=2)
    got, got_failed = collect(out["rows"], "rows", with_timestamps=True), collect(out["failed"], "failed", True)
    assert "ParDo(ScoreRowsUntimedDoFn)" in _dofns(p)
    p.run().wait_until_finish()
    scored, failed = got(), got_failed()
    outcome = type("O", (), {"rows": [r for r, _, _ in scored], "failed": [d for d, _, _ in failed]})
    assert_exactly_once(data, outcome)
    assert_scored_right(outcome)
    assert {d.row["id"] for d in outcome.failed} == {r["id"] for r in data if r["id"] % 97 == 13}
    assert {w for _, _, w in scored + failed} == {beam_window.GlobalWindow()}
    assert max(r.rows for r in ep.log) <= 200
