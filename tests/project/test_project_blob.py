"""ASA projects and ARM templates whose inputs and outputs are Azure Blob Storage, against Azurite.

A Blob Storage / ADLS Gen2 input of a project becomes ``azfs://ACCOUNT/CONTAINER/<PathPattern>``
with its DateFormat / TimeFormat; its blob outputs likewise, written there only with
``--live-outputs`` (ASA's local run writes local files). A local mock keeps precedence over the
blob, as in ASA's local run (learn.microsoft.com/azure/stream-analytics/visual-studio-code-local-run-all).
Keys in the project are never used: credentials come from the environment.

Field names: BlobStorageProperties / BlobReferenceProperties{StorageAccounts[{AccountName,
AccountKey}], Container, PathPattern, DateFormat, TimeFormat} (VS Code) and datasource
``Microsoft.Storage/Blob`` {storageAccounts, container, pathPattern, dateFormat, timeFormat}
(ARM; learn.microsoft.com/rest/api/streamanalytics): see ../shared/reference/asa-project-format.md.
Input path patterns select blobs under dated folders; the folder has no bearing on a row's time
(its arrival time is the blob's last-modified time):
https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-define-inputs.
Output {date}/{time} folders come from System.Timestamp() in UTC:
https://learn.microsoft.com/en-us/azure/stream-analytics/blob-storage-azure-data-lake-gen2-output.
Expected rows are computed by hand from the data written here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from projects import write  # noqa: E402

pytest_plugins = ["fixtures_azurite"]
from fixtures_azurite import ACCOUNT, KEY, WRONG_KEY, _env, get_rows, put, run_cli  # noqa: E402

from pipelines.cli import main  # noqa: E402
from pipelines.project import load  # noqa: E402

QUERY = """SELECT t.deviceId, d.site, t.temperature
INTO Alerts
FROM Telemetry t JOIN Devices d ON t.deviceId = d.deviceId
WHERE t.temperature > 30
"""


def vscode_blob_project(root: Path, container: str, project_key: str | None = None) -> Path:
    """A VS Code project (quick-create-visual-studio-code layout) reading a Blob stream under
    ``telemetry/{date}/{time}`` and CSV reference data from a blob, writing a Blob output under
    ``alerts/{date}``. Keys are null as VS Code writes them (or ``project_key``, a careless export)."""
    account = {"AccountName": ACCOUNT, "AccountKey": project_key}
    write(root / "asaproj.json", {"name": "Telemetry", "startFile": "Telemetry.asaql", "configurations": [
        {"filePath": "JobConfig.json", "subType": "JobConfig"},
        {"filePath": "Inputs/Telemetry.json", "subType": "Input"},
        {"filePath": "Inputs/Devices.json", "subType": "Input"},
        {"filePath": "Outputs/Alerts.json", "subType": "Output"}]})
    write(root / "JobConfig.json", {"DataLocale": "en-US", "CompatibilityLevel": "1.2", "ScriptType": "JobConfig"})
    write(root / "Inputs" / "Telemetry.json", {
        "Name": "Telemetry", "Type": "Data Stream", "DataSourceType": "Blob Storage",
        "BlobStorageProperties": {"StorageAccounts": [account], "Container": container,
                                  "PathPattern": "telemetry/{date}/{time}", "DateFormat": "yyyy/MM/dd",
                                  "TimeFormat": "HH", "AuthenticationMode": "ConnectionString"},
        "Serialization": {"Type": "Json", "Encoding": "UTF8"}, "ScriptType": "Input"})
    write(root / "Inputs" / "Devices.json", {
        "Name": "Devices", "Type": "Reference data", "DataSourceType": "Blob Storage",
        "BlobReferenceProperties": {"StorageAccounts": [account], "Container": container,
                                    "PathPattern": "ref/devices.csv", "DateFormat": "yyyy/MM/dd", "TimeFormat": "HH"},
        "Serialization": {"Type": "Csv", "Encoding": "UTF8", "FieldDelimiter": ","}, "ScriptType": "Input"})
    write(root / "Outputs" / "Alerts.json", {
        "Name": "Alerts", "DataSourceType": "Blob Storage",
        "BlobStorageProperties": {"StorageAccounts": [account], "Container": container,
                                  "PathPattern": "alerts/{date}", "DateFormat": "yyyy/MM/dd", "TimeFormat": "HH"},
        "Serialization": {"Type": "Json", "Encoding": "UTF8", "Format": "LineSeparated"}, "ScriptType": "Output"})
    write(root / "Telemetry.asaql", QUERY)
    return root


def put_telemetry(blobs):
    """The blobs of the VS Code project; returns the last-modified times of the two read."""
    # A JSON array and JSON lines: ASA reads both from a blob.
    t1 = put(blobs, "telemetry/2026/01/02/10/a.json",
             b'[{"deviceId": "dev-1", "temperature": 35}, {"deviceId": "dev-2", "temperature": 20}]')
    t2 = put(blobs, "telemetry/2026/01/02/11/b.json",
             b'{"deviceId": "dev-2", "temperature": 31.5}\n{"deviceId": "dev-3", "temperature": 40}\n')
    put(blobs, "telemetry/archive/c.json", b'{"deviceId": "dev-1", "temperature": 99}\n')  # not {date}/{time}
    put(blobs, "ref/devices.csv", b"deviceId,site\ndev-1,Oslo\ndev-2,Bergen\n")
    return t1, t2


# By hand: dev-1 35 > 30 (Oslo); dev-2 20 is not > 30; dev-2 31.5 > 30 (Bergen); dev-3 has no
# reference row (inner join); the blob under telemetry/archive/ is outside the pattern.
EXPECTED_ALERTS = [{"deviceId": "dev-1", "site": "Oslo", "temperature": 35},
                   {"deviceId": "dev-2", "site": "Bergen", "temperature": 31.5}]


def local_rows(project: Path, alias: str) -> list[dict]:
    files = sorted((project / "LocalRunOutputs").glob(f"*/{alias}-*"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line]


def by_device(rows):
    return sorted(rows, key=lambda r: (r["deviceId"], r["temperature"]))


def test_vscode_project_reads_blob_stream_and_reference_data_and_writes_locally(blobs, azurite, tmp_path):
    project = vscode_blob_project(tmp_path / "p", blobs.container_name)
    put_telemetry(blobs)
    done = run_cli("run", str(project), env=_env(azurite))
    assert done.returncode == 0, done.stderr
    assert by_device(local_rows(project, "Alerts")) == EXPECTED_ALERTS
    # Outputs stay local by default: nothing is written to the container, and the note says where it would go.
    assert not list(blobs.list_blobs(name_starts_with="alerts/"))
    assert f"azfs://{ACCOUNT}/{blobs.container_name}/alerts/{{date}}/Alerts" in done.stderr
    assert "--live-outputs" in done.stderr
    assert "read     Telemetry: 4 rows" in done.stdout


def test_live_outputs_write_the_blob_output_under_its_date_folders(blobs, azurite, tmp_path):
    project = vscode_blob_project(tmp_path / "p", blobs.container_name)
    t1, t2 = put_telemetry(blobs)
    done = run_cli("run", str(project), "--live-outputs", env=_env(azurite))
    assert done.returncode == 0, done.stderr
    names = sorted(b.name for b in blobs.list_blobs(name_starts_with="alerts/"))
    # {date} in yyyy/MM/dd of each row's System.Timestamp() = its blob's Last-Modified (UTC).
    assert {n.rsplit("/", 1)[0] for n in names} == {t1.strftime("alerts/%Y/%m/%d"), t2.strftime("alerts/%Y/%m/%d")}
    assert all(n.rsplit("/", 1)[1].startswith("Alerts-") for n in names)
    assert by_device(get_rows(blobs, "alerts/", "json")) == EXPECTED_ALERTS
    assert local_rows(project, "Alerts") == []


def test_a_local_mock_is_read_before_the_blob(blobs, azurite, tmp_path):
    """ASA's local run reads the local input (InputMock) of an input that also has a live source."""
    project = vscode_blob_project(tmp_path / "p", blobs.container_name)
    put_telemetry(blobs)
    write(project / "Inputs" / "Local_Telemetry.json", {
        "Name": "Telemetry", "Type": "Data Stream", "DataSourceType": "Local Input",
        "Serialization": {"Type": "Json", "Encoding": "UTF8"}, "FilePath": "local_telemetry.json",
        "ScriptType": "InputMock"})
    write(project / "Inputs" / "local_telemetry.json", [{"deviceId": "dev-2", "temperature": 45}])
    doc = json.loads((project / "asaproj.json").read_text())
    doc["configurations"].append({"filePath": "Inputs/Local_Telemetry.json", "subType": "InputMock"})
    write(project / "asaproj.json", doc)
    done = run_cli("run", str(project), env=_env(azurite))
    assert done.returncode == 0, done.stderr
    # By hand: only the mock's row (45 > 30, dev-2 → Bergen from the blob reference data).
    assert local_rows(project, "Alerts") == [{"deviceId": "dev-2", "site": "Bergen", "temperature": 45}]
    assert "reads its local input" in done.stderr and f"--input Telemetry=azfs://{ACCOUNT}/" in done.stderr


def test_check_with_a_wrong_key_fails_clearly_and_a_key_in_the_project_is_never_used(blobs, azurite, tmp_path):
    # The project holds Azurite's real key; the environment a wrong one: only the environment's is used.
    project = vscode_blob_project(tmp_path / "p", blobs.container_name, project_key=KEY)
    put_telemetry(blobs)
    done = run_cli("check", str(project), env=_env(azurite, WRONG_KEY))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "authentication failed" in done.stderr and "input 'Telemetry'" in done.stderr
    assert "Traceback" not in done.stderr
    for secret in (WRONG_KEY, WRONG_KEY[:20], KEY, KEY[:20]):
        assert secret not in done.stdout + done.stderr
    done = run_cli("check", str(project), env=_env(azurite))
    assert done.returncode == 0, done.stderr
    assert "storage account key in the file is not used" in done.stdout
    assert KEY not in done.stdout + done.stderr
    # A missing container is named, before any data is read.
    write(project / "Inputs" / "Devices.json", json.loads((project / "Inputs" / "Devices.json").read_text()
                                                          .replace(blobs.container_name, "nosuchcontainer")))
    done = run_cli("check", str(project), env=_env(azurite))
    assert done.returncode == 2 and "input 'Devices'" in done.stderr
    assert "the container 'nosuchcontainer' does not exist" in done.stderr


# -- ARM template --------------------------------------------------------------------------------

def arm_blob_template(root: Path, container: str, key_value: str | None = None) -> Path:
    """An exported ARM template (resource shape of Azure/azure-stream-analytics ClickStream-RefJoin's
    JobARMTemplate.json) with a CSV Blob stream input under ``trips/{date}`` (yyyy-MM-dd) and a
    JSON Blob output under ``out/{date}/{time}``; account, container and key are parameters
    (the key null in the parameters file, as the portal exports it, or ``key_value``)."""
    blob = {"storageAccounts": [{"accountName": "[parameters('storageAccountName')]",
                                 "accountKey": "[parameters('storageAccountKey')]"}],
            "container": "[parameters('container')]"}
    template = {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"StreamAnalyticsJobName": {"type": "string", "defaultValue": "trips-job"},
                       "storageAccountName": {"type": "string"},
                       "storageAccountKey": {"type": "securestring"},
                       "container": {"type": "string"}},
        "resources": [{
            "type": "Microsoft.StreamAnalytics/StreamingJobs", "apiVersion": "2021-10-01-preview",
            "name": "[parameters('StreamAnalyticsJobName')]", "location": "[resourceGroup().location]",
            "properties": {
                "sku": {"name": "StandardV2"}, "compatibilityLevel": "1.2",
                "inputs": [{"name": "trips", "properties": {
                    "type": "Stream",
                    "datasource": {"type": "Microsoft.Storage/Blob", "properties": {
                        **blob, "pathPattern": "trips/{date}", "dateFormat": "yyyy-MM-dd", "timeFormat": "HH",
                        "authenticationMode": "ConnectionString"}},
                    "serialization": {"type": "Csv", "properties": {"fieldDelimiter": ",", "encoding": "UTF8"}}}}],
                "outputs": [{"name": "fares", "properties": {
                    "datasource": {"type": "Microsoft.Storage/Blob", "properties": {
                        **blob, "pathPattern": "out/{date}/{time}", "dateFormat": "yyyy/MM/dd", "timeFormat": "HH"}},
                    "serialization": {"type": "Json", "properties": {"encoding": "UTF8",
                                                                    "format": "LineSeparated"}}}}],
                "transformation": {"name": "Transformation", "properties": {
                    "streamingUnits": 3,
                    "query": "SELECT vendor, CAST(fare AS float) * 2 AS doubled\r\nINTO fares\r\n"
                             "FROM trips\r\nWHERE vendor = 'A'\r\n"}},
            },
        }],
    }
    path = write(root / "trips.JobTemplate.json", template)
    write(root / "trips.JobTemplate.parameters.json", {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"storageAccountName": {"value": ACCOUNT}, "storageAccountKey": {"value": key_value},
                       "container": {"value": container}}})
    return path


def test_arm_template_blob_input_and_live_blob_output(blobs, azurite, tmp_path):
    c = blobs.container_name
    # The parameters file carries a key (not Azurite's): were it used, the run would be refused.
    template = arm_blob_template(tmp_path, c, key_value=WRONG_KEY)
    t1 = put(blobs, "trips/2026-01-02/a.csv", b"vendor,fare\nA,12.5\nB,3\n")
    t2 = put(blobs, "trips/2026-01-03/b.csv", b"vendor,fare\nA,4\n")
    put(blobs, "trips/latest/c.csv", b"vendor,fare\nA,100\n")  # not a yyyy-MM-dd folder: not read
    done = run_cli("run", str(template), "--live-outputs", env=_env(azurite))
    assert done.returncode == 0, done.stderr
    # By hand: vendor A rows only, fare (CSV text) cast and doubled: 12.5 → 25.0, 4 → 8.0.
    assert sorted(r["doubled"] for r in get_rows(blobs, "out/", "json")) == [8.0, 25.0]
    folders = {b.name.rsplit("/", 1)[0] for b in blobs.list_blobs(name_starts_with="out/")}
    assert folders == {t1.strftime("out/%Y/%m/%d/%H"), t2.strftime("out/%Y/%m/%d/%H")}
    assert WRONG_KEY not in done.stdout + done.stderr and WRONG_KEY[:20] not in done.stderr
    # The imported job file reads the same blobs.
    job_file = tmp_path / "job" / "job.yaml"
    assert run_cli("import", str(template), "-o", str(job_file), env=_env(azurite)).returncode == 0
    done = run_cli("run", str(job_file), "--output", f"fares={tmp_path / 'local' / 'fares'}", env=_env(azurite))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for f in (tmp_path / "local").glob("fares-*") for x in f.read_text().splitlines() if x]
    assert sorted(r["doubled"] for r in rows) == [8.0, 25.0]


def test_import_writes_the_blob_paths_and_never_a_key(tmp_path, capsys):
    template = arm_blob_template(tmp_path / "t", "trips-data", key_value=WRONG_KEY)
    job_file = tmp_path / "job" / "job.yaml"
    assert main(["import", str(template), "-o", str(job_file)]) == 0
    text = job_file.read_text()
    printed = capsys.readouterr()
    assert f"path: azfs://{ACCOUNT}/trips-data/trips/{{date}}" in text and "date_format: yyyy-MM-dd" in text
    assert "format: csv" in text
    # Outputs stay local unless --live-outputs; the comment names the blob they would go to.
    assert "path: LocalRunOutputs/fares" in text
    assert f"azfs://{ACCOUNT}/trips-data/out/{{date}}/{{time}}/fares" in text
    assert main(["import", str(template), "-o", str(job_file), "--live-outputs"]) == 0
    text = job_file.read_text()
    assert f"path: azfs://{ACCOUNT}/trips-data/out/{{date}}/{{time}}/fares" in text
    assert "date_format: yyyy/MM/dd" in text and "time_format: HH" in text
    printed_all = printed.out + printed.err + capsys.readouterr().out
    assert WRONG_KEY not in text and WRONG_KEY not in printed_all
    assert "storage account key in the file is not used" in printed_all


def test_blob_input_paths_and_overrides(tmp_path):
    project = vscode_blob_project(tmp_path / "p", "events")
    job = load(project)
    # Tokens become the glob of the dated folders (the pattern ends with a token: blobs below it).
    assert job.inputs["Telemetry"].path == (f"azfs://{ACCOUNT}/events/telemetry/" + "[0-9]" * 4 + "/"
                                            + "[0-9]" * 2 + "/" + "[0-9]" * 2 + "/" + "[0-9]" * 2 + "/**")
    assert job.inputs["Devices"].path == f"azfs://{ACCOUNT}/events/ref/devices.csv"
    assert job.inputs["Devices"].format == "csv" and job.inputs["Devices"].options.get("reference") is True
    # --input NAME=azfs://... (or an abfss:// ADLS Gen2 name) stays a blob path, not a local file.
    job = load(project, inputs=["Devices=abfss://other@myacct.dfs.core.windows.net/devices.csv"])
    assert job.inputs["Devices"].path == "azfs://myacct/other/devices.csv"
    with pytest.raises(Exception, match="--live-outputs is for ASA projects"):
        write(tmp_path / "job.yaml", "query: SELECT * INTO o FROM i\ninputs: {i: a.json}\noutputs: {o: out}\n")
        load(tmp_path / "job.yaml", live_outputs=True)


def test_a_blob_input_without_a_usable_account_is_a_check_error(tmp_path, capsys):
    project = vscode_blob_project(tmp_path / "p", "events")
    spec = json.loads((project / "Inputs" / "Telemetry.json").read_text())
    spec["BlobStorageProperties"]["StorageAccounts"] = [{"AccountName": None, "AccountKey": None}]
    write(project / "Inputs" / "Telemetry.json", spec)
    assert main(["check", str(project)]) == 2
    err = capsys.readouterr().err
    assert "input 'Telemetry'" in err and "without a usable storage account name" in err
    assert "--input Telemetry=PATH" in err


def test_compressed_blob_input_is_noted(tmp_path):
    template = arm_blob_template(tmp_path, "trips-data")
    doc = json.loads(template.read_text())
    doc["resources"][0]["properties"]["inputs"][0]["properties"]["compression"] = {"type": "GZip"}
    write(template, doc)
    job = load(template)
    assert any("CompressionType GZip" in n and ".gz" in n for n in job.notes)
