"""``asa-beam run --streaming`` end to end: a process watching a directory while files arrive.

Expected window counts are computed here from the rows the test wrote, with ASA's (start, end]
boundary rule, not by the code under test.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from pipeline_files import read_output, write_streaming_job

QUERY = """
SELECT vendor, COUNT(*) AS n, System.Timestamp() AS window_end
INTO counts FROM trips TIMESTAMP BY at
GROUP BY vendor, TumblingWindow(second, 1)

SELECT id, fare INTO expensive FROM trips WHERE fare > 10
"""


def write_job(tmp_path: Path) -> Path:
    return write_streaming_job(tmp_path, QUERY, late_arrival_seconds=4)


def start(job: Path, *flags: str) -> subprocess.Popen:
    """The job, once it says it is watching (files older than its start would arrive late)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", str(job), "--streaming", "--poll-interval", "0.2", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "asa-beam: streaming: watching trips" in line:
            return proc
    proc.kill()
    raise AssertionError(f"the job did not start: {proc.communicate()}")


def produce(directory: Path, index: int) -> list[dict]:
    """One file of three trips stamped now, plus a line that is not JSON."""
    now = dt.datetime.now(dt.timezone.utc)
    rows = [{"id": 3 * index + k, "vendor": "AB"[k % 2], "fare": 5 + 10 * k, "at": now.isoformat()} for k in range(3)]
    tmp = directory / f".trips-{index}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    tmp.rename(directory / f"trips-{index:03d}.json")
    return rows


def window_end(at: str) -> str:
    """The end of the 1-second tumbling window holding ``at``: (end - 1 s, end]."""
    t = dt.datetime.fromisoformat(at)
    micros = (t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
    end = -(-micros // 1_000_000)
    return dt.datetime.fromtimestamp(end, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def expected_counts(rows: list[dict]) -> Counter:
    return Counter((r["vendor"], window_end(r["at"])) for r in rows)


def test_windows_are_written_while_files_keep_arriving_and_the_job_ends_when_idle(tmp_path):
    job = write_job(tmp_path)
    out = tmp_path / "out"
    proc = start(job, "--stop-after-idle", "2")
    try:
        produced: list[dict] = []
        first_result_at = None
        for i in range(20):
            produced += produce(tmp_path / "in", i)
            time.sleep(0.5)
            if first_result_at is None and read_output(out / "counts", "json"):
                first_result_at = i
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    # Streaming, not one batch at the end: window results were on disk before the last file came.
    assert first_result_at is not None and first_result_at < 19, first_result_at
    counts = read_output(out / "counts", "json")
    assert Counter({(r["vendor"], r["window_end"]): r["n"] for r in counts}) == expected_counts(produced)
    assert len(counts) == len(expected_counts(produced)), "each window is emitted once"
    expensive = read_output(out / "expensive", "csv")
    assert sorted(int(r["id"]) for r in expensive) == sorted(r["id"] for r in produced if r["fare"] > 10)
    dead = read_output(out / "dead_letter", "json")
    assert [d["reason"] for d in dead] == ["malformed_json"] * 20
    assert "read     trips: 60 rows" in stdout
    assert f"written  counts: {len(counts)} rows" in stdout
    assert "malformed_json: 20" in stdout


def test_ctrl_c_drains_open_windows_and_exits_cleanly(tmp_path):
    job = write_job(tmp_path)
    proc = start(job)  # no idle stop: runs until interrupted
    try:
        produced = [r for i in range(3) for r in produce(tmp_path / "in", i)]
        time.sleep(2)  # read (the files settle after two polls), but the last windows are still open
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "asa-beam: draining" in stderr
    counts = read_output(tmp_path / "out" / "counts", "json")
    assert Counter({(r["vendor"], r["window_end"]): r["n"] for r in counts}) == expected_counts(produced)
    assert "read     trips: 9 rows" in stdout


def test_inputs_that_cannot_be_read_stop_the_job_before_it_starts(tmp_path, capsys):
    from pipelines.cli import main

    job = write_job(tmp_path)
    assert main(["run", str(job), "--input", f"trips={tmp_path / 'nowhere' / '*.json'}", "--streaming"]) == 2
    assert "the directory" in capsys.readouterr().err
    assert main(["run", str(job)]) == 2  # batch: in/ is empty
    assert "no file matches" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_reference_data_is_read_once_and_joined_with_the_watched_stream(tmp_path):
    from pipelines.cli import main

    (tmp_path / "in").mkdir()
    (tmp_path / "vendors.json").write_text('{"vendor": "A", "name": "Alpha"}\n{"vendor": "B", "name": "Beta"}\n')
    (tmp_path / "in" / "a.json").write_text("".join(
        json.dumps({"id": i, "vendor": v}) + "\n" for i, v in enumerate("ABCB")))
    job = tmp_path / "job.yaml"
    job.write_text(
        "query: SELECT t.id, v.name INTO output FROM trips t JOIN vendors v ON t.vendor = v.vendor\n"
        "inputs:\n  trips: {path: in/*.json}\n  vendors: {path: vendors.json, reference: true}\n"
        "outputs:\n  output: {path: out/joined}\n")
    assert main(["run", str(job), "--streaming", "--poll-interval", "0.1", "--stop-after-idle", "0.5"]) == 0
    joined = read_output(tmp_path / "out" / "joined", "json")
    assert sorted((r["id"], r["name"]) for r in joined) == [(0, "Alpha"), (1, "Beta"), (3, "Beta")]
