"""A VS Code ASA project (``asaproj.json``) → ``Project``.

Read, case-insensitively and leniently (BOM, CRLF, ``\\`` paths, null or masked secrets):

* ``asaproj.json``: ``startFile`` (the query) and ``configurations[{filePath, subType}]``; when
  ``configurations`` is empty, the ``*.json`` files of the folder, ``Inputs/``, ``Outputs/`` and
  ``Functions/`` are classified by their ``ScriptType``.
* ``JobConfig.json`` (older: ``Configuration.json``): event ordering, with the VS Code defaults
  (late arrival 5 s, out of order 0 s, Adjust), ``CompatibilityLevel``, ``DataLocale``,
  ``OutputErrorPolicy``; ``StreamingUnits`` / ``Sku.StreamingUnits`` as int or string.
* ``Inputs/*.json``: live inputs (``Name``, ``Type``, ``DataSourceType``, ``Serialization``) and
  local mocks (``ScriptType: InputMock``) in both shapes: ``{InputAlias, Type, Format, FilePath}``
  and ``{Name, Type, DataSourceType: "Local Input", Serialization, FilePath}``; ``FilePath`` is
  relative to the mock's folder. A ``Blob Storage`` input's ``BlobStorageProperties`` /
  ``BlobReferenceProperties`` (``StorageAccounts[{AccountName}]``, ``Container``, ``PathPattern``,
  ``DateFormat``, ``TimeFormat``) say where its blobs are; ``AccountKey`` is never used.
* ``Outputs/*.json``: ``Name``, ``DataSourceType``, ``Serialization``; a Blob output's location as above.
* ``Functions/``: ``<name>.js`` + ``<name>.js.json`` (``JSFunction``, Visual Studio's
  ``JSFunctionConfig``), Azure ML functions (``MLFunction``, shape inferred: see functions.py),
  C# functions (reported as unsupported when called).

Sources: learn.microsoft.com/azure/stream-analytics/quick-create-visual-studio-code,
visual-studio-code-local-run-all, job-config-json (see asa-project-format.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.project.common import Keys, ProjectError, as_int, local_path, lower_word, read_json, read_text
from pipelines.project.functions import CSHARP, is_ml, javascript_spec, ml_spec
from pipelines.project.model import (
    FunctionDecl,
    InputDecl,
    OutputDecl,
    Project,
    blob_location,
    data_format,
    delimiter_of,
    is_blob_kind,
)

PROJECT_FILE = "asaproj.json"
# ASA's VS Code defaults when JobConfig.json leaves them out (job-config-json.md, event-ordering.md).
VSCODE_ORDERING = {"late_arrival_seconds": 5, "out_of_order_seconds": 0, "policy": "adjust"}


def find_project_file(path: Path) -> Path | None:
    """``asaproj.json`` for a folder or the file itself (any case); None when there is none."""
    if path.is_file():
        return path if path.name.lower() == PROJECT_FILE else None
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.name.lower() == PROJECT_FILE and child.is_file():
                return child
    return None


def read_vscode(path: Path) -> Project:
    project_file = find_project_file(path)
    if project_file is None:
        raise ProjectError(f"{path}: no {PROJECT_FILE} here")
    base = project_file.parent
    doc = read_json(project_file)
    if not isinstance(doc, dict):
        raise ProjectError(f"{project_file}: expected a JSON object with startFile and configurations")
    proj = Keys(doc)
    configs = proj.get("configurations") or []
    if not isinstance(configs, list):
        raise ProjectError(f"{project_file}: 'configurations' must be a list")
    entries: list[tuple[Path, str]] = []
    for i, c in enumerate(configs):
        c = Keys(c if isinstance(c, dict) else {})
        if not c.get("filePath"):
            raise ProjectError(f"{project_file}: configurations[{i}] has no filePath")
        entries.append((local_path(base, c.get("filePath")), str(c.get("subType", default=""))))
    return build_project(project_file, "vscode", proj.get("startFile", "scriptFile"), entries)


def build_project(project_file: Path, kind: str, start: str | None, entries: list[tuple[Path, str]]) -> Project:
    """The project from its query (``start``) and its configuration files ``(path, subType)``;
    shared by ``asaproj.json`` and Visual Studio's ``.asaproj`` (an empty list: scan the folders)."""
    base = project_file.parent
    notes: list[str] = []
    query_file = _query_file(start, base, project_file, notes)
    text = read_text(query_file)
    query = text  # CREATE TABLE stays: asa-beam applies it
    project = Project(project_file, kind, query, query_file if query == text else None, str(query_file),
                      event_ordering=dict(VSCODE_ORDERING), notes=notes)
    if not entries:
        entries = _scan(base)
    mocks = []
    for file, sub_type in entries:
        if not file.is_file():
            raise ProjectError(f"{project_file}: configuration file {file} does not exist")
        kind = lower_word(sub_type)
        if file.name.lower().endswith(".js"):  # a .js listed itself: its settings are beside it
            file = file.with_name(file.name + ".json")
        data = read_json(file)
        if not isinstance(data, dict):
            raise ProjectError(f"{file}: expected a JSON object")
        keys = Keys(data)
        kind = kind or lower_word(keys.get("ScriptType"))
        if kind in ("jobconfig", "configuration"):
            _job_config(project, keys, file)
        elif kind == "input":
            _live_input(project, keys, file)
        elif kind == "inputmock":
            mocks.append((keys, file))
        elif kind == "output":
            _output(project, keys, file)
        elif kind in ("jsfunction", "jsfunctionconfig"):
            _js_function(project, keys, file)
        elif kind in ("csharpfunction", "clrfunction"):
            name = keys.get("Name") or _stem(file)
            project.functions[name] = FunctionDecl(name, {}, file, unsupported=CSHARP)
        elif "function" in kind or is_ml(data, kind):
            name = keys.get("Name") or _stem(file)
            project.functions[name] = FunctionDecl(name, ml_spec(data, name, file, notes), file)
        else:
            notes.append(f"{file.name}: subType '{sub_type or keys.get('ScriptType')}' ignored")
    for keys, file in mocks:  # after the live inputs, whatever the order of configurations
        apply_mock(project, keys, file)
    return project


def _stem(file: Path) -> str:
    name = file.name
    for suffix in (".js.json", ".json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return file.stem


def _query_file(start: str | None, base: Path, project_file: Path, notes: list[str]) -> Path:
    found = sorted(base.glob("*.asaql"))
    if start:
        path = local_path(base, start)
        if path.is_file():
            return path
        if len(found) == 1:  # a renamed query file, the project file not updated (seen in real projects)
            notes.append(f"startFile {start} does not exist; the project's one query file {found[0].name} is used")
            return found[0]
        raise ProjectError(f"{project_file}: startFile {path} does not exist")
    if len(found) != 1:
        raise ProjectError(f"{project_file}: no startFile, and {len(found)} .asaql files in {base}")
    return found[0]


def _scan(base: Path) -> list[tuple[Path, str]]:
    """``configurations: []``: classify the project's JSON files by ScriptType."""
    out = []
    for folder in (base, base / "Inputs", base / "Outputs", base / "Functions"):
        if not folder.is_dir():
            continue
        for file in sorted(folder.iterdir()):
            if not file.is_file() or not file.name.lower().endswith(".json") or file.name.lower() == PROJECT_FILE:
                continue
            try:
                data = read_json(file)
            except ProjectError:
                continue
            if isinstance(data, dict) and Keys(data).get("ScriptType"):
                out.append((file, str(Keys(data).get("ScriptType"))))
    return out


def _job_config(project: Project, keys: Keys, file: Path) -> None:
    o = project.event_ordering
    late = keys.get("EventsLateArrivalMaxDelayInSeconds")
    if late is not None:
        o["late_arrival_seconds"] = as_int(late, "EventsLateArrivalMaxDelayInSeconds", file)
    ooo = keys.get("EventsOutOfOrderMaxDelayInSeconds")
    if ooo is not None:
        o["out_of_order_seconds"] = as_int(ooo, "EventsOutOfOrderMaxDelayInSeconds", file)
    policy = keys.get("EventsOutOfOrderPolicy")
    if policy is not None:
        if lower_word(policy) not in ("adjust", "drop"):
            raise ProjectError(f"{file}: EventsOutOfOrderPolicy must be Adjust or Drop, got {policy!r}")
        o["policy"] = lower_word(policy)
    apply_settings(project, keys, file)
    as_int(keys.get("StreamingUnits") or keys.sub("Sku").get("StreamingUnits"), "StreamingUnits", file)


def apply_settings(project: Project, keys: Keys, file: Path) -> None:
    """CompatibilityLevel, DataLocale, OutputErrorPolicy (VS Code's ``Retry`` is ARM's ``Stop``)."""
    compat = keys.get("CompatibilityLevel")
    if compat is not None:
        text = str(compat).strip()
        if text not in ("1.0", "1.1", "1.2"):
            raise ProjectError(f"{file}: CompatibilityLevel must be 1.0, 1.1 or 1.2, got {compat!r}")
        project.settings["compatibility_level"] = text
    if keys.get("DataLocale"):
        project.settings["data_locale"] = str(keys.get("DataLocale"))
    policy = keys.get("OutputErrorPolicy")
    if policy is not None:
        if lower_word(policy) not in ("stop", "drop", "retry"):
            raise ProjectError(f"{file}: OutputErrorPolicy must be Stop, Drop or Retry, got {policy!r}")
        project.settings["output_error_policy"] = lower_word(policy)


def _input(project: Project, name: str) -> InputDecl:
    for key, decl in project.inputs.items():
        if key.lower() == name.lower():
            return decl
    decl = project.inputs[name] = InputDecl(name)
    return decl


def _is_reference(value: Any) -> bool:
    return lower_word(value).startswith("reference")


def _live_input(project: Project, keys: Keys, file: Path) -> None:
    name = keys.get("Name", "InputAlias")
    if not name:
        raise ProjectError(f"{file}: input has no Name")
    decl = _input(project, str(name))
    decl.reference = decl.reference or _is_reference(keys.get("Type"))
    decl.live_kind = str(keys.get("DataSourceType") or "live input")
    decl.declared_in = decl.declared_in or file
    ser = keys.sub("Serialization")
    fmt = data_format(ser.get("Type"), file, f"input '{name}'")
    if fmt == "customclr":
        decl.custom_deserializer = str(ser.get("SerializationClassName", "SerializationDllPath") or file.name)
    elif decl.format is None:
        decl.format = fmt
    decl.delimiter = decl.delimiter or delimiter_of(ser.get("FieldDelimiter"))
    if is_blob_kind(decl.live_kind):
        decl.blob, decl.blob_problem = blob_location(
            blob_properties(keys), file, f"input '{name}'", project.notes)
        compression_note(project, str(name), file,
                         keys.get("CompressionType", "CompresssionType") or keys.sub("Compression").get("Type"))


def compression_note(project: Project, name: str, where: Path, compression: Any) -> None:
    """ASA decompresses a GZip/Deflate blob input whatever its name; Beam by the blob's extension."""
    if compression is not None and lower_word(compression) not in ("", "none"):
        project.notes.append(
            f"input '{name}' ({where}): CompressionType {compression}: blobs are decompressed when their "
            "names end with .gz or .deflate; others are read as they are")


def blob_properties(keys: Keys) -> Keys:
    """The ``BlobStorageProperties`` / ``BlobReferenceProperties`` object (any ``*Properties`` with a
    Container or StorageAccounts; 2020 files hold every kind's object, the unused ones null)."""
    for _, props in keys.items_matching("Properties"):
        if "Container" in props or "StorageAccounts" in props:
            return props
    return keys  # flat (2020 Visual Studio): AccountName / ContainerName at the top


def apply_mock(project: Project, keys: Keys, file: Path) -> None:
    """A local input (InputMock), old or new shape; also used for testConfig's inputs."""
    name = keys.get("InputAlias", "Name", "Alias")
    if not name:
        raise ProjectError(f"{file}: local input has neither InputAlias nor Name")
    if not keys.get("FilePath"):
        raise ProjectError(f"{file}: local input '{name}' has no FilePath")
    decl = _input(project, str(name))
    decl.reference = decl.reference or _is_reference(keys.get("Type"))
    decl.local = local_path(file.parent, keys.get("FilePath"))
    decl.declared_in = decl.declared_in or file
    ser = keys.sub("Serialization")
    fmt = data_format(keys.get("Format") or ser.get("Type"), file, f"local input '{name}'")
    if fmt == "customclr":
        decl.custom_deserializer = str(keys.get("SerializationClassName", "SerializationDllPath")
                                       or ser.get("SerializationClassName", "SerializationDllPath") or file.name)
        decl.format = "customclr"
    else:
        decl.format = fmt or decl.format
    decl.delimiter = delimiter_of(ser.get("FieldDelimiter")) or decl.delimiter
    decl.missing = None if decl.local.exists() else (
        f"local input '{name}' ({file}): FilePath {keys.get('FilePath')} → {decl.local} does not exist "
        f"(FilePath is relative to the folder of that file); give the data with --input {name}=PATH")


def _output(project: Project, keys: Keys, file: Path) -> None:
    name = keys.get("Name", "OutputAlias")
    if not name:
        raise ProjectError(f"{file}: output has no Name")
    ser = keys.sub("Serialization")
    fmt = data_format(ser.get("Type"), file, f"output '{name}'")
    decl = project.outputs[str(name)] = OutputDecl(str(name), str(keys.get("DataSourceType") or "Local"),
                                                   None if fmt == "customclr" else fmt, file)
    if is_blob_kind(decl.kind):
        decl.blob, problem = blob_location(blob_properties(keys), file, f"output '{name}'", project.notes)
        if problem:
            project.notes.append(f"{problem}: --live-outputs cannot write it; it is written locally")


def _js_function(project: Project, keys: Keys, file: Path) -> None:
    name = str(keys.get("Name") or _stem(file))
    script = file.with_name(file.name[: -len(".json")]) if file.name.lower().endswith(".js.json") \
        else file.with_suffix(".js")
    if not script.is_file():
        raise ProjectError(f"function '{name}' ({file}): its script {script.name} is missing")
    project.functions[name] = FunctionDecl(
        name, javascript_spec(keys.get("Type"), str(script), keys.get("OutputType")), file)
