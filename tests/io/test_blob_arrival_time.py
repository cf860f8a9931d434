"""Arrival time of file inputs: every row of a file carries the file's last-modified time.

ASA: "The default timestamp of Blob storage events in Stream Analytics is the timestamp that
the blob was last modified, which is BlobLastModifiedUtcTime ... The timestamp assigned to
each blob is based only on BlobLastModifiedTime."
https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-define-inputs
So a query without TIMESTAMP BY that windows over arrival time gives one result per file
(when the files' times fall in different windows), in every format.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import os
import pathlib

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that

from transforms import AsaQuery
from transforms.io import ReadRows
from transforms.testing import asa_equal_to

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
# Three files: (seconds after T0 of their last-modified time, their ids).
FILES = [(5, [1, 2]), (15, [3, 4, 5]), (25, [6])]


def write_file(path: pathlib.Path, fmt: str, ids: list[int]) -> None:
    rows = [{"id": i, "name": f"n{i}"} for i in ids]
    if fmt == "json":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json.gz":
        with gzip.open(path, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    elif fmt == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, ["id", "name"])
            w.writeheader()
            w.writerows(rows)
    elif fmt == "avro":
        schema = {"type": "record", "name": "r", "fields": [
            {"name": "id", "type": "long"}, {"name": "name", "type": "string"}]}
        with open(path, "wb") as f:
            fastavro.writer(f, schema, rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)


def make_files(tmp_path: pathlib.Path, fmt: str) -> str:
    for n, (offset, ids) in enumerate(FILES):
        path = tmp_path / f"part{n}.{fmt}"
        write_file(path, fmt, ids)
        when = (T0 + dt.timedelta(seconds=offset)).timestamp()
        os.utime(path, (when, when))
    return str(tmp_path / f"*.{fmt}")


def at(seconds: int) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("fmt", ["json", "json.gz", "csv", "avro", "parquet"])
def test_window_over_arrival_time_gives_one_result_per_file(tmp_path, fmt):
    glob = make_files(tmp_path, fmt)
    query = ("SELECT COUNT(*) AS n, System.Timestamp() AS t INTO output FROM input "
             "GROUP BY TumblingWindow(second, 10)")
    with beam.Pipeline(runner="DirectRunner") as p:
        rows = p | ReadRows(glob, name="input")
        out = {"input": rows["rows"]} | AsaQuery(query)
        # Hand-computed: (0,10] holds the file of T0+5 s (2 rows), (10,20] the one of +15 s (3 rows), ...
        assert_that(out["output"], asa_equal_to([
            {"n": 2, "t": at(10)}, {"n": 3, "t": at(20)}, {"n": 1, "t": at(30)}]))


@pytest.mark.parametrize("fmt", ["json", "csv", "avro", "parquet"])
def test_every_row_carries_its_files_last_modified_time(tmp_path, fmt):
    glob = make_files(tmp_path, fmt)
    with beam.Pipeline(runner="DirectRunner") as p:
        rows = p | ReadRows(glob, name="input")
        out = {"input": rows["rows"]} | AsaQuery(
            "SELECT CAST(id AS bigint) AS id, System.Timestamp() AS t INTO output FROM input")
        assert_that(out["output"], asa_equal_to([
            {"id": i, "t": at(offset)} for offset, ids in FILES for i in ids]))


def test_timestamp_by_still_wins_over_arrival_time(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"id": 1, "at": "2020-05-05T00:00:00Z"}\n')
    when = T0.timestamp()
    os.utime(path, (when, when))
    with beam.Pipeline(runner="DirectRunner") as p:
        rows = p | ReadRows(str(path), name="input")
        out = {"input": rows["rows"]} | AsaQuery(
            "SELECT id, System.Timestamp() AS t INTO output FROM input TIMESTAMP BY at")
        assert_that(out["output"], asa_equal_to([{"id": 1, "t": "2020-05-05T00:00:00Z"}]))
