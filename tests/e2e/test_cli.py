"""The asa-beam CLI end to end: every format in and out, check/explain, errors, dead letters."""

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_files import read_output

from pipelines.cli import main
from pipelines.examples.trips import trips, write_trips

ROWS = [{"id": i, "name": f"n{i}", "score": i * 1.5} for i in range(10)]
QUERY = "SELECT id, name, CAST(score AS bigint) AS s INTO result FROM src WHERE id % 2 = 0"
EXPECTED = [{"id": i, "name": f"n{i}", "s": int(i * 1.5)} for i in range(0, 10, 2)]


def write_input(path: Path, fmt: str) -> None:
    if fmt == "json":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, ["id", "name", "score"])
            w.writeheader()
            w.writerows(ROWS)
    elif fmt == "avro":
        schema = {"type": "record", "name": "r", "fields": [
            {"name": "id", "type": "long"}, {"name": "name", "type": "string"}, {"name": "score", "type": "double"}]}
        with path.open("wb") as f:
            fastavro.writer(f, schema, ROWS)
    else:
        pq.write_table(pa.Table.from_pylist(ROWS), path)




def job(tmp_path: Path, query: str, inputs: dict, outputs: dict, extra: str = "") -> Path:
    lines = ["query: |\n  " + query.replace("\n", "\n  "), "inputs:"]
    lines += [f"  {n}: {{path: {p}}}" for n, p in inputs.items()]
    lines += ["outputs:"] + [f"  {n}: {{path: {p}, format: {f}}}" for n, (p, f) in outputs.items()]
    path = tmp_path / "job.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.mark.parametrize("fmt_in", ["json", "csv", "avro", "parquet"])
def test_each_format_in(tmp_path, fmt_in, capsys):
    ext = {"json": "jsonl"}.get(fmt_in, fmt_in)
    write_input(tmp_path / f"in.{ext}", fmt_in)
    j = job(tmp_path, QUERY, {"src": f"in.{ext}"}, {"result": ("out/result", "json")})
    assert main(["run", str(j)]) == 0
    got = read_output(tmp_path / "out" / "result", "json")
    # CSV values arrive as strings (as in ASA); CAST and % still work on them.
    expected = [{**e, "id": str(e["id"])} for e in EXPECTED] if fmt_in == "csv" else EXPECTED
    assert sorted(got, key=lambda r: int(r["id"])) == expected
    assert "written  result: 5 rows" in capsys.readouterr().out


@pytest.mark.parametrize("fmt_out", ["json", "csv", "avro", "parquet"])
def test_each_format_out(tmp_path, fmt_out):
    write_input(tmp_path / "in.jsonl", "json")
    j = job(tmp_path, QUERY, {"src": "in.jsonl"}, {"result": ("out/result", fmt_out)})
    assert main(["run", str(j)]) == 0
    got = read_output(tmp_path / "out" / "result", fmt_out)
    if fmt_out == "csv":
        got = [{"id": int(r["id"]), "name": r["name"], "s": int(r["s"])} for r in got]
    assert sorted(got, key=lambda r: r["id"]) == EXPECTED


def test_overrides_globs_gzip_and_dead_letters_add_up(tmp_path, capsys):
    n = 2000
    write_trips(tmp_path / "a" / "trips-1.jsonl.gz", n, seed=1, dirty=True)
    write_trips(tmp_path / "a" / "trips-2.jsonl.gz", n, seed=2, dirty=True)
    q = "SELECT tripid, CAST(distance AS float) AS d INTO output FROM input WHERE passenger > 1"
    j = job(tmp_path, q, {"input": "nowhere/*.jsonl"}, {"output": ("never/out", "json")})
    out = tmp_path / "o" / "trips"
    assert main(["run", str(j), "--input", f"input={tmp_path / 'a' / 'trips-*.jsonl.gz'}",
                 "--output", f"output={out}"]) == 0
    summary = capsys.readouterr().out
    written = read_output(out, "json")
    dead = read_output(tmp_path / "o" / "dead_letter", "json")
    # Independent expectation from the generator: which lines are malformed, which rows fail CAST.
    malformed = 2 * sum(1 for i in range(n) if i % 97 == 13)
    kept = [r for s in (1, 2) for r in trips(n, s) if r["tripid"] % 97 != 13 and r["passenger"] > 1]
    bad_cast = [r for r in kept if r["tripid"] % 53 == 7]
    assert len(written) == len(kept) - len(bad_cast)
    reasons = sorted(d["reason"] for d in dead)
    assert reasons.count("malformed_json") == malformed
    assert reasons.count("cast_error") == len(bad_cast)
    assert all(d["step"] and d["message"] for d in dead)
    assert all("raw" in d for d in dead if d["reason"] == "malformed_json")
    assert f"cast_error: {len(bad_cast)}" in summary and f"malformed_json: {malformed}" in summary


def test_check_and_explain(tmp_path, capsys):
    write_input(tmp_path / "in.jsonl", "json")
    j = job(tmp_path, "WITH s AS (SELECT id FROM src)\nSELECT id INTO result FROM s", {"src": "in.jsonl"},
            {"result": ("out/r", "json")})
    assert main(["check", str(j)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["explain", str(j)]) == 0
    text = capsys.readouterr().out
    assert "step s: SELECT from src" in text and "Query/s" in text and "WriteRows(json" in text
    assert not (tmp_path / "out").exists()  # check/explain read and write no data


@pytest.mark.parametrize("query, fragment", [
    ("SELECT id,\nFROM src", "line 2, column 1: expected a column or expression, found FROM"),
    ("SELECT id INTO nope FROM src", "line 1, column 16: unknown output 'nope'"),
    ("SELECT udf.f(id) INTO result FROM src", "unknown function 'udf.f'"),
    ("SELECT id INTO result FROM other", "unknown input or step 'other'"),
])
def test_bad_query_fails_before_reading_with_line_and_column(tmp_path, capsys, query, fragment):
    j = job(tmp_path, query, {"src": "missing-file-*.jsonl"}, {"result": ("out/r", "json")})
    for command in ("check", "run"):
        assert main([command, str(j)]) == 2
        err = capsys.readouterr().err
        assert fragment in err and "Traceback" not in err


def test_bad_job_file_is_one_paragraph(tmp_path, capsys):
    j = tmp_path / "job.yaml"
    j.write_text("query: SELECT a FROM i\ninputs: {}\noutputs: {o: {path: x}}\n")
    assert main(["check", str(j)]) == 2
    assert "'inputs' must name at least one input" in capsys.readouterr().err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    j = tmp_path / "job.yaml"
    j.write_text("query: 'SELECT a, FROM i'\ninputs: {i: {path: x.jsonl}}\noutputs: {output: {path: o}}\n")
    exe = Path(sys.executable).with_name("asa-beam")
    proc = subprocess.run([str(exe), "check", str(j)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "line 1, column 11" in proc.stderr and "Traceback" not in proc.stderr


def test_gzip_csv_input(tmp_path):
    with gzip.open(tmp_path / "in.csv.gz", "wt", newline="") as f:
        f.write("id,name,score\n1,\"a, b\",2\n2,c\n3,d,4\n")
    j = job(tmp_path, "SELECT id, name INTO result FROM src", {"src": "in.csv.gz"}, {"result": ("out/r", "json")})
    assert main(["run", str(j)]) == 0
    assert sorted(r["id"] for r in read_output(tmp_path / "out" / "r", "json")) == ["1", "3"]
    dead = read_output(tmp_path / "out" / "dead_letter", "json")
    assert [d["reason"] for d in dead] == ["malformed_csv"] and "2,c" in dead[0]["raw"]


def test_javascript_udf_from_the_job_file(tmp_path):
    """The seed's createArray as a .js file; a throwing row is dead-lettered, the rest flow."""
    (tmp_path / "createArray.js").write_text(
        "function createArray(vendorid, weekday, pickuphour, passenger, distance) {\n"
        "  if (distance < 0) { throw new Error('negative distance'); }\n"
        "  return [vendorid, weekday, pickuphour, passenger, distance];\n}\n")
    rows = [dict(r) for r in trips(50)]
    rows[3]["distance"] = -1.0
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    q = ("WITH ModelInput AS (SELECT tripid, udf.createArray(vendorid, weekday, pickuphour, passenger, distance)"
         " AS inputArray FROM src)\nSELECT tripid, inputArray INTO result FROM ModelInput WHERE inputArray IS NOT NULL")
    extra = "functions:\n  createArray: {type: javascript, script: createArray.js, output_type: array}\n"
    j = job(tmp_path, q, {"src": "in.jsonl"}, {"result": ("out/r", "json")}, extra)
    assert main(["run", str(j)]) == 0
    got = {r["tripid"]: r["inputArray"] for r in read_output(tmp_path / "out" / "r", "json")}
    fields = ("vendorid", "weekday", "pickuphour", "passenger", "distance")
    assert got == {r["tripid"]: [r[f] for f in fields] for r in rows if r["distance"] >= 0}
    (dead,) = read_output(tmp_path / "out" / "dead_letter", "json")
    assert dead["reason"] == "js_error" and "negative distance" in dead["message"] and "line 2" in dead["message"]
    assert dead["step"] == "ModelInput" and dead["row"]["tripid"] == 3


def test_javascript_syntax_error_fails_check_with_line(tmp_path, capsys):
    (tmp_path / "f.js").write_text("function f(x) {\n  return x +;\n}\n")
    extra = "functions:\n  f: {type: javascript, script: f.js}\n"
    j = job(tmp_path, "SELECT udf.f(id) AS y INTO result FROM src", {"src": "in.jsonl"},
            {"result": ("out/r", "json")}, extra)
    assert main(["check", str(j)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "Traceback" not in err


def test_explain_lists_the_transforms_of_time_steps(tmp_path, capsys):
    q = ("WITH S AS (SELECT k, t, a.ArrayValue AS v FROM src i CROSS APPLY GetArrayElements(i.arr) AS a)\n"
         "SELECT k, SUM(v) AS total INTO result FROM S TIMESTAMP BY t GROUP BY k, TumblingWindow(minute, 1)")
    j = job(tmp_path, q, {"src": "in.jsonl"}, {"result": ("out/r", "json")})
    assert main(["explain", str(j)]) == 0
    text = capsys.readouterr().out
    assert "Cross apply a: ParDo(ApplyDoFn)" in text
    assert "Timestamp by: ParDo(AssignTimestampDoFn) -> Group by: GroupAndAggregate(WindowedAggregate tumbling" in text


def test_create_table_types_csv_values_and_dead_letters_what_does_not_convert(tmp_path, capsys):
    # CSV values arrive as text; CREATE TABLE declares their types (learn.microsoft.com/en-us/
    # stream-analytics-query/create-table-stream-analytics); a row that does not convert is dropped
    # by ASA and dead-lettered here, and counted in the summary.
    (tmp_path / "in.csv").write_text("id,name,score\n1,a,1.5\n2,b,oops\n3,c,4\n")
    q = "CREATE TABLE src (id bigint, score float);\nSELECT id, name, score INTO result FROM src"
    j = job(tmp_path, q, {"src": "in.csv"}, {"result": ("out/r", "json")})
    assert main(["run", str(j)]) == 0
    summary = capsys.readouterr().out
    assert sorted(read_output(tmp_path / "out" / "r", "json"), key=lambda r: r["id"]) == [
        {"id": 1, "name": "a", "score": 1.5}, {"id": 3, "name": "c", "score": 4.0}]
    (dead,) = read_output(tmp_path / "out" / "dead_letter", "json")
    assert (dead["step"], dead["reason"], dead["row"]["id"]) == ("CREATE TABLE src", "schema_mismatch", "2")
    assert "column 'score' is declared float" in dead["message"]
    assert "schema_mismatch: 1" in summary
    assert "CREATE TABLE src: 3 -> 2; dead-lettered 1" in summary  # its own row accounting
    bad = job(tmp_path, "CREATE TABLE src (id bigint, score decimal);\nSELECT id INTO result FROM src",
              {"src": "in.csv"}, {"result": ("out/r2", "json")})
    assert main(["check", str(bad)]) == 2
    assert "line 1, column 36: unknown ASA type 'decimal'" in capsys.readouterr().err
