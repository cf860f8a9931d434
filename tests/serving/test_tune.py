"""`asa-beam tune-batch`: the sweep, the recommendations and the chart (against a fake endpoint
whose latency climbs with the batch size)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]
pytest.register_assert_rewrite("fixtures_azureml")

from pipelines import tune as tuning  # noqa: E402
from pipelines.serving.fake import swagger_for  # noqa: E402
from transforms.functions.azureml import AzureMLConfig, AzureMLFunction  # noqa: E402


def function_for(ep):
    return AzureMLFunction("score", AzureMLConfig(endpoint=ep.url, swagger=swagger_for(ep.style)))


def test_sweep_recommends_where_latency_climbs(fake_endpoint, tmp_path):
    # 20 ms per request + 0.1 ms per row: latency doubles at 200 rows
    ep = fake_endpoint("records", latency_s=0.02, latency_per_row_s=0.0001)
    rows = [{"id": i, "x": i / 10, "other": "ignored"} for i in range(30)]
    report = tuning.tune(function_for(ep), rows, sizes=(10, 50, 100, 200, 400, 800), repeats=2,
                         parallel_levels=(1, 2, 4), chart=tmp_path / "sweep.png")
    assert [s.batch_size for s in report.sizes] == [10, 50, 100, 200, 400, 800]
    assert report.batch_size in (100, 200)
    latencies = [s.latency_ms for s in report.sizes]
    assert latencies[-1] > 3 * latencies[0]
    assert [p.parallel_requests for p in report.parallel] == [1, 2, 4]
    assert report.parallel[1].rows_per_s > 1.5 * report.parallel[0].rows_per_s  # the fake serves in parallel
    assert report.parallel_requests in (2, 4)
    assert max(r.rows for r in ep.log) == 800  # rows were repeated to fill the batch
    png = (tmp_path / "sweep.png").read_bytes()
    assert png.startswith(b"\x89PNG") and report.chart == tmp_path / "sweep.png"
    text = report.format()
    assert "recommended batch_size" in text and "recommended parallel_requests" in text


def test_sweep_stops_at_a_size_the_endpoint_rejects(fake_endpoint):
    ep = fake_endpoint(poison=lambda row: False)
    ep.score = lambda row: sum(row)
    original = ep.answer
    ep.answer = lambda rows: original(rows) if len(rows) <= 100 else [0.0]  # wrong count beyond 100
    report = tuning.tune(function_for(ep), [[1, 2], [3, 4]], sizes=(50, 100, 200, 400), repeats=1,
                         parallel_levels=())
    assert [s.batch_size for s in report.sizes] == [50, 100, 200] and report.sizes[-1].error
    assert report.batch_size in (50, 100) and report.parallel_requests == 1


def test_records_offered_to_an_array_endpoint_use_their_values(fake_endpoint):
    ep = fake_endpoint("arrays")
    fn = function_for(ep)
    assert tuning.sample_payloads(fn, [{"a": 1, "b": 2.5}, {"a": "x"}, None]) == [[1.0, 2.5]]
    with pytest.raises(ValueError, match="none of the 1 sample rows"):
        tuning.tune(fn, [{"a": "x"}], sizes=(10,))


def test_main_with_an_injected_loader(fake_endpoint, tmp_path, capsys):
    ep = fake_endpoint("arrays", latency_s=0.005)
    chart = tmp_path / "c.png"

    def loader(job, function, sample):
        assert (job, function) == ("job.yaml", "score")
        return function_for(ep), [[i, i / 2] for i in range(sample)]

    code = tuning.main(["job.yaml", "score", "--sizes", "5,20", "--parallel", "1,2", "--repeats", "1",
                        "--sample", "10", "--chart", str(chart)], loader=loader)
    assert code == 0 and chart.exists()
    assert "recommended batch_size" in capsys.readouterr().out
