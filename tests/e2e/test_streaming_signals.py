"""SIGINT and SIGTERM stop ``asa-beam run --streaming`` and ``asa-beam serve-model`` cleanly, also
when they were started the way a non-interactive shell starts a background command: with SIGINT
*ignored* (POSIX: "If job control is disabled ... the commands in an asynchronous list shall
ignore SIGINT"; https://pubs.opengroup.org/onlinepubs/9699919799/utilities/V3_chap02.html#tag_18_11).
Each child here is started with SIGINT set to SIG_IGN before exec, as ``sh -c 'cmd &'`` does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from pipeline_files import read_output


def ignore_sigint() -> None:  # runs in the child between fork and exec
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(cmd: list[str], logs: Path, env: dict | None = None) -> tuple[subprocess.Popen, Path, Path]:
    out, err = logs / "stdout", logs / "stderr"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *cmd], stdout=o, stderr=e, text=True,
                                env=env, preexec_fn=ignore_sigint, start_new_session=True)
    return proc, out, err


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited with {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
        proc.wait()


def streaming_job(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    job = tmp_path / "job.yaml"
    job.write_text(
        "query: |\n"
        "  SELECT COUNT(*) AS n INTO counts FROM trips GROUP BY TumblingWindow(hour, 1)\n"
        "  SELECT id INTO ids FROM trips\n"
        "inputs:\n  trips: {path: in/*.json}\n"
        "outputs:\n  counts: {path: out/counts}\n  ids: {path: out/ids}\n")
    return job


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_streaming_job_started_with_sigint_ignored_drains_on_a_signal(tmp_path, signum):
    job = streaming_job(tmp_path)
    proc, out, err = start(["run", str(job), "--streaming", "--poll-interval", "0.2"], tmp_path)
    try:
        wait_for(lambda: "watching" in err.read_text(), proc, "watching")
        (tmp_path / "in" / "a.json").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(5)))
        wait_for(lambda: read_output(tmp_path / "out" / "ids", "json"), proc, "rows written")
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 0, err.read_text()
    finally:
        stop(proc)
    assert "asa-beam: draining" in err.read_text()
    assert "Traceback" not in err.read_text()
    # The open hour window was emitted by the drain, and the summary printed.
    assert read_output(tmp_path / "out" / "counts", "json") == [{"n": 5}]
    assert "read     trips: 5 rows" in out.read_text()
    assert "written  counts: 1 rows" in out.read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_model_started_with_sigint_ignored_stops_on_a_signal(tmp_path, signum):
    from fixtures_azureml import model_cache_dir

    from pipelines.serving.server import free_port

    port = free_port()
    env = dict(os.environ, ASA_BEAM_CACHE=model_cache_dir())
    proc, out, err = start(["serve-model", "--port", str(port), "--style", "arrays"], tmp_path, env)
    try:
        wait_for(lambda: "Press Ctrl-C" in out.read_text(), proc, "the server", timeout=180)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0, err.read_text()
    finally:
        stop(proc)
    assert f"Stopped the inference server on http://127.0.0.1:{port}" in out.read_text()
    with pytest.raises(requests.ConnectionError):  # the server process went with it
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_second_signal_during_a_drain_stops_at_once_and_the_next_run_resumes(tmp_path, monkeypatch):
    """The drain waits for the ML function's max_buffering_s (8 s here); a second SIGINT in that
    time stops the job at once (exit 130, no traceback), with its open window unwritten; the next
    run replays the file from the checkpoint and writes the window and the scores, once."""
    from pipelines.cli import main
    from pipelines.serving.fake import FakeEndpoint

    (tmp_path / "in").mkdir()
    job = tmp_path / "job.yaml"
    job.write_text(
        "query: |\n"
        "  WITH f AS (SELECT id, x FROM trips)\n"
        "  SELECT id, udf.score(f) AS s INTO scored FROM f\n"
        "  SELECT COUNT(*) AS n INTO counts FROM trips GROUP BY TumblingWindow(hour, 1)\n"
        "inputs:\n  trips: {path: in/*.json}\n"
        "outputs:\n  scored: {path: out/scored}\n  counts: {path: out/counts}\n"
        "functions: {score: {type: azureml, endpoint: '${SCORE_URL}', max_buffering_s: 8}}\n")
    with FakeEndpoint("records") as ep:
        env = dict(os.environ, SCORE_URL=ep.url)
        proc, out, err = start(["run", str(job), "--streaming", "--poll-interval", "0.2"], tmp_path, env)
        try:
            wait_for(lambda: "watching" in err.read_text(), proc, "watching")
            (tmp_path / "in" / "a.json").write_text("".join(json.dumps({"id": i, "x": 0.5}) + "\n" for i in range(4)))
            wait_for(lambda: (tmp_path / "out" / "checkpoint" / "inputs" / "trips.jsonl").exists(), proc, "the read")
            proc.send_signal(signal.SIGINT)
            wait_for(lambda: "asa-beam: draining" in err.read_text(), proc, "the drain")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130, err.read_text()
        finally:
            stop(proc)
        assert "stopped at once" in err.read_text() and "Traceback" not in err.read_text()
        assert read_output(tmp_path / "out" / "counts", "json") == []  # the hour window was still open

        monkeypatch.setenv("SCORE_URL", ep.url)
        assert main(["run", str(job), "--streaming", "--poll-interval", "0.2", "--stop-after-idle", "0.5",
                     "--quiet"]) == 0
    assert read_output(tmp_path / "out" / "counts", "json") == [{"n": 4}]
    scored = read_output(tmp_path / "out" / "scored", "json")
    assert sorted((r["id"], r["s"]["Scored Labels"]) for r in scored) == [(i, i + 0.5) for i in range(4)]
