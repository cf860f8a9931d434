"""The live progress line (TTY: one updating line; otherwise periodic lines; --quiet: nothing),
the live counts' path from worker processes, ``explain --format mermaid|dot`` and ``--report``."""

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]

from pipelines.cli import main  # noqa: E402
from pipelines.progress import format_line  # noqa: E402
from transforms import progress  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^asa-beam: \d+:\d\d read [\d,]+ rows \([\d,]+/s\)( \| written [^|]+)? \| dead letters [\d,]+$")


def job_file(tmp_path: Path, rows: int = 20000) -> Path:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "v": str(i) if i % 1000 else "x"}) + "\n"
                                               for i in range(rows)))
    job = tmp_path / "job.yaml"
    job.write_text(
        "query: |\n"
        "  WITH w AS (SELECT id, CAST(v AS bigint) AS n FROM src WHERE id % 2 = 0)\n"
        "  SELECT id, n INTO evens FROM w\n"
        "  SELECT COUNT(*) AS c INTO counts FROM src GROUP BY TumblingWindow(day, 1)\n"
        "inputs:\n  src: {path: in.jsonl}\n"
        "outputs:\n  evens: {path: out/evens}\n  counts: {path: out/counts}\n"
        "functions: {}\n")
    return job


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, **kw)


def test_plain_progress_lines_when_stderr_is_not_a_terminal_and_none_when_quiet(tmp_path):
    job = job_file(tmp_path)
    proc = run_cli("run", str(job), "--progress-interval", "0.2")
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("asa-beam: ") and " read " in x]
    assert lines and all(LINE.match(x) for x in lines), proc.stderr
    assert "\r" not in proc.stderr
    quiet = run_cli("run", str(job), "--quiet", "--progress-interval", "0.2")
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert " read " not in quiet.stderr


def test_one_updating_line_on_a_terminal(tmp_path):
    job = job_file(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(job)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    stdout, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    text = seen.decode()
    updates = [u for u in text.split("\r") if u.startswith("asa-beam: ")]
    assert updates and "\n" not in "".join(updates).rstrip(" ")  # rewritten in place, never a new line
    assert LINE.match(updates[-1].rstrip())
    assert "written  evens: 9980 rows" in stdout  # 10000 even ids; the 20 multiples of 1000 fail the cast


def test_worker_processes_send_live_counts_to_the_driver():
    code = ("from transforms import progress; import time\n"
            "progress.add('rows_read.src', 4096); progress.add('dead_letters', 3); time.sleep(1.5)\n")
    progress.reset()
    with progress.Listener():
        # A child process is what an SDK worker is: it inherits the driver's environment.
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
        deadline = time.monotonic() + 10
        while progress.snapshot().get("dead_letters") != 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert progress.snapshot() == {"rows_read.src": 4096, "dead_letters": 3}
    assert progress.ENV not in os.environ


def seed_like_job(tmp_path: Path) -> Path:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "x": i % 5}) + "\n" for i in range(50)))
    job = tmp_path / "job.yaml"
    job.write_text(
        "query: |\n"
        "  WITH s AS (SELECT id, udf.plus(x) AS y FROM src WHERE x > 0)\n"
        "  SELECT id, y INTO out FROM s\n"
        "inputs:\n  src: {path: in.jsonl}\n"
        "outputs:\n  out: {path: o/out}\n"
        "functions:\n  plus:\n    type: javascript\n    script: \"function main(a) { return a + 1; }\"\n")
    return job


def test_explain_draws_inputs_steps_outputs_and_function_calls(tmp_path, capsys):
    job = seed_like_job(tmp_path)
    assert main(["explain", str(job), "--format", "mermaid"]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart LR\n")
    node = {label: nid for nid, label in re.findall(r"^  (\w+)\W+\"?([\w. ]+?)(?: \(|<br/>|\")", mermaid, re.M)}
    assert {"src", "s", "Select into out", "out", "udf.plus", "dead letters"} <= set(node)
    edges = set(re.findall(r"^  (\w+) -(?:->|\.->)(?:\|[^|]*\|)? (\w+)$", mermaid, re.M))
    assert edges == {(node["src"], node["s"]), (node["s"], node["udf.plus"]),
                     (node["s"], node["Select into out"]), (node["Select into out"], node["out"])}
    assert main(["explain", str(job), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph job {") and dot.rstrip().endswith("}")
    assert f'{node["s"]} -> {node["udf.plus"]} [label="calls", style=dashed];' in dot


def test_report_writes_the_summary_as_json_and_the_diagram_with_row_counts(tmp_path, capsys):
    job = seed_like_job(tmp_path)
    assert main(["run", str(job), "--report", str(tmp_path / "report"), "--quiet"]) == 0
    report = json.loads((tmp_path / "report" / "summary.json").read_text())
    # By hand: x = id % 5, so 10 of 50 rows have x = 0 and are filtered; 40 are written.
    assert report["inputs"] == {"src": {"rows": 50}}
    assert report["outputs"]["out"]["rows"] == 40
    steps = {s["step"]: s for s in report["steps"]}
    assert (steps["s"]["in"], steps["s"]["out"], steps["s"]["filtered"], steps["s"]["dead_letters"]) == (50, 40, 10, 0)
    assert report["accounting"] == {"ok": True, "errors": []}
    mermaid = (tmp_path / "report" / "job.mmd").read_text()
    assert "50 in → 40 out<br/>filtered 10" in mermaid and "-->|40 rows|" in mermaid
    assert "50 in → 40 out\\nfiltered 10" in (tmp_path / "report" / "job.dot").read_text()


def test_ml_requests_in_flight_and_retries_are_counted_live(fake_endpoint):
    from pipelines.serving.fake import Fault
    from tests.functions.test_azureml_client import FakeClock, client_for

    ep = fake_endpoint()
    ep.plan(Fault(status=503, count=2))  # two transient failures, then the answer
    progress.reset()
    with client_for(ep, FakeClock(), max_attempts=5) as c:
        c.call([[1.0, 2.0]])
    counts = progress.snapshot()
    assert (counts["ml.requests"], counts["ml.retries"], counts["ml.in_flight"]) == (3, 2, 0)
    assert "ML requests 3 (0 in flight, 2 retries)" in format_line(counts, 1.0)
