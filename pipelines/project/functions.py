"""ASA function declarations (VS Code files, ARM resources) → asa-beam function entries.

* JavaScript UDF (``Type: Scalar``) → ``type: javascript``; UDA (``Type: Aggregate``) →
  ``type: javascript_uda``; the script is the ``.js`` file beside the ``.js.json`` (VS Code) or
  the inline ``script`` (ARM). ``OutputType`` → ``output_type``.
* Azure ML Service function → ``type: azureml`` with ``endpoint``, ``batch_size`` (ASA's
  batchSize, default 1000), ``parallel_requests`` (numberOfParallelRequests, default 1). The
  request and response shape come from the endpoint's swagger, so ``inputs``/``outputs``/
  ``inputRequestName``/``outputResponseName`` are not needed. A key found in the file is never
  used (exports mask it, and a key must not end up in a job file): ``--function-key NAME=ENV_VAR``.
* C# UDF → unsupported (the error names the file when the query calls it).

>>> ml_spec({"Name": "score", "Endpoint": "http://h/score", "BatchSize": "500", "ApiKey": "********"},
...         "score", Path("Functions/score.json"), [])
{'type': 'azureml', 'endpoint': 'http://h/score', 'batch_size': 500, 'parallel_requests': 1}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.project.common import ProjectError, as_int, is_secret

ML_DEFAULT_BATCH = 1000     # ARM: "Number between 1 and 10000 ... Default is 1000"
ML_DEFAULT_PARALLEL = 1     # ARM: numberOfParallelRequests "Default is 1"


def find(obj: Any, *names: str) -> Any:
    """The first non-null value of a key in ``names`` (case-insensitive), searched depth-first
    through nested objects (``properties``, ``binding``, ``*Properties``): the same field sits at
    different depths in VS Code files, ARM resources and REST payloads."""
    wanted = [n.lower() for n in names]
    if isinstance(obj, Mapping):
        lowered = {str(k).lower(): v for k, v in obj.items()}
        for n in wanted:
            if lowered.get(n) is not None:
                return lowered[n]
        for v in obj.values():
            if isinstance(v, Mapping):
                found = find(v, *names)
                if found is not None:
                    return found
    return None


def is_ml(obj: Mapping, kind: str = "") -> bool:
    """An Azure ML function: its ScriptType/subType/binding type names ML, or it has an endpoint."""
    marks = " ".join(str(x) for x in (kind, find(obj, "ScriptType"), find(obj, "type")) if x).lower()
    return ("ml" in marks.replace("html", "") or "machinelearning" in marks
            or find(obj, "endpoint") is not None and find(obj, "script") is None)


def ml_spec(obj: Mapping, name: str, where: Path, notes: list[str]) -> dict[str, Any]:
    binding = find(obj, "binding")
    binding_type = str(find(binding, "type") or "") if isinstance(binding, Mapping) else ""
    if "webservice" in binding_type.lower():
        raise ProjectError(f"function '{name}' ({where}): Azure ML Studio (classic) web services were retired "
                           "on 31 Aug 2024 and are not supported; point it at an Azure ML endpoint with "
                           f"--function-endpoint {name}=URL")
    spec: dict[str, Any] = {"type": "azureml"}
    endpoint = find(obj, "endpoint", "scoringUri", "url")
    if isinstance(endpoint, str) and endpoint.strip():
        spec["endpoint"] = endpoint.strip()
    else:
        notes.append(f"function '{name}' ({where}) has no endpoint: give --function-endpoint {name}=URL")
    spec["batch_size"] = as_int(find(obj, "batchSize", "maxBatchCount"), "batchSize", where) or ML_DEFAULT_BATCH
    spec["parallel_requests"] = (as_int(find(obj, "numberOfParallelRequests", "parallelRequests"),
                                        "numberOfParallelRequests", where) or ML_DEFAULT_PARALLEL)
    if is_secret(find(obj, "apiKey", "key")):
        notes.append(f"function '{name}' ({where}): the key in the file is not used; give the name of an "
                     f"environment variable holding it with --function-key {name}=ENV_VAR")
    return spec


def javascript_spec(kind: Any, script: str, output_type: Any) -> dict[str, Any]:
    """A JavaScript UDF (Scalar) or UDA (Aggregate)."""
    aggregate = str(kind or "scalar").strip().lower() == "aggregate"
    spec: dict[str, Any] = {"type": "javascript_uda" if aggregate else "javascript", "script": script}
    if output_type:
        spec["output_type"] = str(output_type)
    return spec


CSHARP = ("C# UDFs are not supported (asa-beam runs JavaScript UDFs/UDAs and Azure ML functions); "
          "rewrite it as a JavaScript UDF")
