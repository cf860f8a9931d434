"""Hostile input never stops a job (issue 12): every record of every format ends as a row or a
dead letter with a reason, and every output is valid JSON (the project's non-finite rule).

Seeded fuzz tests (hypothesis, ``derandomize=True``: the same examples every run, seconds)
drive each reader's per-file code directly; a few real Beam pipelines then check the same
through ``ReadRows``/``WriteRows``/``WriteDeadLetters``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import random
import tempfile

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.fileio import ReadableFile
from apache_beam.io.filesystem import FileMetadata
from apache_beam.pvalue import TaggedOutput
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_jsoncodec import reference_parse, strict_loads

from transforms.deadletter import DeadLetter
from transforms.io import ReadRows, WriteDeadLetters, WriteRows, readers
from transforms.io.writers import _EncodeJson

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DEEP = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
HOSTILE_JSON_LINES = [
    DEEP, b"[" * 100_000, b'{"a": ' + b"{\"b\": " * 5000 + b"1" + b"}" * 5000 + b"}",
    b'{"n": NaN, "i": Infinity, "m": -Infinity}', b'{"e": 1e999, "t": -1e999}',
    b'{"big": 123456789012345678901234567890123}', b'{"huge": ' + b"9" * 5000 + b"}",
    b'\xef\xbb\xbf{"bom": 1}', b'{"nul": "a\x00b"}', b'\x00\x00', b'{"esc": "\\u0000"}',
    b'{"bad": "\xff\xfe"}', b'{"lone": "\\udc00"}', b"not json", b"[1]", b'"s"', b"",
]
good_rows = st.fixed_dictionaries({"id": st.integers(0, 10**6), "v": st.floats(allow_nan=False, allow_infinity=False)})
json_lines = st.lists(
    st.one_of(
        good_rows.map(lambda r: json.dumps(r).encode()),
        st.sampled_from(HOSTILE_JSON_LINES),
        st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b),
    ),
    min_size=1, max_size=25,
)


def _outcomes(outputs) -> list:
    got = []
    for out in outputs:
        if isinstance(out, TaggedOutput):
            d = out.value
            assert isinstance(d, DeadLetter) and d.reason == "malformed_json" and d.step == "in"
            got.append(("bad", d.message))
        else:
            assert type(out) is dict
            got.append(("row", repr(out)))
    return got


def _write(data: bytes, suffix: str = ".json") -> str:
    fd, path = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(gzip.compress(data) if suffix.endswith(".gz") else data)
    return path


@FUZZ
@given(json_lines, st.integers(1, 12), st.booleans())
def test_batch_json_reader_fuzz(lines, parts, gz):
    """Each line → its reference outcome, in order, however the file is cut into ranges."""
    expected = [o for o in map(reference_parse, lines) if o[0] != "blank"]
    path = _write(b"\n".join(lines) + b"\n", ".json.gz" if gz else ".json")
    try:
        metadata = FileMetadata(path, os.path.getsize(path))
        split = max(1, metadata.size_in_bytes // parts)  # cuts anywhere, even inside a line
        old, readers.JSON_SPLIT_BYTES = readers.JSON_SPLIT_BYTES, split
        try:
            ranges = list(readers._json_ranges(metadata))
        finally:
            readers.JSON_SPLIT_BYTES = old
        fn = readers._ParseJsonRange("in")
        got = _outcomes(out for r in ranges for out in fn.process(r))
    finally:
        os.remove(path)
    assert got == expected


@FUZZ
@given(json_lines, st.booleans())
def test_streaming_json_reader_fuzz(lines, crlf):
    """The whole-file reader (streaming and watched reads) gives the same outcomes."""
    expected = [o for o in map(reference_parse, lines) if o[0] != "blank"]
    path = _write((b"\r\n" if crlf else b"\n").join(lines))
    try:
        got = _outcomes(readers._ReadJsonFile("in").process(ReadableFile(FileMetadata(path, os.path.getsize(path)))))
    finally:
        os.remove(path)
    assert got == expected


row_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
    st.dictionaries(st.text(max_size=3), st.floats(allow_nan=True, allow_infinity=True), max_size=3),
)


@FUZZ
@given(st.dictionaries(st.text(max_size=6), row_values, max_size=6))
def test_json_writer_never_writes_invalid_json(row):
    """NaN/±Infinity are written as null: every line parses with a strict parser."""
    fn = _EncodeJson(None)
    fn.setup()
    (line,) = fn.process(row)
    value = strict_loads(line if isinstance(line, bytes) else line.encode("utf-8"))
    assert list(value) == list(row)


# -- CSV ----------------------------------------------------------------------------------------

csv_cells = st.one_of(
    st.text(max_size=15),
    st.sampled_from(["\x00", "a\x00b", "\ufeff", "NaN", "Infinity", "1e999", "é😀", '"', "a,b", "x\ny", "\r"]),
    st.just("y" * 200_000),  # beyond the csv module's default field limit (131,072)
)


def _run_file_reader(reader, path):
    return list(reader.process(ReadableFile(FileMetadata(path, os.path.getsize(path)))))


@FUZZ
@given(st.lists(st.lists(csv_cells, min_size=2, max_size=2), min_size=1, max_size=8), st.booleans(), st.booleans())
def test_csv_reader_fuzz(records, bom, gz):
    """Well-formed records with hostile contents: each record is one row or one dead letter, in order."""
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\r\n")
    w.writerow(["a", "b"])
    w.writerows(records)
    data = ("\ufeff" if bom else "") + text.getvalue()
    path = _write(data.encode("utf-8"), ".csv.gz" if gz else ".csv")
    try:
        outs = _run_file_reader(readers._ReadCsvFile("in", ","), path)
    finally:
        os.remove(path)
    rows = [o for o in outs if isinstance(o, dict)]
    dead = [o.value for o in outs if isinstance(o, TaggedOutput)]
    assert all(d.reason == "malformed_csv" and d.message for d in dead)
    expected = [{"a": a, "b": b} for a, b in records if len(a) < 131_072 and len(b) < 131_072]
    assert rows == expected
    assert len(rows) + len(dead) == len(records)


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_csv_reader_random_bytes(data, gz):
    path = _write(data, ".csv.gz" if gz else ".csv")
    try:
        outs = _run_file_reader(readers._ReadCsvFile("in", ","), path)
    finally:
        os.remove(path)
    for o in outs:
        assert isinstance(o, dict) or (isinstance(o, TaggedOutput) and o.value.reason == "malformed_csv")


# -- Avro and Parquet ---------------------------------------------------------------------------

AVRO_SCHEMA = {"type": "record", "name": "r", "fields": [
    {"name": "s", "type": ["null", "string"]}, {"name": "d", "type": ["null", "double"]},
    {"name": "l", "type": ["null", "long"]}, {"name": "a", "type": {"type": "array", "items": "double"}},
]}
binary_rows = st.lists(st.fixed_dictionaries({
    "s": st.one_of(st.none(), st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
                   st.sampled_from(["a\x00b", "\ufeff", "x" * 100_000])),
    "d": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    "l": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    "a": st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
}), min_size=1, max_size=20)


def _same(got, want) -> bool:
    want = [{k: r[k] for k in ("s", "d", "l", "a")} for r in want]  # the schema's field order
    return repr(got) == repr(want)  # NaN == NaN by repr


def _check_reader_on_good_and_damaged(make_reader, blob: bytes, suffix: str, rows, reason: str, data) -> None:
    """The reader gives back ``rows`` from ``blob``; from a truncated or bit-flipped copy it gives
    rows or dead letters with ``reason``, and never raises."""
    good = _write(blob, suffix)
    try:
        assert _same(_run_file_reader(make_reader(), good), rows)
    finally:
        os.remove(good)
    damaged = bytearray(blob)
    cut = data.draw(st.integers(0, len(damaged)))
    if data.draw(st.booleans()):
        damaged = damaged[:cut]
    elif cut < len(damaged):
        damaged[cut] ^= 0xFF
    path = _write(bytes(damaged), suffix)
    try:
        outs = _run_file_reader(make_reader(), path)
    finally:
        os.remove(path)
    for o in outs:
        assert type(o) is dict or (isinstance(o, TaggedOutput) and o.value.reason == reason)


@FUZZ
@given(binary_rows, st.data())
def test_avro_reader_fuzz(rows, data):
    buf = io.BytesIO()
    fastavro.writer(buf, AVRO_SCHEMA, rows, codec=data.draw(st.sampled_from(["null", "deflate"])))
    _check_reader_on_good_and_damaged(lambda: readers._ReadAvroFile("in"), buf.getvalue(), ".avro", rows,
                                      "malformed_avro", data)


@FUZZ
@given(binary_rows, st.data())
def test_parquet_reader_fuzz(rows, data):
    buf = io.BytesIO()
    schema = pa.schema([("s", pa.string()), ("d", pa.float64()), ("l", pa.int64()), ("a", pa.list_(pa.float64()))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    _check_reader_on_good_and_damaged(lambda: readers._ReadParquetFile("in"), buf.getvalue(), ".parquet", rows,
                                      "malformed_parquet", data)


# -- Through real pipelines ---------------------------------------------------------------------


def _pipeline(glob: str, fmt: str, out_dir: str, out_fmt: str = "json"):
    with beam.Pipeline(runner="DirectRunner") as p:
        read = p | ReadRows(glob, fmt, name="in")
        # Reshuffle: rows must cross a Beam coder (as before GROUP BY), so their values must be encodable.
        _ = read["rows"] | beam.Reshuffle() | WriteRows(
            os.path.join(out_dir, "rows"), out_fmt, name="rows", num_shards=1)
        _ = read["failed"] | WriteDeadLetters(os.path.join(out_dir, "dead"), num_shards=1)


def _lines(path: str) -> list[bytes]:
    data = open(path, "rb").read()
    assert data == b"" or data.endswith(b"\n"), "an output file must end with a newline"
    return data.splitlines()


@pytest.mark.parametrize("gz", [False, True])
def test_json_job_with_every_hostile_line(tmp_path, gz):
    """A 100,000-deep line, NaN, 1e999, a 10 MB string, NUL, bad UTF-8, BOM, a lone surrogate:
    the job ends, good rows are written, every other line is a dead letter, all output is JSON."""
    big = b'{"id": 99, "s": "' + b"x" * (10 << 20) + b'"}'
    lines = [b'\xef\xbb\xbf{"id": 0}', DEEP, b'{"id": 1, "n": NaN, "i": -Infinity, "e": 1e999}', big,
             b'{"id": 2, "s": "a\x00b"}', b'{"id": 3, "bad": "\xff"}',
             b'{"id": 4, "big": 123456789012345678901234567890}',
             b"\x00", b'{"id": 5}', b'{"id": 6, "lone": "\\ud800"}']
    path = tmp_path / ("in.json.gz" if gz else "in.json")
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)
    _pipeline(str(path), "json", str(tmp_path / "out"))
    rows = [strict_loads(x) for x in _lines(str(tmp_path / "out" / "rows-00000-of-00001.json"))]
    dead = [strict_loads(x) for x in _lines(str(tmp_path / "out" / "dead-00000-of-00001.json"))]
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == [0, 1, 4, 5, 6, 99]
    assert by_id[6]["lone"] == "\ufffd"  # UTF-8 cannot hold a lone surrogate
    assert by_id[1] == {"id": 1, "n": None, "i": None, "e": None}  # read as floats, written as null
    assert by_id[4]["big"] == 123456789012345678901234567890
    assert len(by_id[99]["s"]) == 10 << 20
    assert len(dead) == 4 and {d["reason"] for d in dead} == {"malformed_json"}
    messages = sorted(d["message"] for d in dead)
    assert any("nested deeper than 64" in m for m in messages)
    assert any("not valid UTF-8" in m for m in messages)
    assert sum("Invalid control character" in m for m in messages) == 1
    assert sum("Expecting value" in m for m in messages) == 1


def test_non_finite_floats_per_output_format(tmp_path):
    """JSON: null; CSV: an empty cell; Avro and Parquet keep them (their double type holds them)."""
    src = tmp_path / "in.json"
    src.write_text('{"id": 1, "n": NaN, "p": Infinity, "m": -1e999, "rec": {"x": NaN}}\n')
    for fmt in ("json", "csv", "avro", "parquet"):
        _pipeline(str(src), "json", str(tmp_path / fmt), fmt)
    (line,) = _lines(str(tmp_path / "json" / "rows-00000-of-00001.json"))
    assert strict_loads(line) == {"id": 1, "n": None, "p": None, "m": None, "rec": {"x": None}}
    text = (tmp_path / "csv" / "rows-00000-of-00001.csv").read_bytes().decode()
    assert text == 'id,n,p,m,rec\r\n1,,,,"{""x"":null}"\r\n'
    with open(tmp_path / "avro" / "rows-00000-of-00001.avro", "rb") as f:
        (rec,) = list(fastavro.reader(f))
    assert math.isnan(rec["n"]) and rec["p"] == math.inf and rec["m"] == -math.inf and math.isnan(rec["rec"]["x"])
    (prow,) = pq.read_table(tmp_path / "parquet" / "rows-00000-of-00001.parquet").to_pylist()
    assert math.isnan(prow["n"]) and prow["p"] == math.inf and prow["m"] == -math.inf


def test_dead_letters_are_valid_json(tmp_path):
    """A dead letter carrying a row with NaN and a datetime is still strict JSON, UTF-8 unescaped."""
    import datetime as dt
    d = DeadLetter("s", "cast_error", "m", row={"n": float("nan"), "t": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
                                               "é": "😀"})
    with beam.Pipeline(runner="DirectRunner") as p:
        _ = p | beam.Create([d]) | WriteDeadLetters(str(tmp_path / "dead"), num_shards=1)
    (line,) = _lines(str(tmp_path / "dead-00000-of-00001.json"))
    assert strict_loads(line)["row"] == {"n": None, "t": "2024-01-01T00:00:00.0000000Z", "é": "😀"}


def test_random_cut_ranges_read_every_line_once(tmp_path):
    """A file of 3,000 lines of random lengths, cut in ranges of random sizes: each line once."""
    rnd = random.Random(5)
    lines = [json.dumps({"id": i, "pad": "p" * rnd.randrange(0, 300)}).encode() for i in range(3000)]
    path = tmp_path / "f.json"
    path.write_bytes(b"\n".join(lines))  # no final newline
    metadata = FileMetadata(str(path), path.stat().st_size)
    for split in (1, 7, 1000, 4096, 1 << 20):
        readers.JSON_SPLIT_BYTES, old = split, readers.JSON_SPLIT_BYTES
        try:
            ranges = list(readers._json_ranges(metadata))
        finally:
            readers.JSON_SPLIT_BYTES = old
        fn = readers._ParseJsonRange("in")
        ids = [r["id"] for rg in ranges for r in fn.process(rg)]
        assert ids == list(range(3000)), split
