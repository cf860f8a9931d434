"""Both seed queries of the ML UDF doc, end to end through `asa-beam run`, against the real Azure ML
inference server serving the bundled model: results must equal the model's own predictions."""

import glob
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]
from fixtures_azureml import model_cache_dir  # noqa: E402

from pipelines.cli import main  # noqa: E402
from pipelines.examples.trips import trips, write_trips  # noqa: E402
from pipelines.serving import model as taxi  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "ml"
N = 400


def read(prefix: Path) -> list[dict]:
    return [json.loads(line) for name in sorted(glob.glob(f"{prefix}-*-of-*"))
            for line in Path(name).read_text().splitlines() if line]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = write_trips(tmp_path_factory.mktemp("seed") / "trips.jsonl", N, seed=11)
    rows = list(trips(N, seed=11))
    model = taxi.load_model(model_cache_dir())
    predicted = taxi.predict(model, [{k: r[k] for k in taxi.FEATURES} for r in rows])
    return path, rows, predicted


def test_seed_array_query_with_javascript_udf(arrays_endpoint, data, tmp_path, monkeypatch, capsys):
    path, rows, predicted = data
    monkeypatch.setenv("SCORE_URL", arrays_endpoint.url)
    out = tmp_path / "scored"
    assert main(["run", str(EXAMPLES / "array_job.yaml"), "--input", f"input={path}", "--output",
                 f"output={out}"]) == 0
    got = sorted(r["score"] for r in read(out))
    assert got == pytest.approx(sorted(predicted))  # one result per row, the model's value
    summary = capsys.readouterr().out
    assert f"written  output: {N} rows" in summary and "udf.score: requests" in summary


def test_seed_record_query_and_designer_fields(records_endpoint, data, tmp_path, monkeypatch):
    path, rows, predicted = data
    monkeypatch.setenv("SCORE_URL", records_endpoint.url)
    assert main(["run", str(EXAMPLES / "record_job.yaml"), "--input", f"input={path}",
                 "--output", f"output={tmp_path / 'scored'}", "--output", f"predictions={tmp_path / 'pred'}"]) == 0
    scored = read(tmp_path / "scored")
    assert sorted(r["score"]["Scored Labels"] for r in scored) == pytest.approx(sorted(predicted))
    by_trip = {r["tripid"]: r["predictedFare"] for r in read(tmp_path / "pred")}
    assert by_trip == pytest.approx({r["tripid"]: p for r, p in zip(rows, predicted, strict=True)})
