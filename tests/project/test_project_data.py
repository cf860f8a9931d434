"""Local data of ASA projects (learn.microsoft.com/azure/stream-analytics/visual-studio-code-local-run-all:
local input files are JSON, CSV or Avro; real projects hold JSON arrays, JSON lines and objects
concatenated with no separator), Visual Studio's .asaproj, a JavaScript UDA, and errors that
name the file."""

import json
import sys
from pathlib import Path

import fastavro
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from projects import sensor_array_project, write  # noqa: E402

from pipelines.cli import main  # noqa: E402
from pipelines.project import load  # noqa: E402
from transforms.io.json_documents import iter_documents  # noqa: E402

ROWS = [{"deviceId": "a", "reading": 1.5}, {"deviceId": "b", "reading": 7.0}, {"deviceId": "c", "reading": 12.25}]


def rows_of(prefix: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(prefix.parent.glob(prefix.name + "-*"))
            for line in f.read_text().splitlines() if line]


def passthrough_project(root: Path, data_name: str, mock: dict | None = None) -> Path:
    """A minimal VS Code project: one local input ``readings`` (old mock shape), ``WHERE reading > 5``."""
    write(root / "asaproj.json", {"name": "p", "startFile": "p.asaql", "configurations": [
        {"filePath": "Inputs/Local_readings.json", "subType": "InputMock"}]})
    write(root / "p.asaql", "SELECT deviceId, reading INTO output FROM readings WHERE reading > 5\n")
    write(root / "Inputs" / "Local_readings.json", {"InputAlias": "readings", "Type": "Data Stream",
                                                     "FilePath": data_name, **(mock or {})})
    return root


# By hand: readings 7.0 and 12.25 are > 5.
HOT = [{"deviceId": "b", "reading": 7.0}, {"deviceId": "c", "reading": 12.25}]


@pytest.mark.parametrize("name, content, mock", [
    ("array.json", json.dumps(ROWS, indent=2), {"Format": "Json"}),
    ("lines.json", "".join(json.dumps(r) + "\n" for r in ROWS), {"Format": "JSON"}),
    ("concatenated.json", "".join(json.dumps(r) for r in ROWS), {"Format": "json"}),
    ("pretty-concatenated.json", "\n".join(json.dumps(r, indent=2) for r in ROWS), {}),
    ("semicolons.csv", "deviceId;reading\r\na;1.5\r\nb;7.0\r\nc;12.25\r\n",
     {"Serialization": {"Type": "Csv", "FieldDelimiter": ";"}}),
])
def test_local_input_shapes(tmp_path, name, content, mock):
    project = passthrough_project(tmp_path / "p", name, mock)
    write(project / "Inputs" / name, content)
    assert main(["run", str(project), "--output", f"output={tmp_path / 'o'}"]) == 0
    got = sorted(rows_of(tmp_path / "o"), key=lambda r: r["deviceId"])
    if name.endswith(".csv"):  # CSV values are text, compared as ASA compares them (cast to float)
        assert [(r["deviceId"], float(r["reading"])) for r in got] == [("b", 7.0), ("c", 12.25)]
    else:
        assert got == HOT


def test_local_avro_input(tmp_path):
    project = passthrough_project(tmp_path / "p", "readings.avro", {"Format": "Avro"})
    schema = {"type": "record", "name": "r", "fields": [{"name": "deviceId", "type": "string"},
                                                         {"name": "reading", "type": "double"}]}
    with open(project / "Inputs" / "readings.avro", "wb") as f:
        fastavro.writer(f, schema, ROWS)
    assert main(["run", str(project), "--output", f"output={tmp_path / 'o'}"]) == 0
    assert sorted(rows_of(tmp_path / "o"), key=lambda r: r["deviceId"]) == HOT


def test_input_override_takes_its_format_from_the_file(tmp_path):
    project = passthrough_project(tmp_path / "p", "array.json", {"Format": "Json"})
    write(project / "Inputs" / "array.json", "[]")
    data = write(tmp_path / "other.csv", "deviceId,reading\nz,9\n")
    assert main(["run", str(project), "--input", f"readings={data}", "--output", f"output={tmp_path / 'o'}"]) == 0
    assert rows_of(tmp_path / "o") == [{"deviceId": "z", "reading": "9"}]


def test_bad_parts_of_a_json_file_are_dead_letters_and_the_rest_is_read(tmp_path):
    assert [ok for ok, _ in iter_documents('[{"a": 1}, {"a": 2}]')] == [True, True]
    assert [ok for ok, _ in iter_documents('{"a": 1}{"a": \n{"a": 3}\n')] == [True, False, True]
    project = passthrough_project(tmp_path / "p", "mixed.json")
    write(project / "Inputs" / "mixed.json", '{"deviceId": "b", "reading": 7.0}{"deviceId": oops\n'
                                             '[1, 2]\n{"deviceId": "c", "reading": 12.25}\n')
    out = tmp_path / "o"
    assert main(["run", str(project), "--output", f"output={out}"]) == 0
    assert sorted(rows_of(out), key=lambda r: r["deviceId"]) == HOT
    dead = rows_of(tmp_path / "dead_letter")
    assert sorted(d["reason"] for d in dead) == ["malformed_json", "malformed_json"]
    assert any("not valid JSON" in d["message"] for d in dead) and any("an array" in d["message"] for d in dead)


def test_missing_local_file_is_a_check_error_unless_overridden(tmp_path, capsys):
    project = passthrough_project(tmp_path / "p", "..\\Data\\gone.json", {"Format": "Json"})
    assert main(["check", str(project)]) == 2
    err = capsys.readouterr().err
    assert "Local_readings.json" in err and "gone.json does not exist" in err and "--input readings=PATH" in err
    data = write(tmp_path / "r.json", json.dumps(ROWS))
    assert main(["check", str(project), "--input", f"readings={data}"]) == 0


def test_query_error_names_the_query_file_line_and_column(tmp_path, capsys):
    project = passthrough_project(tmp_path / "p", "a.json")
    write(project / "Inputs" / "a.json", "[]")
    write(project / "p.asaql", "SELECT deviceId,\nFROM readings\n")
    assert main(["check", str(project)]) == 2
    err = capsys.readouterr().err
    assert f"{project / 'p.asaql'}: line 2, column 1" in err


def test_visual_studio_asaproj(tmp_path):
    """Visual Studio's MSBuild project lists the same files (Azure/azure-stream-analytics
    Samples/OnnxExample/ASAUDF/StreamAnalyticsOnnxModel.asaproj); its startFile may be stale."""
    project = sensor_array_project(tmp_path / "p")
    (project / "asaproj.json").unlink()
    write(project / "SensorArray.asaproj", """<Project ToolsVersion="4.0" DefaultTargets="Build"
    xmlns="http://schemas.microsoft.com/developer/msbuild/2003">
  <PropertyGroup><Name>SensorArray</Name></PropertyGroup>
  <ItemGroup>
    <Configure Include="JobConfig.json"><SubType>JobConfig</SubType></Configure>
    <Configure Include="Inputs\\Local_InputJson1.json"><SubType>InputMock</SubType></Configure>
    <Configure Include="Functions\\JavaScriptUDF1.js.json"><SubType>JSFunctionConfig</SubType></Configure>
  </ItemGroup>
  <ItemGroup><Script Include="Renamed.asaql" /></ItemGroup>
</Project>
""", bom=True, crlf=True)
    job = load(project)
    assert "startFile Renamed.asaql does not exist; the project's one query file SensorArray.asaql is used" \
        in job.notes
    assert main(["run", str(project), "--output", f"output={tmp_path / 'o'}"]) == 0
    assert len(rows_of(tmp_path / "o")) == 3


def test_javascript_uda_project(tmp_path):
    """A JavaScript UDA (microsoft/vscode-asa#60: ``Type: Aggregate``, called with ``uda.``;
    learn.microsoft.com/azure/stream-analytics/stream-analytics-javascript-user-defined-aggregates)."""
    root = tmp_path / "p"
    write(root / "asaproj.json", {"name": "p", "startFile": "p.asaql", "configurations": [
        {"filePath": "Inputs/Local_readings.json", "subType": "InputMock"},
        {"filePath": "Functions/sumOfSquares.js.json", "subType": "JSFunction"}]})
    write(root / "Inputs" / "Local_readings.json", {"Name": "readings", "Type": "Data Stream",
                                                     "DataSourceType": "Local Input",
                                                     "Serialization": {"Type": "Json"}, "FilePath": "r.json"})
    write(root / "Inputs" / "r.json", [
        {"device": "a", "v": 1, "t": "2024-01-01T00:00:01Z"}, {"device": "a", "v": 2, "t": "2024-01-01T00:00:02Z"},
        {"device": "b", "v": 3, "t": "2024-01-01T00:00:03Z"}, {"device": "a", "v": 4, "t": "2024-01-01T00:00:12Z"}])
    write(root / "Functions" / "sumOfSquares.js", """function main() {
    this.init = function () { this.total = 0; };
    this.accumulate = function (value, timestamp) { this.total += value * value; };
    this.computeResult = function () { return this.total; };
}
""")
    write(root / "Functions" / "sumOfSquares.js.json", {"Name": "sumOfSquares", "Type": "Aggregate",
                                                        "ScriptType": "JSFunction",
                                                        "FunctionInputs": [{"DataType": "bigint"}],
                                                        "OutputType": "bigint"})
    write(root / "p.asaql", "SELECT device, uda.sumOfSquares(v) AS s INTO output\n"
                            "FROM readings TIMESTAMP BY t GROUP BY device, TumblingWindow(second, 10)\n")
    assert main(["run", str(root), "--output", f"output={tmp_path / 'o'}"]) == 0
    # By hand: window [0 s, 10 s): a → 1 + 4 = 5, b → 9; window [10 s, 20 s): a → 16.
    assert sorted((r["device"], r["s"]) for r in rows_of(tmp_path / "o")) == [("a", 5), ("a", 16), ("b", 9)]


def test_leniency_helpers(tmp_path):
    from pipelines.project.common import ProjectError, as_int, is_secret, local_path, read_json

    assert as_int("3", "StreamingUnits", tmp_path) == 3 and as_int(6, "StreamingUnits", tmp_path) == 6
    assert as_int("1/3", "StreamingUnits", tmp_path) is None  # fractional SU of StandardV2
    with pytest.raises(ProjectError, match="StreamingUnits must be a whole number"):
        as_int("three", "StreamingUnits", tmp_path)
    assert [is_secret(v) for v in (None, "", "********", "abc")] == [False, False, False, True]
    assert local_path(tmp_path / "Inputs", "..\\Data\\x.json") == tmp_path / "Data" / "x.json"
    # a Windows drive path cannot exist here: its file name is looked up beside the declaring file
    assert local_path(tmp_path / "Inputs", "D:\\CODE\\asa\\x.json") == tmp_path / "Inputs" / "x.json"
    f = write(tmp_path / "c.json", '{\r\n  "a": 1,\r\n  "b": [\r\n}', bom=True)
    with pytest.raises(ProjectError, match=r"c.json: not valid JSON at line 4, column 1"):
        read_json(f)


def test_json_documents_follow_the_json_lines_rules(tmp_path):
    """Non-finite literals are floats, a row nested deeper than jsoncodec.MAX_DEPTH is a dead
    letter (as for JSON lines), and the rows around it are read."""
    project = passthrough_project(tmp_path / "p", "rules.json")
    deep = '{"deviceId": "deep", "reading": 9, "x": ' + "[" * 100 + "]" * 100 + "}"
    write(project / "Inputs" / "rules.json", '[{"deviceId": "n", "reading": NaN}, {"deviceId": "i", "reading": 1e999}, '
                                             + deep + ', {"deviceId": "b", "reading": 7.0}]')
    out = tmp_path / "o"
    assert main(["run", str(project), "--output", f"output={out}"]) == 0
    # By hand: NaN > 5 is false (filtered); 1e999 is +Infinity > 5, written as null (no invalid JSON).
    assert sorted(rows_of(out), key=lambda r: r["deviceId"]) == [
        {"deviceId": "b", "reading": 7.0}, {"deviceId": "i", "reading": None}]
    dead = rows_of(tmp_path / "dead_letter")
    assert [d["reason"] for d in dead] == ["malformed_json"] and "nested deeper than 64" in dead[0]["message"]
