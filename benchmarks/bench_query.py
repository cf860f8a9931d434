"""Compiled filter + projection + CAST query vs a hand-written Beam pipeline doing the same work.

Both read the same JSON-lines file with ReadFromText, parse, filter, project with a cast,
serialize and write with WriteToText, on the same runner in the same run.
"""

from __future__ import annotations

import json
import shutil

import apache_beam as beam

from benchmarks.common import best_of, ratio_line, timed_pipeline, workdir
from pipelines.examples.trips import write_trips
from transforms.io import ReadRows, WriteRows
from transforms.operators.compile import AsaQuery

ROWS = 500_000
QUERY = """SELECT tripid, vendorid, CAST(distance AS bigint) AS miles, fare
INTO output FROM input WHERE passenger > 1 AND fare IS NOT NULL"""


def _hand_written(line: str):
    row = json.loads(line)
    if not (row.get("passenger") is not None and row["passenger"] > 1 and row.get("fare") is not None):
        return []
    return [json.dumps({"tripid": row["tripid"], "vendorid": row["vendorid"], "miles": int(row["distance"]),
                        "fare": row["fare"]})]


def run(rows: int = ROWS, repeats: int = 2) -> list[str]:
    work = workdir("query")
    try:
        data = write_trips(work / "trips.jsonl", rows)

        def baseline() -> float:
            return timed_pipeline(lambda p: (
                p | beam.io.ReadFromText(str(data)) | beam.FlatMap(_hand_written)
                | beam.io.WriteToText(str(work / "base"), file_name_suffix=".json")))

        def compiled() -> float:
            def build(p):
                src = p | ReadRows(str(data), "json", name="input")
                out = {"input": src["rows"]} | AsaQuery(QUERY)
                out["output"] | WriteRows(str(work / "asa"), "json", name="output")
            return timed_pipeline(build)

        base, asa = best_of(repeats, baseline), best_of(repeats, compiled)
        return [ratio_line(f"query filter+projection+CAST ({rows:,} JSON rows)", rows, asa, base, 1.2)]
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print("\n".join(run()))
