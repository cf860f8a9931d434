"""Crash-safe streaming: ``asa-beam run --streaming`` killed with SIGKILL at random moments while
files keep arriving (also while it is down), restarted with the same command each time; at the
end the outputs hold exactly what an uninterrupted run writes — every window once with all its
events, every filtered row once, every dead letter once.

Expected outputs are computed here from the rows the test wrote, with ASA's rules: tumbling
windows are (start, end] (https://learn.microsoft.com/en-us/stream-analytics-query/tumbling-window-azure-stream-analytics),
and an event more than the late-arrival tolerance older than its arrival time takes the time
arrival - tolerance (https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-time-handling).
A file's arrival time is when the job found it; the test takes it from the checkpoint's arrival
log (which must hold each file exactly once), so the expectation holds however long a restart
takes on a loaded machine. The tolerance is short (2 s), so windows close and are written
during the run, and kills land before and after window rows are committed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from apache_beam.utils.timestamp import Timestamp
from pipeline_files import read_output, write_streaming_job

QUERY = """
SELECT vendor, COUNT(*) AS n, SUM(fare) AS total, System.Timestamp() AS window_end
INTO counts FROM trips TIMESTAMP BY at
GROUP BY vendor, TumblingWindow(second, 2)

SELECT id, fare INTO expensive FROM trips WHERE fare > 10
"""

FILES = 40  # files of 3 trips (+ one broken line each)
KILLS = 8  # SIGKILLs per run of the test, then one run that ends by itself


def write_job(tmp_path: Path) -> Path:
    return write_streaming_job(tmp_path, QUERY, late_arrival_seconds=2)


def produce(directory: Path, index: int) -> list[dict]:
    """One file of three trips stamped now, plus a line that is not JSON (a dead letter)."""
    now = dt.datetime.now(dt.timezone.utc)
    rows = [{"id": 3 * index + k, "vendor": "AB"[k % 2], "fare": 4 + 5 * k + index % 3, "at": now.isoformat(),
             "file": f"trips-{index:03d}.json"} for k in range(3)]
    tmp = directory / f".trips-{index}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows) + f"{{broken {index}\n")
    tmp.rename(directory / f"trips-{index:03d}.json")
    return rows


def event_time(at: str, arrival: float) -> int:
    """The event's time in µs: ``at``, or arrival - 2 s if ``at`` is older (ASA's adjust policy)."""
    t = dt.datetime.fromisoformat(at)
    micros = (t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
    earliest = Timestamp.of(arrival).micros - 2_000_000
    return max(micros, earliest)


def window_end(micros: int) -> str:
    """The end of the 2-second tumbling window holding the instant: (end - 2 s, end]."""
    end = -(-micros // 2_000_000) * 2
    return dt.datetime.fromtimestamp(end, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def arrivals(checkpoint: Path) -> dict[str, float]:
    """File name → arrival time, from the checkpoint's arrival log; each file must be there once."""
    records = [json.loads(line) for line in (checkpoint / "inputs" / "trips.jsonl").read_text().splitlines()]
    names = [Path(r["path"]).name for r in records]
    assert len(names) == len(set(names)), f"a file was read twice: {Counter(names).most_common(3)}"
    return {Path(r["path"]).name: r["arrival"] for r in records}


class Job:
    """One ``asa-beam run --streaming`` process; its stdout/stderr go to files (it may be killed)."""

    def __init__(self, job: Path, logs: Path, n: int, *flags: str, idle: float = 3):
        self.out = logs / f"run-{n}.out"
        self.err = logs / f"run-{n}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "run", str(job), "--streaming",
                 "--poll-interval", "0.2", "--stop-after-idle", str(idle), *flags],
                stdout=out, stderr=err, text=True)

    def watching(self) -> bool:
        return "asa-beam: streaming: watching" in self.err.read_text()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


def committed(out: Path, output: str) -> int:
    return len(list(out.glob(f"{output}-*")))


SEEDS = [int(x) for x in os.environ.get("ASA_BEAM_RESTART_SEEDS", "12").split(",")]  # more: "1,2,3"


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_at_random_moments_and_restarted_the_job_writes_every_row_exactly_once(tmp_path, seed):
    job = write_job(tmp_path)
    out = tmp_path / "out"
    rng = random.Random(seed)
    produced: list[dict] = []
    files = 0
    # Each kill comes a random time after: the start (so some hit start-up or the replay), the
    # moment the job watches, or — once, for certain — the first committed window rows.
    anchors = [rng.choice(("start", "watching", "watching")) for _ in range(KILLS - 1)]
    anchors.insert(rng.randrange(1, KILLS), "windows")
    killed_with_windows = 0
    for run, anchor in enumerate(anchors):
        proc = Job(job, tmp_path, run, idle=60)  # killed before it could end by itself
        started = time.monotonic()
        kill_at = None
        while kill_at is None or time.monotonic() < kill_at:
            watching = proc.watching()
            if kill_at is None and (anchor == "start" or (anchor == "watching" and watching)
                                    or (anchor == "windows" and committed(out, "counts"))):
                kill_at = time.monotonic() + rng.uniform(0.1, 4.0)
            if files < FILES and watching:
                produced += produce(tmp_path / "in", files)
                files += 1
            time.sleep(rng.uniform(0.1, 0.5))
            assert time.monotonic() - started < 120, f"run {run} ({anchor}) did not get going"
        assert proc.proc.poll() is None, proc.err.read_text()
        killed_with_windows += committed(out, "counts") > 0
        proc.kill()
        if rng.random() < 0.5 and files < FILES:  # a file arrives while the job is down
            produced += produce(tmp_path / "in", files)
            files += 1
    last = Job(job, tmp_path, len(anchors))
    while files < FILES:
        if last.watching():
            produced += produce(tmp_path / "in", files)
            files += 1
        time.sleep(0.2)
    assert last.proc.wait(timeout=180) == 0, last.err.read_text()
    stdout = last.out.read_text()
    assert killed_with_windows and "resuming from the checkpoint" in last.err.read_text()

    arrived = arrivals(out / "checkpoint")
    assert sorted(arrived) == sorted({r["file"] for r in produced})  # every file read, none twice
    expected = Counter()
    totals = Counter()
    for r in produced:
        key = (r["vendor"], window_end(event_time(r["at"], arrived[r["file"]])))
        expected[key] += 1
        totals[key] += r["fare"]
    counts = read_output(out / "counts", "json")
    assert sorted(((r["vendor"], r["window_end"]), r["n"], r["total"]) for r in counts) == sorted(
        (key, n, totals[key]) for key, n in expected.items())

    expensive = read_output(out / "expensive", "csv")
    assert sorted((int(r["id"]), int(r["fare"])) for r in expensive) == sorted(
        (r["id"], r["fare"]) for r in produced if r["fare"] > 10)

    dead = read_output(out / "dead_letter", "json")
    assert sorted(d["raw"] for d in dead) == sorted(f"{{broken {i}" for i in range(FILES))
    assert {d["reason"] for d in dead} == {"malformed_json"}

    # The last run read every file again (none had ended cleanly) and wrote only what was missing.
    assert f"read     trips: {3 * FILES} rows" in stdout
    assert f"written  counts: {len(counts)} rows" in stdout
    assert "already written before the restart" in stdout


def test_after_a_clean_end_a_new_run_reads_only_new_files(tmp_path):
    job = write_job(tmp_path)
    out = tmp_path / "out"
    flags = ("--checkpoint-dir", str(tmp_path / "state"))
    first = Job(job, tmp_path, 0, *flags)
    produced = []
    while len(produced) < 6:
        if first.watching():
            produced += produce(tmp_path / "in", len(produced) // 3)
        time.sleep(0.3)
    assert first.proc.wait(timeout=120) == 0, first.err.read_text()
    before = sorted(os.listdir(out))
    assert (tmp_path / "state" / "EPOCH").exists() and not (out / "checkpoint").exists()
    second = Job(job, tmp_path, 1, *flags)
    while not second.watching():
        time.sleep(0.1)
    produced += produce(tmp_path / "in", 2)
    assert second.proc.wait(timeout=120) == 0, second.err.read_text()
    assert "resuming" not in second.err.read_text()
    assert "read     trips: 3 rows" in second.out.read_text()  # only the new file
    expensive = read_output(out / "expensive", "csv")
    assert sorted(int(r["id"]) for r in expensive) == sorted(r["id"] for r in produced if r["fare"] > 10)
    assert set(before) <= set(os.listdir(out))


def test_a_replay_rebuilds_lag_states_and_the_windows_over_them(tmp_path):
    """A restart replays the open epoch at once: the watermark then jumps a minute ahead in one
    step. LAG's results come from event-time timers; they must still reach the windows of the
    next step (Beam 2.77's local runner did not hold its watermark for them; see
    ``pipelines.runners._hold_watermarks_for_timers``)."""
    from pipelines.cli import main

    (tmp_path / "in").mkdir()
    job = tmp_path / "job.yaml"
    job.write_text(
        "query: |\n"
        "  WITH chained AS (\n"
        "    SELECT vendor, id, LAG(id) OVER (PARTITION BY vendor LIMIT DURATION(second, 30)) AS prev\n"
        "    FROM trips TIMESTAMP BY at)\n"
        "  SELECT vendor, COUNT(*) AS n, COUNT(prev) AS with_prev, System.Timestamp() AS window_end\n"
        "  INTO counts FROM chained GROUP BY vendor, TumblingWindow(second, 2)\n"
        "inputs:\n  trips: {path: in/*.json}\n"
        "outputs:\n  counts: {path: out/counts}\n"
        "event_ordering: {late_arrival_seconds: 2, out_of_order_seconds: 0}\n")
    # The state a job killed a minute ago left: ten files read (logged with their arrival
    # times), no output written yet.
    start = int(time.time()) - 60
    log = []
    events = []
    for i in range(10):
        at = start + 0.5 * i
        rows = [{"id": 3 * i + k, "vendor": "ABC"[k],
                 "at": dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat()} for k in range(3)]
        path = tmp_path / "in" / f"t{i}.json"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        st = path.stat()
        log.append({"epoch": 0, "path": str(path), "size": st.st_size, "mtime": st.st_mtime, "arrival": at + 0.1})
        events += [(r["vendor"], int(at * 1_000_000)) for r in rows]
    (tmp_path / "out" / "checkpoint" / "inputs").mkdir(parents=True)
    (tmp_path / "out" / "checkpoint" / "inputs" / "trips.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in log))

    assert main(["run", str(job), "--streaming", "--poll-interval", "0.2", "--stop-after-idle", "1", "--quiet"]) == 0

    expected = Counter()
    with_prev = Counter()
    first = {v: min(t for w, t in events if w == v) for v in "ABC"}
    for vendor, t in events:
        key = (vendor, window_end(t))
        expected[key] += 1
        with_prev[key] += t != first[vendor]  # every other event has one within 30 s
    counts = read_output(tmp_path / "out" / "counts", "json")
    assert sorted(((r["vendor"], r["window_end"]), r["n"], r["with_prev"]) for r in counts) == sorted(
        (key, n, with_prev[key]) for key, n in expected.items())


def test_without_a_checkpoint_a_new_run_reads_every_file_again(tmp_path):
    from pipelines.cli import main

    job = write_job(tmp_path)
    produce(tmp_path / "in", 0)
    args = ["run", str(job), "--streaming", "--poll-interval", "0.1", "--stop-after-idle", "0.5", "--no-checkpoint"]
    assert main(args) == 0
    assert main(args) == 0
    assert not (tmp_path / "out" / "checkpoint").exists()
    expensive = read_output(tmp_path / "out" / "expensive", "csv")
    assert sorted(int(r["id"]) for r in expensive) == [2, 2]  # fares 4, 9, 14: both runs wrote trip 2
