"""WriteRows / WriteDeadLetters: files written through Beam, read back here with each format's own library."""

from __future__ import annotations

import csv
import datetime as dt
import glob
import gzip
import json
import os

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from transforms.deadletter import DeadLetter
from transforms.io import ReadRows, WriteDeadLetters, WriteRows
from transforms.io import writers as writers_module
from transforms.types import to_nvarchar

UTC = dt.timezone.utc
T1 = dt.datetime(2024, 3, 1, 12, 30, 5, 250000, tzinfo=UTC)

ROWS = [
    {"id": 1, "name": "Zürich, CH", "temp": 21.5, "ok": True, "at": T1,
     "pos": {"lat": 47.4, "tags": ["a", "b"]}, "readings": [{"v": 1}, {"v": 2}], "note": None},
    {"id": 2, "name": 'say "hi"\nbye', "temp": 19, "ok": False, "at": None,
     "pos": {"lat": None, "tags": []}, "readings": [], "note": None},
]


def write(rows, prefix: str, fmt: str | None = None, name: str = "output", **kwargs):
    """Runs ``Create(rows) | WriteRows(...)``; returns the output rows counter."""
    p = beam.Pipeline(runner="DirectRunner")
    pcoll = p | beam.Create(rows) if rows else p | beam.Create([]).with_output_types(dict)
    _ = pcoll | WriteRows(prefix, fmt, name, **kwargs)
    result = p.run()
    result.wait_until_finish()
    return counter(result, f"output.{name}.rows")


def counter(result, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_namespace("asa").with_name(name))["counters"]
    return sum(c.committed for c in found)


def shards(pattern: str) -> list[str]:
    return sorted(glob.glob(pattern))


# -- JSON ---------------------------------------------------------------------------------------


def test_json_lines_with_datetimes_nested_and_nulls(tmp_path):
    count = write(ROWS, str(tmp_path / "out"), "json", name="alerts", num_shards=1)
    assert count == 2
    files = shards(str(tmp_path / "out*"))
    assert [os.path.basename(f) for f in files] == ["out-00000-of-00001.json"]
    lines = open(files[0], encoding="utf-8").read().splitlines()
    rows = sorted((json.loads(line) for line in lines), key=lambda r: r["id"])
    assert rows[0] == {
        "id": 1, "name": "Zürich, CH", "temp": 21.5, "ok": True, "at": "2024-03-01T12:30:05.2500000Z",
        "pos": {"lat": 47.4, "tags": ["a", "b"]}, "readings": [{"v": 1}, {"v": 2}], "note": None,
    }
    assert rows[1]["at"] is None and rows[1]["name"] == 'say "hi"\nbye'
    assert all("\n" not in line and ": " not in line for line in lines)  # compact, one per line
    assert "Zürich" in lines[0] + lines[1]  # not \u-escaped


def test_json_shards_and_gzip(tmp_path):
    rows = [{"id": i} for i in range(10)]
    write(rows, str(tmp_path / "a" / "out"), "json", num_shards=2)
    files = shards(str(tmp_path / "a" / "out-*"))
    assert [os.path.basename(f) for f in files] == ["out-00000-of-00002.json", "out-00001-of-00002.json"]
    got = [json.loads(line) for f in files for line in open(f)]
    assert sorted(r["id"] for r in got) == list(range(10))

    write(rows, str(tmp_path / "b" / "events.json.gz"), num_shards=1)  # format and gzip from the prefix
    (path,) = shards(str(tmp_path / "b" / "*"))
    assert os.path.basename(path) == "events-00000-of-00001.json.gz"
    assert sorted(json.loads(line)["id"] for line in gzip.open(path, "rt")) == list(range(10))

    write(rows, str(tmp_path / "c" / "x"), "json", num_shards=1, compression="gzip")
    assert [os.path.basename(f) for f in shards(str(tmp_path / "c" / "*"))] == ["x-00000-of-00001.json.gz"]


def test_json_empty_pcollection(tmp_path):
    assert write([], str(tmp_path / "out"), "json") == 0
    files = shards(str(tmp_path / "out*"))
    assert len(files) <= 1 and all(open(f).read() == "" for f in files)


# -- CSV ----------------------------------------------------------------------------------------


def read_csv(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def test_csv_without_columns_header_is_union_of_keys(tmp_path):
    rows = [{"id": 1, "name": "a"}, {"id": 2, "extra": "x,y"}, {"name": "c", "id": 3}]
    assert write(rows, str(tmp_path / "out"), "csv", num_shards=1) == 3
    (path,) = shards(str(tmp_path / "out-*"))
    assert path.endswith("out-00000-of-00001.csv")
    table = read_csv(path)
    assert table[0] == ["id", "name", "extra"]
    assert sorted(table[1:]) == [["1", "a", ""], ["2", "", "x,y"], ["3", "c", ""]]
    assert open(path, "rb").read().count(b"\r\n") == 4  # RFC 4180 line ends


def test_csv_cells(tmp_path):
    write(ROWS, str(tmp_path / "out"), "csv", num_shards=1)
    (path,) = shards(str(tmp_path / "out-*"))
    table = read_csv(path)
    assert table[0] == ["id", "name", "temp", "ok", "at", "pos", "readings", "note"]
    body = sorted(table[1:])
    assert body[0] == ["1", "Zürich, CH", "21.5", "1", "2024-03-01T12:30:05.2500000Z",
                       '{"lat":47.4,"tags":["a","b"]}', '[{"v":1},{"v":2}]', ""]
    assert body[1] == ["2", 'say "hi"\nbye', "19", "0", "", '{"lat":null,"tags":[]}', "[]", ""]


def test_csv_with_columns_streams_and_projects(tmp_path):
    count = write(ROWS, str(tmp_path / "out.csv"), columns=["name", "id", "missing"], num_shards=1)
    assert count == 2
    (path,) = shards(str(tmp_path / "out-*"))
    assert os.path.basename(path) == "out-00000-of-00001.csv"
    table = read_csv(path)
    assert table[0] == ["name", "id", "missing"]
    assert sorted(table[1:]) == [['Zürich, CH', "1", ""], ['say "hi"\nbye', "2", ""]]


def test_csv_empty_shard_with_columns_has_the_header(tmp_path):
    write([], str(tmp_path / "out"), "csv", columns=["a", "b"])
    files = shards(str(tmp_path / "out-*"))
    assert files and all(read_csv(f) == [["a", "b"]] for f in files)


def test_csv_spooled_gzip_and_delimiter_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(writers_module, "SPOOL_CHUNK_ROWS", 7)
    monkeypatch.setattr(writers_module, "CSV_FLUSH_ROWS", 3)
    rows = [{"id": str(i), "v": f"x;{i}"} if i % 5 else {"id": str(i), "v": "", "late": "y"} for i in range(40)]
    write(rows, str(tmp_path / "out.csv.gz"), num_shards=1, delimiter=";")
    (path,) = shards(str(tmp_path / "out-*"))
    assert path.endswith("out-00000-of-00001.csv.gz")
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        table = list(csv.reader(f, delimiter=";"))
    assert table[0] == ["id", "v", "late"] and len(table) == 41
    expected = [{"id": r["id"], "v": r["v"], "late": r.get("late", "")} for r in rows]
    with beam.Pipeline(runner="DirectRunner") as p:
        out = p | ReadRows(path, delimiter=";")
        assert_that(out["rows"], equal_to(expected))


# -- Avro ---------------------------------------------------------------------------------------


def read_avro(pattern: str):
    schemas, records = [], []
    for path in shards(pattern):
        with open(path, "rb") as f:
            reader = fastavro.reader(f)
            schemas.append(reader.writer_schema)
            records.extend(reader)
    return schemas, records


def field_types(schema: dict) -> dict:
    return {f["name"]: f["type"] for f in schema["fields"]}


def test_avro_schema_inference(tmp_path):
    rows = [
        {"id": 1, "num": 1, "mixed": "a", "my col": True, "at": T1, "never": None,
         "pos": {"lat": 1.5}, "arr": [1, 2], "empty": {}},
        {"id": 2, "num": 2.5, "mixed": 7, "my col": None, "at": None, "never": None,
         "pos": {"lat": None, "alt": 3}, "arr": [None, 3.5], "empty": {}},
    ]
    assert write(rows, str(tmp_path / "out"), "avro", name="av", num_shards=1) == 2
    (schema,), records = read_avro(str(tmp_path / "out-00000-of-00001.avro"))
    types = field_types(schema)
    assert types["id"] == ["null", "long"]
    assert types["num"] == ["null", "double"]  # bigint mixed with float
    assert types["mixed"] == ["null", "string"]  # different types: text
    assert types["never"] == ["null", "string"]
    assert types["empty"] == ["null", "string"]
    assert types["at"] == ["null", {"type": "long", "logicalType": "timestamp-micros"}]
    assert types["my_col"] == ["null", "boolean"]
    (renamed,) = [f for f in schema["fields"] if f["name"] == "my_col"]
    assert renamed["asa.name"] == "my col"
    pos = types["pos"][1]
    assert pos["type"] == "record" and field_types(pos) == {"lat": ["null", "double"], "alt": ["null", "long"]}
    assert types["arr"] == ["null", {"type": "array", "items": ["null", "double"]}]
    records.sort(key=lambda r: r["id"])
    assert records[0] == {"id": 1, "num": 1.0, "mixed": "a", "my_col": True, "at": T1, "never": None,
                          "pos": {"lat": 1.5, "alt": None}, "arr": [1.0, 2.0], "empty": "{}"}
    assert records[1]["mixed"] == "7" and records[1]["arr"] == [None, 3.5]


def test_avro_round_trip_through_read_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(writers_module, "SPOOL_CHUNK_ROWS", 3)  # spooled to disk
    rows = [{"id": i, "name": f"n{i}", "at": T1 + dt.timedelta(seconds=i), "x y": {"a b": [i]}}
            for i in range(10)]
    write(rows, str(tmp_path / "out.avro"), num_shards=2)
    assert len(shards(str(tmp_path / "out-*-of-00002.avro"))) == 2
    with beam.Pipeline(runner="DirectRunner") as p:
        out = p | ReadRows(str(tmp_path / "out-*.avro"))
        assert_that(out["rows"], equal_to(rows))  # original names restored


def test_avro_with_columns(tmp_path):
    write(ROWS, str(tmp_path / "out"), "avro", columns=["temp", "id", "gone"], num_shards=1)
    (schema,), records = read_avro(str(tmp_path / "out-*.avro"))
    assert [f["name"] for f in schema["fields"]] == ["temp", "id", "gone"]
    assert sorted(records, key=lambda r: r["id"]) == [
        {"temp": 21.5, "id": 1, "gone": None}, {"temp": 19.0, "id": 2, "gone": None}]


def test_avro_empty_and_gzip_refused(tmp_path):
    write([], str(tmp_path / "out"), "avro")
    for path in shards(str(tmp_path / "out-*.avro")):
        with open(path, "rb") as f:
            assert list(fastavro.reader(f)) == []
    with pytest.raises(ValueError, match="cannot be gzipped"):
        WriteRows(str(tmp_path / "x.avro.gz"))


# -- Parquet ------------------------------------------------------------------------------------


def test_parquet_schema_inference_and_values(tmp_path):
    rows = ROWS + [{"id": 3, "name": 5, "temp": None, "ok": None, "at": T1, "pos": None,
                    "readings": None, "note": None}]
    assert write(rows, str(tmp_path / "out"), "parquet", name="pq", num_shards=1) == 3
    (path,) = shards(str(tmp_path / "out-*"))
    assert os.path.basename(path) == "out-00000-of-00001.parquet"
    table = pq.read_table(path)
    schema = table.schema
    assert schema.field("id").type == pa.int64()
    assert schema.field("name").type == pa.string()  # str and bigint: text
    assert schema.field("temp").type == pa.float64()
    assert schema.field("ok").type == pa.bool_()
    assert schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("pos").type == pa.struct([("lat", pa.float64()), ("tags", pa.list_(pa.string()))])
    assert schema.field("readings").type == pa.list_(pa.struct([("v", pa.int64())]))
    assert schema.field("note").type == pa.string()
    got = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert got[0]["at"] == T1 and got[0]["pos"] == {"lat": 47.4, "tags": ["a", "b"]}
    assert got[1]["temp"] == 19.0 and got[1]["at"] is None and got[1]["name"] == 'say "hi"\nbye'
    assert got[2]["name"] == "5" and got[2]["pos"] is None


def test_parquet_row_groups_spooling_and_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(writers_module, "SPOOL_CHUNK_ROWS", 10)
    monkeypatch.setattr(writers_module, "PARQUET_ROW_GROUP_ROWS", 20)
    rows = [{"id": i, "v": i / 2, "at": T1, "tags": [str(i)]} for i in range(55)]
    rows[40]["v"] = "late text"  # after the first row groups: the whole shard's column is text
    write(rows, str(tmp_path / "out.parquet"), num_shards=1)
    (path,) = shards(str(tmp_path / "out-*"))
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 55 and meta.num_row_groups == 3
    assert pq.read_schema(path).field("v").type == pa.string()
    expected = [{**r, "v": to_nvarchar(r["v"])} for r in rows]  # CAST(v AS nvarchar(max)): 1.0 → "1"
    with beam.Pipeline(runner="DirectRunner") as p:
        out = p | ReadRows(path)
        assert_that(out["rows"], equal_to(expected))


def test_parquet_empty(tmp_path):
    write([], str(tmp_path / "out"), "parquet")
    for path in shards(str(tmp_path / "out-*.parquet")):
        assert pq.read_table(path).num_rows == 0


# -- Dead letters -------------------------------------------------------------------------------


def test_write_dead_letters_counts_by_reason(tmp_path):
    dead = [
        DeadLetter("input", "malformed_json", "not JSON", raw="{oops"),
        DeadLetter("input", "malformed_json", "not JSON", raw="]"),
        DeadLetter("step1", "cast_error", "cannot cast", row={"at": T1, "v": "x"}),
    ]
    p = beam.Pipeline(runner="DirectRunner")
    _ = p | beam.Create(dead) | WriteDeadLetters(str(tmp_path / "dead"), num_shards=1)
    result = p.run()
    result.wait_until_finish()
    assert counter(result, "dead_letter.malformed_json") == 2
    assert counter(result, "dead_letter.cast_error") == 1
    assert counter(result, "output.dead_letters.rows") == 0  # not an output of the query
    (path,) = shards(str(tmp_path / "dead-*"))
    assert path.endswith("dead-00000-of-00001.json")
    got = sorted((json.loads(line) for line in open(path)), key=lambda d: d.get("raw", ""))
    assert got == [
        {"step": "step1", "reason": "cast_error", "message": "cannot cast",
         "row": {"at": "2024-03-01T12:30:05.2500000Z", "v": "x"}},
        {"step": "input", "reason": "malformed_json", "message": "not JSON", "raw": "]"},
        {"step": "input", "reason": "malformed_json", "message": "not JSON", "raw": "{oops"},
    ]
    assert DeadLetter.from_dict(got[1]) == dead[1]


def test_write_dead_letters_as_csv(tmp_path):
    p = beam.Pipeline(runner="DirectRunner")
    _ = (p | beam.Create([DeadLetter("in", "malformed_csv", "expected 2 columns", raw="a,b,c")])
         | WriteDeadLetters(str(tmp_path / "dead"), "csv", num_shards=1))
    p.run().wait_until_finish()
    (path,) = shards(str(tmp_path / "dead-*.csv"))
    assert read_csv(path) == [["step", "reason", "message", "raw"], ["in", "malformed_csv", "expected 2 columns",
                                                                      "a,b,c"]]


# -- Round trips through ReadRows, every format --------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "avro", "parquet"])
def test_round_trip(tmp_path, fmt):
    rows = [{"id": 1, "at": T1, "rec": {"a": [1, 2], "b": None}, "s": "é"},
            {"id": 2, "at": None, "rec": {"a": [], "b": "x"}, "s": None}]
    write(rows, str(tmp_path / "out"), fmt, num_shards=1)
    with beam.Pipeline(runner="DirectRunner") as p:
        out = p | ReadRows(str(tmp_path / f"out-*.{fmt}"))
        if fmt == "json":  # JSON has no datetime type: the ISO text comes back
            rows = [{**r, "at": r["at"] and "2024-03-01T12:30:05.2500000Z"} for r in rows]
        assert_that(out["rows"], equal_to(rows), label="rows")
        assert_that(out["failed"], equal_to([]), label="failed")


def test_two_outputs_in_one_pipeline(tmp_path):
    p = beam.Pipeline(runner="DirectRunner")
    rows = p | beam.Create([{"a": 1}, {"a": 2}])
    _ = rows | WriteRows(str(tmp_path / "one"), "json", name="one", num_shards=1)
    _ = rows | WriteRows(str(tmp_path / "two"), "parquet", name="two", num_shards=1)
    result = p.run()
    result.wait_until_finish()
    assert counter(result, "output.one.rows") == 2 and counter(result, "output.two.rows") == 2
    assert pq.read_table(shards(str(tmp_path / "two-*"))[0]).num_rows == 2
    assert open(shards(str(tmp_path / "one-*"))[0]).read().count("\n") == 2


@pytest.mark.parametrize("prefix, reads", [
    ("out/w", False),
    ("out/{date}/w", True),
    ("out/{time}/w", True),
    ("out/{datetime:yyyy}/w", True),
    ("out/{region}/w", False),   # a field of the row, not its time
])
def test_a_writer_reads_event_time_only_when_its_path_places_rows_by_time(prefix, reads, tmp_path):
    # ASA: "System.Timestamp is the time used for all time based partitioning" (blob output page)
    assert WriteRows(str(tmp_path / prefix), "json").reads_event_time is reads
    assert WriteDeadLetters(str(tmp_path / prefix)).reads_event_time is reads
