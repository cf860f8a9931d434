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


def streaming_demo(files: int = 6) -> int:
    """``asa-beam run --streaming`` while a producer drops a file of fresh trips every second."""
    import datetime as dt
    import json
    import shutil
    import threading
    import time

    from pipelines.examples.trips import trips

    base = EXAMPLES / "streaming"
    incoming = base / "incoming"
    for old in (incoming, base / "out"):  # a streaming run adds files; start clean
        shutil.rmtree(old, ignore_errors=True)
    incoming.mkdir(parents=True)
    print(f"\n== streaming: {base / 'job.yaml'}")
    print(f"   a producer writes {files} files of 200 trips (stamped now) into {incoming}, one a second")

    def produce() -> None:
        time.sleep(1)
        for i in range(files):
            now = dt.datetime.now(dt.timezone.utc).isoformat()
            tmp = incoming / f".trips-{i}.tmp"
            tmp.write_text("".join(json.dumps({**t, "pickedUpAt": now}) + "\n" for t in trips(200, seed=100 + i)))
            tmp.rename(incoming / f"trips-{i:03d}.jsonl")  # appear whole
            time.sleep(1)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    status = cli_main(["run", str(base / "job.yaml"), "--streaming", "--poll-interval", "0.5",
                       "--stop-after-idle", "3"])
    producer.join()
    return status


def project_demo() -> int:
    """An ASA VS Code project, unchanged: ``asa-beam run`` and ``asa-beam test`` on TaxiScoring,
    its Azure ML function pointed at the local endpoint."""
    from pipelines.examples.taxi_project import PROJECT, generate
    from pipelines.serving.server import LocalEndpoint

    generate()  # the local input and the expected outputs (the model's own predictions)
    print(f"\n== Bring your ASA project: {PROJECT} (JavaScript createArray + Azure ML score)")
    with LocalEndpoint(style="arrays") as endpoint:
        endpoint_flag = ["--function-endpoint", f"score={endpoint.url}"]
        print(f"   endpoint: {endpoint.url}; asa-beam run, then asa-beam test (test/testConfig.json)")
        status = cli_main(["run", str(PROJECT), *endpoint_flag])
        if status:
            return status
        return cli_main(["test", str(PROJECT), *endpoint_flag])


def main() -> int:
    for step in (core_sql_demo, streaming_demo,
                 lambda: ml_demo("arrays", "array_job.yaml"),    # seed query 1: JS createArray → udf.score
                 lambda: ml_demo("records", "record_job.yaml"),  # seed query 2: a WITH step's record
                 project_demo):
        status = step()
        if status:
            return status
    print("\nOutputs are under pipelines/examples/{core,streaming,ml}/out/ and "
          "pipelines/examples/TaxiScoring/{LocalRunOutputs,TestResults}/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
