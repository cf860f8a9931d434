"""ASA's blob path patterns (input selection, output partitioning) and blob path names, on local files.

Sources:
- input path pattern, DateFormat, TimeFormat:
  https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-define-inputs
- output {date}/{time}, {field}; "System.Timestamp is the time used for all time based partitioning";
  folders in UTC: https://learn.microsoft.com/en-us/azure/stream-analytics/blob-storage-azure-data-lake-gen2-output
- {datetime:<specifier>} table (example time 2018-01-02T10:06:08):
  https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-custom-path-patterns-blob-storage-output
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib

import apache_beam as beam
import pytest
from apache_beam.io.filesystems import FileSystems
from pipeline_files import read_output

from transforms import AsaQuery
from transforms.io import ReadRows, WriteRows
from transforms.io.paths import OutputPattern, dirname, input_glob, join, normalize_path

UTC = dt.timezone.utc
EXAMPLE = dt.datetime(2018, 1, 2, 10, 6, 8, tzinfo=UTC)  # the example time of ASA's specifier table


@pytest.mark.parametrize("spec, expected", [
    ("yyyy", "2018"), ("MM", "01"), ("M", "1"), ("dd", "02"), ("d", "2"), ("HH", "10"),
    ("H", "10"), ("mm", "06"), ("m", "6"), ("ss", "08"), ("s", "8"),
])
def test_datetime_specifiers_as_in_asas_table(spec, expected):
    assert OutputPattern(f"{{datetime:{spec}}}").resolve({}, EXAMPLE) == expected


@pytest.mark.parametrize("date_format, expected", [
    ("YYYY/MM/DD", "2018/01/02"), ("MM/DD/YYYY", "01/02/2018"), ("DD/MM/YYYY", "02/01/2018"),
    ("YYYY-MM-DD", "2018-01-02"), ("MM-DD-YYYY", "01-02-2018"), ("DD-MM-YYYY", "02-01-2018"),
    ("yyyy/MM/dd", "2018/01/02"),  # the ARM template spelling
    (None, "2018/01/02"),  # ASA's default
])
def test_date_formats(date_format, expected):
    assert OutputPattern("{date}/{time}", date_format, "HH").resolve({}, EXAMPLE) == f"{expected}/10"


def test_hive_style_pattern_and_utc():
    p = OutputPattern("cluster1/year={datetime:yyyy}/month={datetime:MM}/day={datetime:dd}")
    plus_two = EXAMPLE.astimezone(dt.timezone(dt.timedelta(hours=2)))  # same instant, other zone
    assert p.resolve({}, plus_two) == "cluster1/year=2018/month=01/day=02"


def test_field_partition_is_case_insensitive_and_stays_inside_the_folder():
    p = OutputPattern("cluster1/{client_id}/{date}/{time}/out")
    assert p.fields == ("client_id",)
    assert p.resolve({"CLIENT_ID": "06000000"}, EXAMPLE) == "cluster1/06000000/2018/01/02/10/out"
    # ASA: a "/" in the value makes a hierarchy; ".." can never climb out of the output folder.
    assert p.resolve({"client_id": "a/b"}, EXAMPLE) == "cluster1/a/b/2018/01/02/10/out"
    assert p.resolve({"client_id": "../../etc"}, EXAMPLE) == "cluster1/etc/2018/01/02/10/out"
    assert p.resolve({"client_id": None}, EXAMPLE) == "cluster1/null/2018/01/02/10/out"
    assert p.resolve({"client_id": 7}, EXAMPLE) == "cluster1/7/2018/01/02/10/out"


@pytest.mark.parametrize("bad", ["{datetime:yy}", "{datetime:MM/dd}", "{a+b}"])
def test_bad_output_tokens_are_errors(bad):
    with pytest.raises(ValueError, match="path pattern"):
        OutputPattern(f"out/{bad}/x")


def test_bad_formats_are_errors():
    with pytest.raises(ValueError, match="date_format 'YY/MM'"):
        OutputPattern("{date}", "YY/MM")
    with pytest.raises(ValueError, match="time_format"):
        OutputPattern("{time}", None, "mm")


def test_input_glob():
    assert input_glob("azfs://acct/c/logs/{date}/{time}/*.json") == (
        "azfs://acct/c/logs/[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/[0-9][0-9]/*.json")
    assert input_glob("in/{partition}/{date}", "DD-MM-YYYY") == (
        "in/*/[0-9][0-9]-[0-9][0-9]-[0-9][0-9][0-9][0-9]/**")
    with pytest.raises(ValueError, match="not {client_id}"):
        input_glob("in/{client_id}/*.json")


def test_input_pattern_selects_the_dated_files(tmp_path):
    for rel in ["logs/2026/01/02/10/a.json", "logs/2026/01/02/11/b.json", "logs/misc/c.json",
                "logs/2026/01/x/10/d.json"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"f": rel}) + "\n")
    glob = input_glob(str(tmp_path / "logs/{date}/{time}/*.json"))
    names = sorted(pathlib.Path(m.path).name for m in FileSystems.match([glob])[0].metadata_list)
    assert names == ["a.json", "b.json"]


def test_blob_names():
    assert normalize_path("abfs://c1@acct.dfs.core.windows.net/a/b.csv") == "azfs://acct/c1/a/b.csv"
    assert normalize_path("https://acct.dfs.core.windows.net/c1/a") == "azfs://acct/c1/a"
    assert normalize_path("azfs://acct/c1/a") == "azfs://acct/c1/a"
    assert dirname("azfs://acct/c1/out/scored") == "azfs://acct/c1/out"
    assert join("azfs://acct/c1/out", "dead_letter") == "azfs://acct/c1/out/dead_letter"
    assert dirname("out/scored") == "out" and dirname("scored") == "."


def _files(root: pathlib.Path) -> dict[str, list[dict]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = [json.loads(x) for x in path.read_text().splitlines()]
    return out


def _stamped(path: pathlib.Path, rows: list[dict], when: dt.datetime) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(path, (when.timestamp(), when.timestamp()))


def test_outputs_land_in_the_folders_of_their_system_timestamp(tmp_path):
    # Arrival time = each file's last-modified time, so the rows' System.Timestamp() is known.
    t = dt.datetime(2026, 3, 4, 5, 0, 1, tzinfo=UTC)
    _stamped(tmp_path / "a.json", [{"id": 1, "c": "x"}, {"id": 2, "c": "y"}], t)
    _stamped(tmp_path / "b.json", [{"id": 3, "c": "x"}], t + dt.timedelta(minutes=90))
    out_dir = tmp_path / "out"
    with beam.Pipeline(runner="DirectRunner") as p:
        rows = p | ReadRows(str(tmp_path / "*.json"), name="input")
        out = {"input": rows["rows"]} | AsaQuery("SELECT id, c INTO output FROM input")
        _ = out["output"] | WriteRows(str(out_dir / "{c}/{date}/{time}/scored"), "json", date_format="YYYY-MM-DD")
    assert _files(out_dir) == {
        "x/2026-03-04/05/scored-00000-of-00001.json": [{"id": 1, "c": "x"}],
        "y/2026-03-04/05/scored-00000-of-00001.json": [{"id": 2, "c": "y"}],
        "x/2026-03-04/06/scored-00000-of-00001.json": [{"id": 3, "c": "x"}],
    }


def test_window_results_are_partitioned_by_window_end(tmp_path):
    t = dt.datetime(2026, 3, 4, 5, 59, 50, tzinfo=UTC)
    _stamped(tmp_path / "a.json", [{"id": 1}, {"id": 2}], t)  # in the window (05:59:40, 05:59:50]
    _stamped(tmp_path / "b.json", [{"id": 3}], t + dt.timedelta(seconds=15))  # in (06:00:00, 06:00:10]
    out_dir = tmp_path / "out"
    with beam.Pipeline(runner="DirectRunner") as p:
        rows = p | ReadRows(str(tmp_path / "*.json"), name="input")
        out = {"input": rows["rows"]} | AsaQuery(
            "SELECT COUNT(*) AS n INTO output FROM input GROUP BY TumblingWindow(second, 10)")
        _ = out["output"] | WriteRows(str(out_dir / "{datetime:HH}/{datetime:mm}/{datetime:ss}/n.json"))
    # (start, end]: an event at exactly 05:59:50 belongs to the window ending at 05:59:50.
    assert _files(out_dir) == {
        "05/59/50/n-00000-of-00001.json": [{"n": 2}],
        "06/00/10/n-00000-of-00001.json": [{"n": 1}],
    }


@pytest.mark.parametrize("fmt", ["csv", "avro", "parquet"])
def test_partitioned_output_in_other_formats_reads_back(tmp_path, fmt):
    _stamped(tmp_path / "a.json", [{"id": 1, "k": "p"}, {"id": 2, "k": "q"}], dt.datetime(2026, 1, 1, tzinfo=UTC))
    out_dir = tmp_path / "out"
    with beam.Pipeline(runner="DirectRunner") as p:
        rows = p | ReadRows(str(tmp_path / "*.json"), name="input")
        _ = rows["rows"] | WriteRows(str(out_dir / "{k}/rows"), fmt)
    assert sorted(str(f.relative_to(out_dir)) for f in out_dir.rglob("*") if f.is_file()) == [
        f"p/rows-00000-of-00001.{fmt}", f"q/rows-00000-of-00001.{fmt}"]
    assert read_output(out_dir / "q" / "rows", fmt) == [{"id": "2" if fmt == "csv" else 2, "k": "q"}]


def test_redact_removes_keys_sas_tokens_and_their_signatures(monkeypatch):
    from transforms.io import blob

    key = "c2VjcmV0S2V5c2VjcmV0S2V5c2VjcmV0S2V5=="
    sas = "sv=2023-01-03&sp=rl&sig=ab%2Bcd%3D"
    monkeypatch.setenv(blob.CONNECTION_STRING, f"AccountName=acct;AccountKey={key};BlobEndpoint=http://x;")
    monkeypatch.setenv(blob.SAS_TOKEN, sas)
    text = blob.redact(f"failed with key {key} or ?{sas} (signature ab+cd=)")
    assert key not in text and "ab%2Bcd%3D" not in text and "ab+cd=" not in text
    assert text.startswith("failed with key *** or ?***")


def test_account_credentials_build_a_connection_string(monkeypatch):
    from transforms.io import blob

    monkeypatch.setenv(blob.CONNECTION_STRING, "")
    monkeypatch.setenv(blob.ACCOUNT, "acct")
    monkeypatch.setenv(blob.KEY, "a2V5")
    monkeypatch.delenv(blob.BLOB_ENDPOINT, raising=False)
    blob.use_environment_credentials()
    assert os.environ[blob.CONNECTION_STRING] == (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;"
        "BlobEndpoint=https://acct.blob.core.windows.net;")


def test_a_blob_path_of_another_account_than_the_credentials_is_an_error(monkeypatch):
    from transforms.io import blob

    monkeypatch.setenv(blob.CONNECTION_STRING, "AccountName=acct;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9;")
    with pytest.raises(blob.BlobAccessError, match="account 'other' but the credentials are for 'acct'"):
        blob.check_access("azfs://other/c1/in/*.json", "input 'x'", must_match=True)
