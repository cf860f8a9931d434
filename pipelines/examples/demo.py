"""``make demo``: run the example jobs end to end and say where their outputs are."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.cli import main as cli_main
from pipelines.examples.trips import write_trips

EXAMPLES = Path(__file__).parent


def core_sql_demo() -> int:
    job = EXAMPLES / "core" / "job.yaml"
    data = write_trips(EXAMPLES / "core" / "data" / "trips.jsonl.gz", 20_000, dirty=True)  # the ML jobs read it too
    print(f"== core SQL: {job.relative_to(Path.cwd()) if job.is_relative_to(Path.cwd()) else job}")
    print(f"   input: {data} (20000 synthetic trips, some malformed lines and non-numeric distances)")
    return cli_main(["run", str(job), "--runner", "DirectRunner"])


def ml_demo(style: str, job_name: str) -> int:
    """Start the real Azure ML inference server with the bundled model, run a seed query, stop it."""
    import os

    from pipelines.serving.server import LocalEndpoint

    job = EXAMPLES / "ml" / job_name
    print(f"\n== ML scoring ({style} style): {job}")
    with LocalEndpoint(style=style) as endpoint:
        print(f"   endpoint: {endpoint.url} (azmlinfsrv; swagger at {endpoint.swagger_url})")
        os.environ["SCORE_URL"] = endpoint.url
        return cli_main(["run", str(job), "--runner", "DirectRunner"])


def main() -> int:
    for step in (core_sql_demo,
                 lambda: ml_demo("arrays", "array_job.yaml"),    # seed query 1: JS createArray → udf.score
                 lambda: ml_demo("records", "record_job.yaml")):  # seed query 2: a WITH step's record
        status = step()
        if status:
            return status
    print("\nOutputs are under pipelines/examples/core/out/ and pipelines/examples/ml/out/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
