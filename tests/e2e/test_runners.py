"""Runners: the guard against runners that lose rows, FlinkRunner without its job-server jar,
``--workers N`` (multi-process FnApiRunner) and the portable runner path (the one Flink and
Dataflow take) giving the default runner's results on the golden queries and the seed jobs.
Facts about the runners: /work/shared/reference/runners.md (measured on Beam 2.77)."""

import glob
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]

from pipelines import runners  # noqa: E402
from pipelines.cli import EXIT_BAD_JOB, main  # noqa: E402
from pipelines.examples.trips import write_trips  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "ml"
ROOT = Path(__file__).resolve().parents[2]


def read(prefix: Path) -> list[dict]:
    return [json.loads(line) for name in sorted(glob.glob(f"{prefix}-*"))
            for line in Path(name).read_text().splitlines() if line]


def canonical(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


def simple_job(tmp_path: Path, query: str = "SELECT id, id * 2 AS twice INTO result FROM src WHERE id % 3 <> 0",
               rows: int = 30) -> Path:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(rows)))
    job = tmp_path / "job.yaml"
    job.write_text(f"query: {query}\ninputs:\n  src: {{path: in.jsonl}}\n"
                   "outputs:\n  result: {path: out/result}\n")
    return job


@pytest.mark.parametrize("runner, defect", [
    ("DaskRunner", "mixes tagged outputs"),
    ("apache_beam.runners.dask.dask_runner.DaskRunner", "computes only the last sink"),
    ("beam_pyspark_runner.pyspark_runner.PySparkRunner", "calls DoFn.process directly"),
    ("ray_beam_runner.ray_runner.RayRunner", "fails at import"),
    ("ray_beam_runner.portability.ray_fn_runner.RayFnApiRunner", "one task"),
])
def test_runners_that_lose_rows_are_refused_naming_what_they_get_wrong(tmp_path, capsys, runner, defect):
    job = simple_job(tmp_path)
    assert main(["run", str(job), "--runner", runner]) == EXIT_BAD_JOB
    err = capsys.readouterr().err
    assert f"--runner {runner} is refused" in err and defect in err and "--allow-unsafe-runner" in err
    assert not (tmp_path / "out").exists()  # refused before anything ran
    # With the explicit flag the guard lets it through (to Beam, which may or may not have it).
    options = runners.pipeline_options(["--runner", runner])
    runners.check_runner(options, allow_unsafe=True)
    with pytest.raises(Exception, match="refused"):
        runners.check_runner(options)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/maven2"  # nothing listens: the jar cannot be downloaded


def test_flink_without_a_reachable_job_server_jar_fails_fast_saying_how_to_supply_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runners, "MAVEN", _closed_port_url())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no jar in ~/.apache_beam/cache/jars
    job = simple_job(tmp_path)
    assert main(["run", str(job), "--runner", "FlinkRunner", "--flink_master", "localhost:8081"]) == EXIT_BAD_JOB
    err = capsys.readouterr().err
    assert "beam-runners-flink-2.2-job-server-2.77.0.jar" in err
    assert "--flink_job_server_jar=/path/to/" in err and "~/.apache_beam/cache/jars/" in err
    assert not (tmp_path / "out").exists()
    assert main(["run", str(job), "--runner", "FlinkRunner", "--flink_job_server_jar", str(tmp_path / "no.jar")]) == 2
    assert "no.jar: no such file" in capsys.readouterr().err
    # A jar staged in Beam's cache is accepted (Beam would use it; this test stops at the check).
    cache = tmp_path / "home" / ".apache_beam" / "cache" / "jars"
    cache.mkdir(parents=True)
    (cache / "beam-runners-flink-2.2-job-server-2.77.0.jar").write_bytes(b"PK")
    runners.check_runner(runners.pipeline_options(["--runner", "FlinkRunner"]))


CORPUS_QUERIES = {
    "filter_cast": "SELECT id, CAST(s AS bigint) AS v INTO result FROM src WHERE id % 3 <> 0",
    "window": "SELECT k, COUNT(*) AS n, SUM(id) AS total INTO result FROM src TIMESTAMP BY t "
              "GROUP BY k, TumblingWindow(second, 10)",
    "lag": "SELECT id, LAG(id) OVER (PARTITION BY k LIMIT DURATION(minute, 5)) AS prev INTO result "
           "FROM src TIMESTAMP BY t",
    "apply_union": "WITH a AS (SELECT s.id, e.ArrayValue AS x FROM src s CROSS APPLY GetArrayElements(s.arr) AS e), "
                   "b AS (SELECT id, 0 AS x FROM src WHERE k = 1) "
                   "SELECT * INTO result FROM a UNION SELECT * FROM b",
}


def corpus_job(tmp_path: Path, query: str) -> Path:
    rows = [{"id": i, "k": i % 4, "s": str(i) if i % 9 else "bad", "arr": list(range(i % 3)),
             "t": f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z"} for i in range(240)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = tmp_path / "job.yaml"
    job.write_text("query: |\n  " + query + "\ninputs:\n  src: {path: in.jsonl}\n"
                   "outputs:\n  result: {path: out/result}\n")
    return job


@pytest.mark.parametrize("name", sorted(CORPUS_QUERIES))
def test_two_worker_processes_give_the_single_process_results(tmp_path, name, capsys):
    job = corpus_job(tmp_path, CORPUS_QUERIES[name])
    assert main(["run", str(job), "--output", f"result={tmp_path / 'one'}"]) == 0
    one = capsys.readouterr().out
    assert main(["run", str(job), "--workers", "2", "--output", f"result={tmp_path / 'two'}"]) == 0
    two = capsys.readouterr().out
    assert read(tmp_path / "one") and canonical(read(tmp_path / "two")) == canonical(read(tmp_path / "one"))
    # Metrics are summed across the processes: the same summary, every row count and the accounting.
    assert two.replace(str(tmp_path / "two"), "OUT") == one.replace(str(tmp_path / "one"), "OUT")
    assert "rows per step" in one and "ROW ACCOUNTING" not in one


def _seed_runs(job: Path, path: Path, tmp_path: Path, outputs: tuple[str, ...], *flags: str) -> dict[str, list]:
    tag = "default" if not flags else flags[0].strip("-").split("=")[0] + str(len(flags))
    args = ["run", str(job), "--input", f"input={path}", "--quiet"]
    for o in outputs:
        args += ["--output", f"{o}={tmp_path / tag / o}"]
    assert main(args + ["--report", str(tmp_path / tag / "report")] + list(flags)) == 0
    report = json.loads((tmp_path / tag / "report" / "summary.json").read_text())
    # The row accounting was checked on this runner too (its metrics came back, and balanced).
    assert report["metrics_available"] and report["accounting"] == {"ok": True, "errors": []}
    assert report["inputs"]["input"]["rows"] == 300
    return {o: canonical(read(tmp_path / tag / o)) for o in outputs}


SEEDS = [("array_job.yaml", ("output",), "arrays_endpoint"),
         ("record_job.yaml", ("output", "predictions"), "records_endpoint")]


@pytest.mark.parametrize("job_file, outputs, endpoint", SEEDS, ids=["array_js_score", "record_dataframe"])
def test_seed_jobs_on_two_workers_and_on_the_portable_runner_equal_the_default(
        job_file, outputs, endpoint, request, tmp_path, monkeypatch):
    monkeypatch.setenv("SCORE_URL", request.getfixturevalue(endpoint).url)
    path = write_trips(tmp_path / "trips.jsonl", 300, seed=5)
    job = EXAMPLES / job_file
    default = _seed_runs(job, path, tmp_path, outputs)
    assert all(len(rows) == 300 for rows in default.values())
    assert _seed_runs(job, path, tmp_path, outputs, "--workers=2") == default
    portable = _seed_runs(job, path, tmp_path, outputs, "--runner=PortableRunner", "--job_endpoint=embed",
                          "--environment_type=LOOPBACK")
    assert portable == default


def test_worker_processes_do_not_log_to_the_terminal(tmp_path):
    job = simple_job(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(job), "--workers", "2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    assert "written  result: 20 rows" in proc.stdout
    for chatter in ("INFO", "sdk harness", "semi_persistent_directory", "Control channel"):
        assert chatter not in proc.stderr


def test_workers_run_on_the_multi_process_fnapi_runner_and_not_in_streaming():
    runner = runners.make_runner(runners.pipeline_options([], workers=2))
    assert isinstance(runner, runners.MultiProcessRunner) and runner.log_path is not None
    assert runners.make_runner(runners.pipeline_options([], workers=2, verbose=True)).log_path is None
    with pytest.raises(Exception, match="streaming jobs run in one process"):
        runners.make_runner(runners.pipeline_options([], streaming=True, workers=2))


def test_a_runner_without_metrics_is_said_so_not_printed_as_zeros(tmp_path):
    from pipelines.job import load_job
    from pipelines.report import summary_json
    from pipelines.run import collect_metrics, format_summary

    class NoMetrics:  # what Beam's DaskRunner result does (runners.md: dask_runner.py:161-163)
        def metrics(self):
            raise NotImplementedError("collecting metrics will come later!")

    summary = collect_metrics(NoMetrics())
    assert not summary.metrics_available and summary.imbalances == []
    job = load_job(str(simple_job(tmp_path)))
    text = format_summary(job, summary)
    assert "the runner reported no metrics" in text and "row accounting was not checked" in text
    assert "0 rows" not in text
    assert summary_json(job, summary)["metrics_available"] is False
