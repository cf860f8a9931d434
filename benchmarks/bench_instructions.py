"""The seed job's work per row, in instructions: what the pipeline's process itself costs.

Wall-clock ratios on this kind of machine move by ±10 points between identical runs (BENCHMARKS.md),
and the endpoint's CPU shares the machine's two cores with the pipeline. Instructions counted by
``valgrind --tool=cachegrind`` are repeatable whatever else runs, and count only the pipeline's
process (its threads included; not the endpoint's process, not the sender child, which valgrind
does not follow). Per-row figures are the difference between two input sizes, so start-up and
pipeline construction cancel out.

Jobs (``bench_scoring.query_pipeline``: ReadRows → AsaQuery → WriteRows, as ``asa-beam run``):

* the seed job without scoring (``UNSCORED_QUERY``) — the baseline;
* the seed job with results made in-process (no HTTP): the scoring DoFn's own work;
* the seed job against an endpoint answering at once (own process): plus encoding, the sender
  pipe and decoding.

Skipped, saying so, where valgrind is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SIZES = (20_000, 40_000)
_ROOT = Path(__file__).resolve().parents[1]


def _child(which: str, src: str, dst: str, url: str, swagger: str) -> None:
    """Run one job in this (valgrind-traced) process."""
    from benchmarks.bench_scoring import (
        SEED_QUERY,
        UNSCORED_QUERY,
        InProcessFunction,
        _timed,
        query_pipeline,
    )
    from transforms.functions.azureml import AzureMLConfig, AzureMLFunction

    fn = None
    if which != "unscored":
        cls = InProcessFunction if which == "in-process" else AzureMLFunction
        fn = cls("score", AzureMLConfig(endpoint=url, swagger=json.loads(Path(swagger).read_text()),
                                        batch_size=1000, parallel_requests=2))
    _timed(query_pipeline(src, dst, UNSCORED_QUERY if which == "unscored" else SEED_QUERY, fn), 1)


def _instructions(which: str, src: Path, dst: Path, url: str, swagger: Path) -> int:
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
           sys.executable, "-m", "benchmarks.bench_instructions", "--child", which, str(src), str(dst), url,
           str(swagger)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, cwd=_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    found = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"{which} ({src.name}) under valgrind failed (exit {proc.returncode}): "
                           f"{proc.stderr[-800:]}")
    return int(found.group(1).replace(",", ""))


def run() -> list[str]:
    if shutil.which("valgrind") is None:
        return ["skipped: valgrind is not installed"]
    import requests

    from benchmarks.bench_scoring import _write_input
    from pipelines.serving.fake import FakeEndpointProcess
    from pipelines.serving.server import LocalEndpoint

    jobs = ("unscored", "in-process", "endpoint answering at once")
    with tempfile.TemporaryDirectory(prefix="asa-bench-") as tmp:
        tmpdir = Path(tmp)
        srcs = {}
        for n in SIZES:
            srcs[n] = tmpdir / f"trips-{n}.jsonl"
            _write_input(srcs[n], n)
        with LocalEndpoint(style="records") as ep:  # only for its swagger
            swagger = tmpdir / "swagger.json"
            swagger.write_text(json.dumps(requests.get(ep.swagger_url, timeout=30).json()))
        with FakeEndpointProcess("records", echo=True) as instant, ThreadPoolExecutor(2) as pool:
            runs = {(job, n): pool.submit(_instructions, job, srcs[n], tmpdir / f"out-{i}-{n}", instant.url, swagger)
                    for i, job in enumerate(jobs) for n in SIZES}
            counts = {k: f.result() for k, f in runs.items()}
    lo, hi = SIZES
    per_row = {job: (counts[(job, hi)] - counts[(job, lo)]) / (hi - lo) for job in jobs}
    base = per_row["unscored"]
    lines = [f"seed job, instructions per row in the pipeline's process (cachegrind; ({hi:,} - {lo:,} rows) "
             f"difference; repeatable, unlike seconds here)"]
    for job in jobs:
        note = "" if job == "unscored" else f"   {base / per_row[job]:.2f}x the job without scoring, in work"
        lines.append(f"  {job:<28s} {per_row[job]:>9,.0f} instructions/row{note}")
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(*sys.argv[2:7])
    else:
        print("\n".join(run()))
