"""Streaming: the tumbling-window query on watched files vs a hand-written Beam streaming pipeline.

Both run on the local streaming runner (Beam's BundleBasedDirectRunner, via LocalDirectRunner)
over the same JSON-lines files, watched by ``WatchFiles`` (the files are there at the start;
the watch ends after 0.5 s without new files), count rows per device in 1-minute tumbling
windows and write the results with the streaming ``WriteRows``:

* ours: ``ReadRows(watch=...)`` + ``AsaQuery`` (TIMESTAMP BY, GROUP BY TumblingWindow);
* baseline: ``WatchFiles`` + ``ReadMatches`` + ``json.loads`` + ``WindowInto(FixedWindows(60))``
  + ``CombinePerKey(CountCombineFn())``.

A third line compares the same query in batch (the FnApiRunner) with the streaming run: what a
streaming job costs on this machine's local runner.
"""

from __future__ import annotations

import shutil

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.transforms.combiners import CountCombineFn
from apache_beam.transforms.window import FixedWindows

from benchmarks.bench_windows import QUERY, parse_timestamped, write_events
from benchmarks.common import ratio_line, timed_pipeline, workdir
from transforms.io import ReadRows, Watch, WatchFiles, WriteRows
from transforms.operators.compile import AsaQuery, EventOrdering

ROWS = 100_000
FILES = 10
# Events from 2024: with ASA's late-arrival policy they would all be moved to arrival − 5 s.
# "Wait indefinitely" keeps their times; the watermark then stays put until the watch ends.
ORDERING = EventOrdering(late_arrival_s=-1)
WATCH = Watch(poll_interval_s=0.1, stop_after_idle_s=0.5, watermark_lag_s=None)


class _Lines(beam.DoFn):
    def process(self, readable):
        with readable.open() as f:
            for line in f:
                yield line.decode("utf-8")


class _ToRow(beam.DoFn):
    def process(self, element, window=beam.DoFn.WindowParam):
        key, count = element
        yield {"deviceId": key, "windowEnd": window.end.to_utc_datetime().isoformat(), "count": count}


def run(rows: int = ROWS, repeats: int = 2) -> list[str]:
    work = workdir("streaming")
    try:
        data = work / "in"
        data.mkdir()
        for i in range(FILES):
            write_events(data / f"events-{i}.jsonl", rows // FILES, seed=i)
        glob = str(data / "*.jsonl")
        streaming = ["--streaming"]

        def baseline() -> float:
            return timed_pipeline(lambda p: (
                p | WatchFiles(glob, WATCH.poll_interval_s, WATCH.stop_after_idle_s, None)
                | fileio.ReadMatches() | beam.ParDo(_Lines()) | beam.Map(parse_timestamped)
                | beam.Map(lambda r: (r["deviceId"], r))
                | beam.WindowInto(FixedWindows(60))
                | beam.CombinePerKey(CountCombineFn())
                | beam.ParDo(_ToRow())
                | WriteRows(str(work / "base"), "json")), streaming)

        def query(argv: list[str], watch: Watch | None) -> float:
            def build(p):
                src = p | ReadRows(glob, "json", name="input", watch=watch)
                out = {"input": src["rows"]} | AsaQuery(QUERY, event_ordering=ORDERING)
                out["output"] | WriteRows(str(work / ("sql-s" if watch else "sql-b")), "json", name="output")
            return timed_pipeline(build, argv)

        base_times, stream_times, batch_times = [], [], []
        for _ in range(repeats):
            base_times.append(baseline())
            stream_times.append(query(streaming, WATCH))
            batch_times.append(query([], None))
        base, stream, batch = min(base_times), min(stream_times), min(batch_times)
        return [
            ratio_line(f"streaming query on watched files: tumbling 1 min COUNT(*) ({rows:,} rows, {FILES} files)",
                       rows, stream, base, 0.9),
            f"  the same query in batch (FnApiRunner): {rows / batch:,.0f} rows/s; streaming runs at "
            f"{batch / stream:.2f}x of batch (informative: the local streaming runner's cost)",
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print("\n".join(run()))
