"""Bring your ASA project: VS Code projects, Visual Studio projects and ARM templates as asa-beam jobs.

Each format has its reader (``vscode.py``, ``vsproj.py``, ``arm.py``; ``testconfig.py`` for
``azure-streamanalytics-cicd test`` configurations). They read into a ``model.Project``, which
``model.to_translation`` turns into the job document of a job.yaml; ``pipelines.job.build_job``
validates it into the one ``Job`` that ``run``/``check``/``explain``/``test`` use. ``import``
writes the document as a job.yaml.

>>> kind_of(Path("job.yaml"))
'job'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.project.common import ProjectError, Translation
from pipelines.project.model import Project, to_translation

__all__ = ["ProjectError", "Translation", "check_blob_access", "kind_of", "load", "read_project", "translate",
           "write_job_file"]


def kind_of(path: Path) -> str:
    """``job`` (a job.yaml), ``vscode`` (asaproj.json or its folder), ``vsproj`` (*.asaproj), ``arm``."""
    from pipelines.project.arm import is_arm_template
    from pipelines.project.vscode import find_project_file

    name = path.name.lower()
    if name.endswith((".yaml", ".yml")):
        return "job"
    if find_project_file(path) is not None:
        return "vscode"
    if name.endswith(".asaproj") or (path.is_dir() and any(p.suffix.lower() == ".asaproj" for p in path.iterdir())):
        return "vsproj"
    if is_arm_template(path):
        return "arm"
    if path.is_dir():
        raise ProjectError(f"{path}: no asaproj.json, *.asaproj or job.yaml in this folder")
    if not path.exists():
        raise ProjectError(f"{path} does not exist")
    raise ProjectError(f"{path}: not a job.yaml, an asaproj.json, a *.asaproj or an ARM template of a "
                       "Stream Analytics job (Microsoft.StreamAnalytics/streamingjobs)")


def read_project(path: str | Path, parameters: str | Path | None = None) -> Project:
    path = Path(path).absolute()
    kind = kind_of(path)
    if parameters is not None and kind != "arm":
        raise ProjectError("--parameters is for ARM templates")
    if kind == "vscode":
        from pipelines.project.vscode import read_vscode

        return read_vscode(path)
    if kind == "vsproj":
        from pipelines.project.vsproj import read_vsproj

        return read_vsproj(path)
    if kind == "arm":
        from pipelines.project.arm import read_arm

        if parameters is not None and not Path(parameters).is_file():
            raise ProjectError(f"--parameters: {parameters} does not exist")
        return read_arm(path, Path(parameters).absolute() if parameters else None)
    raise ProjectError(f"{path} is a job file, not a project")


def translate(path: str | Path, parameters: str | Path | None = None, inputs: Sequence[str] = (),
              outputs: Sequence[str] = (), output_root: Path | None = None, live_outputs: bool = False) -> Translation:
    return to_translation(read_project(path, parameters), tuple(inputs), tuple(outputs), output_root,
                          live_outputs=live_outputs)


def job_from_translation(t: Translation, function_endpoints: Sequence[str] = (),
                         function_keys: Sequence[str] = ()):
    from pipelines.job import build_job

    # The job's own path is the project file: relative paths in messages are the project's.
    return build_job(t.doc, t.source if t.source.is_file() else t.source / "asaproj.json", (), (),
                     function_endpoints, function_keys, notes=t.notes, unavailable=t.unavailable,
                     query_origin=t.query_origin)


def load(path: str | Path, *, parameters: str | Path | None = None, inputs: Sequence[str] = (),
         outputs: Sequence[str] = (), function_endpoints: Sequence[str] = (),
         function_keys: Sequence[str] = (), output_root: Path | None = None, live_outputs: bool = False):
    """A job.yaml, a project folder / asaproj.json / *.asaproj, or an ARM template → a ``Job``.

    ``live_outputs``: a project's Blob Storage outputs are written to their blobs (default: local
    files under ``LocalRunOutputs/``, as ASA's local run does)."""
    from pipelines.job import load_job

    p = Path(path)
    if kind_of(p.absolute()) == "job":
        if parameters is not None:
            raise ProjectError("--parameters is for ARM templates, not job files")
        if live_outputs:
            raise ProjectError("--live-outputs is for ASA projects and ARM templates: a job file's outputs "
                               "are where it says")
        return load_job(p, inputs, outputs, function_endpoints, function_keys)
    t = translate(p, parameters, inputs, outputs, output_root, live_outputs)
    return job_from_translation(t, function_endpoints, function_keys)


def check_blob_access(job) -> None:
    """``check``: every blob the job reads is listed and every blob folder it writes is reachable,
    with the credentials of the environment — no data is read. A rejected key, a missing
    container or no credentials is a ``JobConfigError`` naming the input or output and the path,
    never a secret (``transforms.io.blob``)."""
    from transforms.errors import JobConfigError
    from transforms.io.blob import BlobAccessError, check_access
    from transforms.io.paths import blob_folder, is_blob

    read = {n.lower() for n in job.plan().inputs}
    checks = [(f"input '{n}'", s.path, True) for n, s in job.inputs.items() if n.lower() in read]
    checks += [(f"output '{n}'", blob_folder(s.path), False) for n, s in job.outputs.items()]
    checks.append(("dead_letter", blob_folder(job.dead_letter.path), False))
    for what, path, must_match in checks:
        if is_blob(path):
            try:
                check_access(path, what, must_match=must_match)
            except BlobAccessError as e:
                raise JobConfigError(str(e)) from None


def _relative(value: Any, base: Path) -> Any:
    if isinstance(value, str) and os.path.isabs(value) and "\n" not in value:
        return os.path.relpath(value, base)
    return value


def write_job_file(t: Translation, out: Path) -> None:
    """``asa-beam import``: the translation as a job.yaml; paths relative to its folder, notes as comments."""
    import yaml

    base = out.absolute().parent
    doc = dict(t.doc)
    doc["query"] = _relative(doc["query"], base)
    for section in ("inputs", "outputs"):
        doc[section] = {n: {**s, "path": _relative(s["path"], base)} for n, s in doc[section].items()}
    doc["dead_letter"] = {**doc["dead_letter"], "path": _relative(doc["dead_letter"]["path"], base)}
    if "functions" in doc:
        doc["functions"] = {n: {**s, **({"script": _relative(s["script"], base)} if "script" in s else {})}
                            for n, s in doc["functions"].items()}
    header = [f"# Imported by asa-beam from {t.source} ({t.kind})."]
    header += [f"# NOTE: {n}" for n in t.notes]
    header += [f"# UNAVAILABLE: {m}" for m in t.unavailable.values()]
    text = "\n".join(header) + "\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
