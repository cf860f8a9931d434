"""Projects whose query calls an Azure ML function, run against the real local inference server
(tests/fixtures_azureml.py): an exported ARM template and the example VS Code project. Expected
fares are the bundled model's own predictions (``taxi.predict``), computed without asa-beam."""

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]
from fixtures_azureml import model_cache_dir  # noqa: E402
from projects import arm_template, write  # noqa: E402

from pipelines.cli import main  # noqa: E402
from pipelines.examples import taxi_project  # noqa: E402
from pipelines.examples.trips import trips  # noqa: E402
from pipelines.serving import model as taxi  # noqa: E402


def rows_of(prefix: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(prefix.parent.glob(prefix.name + "-*"))
            for line in f.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def trip_rows():
    rows = [{k: v for k, v in r.items() if k != "fare"} for r in trips(40, seed=29)]
    fares = taxi.predict(taxi.load_model(model_cache_dir()), [{k: r[k] for k in taxi.FEATURES} for r in rows])
    return rows, fares


def test_arm_template_with_javascript_udf_and_ml_function(arrays_endpoint, trip_rows, tmp_path):
    rows, fares = trip_rows
    template = arm_template(tmp_path)  # endpoint in the parameters file: unreachable; overridden below
    data = write(tmp_path / "trips.json", rows)  # a JSON array
    assert main(["run", str(template), "--input", f"trips={data}", "--output", f"scored={tmp_path / 'scored'}",
                 "--function-endpoint", f"score={arrays_endpoint.url}"]) == 0
    got = {r["tripid"]: r["fare"] for r in rows_of(tmp_path / "scored")}
    assert got == pytest.approx({r["tripid"]: f for r, f in zip(rows, fares, strict=True)})


def test_arm_template_test_config_passes_and_a_wrong_fare_fails(arrays_endpoint, trip_rows, tmp_path, capsys):
    rows, fares = trip_rows
    template = arm_template(tmp_path)
    write(tmp_path / "tests" / "trips.json", "".join(json.dumps(r) for r in rows[:10]))  # concatenated objects
    expected = [{"tripid": r["tripid"], "fare": f} for r, f in zip(rows[:10], fares[:10], strict=True)]
    write(tmp_path / "tests" / "scored.json", expected)
    config = write(tmp_path / "tests" / "testConfig.json", {"Script": "", "TestCases": [{
        "Name": "ten trips",
        "Inputs": [{"InputAlias": "trips", "Type": "Data Stream", "Format": "Json", "FilePath": "trips.json"}],
        "ExpectedOutputs": [{"OutputAlias": "scored", "FilePath": "scored.json", "Required": True}]}]})
    flags = ["--config", str(config), "--function-endpoint", f"score={arrays_endpoint.url}"]
    assert main(["test", str(template), *flags, "--output-dir", str(tmp_path / "r1")]) == 0
    assert "PASS  ten trips" in capsys.readouterr().out
    expected[3]["fare"] += 1.0
    write(tmp_path / "tests" / "scored.json", expected)
    assert main(["test", str(template), *flags, "--output-dir", str(tmp_path / "r2")]) == 1
    printed = capsys.readouterr().out
    assert "FAIL  ten trips" in printed and "output 'scored': 9 row(s) matched" in printed
    assert f'"tripid": {rows[3]["tripid"]}' in printed


def test_example_project_passes_its_tests(arrays_endpoint, tmp_path, capsys):
    project = tmp_path / "TaxiScoring"
    shutil.copytree(taxi_project.PROJECT, project,
                    ignore=shutil.ignore_patterns("LocalRunOutputs", "TestResults"))
    taxi_project.generate(project, taxi.load_model(model_cache_dir()))
    flag = ["--function-endpoint", f"score={arrays_endpoint.url}"]
    assert main(["test", str(project), *flag, "--output-dir", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "PASS  All trips are scored: 2 output(s) matched" in printed
    assert "PASS  Weekend trips: 2 output(s) matched" in printed
    assert main(["run", str(project), *flag]) == 0
    (run_dir,) = (project / "LocalRunOutputs").iterdir()
    scored = rows_of(run_dir / "scored")
    expected = json.loads((project / "test" / "all_trips_scored.json").read_text())
    assert sorted(r["predictedFare"] for r in scored) == pytest.approx(sorted(r["predictedFare"] for r in expected))


def test_committed_expected_outputs_are_the_models_predictions():
    """The example's expected files equal what the generator computes from the model now."""
    model = taxi.load_model(model_cache_dir())
    local = json.loads((taxi_project.PROJECT / "Data" / "trips.json").read_text())
    scored, long_trips = taxi_project.expected_outputs(local, model)
    committed = json.loads((taxi_project.PROJECT / "test" / "all_trips_scored.json").read_text())
    assert [r["tripid"] for r in committed] == [r["tripid"] for r in scored]
    assert [r["predictedFare"] for r in committed] == pytest.approx([r["predictedFare"] for r in scored])
    long_committed = json.loads((taxi_project.PROJECT / "test" / "all_trips_longTrips.json").read_text())
    assert [r["tripid"] for r in long_committed] == [r["tripid"] for r in long_trips]


def test_wrong_key_stops_asa_beam_test_with_exit_3_and_no_key_shown(fake_endpoint, tmp_path, capsys, monkeypatch):
    endpoint = fake_endpoint("arrays", key="right-key-123")  # fault-injecting server: 401 without this key
    template = arm_template(tmp_path)
    write(tmp_path / "t" / "trips.json", [{"tripid": 1, "vendorid": 2, "weekday": 3, "pickuphour": 10,
                                           "passenger": 1, "distance": 2.5}])
    # The fake endpoint (numbers only) answers the sum of a row's numbers: 2 + 3 + 10 + 1 + 2.5.
    write(tmp_path / "t" / "scored.json", [{"tripid": 1, "fare": 18.5}])
    config = write(tmp_path / "t" / "testConfig.json", {"TestCases": [{
        "Name": "one trip", "Inputs": [{"InputAlias": "trips", "FilePath": "trips.json"}],
        "ExpectedOutputs": [{"OutputAlias": "scored", "FilePath": "scored.json"}]}]})
    args = ["test", str(template), "--config", str(config), "--function-endpoint", f"score={endpoint.url}",
            "--function-key", "score=SCORE_KEY", "--output-dir", str(tmp_path / "r")]
    monkeypatch.setenv("SCORE_KEY", "wrong-key-456")
    assert main(args) == 3
    captured = capsys.readouterr()
    assert "function 'score'" in captured.err and endpoint.url.rsplit("/", 1)[0] in captured.err
    for text in (captured.out, captured.err):
        assert "wrong-key-456" not in text and "right-key-123" not in text
    monkeypatch.setenv("SCORE_KEY", "right-key-123")
    assert main(args) == 0
    assert "PASS  one trip" in capsys.readouterr().out
    # A row the endpoint's schema refuses is a dead letter, and the failing case says where it went.
    write(tmp_path / "t" / "trips.json", [{"tripid": 1, "vendorid": 2, "weekday": "Monday", "pickuphour": 10,
                                           "passenger": 1, "distance": 2.5}])
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "FAIL  one trip" in printed and "1 row(s) dead-lettered (schema_mismatch: 1)" in printed
    summary = json.loads((tmp_path / "r" / "testResultSummary.json").read_text())
    assert summary["Results"][0]["DeadLetters"]["ByReason"] == {"schema_mismatch": 1}
