"""A job → a Beam pipeline: read inputs → AsaQuery → write outputs, dead letters to their own output."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

from pipelines.job import Job
from pipelines.progress import ProgressLine
from pipelines.runners import make_runner, pipeline_options
from transforms.errors import JobConfigError
from transforms.functions.azureml import find_endpoint_error
from transforms.io.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from transforms.io.paths import blob_folder, is_blob
from transforms.io.watch import Watch
from transforms.operators.accounting import CountDeadLetters, CountRows, Ledger, sum_counters, value
from transforms.operators.compile import AsaQuery, fused_call
from transforms.progress import Listener
from transforms.query.plan import SelectStep


@dataclass
class RunSummary:
    counters: dict[str, int] = field(default_factory=dict)
    distributions: dict[str, Any] = field(default_factory=dict)
    metrics_available: bool = True  # False: the runner gave no metrics (no counts, no accounting check)
    ledger: Ledger | None = None
    imbalances: list[str] = field(default_factory=list)  # row-accounting errors, one message each
    elapsed_s: float = 0.0

    def prefixed(self, prefix: str) -> dict[str, int]:
        return {k[len(prefix):]: v for k, v in sorted(self.counters.items()) if k.startswith(prefix)}


@dataclass(frozen=True)
class Streaming:
    """``asa-beam run --streaming``: stream inputs are watched globs (``transforms.io.watch``).

    The job is crash-safe (``transforms.io.checkpoint``): its checkpoint is ``checkpoint_dir``,
    by default ``checkpoint`` beside the first output (``default_checkpoint_dir``);
    ``checkpoint_dir=False`` runs without one (``--no-checkpoint``).
    """

    poll_interval_s: float = 1.0
    stop_after_idle_s: float | None = None  # None: run until drained (Ctrl-C) or cancelled
    checkpoint_dir: str | bool | None = None

    def checkpoint_path(self, job: Job) -> str | None:
        if self.checkpoint_dir is False:
            return None
        return str(self.checkpoint_dir) if self.checkpoint_dir else default_checkpoint_dir(job)

    def watch(self, job: Job, checkpoint: Checkpoint | None = None, name: str | None = None) -> Watch:
        # The source's watermark trails arrival by the query's tolerances, so an event that the
        # late-arrival policy keeps is never behind it (late_arrival_seconds -1: wait indefinitely).
        o = job.event_ordering
        lag = None if o.late_arrival_s < 0 else o.late_arrival_s + o.out_of_order_s
        # Partial ML batches wait up to max_buffering_s; the watch waits that long before ending.
        used = {n.lower() for n in job.plan().functions_used()}
        buffering = [getattr(getattr(fn, "config", None), "max_buffering_s", 0.0)
                     for fn in job.functions() if fn.alias.lower() in used]
        grace = max(buffering, default=0.0) + self.poll_interval_s if any(buffering) else 0.0
        log = checkpoint.input_log(name) if checkpoint is not None and name is not None else None
        return Watch(self.poll_interval_s, self.stop_after_idle_s, lag, grace, checkpoint=log)


def default_checkpoint_dir(job: Job) -> str:
    """``<directory of the first output>/checkpoint``; for an output in blob storage, ``checkpoint``
    beside the job file (the checkpoint is local: it is locked and fsync'ed)."""
    first = next(iter(job.outputs.values()))
    if "://" in first.path:
        return str(job.base_dir / "checkpoint")
    directory = os.path.dirname(first.path.split("{", 1)[0])  # above a path pattern's {date}/{field} folders
    return os.path.join(directory or ".", "checkpoint")


def job_identity(job: Job) -> str:
    """What a checkpoint's replay depends on: the query, inputs, outputs and event ordering (a hash;
    function settings, which may hold keys, are left out)."""
    import hashlib
    import json

    def specs(d):
        return sorted((n.lower(), s.path, s.format, sorted((k, str(v)) for k, v in s.options.items()))
                      for n, s in d.items())

    o = job.event_ordering
    text = json.dumps([job.query, specs(job.inputs), specs(job.outputs), job.dead_letter.path,
                       job.dead_letter.format, [o.late_arrival_s, o.out_of_order_s, o.policy]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_inputs(job: Job, streaming: Streaming | None = None) -> None:
    """Inputs that cannot be read stop the job before it starts: a glob matching no file (batch,
    and reference data), a watched directory that does not exist (streaming)."""
    from apache_beam.io.filesystems import FileSystems

    for name in job.plan().inputs:
        spec = next(s for n, s in job.inputs.items() if n.lower() == name.lower())
        watched = streaming is not None and not spec.options.get("reference")
        if watched:
            directory = os.path.dirname(re.split(r"[*?\[]", spec.path, maxsplit=1)[0])
            if "://" not in spec.path and directory and not os.path.isdir(directory):
                raise JobConfigError(f"input '{name}': the directory {directory} to watch does not exist")
        elif is_blob(spec.path):
            _check_blob(spec.path, f"input '{name}'", must_match=True)
        elif not FileSystems.match([spec.path])[0].metadata_list:
            raise JobConfigError(f"input '{name}': no file matches '{spec.path}'")
        if watched and is_blob(spec.path):  # a watched container must exist and be readable
            _check_blob(spec.path, f"input '{name}'", must_match=False)
    # Blob outputs: their containers exist and the credentials are accepted, before any data is read.
    for what, spec in [*((f"output '{n}'", s) for n, s in job.outputs.items()), ("dead_letter", job.dead_letter)]:
        if is_blob(spec.path):
            _check_blob(blob_folder(spec.path), what, must_match=False)


def _check_blob(path: str, what: str, must_match: bool) -> None:
    from transforms.io.blob import BlobAccessError, check_access

    try:
        check_access(path, what, must_match=must_match)
    except BlobAccessError as e:
        raise JobConfigError(str(e)) from None


def build_pipeline(job: Job, pipeline: beam.Pipeline, streaming: Streaming | None = None,
                   checkpoint: Checkpoint | None = None) -> Ledger:
    """Add the job's transforms to ``pipeline``; with ``streaming``, stream inputs are watched
    (and, with ``checkpoint``, logged and replayed; outputs deduplicated after a restart).

    Returns the row-accounting ledger: the query's balances (per step) plus the job's: each
    input's rows read = rows entering the query, each output's rows = rows written, and dead
    letters produced = dead letters written."""
    from transforms.io import ReadRows, WriteDeadLetters, WriteRows

    check_inputs(job, streaming)
    plan = job.plan()
    read_failed = []
    sources = {}
    for name in plan.inputs:
        spec = next(s for n, s in job.inputs.items() if n.lower() == name.lower())
        options = {k: v for k, v in spec.options.items() if k != "reference"}
        if streaming is not None and not spec.options.get("reference"):
            options["watch"] = streaming.watch(job, checkpoint, name)  # reference data stays a bounded read
        out = pipeline | f"Read {name}" >> ReadRows(spec.path, spec.format, name=name, **options)
        sources[name] = out["rows"]
        read_failed.append(out["failed"] | f"Count dead letters of {name}" >> beam.ParDo(
            CountDeadLetters(f"input.{name}.dead")))
    # The writers first: whether any of them places rows by event time tells the query whether
    # its UDF calls must carry each row's timestamp (AsaQuery(outputs_read_event_time=...)).
    writers = {}
    for name in plan.output_names():
        spec = next(s for n, s in job.outputs.items() if n.lower() == name.lower())
        columns = _static_columns(job, name)
        kwargs = dict(spec.options)
        if columns is not None and spec.format == "csv":
            kwargs.setdefault("columns", list(columns))
        if checkpoint is not None:
            kwargs["checkpoint"] = checkpoint.output_log(f"output.{name}")
        writers[name.lower()] = WriteRows(spec.path, spec.format, name=name, **kwargs)
    dead_writer = WriteDeadLetters(
        job.dead_letter.path, job.dead_letter.format,
        checkpoint=checkpoint.output_log("dead_letters") if checkpoint is not None else None, **{
            k: v for k, v in job.dead_letter.options.items() if k in ("date_format", "time_format")})
    outputs = sources | "Query" >> AsaQuery(
        plan, job.functions(), event_ordering=job.event_ordering,
        outputs_read_event_time=any(w.reads_event_time for w in (*writers.values(), dead_writer)))
    ledger = outputs.ledger
    for name in plan.inputs:
        for term in ledger.inputs.get(name, []):
            step = term.split(".")[1] if term.count(".") >= 2 else term
            ledger.balance(f"input {name}", f"rows read, entering step {step}", [f"input.{name}.rows"],
                           [("entering", term)])
    for name, pcoll in outputs.items():
        counted = pcoll | f"Count {name}" >> beam.ParDo(
            CountRows(f"query.output.{name}.rows", live=f"rows_written.{name}"))
        counted | f"Write {name}" >> writers[name.lower()]
        ledger.balance(f"output {name}", "rows", ledger.outputs[name], [("written", f"output.{name}.rows")])
    failed = (*read_failed, outputs.failed) | "All dead letters" >> beam.Flatten()
    failed | "Write dead letters" >> dead_writer
    produced = [f"input.{n}.dead" for n in plan.inputs] + [
        d for r in ledger.steps.values() for d in r.dead]
    ledger.balance("dead letters", "rows", produced, [("written", "dead_letter.*")])
    return ledger


def _static_columns(job: Job, output: str) -> tuple[str, ...] | None:
    plan = job.plan()
    steps = [plan.step(o.step) for o in plan.outputs if o.output == output]
    cols = {s.static_columns for s in steps}
    return cols.pop() if len(cols) == 1 else None


def run_job(job: Job, beam_args: Sequence[str] = (), streaming: Streaming | None = None, *,
            workers: int = 1, allow_unsafe_runner: bool = False, progress: ProgressLine | None = None,
            verbose: bool = False, checkpoint: Checkpoint | None = None) -> RunSummary:
    """Runs the job and checks its row accounting. ``workers`` > 1: that many SDK worker
    processes (Beam's FnApiRunner, multi-process); ``progress``: a live progress line;
    ``checkpoint``: a crash-safe streaming job's (see ``run_streaming_job``)."""
    options = pipeline_options(beam_args, streaming=streaming is not None, workers=workers, verbose=verbose)
    pipeline = beam.Pipeline(runner=make_runner(options, allow_unsafe_runner), options=options)
    ledger = build_pipeline(job, pipeline, streaming, checkpoint)
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            if progress is not None:
                stack.enter_context(Listener())  # worker processes send their live counts here
                stack.enter_context(progress)
            result = pipeline.run()
            result.wait_until_finish()
    except Exception as e:
        endpoint_error = find_endpoint_error(e)
        if endpoint_error is not None:
            raise endpoint_error from None
        raise
    summary = collect_metrics(result)
    summary.elapsed_s = time.monotonic() - started
    summary.ledger = ledger
    if summary.metrics_available:
        summary.imbalances = [m.message() for m in ledger.check(summary.counters)]
    return summary


def run_streaming_job(job: Job, beam_args: Sequence[str], streaming: Streaming, on_resume=None,
                      **run_options) -> RunSummary:
    """``run_job`` for a crash-safe streaming job (``transforms.io.checkpoint``): locks the checkpoint,
    tells ``on_resume(checkpoint, {input: files to replay})`` when a crashed run is resumed, and
    records the clean end (a new epoch) once the pipeline has finished normally. Without a
    checkpoint (``Streaming(checkpoint_dir=False)``) it is ``run_job``; ``run_options`` go to ``run_job``."""
    path = streaming.checkpoint_path(job)
    if path is None:
        return run_job(job, beam_args, streaming, **run_options)
    identity = job_identity(job)
    try:
        checkpoint, lock = open_checkpoint(path, identity)
    except CheckpointError as e:
        raise JobConfigError(str(e)) from None
    try:
        pending = checkpoint.pending()
        if pending and on_resume is not None:
            on_resume(checkpoint, pending)
        summary = run_job(job, beam_args, streaming, checkpoint=checkpoint, **run_options)
        checkpoint.finish(identity)  # every window emitted, every output file committed
    finally:
        lock.release()
    return summary


def collect_metrics(result: Any) -> RunSummary:
    summary = RunSummary()
    try:
        metrics = result.metrics().query(MetricsFilter().with_namespace("asa"))
    except (NotImplementedError, AttributeError):  # a runner without metrics (DaskRunner raises)
        summary.metrics_available = False
        return summary
    summary.counters = sum_counters(metrics.get("counters", []))
    for d in metrics.get("distributions", []):
        value = d.committed if d.committed is not None else d.attempted
        summary.distributions[d.key.metric.name] = value
    return summary


def format_summary(job: Job, summary: RunSummary) -> str:
    lines = ["asa-beam: job finished"]
    if not summary.metrics_available:
        lines.append("  the runner reported no metrics: rows read, written and dead-lettered are unknown, "
                     "and the row accounting was not checked")
        return "\n".join(lines)
    for name in job.plan().inputs:
        lines.append(f"  read     {name}: {summary.counters.get(f'input.{name}.rows', 0)} rows")
    for name in job.plan().output_names():
        spec = next(s for n, s in job.outputs.items() if n.lower() == name.lower())
        lines.append(f"  written  {name}: {summary.counters.get(f'output.{name}.rows', 0)} rows -> {spec.path}-*")
    lines += _resumed_lines(summary)
    filtered = sum(v for k, v in summary.counters.items() if k.startswith("step.") and k.endswith(".filtered"))
    lines.append(f"  filtered by the query: {filtered} rows")
    dead = summary.prefixed("dead_letter.")
    total = sum(dead.values())
    lines.append(f"  dead-lettered: {total} rows" + (f" -> {job.dead_letter.path}-*" if total else ""))
    for reason, n in dead.items():
        lines.append(f"    {reason}: {n}")
    for fn in sorted({k.split(".")[0] for k in summary.counters if k.endswith(".function_requests")}):
        parts = [f"{label} {summary.counters.get(f'{fn}.{key}', 0)}" for key, label in (
            ("function_requests", "requests"), ("function_events", "events"),
            ("failed_function_requests", "failed requests"), ("retries", "retries"))]
        waited_ms = summary.counters.get(f"{fn}.retry_wait_ms", 0)
        if waited_ms:
            parts.append(f"waiting to retry {waited_ms / 1000:.1f} s")
        lat = summary.distributions.get(f"{fn}.request_latency_ms")
        if lat is not None and getattr(lat, "count", 0):
            parts.append(f"latency mean {lat.mean:.1f} ms (max {lat.max} ms)")
        lines.append(f"  udf.{fn}: " + ", ".join(parts))
    if summary.ledger is not None:
        lines += format_steps(summary.ledger, summary.counters)
    if summary.imbalances:
        lines.append("  ROW ACCOUNTING FAILED (rows lost or duplicated without a trace):")
        lines += [f"    {m}" for m in summary.imbalances]
    return "\n".join(lines)


def _resumed_lines(summary: RunSummary) -> list[str]:
    """After a restart: rows the replay recomputed that an earlier run had already written
    (counted in ``written`` above, not written again)."""
    already = {k.split(".")[1]: v for k, v in summary.counters.items()
               if k.startswith("output.") and k.endswith(".already_written") and v}
    if not already:
        return []
    parts = ", ".join(f"{n} {name.replace('dead_letters', 'dead letters')}" for name, n in sorted(already.items()))
    return [f"  resumed: already written before the restart, not written again: {parts} rows"]


def step_counts(ledger: Ledger, counters: dict[str, int]) -> list[dict[str, Any]]:
    """Per step: rows in, out, filtered, dead-lettered, and the operators' own counts."""
    out = []
    for record in ledger.steps.values():
        prefix = f"step.{record.name}."
        out.append({
            "step": record.name,
            "in": sum(value(counters, n) for n in record.ins),
            "joined": {alias: sum(value(counters, n) for n in terms) for alias, terms in record.joined},
            "out": sum(value(counters, n) for n in record.out),
            "filtered": sum(v for k, v in counters.items() if k.startswith(prefix) and k.endswith(".filtered")),
            "dead_letters": sum(value(counters, n) for n in record.dead),
            "details": {label: value(counters, n) for label, n in record.details},
        })
    return out


def format_steps(ledger: Ledger, counters: dict[str, int]) -> list[str]:
    lines = ["  rows per step (in -> out; filtered by WHERE/HAVING; dead-lettered):"]
    for s in step_counts(ledger, counters):
        joined = "".join(f" (+{n} from {alias})" for alias, n in s["joined"].items())
        line = f"    {s['step']}: {s['in']}{joined} -> {s['out']}"
        extra = [f"{k} {s[k]}" for k in ("filtered",) if s[k]] + (
            [f"dead-lettered {s['dead_letters']}"] if s["dead_letters"] else [])
        extra += [f"{label} {v}" for label, v in s["details"].items()]
        lines.append(line + ("; " + ", ".join(extra) if extra else ""))
    return lines


def _step_transforms(step: SelectStep, functions) -> list[str]:
    """The PTransforms a SELECT step becomes, in the order SelectStepTransform applies them."""
    def calls(phase: str) -> list[str]:
        out = []
        for c in sorted((c for c in step.calls if c.phase == phase), key=lambda c: c.stage):
            fn = functions.lookup(c.function)
            out.append(f"udf.{c.function} [{fn.describe() if fn else '?'}]")
        return out

    parts = []
    if step.timestamp_by is not None:
        parts.append("Timestamp by: ParDo(AssignTimestampDoFn)")
    parts += [f"{'Left join' if j.kind == 'left' else 'Join'} {j.alias}: "
              f"{'ReferenceJoin' if j.reference else 'IntervalJoin'}" for j in step.joins]
    parts += [f"{a.kind.capitalize()} apply {a.alias}: ParDo(ApplyDoFn)" for a in step.applies]
    if step.uses_timestamp:
        parts.append("System.Timestamp(): ParDo")
    if step.analytic:
        parts.append(f"Analytic functions: AnalyticFunctions({len(step.analytic)} calls)")
    if fused_call(step, functions) is not None:
        (call,) = calls("select")
        where = "Where, " if step.where is not None else ""
        return parts + [f"{where}{call}, Select: in the call's own DoFn on bounded input"]
    parts += calls("where")
    later = [c for c in step.calls if c.phase in ("select", "group")] or step.grouping is not None
    if later and step.where is not None:
        parts.append("Where: ParDo(RowStageDoFn)")
    parts += calls("select") + calls("group")
    if step.grouping is not None:
        window = step.grouping.window
        parts.append(f"Group by: GroupAndAggregate(WindowedAggregate {window.kind if window else 'global'}, "
                     f"{len(step.grouping.aggregates)} aggregates)")
        parts += calls("post")
    parts.append("Select: ParDo(RowStageDoFn)")
    return parts


def describe_pipeline(job: Job) -> str:
    """``asa-beam explain``: the plan, then the PTransforms each step becomes."""
    plan = job.plan()
    functions = job.functions()
    lines = ["PLAN", *("  " + line for line in str(plan).splitlines()), "", "PTRANSFORMS"]
    for name in plan.inputs:
        spec = next(s for n, s in job.inputs.items() if n.lower() == name.lower())
        lines.append(f"  Read {name}: ReadRows({spec.format}: {spec.path})")
    for step in plan.steps:
        if isinstance(step, SelectStep):
            lines.append(f"  Query/{step.name} (reads {', '.join(step.sources)}): "
                         + " -> ".join(_step_transforms(step, functions)))
        else:
            lines.append(f"  Query/{step.name}: Flatten({', '.join(step.parts)})")
    for name in plan.output_names():
        spec = next(s for n, s in job.outputs.items() if n.lower() == name.lower())
        lines.append(f"  Write {name}: WriteRows({spec.format}: {spec.path}-SSSSS-of-NNNNN)")
    lines.append(f"  Write dead letters: WriteDeadLetters({job.dead_letter.format}: {job.dead_letter.path})")
    return "\n".join(lines)
