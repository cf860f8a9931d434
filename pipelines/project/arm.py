"""An ARM template of a Stream Analytics job (``Microsoft.StreamAnalytics/streamingjobs``) → ``Project``.

Read: ``properties.transformation.properties.query``; ``inputs[]`` (``type`` Stream|Reference,
``datasource.type``, ``serialization``), ``outputs[]`` (``datasource.type``, ``serialization``),
``functions[]`` (``Microsoft.StreamAnalytics/JavascriptUdf`` with inline ``script``, Scalar or
Aggregate; ``Microsoft.MachineLearningServices``; ``Microsoft.StreamAnalytics/CLRUdf`` refused);
``eventsOutOfOrderPolicy``, ``eventsOutOfOrderMaxDelayInSeconds``,
``eventsLateArrivalMaxDelayInSeconds`` (absent: -1, "wait indefinitely", ARM's default),
``compatibilityLevel``, ``dataLocale``, ``outputErrorPolicy``. Inputs, outputs and functions may
also be separate child resources (``streamingjobs/inputs`` ...). ``[parameters('x')]``
expressions are resolved from the parameters file (``--parameters``, or
``<name>.parameters.json`` beside the template) or the parameter's ``defaultValue``; other
template functions are left as text (only names and settings use them, never the query).

An ARM template has no local data: a Blob Storage input (``Microsoft.Storage/Blob``:
``storageAccounts[0].accountName``, ``container``, ``pathPattern``, ``dateFormat``, ``timeFormat``)
reads its blobs (``azfs://``, credentials from the environment, ``accountKey`` never used); every
other input needs ``--input NAME=PATH`` (or ``asa-beam test`` with a testConfig.json). Blob outputs
are written to their blobs only with ``--live-outputs``.

Sources: learn.microsoft.com/azure/stream-analytics/resource-manager-export; the REST spec
(Azure/azure-rest-api-specs streamanalytics 2021-10-01-preview, Function_Create_AzureMLService).

>>> resolve("[parameters('q')]", {"q": "SELECT 1"}, Path("t.json"))
'SELECT 1'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.project.common import Keys, ProjectError, lower_word, read_json
from pipelines.project.functions import CSHARP, find, is_ml, javascript_spec, ml_spec
from pipelines.project.model import (
    FunctionDecl,
    InputDecl,
    OutputDecl,
    Project,
    blob_location,
    data_format,
    delimiter_of,
)
from pipelines.project.vscode import apply_settings, compression_note

JOB_TYPE = "microsoft.streamanalytics/streamingjobs"
ARM_ORDERING = {"late_arrival_seconds": -1, "out_of_order_seconds": 0, "policy": "adjust"}
_PARAM = re.compile(r"^\[\s*parameters\(\s*'([^']+)'\s*\)\s*\]$", re.I)
_PARAM_INNER = re.compile(r"parameters\(\s*'([^']+)'\s*\)", re.I)

# datasource.type → the kind named in messages (and whether asa-beam writes it as a file anyway)
KINDS = {
    "microsoft.servicebus/eventhub": "Event Hub", "microsoft.eventhub/eventhub": "Event Hub",
    "microsoft.devices/iothubs": "IoT Hub", "microsoft.storage/blob": "Blob Storage",
    "microsoft.sql/server/database": "SQL Database", "microsoft.sql/server/datawarehouse": "Synapse SQL",
    "microsoft.storage/table": "Table Storage", "microsoft.servicebus/queue": "Service Bus queue",
    "microsoft.servicebus/topic": "Service Bus topic", "microsoft.storage/documentdb": "Cosmos DB",
    "microsoft.azurefunction": "Azure Function", "powerbi": "Power BI",
    "microsoft.datalake/accounts": "Data Lake Storage Gen1", "raw": "Raw",
}


def is_arm_template(path: Path) -> bool:
    if not path.is_file() or not path.name.lower().endswith(".json"):
        return False
    try:
        doc = read_json(path)
    except ProjectError:
        return False
    return isinstance(doc, Mapping) and any(
        str(Keys(r).get("type", default="")).lower() == JOB_TYPE for r in Keys(doc).get("resources") or []
        if isinstance(r, Mapping))


def parameters_file(template: Path) -> Path | None:
    """``x.json`` → ``x.parameters.json`` beside it (the names ``asa-beam build``/the portal export use)."""
    name = template.name
    candidate = template.with_name(name[: -len(".json")] + ".parameters.json")
    return candidate if candidate.is_file() else None


def resolve(value: Any, params: Mapping[str, Any], where: Path) -> Any:
    """``[parameters('x')]`` → the parameter's value, recursively through objects and lists."""
    if isinstance(value, str):
        m = _PARAM.match(value.strip())
        if m:
            key = {k.lower(): k for k in params}.get(m.group(1).lower())
            if key is None:
                raise ProjectError(f"{where}: parameter '{m.group(1)}' is not declared in the template's parameters")
            return resolve(params[key], params, where)
        return value
    if isinstance(value, Mapping):
        return {k: resolve(v, params, where) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, params, where) for v in value]
    return value


def _parameters(template: Mapping, template_path: Path, parameters: Path | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, spec in (Keys(template).get("parameters") or {}).items():
        # Declared without a value (secrets are null in exported parameter files): null.
        values[name] = Keys(spec).get("defaultValue") if isinstance(spec, Mapping) else None
    if parameters is not None:
        doc = read_json(parameters)
        entries = Keys(doc).get("parameters") if isinstance(doc, Mapping) else None
        if not isinstance(entries, Mapping):
            raise ProjectError(f"{parameters}: expected a parameters file with a 'parameters' object")
        for name, spec in entries.items():
            if isinstance(spec, Mapping) and "value" in Keys(spec) and Keys(spec).get("value") is not None:
                values[name] = Keys(spec).get("value")
    return values


def read_arm(path: Path, parameters: Path | None = None) -> Project:
    template = read_json(path)
    if not isinstance(template, Mapping):
        raise ProjectError(f"{path}: expected an ARM template (a JSON object with resources)")
    params = _parameters(template, path, parameters or parameters_file(path))
    resources = [r for r in Keys(template).get("resources") or [] if isinstance(r, Mapping)]
    jobs = [r for r in resources if str(Keys(r).get("type", default="")).lower() == JOB_TYPE]
    if len(jobs) != 1:
        raise ProjectError(f"{path}: expected one {JOB_TYPE} resource, found {len(jobs)}")
    job = Keys(resolve(jobs[0], params, path))
    props = job.sub("properties")
    transformation = props.sub("transformation").sub("properties")
    query = transformation.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ProjectError(f"{path}: the job has no transformation query")
    notes: list[str] = []
    query = query.replace("\r\n", "\n")  # CREATE TABLE stays: asa-beam applies it
    project = Project(path, "arm", query, None, f"{path} (transformation query)",
                      event_ordering=dict(ARM_ORDERING), notes=notes)
    o = project.event_ordering
    if props.get("eventsLateArrivalMaxDelayInSeconds") is not None:
        o["late_arrival_seconds"] = int(props.get("eventsLateArrivalMaxDelayInSeconds"))
    if props.get("eventsOutOfOrderMaxDelayInSeconds") is not None:
        o["out_of_order_seconds"] = int(props.get("eventsOutOfOrderMaxDelayInSeconds"))
    if props.get("eventsOutOfOrderPolicy") is not None:
        policy = lower_word(props.get("eventsOutOfOrderPolicy"))
        if policy not in ("adjust", "drop"):
            raise ProjectError(f"{path}: eventsOutOfOrderPolicy must be Adjust or Drop, got {policy!r}")
        o["policy"] = policy
    apply_settings(project, props, path)

    children: dict[str, list[Mapping]] = {"inputs": [], "outputs": [], "functions": []}
    for kind in children:
        children[kind] += [x for x in props.get(kind) or [] if isinstance(x, Mapping)]
    for r in resources:  # child resources: streamingjobs/inputs, .../outputs, .../functions
        rtype = str(Keys(r).get("type", default="")).lower()
        for kind in children:
            if rtype == f"{JOB_TYPE}/{kind}":
                item = dict(resolve(r, params, path))
                name = str(Keys(item).get("name", default=""))
                # "[concat(parameters('job'), '/score')]" or "job/score": the child's own name is last
                literal = re.search(r"'/([^']+)'\s*\)\s*\]$", name)
                item["name"] = literal.group(1) if literal else name.split("/")[-1]
                children[kind].append(item)
    for item in children["inputs"]:
        _input(project, Keys(item), path)
    for item in children["outputs"]:
        _output(project, Keys(item), path)
    for item in children["functions"]:
        _function(project, Keys(item), path, notes)
    return project


def _kind(datasource: Keys) -> str:
    t = str(datasource.get("type", default="")).strip()
    return KINDS.get(t.lower(), t or "unknown")


def _input(project: Project, item: Keys, path: Path) -> None:
    name = str(item.get("name", default=""))
    if not name:
        raise ProjectError(f"{path}: an input has no name")
    p = item.sub("properties")
    ser = p.sub("serialization")
    fmt = data_format(ser.get("type"), path, f"input '{name}'")
    decl = InputDecl(name, reference=lower_word(p.get("type")).startswith("reference"),
                     live_kind=_kind(p.sub("datasource")), declared_in=path)
    if fmt == "customclr":
        decl.custom_deserializer = str(find(ser, "serializationClassName", "serializationDllPath") or "CustomClr")
    else:
        decl.format = fmt
    decl.delimiter = delimiter_of(find(ser, "fieldDelimiter"))
    if decl.live_kind == "Blob Storage":
        decl.blob, decl.blob_problem = blob_location(
            p.sub("datasource").sub("properties"), path, f"input '{name}'", project.notes)
        compression_note(project, name, path, p.sub("compression").get("type"))
    project.inputs[name] = decl


def _output(project: Project, item: Keys, path: Path) -> None:
    name = str(item.get("name", default=""))
    if not name:
        raise ProjectError(f"{path}: an output has no name")
    p = item.sub("properties")
    fmt = data_format(p.sub("serialization").get("type"), path, f"output '{name}'")
    kind = _kind(p.sub("datasource"))
    decl = project.outputs[name] = OutputDecl(name, kind, None if fmt == "customclr" else fmt, path)
    if kind == "Blob Storage":
        decl.blob, problem = blob_location(p.sub("datasource").sub("properties"), path, f"output '{name}'",
                                           project.notes)
        if problem:
            project.notes.append(f"{problem}: --live-outputs cannot write it; it is written locally")


def _function(project: Project, item: Keys, path: Path, notes: list[str]) -> None:
    name = str(item.get("name", default=""))
    if not name:
        raise ProjectError(f"{path}: a function has no name")
    p = item.sub("properties")
    inner = p.sub("properties")
    binding = (inner if inner else p).sub("binding")
    btype = str(binding.get("type", default="")).lower()
    where = Path(f"{path}#functions/{name}")
    if btype == "microsoft.streamanalytics/javascriptudf":
        script = binding.sub("properties").get("script")
        if not isinstance(script, str) or not script.strip():
            raise ProjectError(f"function '{name}' ({path}): the JavaScript binding has no script")
        output = (inner if inner else p).sub("output").get("dataType")
        project.functions[name] = FunctionDecl(name, javascript_spec(p.get("type"), script, output), where)
    elif btype == "microsoft.streamanalytics/clrudf":
        project.functions[name] = FunctionDecl(name, {}, where, unsupported=CSHARP)
    elif is_ml(dict(binding), btype) or "machinelearning" in btype:
        project.functions[name] = FunctionDecl(name, ml_spec(dict(binding), name, where, notes), where)
    else:
        raise ProjectError(f"function '{name}' ({path}): binding type '{binding.get('type')}' is not supported")
