"""Streaming I/O on the local runner: WatchFiles polling rules, watched reads of every format,
pane-by-pane writes. Files are written by a thread while the pipeline runs."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from pipeline_files import collect, collected, counter, read_output

from pipelines.runners import LocalDirectRunner
from transforms.io import ReadRows, Watch, WatchFiles, WriteRows
from transforms.io.watch import WatchState, is_finished, poll, request_drain, reset_drain, should_end

FAST = Watch(poll_interval_s=0.1, stop_after_idle_s=1.0)


def streaming_pipeline() -> beam.Pipeline:
    return beam.Pipeline(runner=LocalDirectRunner(), options=PipelineOptions(streaming=True))


def later(delay_s: float, action) -> threading.Thread:
    def run():
        time.sleep(delay_s)
        action()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


# -- the polling rules, without a pipeline -------------------------------------------------------


def test_poll_emits_a_file_once_it_has_settled_and_never_again(tmp_path):
    state = WatchState(started=0.0)
    pattern = str(tmp_path / "*.json")
    (tmp_path / "a.json").write_text("1\n")
    assert poll(pattern, state, now=1.0) == []  # first sight: still settling
    assert [Path(m.path).name for m in poll(pattern, state, now=2.0)] == ["a.json"]
    assert poll(pattern, state, now=3.0) == []
    (tmp_path / "a.json").write_text("1\n2\n")  # changed after it was read: not read again
    assert poll(pattern, state, now=4.0) == []


def test_poll_waits_while_a_file_grows_and_forgets_deleted_ones(tmp_path):
    state = WatchState(started=0.0)
    pattern = str(tmp_path / "*.csv")
    growing = tmp_path / "g.csv"
    growing.write_text("a\n")
    (tmp_path / "gone.csv").write_text("x\n")
    poll(pattern, state, now=1.0)
    growing.write_text("a\n1\n")
    (tmp_path / "gone.csv").unlink()
    assert poll(pattern, state, now=2.0) == []  # size changed: settling again
    assert list(state.settling) == [str(growing)]
    assert [Path(m.path).name for m in poll(pattern, state, now=3.0)] == ["g.csv"]


def test_poll_returns_settled_files_oldest_first(tmp_path):
    state = WatchState(started=0.0)
    for i, name in enumerate(["c.json", "a.json", "b.json"]):
        (tmp_path / name).write_text("{}\n")
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    poll(str(tmp_path / "*.json"), state, now=1.0)
    assert [Path(m.path).name for m in poll(str(tmp_path / "*.json"), state, now=2.0)] == [
        "c.json", "a.json", "b.json"]


def test_idle_stop_counts_from_the_last_change_and_waits_for_settling_files():
    watch = WatchFiles("unused", stop_after_idle_s=5)
    state = WatchState(started=100.0)
    assert not is_finished(watch, state, now=104.0)
    assert is_finished(watch, state, now=105.0)
    state.last_change = 103.0
    assert not is_finished(watch, state, now=107.0)
    state.settling["f"] = (1, 1.0)
    assert not is_finished(watch, state, now=200.0)
    assert not is_finished(WatchFiles("unused"), WatchState(started=0.0), now=1e9)  # no idle stop: never


def test_drain_finishes_every_watch():
    try:
        request_drain()
        assert is_finished(WatchFiles("unused"), WatchState(started=0.0), now=0.0)
    finally:
        reset_drain()


def test_watch_arguments_are_checked():
    with pytest.raises(ValueError, match="poll_interval_s"):
        WatchFiles("x", poll_interval_s=0)
    with pytest.raises(ValueError, match="stop_after_idle_s"):
        WatchFiles("x", stop_after_idle_s=-1)


def test_the_watch_ends_only_after_its_drain_grace():
    watch = WatchFiles("unused", stop_after_idle_s=1, drain_grace_s=2)
    state = WatchState(started=0.0)
    assert not should_end(watch, state, now=0.5)
    assert not should_end(watch, state, now=1.0)  # finished: the grace starts
    assert state.finishing_since == 1.0
    assert not should_end(watch, state, now=2.9)
    assert should_end(watch, state, now=3.0)


# -- watched reads -------------------------------------------------------------------------------


def run_watched_read(glob: str, fmt: str, producer) -> tuple[list, list, int]:
    p = streaming_pipeline()
    out = p | ReadRows(glob, fmt, "events", watch=FAST)
    with_ts = out["rows"] | "Arrival" >> beam.Map(lambda r, ts=beam.DoFn.TimestampParam: (r, ts.micros))
    d = Path(glob).parent
    rows_file, failed_file = str(d.parent / f"rows-{fmt}"), str(d.parent / f"failed-{fmt}")
    _ = with_ts | "CollectRows" >> beam.Map(collect, rows_file)
    _ = out["failed"] | "CollectFailed" >> beam.Map(collect, failed_file)
    started = time.time()
    later(0.5, producer)
    result = p.run()
    result.wait_until_finish()
    rows = collected(rows_file)
    assert all(ts >= started * 1e6 for _, ts in rows), "rows carry their file's arrival time"
    return [r for r, _ in rows], collected(failed_file), counter(result, "input.events.rows")


def _json_bytes(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _avro_bytes(rows) -> bytes:
    import io

    buf = io.BytesIO()
    schema = {"type": "record", "name": "r", "fields": [{"name": "id", "type": "long"}]}
    fastavro.writer(buf, schema, rows)
    return buf.getvalue()


def _parquet_bytes(rows) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


ENCODERS = {
    "json": lambda rows: _json_bytes(rows) + b"not json\n",
    "csv": lambda rows: ("id\n" + "".join(f"{r['id']}\n" for r in rows) + "1,2\n").encode(),
    "avro": _avro_bytes,
    "parquet": _parquet_bytes,
}


@pytest.mark.parametrize("fmt", sorted(ENCODERS))
def test_watched_read_reads_files_present_at_start_and_arriving_later(tmp_path, fmt):
    src = tmp_path / "in"
    src.mkdir()
    encode = ENCODERS[fmt]
    write_atomically(src / f"a.{fmt}", encode([{"id": 1}, {"id": 2}]))

    def producer():
        write_atomically(src / f"b.{fmt}", encode([{"id": 3}]))
        time.sleep(0.3)
        write_atomically(src / f"c.{fmt}", encode([{"id": 4}, {"id": 5}]))

    rows, failed, count = run_watched_read(str(src / f"*.{fmt}"), fmt, producer)
    ids = sorted(int(r["id"]) for r in rows)  # CSV values are strings, as in ASA
    assert ids == [1, 2, 3, 4, 5]
    assert count == 5
    bad = {"json": "malformed_json", "csv": "malformed_csv"}.get(fmt)
    assert [d.reason for d in failed] == ([bad] * 3 if bad else [])


# -- streaming writes ----------------------------------------------------------------------------


def test_streaming_write_writes_while_running_and_loses_no_row(tmp_path):
    """Rows are on disk before the stream ends, rows far behind the watermark are written too,
    and every row exactly once."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    seen_while_running: list[int] = []

    def producer():
        write_atomically(src / "a.json", _json_bytes([{"id": i} for i in range(3)]))
        deadline = time.time() + 15
        while time.time() < deadline and not list(out.glob("rows-*.json")):
            time.sleep(0.1)
        seen_while_running.append(len(read_output(out / "rows", "json")))
        write_atomically(src / "b.json", _json_bytes([{"id": i} for i in range(3, 5)]))

    p = streaming_pipeline()
    rows = p | ReadRows(str(src / "*.json"), "json", "events", watch=Watch(0.1, 1.5, watermark_lag_s=0))
    # Rows stamped in 1970: far behind the watermark, which a watermark-triggered write would drop.
    old = rows["rows"] | beam.Map(lambda r: beam.window.TimestampedValue(r, 10))
    old | WriteRows(str(out / "rows"), "json", name="rows")
    later(0.2, producer)
    result = p.run()
    result.wait_until_finish()
    assert seen_while_running == [3]
    written = read_output(out / "rows", "json")
    assert sorted(r["id"] for r in written) == [0, 1, 2, 3, 4]
    assert counter(result, "output.rows.rows") == 5
    assert not list(out.glob(".*")), "no temporary file is left behind"


@pytest.mark.parametrize("fmt", ["csv", "avro", "parquet"])
def test_streaming_write_of_each_format(tmp_path, fmt):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_atomically(src / "a.json", _json_bytes([{"id": 1, "tags": ["x"]}, {"id": 2, "tags": []}]))
    p = streaming_pipeline()
    rows = p | ReadRows(str(src / "*.json"), "json", "events", watch=Watch(0.1, 0.5))
    rows["rows"] | WriteRows(str(out / "rows"), fmt, name="rows")
    p.run().wait_until_finish()
    names = sorted(p.name for p in out.iterdir())
    assert names and all(n.startswith("rows-") and n.endswith(f".{fmt}") for n in names), names
    written = read_output(out / "rows", fmt)
    assert sorted(str(r["id"]) for r in written) == ["1", "2"]


def test_watched_json_read_drops_a_bom_and_dead_letters_invalid_utf8_as_batch_does(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_atomically(src / "b.json", b'\xef\xbb\xbf{"id": 3}\n{"id": "\xff\xfe"}\n\n{"id": 4}\r\n')
    rows, failed, count = run_watched_read(str(src / "*.json"), "json", lambda: None)
    assert sorted(r["id"] for r in rows) == [3, 4] and count == 2
    assert [(d.reason, d.raw) for d in failed] == [("malformed_json", '{"id": "\ufffd\ufffd"}')]


# -- crash safety: the checkpoint ----------------------------------------------------------------


def test_arrival_log_is_written_before_files_are_emitted_and_replayed_with_their_arrival_times(tmp_path):
    from transforms.io.checkpoint import open_checkpoint
    from transforms.io.watch import next_files, start_watch

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json").write_text("{}\n")
    checkpoint, lock = open_checkpoint(tmp_path / "ckpt", "job")
    watch = WatchFiles(str(tmp_path / "in" / "*.json"), checkpoint=checkpoint.input_log("trips"))
    state = start_watch(watch, now=100.0)
    assert next_files(watch, state, now=100.0) == []  # settling
    [(meta, arrival)] = next_files(watch, state, now=101.0)
    assert (Path(meta.path).name, arrival) == ("a.json", 101.0)
    lines = (tmp_path / "ckpt" / "inputs" / "trips.jsonl").read_text().splitlines()
    assert [json.loads(x)["arrival"] for x in lines] == [101.0]  # on disk when the file is emitted
    lock.release()

    # "Killed" here; a crash while logging the next file leaves half a line.
    with open(tmp_path / "ckpt" / "inputs" / "trips.jsonl", "a") as f:
        f.write('{"epoch": 0, "path": "/x/b.js')
    (tmp_path / "in" / "b.json").write_text("{}\n")
    checkpoint, lock = open_checkpoint(tmp_path / "ckpt", "job")
    assert checkpoint.pending() == {"trips": 1}
    watch = WatchFiles(str(tmp_path / "in" / "*.json"), checkpoint=checkpoint.input_log("trips"))
    state = start_watch(watch, now=200.0)
    replayed = next_files(watch, state, now=200.0)  # a.json again, with its first arrival time
    assert [(Path(m.path).name, a) for m, a in replayed] == [("a.json", 101.0)]
    assert [(Path(m.path).name, a) for m, a in next_files(watch, state, now=201.0)] == [("b.json", 201.0)]
    records = [json.loads(x) for x in (tmp_path / "ckpt" / "inputs" / "trips.jsonl").read_text().splitlines()]
    assert [(Path(r["path"]).name, r["arrival"]) for r in records] == [("a.json", 101.0), ("b.json", 201.0)]

    # A clean end: both files are done; a new run neither replays nor reads them again.
    checkpoint.finish("job")
    lock.release()
    checkpoint, lock = open_checkpoint(tmp_path / "ckpt", "job")
    assert checkpoint.epoch == 1 and checkpoint.pending() == {}
    watch = WatchFiles(str(tmp_path / "in" / "*.json"), checkpoint=checkpoint.input_log("trips"))
    state = start_watch(watch, now=300.0)
    assert next_files(watch, state, now=300.0) == [] and next_files(watch, state, now=301.0) == []
    lock.release()


def test_a_checkpoint_is_used_by_one_job_at_a_time_and_not_resumed_by_a_different_job(tmp_path):
    from transforms.io.checkpoint import Arrival, CheckpointError, open_checkpoint

    checkpoint, lock = open_checkpoint(tmp_path, "job-1")
    with pytest.raises(CheckpointError, match="in use by another running job"):
        open_checkpoint(tmp_path, "job-1")
    checkpoint.input_log("trips").append([Arrival("/in/a.json", 3, 1.0, 2.0)])
    lock.release()
    with pytest.raises(CheckpointError, match="different job"):
        open_checkpoint(tmp_path, "job-2")
    checkpoint, lock = open_checkpoint(tmp_path, "job-1")  # the same job resumes it
    checkpoint.finish("job-1")
    lock.release()
    _, lock = open_checkpoint(tmp_path, "job-2")  # nothing left to resume: a new job may start
    lock.release()


def run_checkpointed(src: Path, out: Path, checkpoint) -> beam.runners.runner.PipelineResult:
    p = streaming_pipeline()
    watch = Watch(0.1, 0.6, checkpoint=checkpoint.input_log("events"))
    rows = p | ReadRows(str(src / "*.json"), "json", "events", watch=watch)
    rows["rows"] | WriteRows(str(out / "rows"), "json", name="rows", checkpoint=checkpoint.output_log("rows"))
    result = p.run()
    result.wait_until_finish()
    return result


def test_rows_committed_before_a_restart_are_not_written_again_and_uncommitted_ones_are(tmp_path):
    from transforms.io.checkpoint import fingerprint, open_checkpoint

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    # Two equal rows: the committed-output log is a multiset, so both stay.
    write_atomically(src / "a.json", _json_bytes([{"id": 1}, {"id": 1}, {"id": 2}]))
    checkpoint, lock = open_checkpoint(tmp_path / "ckpt", "job")
    run_checkpointed(src, out, checkpoint)  # ...and no clean end: as if killed after writing
    lock.release()
    assert sorted(r["id"] for r in read_output(out / "rows", "json")) == [1, 1, 2]
    # A crash between recording a file's rows and renaming it: a sidecar whose file is missing.
    checkpoint.output_log("rows").record(str(out / "rows-never-renamed.json"), [fingerprint({"id": 3})])

    write_atomically(src / "b.json", _json_bytes([{"id": 3}]))
    write_atomically(src / "c.json", _json_bytes([{"id": 4}, {"id": 1}]))
    checkpoint, lock = open_checkpoint(tmp_path / "ckpt", "job")
    assert checkpoint.pending() == {"events": 1}  # a.json is replayed: its results may be incomplete
    result = run_checkpointed(src, out, checkpoint)
    lock.release()
    # a.json's rows once (not again on replay), b.json's row although a sidecar named it (its
    # file was never committed), c.json's rows, including a third equal row.
    assert sorted(r["id"] for r in read_output(out / "rows", "json")) == [1, 1, 1, 2, 3, 4]
    assert counter(result, "output.rows.already_written") == 3
    assert counter(result, "output.rows.rows") == 6  # every row this run produced is in the output
    assert counter(result, "input.events.rows") == 6


def test_fingerprints_identify_rows_by_value():
    import datetime as dt

    from transforms.io.checkpoint import fingerprint

    when = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert fingerprint({"a": 1, "t": when}) == fingerprint({"t": when, "a": 1})
    assert fingerprint({"a": {"x": 1, "y": [1, 2]}}) == fingerprint({"a": {"y": [1, 2], "x": 1}})
    assert len({fingerprint({"a": v}) for v in (1, 1.0, "1", True, None, [1], float("nan"))}) == 7


def test_a_replayed_file_deleted_meanwhile_is_skipped_with_a_warning(tmp_path, caplog):
    from transforms.io.checkpoint import Arrival, open_checkpoint
    from transforms.io.watch import next_files, start_watch

    (tmp_path / "a.json").write_text("{}\n")
    checkpoint, lock = open_checkpoint(tmp_path / "ckpt", "job")
    log = checkpoint.input_log("trips")
    log.append([Arrival(str(tmp_path / "a.json"), 3, 1.0, 5.0), Arrival(str(tmp_path / "b.json"), 3, 1.0, 6.0)])
    state = start_watch(WatchFiles(str(tmp_path / "*.json"), checkpoint=log), now=10.0)
    files = next_files(WatchFiles(str(tmp_path / "*.json"), checkpoint=log), state, now=10.0)
    lock.release()
    assert [(Path(m.path).name, a) for m, a in files] == [("a.json", 5.0)]
    assert "b.json was deleted before the job ended cleanly" in caplog.text


def test_partitioned_streaming_output_is_not_written_again_after_a_restart(tmp_path):
    from transforms.io.checkpoint import open_checkpoint

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_atomically(src / "a.json", _json_bytes([{"id": 1, "k": "a"}, {"id": 2, "k": "b"}]))

    def run(checkpoint):
        p = streaming_pipeline()
        rows = p | ReadRows(str(src / "*.json"), "json", "events",
                            watch=Watch(0.1, 0.6, checkpoint=checkpoint.input_log("events")))
        rows["rows"] | WriteRows(str(out / "{k}" / "rows"), "json", name="rows",
                                 checkpoint=checkpoint.output_log("rows"))
        result = p.run()
        result.wait_until_finish()
        return result

    checkpoint, lock = open_checkpoint(tmp_path / "ckpt", "job")
    run(checkpoint)  # no clean end: as if killed after writing
    lock.release()
    write_atomically(src / "c.json", _json_bytes([{"id": 3, "k": "a"}]))
    checkpoint, lock = open_checkpoint(tmp_path / "ckpt", "job")
    result = run(checkpoint)
    lock.release()
    assert sorted(r["id"] for r in read_output(out / "a" / "rows", "json")) == [1, 3]
    assert sorted(r["id"] for r in read_output(out / "b" / "rows", "json")) == [2]
    assert counter(result, "output.rows.already_written") == 2
