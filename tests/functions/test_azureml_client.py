"""The HTTP client and its failure policy, against the fault-injecting endpoint (time injected)."""

import email.utils
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]
pytest.register_assert_rewrite("fixtures_azureml")

from pipelines.serving.fake import Fault, swagger_for  # noqa: E402
from transforms.errors import EndpointConfigError  # noqa: E402
from transforms.functions.azureml import AzureMLConfig, AzureMLFunction  # noqa: E402
from transforms.functions.azureml.client import (  # noqa: E402
    Action,
    RetryPolicy,
    Timing,
    _retry_after,
    classify,
)

ROWS = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


class FakeClock:
    """A clock that only moves when the client sleeps; records the sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def timing(self) -> Timing:
        return Timing(clock=self.clock, sleep=self.sleep, jitter=lambda: 0.5)


# Every exchange test runs with both HTTP clients: the sender process (the default) and requests
# in the calling thread; the policy must not depend on which one carried the request.
HTTP_CLIENT = {"now": "process"}


@pytest.fixture(autouse=True, params=["process", "thread"])
def http_client(request):
    HTTP_CLIENT["now"] = request.param
    yield request.param
    HTTP_CLIENT["now"] = "process"


def client_for(ep, clock: FakeClock | None = None, key=None, **cfg):
    cfg.setdefault("http_client", HTTP_CLIENT["now"])
    config = AzureMLConfig(endpoint=ep.url, swagger=swagger_for(ep.style), key=key, **cfg)
    fn = AzureMLFunction("score", config)
    return fn.make_client(timing=(clock or FakeClock()).timing()).open()


def test_classify_is_the_policy_table():
    assert classify(200) is Action.OK and classify(204) is Action.OK
    for s in (None, 408, 429, 500, 502, 503, 504):
        assert classify(s) is Action.RETRY
    for s in (400, 413, 422):
        assert classify(s) is Action.SPLIT
    for s in (401, 403, 404):
        assert classify(s) is Action.STOP
    for s in (301, 405, 409, 501, 505):
        assert classify(s) is Action.FAIL


def test_backoff_is_exponential_capped_and_jittered():
    p = RetryPolicy(backoff_base_s=0.5, backoff_max_s=4.0)
    assert [p.backoff(n, 0.0) for n in (1, 2, 3, 4, 5)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert [p.backoff(n, 0.999999) for n in (1, 5)] == pytest.approx([0.5, 4.0], rel=1e-5)


def test_retry_after_parsing():
    now = time.time()
    assert _retry_after("7", now) == 7.0
    assert _retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1.5)
    assert _retry_after("soon", now) is None and _retry_after(None, now) is None


def test_scores_and_sends_the_key(fake_endpoint):
    ep = fake_endpoint("arrays", key="s3cret")
    with client_for(ep, key="s3cret") as c:
        res = c.call(ROWS)
    assert res.action is Action.OK and res.results == [3.0, 7.0, 11.0]
    assert res.stats.requests == 1 and res.stats.rows_sent == 3 and res.stats.retries == 0


def test_503_burst_is_retried_with_backoff(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(status=503, count=3))
    clock = FakeClock()
    with client_for(ep, clock, backoff_base_s=1.0, max_attempts=5) as c:
        res = c.call(ROWS)
    assert res.action is Action.OK and res.results == [3.0, 7.0, 11.0]
    assert clock.sleeps == [0.75, 1.5, 3.0]  # base * 2**n * (0.5 + 0.5/2)
    assert res.stats.requests == 4 and res.stats.failed_requests == 3 and res.stats.retries == 3


def test_429_honours_retry_after(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(status=429, retry_after="7"), Fault(status=503, retry_after="2"))
    clock = FakeClock()
    with client_for(ep, clock) as c:
        res = c.call(ROWS)
    assert res.action is Action.OK
    assert clock.sleeps == [7.0, 2.0]


def test_persistent_503_gives_up_after_max_attempts(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(status=503, count=100))
    clock = FakeClock()
    with client_for(ep, clock, max_attempts=4) as c:
        res = c.call(ROWS)
    assert res.action is Action.FAIL and res.reason == "endpoint_unavailable" and res.status == 503
    assert "after 4 attempt(s)" in res.message and len(ep.log) == 4


def test_deadline_bounds_the_retries(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(status=503, count=100, retry_after="40"))
    clock = FakeClock()
    with client_for(ep, clock, max_attempts=50, retry_deadline_s=100) as c:
        res = c.call(ROWS)
    assert res.action is Action.FAIL and clock.sleeps == [40.0, 40.0] and len(ep.log) == 3


def test_timeout_and_dropped_connection_are_retried(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(delay=2.0), Fault(drop=True))
    clock = FakeClock()
    with client_for(ep, clock, request_timeout_s=0.3) as c:
        t0 = time.monotonic()
        res = c.call(ROWS)
    assert res.action is Action.OK and res.results == [3.0, 7.0, 11.0]
    assert res.stats.retries == 2 and time.monotonic() - t0 < 2.0


def test_connection_refused_is_unavailable(fake_endpoint):
    ep = fake_endpoint()
    url = ep.url
    ep.stop()
    fn = AzureMLFunction("score", AzureMLConfig(endpoint=url, swagger=swagger_for("arrays"), max_attempts=2,
                                                http_client=HTTP_CLIENT["now"]))
    clock = FakeClock()
    with fn.make_client(timing=clock.timing()) as c:
        res = c.call(ROWS)
    assert res.action is Action.FAIL and res.reason == "endpoint_unavailable" and res.status is None
    assert "did not answer" in res.message and len(clock.sleeps) == 1


def test_400_asks_for_a_split_with_the_endpoint_message(fake_endpoint):
    ep = fake_endpoint(poison=lambda row: row[0] == 3.0)
    with client_for(ep) as c:
        res = c.call(ROWS)
    assert res.action is Action.SPLIT and res.status == 400
    assert "row 1: the model cannot score" in res.message and len(ep.log) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_config_statuses_stop_without_the_key(fake_endpoint, status):
    ep = fake_endpoint()
    ep.plan(Fault(status=status, body={"message": "Bearer topsecret is not valid"}))
    with client_for(ep, key="topsecret") as c, pytest.raises(EndpointConfigError) as e:
        c.call(ROWS)
    text = str(e.value)
    assert f"HTTP {status}" in text and "function 'score'" in text and ep.url in text
    assert "topsecret" not in text and len(ep.log) == 1


def test_wrong_key_is_401_and_an_echoed_key_is_redacted(fake_endpoint):
    ep = fake_endpoint(key="right", echo_auth=True)
    with client_for(ep, key="wrong-key-123") as c, pytest.raises(EndpointConfigError) as e:
        c.call(ROWS)
    assert e.value.status == 401 and "wrong-key-123" not in str(e.value) and "***" in str(e.value)


def test_other_statuses_fail_without_retry(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(status=501))
    clock = FakeClock()
    with client_for(ep, clock) as c:
        res = c.call(ROWS)
    assert res.action is Action.FAIL and res.status == 501 and clock.sleeps == []


def test_wrong_count_and_garbage_are_bad_responses(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(status=200, body=[1.0]), Fault(status=200, body=b"<html>oops</html>"),
            Fault(status=200, body={"unexpected": 1}))
    with client_for(ep) as c:
        results = [c.call(ROWS) for _ in range(3)]
    assert [r.reason for r in results] == ["endpoint_bad_response"] * 3
    assert "returned 1 results for 3 rows" in results[0].message
    assert "not JSON" in results[1].message
    assert all(r.action is Action.FAIL for r in results) and len(ep.log) == 3


def test_query_string_keys_never_appear_in_messages(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(status=503, count=9))
    fn = AzureMLFunction("score", AzureMLConfig(endpoint=ep.url + "?code=QUERYKEY", swagger=swagger_for("arrays"),
                                                http_client=HTTP_CLIENT["now"],
                                                max_attempts=2))
    clock = FakeClock()
    with fn.make_client(timing=clock.timing()) as c:
        res = c.call(ROWS)
    assert "QUERYKEY" not in res.message and res.status == 503


def test_records_style_round_trip(fake_endpoint):
    ep = fake_endpoint("records")
    with client_for(ep) as c:
        res = c.call([{"id": 1, "x": 2.5}, {"id": 2, "x": 0.5}])
    assert res.results == [{"id": 1, "Scored Labels": 3.5}, {"id": 2, "Scored Labels": 2.5}]


def test_an_echoed_query_key_is_redacted_from_stop_errors(fake_endpoint):
    ep = fake_endpoint()
    fn = AzureMLFunction("score", AzureMLConfig(endpoint=ep.url.replace("/score", "/missing") + "?code=QUERYKEY",
                                                http_client=HTTP_CLIENT["now"],
                                                swagger=swagger_for("arrays")))
    with fn.make_client(timing=FakeClock().timing()) as c, pytest.raises(EndpointConfigError) as e:
        c.call(ROWS)
    assert e.value.status == 404 and "QUERYKEY" not in str(e.value) and "/missing" in str(e.value)


def test_default_policy_has_no_attempt_cap_and_a_30_minute_deadline(fake_endpoint):
    ep = fake_endpoint()
    ep.plan(Fault(status=503, count=10_000))
    clock = FakeClock()
    with client_for(ep, clock) as c:  # every retry setting left at its default
        res = c.call(ROWS)
    assert res.action is Action.FAIL and res.reason == "endpoint_unavailable" and res.status == 503
    # By hand: waits are min(10, 0.5 * 2**(n-1)) * 0.75 (jitter 0.5) = 0.375, 0.75, 1.5, 3, 6, then
    # 7.5 s each; 11.625 + 238 * 7.5 = 1796.6 s <= 1800, one more would end at 1804.1 s > 1800.
    assert clock.sleeps[:6] == [0.375, 0.75, 1.5, 3.0, 6.0, 7.5] and max(clock.sleeps) == 7.5
    assert len(clock.sleeps) == 5 + 238 and len(ep.log) == 244
    assert res.stats.retries == 243 and res.stats.wait_s == pytest.approx(1796.625)


def test_a_negative_deadline_retries_forever_and_streaming_defaults_to_it():
    forever = RetryPolicy(deadline_s=-1)
    assert not forever.gives_up(10**6, 10.0**9)
    assert RetryPolicy().gives_up(3, 1800.5) and not RetryPolicy().gives_up(10**6, 1799.0)
    assert RetryPolicy(max_attempts=3).gives_up(3, 1.0)
    config = AzureMLConfig(endpoint="http://h/score")
    assert config.retry_policy().deadline_s == 1800 and config.retry_policy(streaming=True).deadline_s == -1
    assert AzureMLConfig(endpoint="http://h/score", retry_deadline_s=60).retry_policy(streaming=True).deadline_s == 60


def test_retry_deadline_and_attempts_are_checked():
    from transforms.errors import FunctionConfigError

    for bad in ({"retry_deadline_s": 0}, {"retry_deadline_s": -5}, {"max_attempts": -1}):
        with pytest.raises(FunctionConfigError):
            AzureMLConfig.from_dict("score", {"endpoint": "http://h/score", **bad})
    cfg = AzureMLConfig.from_dict("score", {"endpoint": "http://h/score", "retry_deadline_s": -1, "max_attempts": 0})
    assert cfg.retry_policy().deadline_s == -1 and cfg.retry_policy().max_attempts == 0


def test_fast_bodies_are_the_json_the_standard_library_reads(fake_endpoint):
    """orjson where it agrees with json; json decides NaN (refused), big ints and NaN responses."""
    import datetime as dt
    import json

    ep = fake_endpoint()
    with client_for(ep) as c:
        tricky = [[1, 2.5, 1e16, -0.0, 2**70, "é\u2028😀", None, dt.datetime(2024, 1, 2, 3, 4, 5)]]
        assert json.loads(c.encode(tricky)) == json.loads(json.dumps(
            {"data": tricky}, default=lambda v: "2024-01-02T03:04:05.0000000Z"))
        for bad in ([[float("nan")]], [[float("inf")]]):
            with pytest.raises(ValueError):
                c.encode(bad)
        assert c.decode(b'[1.5, 123456789012345678901234567890, -9223372036854775809]') == [
            1.5, 123456789012345678901234567890, -9223372036854775809]  # every digit, as json.loads
        assert c.decode(b'[1.5, NaN, 123456789012345678901234567890]')[2] == 123456789012345678901234567890
        with pytest.raises(ValueError, match="not JSON"):
            c.decode(b"<html>")
