"""``make demo``: run the example jobs end to end and say where their outputs are."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.cli import main as cli_main
from pipelines.examples.trips import write_trips

EXAMPLES = Path(__file__).parent


def core_sql_demo() -> int:
    job = EXAMPLES / "core" / "job.yaml"
    data = write_trips(EXAMPLES / "core" / "data" / "trips.jsonl.gz", 20_000, dirty=True)
    print(f"== core SQL: {job.relative_to(Path.cwd()) if job.is_relative_to(Path.cwd()) else job}")
    print(f"   input: {data} (20000 synthetic trips, some malformed lines and non-numeric distances)")
    return cli_main(["run", str(job), "--runner", "DirectRunner"])


def main() -> int:
    status = core_sql_demo()
    if status:
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
