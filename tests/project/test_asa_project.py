"""ASA projects and ARM templates through ``asa-beam run|check|import|test``, end to end.

The fixture projects (projects.py) follow public ASA projects; expected rows are worked out by
hand from the data in them. Formats: learn.microsoft.com/azure/stream-analytics/
quick-create-visual-studio-code, visual-studio-code-local-run-all, job-config-json, cicd-tools.
"""

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from projects import arm_template, dataops_project, sensor_array_project, windows_project, write  # noqa: E402

from pipelines.cli import main  # noqa: E402
from pipelines.project import load  # noqa: E402


def rows_of(prefix: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(prefix.parent.glob(prefix.name + "-*"))
            for line in f.read_text().splitlines() if line]


def by(key, rows):
    return sorted(rows, key=lambda r: json.dumps(r[key]))


# -- asa-beam test --------------------------------------------------------------------------------

def test_dataops_project_passes_its_test_cases(tmp_path, capsys):
    project = dataops_project(tmp_path / "p")
    out = tmp_path / "results"
    assert main(["test", str(project), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("temperature_greater_than_27_degrees", "temperature_less_than_27_degrees",
                 "temperature_equal_to_27_degrees"):
        assert re.search(rf"^PASS  {name}: 1 output\(s\) matched", printed, re.M)
    assert "Total 3, passed 3, failed 0" in printed
    summary = json.loads((out / "testResultSummary.json").read_text())
    assert (summary["Total"], summary["Passed"], summary["Failed"]) == (3, 3, 0)
    first = summary["Results"][0]
    assert set(first) >= {"Name", "Status", "Time", "OutputMatched", "OutputNotEqual", "OutputMissing",
                          "OutputUnexpected"}
    assert first["OutputMatched"][0]["OutputAlias"] == "bloboutput"
    assert summary["Results"][1]["OutputMatched"][0]["ExpectedOutput"] == "/dev/null"


def test_wrong_expected_output_fails_naming_case_output_and_rows(tmp_path, capsys):
    project = dataops_project(tmp_path / "p")
    expected = project / "test" / "hot_expected.json"
    expected.write_text(expected.read_text().replace("30.5", "31.5"))
    # and rows where the test expects none (/dev/null): the cold case gets the hot data
    config = project / "test" / "testConfig.json"
    config.write_text(config.read_text().replace('"cold.json"', '"hot.json"'))
    out = tmp_path / "results"
    assert main(["test", str(project), "--output-dir", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "FAIL  temperature_greater_than_27_degrees" in printed
    assert "output 'bloboutput': 1 row(s) matched, 1 expected row(s) missing, 1 unexpected" in printed
    assert re.search(r'missing +\{.*"temperature": 31.5', printed)
    assert re.search(r'unexpected +\{.*"temperature": 30.5', printed)
    assert "FAIL  temperature_less_than_27_degrees" in printed
    assert "PASS  temperature_equal_to_27_degrees" in printed
    assert "Total 3, passed 1, failed 2" in printed
    summary = json.loads((out / "testResultSummary.json").read_text())
    assert (summary["Passed"], summary["Failed"]) == (1, 2)
    bad = summary["Results"][0]["OutputNotEqual"][0]
    assert bad["OutputAlias"] == "bloboutput" and bad["MissingRows"][0]["temperature"] == 31.5
    assert summary["Results"][0]["Status"] == 1


def test_unrequired_output_is_not_validated(tmp_path, capsys):
    project = dataops_project(tmp_path / "p")
    config = project / "test" / "testConfig.json"
    doc = json.loads(config.read_text())
    doc["TestCases"][0]["ExpectedOutputs"][0].update({"FilePath": "/dev/null", "Required": False})
    config.write_text(json.dumps(doc))
    assert main(["test", str(project), "--output-dir", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "testResultSummary.json").read_text())
    assert summary["Results"][0]["OutputUnrequired"][0]["OutputAlias"] == "bloboutput"


def test_windows_flavoured_project_runs_and_passes_its_test(tmp_path, capsys):
    project = windows_project(tmp_path / "p")
    assert main(["check", str(project)]) == 0
    assert "output 'ExpiredOut' is a SQL Database sink in the project: written to local file" \
        in capsys.readouterr().out
    assert main(["run", str(project), "--output", f"ExpiredOut={tmp_path / 'expired'}"]) == 0
    # By hand: YXZ 1001 and ABC 1004 have Expired = '1'; JNB 7001 has '0'; ZZZ 9999 is not registered.
    assert by("LicensePlate", rows_of(tmp_path / "expired")) == [
        {"EntryTime": "2014-09-10T12:02:30.0000000Z", "LicensePlate": "ABC 1004", "TollId": 2,
         "RegistrationId": "999003", "Region": "AB"},
        {"EntryTime": "2014-09-10T12:02:00.0000000Z", "LicensePlate": "YXZ 1001", "TollId": 1,
         "RegistrationId": "999002", "Region": "YX"}]
    assert main(["test", str(project), "--output-dir", str(tmp_path / "r")]) == 0
    assert "PASS  Expired registrations" in capsys.readouterr().out


def test_windows_project_settings_come_from_jobconfig(tmp_path):
    job = load(windows_project(tmp_path / "p"))
    o = job.event_ordering
    assert (o.late_arrival_s, o.out_of_order_s, o.policy) == (10, 2, "drop")
    assert job.settings["output_error_policy"] == "retry" and job.settings["compatibility_level"] == "1.2"
    assert job.inputs["Registration"].options["reference"] is True
    assert job.inputs["Registration"].format == "csv"
    assert job.functions_config["plateRegion"]["output_type"] == "nvarchar(max)"


def test_vscode_defaults_when_jobconfig_is_absent(tmp_path):
    """VS Code's defaults: late arrival 5 s, out of order 0 s, Adjust (job-config-json.md)."""
    o = load(sensor_array_project(tmp_path / "p")).event_ordering
    assert (o.late_arrival_s, o.out_of_order_s, o.policy) == (5, 0, "adjust")
    project = tmp_path / "p"
    (project / "asaproj.json").write_text((project / "asaproj.json").read_text().replace(
        '"filePath": "JobConfig.json"', '"filePath": "Missing.json"'))
    with pytest.raises(Exception, match="Missing.json does not exist"):
        load(project)


# -- asa-beam run / check ---------------------------------------------------------------------------

def test_run_writes_local_run_outputs_like_asa(tmp_path, capsys):
    project = dataops_project(tmp_path / "p")
    assert main(["run", str(project), "--input", f"iothub={project / 'test' / 'hot.json'}"]) == 0
    folders = list((project / "LocalRunOutputs").iterdir())
    assert len(folders) == 1 and re.fullmatch(r"\d{14}", folders[0].name)  # yyyyMMddHHmmss
    assert (folders[0] / "bloboutput-00000-of-00001.json").is_file()
    assert by("messageId", rows_of(folders[0] / "bloboutput")) == [
        {"messageId": 1, "deviceId": "d1", "temperature": 30.5, "humidity": 60},
        {"messageId": 3, "deviceId": "d2", "temperature": 27.25, "humidity": 62}]


def test_javascript_udf_project(tmp_path):
    project = sensor_array_project(tmp_path / "p")
    assert main(["run", str(project), "--output", f"output={tmp_path / 'o'}"]) == 0
    # By hand: "[1:2:3][4:5:6]" → two records, "[7:8:9]" → one.
    assert sorted(rows_of(tmp_path / "o"), key=lambda r: (r["id"], r["Record1"])) == [
        {"id": 1, "Record1": "1", "Record2": "2", "Record3": "3"},
        {"id": 1, "Record1": "4", "Record2": "5", "Record3": "6"},
        {"id": 2, "Record1": "7", "Record2": "8", "Record3": "9"}]


def test_live_input_without_local_data_is_a_check_error(tmp_path, capsys):
    project = windows_project(tmp_path / "p")
    proj_file = project / "asaproj.json"
    doc = json.loads(proj_file.read_text(encoding="utf-8-sig"))
    doc["configurations"] = [c for c in doc["configurations"] if "Local_EntryStream" not in c["filePath"]]
    proj_file.write_text(json.dumps(doc))
    assert main(["check", str(project)]) == 2
    err = capsys.readouterr().err
    assert "input 'EntryStream' (Event Hub stream" in err
    assert "--input EntryStream=PATH" in err and "InputMock" in err
    assert main(["check", str(project), "--input", f"EntryStream={project / 'Data' / 'Entry.json'}"]) == 0


def test_arm_template_check_names_the_input_and_reads_parameters(tmp_path, capsys):
    template = arm_template(tmp_path)
    assert main(["check", str(template)]) == 2
    err = capsys.readouterr().err
    assert "input 'trips' (Event Hub stream" in err and "--input trips=PATH" in err
    write(tmp_path / "trips.json", "[]")
    job = load(template, inputs=[f"trips={tmp_path / 'trips.json'}"])
    score = job.functions_config["score"]
    # endpoint and batch size from the parameters file beside the template; parallel from the template
    assert (score["endpoint"], score["batch_size"], score["parallel_requests"]) == (
        "https://example.invalid/score", 50, 2)
    assert "key_env" not in score
    assert job.functions_config["createArray"]["type"] == "javascript"
    assert "return [vendorid" in job.functions_config["createArray"]["script"]
    o = job.event_ordering  # absent in the template: ARM's defaults (late arrival -1 = wait indefinitely)
    assert (o.late_arrival_s, o.out_of_order_s, o.policy) == (-1, 0, "adjust")
    other = write(tmp_path / "staging.parameters.json", {"parameters": {
        "Function_score_endpoint": {"value": "http://127.0.0.1:1/score"}}})
    job = load(template, parameters=other, inputs=[f"trips={tmp_path / 'trips.json'}"])
    assert job.functions_config["score"]["endpoint"] == "http://127.0.0.1:1/score"
    assert job.functions_config["score"]["batch_size"] == 1000  # the template's defaultValue


def test_function_overrides(tmp_path, capsys, monkeypatch):
    template = arm_template(tmp_path)
    write(tmp_path / "trips.json", "[]")
    given = [f"trips={tmp_path / 'trips.json'}"]
    job = load(template, inputs=given, function_endpoints=["score=http://127.0.0.1:9/score"])
    assert job.functions_config["score"]["endpoint"] == "http://127.0.0.1:9/score"
    monkeypatch.setenv("SCORE_KEY", "not-printed")
    job = load(template, inputs=given, function_keys=["score=SCORE_KEY"])
    assert job.functions_config["score"]["key_env"] == "SCORE_KEY"
    secret = "s3cr3t/Key+value=="
    assert main(["check", str(template), "--input", given[0], "--function-key", f"score={secret}"]) == 2
    err = capsys.readouterr().err
    assert "NAME of an environment variable" in err and secret not in err and "s3cr3t" not in err
    # Azure ML keys are alphanumeric: one given by mistake looks like a variable name; never echoed
    alnum_key = "Q2xvdWRLZXkxMjM0NTY3ODkwYWJjZGVm"
    assert main(["check", str(template), "--input", given[0], "--function-key", f"score={alnum_key}"]) == 2
    err = capsys.readouterr().err
    assert "no environment variable of that name is set" in err and alnum_key not in err
    assert main(["check", str(template), "--input", given[0], "--function-endpoint", "createArray=http://x"]) == 2
    assert "not an Azure ML function" in capsys.readouterr().err


def test_csharp_udf_called_by_the_query_is_not_supported(tmp_path, capsys):
    project = sensor_array_project(tmp_path / "p")
    write(project / "Functions" / "Rounder.json", {
        "AssemblyName": "ASAUDF", "ClassName": "ASAUDF.Class1", "MethodName": "Round", "Name": "Rounder",
        "OutputType": "bigint", "Type": "Scalar", "FunctionInputs": [], "ScriptType": "CSharpFunction"})
    doc = json.loads((project / "asaproj.json").read_text())
    doc["configurations"].append({"filePath": "Functions/Rounder.json", "subType": "CSharpFunction"})
    (project / "asaproj.json").write_text(json.dumps(doc))
    assert main(["check", str(project)]) == 0  # not called: a note only
    assert "function 'Rounder'" in capsys.readouterr().out
    query = project / "SensorArray.asaql"
    query.write_text(query.read_text().replace("converted.id,", "udf.Rounder(converted.id) AS id,"))
    assert main(["check", str(project)]) == 2
    err = capsys.readouterr().err
    assert "Rounder.json" in err and "C# UDFs are not supported" in err


def test_custom_deserializer_is_not_supported(tmp_path, capsys):
    project = sensor_array_project(tmp_path / "p")
    mock = project / "Inputs" / "Local_InputJson1.json"
    doc = json.loads(mock.read_text())
    doc["Serialization"] = {"Type": "CustomClr", "SerializationClassName": "ExampleDeserializer.CustomCsv"}
    mock.write_text(json.dumps(doc))
    assert main(["check", str(project)]) == 2
    err = capsys.readouterr().err
    assert "custom deserializers" in err and "ExampleDeserializer.CustomCsv" in err and "Local_InputJson1" in err


def test_import_writes_a_job_file_that_runs_the_same(tmp_path, capsys):
    project = sensor_array_project(tmp_path / "p")
    job_file = tmp_path / "job" / "job.yaml"
    assert main(["import", str(project), "-o", str(job_file)]) == 0
    text = job_file.read_text()
    assert "query: ../p/SensorArray.asaql" in text and "json_layout: auto" in text
    assert main(["run", str(job_file), "--output", f"output={tmp_path / 'o'}"]) == 0
    assert len(rows_of(tmp_path / "o")) == 3


def test_unknown_path_kind_is_a_clear_error(tmp_path, capsys):
    write(tmp_path / "x.json", {"resources": []})
    assert main(["check", str(tmp_path / "x.json")]) == 2
    assert "not a job.yaml, an asaproj.json" in capsys.readouterr().err
    write(tmp_path / "bad" / "asaproj.json", '{"name": "x", "startFile": "q.asaql",\n "configurations": [}')
    assert main(["check", str(tmp_path / "bad")]) == 2
    assert "asaproj.json: not valid JSON at line 2" in capsys.readouterr().err


def test_declared_serialization_is_used_for_an_output_path_without_extension(tmp_path):
    project = sensor_array_project(tmp_path / "p")
    write(project / "Outputs" / "output.json", {"Name": "output", "DataSourceType": "Blob Storage",
                                                "Serialization": {"Type": "Csv", "Encoding": "UTF8",
                                                                  "FieldDelimiter": ","},
                                                "ScriptType": "Output"})
    doc = json.loads((project / "asaproj.json").read_text())
    doc["configurations"].append({"filePath": "Outputs/output.json", "subType": "Output"})
    (project / "asaproj.json").write_text(json.dumps(doc))
    assert load(project, outputs=[f"output={tmp_path / 'o'}"]).outputs["output"].format == "csv"
    assert load(project, outputs=[f"output={tmp_path / 'o.json'}"]).outputs["output"].format == "json"
    assert load(project).outputs["output"].format == "json"  # ASA's local run: JSON lines whatever declared


def test_a_key_in_a_project_file_never_reaches_a_job_file_or_the_console(tmp_path, capsys):
    project = sensor_array_project(tmp_path / "p")
    secret = "k3y-from-a-careless-export"
    write(project / "Functions" / "score.json", {"Name": "score", "Type": "Scalar", "ScriptType": "MLFunction",
                                                 "Endpoint": "http://127.0.0.1:9/score", "ApiKey": secret})
    doc = json.loads((project / "asaproj.json").read_text())
    doc["configurations"].append({"filePath": "Functions/score.json", "subType": "MLFunction"})
    (project / "asaproj.json").write_text(json.dumps(doc))
    job_file = tmp_path / "job.yaml"
    assert main(["import", str(project), "-o", str(job_file)]) == 0
    printed = capsys.readouterr()
    assert "the key in the file is not used" in printed.out and "--function-key score=ENV_VAR" in printed.out
    assert secret not in job_file.read_text() and secret not in printed.out + printed.err
    assert "endpoint: http://127.0.0.1:9/score" in job_file.read_text()


def test_arm_child_resources_and_concat_names(tmp_path):
    template = arm_template(tmp_path)
    doc = json.loads(template.read_text())
    job = doc["resources"][0]
    functions = job["properties"].pop("functions")
    for fn in functions:  # the same functions as separate resources, named as exports name them
        doc["resources"].append({"type": "Microsoft.StreamAnalytics/streamingjobs/functions",
                                 "apiVersion": "2021-10-01-preview",
                                 "name": f"[concat(parameters('StreamAnalyticsJobName'), '/{fn['name']}')]",
                                 "properties": fn["properties"]})
    template.write_text(json.dumps(doc))
    write(tmp_path / "trips.json", "[]")
    loaded = load(template, inputs=[f"trips={tmp_path / 'trips.json'}"])
    assert sorted(loaded.functions_config) == ["createArray", "score"]
    assert loaded.functions_config["score"]["endpoint"] == "https://example.invalid/score"


def test_test_config_files_are_checked_before_any_case_runs(tmp_path, capsys):
    project = dataops_project(tmp_path / "p")
    config = project / "test" / "testConfig.json"
    config.write_text(config.read_text().replace('"equal.json"', '"gone.json"'))
    out = tmp_path / "r"
    assert main(["test", str(project), "--output-dir", str(out)]) == 2
    captured = capsys.readouterr()
    assert "temperature_equal_to_27_degrees" in captured.err and "gone.json does not exist" in captured.err
    assert "PASS" not in captured.out and not out.exists()


def test_function_endpoint_override_on_a_job_file_needs_no_env_var(tmp_path, monkeypatch):
    """The seed job writes its endpoint as ${SCORE_URL}; --function-endpoint replaces it."""
    monkeypatch.delenv("SCORE_URL", raising=False)
    job_file = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "ml" / "array_job.yaml"
    job = load(job_file, function_endpoints=["score=http://127.0.0.1:9/score"])
    assert job.functions_config["score"]["endpoint"] == "http://127.0.0.1:9/score"
