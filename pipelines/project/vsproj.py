"""A Visual Studio ASA project (``<name>.asaproj``, MSBuild XML) → ``Project``.

Visual Studio (until Microsoft dropped its ASA tools) listed the same files as VS Code's
``asaproj.json``: ``<Script Include="query.asaql"/>`` and ``<Configure Include="Inputs\\x.json">
<SubType>Input</SubType></Configure>``; the files themselves are read as in ``vscode.py``.
Source: Azure/azure-stream-analytics ``Samples/OnnxExample/ASAUDF/StreamAnalyticsOnnxModel.asaproj``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from pipelines.project.common import ProjectError, local_path, read_text
from pipelines.project.model import Project
from pipelines.project.vscode import build_project


def find_vsproj(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() == ".asaproj" else None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".asaproj") if path.is_dir() else []
    return found[0] if len(found) == 1 else None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()  # MSBuild's namespace left out


def read_vsproj(path: Path) -> Project:
    project_file = find_vsproj(path)
    if project_file is None:
        raise ProjectError(f"{path}: expected one *.asaproj file")
    try:
        root = ET.fromstring(read_text(project_file))
    except ET.ParseError as e:
        line, column = e.position
        raise ProjectError(f"{project_file}: not valid XML at line {line}, column {column + 1}") from None
    base = project_file.parent
    start = None
    entries: list[tuple[Path, str]] = []
    for element in root.iter():
        name = _local(element.tag)
        include = element.get("Include")
        if not include:
            continue
        if name == "script" and include.lower().endswith(".asaql"):
            start = start or include
        elif name == "configure":
            sub = next((c.text or "" for c in element if _local(c.tag) == "subtype"), "")
            entries.append((local_path(base, include), sub.strip()))
        elif name in ("content", "none") and include.lower().endswith(".js"):
            pass  # a JavaScript function's script: read through its .js.json
    return build_project(project_file, "vsproj", start, entries)
