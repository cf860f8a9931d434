"""A picture of a job and the report of a run.

``diagram(job, fmt)`` draws the inputs, steps, outputs and function calls of a job as a
Mermaid flowchart (GitHub and most docs render it) or a Graphviz DOT graph; given a run's
summary, nodes and edges carry the row counts, the way ASA's job diagram shows input and
output events per step. ``write_report(dir, job, summary)`` writes ``summary.json`` (the run
summary, including the per-step row accounting) and ``job.mmd`` / ``job.dot`` with counts.

    >>> quote_mermaid('a "b" <c>')
    'a #quot;b#quot; #lt;c#gt;'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.job import Job
from transforms.operators.accounting import value
from transforms.query.plan import SelectStep

FORMATS = ("mermaid", "dot")


@dataclass(frozen=True)
class Node:
    id: str
    label: str  # lines joined with "\n"
    kind: str  # input | reference | step | output | function | dead


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    label: str = ""
    dotted: bool = False


def graph(job: Job, summary: Any = None) -> tuple[list[Node], list[Edge]]:
    """Nodes and edges of the job; with a run ``summary``, labelled with row counts."""
    plan = job.plan()
    counters = summary.counters if summary is not None and summary.metrics_available else None
    ledger = summary.ledger if summary is not None else None
    ids: dict[str, str] = {}

    def node_id(kind: str, name: str) -> str:
        return ids.setdefault(f"{kind}:{name.lower()}", f"{kind[0]}{len(ids)}")

    def n(name: str) -> int | None:
        return None if counters is None else value(counters, name)

    def rows(k: int | None) -> str:
        return "" if k is None else f"{k:,} rows"

    nodes: list[Node] = []
    edges: list[Edge] = []
    produced: dict[str, tuple[str, int | None]] = {}  # source name → (node id, rows it gives)
    for name in plan.inputs:
        spec = next(s for k, s in job.inputs.items() if k.lower() == name.lower())
        kind = "reference" if spec.options.get("reference") else "input"
        count = n(f"input.{name}.rows")
        label = "\n".join(x for x in (f"{name} ({'reference data' if kind == 'reference' else 'input'})",
                                      f"{spec.format}: {spec.path}", rows(count)) if x)
        nodes.append(Node(node_id("input", name), label, kind))
        produced[name.lower()] = (node_id("input", name), count)
    records = ledger.steps if ledger is not None else {}
    for step in plan.steps:
        sid = node_id("step", step.name)
        record = records.get(step.name)
        lines = [step.name]
        if counters is not None and record is not None:
            out = sum(value(counters, c) for c in record.out)
            joined = "".join(f" (+{sum(value(counters, c) for c in terms):,} from {alias})"
                             for alias, terms in record.joined)
            lines.append(f"{sum(value(counters, c) for c in record.ins):,} in{joined} → {out:,} out")
            filtered = sum(v for k, v in counters.items()
                           if k.startswith(f"step.{step.name}.") and k.endswith(".filtered"))
            dead = sum(value(counters, c) for c in record.dead)
            if filtered:
                lines.append(f"filtered {filtered:,}")
            if dead:
                lines.append(f"dead-lettered {dead:,}")
            produced_rows = out
        else:
            produced_rows = None
        nodes.append(Node(sid, "\n".join(lines), "step"))
        for source in step.sources:
            src_id, src_rows = produced[source.lower()]
            edges.append(Edge(src_id, sid, rows(src_rows)))
        if isinstance(step, SelectStep):
            functions = [f"udf.{c.function}" for c in step.calls]
            if step.grouping is not None:
                functions += [f"uda.{a.function}" for a in step.grouping.aggregates if a.function]
            for fn in dict.fromkeys(functions):
                fid = node_id("function", fn)
                if not any(x.id == fid for x in nodes):
                    registered = job.functions().lookup(fn.split(".", 1)[1])
                    kind = registered.describe() if registered is not None else fn
                    nodes.append(Node(fid, f"{fn}\n{kind}", "function"))
                edges.append(Edge(sid, fid, "calls", dotted=True))
        produced[step.name.lower()] = (sid, produced_rows)
    for name in plan.output_names():
        spec = next(s for k, s in job.outputs.items() if k.lower() == name.lower())
        oid = node_id("output", name)
        label = "\n".join(x for x in (f"{name} (output)", f"{spec.format}: {spec.path}",
                                      rows(n(f"output.{name}.rows"))) if x)
        nodes.append(Node(oid, label, "output"))
        for binding in plan.outputs:
            if binding.output == name:
                src_id, src_rows = produced[binding.step.lower()]
                edges.append(Edge(src_id, oid, rows(src_rows)))
    dead = n("dead_letter.*")
    nodes.append(Node("dead", "\n".join(x for x in ("dead letters", f"{job.dead_letter.format}: {job.dead_letter.path}",
                                                     rows(dead)) if x), "dead"))
    return nodes, edges


def quote_mermaid(text: str) -> str:
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


_MERMAID_SHAPES = {"input": ('[/"', '"/]'), "reference": ('[("', '")]'), "step": ('["', '"]'),
                   "output": ('[\\"', '"/]'), "function": ('{{"', '"}}'), "dead": ('[("', '")]')}


def to_mermaid(nodes: list[Node], edges: list[Edge]) -> str:
    lines = ["flowchart LR"]
    for node in nodes:
        open_, close = _MERMAID_SHAPES[node.kind]
        lines.append(f"  {node.id}{open_}{'<br/>'.join(quote_mermaid(x) for x in node.label.splitlines())}{close}")
    for e in edges:
        arrow = "-.->" if e.dotted else "-->"
        label = f"|{quote_mermaid(e.label)}|" if e.label else ""
        lines.append(f"  {e.src} {arrow}{label} {e.dst}")
    return "\n".join(lines) + "\n"


_DOT_SHAPES = {"input": "parallelogram", "reference": "cylinder", "step": "box", "output": "invhouse",
               "function": "hexagon", "dead": "cylinder"}


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(nodes: list[Node], edges: list[Edge]) -> str:
    lines = ["digraph job {", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for node in nodes:
        lines.append(f"  {node.id} [shape={_DOT_SHAPES[node.kind]}, label={_dot_quote(node.label)}];")
    for e in edges:
        attrs = [f"label={_dot_quote(e.label)}"] if e.label else []
        if e.dotted:
            attrs.append("style=dashed")
        lines.append(f"  {e.src} -> {e.dst}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def diagram(job: Job, fmt: str = "mermaid", summary: Any = None) -> str:
    nodes, edges = graph(job, summary)
    if fmt == "mermaid":
        return to_mermaid(nodes, edges)
    if fmt == "dot":
        return to_dot(nodes, edges)
    raise ValueError(f"diagram format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def summary_json(job: Job, summary: Any) -> dict[str, Any]:
    """The run summary as plain data (what ``format_summary`` prints, and the per-step accounting)."""
    from pipelines.run import step_counts

    plan = job.plan()
    c = summary.counters
    report: dict[str, Any] = {
        "job": str(job.path),
        "elapsed_s": round(summary.elapsed_s, 3),
        "metrics_available": summary.metrics_available,
    }
    if not summary.metrics_available:
        return report
    dead = {k[len("dead_letter."):]: v for k, v in sorted(c.items()) if k.startswith("dead_letter.")}
    report.update({
        "inputs": {name: {"rows": c.get(f"input.{name}.rows", 0)} for name in plan.inputs},
        "outputs": {name: {"rows": c.get(f"output.{name}.rows", 0),
                           "path": next(s.path for k, s in job.outputs.items() if k.lower() == name.lower())}
                    for name in plan.output_names()},
        "dead_letters": {"rows": sum(dead.values()), "by_reason": dead, "path": job.dead_letter.path},
        "steps": step_counts(summary.ledger, c) if summary.ledger is not None else [],
        "accounting": {"ok": not summary.imbalances, "errors": list(summary.imbalances)},
        "counters": dict(sorted(c.items())),
    })
    return report


def write_report(directory: str | Path, job: Job, summary: Any) -> list[Path]:
    """``DIR/summary.json``, ``DIR/job.mmd`` and ``DIR/job.dot`` (the diagram with row counts)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "summary.json", out / "job.mmd", out / "job.dot"]
    files[0].write_text(json.dumps(summary_json(job, summary), indent=2, default=str) + "\n")
    files[1].write_text(diagram(job, "mermaid", summary))
    files[2].write_text(diagram(job, "dot", summary))
    return files
