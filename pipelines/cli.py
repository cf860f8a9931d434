"""``asa-beam``: run, check and explain ASA jobs on Apache Beam; serve the local model; tune batches.

    asa-beam run JOB.yaml [--input NAME=PATH] [--output NAME=PATH] [--workers N] [--report DIR]
                 [--quiet] [Beam options, e.g. --runner FlinkRunner]
    asa-beam run|check|explain PROJECT [--parameters FILE] [--function-endpoint NAME=URL] [--function-key NAME=ENV_VAR]
        (PROJECT: a folder with asaproj.json, the asaproj.json, a *.asaproj, or an ARM template)
    asa-beam import PROJECT -o job.yaml
    asa-beam test PROJECT [--config test/testConfig.json] [--output-dir DIR]
    asa-beam run JOB.yaml --streaming [--poll-interval S] [--stop-after-idle S] [--checkpoint-dir DIR]
    asa-beam check JOB.yaml
    asa-beam explain JOB.yaml [--format text|mermaid|dot]
    asa-beam serve-model [--port N] [--style records|arrays]
    asa-beam tune-batch JOB.yaml FUNCTION

``--verbose`` shows third-party (Beam) warnings and logs, hidden by default.

Exit codes: 0 when the job ran (even with dead-lettered rows); 2 for a bad job, query or
function configuration (one paragraph, no traceback); 3 when an endpoint stopped the job;
4 when the job ran but its rows do not add up (row accounting: a step lost or duplicated rows
without a trace; the summary names the step and the numbers);
130 when a streaming job was stopped at once by a second Ctrl-C/SIGTERM (its checkpoint resumes it).
``test``: 0 all test cases passed, 1 a test case failed, 2 and 3 as above.
SIGINT and SIGTERM work even when the shell started asa-beam with SIGINT ignored (``cmd &``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence


class _StderrHandler(logging.StreamHandler):
    """Logs to the current ``sys.stderr`` (tests swap it), in the CLI's one-line format."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _OwnRecordsOnly(logging.Filter):
    """Without ``--verbose``, third-party records below ERROR stay off the user's terminal:
    Beam's import-time ``apitools not found``, ``Deleting N existing files`` on re-runs, the
    Pub/Sub advice of watched reads, Python warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.startswith(("transforms", "pipelines"))


_HANDLER = _StderrHandler()
_QUIET = _OwnRecordsOnly()


def configure_logging(verbose: bool) -> None:
    """One stderr handler on the root logger; third-party chatter filtered unless ``verbose``."""
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
        root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    if verbose:
        _HANDLER.removeFilter(_QUIET)
    else:
        _HANDLER.addFilter(_QUIET)


# Before anything imports Beam: it logs a warning on import (apitools), through the root logger.
configure_logging("--verbose" in sys.argv)

from transforms.errors import AsaError, EndpointConfigError, JobConfigError  # noqa: E402

EXIT_BAD_JOB = 2
EXIT_ENDPOINT = 3
EXIT_ACCOUNTING = 4
EXIT_INTERRUPTED = 130  # a second Ctrl-C (or SIGTERM) stopped a streaming job at once


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asa-beam", description="Azure Stream Analytics queries on Apache Beam")
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("--verbose", action="store_true",
                         help="also show third-party warnings and logs (Beam's), hidden by default")
    p.add_argument("--verbose", action="store_true", help=verbose._actions[0].help)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job (unknown options go to Beam)", parents=[verbose])
    run.add_argument("job")
    _project_options(run)
    run.add_argument("--quiet", action="store_true", help="no progress line, no summary")
    run.add_argument("--workers", type=_workers, default=1, metavar="N",
                     help="run on N SDK worker processes (Beam's FnApiRunner, multi-process; default 1)")
    run.add_argument("--allow-unsafe-runner", action="store_true",
                     help="run on a runner known to lose rows (DaskRunner, PySpark, Ray) anyway")
    run.add_argument("--report", metavar="DIR",
                     help="after the run, write DIR/summary.json and the job diagram with row counts "
                          "(DIR/job.mmd, DIR/job.dot)")
    run.add_argument("--progress-interval", type=_positive, default=None, metavar="S",
                     help="seconds between progress lines when stderr is not a terminal (default 10)")
    stream = run.add_argument_group("streaming (inputs are watched globs; Ctrl-C drains the job)")
    stream.add_argument("--streaming", action="store_true", help="run as a streaming job on watched inputs")
    stream.add_argument("--poll-interval", type=_positive, default=1.0, metavar="S",
                        help="seconds between looks at each input glob (default 1)")
    stream.add_argument("--stop-after-idle", type=_non_negative, default=None, metavar="S",
                        help="end the job once no new input file has appeared for S seconds (default: never)")
    stream.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                        help="where the job records the files it read and the output it committed, so that "
                             "a killed job resumes (default: DIR of the first output/checkpoint)")
    stream.add_argument("--no-checkpoint", action="store_true",
                        help="no checkpoint: a restarted job reads every file again")
    for name, helptext in (("check", "parse and bind the job; read no data"),
                           ("explain", "print the plan and the PTransforms it becomes, or draw the job")):
        c = sub.add_parser(name, help=helptext, parents=[verbose])
        c.add_argument("job")
        _project_options(c)
        if name == "explain":
            c.add_argument("--format", choices=("text", "mermaid", "dot"), default="text",
                           help="text: plan and PTransforms; mermaid / dot: a diagram of inputs, steps, "
                                "outputs and function calls")
    imp = sub.add_parser("import", help="write the job.yaml equivalent to an ASA project or ARM template",
                         parents=[verbose])
    imp.add_argument("job", metavar="PROJECT")
    imp.add_argument("-o", "--out", required=True, metavar="JOB.yaml")
    _project_options(imp)
    test = sub.add_parser("test", help="run a project's unit tests (azure-streamanalytics-cicd test format)",
                          parents=[verbose])
    test.add_argument("job", metavar="PROJECT")
    test.add_argument("--config", metavar="FILE", help="the test configuration (default: test/testConfig.json)")
    test.add_argument("--output-dir", metavar="DIR", help="where outputs and testResultSummary.json go")
    test.add_argument("--parameters", metavar="FILE", help="ARM parameters file (default: beside the template)")
    test.add_argument("--function-endpoint", action="append", default=[], metavar="NAME=URL")
    test.add_argument("--function-key", action="append", default=[], metavar="NAME=ENV_VAR")
    sub.add_parser("serve-model", help="start the local Azure ML inference server", add_help=False)
    sub.add_parser("tune-batch", help="probe an endpoint to choose batch_size", add_help=False)
    return p


def _workers(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _project_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--output", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--parameters", metavar="FILE", help="ARM parameters file (default: <template>.parameters.json)")
    p.add_argument("--function-endpoint", action="append", default=[], metavar="NAME=URL",
                   help="call Azure ML function NAME at URL (e.g. asa-beam serve-model)")
    p.add_argument("--function-key", action="append", default=[], metavar="NAME=ENV_VAR",
                   help="the key of function NAME is in environment variable ENV_VAR (never the key itself)")
    p.add_argument("--live-outputs", action="store_true",
                   help="write a project's Blob Storage outputs to their blobs (default: local files "
                        "under LocalRunOutputs/, as ASA's local run does)")


def _load(args: argparse.Namespace):
    """The job of a job.yaml, an ASA project or an ARM template, with the command line's overrides."""
    from pipelines.project import load

    return load(args.job, parameters=args.parameters, inputs=args.input, outputs=args.output,
                function_endpoints=args.function_endpoint, function_keys=args.function_key,
                live_outputs=args.live_outputs)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from pipelines.signals import interruptible

    with interruptible():  # also when started with SIGINT ignored (``asa-beam ... &`` in a script)
        try:
            return _main(argv)
        except KeyboardInterrupt:
            print("asa-beam: interrupted", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "serve-model":
        from pipelines.serving.server import main as serve_main

        return serve_main(argv[1:]) or 0
    if argv and argv[0] == "tune-batch":
        from pipelines.tune import main as tune_main

        return _guard(lambda: tune_main(argv[1:]) or 0)
    configure_logging("--verbose" in argv)
    args, beam_args = _parser().parse_known_args(argv)
    if args.command != "run" and beam_args:
        _parser().error(f"unrecognized arguments: {' '.join(beam_args)}")
    if args.command == "check":
        return _guard(lambda: _check(args))
    if args.command == "explain":
        return _guard(lambda: _explain(args))
    if args.command == "import":
        return _guard(lambda: _import(args))
    if args.command == "test":
        from pipelines.project.testconfig import main as test_main

        return _guard(lambda: test_main(args))
    return _guard(lambda: _run(args, beam_args))


def _guard(action) -> int:
    try:
        return action()
    except EndpointConfigError as e:
        print(f"asa-beam: {e}", file=sys.stderr)
        return EXIT_ENDPOINT
    except AsaError as e:
        print(f"asa-beam: {e}", file=sys.stderr)
        return EXIT_BAD_JOB


def _check(args: argparse.Namespace) -> int:
    from pipelines.project import check_blob_access

    job = _load(args)
    plan = job.check()
    check_blob_access(job)  # blobs are listed (credentials, containers), never read
    for note in job.notes:
        print(f"note: {note}")
    print(f"OK: {job.path.name}: {len(plan.inputs)} input(s) read ({', '.join(plan.inputs)}), "
          f"{len(plan.steps)} step(s), output(s) {', '.join(plan.output_names())}"
          + (f", functions {', '.join(plan.functions_used())}" if plan.functions_used() else ""))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from pipelines.report import diagram
    from pipelines.run import describe_pipeline

    job = _load(args)
    job.check()
    fmt = args.format
    for note in job.notes:  # a diagram on stdout stays a valid diagram
        print(f"note: {note}", file=sys.stdout if fmt == "text" else sys.stderr)
    print(describe_pipeline(job) if fmt == "text" else diagram(job, fmt), end="" if fmt != "text" else "\n")
    return 0


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.run import Streaming, check_inputs, format_summary, run_job, run_streaming_job

    job = _load(args)
    job.check()  # every configuration problem before any data is read
    for note in job.notes:
        print(f"asa-beam: note: {note}", file=sys.stderr)
    checkpoint_dir = False if args.no_checkpoint else args.checkpoint_dir
    streaming = Streaming(args.poll_interval, args.stop_after_idle, checkpoint_dir) if args.streaming else None
    check_inputs(job, streaming)
    from pipelines.progress import ProgressLine

    run_options = dict(workers=args.workers, allow_unsafe_runner=args.allow_unsafe_runner, verbose=args.verbose,
                       progress=None if args.quiet else ProgressLine(sys.stderr, args.progress_interval))
    if streaming is None:
        summary = run_job(job, beam_args, **run_options)
    else:
        def resuming(checkpoint, pending):
            files = ", ".join(f"{n} files of {name}" for name, n in pending.items())
            print(f"asa-beam: resuming from the checkpoint {checkpoint.directory}: reading again {files} "
                  "whose results may not all be written (rows already written are not written again)",
                  file=sys.stderr, flush=True)

        watched = ", ".join(f"{n} ({s.path})" for n, s in job.inputs.items() if not s.options.get("reference"))
        idle = "" if args.stop_after_idle is None else f"; ends after {args.stop_after_idle:g} s without new files"
        try:
            with _drain_on_interrupt():
                print(f"asa-beam: streaming: watching {watched} every {args.poll_interval:g} s{idle}; "
                      "Ctrl-C drains the job", file=sys.stderr, flush=True)
                summary = run_streaming_job(job, beam_args, streaming, on_resume=resuming, **run_options)
        except KeyboardInterrupt:
            print("asa-beam: stopped at once; open windows were not emitted. The next run with the same "
                  "checkpoint reads their files again", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
    if not args.quiet:
        print(format_summary(job, summary))
    if args.report:
        from pipelines.report import write_report

        write_report(args.report, job, summary)
    if not summary.metrics_available:
        print("asa-beam: warning: the runner reported no metrics, so the row accounting was not checked",
              file=sys.stderr)
    if summary.imbalances:
        print("asa-beam: row accounting failed: rows were lost or duplicated without a trace:\n  "
              + "\n  ".join(summary.imbalances), file=sys.stderr)
        return EXIT_ACCOUNTING
    return 0


def _import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipelines.project import kind_of, translate, write_job_file

    if kind_of(Path(args.job).absolute()) == "job":
        raise JobConfigError(f"{args.job} is already a job file")
    out = Path(args.out)
    t = translate(args.job, args.parameters, args.input, args.output,
                  output_root=out.absolute().parent / "LocalRunOutputs", live_outputs=args.live_outputs)
    if args.function_endpoint or args.function_key:
        from pipelines.job import function_overrides

        t.doc["functions"] = function_overrides(t.doc.get("functions") or {}, args.function_endpoint,
                                                args.function_key)
    write_job_file(t, out)
    print(f"wrote {out} ({t.kind} project {t.source})")
    for note in t.notes:
        print(f"note: {note}")
    for message in t.unavailable.values():
        print(f"note: {message}")
    return 0


@contextlib.contextmanager
def _drain_on_interrupt():
    """While a streaming job runs, the first Ctrl-C (or SIGTERM) drains it: no new input files,
    open windows are emitted and written, the job ends normally. A second Ctrl-C stops at once."""
    from pipelines.signals import handling
    from transforms.io.watch import drain_requested, request_drain, reset_drain

    def handle(signum, frame):
        if drain_requested():
            raise KeyboardInterrupt
        print("asa-beam: draining: no new input files; open windows are emitted and written "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        request_drain()

    reset_drain()
    try:
        with handling(handle):
            yield
    finally:
        reset_drain()


if __name__ == "__main__":
    sys.exit(main())
