"""udf.score against the real Azure ML inference server with the bundled taxi model (both styles)."""

import sys
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]
pytest.register_assert_rewrite("fixtures_azureml")
from fixtures_azureml import NO_WAIT, model_cache_dir, run_scoring  # noqa: E402

from pipelines.serving import model as taxi  # noqa: E402
from transforms.errors import FunctionConfigError  # noqa: E402
from transforms.functions.azureml import AzureMLFunction, ScoreRows  # noqa: E402
from transforms.functions.azureml.swagger import ARRAY, RECORD, parse_swagger  # noqa: E402
from transforms.functions.registry import FunctionRegistry  # noqa: E402

FEATURES = list(taxi.FEATURES)


@pytest.fixture(scope="module")
def trips():
    return [{"trip": i, **t} for i, t in enumerate(taxi.generate_trips(300, seed=7))]


@pytest.fixture(scope="module")
def expected(trips):
    model = taxi.load_model(model_cache_dir())
    return dict(zip((t["trip"] for t in trips), taxi.predict(model, [{k: t[k] for k in FEATURES} for t in trips]),
                    strict=True))


def registry_function(url: str, **extra) -> AzureMLFunction:
    registry = FunctionRegistry.from_config({"score": {"type": "azureml", "endpoint": url, **extra}})
    registry.validate()  # reads the swagger: the `check` step
    fn = registry.lookup("SCORE")
    assert isinstance(fn, AzureMLFunction)
    return fn


def test_live_swagger_both_versions(records_endpoint, arrays_endpoint):
    for ep, shape in ((records_endpoint, RECORD), (arrays_endpoint, ARRAY)):
        for version in ("", "?version=3"):
            sig = parse_swagger(requests.get(ep.swagger_url + version, timeout=10).json(), endpoint=ep.url)
            assert sig.row_shape == shape
    sig = registry_function(records_endpoint.url).signature
    assert sig.request_path == ("Inputs", "WebServiceInput0") and sig.response_path == ("Results", "WebServiceOutput0")


def test_records_style_scores_like_the_model(records_endpoint, trips, expected):
    fn = registry_function(records_endpoint.url, batch_size=64, parallel_requests=2)
    out = run_scoring(trips, ScoreRows(fn, argument=lambda r: {k: r[k] for k in FEATURES}, column="result",
                                       timing=NO_WAIT))
    assert not out.failed and len(out.rows) == len(trips)
    for row in out.rows:
        assert row["result"]["Scored Labels"] == expected[row["trip"]]
        assert row["result"]["weekday"] == row["weekday"]  # designer endpoints echo the inputs
        assert abs(row["result"]["Scored Labels"] - row["fare"]) < 0.25 * row["fare"] + 3
    assert out.metrics["score.function_events"] == len(trips)


def test_arrays_style_with_implicit_string_conversion(arrays_endpoint, trips, expected):
    fn = registry_function(arrays_endpoint.url, batch_size=100)
    out = run_scoring(trips, ScoreRows(fn, argument=lambda r: [r[k] for k in FEATURES], column="fare_pred",
                                       timing=NO_WAIT))
    assert not out.failed
    assert {r["trip"]: r["fare_pred"] for r in out.rows} == expected


def test_rows_the_model_rejects_are_isolated(records_endpoint, trips, expected):
    bad = {5, 77, 78, 250}
    data = [dict(t, weekday="Caturday") if t["trip"] in bad else t for t in trips]
    fn = registry_function(records_endpoint.url, batch_size=300)
    out = run_scoring(data, ScoreRows(fn, argument=lambda r: {k: r[k] for k in FEATURES}, column="result",
                                      timing=NO_WAIT))
    assert {d.row["trip"] for d in out.failed} == bad
    assert all(d.reason == "endpoint_rejected_row" and d.status == 400 and "Caturday" in d.message
               for d in out.failed)
    assert {r["trip"]: r["result"]["Scored Labels"] for r in out.rows} == {
        k: v for k, v in expected.items() if k not in bad}


def test_key_env_must_be_set(records_endpoint, monkeypatch):
    monkeypatch.delenv("ASA_TEST_SCORE_KEY", raising=False)
    with pytest.raises(FunctionConfigError, match="ASA_TEST_SCORE_KEY"):
        registry_function(records_endpoint.url, key_env="ASA_TEST_SCORE_KEY")
    monkeypatch.setenv("ASA_TEST_SCORE_KEY", "any-key")  # the local server does not check keys
    fn = registry_function(records_endpoint.url, key_env="ASA_TEST_SCORE_KEY")
    assert "any-key" not in repr(fn.config) and "any-key" not in fn.describe()


@pytest.mark.parametrize("spec, message", [
    ({}, "'endpoint'"),
    ({"endpoint": "ftp://x/score"}, "http"),
    ({"endpoint": "http://h/score", "batch_size": 0}, "between 1 and 10000"),
    ({"endpoint": "http://h/score", "batch_size": 20000}, "between 1 and 10000"),
    ({"endpoint": "http://h/score", "parallel_requests": "4"}, "must be a number"),
    ({"endpoint": "http://h/score", "batch_sise": 10}, "unknown key"),
    ({"endpoint": "http://h/score", "batching": "magic"}, "batching"),
    ({"endpoint": "http://h/score", "key_env": "not a name"}, "key_env"),
])
def test_config_errors(spec, message):
    with pytest.raises(FunctionConfigError, match=message):
        FunctionRegistry.from_config({"score": {"type": "azureml", **spec}})
