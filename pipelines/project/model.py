"""What the format readers produce (``Project``), and its translation into a job document.

Every format (VS Code project, Visual Studio project, ARM template) is read into a ``Project``:
the query, ASA's job settings, and the declared inputs, outputs and functions with the file
that declared each. ``to_translation`` turns it into the job.yaml mapping that
``pipelines.job.build_job`` validates, applying the run's overrides (``--input``, ``--output``)
and ASA's local-run conventions:

* an input's data is its local mock (or ``--input NAME=PATH``); an input with neither is kept
  as *unavailable* and ``check`` refuses the job if the query reads it;
* an input with no local mock that the project declares in Azure Blob Storage / ADLS Gen2
  reads its blobs: ``azfs://ACCOUNT/CONTAINER/<PathPattern>`` with the input's DateFormat and
  TimeFormat (credentials from the environment, never from the project: ``transforms.io.blob``);
* every output the query writes gets a local file: JSON lines under
  ``LocalRunOutputs/<yyyyMMddHHmmss>/<alias>`` unless ``--output NAME=PATH``; outputs asa-beam
  cannot reach (SQL, Event Hub, Power BI, Cosmos DB, ...) are written there too, and said so.
  Blob outputs are written there as well unless ``live_outputs`` (``--live-outputs``): then to
  ``azfs://ACCOUNT/CONTAINER/<PathPattern>/<alias>`` — never to production storage by surprise.

>>> loc = BlobLocation("acct", "events", "logs/{date}/{time}", "yyyy/MM/dd", "HH")
>>> loc.input_path(), loc.output_path("scored")
('azfs://acct/events/logs/{date}/{time}', 'azfs://acct/events/logs/{date}/{time}/scored')
>>> BlobLocation("acct", "ref", "").input_path(), BlobLocation("acct", "ref", "zones/").input_path()
('azfs://acct/ref/**', 'azfs://acct/ref/zones/**')
>>> BlobLocation("acct", "ref", "zones.csv").input_path(), BlobLocation("acct", "ref", "in").input_path()
('azfs://acct/ref/zones.csv', 'azfs://acct/ref/in/**')
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.project.common import ProjectError, Translation, lower_word

LOCAL_RUN_OUTPUTS = "LocalRunOutputs"

# Serialization / mock Format → asa-beam file format.
FORMATS = {"json": "json", "csv": "csv", "avro": "avro", "parquet": "parquet", "jsonl": "json"}
DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}


@dataclass
class BlobLocation:
    """Where a Blob Storage / ADLS Gen2 input or output of the project lives (no key: never read)."""

    account: str
    container: str
    path_pattern: str = ""
    date_format: str | None = None
    time_format: str | None = None

    def _base(self) -> str:
        return f"azfs://{self.account}/{self.container}"

    def input_path(self) -> str:
        """ASA's input PathPattern → an asa-beam input path (its tokens are resolved by the job).

        The pattern names folders ("cluster1/logs/{date}/{time}"): no pattern reads the whole
        container, a pattern ending with ``/`` or a folder name reads every blob below it, one
        whose last segment has an extension (``zones.csv``, reference data) is that blob.
        """
        pattern = self.path_pattern.replace("\\", "/").lstrip("/")
        if not pattern or pattern.endswith("/"):
            return f"{self._base()}/{pattern}**"
        last = pattern.rsplit("/", 1)[-1]
        if "{" in last or "." in last or any(c in last for c in "*?["):
            return f"{self._base()}/{pattern}"  # a token at the end: the job reads below it
        return f"{self._base()}/{pattern}/**"

    def output_path(self, alias: str) -> str:
        """ASA's output PathPattern (the folder) + the alias as the file prefix."""
        pattern = self.path_pattern.replace("\\", "/").strip("/")
        return f"{self._base()}/{pattern + '/' if pattern else ''}{alias}"

    def formats(self) -> dict[str, str]:
        """``date_format``/``time_format`` entries, when the pattern uses them."""
        out = {}
        if self.date_format and "{date}" in self.path_pattern.lower():
            out["date_format"] = self.date_format
        if self.time_format and "{time}" in self.path_pattern.lower():
            out["time_format"] = self.time_format
        return out


_BLOB_KINDS = ("blob storage", "microsoft.storage/blob", "data lake storage gen2", "adls gen2",
               "blob storage/adls gen2")


def is_blob_kind(kind: str | None) -> bool:
    """Whether a declared DataSourceType / datasource type is Azure Blob Storage or ADLS Gen2."""
    return lower_word(kind) in _BLOB_KINDS


def blob_location(props: Any, where: Path | None, what: str,
                  notes: list[str]) -> tuple[BlobLocation | None, str | None]:
    """(location, None) from a blob datasource's properties, or (None, why it cannot be read).

    ``props`` is a ``Keys`` of ``StorageAccounts[{AccountName, AccountKey}], Container,
    PathPattern, DateFormat, TimeFormat`` (any case). A key in it is never used: credentials come
    from the environment; a real one is noted (without its value) so that the user can remove it.
    """
    from pipelines.project.common import Keys, is_secret

    accounts = props.get("StorageAccounts") or []
    accounts = [Keys(a) for a in accounts if isinstance(a, dict)] if isinstance(accounts, list) else []
    account = accounts[0].get("AccountName") if accounts else props.get("AccountName", "StorageAccountName")
    container = props.get("Container", "ContainerName")
    if any(is_secret(a.get("AccountKey")) for a in accounts) or is_secret(props.get("AccountKey")):
        notes.append(f"{what} ({where}): the storage account key in the file is not used; credentials come "
                     "from the environment (AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with "
                     "AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN)")
    if len(accounts) > 1:
        notes.append(f"{what} ({where}): {len(accounts)} storage accounts declared; the first one is used")
    bad = [n for n, v in (("storage account name", account), ("container", container))
           if not isinstance(v, str) or not v.strip() or v.strip().startswith("[")]
    if bad:
        return None, f"{what} ({where}): Blob Storage without a usable {' and '.join(bad)}"
    pattern = props.get("PathPattern", "PathPrefixPattern", default="")
    return BlobLocation(account.strip(), container.strip().strip("/"), str(pattern or ""),
                        props.get("DateFormat"), props.get("TimeFormat")), None


@dataclass
class InputDecl:
    name: str
    reference: bool = False
    live_kind: str | None = None        # "Event Hub", "IoT Hub", "Blob Storage", ... (None: local only)
    local: Path | None = None           # the local data file (from the mock, or --input)
    format: str | None = None           # json | csv | avro | parquet (None: from the file's extension)
    delimiter: str | None = None
    declared_in: Path | None = None
    custom_deserializer: str | None = None  # CustomClr: what the error names
    missing: str | None = None          # the local file named does not exist: why (check refuses it if read)
    blob: BlobLocation | None = None    # a Blob Storage / ADLS Gen2 input: where its blobs are
    blob_problem: str | None = None     # a blob input whose location cannot be used: why


@dataclass
class OutputDecl:
    name: str
    kind: str = "Local"                 # the sink kind declared in the project ("Blob Storage", "SQL Database", ...)
    format: str | None = None
    declared_in: Path | None = None
    blob: BlobLocation | None = None    # a Blob Storage / ADLS Gen2 output: where --live-outputs writes


@dataclass
class FunctionDecl:
    name: str
    spec: dict[str, Any]                # the job.yaml function entry (type javascript | javascript_uda | azureml)
    declared_in: Path | None = None
    unsupported: str | None = None      # C# UDF: the reason it cannot run


@dataclass
class Project:
    source: Path
    kind: str                           # "vscode" | "vsproj" | "arm"
    query: str
    query_file: Path | None
    query_origin: str | None = None     # where an inline query is (the template, an edited .asaql), for errors
    event_ordering: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, InputDecl] = field(default_factory=dict)
    outputs: dict[str, OutputDecl] = field(default_factory=dict)
    functions: dict[str, FunctionDecl] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source.is_file() else self.source


# Sinks asa-beam writes as files; the others are replaced by a local file of the same alias.
_FILE_SINKS = {"local", "blob storage", "microsoft.storage/blob", "data lake storage gen2",
               "microsoft.datalake/accounts"}


def data_format(value: Any, where: Path | None, what: str) -> str | None:
    """A Serialization type / mock Format → asa-beam's format; CustomClr is refused by the caller."""
    if value is None or str(value).strip() == "":
        return None
    key = lower_word(value)
    if key in FORMATS:
        return FORMATS[key]
    if key in ("customclr", "custom"):
        return "customclr"
    raise ProjectError(f"{where}: {what}: unknown serialization '{value}'; expected Json, CSV, Avro or Parquet")


def delimiter_of(value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    return DELIMITERS.get(text.strip().lower(), text)


def query_names(query: str) -> tuple[list[str], list[str]]:
    """(inputs read, outputs written) by the query, in order (``INTO`` absent → ``output``);
    ([], []) when it does not parse (``check`` then reports the error with its line and column)."""
    from transforms.errors import QueryError
    from transforms.query import ast
    from transforms.query.parser import parse

    try:
        script = parse(query)
    except QueryError:
        return [], []
    inputs: list[str] = []
    outputs: list[str] = []

    def add(names: list[str], name: str) -> None:
        if name.lower() not in {n.lower() for n in names}:
            names.append(name)

    steps = {s.name.lower() for statement in script.statements for s in statement.steps}
    for statement in script.statements:
        queries = [s.query for s in statement.steps] + [statement.query]
        for q in queries:
            for select in (q.parts if isinstance(q, ast.Union) else (q,)):
                for table in (select.source, *(j.table for j in select.joins)):
                    if table.name.lower() not in steps:
                        add(inputs, table.name)
        add(outputs, statement.query.into or "output")
    return inputs, outputs


def _pairs(pairs: list[str] | tuple[str, ...], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ProjectError(f"--{flag} expects NAME=PATH, got '{pair}'")
        from transforms.io.paths import is_url, normalize_path

        url = normalize_path(path)
        out[name.lower()] = url if is_url(url) else str(Path(path).expanduser().absolute())
    return out


def _how_to_give(decl: InputDecl, source: Path, kind: str) -> str:
    role = "reference data" if decl.reference else "stream"
    what = (f"{decl.live_kind} {role}, declared in {decl.declared_in or source}" if decl.live_kind
            else f"read by the query in {decl.declared_in or source}, declared nowhere else")
    return (f"input '{decl.name}' ({what}) has no local data: "
            f"give a file with --input {decl.name}=PATH (JSON array or lines, CSV, Avro, Parquet)"
            + (", or test it with asa-beam test and a testConfig.json (--config)" if kind == "arm" else
               f", or add a local input to the project (Inputs/Local_{decl.name}.json with ScriptType "
               "InputMock and FilePath)"))


def _blob_input(decl: InputDecl) -> dict[str, Any]:
    """A blob input's job entry: its azfs path, ASA's date/time formats, the declared serialization."""
    assert decl.blob is not None
    if decl.custom_deserializer:
        raise ProjectError(
            f"input '{decl.name}' ({decl.declared_in}): custom deserializers (CustomClr, {decl.custom_deserializer}) "
            f"are not supported: give the data as JSON, CSV, Avro or Parquet with --input {decl.name}=PATH")
    fmt = decl.format or "json"
    entry: dict[str, Any] = {"path": decl.blob.input_path(), "format": fmt, **decl.blob.formats()}
    if decl.reference:
        entry["reference"] = True
    if fmt == "json":
        entry["json_layout"] = "auto"  # ASA reads JSON arrays, lines and concatenated objects from blobs
    if fmt == "csv" and decl.delimiter and decl.delimiter != ",":
        entry["delimiter"] = decl.delimiter
    return entry


def to_translation(project: Project, inputs: list[str] | tuple[str, ...] = (),
                   outputs: list[str] | tuple[str, ...] = (), output_root: Path | None = None,
                   now: _dt.datetime | None = None, live_outputs: bool = False) -> Translation:
    """The job document for ``project`` with the run's overrides; see the module docstring."""
    notes = list(project.notes)
    in_over = _pairs(list(inputs), "input")
    out_over = _pairs(list(outputs), "output")
    read, written = query_names(project.query)
    for name in read:  # inputs only the query names (a project whose inputs come from testConfig.json)
        if name.lower() not in {n.lower() for n in project.inputs}:
            project.inputs[name] = InputDecl(name, declared_in=project.query_file or project.source)
    unknown = set(in_over) - {n.lower() for n in project.inputs}
    if unknown:
        raise ProjectError(f"--input names unknown input(s): {', '.join(sorted(unknown))} "
                           f"(the project declares: {', '.join(project.inputs) or 'none'})")

    doc_inputs: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    for decl in project.inputs.values():
        local = in_over.get(decl.name.lower())
        fmt = None if local else decl.format
        if local is None and decl.local is not None:
            if decl.missing:
                unavailable[decl.name] = decl.missing
                doc_inputs[decl.name] = {"path": str(decl.local), "format": "json"}
                continue
            local = str(decl.local)
        if local is None and decl.blob is not None:
            doc_inputs[decl.name] = _blob_input(decl)
            continue
        if local is not None and decl.blob is not None and decl.name.lower() not in in_over:
            blob = decl.blob.input_path()
            notes.append(f"input '{decl.name}' reads its local input {local} (as ASA's local run does), not "
                         f"{blob}; give --input {decl.name}={blob} to read the blobs")
        if local is None:
            how = _how_to_give(decl, project.source, project.kind)
            unavailable[decl.name] = f"{decl.blob_problem}; {how}" if decl.blob_problem else how
            doc_inputs[decl.name] = {"path": str(project.base_dir / f"{decl.name}.unavailable"), "format": "json"}
            continue
        if fmt == "customclr" or (fmt is None and decl.custom_deserializer and not in_over.get(decl.name.lower())):
            raise ProjectError(
                f"input '{decl.name}' ({decl.declared_in}): custom deserializers (CustomClr"
                f"{', ' + decl.custom_deserializer if decl.custom_deserializer else ''}) are not supported: "
                f"give the data as JSON, CSV, Avro or Parquet with --input {decl.name}=PATH")
        if fmt is None:
            from transforms.io import format_from_path

            try:
                fmt = format_from_path(local)
            except ValueError:
                fmt = decl.format if decl.format not in (None, "customclr") else "json"
        if "://" not in local and not any(c in local for c in "*?[") and not Path(local).exists():
            raise ProjectError(f"--input {decl.name}: {local} does not exist")
        entry: dict[str, Any] = {"path": local, "format": fmt}
        if decl.reference:
            entry["reference"] = True
        if fmt == "json":
            entry["json_layout"] = "auto"  # ASA's local files: arrays, lines or concatenated objects
        if fmt == "csv" and decl.delimiter and decl.delimiter != ",":
            entry["delimiter"] = decl.delimiter
        doc_inputs[decl.name] = entry
    if not doc_inputs:
        raise ProjectError(f"{project.source}: the project declares no input")

    names = list(project.outputs)
    for name in written:
        if name.lower() not in {n.lower() for n in names}:
            names.append(name)
            project.outputs[name] = OutputDecl(name)
    if not names:  # the query does not parse: its error, with the file, line and column
        from transforms.errors import QueryError
        from transforms.query.parser import parse

        try:
            parse(project.query)
        except QueryError as e:
            e.args = (f"{project.query_file or project.query_origin or project.source}: {e}",)
            raise
    unknown = set(out_over) - {n.lower() for n in names}
    if unknown:
        raise ProjectError(f"--output names unknown output(s): {', '.join(sorted(unknown))} "
                           f"(the query writes: {', '.join(written) or 'none'})")
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d%H%M%S")
    root = output_root if output_root is not None else project.base_dir / LOCAL_RUN_OUTPUTS / stamp
    doc_outputs: dict[str, Any] = {}
    for name in names:
        decl = project.outputs[name]
        given = out_over.get(name.lower())
        if given is not None:
            from transforms.io import format_from_path

            try:
                fmt = format_from_path(given)
            except ValueError:
                fmt = decl.format if decl.format in ("json", "csv", "avro", "parquet") else "json"
            doc_outputs[name] = {"path": given, "format": fmt}
        elif decl.blob is not None and live_outputs:
            doc_outputs[name] = {"path": decl.blob.output_path(name), "format": decl.format or "json",
                                 **decl.blob.formats()}
        else:
            # ASA's local run: "The result files are only available in JSON format", one per alias.
            doc_outputs[name] = {"path": str(root / name), "format": "json", "num_shards": 1}
            if decl.blob is not None:
                notes.append(f"output '{name}' is a {decl.kind} sink ({decl.blob.output_path(name)}) in the "
                             f"project: written to local file {doc_outputs[name]['path']} instead; "
                             "--live-outputs writes it to the blob")
        if lower_word(decl.kind) not in _FILE_SINKS:
            notes.append(f"output '{name}' is a {decl.kind} sink in the project: written to local file "
                         f"{doc_outputs[name]['path']} instead")
    doc: dict[str, Any] = {
        "query": str(project.query_file) if project.query_file is not None else project.query,
        "inputs": doc_inputs,
        "outputs": doc_outputs,
    }
    overridden = [Path(out_over[n.lower()]) for n in names if n.lower() in out_over]
    dl_root = overridden[0].parent if overridden and len(overridden) == len(names) else root
    doc["dead_letter"] = {"path": str(dl_root / "dead_letter"), "format": "json"}
    functions = {}
    for fn in project.functions.values():
        if fn.unsupported:
            if re.search(rf"\b(udf|uda)\s*\.\s*\[?{re.escape(fn.name)}\]?\s*\(", project.query, re.I):
                raise ProjectError(f"function '{fn.name}' ({fn.declared_in}): {fn.unsupported}")
            notes.append(f"function '{fn.name}' ({fn.declared_in}) is not supported and the query does not call it")
            continue
        functions[fn.name] = fn.spec
    if functions:
        doc["functions"] = functions
    if project.event_ordering:
        doc["event_ordering"] = dict(project.event_ordering)
    doc.update(project.settings)
    origin = None if project.query_file is not None else str(project.query_origin or project.source)
    return Translation(project.source, project.kind, doc, notes, unavailable, origin)
