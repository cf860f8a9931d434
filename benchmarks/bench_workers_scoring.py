"""The seed scoring job (``pipelines/examples/ml/record_job.yaml``: a record per trip scored by
the real local Azure ML inference server, the taxi model, designer records style) with
``--workers 2`` vs ``--workers 1``, through ``run_job`` as the CLI runs it. Reports rows/s of
each and the ratio. The endpoint runs in its own process with one worker on the same
2-core machine, so it competes with the pipeline's processes for the cores.

Environment: ``ASA_BENCH_ROWS`` (default 100000), ``ASA_BENCH_REPEATS`` (best of, default 2).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from benchmarks.bench_workers_query import timed_job
from benchmarks.common import workdir
from pipelines.serving.model import generate_trips
from pipelines.serving.server import LocalEndpoint

JOB = Path(__file__).resolve().parents[1] / "pipelines" / "examples" / "ml" / "record_job.yaml"


def run() -> list[str]:
    rows = int(os.environ.get("ASA_BENCH_ROWS", "100000"))
    repeats = int(os.environ.get("ASA_BENCH_REPEATS", "2"))
    work = workdir("workers-scoring")
    previous = os.environ.get("SCORE_URL")
    try:
        src = work / "trips.jsonl"
        with src.open("w") as f:
            for trip in generate_trips(rows, seed=2024):
                f.write(json.dumps(trip) + "\n")
        job = work / "job.yaml"
        text = JOB.read_text().replace("../core/data/trips*.jsonl.gz", str(src))
        text = text.replace("query: record_query.asaql", f"query: {JOB.parent / 'record_query.asaql'}")
        job.write_text(text.replace("out/", f"{work}/out/"))
        with LocalEndpoint(style="records") as ep:
            os.environ["SCORE_URL"] = ep.url
            best = {1: float("inf"), 2: float("inf")}
            for _ in range(repeats):
                for workers in best:
                    best[workers] = min(best[workers], timed_job(job, work / f"scored{workers}", workers))
        one, two = rows / best[1], rows / best[2]
        return [f"seed scoring job ({rows:,} rows, batch 1000, 2 in flight): --workers 1 {one:,.0f} rows/s "
                f"({best[1]:.1f} s), --workers 2 {two:,.0f} rows/s ({best[2]:.1f} s) = {two / one:.2f}x"]
    finally:
        if previous is None:
            os.environ.pop("SCORE_URL", None)
        else:
            os.environ["SCORE_URL"] = previous
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print("\n".join(run()))
