"""The job file: query, inputs, outputs, functions and the dead-letter output (validated).

::

    query: query.asaql            # a path, or the query text inline
    inputs:
      input: {path: data/trips*.jsonl, format: json}   # json | csv | avro | parquet; default from the extension
    outputs:
      output: {path: out/scored, format: json}         # a prefix: <prefix>-00000-of-0000N.<ext>
    functions: {}
    dead_letter: {path: out/failed, format: json}      # optional; default <first output dir>/dead_letter
    compatibility_level: "1.2"    # optional ASA job settings, kept and shown (asa-beam implements 1.2)
    data_locale: en-US
    output_error_policy: stop

Paths are relative to the job file. ``--input NAME=PATH`` / ``--output NAME=PATH`` override them;
``--function-endpoint NAME=URL`` / ``--function-key NAME=ENV_VAR`` an Azure ML function's endpoint
and the variable holding its key. ASA projects and ARM templates become the same ``Job``
(``build_job``; ``pipelines.project``).
A path may be an Azure blob, ``azfs://account/container/path`` (``abfs[s]://`` and ``https://``
blob URLs are mapped to it), and may hold ASA's path pattern tokens (``{date}``, ``{time}`` with
``date_format``/``time_format``; outputs also ``{datetime:..}`` and ``{field}``): see
``transforms.io.paths``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transforms.errors import JobConfigError, QueryError
from transforms.functions.registry import FunctionRegistry
from transforms.io.paths import dirname, is_url, join, normalize_path
from transforms.operators.compile import EventOrdering
from transforms.query.lower import lower
from transforms.query.parser import parse
from transforms.query.plan import Plan

_QUERY_SUFFIXES = (".asaql", ".sql", ".txt")


@dataclass(frozen=True)
class FileSpec:
    name: str
    path: str
    format: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    path: Path
    query: str
    query_file: Path | None
    inputs: dict[str, FileSpec]
    outputs: dict[str, FileSpec]
    dead_letter: FileSpec
    functions_config: dict[str, Any]
    event_ordering: EventOrdering = field(default_factory=EventOrdering)
    # ASA job settings (JOB_SETTINGS), what check reports about a translated project, and the
    # inputs of a project that have no local data (alias → why), refused by check if read.
    settings: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    query_origin: str | None = None  # where an inline query came from (an ARM template), for errors
    _functions: FunctionRegistry | None = None
    _plan: Plan | None = None

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def functions(self) -> FunctionRegistry:
        if self._functions is None:
            self._functions = FunctionRegistry.from_config(self.functions_config, self.base_dir)
        return self._functions

    def plan(self) -> Plan:
        """Parse and bind the query against the declared inputs, outputs and functions."""
        if self._plan is None:
            reference = [n for n, s in self.inputs.items() if s.options.get("reference")]
            try:
                self._plan = lower(parse(self.query), self.functions(), self.inputs.keys(), self.outputs.keys(),
                                   reference)
            except QueryError as e:  # name the file the line and column are in
                origin = self.query_origin or (str(self.query_file) if self.query_file is not None else None)
                if origin:
                    e.args = (f"{origin}: {e}",)
                raise
        return self._plan

    def sample_rows(self, n: int) -> list[dict]:
        """Up to ``n`` rows of the first input, read directly (for ``tune-batch``); local files or blobs."""
        import gzip
        import io
        import itertools
        import json

        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        spec = next(iter(self.inputs.values()))
        if spec.path.startswith("azfs://"):
            from transforms.io.blob import check_access

            matched = check_access(spec.path, f"input '{spec.name}'", must_match=False)
        else:
            matched = FileSystems.match([spec.path])[0].metadata_list
        rows: list[dict] = []
        for path in sorted(m.path for m in matched):
            if len(rows) >= n:
                break
            want = n - len(rows)
            raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
            with gzip.GzipFile(fileobj=raw) if path.lower().endswith(".gz") else raw as f:
                if spec.format in ("json", "csv"):
                    text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
                    if spec.format == "json":
                        for line in itertools.islice((ln for ln in text if ln.strip()), want):
                            try:
                                row = json.loads(line)
                            except ValueError:
                                continue
                            if isinstance(row, dict):
                                rows.append(row)
                    else:
                        import csv

                        rows += list(itertools.islice(csv.DictReader(text), want))
                elif spec.format == "avro":
                    import fastavro

                    rows += list(itertools.islice(fastavro.reader(f), want))
                else:
                    import pyarrow.parquet as pq

                    for batch in pq.ParquetFile(io.BytesIO(f.read())).iter_batches(batch_size=want):
                        rows += batch.to_pylist()[: n - len(rows)]
                        break
        return rows

    def check(self) -> Plan:
        """Everything that can be checked without reading data (functions' configs included)."""
        plan = self.plan()
        missing = [self.unavailable[n] for n in self.unavailable if n.lower() in {i.lower() for i in plan.inputs}]
        if missing:
            raise JobConfigError("\n".join(missing))
        used = {n.lower() for n in plan.functions_used()}
        for fn in self.functions():
            if fn.alias.lower() in used:
                fn.validate()
        unused = [n for n in self.inputs if n.lower() not in {i.lower() for i in plan.inputs}]
        del unused  # an input the query does not read is allowed (ASA allows it too)
        return plan


def _format_of(path: str, given: Any, what: str) -> str:
    from transforms.io import FORMATS, format_from_path

    if given is not None:
        fmt = str(given).lower()
        if fmt not in FORMATS:
            raise JobConfigError(f"{what}: unknown format '{given}'; expected one of {', '.join(FORMATS)}")
        return fmt
    try:
        return format_from_path(path)
    except ValueError as e:
        raise JobConfigError(f"{what}: {e}; set 'format'") from None


def _file_spec(name: str, spec: Any, base: Path, what: str, override: str | None,
               default_format: str | None) -> FileSpec:
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, Mapping):
        raise JobConfigError(f"{what} '{name}': expected a mapping with 'path' (and optionally 'format')")
    path = override or spec.get("path")
    if not path:
        raise JobConfigError(f"{what} '{name}': 'path' is missing")
    if is_url(normalize_path(str(path))):  # a blob (azfs://, abfs[s]://, https://) or another filesystem
        full = normalize_path(str(path))
    else:
        full = str(Path(os.path.expanduser(str(path))) if Path(str(path)).is_absolute() or override
                   else base / str(path))
    spec, full = _path_pattern(spec, full, what, name)
    given = spec.get("format")
    if given is None and default_format is not None:
        try:
            fmt = _format_of(full, None, f"{what} '{name}'")
        except JobConfigError:
            fmt = default_format
    else:
        fmt = _format_of(full, given, f"{what} '{name}'")
    options = {k: v for k, v in spec.items() if k not in ("path", "format")}
    return FileSpec(name, full, fmt, options)


def _path_pattern(spec: Mapping[str, Any], path: str, what: str, name: str) -> tuple[Mapping[str, Any], str]:
    """ASA's path pattern tokens in ``path``: an input's become its glob (``date_format`` and
    ``time_format`` are used up here); an output's are checked now and resolved per row by WriteRows."""
    from transforms.io.paths import OutputPattern, has_tokens, input_glob

    formats = {k: spec[k] for k in ("date_format", "time_format") if k in spec}
    try:
        if what == "input":
            if has_tokens(path):
                path = input_glob(path, formats.get("date_format"), formats.get("time_format"))
            return {k: v for k, v in spec.items() if k not in formats}, path
        OutputPattern(path, formats.get("date_format"), formats.get("time_format"))
    except ValueError as e:
        raise JobConfigError(f"{what} '{name}': {e}") from None
    return spec, path


def _expand_env(value: Any, where: str) -> Any:
    """``${NAME}`` in a function's settings → the environment variable (endpoints differ per machine)."""
    if isinstance(value, str):
        for name in re.findall(r"\$\{(\w+)\}", value):
            if name not in os.environ:
                raise JobConfigError(f"{where}: environment variable {name} is not set")
        return os.path.expandvars(value)
    if isinstance(value, Mapping):
        return {k: _expand_env(v, where) for k, v in value.items()}
    return value


def _overrides(pairs: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise JobConfigError(f"--{what} expects NAME=PATH, got '{pair}'")
        out[name.lower()] = normalize_path(path) if is_url(normalize_path(path)) else str(Path(path).absolute())
    return out


JOB_SETTINGS = {
    # job.yaml key → (allowed values, default): ASA's job settings, recorded and shown by ``check``.
    "compatibility_level": (("1.0", "1.1", "1.2"), "1.2"),
    "data_locale": (None, "en-US"),
    "output_error_policy": (("stop", "drop", "retry"), "stop"),
}


def load_job(path: str | Path, inputs: Sequence[str] = (), outputs: Sequence[str] = (),
             function_endpoints: Sequence[str] = (), function_keys: Sequence[str] = ()) -> Job:
    """Read and validate a job file; raises JobConfigError with a clear message."""
    job_path = Path(path).absolute()
    try:
        text = job_path.read_text(encoding="utf-8")
    except OSError as e:
        raise JobConfigError(f"cannot read job file {path}: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise JobConfigError(f"job file {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return build_job(doc, job_path, inputs, outputs, function_endpoints, function_keys)


def function_overrides(functions: Mapping[str, Any], endpoints: Sequence[str], keys: Sequence[str]) -> dict:
    """``--function-endpoint NAME=URL`` and ``--function-key NAME=ENV_VAR`` applied to a job's functions.

    A key is only ever named by the environment variable that holds it: a value that is not a
    variable name is refused without being repeated (it may be the key itself).
    """
    out = {str(k): dict(v) if isinstance(v, Mapping) else v for k, v in functions.items()}
    by_lower = {k.lower(): k for k in out}
    for flag, pairs in (("function-endpoint", endpoints), ("function-key", keys)):
        for pair in pairs:
            name, sep, value = pair.partition("=")
            if not sep or not name or not value:
                what = "URL" if flag == "function-endpoint" else "ENV_VAR"
                raise JobConfigError(f"--{flag} expects NAME={what}")
            alias = by_lower.get(name.lower())
            if alias is None:
                raise JobConfigError(f"--{flag}: the job has no function '{name}' "
                                     f"(functions: {', '.join(out) or 'none'})")
            spec = out[alias]
            if not isinstance(spec, Mapping) or str(spec.get("type", "")).lower() != "azureml":
                raise JobConfigError(f"--{flag}: function '{alias}' is not an Azure ML function")
            if flag == "function-endpoint":
                spec["endpoint"] = value
                spec.pop("swagger", None)  # the swagger belongs to the endpoint: read it from the new one
            else:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
                    raise JobConfigError(
                        f"--function-key {alias}=...: expects the NAME of an environment variable holding "
                        "the key, not the key itself (keys are never given on the command line)")
                if value not in os.environ:
                    # The value is not repeated: an alphanumeric key passed by mistake looks like a name.
                    raise JobConfigError(f"--function-key {alias}=...: no environment variable of that name is "
                                         "set (give the NAME of a variable holding the key, never the key itself)")
                spec["key_env"] = value
    return out


def build_job(doc: Any, job_path: Path, inputs: Sequence[str] = (), outputs: Sequence[str] = (),
              function_endpoints: Sequence[str] = (), function_keys: Sequence[str] = (),
              notes: Sequence[str] = (), unavailable: Mapping[str, str] | None = None,
              query_origin: str | None = None) -> Job:
    """A job document (the job.yaml mapping; paths relative to ``job_path``'s folder) → a validated Job.

    The project readers (``pipelines.project``) translate ASA projects and ARM templates into
    this document too, with ``notes`` for ``check`` and the inputs that have no local data.
    """
    path = str(job_path)
    if not isinstance(doc, Mapping):
        raise JobConfigError(f"job file {path}: expected a mapping with query, inputs and outputs")
    unknown = set(doc) - {"query", "inputs", "outputs", "functions", "dead_letter", "event_ordering", "name",
                          "description", *JOB_SETTINGS}
    if unknown:
        raise JobConfigError(f"job file {path}: unknown key(s): {', '.join(sorted(unknown))}")
    base = job_path.parent
    query = doc.get("query")
    if not isinstance(query, str) or not query.strip():
        raise JobConfigError(f"job file {path}: 'query' must be a query or the path of a query file")
    query_file = None
    candidate = base / query.strip()
    if "\n" not in query.strip() and (query.strip().lower().endswith(_QUERY_SUFFIXES) or candidate.is_file()):
        if not candidate.is_file():
            raise JobConfigError(f"job file {path}: query file {candidate} does not exist")
        query_file = candidate
        query = candidate.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not query text
    in_over = _overrides(inputs, "input")
    out_over = _overrides(outputs, "output")
    raw_inputs = doc.get("inputs") or {}
    raw_outputs = doc.get("outputs") or {}
    if not isinstance(raw_inputs, Mapping) or not raw_inputs:
        raise JobConfigError(f"job file {path}: 'inputs' must name at least one input")
    if not isinstance(raw_outputs, Mapping) or not raw_outputs:
        raise JobConfigError(f"job file {path}: 'outputs' must name at least one output")
    for over, declared, what in ((in_over, raw_inputs, "input"), (out_over, raw_outputs, "output")):
        missing = set(over) - {str(n).lower() for n in declared}
        if missing:
            raise JobConfigError(f"--{what} names unknown {what}(s): {', '.join(sorted(missing))}")
    ins = {str(n): _file_spec(str(n), s, base, "input", in_over.get(str(n).lower()), None)
           for n, s in raw_inputs.items()}
    outs = {str(n): _file_spec(str(n), s, base, "output", out_over.get(str(n).lower()), "json")
            for n, s in raw_outputs.items()}
    dl_spec = doc.get("dead_letter")
    if dl_spec is None:
        first = next(iter(outs.values())).path.split("{", 1)[0]  # the folder above any path pattern
        folder = first.rstrip("/") if first.endswith("/") else dirname(first)
        dl_spec = {"path": join(folder, "dead_letter"), "format": "json"}
    dead_letter = _file_spec("dead_letter", dl_spec, base, "dead_letter", None, "json")
    functions = doc.get("functions") or {}
    if not isinstance(functions, Mapping):
        raise JobConfigError(f"job file {path}: 'functions' must be a mapping of alias → settings")
    # Overrides first: --function-endpoint replaces an endpoint written as ${VAR}, which need not be set then.
    functions = function_overrides(functions, function_endpoints, function_keys)
    functions = {alias: _expand_env(spec, f"function '{alias}'") for alias, spec in functions.items()}
    ordering = doc.get("event_ordering") or {}
    try:
        event_ordering = EventOrdering(
            late_arrival_s=float(ordering.get("late_arrival_seconds", 5)),
            out_of_order_s=float(ordering.get("out_of_order_seconds", 0)),
            policy=str(ordering.get("policy", "adjust")).lower())
        unknown = set(ordering) - {"late_arrival_seconds", "out_of_order_seconds", "policy"}
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
    except (ValueError, TypeError, AttributeError) as e:
        raise JobConfigError(f"job file {path}: event_ordering: {e}") from None
    settings = {}
    for key, (allowed, default) in JOB_SETTINGS.items():
        value = str(doc.get(key, default))
        if allowed is not None and value.lower() not in allowed:
            raise JobConfigError(f"job file {path}: {key} must be one of {', '.join(allowed)}, got {value!r}")
        settings[key] = value
    return Job(job_path, query, query_file, ins, outs, dead_letter, dict(functions), event_ordering,
               settings=settings, notes=list(notes), unavailable=dict(unavailable or {}), query_origin=query_origin)
