"""``udf.createArray(...)`` (a real JavaScript UDF in QuickJS) in a compiled query vs the same
query shape with the array built by a Python ``beam.Map`` — same data, runner and run."""

from __future__ import annotations

import shutil
import time

import apache_beam as beam

from benchmarks.common import best_of, ratio_line, timed_pipeline, workdir
from pipelines.examples.trips import write_trips
from transforms.functions.javascript import JavaScriptFunction
from transforms.io import ReadRows, WriteRows
from transforms.operators.compile import AsaQuery

ROWS = 200_000
FIELDS = ("vendorid", "weekday", "pickuphour", "passenger", "distance")
CREATE_ARRAY = ("function createArray(vendorid, weekday, pickuphour, passenger, distance) "
                "{ return [vendorid, weekday, pickuphour, passenger, distance]; }")
QUERY = "SELECT tripid, udf.createArray(vendorid, weekday, pickuphour, passenger, distance) AS inputArray " \
        "INTO output FROM input"


def _python_array(row: dict) -> dict:
    return {"tripid": row.get("tripid"), "inputArray": [row.get(f) for f in FIELDS]}


def _engine_only(n: int) -> float:
    fn = JavaScriptFunction("createArray", CREATE_ARRAY, output_type="array")
    fn.setup()
    args = [(1, "Mon", 12, 1, 5.8)] * 500
    start = time.perf_counter()
    for _ in range(n // 500):
        fn.call_batch(args)
    fn.teardown()
    return n / (time.perf_counter() - start)


def run(rows: int = ROWS, repeats: int = 2) -> list[str]:
    work = workdir("js")
    try:
        data = write_trips(work / "trips.jsonl", rows)

        def python_map() -> float:
            def build(p):
                src = p | ReadRows(str(data), "json", name="input")
                src["rows"] | beam.Map(_python_array) | WriteRows(str(work / "py"), "json", name="output")
            return timed_pipeline(build)

        def javascript() -> float:
            def build(p):
                src = p | ReadRows(str(data), "json", name="input")
                fn = JavaScriptFunction("createArray", CREATE_ARRAY, output_type="array")
                out = {"input": src["rows"]} | AsaQuery(QUERY, [fn])
                out["output"] | WriteRows(str(work / "js"), "json", name="output")
            return timed_pipeline(build)

        base, js = best_of(repeats, python_map), best_of(repeats, javascript)
        return [ratio_line(f"query udf.createArray (QuickJS) vs Python Map ({rows:,} rows)", rows, js, base, 0.5),
                f"engine alone (call_batch, chunks of 500): {_engine_only(100_000):,.0f} rows/s"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print("\n".join(run()))
