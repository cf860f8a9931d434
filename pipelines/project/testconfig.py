"""``asa-beam test``: a project's unit tests in the format of Microsoft's ``azure-streamanalytics-cicd test``.

The configuration (default ``test/testConfig.json`` beside ``asaproj.json``)::

    {"Script": "../Project.asaql",
     "TestCases": [{"Name": "Case 1",
                    "Inputs": [{"InputAlias": "input", "Type": "Data Stream", "Format": "Json",
                                "FilePath": "Case1/input.json"}],
                    "ExpectedOutputs": [{"OutputAlias": "output", "FilePath": "Case1/expected.json",
                                         "IgnoreFields": ["EventProcessedUtcTime"], "Required": true}]}]}

``FilePath``s are relative to the configuration's folder. Each case runs the project's query
with the case's inputs (inputs it does not list keep the project's local inputs); each expected
output is compared with what the query wrote, as the tool does since 2.2.4 (rows as objects,
order ignored, ``IgnoreFields`` left out), plus numbers within a small tolerance and datetimes
as instants (``transforms.testing.compare_rows``). ``Required: false`` outputs are not
validated; ``"FilePath": "/dev/null"`` means "no rows". Expected files may be a JSON array,
JSON lines, concatenated objects, or CSV.

One line per test case and a total are printed; ``testResultSummary.json`` (the tool's shape:
``Total, Passed, Failed, Script, Results[{Name, Status, Time, OutputMatched, OutputNotEqual,
OutputMissing, OutputUnexpected, OutputUnrequired}], Time``) is written to the output folder.
Exit codes: 0 every case passed; 1 a case failed; 2 a bad project, test configuration or
query (nothing run); 3 an endpoint refused the calls (wrong URL or key).

Source: learn.microsoft.com/azure/stream-analytics/cicd-tools (the ``test`` command).
"""

from __future__ import annotations

import copy
import csv
import datetime as _dt
import glob
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.project import job_from_translation, read_project
from pipelines.project.common import Keys, ProjectError, local_path, read_json, read_text
from pipelines.project.model import Project, to_translation
from pipelines.project.vscode import apply_mock
from transforms.io.json_documents import iter_documents
from transforms.testing import compare_rows

EXIT_PASSED = 0
EXIT_FAILED = 1
DEV_NULL = "/dev/null"
SHOW_ROWS = 10  # differing rows printed per output; all of them are in testResultSummary.json


@dataclass
class Expected:
    alias: str
    path: Path | None           # None: /dev/null, no rows
    ignore_fields: tuple[str, ...] = ()
    required: bool = True


@dataclass
class TestCase:
    name: str
    inputs: list[tuple[Keys, Path]]
    expected: list[Expected]


@dataclass
class CaseResult:
    name: str
    seconds: float = 0.0
    matched: list[dict] = field(default_factory=list)
    not_equal: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    unexpected: list[dict] = field(default_factory=list)
    unrequired: list[dict] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason → rows
    dead_letter_path: str | None = None

    @property
    def passed(self) -> bool:
        return not self.not_equal and not self.missing

    def to_json(self) -> dict[str, Any]:
        return {"Name": self.name, "Status": 0 if self.passed else 1, "Time": round(self.seconds, 3),
                "OutputMatched": self.matched, "OutputNotEqual": self.not_equal, "OutputMissing": self.missing,
                "OutputUnexpected": self.unexpected, "OutputUnrequired": self.unrequired,
                "DeadLetters": {"Rows": sum(self.dead_letters.values()), "ByReason": self.dead_letters,
                                "Path": self.dead_letter_path}}


def _required(value: Any) -> bool:
    if isinstance(value, str):  # one community generator writes "true"/"false" as strings
        return value.strip().lower() not in ("false", "0", "no")
    return value is None or bool(value)


def read_config(config: Path) -> tuple[str | None, list[TestCase]]:
    doc = read_json(config)
    if not isinstance(doc, dict):
        raise ProjectError(f"{config}: expected an object with Script and TestCases")
    keys = Keys(doc)
    cases = keys.get("TestCases")
    if not isinstance(cases, list) or not cases:
        raise ProjectError(f"{config}: 'TestCases' must list at least one test case")
    out, names = [], set()
    for i, raw in enumerate(cases):
        case = Keys(raw if isinstance(raw, dict) else {})
        name = str(case.get("Name") or f"Case {i + 1}")
        if name.lower() in names:
            raise ProjectError(f"{config}: two test cases are named '{name}'")
        names.add(name.lower())
        inputs = [(Keys(x), config) for x in case.get("Inputs") or [] if isinstance(x, dict)]
        for keys, _ in inputs:  # every file before any case runs
            path = keys.get("FilePath")
            if not path or not local_path(config.parent, path).exists():
                raise ProjectError(f"{config}: test case '{name}', input '{keys.get('InputAlias', 'Name')}': "
                                   f"FilePath {path} does not exist (relative to {config.parent})")
        expected = []
        for j, e in enumerate(case.get("ExpectedOutputs") or []):
            e = Keys(e if isinstance(e, dict) else {})
            alias, path = e.get("OutputAlias", "Name"), e.get("FilePath")
            if not alias or not path:
                raise ProjectError(f"{config}: test case '{name}', ExpectedOutputs[{j}] needs OutputAlias and FilePath")
            target = None if str(path).strip() == DEV_NULL else local_path(config.parent, path)
            if target is not None and not target.is_file():
                raise ProjectError(f"{config}: test case '{name}', output '{alias}': expected output file "
                                   f"{target} does not exist")
            ignore = e.get("IgnoreFields") or []
            if isinstance(ignore, str):
                ignore = [ignore]
            expected.append(Expected(str(alias), target, tuple(str(f) for f in ignore), _required(e.get("Required"))))
        out.append(TestCase(name, inputs, expected))
    return keys.get("Script"), out


def read_rows(path: Path) -> list[dict]:
    """An expected-output file: JSON (array, lines or concatenated objects) or CSV (by extension)."""
    if not path.is_file():
        raise ProjectError(f"expected output file {path} does not exist")
    text = read_text(path)
    if path.suffix.lower() == ".csv":
        return [dict(r) for r in csv.DictReader(text.splitlines())]
    rows = []
    for ok, value in iter_documents(text):
        if not ok:
            raise ProjectError(f"{path}: {value[1]}: {value[0][:80]}")
        if not isinstance(value, dict):
            raise ProjectError(f"{path}: expected JSON objects, found {type(value).__name__}")
        rows.append(value)
    return rows


def _written(prefix: str) -> list[dict]:
    rows = []
    for name in sorted(glob.glob(glob.escape(prefix) + "-*")):
        with open(name, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def run_case(project: Project, case: TestCase, out_dir: Path, function_endpoints: Sequence[str],
             function_keys: Sequence[str]) -> CaseResult:
    from pipelines.run import run_job

    started = time.monotonic()
    p = copy.deepcopy(project)
    for keys, config in case.inputs:
        apply_mock(p, keys, config)
    t = to_translation(p, output_root=out_dir)
    for name, spec in t.doc["outputs"].items():
        spec["format"], spec["num_shards"] = "json", 1  # the comparison reads JSON lines
        spec.pop("path", None)
        spec["path"] = str(out_dir / name)
    job = job_from_translation(t, function_endpoints, function_keys)
    job.check()
    summary = run_job(job, [])
    result = CaseResult(case.name, dead_letters={k: v for k, v in summary.prefixed("dead_letter.").items() if v},
                        dead_letter_path=job.dead_letter.path + "-*")
    written = {n.lower(): n for n in job.plan().output_names()}
    listed = set()
    for e in case.expected:
        listed.add(e.alias.lower())
        entry = {"OutputAlias": e.alias, "ExpectedOutput": str(e.path) if e.path else DEV_NULL}
        if not e.required:
            result.unrequired.append(entry)
            continue
        alias = written.get(e.alias.lower())
        if alias is None:
            result.missing.append({**entry, "Output": None})
            continue
        spec = next(s for n, s in job.outputs.items() if n.lower() == alias.lower())
        entry["Output"] = str(Path(spec.path).parent / f"{Path(spec.path).name}-00000-of-00001.json")
        diff = compare_rows(read_rows(e.path) if e.path else [], _written(spec.path), e.ignore_fields)
        if diff.ok:
            result.matched.append(entry)
        else:
            result.not_equal.append({**entry, "Matched": diff.matched, "MissingRows": diff.missing,
                                     "UnexpectedRows": diff.unexpected})
    for lower, alias in written.items():
        if lower not in listed:
            spec = next(s for n, s in job.outputs.items() if n.lower() == lower)
            result.unexpected.append({"OutputAlias": alias, "ExpectedOutput": None, "Output": spec.path})
    result.seconds = time.monotonic() - started
    return result


def _row(row: dict) -> str:
    return json.dumps(row, default=str, ensure_ascii=False, sort_keys=True)


def describe(result: CaseResult) -> list[str]:
    """The lines printed for one case: PASS/FAIL, and for a failure every differing output and rows."""
    dead = result.dead_letters
    extra = (f"; {sum(dead.values())} row(s) dead-lettered ("
             + ", ".join(f"{reason}: {n}" for reason, n in sorted(dead.items()))
             + f") -> {result.dead_letter_path}") if dead else ""
    if result.passed:
        return [f"PASS  {result.name}: {len(result.matched)} output(s) matched ({result.seconds:.1f} s){extra}"]
    lines = [f"FAIL  {result.name} ({result.seconds:.1f} s){extra}"]
    for m in result.missing:
        lines.append(f"      output '{m['OutputAlias']}': the query writes no such output")
    for n in result.not_equal:
        lines.append(f"      output '{n['OutputAlias']}': {n['Matched']} row(s) matched, "
                     f"{len(n['MissingRows'])} expected row(s) missing, {len(n['UnexpectedRows'])} unexpected "
                     f"(expected {n['ExpectedOutput']})")
        for label, rows in (("missing   ", n["MissingRows"]), ("unexpected", n["UnexpectedRows"])):
            for row in rows[:SHOW_ROWS]:
                lines.append(f"        {label} {_row(row)}")
            if len(rows) > SHOW_ROWS:
                lines.append(f"        ... {len(rows) - SHOW_ROWS} more {label.strip()} row(s): "
                             "see testResultSummary.json")
    return lines


def main(args) -> int:
    import logging

    # Beam's file sink warns when a case's output folder is reused and when an output is empty.
    logging.getLogger("apache_beam.io.filebasedsink").setLevel(logging.ERROR)
    project_path = Path(args.job).absolute()
    project = read_project(project_path, getattr(args, "parameters", None))
    config = Path(args.config).absolute() if args.config else project.base_dir / "test" / "testConfig.json"
    if not config.is_file():
        raise ProjectError(f"test configuration {config} does not exist (give it with --config)")
    script, cases = read_config(config)
    if script:
        named = local_path(config.parent, script)
        if project.query_file is not None and named.name.lower() != project.query_file.name.lower():
            print(f"asa-beam: note: {config.name} names Script {script}; the project's query "
                  f"{project.query_file.name} is tested")
    stamp = _dt.datetime.now().strftime("%Y%m%d%H%M%S")
    out_dir = Path(args.output_dir).absolute() if args.output_dir else project.base_dir / "TestResults" / stamp
    started = time.monotonic()
    results = []
    for case in cases:
        folder = out_dir / (re.sub(r"[^\w.-]+", "_", case.name).strip("_") or "case")
        result = run_case(project, case, folder, args.function_endpoint, args.function_key)
        results.append(result)
        print("\n".join(describe(result)), flush=True)
    passed = sum(r.passed for r in results)
    summary = {"Total": len(results), "Passed": passed, "Failed": len(results) - passed,
               "Script": str(project.query_file or project.source),
               "Results": [r.to_json() for r in results], "Time": round(time.monotonic() - started, 3)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "testResultSummary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    print(f"Total {len(results)}, passed {passed}, failed {len(results) - passed} "
          f"(summary: {out_dir / 'testResultSummary.json'})")
    return EXIT_PASSED if passed == len(results) else EXIT_FAILED
