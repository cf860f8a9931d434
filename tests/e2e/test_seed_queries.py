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
    return [json.loads(line) for name in sorted(glob.glob(f"{prefix}-*"))
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


def scoring_job(tmp_path: Path, query: str, input_path: str, function_options: str = "") -> Path:
    """A job file with ``query``, one input, output ``out/w`` and ``udf.score`` at ``$SCORE_URL``."""
    (tmp_path / "q.asaql").write_text(query)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"query: q.asaql\ninputs: {{input: {{path: {input_path}}}}}\noutputs: {{output: {{path: out/w}}}}\n"
        f"functions: {{score: {{type: azureml, endpoint: '${{SCORE_URL}}'{function_options}}}}}\n")
    return job


def test_per_window_average_of_the_model_score(records_endpoint, tmp_path, monkeypatch):
    """Scoring and windows in one job: AVG(udf.score(...).[Scored Labels]) per vendor and 10-minute window."""
    import datetime as dt

    rows = list(trips(120, seed=5))
    base = dt.datetime(2024, 1, 1, 10, tzinfo=dt.timezone.utc)
    for i, r in enumerate(rows):
        r["at"] = (base + dt.timedelta(seconds=37 * i + 1)).isoformat()
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = scoring_job(
        tmp_path,
        "WITH Features AS (SELECT vendorid, weekday, pickuphour, passenger, distance, at FROM input),\n"
        "Scored AS (SELECT vendorid, at, udf.score(Features).[Scored Labels] AS pred FROM Features)\n"
        "SELECT vendorid, AVG(pred) AS avgPred, COUNT(*) AS n, System.Timestamp() AS windowEnd INTO output\n"
        "FROM Scored TIMESTAMP BY at GROUP BY vendorid, TumblingWindow(minute, 10)\n", "in.jsonl")
    monkeypatch.setenv("SCORE_URL", records_endpoint.url)
    assert main(["run", str(job)]) == 0
    predicted = taxi.predict(taxi.load_model(model_cache_dir()), [{k: r[k] for k in taxi.FEATURES} for r in rows])
    groups: dict[tuple, list[float]] = {}
    for i, (r, p) in enumerate(zip(rows, predicted, strict=True)):
        end = 600 * -(-(37 * i + 1) // 600)  # (start, end] windows of 600 s
        groups.setdefault((r["vendorid"], end), []).append(p)
    got = {(r["vendorid"], r["windowEnd"]): (r["avgPred"], r["n"]) for r in read(tmp_path / "out" / "w")}
    def iso(e: int) -> str:
        return (base + dt.timedelta(seconds=e)).isoformat().replace("+00:00", ".0000000Z")

    want = {(v, iso(e)): (sum(ps) / len(ps), len(ps)) for (v, e), ps in groups.items()}
    assert got.keys() == want.keys()
    for k, (avg, n) in want.items():
        assert got[k][1] == n and got[k][0] == pytest.approx(avg)


def test_seed_record_query_streaming(records_endpoint, tmp_path, monkeypatch):
    """The same job as a streaming job on a watched directory: batches still fill and leave on time."""
    (tmp_path / "in").mkdir()
    for part in range(3):
        write_trips(tmp_path / "in" / f"t{part}.jsonl", 100, seed=3 + part)
    rows = [r for part in range(3) for r in trips(100, seed=3 + part)]
    monkeypatch.setenv("SCORE_URL", records_endpoint.url)
    assert main(["run", str(EXAMPLES / "record_job.yaml"), "--input", f"input={tmp_path / 'in' / '*.jsonl'}",
                 "--output", f"output={tmp_path / 'scored'}", "--output", f"predictions={tmp_path / 'pred'}",
                 "--streaming", "--poll-interval", "0.2", "--stop-after-idle", "1"]) == 0
    predicted = taxi.predict(taxi.load_model(model_cache_dir()), [{k: r[k] for k in taxi.FEATURES} for r in rows])
    by_trip = {(r["tripid"], r["fare"]): r["predictedFare"] for r in read(tmp_path / "pred")}
    assert len(by_trip) == len(rows)
    assert by_trip == pytest.approx({(r["tripid"], r["fare"]): p for r, p in zip(rows, predicted, strict=True)})


def test_streaming_windows_over_scores_keep_rows_still_batching_when_input_ends(records_endpoint, tmp_path,
                                                                             monkeypatch):
    """A partial ML batch still buffering when the watch ends reaches its window before it closes."""
    (tmp_path / "in").mkdir()
    write_trips(tmp_path / "in" / "t.jsonl", 150, seed=9)
    rows = list(trips(150, seed=9))
    job = scoring_job(
        tmp_path,
        "WITH Features AS (SELECT vendorid, weekday, pickuphour, passenger, distance FROM input),\n"
        "Scored AS (SELECT vendorid, udf.score(Features).[Scored Labels] AS pred FROM Features)\n"
        "SELECT vendorid, COUNT(*) AS n INTO output FROM Scored GROUP BY vendorid, TumblingWindow(minute, 1)\n",
        "in/*.jsonl", ", max_buffering_s: 2")
    monkeypatch.setenv("SCORE_URL", records_endpoint.url)
    assert main(["run", str(job), "--streaming", "--poll-interval", "0.2",
                 "--stop-after-idle", "0.5"]) == 0
    per_vendor: dict = {}
    for r in read(tmp_path / "out" / "w"):
        per_vendor[r["vendorid"]] = per_vendor.get(r["vendorid"], 0) + r["n"]
    want: dict = {}
    for r in rows:
        want[r["vendorid"]] = want.get(r["vendorid"], 0) + 1
    assert per_vendor == want
