"""The CLI as a user runs it (a subprocess): no third-party warnings on the terminal unless
``--verbose`` (issue 13), JSON-lines files ending with a newline, and a job over a file with a
100,000-deep line among good rows ending normally (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXE = Path(sys.executable).with_name("asa-beam")
THIRD_PARTY = ("WARNING", "apitools", "Deleting", "No shards found", "apache_beam", "Traceback")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "pipelines.cli"]
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # warnings shown as a user's shell would
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def job(tmp_path: Path) -> Path:
    good = [json.dumps({"id": i, "x": i * 0.5}) for i in range(5)]
    deep = '{"id": 99, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines = good[:2] + [deep] + good[2:] + ['{"id": 7, "x": NaN}']
    (tmp_path / "in.json").write_text("\n".join(lines) + "\n")
    (tmp_path / "job.yaml").write_text(
        "query: |\n  SELECT id, x INTO out FROM src\n"
        "inputs:\n  src: {path: in.json}\n"
        "outputs:\n  out: {path: o/out, format: json}\n"
        "dead_letter: {path: o/dead}\n")
    return tmp_path / "job.yaml"


def _clean(stderr: str) -> None:
    assert not [w for w in THIRD_PARTY if w in stderr], stderr


def _json_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path.name} does not end with a newline"

    def reject(name):
        raise ValueError(name)

    return [json.loads(x, parse_constant=reject) for x in data.decode("utf-8").splitlines()]


def test_help_and_check_print_no_third_party_warnings(job):
    for args in (("--help",), ("run", "--help"), ("check", str(job))):
        r = cli(*args, cwd=job.parent)
        assert r.returncode == 0, r.stderr
        _clean(r.stderr)


def test_run_with_a_deep_line_ends_normally_quietly_and_files_end_with_newlines(job):
    for _ in range(2):  # the second run replaces the outputs: Beam's "Deleting ..." warning
        r = cli("run", str(job), cwd=job.parent)
        assert r.returncode == 0, r.stderr
        _clean(r.stderr)
    (out,) = (job.parent / "o").glob("out-*.json")
    (dead,) = (job.parent / "o").glob("dead-*.json")
    rows = sorted(_json_lines(out), key=lambda r: r["id"])
    assert rows == [{"id": i, "x": i * 0.5} for i in range(5)] + [{"id": 7, "x": None}]
    (letter,) = _json_lines(dead)
    assert letter["reason"] == "malformed_json" and "nested deeper than 64" in letter["message"]
    assert letter["raw"].startswith('{"id": 99')
    # `cat` of two output files keeps lines apart.
    joined = out.read_bytes() + dead.read_bytes()
    assert len(joined.splitlines()) == 7


def test_verbose_shows_them(job):
    cli("run", str(job), "--quiet", cwd=job.parent)
    r = cli("run", str(job), "--quiet", "--verbose", cwd=job.parent)
    assert r.returncode == 0, r.stderr
    assert "Deleting" in r.stderr  # Beam's warning on replacing outputs, hidden without --verbose
