"""Blob storage end to end against Azurite, Microsoft's storage emulator (a real blob service).

Azurite is installed by ``make azurite`` (npm, pinned in ``.azurite/package.json``) and started
by tests/fixtures_azurite.py on a free loopback port with its own temporary storage, and always
stopped. The tests are skipped only when Node.js/npm are not installed.

The blobs are put and read back with Microsoft's own SDK (``azure-storage-blob``), independent
of the Beam filesystem under test. ASA's rules encoded here:
- arrival time of a blob = its last-modified time, shared by its events; input path pattern
  {date}/{time}: https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-define-inputs
- output {date}/{time} folders from System.Timestamp(), in UTC:
  https://learn.microsoft.com/en-us/azure/stream-analytics/blob-storage-azure-data-lake-gen2-output
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms import AsaQuery
from transforms.io import ReadRows, WriteDeadLetters, WriteRows
from transforms.io import blob as blob_module

pytest_plugins = ["fixtures_azurite"]
from fixtures_azurite import ACCOUNT, KEY, REPO, UTC, WRONG_KEY, _env, get_rows, put  # noqa: E402


def encode(rows: list[dict], fmt: str) -> bytes:
    if fmt == "json":
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt == "csv":
        text = io.StringIO()
        w = csv.DictWriter(text, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        return text.getvalue().encode()
    if fmt == "avro":
        out = io.BytesIO()
        fastavro.writer(out, {"type": "record", "name": "r", "fields": [
            {"name": "id", "type": "long"}, {"name": "name", "type": "string"}]}, rows)
        return out.getvalue()
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def iso(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize("fmt", ["json", "csv", "avro", "parquet"])
def test_read_and_write_each_format_with_blob_arrival_time(blobs, fmt):
    rows = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    modified = put(blobs, f"in/part-1.{fmt}", encode(rows, fmt))
    base = f"azfs://{ACCOUNT}/{blobs.container_name}"
    with beam.Pipeline(runner="DirectRunner") as p:
        read = p | ReadRows(f"{base}/in/*.{fmt}", name="input")
        out = {"input": read["rows"]} | AsaQuery(
            "SELECT CAST(id AS bigint) AS id, name, System.Timestamp() AS arrived INTO output FROM input")
        _ = out["output"] | WriteRows(f"{base}/out/rows", fmt, num_shards=1)
    got = get_rows(blobs, "out/rows", fmt)
    for r in got:  # written datetimes: ISO text (json, csv) or datetimes (avro, parquet)
        r["arrived"] = r["arrived"] if isinstance(r["arrived"], str) else iso(r["arrived"])
    # The arrival time is the blob's Last-Modified as the blob service reports it.
    expected = [{"id": 1 if fmt != "csv" else "1", "name": "a"}, {"id": 2 if fmt != "csv" else "2", "name": "b"}]
    assert sorted(({k: r[k] for k in ("id", "name")} for r in got), key=lambda r: str(r["id"])) == expected
    assert {dt.datetime.fromisoformat(r["arrived"].replace("Z", "+00:00")) for r in got} == {modified}


def test_globs_and_gzip_as_for_local_files(blobs):
    put(blobs, "in/a.json.gz", gzip.compress(b'{"id": 1}\n{"id": 2}\n'))
    put(blobs, "in/b.json", b'{"id": 3}\n')
    put(blobs, "in/sub/c.json", b'{"id": 4}\n')  # * does not cross folders
    put(blobs, "other/d.json", b'{"id": 5}\n')
    base = f"azfs://{ACCOUNT}/{blobs.container_name}"
    with beam.Pipeline(runner="DirectRunner") as p:
        read = p | ReadRows(f"{base}/in/*.json*", "json", name="input")
        _ = read["rows"] | WriteRows(f"{base}/out/rows.json.gz", num_shards=1)
    assert sorted(r["id"] for r in get_rows(blobs, "out/", "json")) == [1, 2, 3]
    assert [b.name for b in blobs.list_blobs(name_starts_with="out/")] == ["out/rows-00000-of-00001.json.gz"]


def test_dead_letters_to_a_blob(blobs):
    put(blobs, "in/a.json", b'{"id": 1}\nnot json\n')
    base = f"azfs://{ACCOUNT}/{blobs.container_name}"
    with beam.Pipeline(runner="DirectRunner") as p:
        read = p | ReadRows(f"{base}/in/*.json", name="events")
        _ = read["failed"] | WriteDeadLetters(f"{base}/failed/{{reason}}/dl", num_shards=1)
    [name] = [b.name for b in blobs.list_blobs(name_starts_with="failed/")]
    assert name.startswith("failed/malformed_json/dl-")
    [dead] = get_rows(blobs, "failed/", "json")
    assert (dead["step"], dead["reason"], dead["raw"]) == ("events", "malformed_json", "not json")


def write_job(tmp_path: Path, text: str) -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(text)
    return job


def run_cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


def test_job_with_reference_data_path_patterns_and_dead_letters_in_blobs(blobs, azurite, tmp_path):
    c = blobs.container_name
    # Stream blobs under {date}/{time} folders (YYYY-MM-DD / HH); one outside the pattern is not read.
    t1 = put(blobs, "logs/2026-01-02/10/a.json", b'{"id": 1, "zone": 7, "fare": 10}\n{"id": 2, "zone": 9, "fare": 3}\n')
    t2 = put(blobs, "logs/2026-01-02/11/b.json", b'{"id": 3, "zone": 7, "fare": 4}\nbroken\n')
    put(blobs, "logs/misc/c.json", b'{"id": 99, "zone": 7, "fare": 1}\n')
    put(blobs, "ref/zones.csv", b"zone,borough\n7,Queens\n9,Bronx\n")
    job = write_job(tmp_path, f"""
query: |
  SELECT t.id, z.borough, t.fare INTO scored
  FROM trips t JOIN zones z ON t.zone = z.zone
inputs:
  trips: {{path: "azfs://{ACCOUNT}/{c}/logs/{{date}}/{{time}}/*.json", date_format: YYYY-MM-DD, time_format: HH}}
  zones: {{path: "azfs://{ACCOUNT}/{c}/ref/zones.csv", reference: true}}
outputs:
  scored: {{path: "azfs://{ACCOUNT}/{c}/out/{{date}}/{{time}}/scored", format: json}}
""")
    done = run_cli("run", str(job), env=_env(azurite))
    assert done.returncode == 0, done.stderr
    # Output folders: each row's System.Timestamp() = its blob's Last-Modified, in UTC.
    names = sorted(b.name for b in blobs.list_blobs(name_starts_with="out/"))
    folders = {t1.strftime("out/%Y/%m/%d/%H/"), t2.strftime("out/%Y/%m/%d/%H/")}
    assert {n.rsplit("/", 1)[0] + "/" for n in names if "dead_letter" not in n} == folders
    rows = get_rows(blobs, "out/", "json")
    scored = sorted((r for r in rows if "borough" in r), key=lambda r: r["id"])
    assert scored == [{"id": 1, "borough": "Queens", "fare": 10}, {"id": 2, "borough": "Bronx", "fare": 3},
                      {"id": 3, "borough": "Queens", "fare": 4}]
    # The default dead letter output sits beside the outputs, above the pattern: out/dead_letter-*.
    dead = get_rows(blobs, "out/dead_letter", "json")
    assert [(d["reason"], d["raw"]) for d in dead] == [("malformed_json", "broken")]
    assert "read     trips: 3 rows" in done.stdout


def test_a_wrong_key_is_a_clear_error_that_never_shows_the_key(blobs, azurite, tmp_path):
    c = blobs.container_name
    put(blobs, "in/a.json", b'{"id": 1}\n')
    job = write_job(tmp_path, f"""
query: SELECT * INTO out FROM input
inputs:
  input: {{path: "azfs://{ACCOUNT}/{c}/in/*.json"}}
outputs:
  out: {{path: "azfs://{ACCOUNT}/{c}/out/rows"}}
""")
    done = run_cli("run", str(job), "--verbose", env=_env(azurite, WRONG_KEY))  # third-party logs shown too
    assert done.returncode == 2, done.stderr
    assert "authentication failed" in done.stderr and f"azfs://{ACCOUNT}/{c}/in/*.json" in done.stderr
    assert "Traceback" not in done.stderr
    for secret in (WRONG_KEY, WRONG_KEY[:20], KEY):
        assert secret not in done.stderr + done.stdout
    # The same with the whole connection string in the environment (account key inside).
    conn = f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={WRONG_KEY};BlobEndpoint={azurite};"
    done = run_cli("run", str(job), env={blob_module.CONNECTION_STRING: conn})
    assert done.returncode == 2 and "authentication failed" in done.stderr
    assert WRONG_KEY not in done.stderr + done.stdout and WRONG_KEY[:20] not in done.stderr


def test_missing_container_and_missing_credentials_are_clear_errors(blobs, azurite, tmp_path):
    job = write_job(tmp_path, f"""
query: SELECT * INTO out FROM input
inputs:
  input: {{path: "azfs://{ACCOUNT}/{blobs.container_name}/in/*.json", format: json}}
outputs:
  out: {{path: "azfs://{ACCOUNT}/nosuchcontainer/out/rows"}}
""")
    put(blobs, "in/a.json", b'{"id": 1}\n')
    done = run_cli("run", str(job), env=_env(azurite))
    assert done.returncode == 2
    assert "output 'out'" in done.stderr and "the container 'nosuchcontainer' does not exist" in done.stderr
    env = {name: "" for name in _env(azurite)}
    done = run_cli("run", str(job), env=env)
    assert done.returncode == 2 and "no credentials" in done.stderr and "AZURE_STORAGE_KEY" in done.stderr


def test_streaming_watches_a_container_prefix_for_new_blobs(blobs, azurite, tmp_path):
    c = blobs.container_name
    put(blobs, "incoming/000.json", b'{"id": 0}\n')  # already there: read first
    job = write_job(tmp_path, f"""
query: SELECT id INTO out FROM input
inputs:
  input: {{path: "azfs://{ACCOUNT}/{c}/incoming/*.json"}}
outputs:
  out: {{path: "azfs://{ACCOUNT}/{c}/out/rows"}}
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", str(job), "--streaming", "--poll-interval", "0.3",
         "--stop-after-idle", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **_env(azurite)}, cwd=REPO)
    try:
        for line in proc.stderr:
            if "asa-beam: streaming: watching" in line:
                break
        else:
            raise AssertionError(f"the job did not start: {proc.communicate()}")
        stderr_rest = []
        reader = threading.Thread(target=lambda: stderr_rest.extend(proc.stderr), daemon=True)
        reader.start()
        for i in (1, 2):  # new blobs while the job runs
            time.sleep(1.0)
            put(blobs, f"incoming/{i:03d}.json", json.dumps({"id": i}).encode() + b"\n")
        stdout = proc.stdout.read()
        assert proc.wait(timeout=120) == 0, "".join(stderr_rest)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sorted(r["id"] for r in get_rows(blobs, "out/", "json")) == [0, 1, 2]
    assert "read     input: 3 rows" in stdout


def test_a_sas_token_from_the_environment_reads_and_writes(blobs, azurite, tmp_path):
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    c = blobs.container_name
    put(blobs, "in/a.csv", b"id,name\n1,a\n")
    sas = generate_container_sas(ACCOUNT, c, account_key=KEY, permission=ContainerSasPermissions(
        read=True, write=True, delete=True, list=True, add=True, create=True),
        expiry=dt.datetime.now(UTC) + dt.timedelta(hours=1))
    job = write_job(tmp_path, f"""
query: SELECT name INTO out FROM input
inputs:
  input: {{path: "azfs://{ACCOUNT}/{c}/in/*.csv"}}
outputs:
  out: {{path: "azfs://{ACCOUNT}/{c}/out/rows", format: parquet}}
""")
    env = {**_env(azurite), blob_module.KEY: "", blob_module.SAS_TOKEN: sas}
    done = run_cli("run", str(job), env=env)
    assert done.returncode == 0, done.stderr
    assert get_rows(blobs, "out/rows", "parquet") == [{"name": "a"}]
    signature = next(p for p in sas.split("&") if p.startswith("sig="))[4:]
    done = run_cli("run", str(job), "--verbose", env=env)  # Beam's and the Azure SDK's logs shown
    assert done.returncode == 0, done.stderr
    assert sas not in done.stdout + done.stderr and signature not in done.stdout + done.stderr


def test_tune_batch_samples_rows_from_a_blob(blobs, tmp_path):
    from pipelines.job import load_job

    put(blobs, "in/a.json.gz", gzip.compress(b'{"id": 1}\n\n{"id": 2}\n{"id": 3}\n'))
    job = write_job(tmp_path, f"""
query: SELECT * INTO out FROM input
inputs:
  input: {{path: "azfs://{ACCOUNT}/{blobs.container_name}/in/*.json.gz"}}
outputs:
  out: {{path: out/rows}}
""")
    assert load_job(job).sample_rows(2) == [{"id": 1}, {"id": 2}]
