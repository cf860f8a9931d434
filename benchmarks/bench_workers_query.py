"""``asa-beam run --workers 2`` vs ``--workers 1`` on the query benchmark's job (filter +
projection + CAST over JSON lines), through ``run_job`` as the CLI runs it (row accounting,
counting and writers included). Reports rows/s of each and the ratio. On a 2-core machine
the ceiling is 2x; worker processes cost a few seconds to start, and a shared machine's
other load takes from the second core.

Environment: ``ASA_BENCH_ROWS`` (default 500000), ``ASA_BENCH_REPEATS`` (best of, default 2).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from benchmarks.bench_query import QUERY
from benchmarks.common import workdir
from pipelines.examples.trips import write_trips
from pipelines.job import load_job
from pipelines.run import run_job


def timed_job(job_path: Path, out: Path, workers: int) -> float:
    job = load_job(str(job_path), [], [f"output={out}"])
    job.check()
    start = time.perf_counter()
    summary = run_job(job, workers=workers)
    seconds = time.perf_counter() - start
    assert not summary.imbalances, summary.imbalances
    return seconds


def compare(job_path: Path, work: Path, rows: int, repeats: int, label: str) -> list[str]:
    best = {1: float("inf"), 2: float("inf")}
    for _ in range(repeats):  # in turn, so a slow spell of the shared machine hits both
        for workers in best:
            best[workers] = min(best[workers], timed_job(job_path, work / f"out{workers}", workers))
    one, two = rows / best[1], rows / best[2]
    return [f"{label}: --workers 1 {one:,.0f} rows/s ({best[1]:.1f} s), --workers 2 {two:,.0f} rows/s "
            f"({best[2]:.1f} s) = {two / one:.2f}x"]


def run() -> list[str]:
    rows = int(os.environ.get("ASA_BENCH_ROWS", "500000"))
    repeats = int(os.environ.get("ASA_BENCH_REPEATS", "2"))
    work = workdir("workers-query")
    try:
        data = write_trips(work / "trips.jsonl", rows)
        job = work / "job.yaml"
        job.write_text("query: |\n  " + QUERY.replace("\n", "\n  ") + f"\ninputs:\n  input: {{path: {data}}}\n"
                       f"outputs:\n  output: {{path: {work / 'out'}}}\n")
        return compare(job, work, rows, repeats, f"query job, {rows:,} JSON rows")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print("\n".join(run()))
