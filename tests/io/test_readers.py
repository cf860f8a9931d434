"""ReadRows: every format read through a real Beam pipeline from files written here."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import json
import os
import tempfile

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to
from pipeline_files import collect, collected, counter

from transforms.io import FORMATS, ReadRows, format_from_path
from transforms.io import readers as readers_module

UTC = dt.timezone.utc


def read(glob: str, fmt: str | None = None, name: str = "input", **kwargs):
    """(rows, dead letters, rows counter) of reading ``glob`` with ReadRows."""
    p = beam.Pipeline(runner="DirectRunner")
    out = p | ReadRows(glob, fmt, name, **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        rows_file, failed_file = os.path.join(tmp, "rows"), os.path.join(tmp, "failed")
        _ = out["rows"] | "CollectRows" >> beam.Map(collect, rows_file)
        _ = out["failed"] | "CollectFailed" >> beam.Map(collect, failed_file)
        result = p.run()
        result.wait_until_finish()
        return collected(rows_file), collected(failed_file), counter(result, f"input.{name}.rows")








def by_key(rows, key="id"):
    return sorted(rows, key=lambda r: r[key])


# -- format_from_path ---------------------------------------------------------------------------


@pytest.mark.parametrize("path, fmt", [
    ("a.json", "json"), ("dir/*.jsonl", "json"), ("x.ndjson.gz", "json"), ("X.JSON", "json"),
    ("in/*.csv", "csv"), ("in/data.csv.gz", "csv"), ("gs://b/dir.v1/f.avro", "avro"),
    ("part-*.parquet", "parquet"), ("in/*.csv*", "csv"), ("in/*.json.gz*", "json"),
])
def test_format_from_path(path, fmt):
    assert format_from_path(path) == fmt
    assert fmt in FORMATS


@pytest.mark.parametrize("path", ["data.txt", "data", "data.gz", "in.json/file"])
def test_format_from_path_unknown(path):
    with pytest.raises(ValueError, match="cannot tell the format"):
        format_from_path(path)


def test_unknown_format_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="unknown file format 'xml'"):
        ReadRows(str(tmp_path / "*.json"), "xml")
    with pytest.raises(ValueError, match="no file matches"):
        with beam.Pipeline(runner="DirectRunner") as p:
            _ = p | ReadRows(str(tmp_path / "nothing-*.json"), name="missing")


# -- JSON ---------------------------------------------------------------------------------------


def test_json_lines_glob_blank_and_malformed_lines(tmp_path):
    (tmp_path / "a.json").write_text(
        '{"id": 1, "name": "a", "tags": ["x", "y"], "pos": {"lat": 1.5, "lon": null}}\n'
        "\n"
        "   \n"
        '{"id": 2, "name": "é", "v": null, "ok": true}\n'
        '{"id": 3, oops}\n', encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('[1, 2]\n{"id": 4}\n"text"\n{"id": 5}', encoding="utf-8")
    rows, failed, count = read(str(tmp_path / "*.json*"), "json", name="events")
    assert by_key(rows) == [
        {"id": 1, "name": "a", "tags": ["x", "y"], "pos": {"lat": 1.5, "lon": None}},
        {"id": 2, "name": "é", "v": None, "ok": True},
        {"id": 4},
        {"id": 5},
    ]
    assert count == 4
    bad = {d.raw: d for d in failed}
    assert set(bad) == {'{"id": 3, oops}', "[1, 2]", '"text"'}
    assert all(d.reason == "malformed_json" and d.step == "events" for d in failed)
    assert "not valid JSON" in bad['{"id": 3, oops}'].message
    assert "expected a JSON object, got an array" in bad["[1, 2]"].message
    assert "got a string" in bad['"text"'].message


def test_json_with_assert_that(tmp_path):
    (tmp_path / "in.json").write_text('{"a": 1}\n{"a": 2}\nnope\n')
    with beam.Pipeline(runner="DirectRunner") as p:
        out = p | ReadRows(str(tmp_path / "in.json"))
        assert_that(out["rows"], equal_to([{"a": 1}, {"a": 2}]), label="rows")
        assert_that(out["failed"] | beam.Map(lambda d: (d.step, d.reason, d.raw)),
                    equal_to([("input", "malformed_json", "nope")]), label="failed")


def test_json_gzip_bom_and_invalid_utf8(tmp_path):
    with gzip.open(tmp_path / "a.json.gz", "wt", encoding="utf-8") as f:
        f.write('{"id": 1}\n{"id": 2}\n')
    (tmp_path / "b.json").write_bytes(b'\xef\xbb\xbf{"id": 3}\n{"id": "\xff\xfe"}\n{"id": 4}\n')
    rows, failed, count = read(str(tmp_path / "*.json*"))
    assert by_key(rows) == [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}]
    assert count == 4
    assert [(d.reason, d.raw) for d in failed] == [("malformed_json", '{"id": "\ufffd\ufffd"}')]


# -- CSV ----------------------------------------------------------------------------------------


def test_csv_quoted_fields_empty_values_and_wrong_column_counts(tmp_path):
    (tmp_path / "a.csv").write_text(
        'id,name,note\r\n'
        '1,"Smith, John","line one\nline two"\r\n'
        '2,,""\r\n'
        '\r\n'
        '3,"x"\r\n'
        '4,a,b,c\r\n'
        '5,"say ""hi""",z\r\n', encoding="utf-8", newline="")
    rows, failed, count = read(str(tmp_path / "a.csv"), name="people")
    assert by_key(rows) == [
        {"id": "1", "name": "Smith, John", "note": "line one\nline two"},
        {"id": "2", "name": "", "note": ""},
        {"id": "5", "name": 'say "hi"', "note": "z"},
    ]
    assert count == 3
    assert [(d.step, d.reason, d.raw) for d in failed] == [
        ("people", "malformed_csv", '3,"x"'),
        ("people", "malformed_csv", "4,a,b,c"),
    ]
    assert "line 6: expected 3 columns (as in the header), got 2" in failed[0].message
    assert "got 4" in failed[1].message


def test_csv_multiline_bad_record_keeps_its_text(tmp_path):
    (tmp_path / "a.csv").write_text('a,b\n"x\ny",1,2\nok,1\n')
    rows, failed, _ = read(str(tmp_path / "a.csv"))
    assert rows == [{"a": "ok", "b": "1"}]
    assert [d.raw for d in failed] == ['"x\ny",1,2']
    assert "line 2:" in failed[0].message


def test_csv_glob_gzip_delimiter_and_bom(tmp_path):
    (tmp_path / "a.csv").write_bytes("\ufeffid;city\n1;Zürich\n".encode())
    with gzip.open(tmp_path / "b.csv.gz", "wt", encoding="utf-8", newline="") as f:
        f.write("id;city\n2;Paris, France\n3;\n")
    rows, failed, count = read(str(tmp_path / "*.csv*"), delimiter=";")
    assert by_key(rows) == [
        {"id": "1", "city": "Zürich"}, {"id": "2", "city": "Paris, France"}, {"id": "3", "city": ""},
    ]
    assert failed == [] and count == 3


def test_csv_header_only_and_empty_files(tmp_path):
    (tmp_path / "a.csv").write_text("id,name\n")
    (tmp_path / "b.csv").write_text("")
    assert read(str(tmp_path / "*.csv"))[:2] == ([], [])


# -- Avro ---------------------------------------------------------------------------------------

AVRO_SCHEMA = {
    "type": "record", "name": "Event", "fields": [
        {"name": "id", "type": "long"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ts_us", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}},
        {"name": "body", "type": "bytes"},
        {"name": "ratio", "type": ["null", "float", "string"]},
        {"name": "pos", "type": ["null", {"type": "record", "name": "Pos", "fields": [
            {"name": "lat", "type": "double"}, {"name": "raw", "type": ["null", "bytes"]}]}]},
        {"name": "readings", "type": {"type": "array", "items": "Pos"}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
        {"name": "flag", "type": "boolean"},
    ],
}


def avro_record(i: int, **overrides):
    record = {
        "id": i, "ts": dt.datetime(2024, 5, 1, 12, 0, i, 123000, tzinfo=UTC), "ts_us": None,
        "local": dt.datetime(2024, 5, 1, 8, 30), "day": dt.date(2024, 5, 1),
        "price": decimal.Decimal("12.34"), "body": b'{"t": 21.5}', "ratio": None,
        "pos": {"lat": 1.25, "raw": b"\xff\x00"}, "readings": [{"lat": 2.0, "raw": None}],
        "attrs": {"a": 1}, "color": "GREEN", "flag": True,
    }
    record.update(overrides)
    return record


def test_avro_types_become_asa_values(tmp_path):
    with open(tmp_path / "a.avro", "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(AVRO_SCHEMA), [avro_record(1), avro_record(
            2, ts_us=dt.datetime(2024, 1, 1, 0, 0, 0, 7, tzinfo=UTC), ratio="n/a", pos=None)])
    with open(tmp_path / "b.avro", "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(AVRO_SCHEMA), [avro_record(3, ratio=0.5)], codec="deflate")
    rows, failed, count = read(str(tmp_path / "*.avro"), name="avro_in")
    assert failed == [] and count == 3
    rows = by_key(rows)
    assert rows[0] == {
        "id": 1, "ts": dt.datetime(2024, 5, 1, 12, 0, 1, 123000, tzinfo=UTC), "ts_us": None,
        "local": dt.datetime(2024, 5, 1, 8, 30, tzinfo=UTC), "day": dt.datetime(2024, 5, 1, tzinfo=UTC),
        "price": 12.34, "body": '{"t": 21.5}', "ratio": None,
        "pos": {"lat": 1.25, "raw": "/wA="},  # not UTF-8: base64
        "readings": [{"lat": 2.0, "raw": None}], "attrs": {"a": 1}, "color": "GREEN", "flag": True,
    }
    assert rows[1]["ts_us"] == dt.datetime(2024, 1, 1, 0, 0, 0, 7, tzinfo=UTC)
    assert rows[1]["ratio"] == "n/a" and rows[1]["pos"] is None
    assert rows[2]["ratio"] == 0.5
    for row in rows:
        for key in ("ts", "local", "day"):
            assert row[key].utcoffset() == dt.timedelta(0)


def test_avro_without_conversions_and_gzip(tmp_path):
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"}, {"name": "s", "type": ["null", "string"]}]}
    records = [{"id": i, "s": None if i % 2 else f"s{i}"} for i in range(5)]
    with gzip.open(tmp_path / "a.avro.gz", "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schema), records)
    rows, failed, count = read(str(tmp_path / "a.avro.gz"))
    assert by_key(rows) == records and failed == [] and count == 5


def test_avro_damaged_file_is_one_dead_letter(tmp_path):
    schema = {"type": "record", "name": "R", "fields": [{"name": "id", "type": "long"}]}
    with open(tmp_path / "good.avro", "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schema), [{"id": 1}])
    (tmp_path / "bad.avro").write_bytes(b"this is not avro at all")
    rows, failed, count = read(str(tmp_path / "*.avro"), name="av")
    assert rows == [{"id": 1}] and count == 1
    assert [(d.step, d.reason) for d in failed] == [("av", "malformed_avro")]
    assert "bad.avro" in failed[0].message


def test_avro_recursive_named_type(tmp_path):
    schema = {"type": "record", "name": "Node", "fields": [
        {"name": "v", "type": "bytes"}, {"name": "next", "type": ["null", "Node"]}]}
    with open(tmp_path / "a.avro", "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schema), [{"v": b"a", "next": {"v": b"b", "next": None}}])
    rows, failed, _ = read(str(tmp_path / "a.avro"))
    assert rows == [{"v": "a", "next": {"v": "b", "next": None}}] and failed == []


# -- Parquet ------------------------------------------------------------------------------------


def test_parquet_types_become_asa_values(tmp_path):
    table = pa.table({
        "id": pa.array([1, 2], pa.int32()),
        "ts_ns": pa.array([dt.datetime(2024, 1, 1, 10), None], pa.timestamp("ns")),
        "ts_tz": pa.array([dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))] * 2,
                          pa.timestamp("ms", tz="Europe/Paris")),
        "day": pa.array([dt.date(2024, 2, 29), None], pa.date32()),
        "price": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(5, 2)),
        "name": pa.array(["a", None], pa.string()),
        "cat": pa.array(["x", "x"]).dictionary_encode(),
        "blob": pa.array([b"hi", b"\xff"], pa.binary()),
        "pos": pa.array([{"lat": 1.0, "at": dt.datetime(2024, 1, 1)}, None],
                        pa.struct([("lat", pa.float64()), ("at", pa.timestamp("us"))])),
        "tags": pa.array([["a", "b"], []], pa.list_(pa.string())),
        "attrs": pa.array([[("k", 1)], None], pa.map_(pa.string(), pa.int64())),
        "ok": pa.array([True, None]),
    })
    pq.write_table(table, tmp_path / "a.parquet")
    rows, failed, count = read(str(tmp_path / "*.parquet"), name="pq")
    assert failed == [] and count == 2
    rows = by_key(rows)
    assert rows[0] == {
        "id": 1, "ts_ns": dt.datetime(2024, 1, 1, 10, tzinfo=UTC),
        "ts_tz": dt.datetime(2024, 1, 1, 10, tzinfo=UTC), "day": dt.datetime(2024, 2, 29, tzinfo=UTC),
        "price": 1.5, "name": "a", "cat": "x", "blob": "hi",
        "pos": {"lat": 1.0, "at": dt.datetime(2024, 1, 1, tzinfo=UTC)}, "tags": ["a", "b"],
        "attrs": {"k": 1}, "ok": True,
    }
    assert rows[1] == {
        "id": 2, "ts_ns": None, "ts_tz": dt.datetime(2024, 1, 1, 10, tzinfo=UTC), "day": None,
        "price": None, "name": None, "cat": "x", "blob": "/w==", "pos": None, "tags": [], "attrs": None,
        "ok": None,
    }
    assert rows[0]["ts_tz"].tzinfo is UTC


def test_parquet_streams_batches_over_several_files(tmp_path, monkeypatch):
    monkeypatch.setattr(readers_module, "PARQUET_BATCH_ROWS", 7)
    for part in range(3):
        ids = list(range(part * 20, part * 20 + 20))
        pq.write_table(pa.table({"id": ids, "s": [str(i) for i in ids]}), tmp_path / f"p{part}.parquet",
                       row_group_size=8)
    rows, failed, count = read(str(tmp_path / "p*.parquet"), name="many")
    assert by_key(rows) == [{"id": i, "s": str(i)} for i in range(60)]
    assert failed == [] and count == 60


def test_parquet_damaged_file(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    rows, failed, _ = read(str(tmp_path / "bad.parquet"))
    assert rows == [] and [d.reason for d in failed] == ["malformed_parquet"]


def test_two_inputs_in_one_pipeline_and_counters(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"id": 1}) + "\n" + json.dumps({"id": 2}) + "\n")
    (tmp_path / "b.csv").write_text("id\n1\n2\n3\n")
    p = beam.Pipeline(runner="DirectRunner")
    a = p | ReadRows(str(tmp_path / "a.json"), name="first")
    b = p | ReadRows(str(tmp_path / "b.csv"), name="second")
    assert_that(a["rows"], equal_to([{"id": 1}, {"id": 2}]), label="a")
    assert_that(b["rows"], equal_to([{"id": "1"}, {"id": "2"}, {"id": "3"}]), label="b")
    result = p.run()
    result.wait_until_finish()
    assert counter(result, "input.first.rows") == 2
    assert counter(result, "input.second.rows") == 3
