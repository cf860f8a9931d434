"""Pipeline options and runner choice for asa-beam jobs.

Beam options pass straight through (``--runner``, ``--direct_num_workers``, Flink and Dataflow
options). The default is DirectRunner in batch mode. Beam's DirectRunner first tries the
Prism runner, which it downloads at run time; asa-beam switches that off so local runs never
reach for the network: batch pipelines run on the FnApiRunner, streaming ones (``--streaming``,
or a pipeline holding a TestStream) on the BundleBasedDirectRunner, where ``WatchFiles`` runs
as a native polling source (see ``transforms.io.watch``).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence

from apache_beam import pvalue
from apache_beam.options.pipeline_options import (
    CrossLanguageOptions,
    DirectOptions,
    FlinkRunnerOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.pipeline import PTransformOverride
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner, SwitchingDirectRunner
from apache_beam.runners.direct.transform_evaluator import TransformEvaluatorRegistry, _TransformEvaluator
from apache_beam.runners.direct.util import TransformResult
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineRunner
from apache_beam.transforms import PTransform, Windowing, window
from apache_beam.transforms.environments import SubprocessSDKEnvironment
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from transforms.errors import JobConfigError
from transforms.io.watch import WatchFiles, WatchState, next_files, should_end, start_watch

_DIRECT_NAMES = {None, "direct", "directrunner", "switchingdirectrunner"}


class LocalDirectRunner(SwitchingDirectRunner):
    """DirectRunner without the Prism attempt (no run-time download); streaming jobs with ``WatchFiles`` run live."""

    def __init__(self) -> None:
        super().__init__()
        # SwitchingDirectRunner skips Prism for interactive sessions; that is the only switch it offers.
        self._is_interactive = True

    def run_pipeline(self, pipeline, options):
        if options.view_as(StandardOptions).streaming:
            # The FnApiRunner would run a streaming pipeline as one batch; this runner fires
            # windows and triggers as (real) time passes.
            pipeline.replace_all([_LocalWatchOverride()])
            _count_metrics_of_every_bundle()
            _hold_watermarks_for_timers()
            return BundleBasedDirectRunner().run_pipeline(pipeline, options)
        return super().run_pipeline(pipeline, options)


def pipeline_options(argv: Sequence[str] = (), streaming: bool = False, workers: int = 1,
                     verbose: bool = False) -> PipelineOptions:
    """Beam options from the command line; ``workers`` > 1 asks for that many SDK worker processes."""
    options = PipelineOptions(list(argv))
    if streaming:
        options.view_as(StandardOptions).streaming = True
    if workers > 1:
        direct = options.view_as(DirectOptions)
        direct.direct_num_workers = workers
        direct.direct_running_mode = "multi_processing"
    worker = options.view_as(WorkerOptions)
    if worker.default_sdk_harness_log_level is None:
        # SDK worker processes log at INFO to the driver's terminal unless told otherwise
        # (MultiProcessRunner also sends their own stderr to a file unless verbose).
        worker.default_sdk_harness_log_level = "INFO" if verbose else "WARNING"
    return options


class MultiProcessRunner(FnApiRunner):
    """Beam's FnApiRunner with ``direct_num_workers`` SDK worker processes, which log to a file.

    Each worker process writes its own log to the stderr it inherits from the terminal, at INFO
    (the harness sets that level before it reads any option). Beam starts workers through a
    shell, so with ``quiet`` their stderr goes to ``<tmp>/asa-beam-workers-<pid>.log`` instead.
    What workers log through Beam's logging service still reaches the driver's log at WARNING
    and above, and an error in a worker fails the run with its traceback.
    """

    def __init__(self, quiet: bool = True):
        command = f"{shlex.quote(sys.executable)} -m apache_beam.runners.worker.sdk_worker_main"
        self.log_path = None
        if quiet:
            self.log_path = os.path.join(tempfile.gettempdir(), f"asa-beam-workers-{os.getpid()}.log")
            command += f" 2>>{shlex.quote(self.log_path)}"
            logging.getLogger("apache_beam.runners.portability.local_job_service").addFilter(_harness_chatter)
        super().__init__(default_environment=SubprocessSDKEnvironment.from_command_string(command))

    def run_pipeline(self, pipeline, options):
        direct = options.view_as(DirectOptions)
        # The FnApiRunner builds its own environment for "multi_processing"; ours is already set.
        mode, direct.direct_running_mode = direct.direct_running_mode, "multi_processing (asa-beam)"
        try:
            result = super().run_pipeline(pipeline, options)  # returns when the workers are done
        finally:
            direct.direct_running_mode = mode
        if self.log_path is not None and os.path.exists(self.log_path):
            os.remove(self.log_path)  # kept only when the run failed
        return result


def _harness_chatter(record: logging.LogRecord) -> bool:
    """Drops the one warning every worker logs at start (no semi-persistent directory: harmless here)."""
    return "semi_persistent_directory" not in record.getMessage()


def make_runner(options: PipelineOptions, allow_unsafe: bool = False) -> PipelineRunner | str:
    """The runner to use: our Prism-free DirectRunner for DirectRunner (the default), Beam's
    FnApiRunner for multi-process runs, else the name; runners that lose rows are refused."""
    name = options.view_as(StandardOptions).runner
    check_runner(options, allow_unsafe)
    multi = options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    is_direct = name is None or (isinstance(name, str) and name.lower() in _DIRECT_NAMES)
    if multi and (is_direct or (isinstance(name, str) and name.lower() == "fnapirunner")):
        if options.view_as(StandardOptions).streaming:
            raise JobConfigError("--workers: streaming jobs run in one process on the local runner "
                                 "(Beam's streaming DirectRunner has no multi-process mode); drop --workers")
        # Explicitly the FnApiRunner: the DirectRunner would fall back to its single-process
        # BundleBasedDirectRunner for a pipeline holding a processing-time timer.
        verbose = options.view_as(WorkerOptions).default_sdk_harness_log_level not in (None, "WARNING")
        return MultiProcessRunner(quiet=not verbose)
    if is_direct:
        return LocalDirectRunner()
    return name


# -- Runners refused: they lose or corrupt rows with asa-beam pipelines and do not say so -------

UNSAFE_RUNNERS: dict[str, str] = {
    "daskrunner": (
        "Beam's DaskRunner (2.77) silently mixes tagged outputs (dead letters) into the main output, "
        "computes only the last sink of the pipeline, ignores windows, drops what finish_bundle emits, "
        "fails on state and timers, and reports no metrics"),
    "pysparkrunner": (
        "the PySpark runner (beam-pyspark-runner) calls DoFn.process directly (no state, tagged outputs "
        "passed through raw), never unwraps timestamps (windows crash), reports no metrics and pins "
        "apache-beam 2.48"),
    "rayrunner": (
        "the Ray runner (ray-beam) fails at import on Beam 2.77; its unreleased successor runs each "
        "stage as one task and rejects processing-time timers"),
    "rayfnapirunner": (
        "the Ray runner (ray_beam_runner) is unreleased, needs patches for Beam 2.77, runs each stage "
        "as one task and rejects processing-time timers"),
}


def check_runner(options: PipelineOptions, allow_unsafe: bool = False) -> None:
    """Refuses runners known to lose rows (unless ``allow_unsafe``), and a FlinkRunner whose
    job-server jar cannot be had, before the pipeline is built."""
    name = options.view_as(StandardOptions).runner
    if name is None:
        return
    text = name if isinstance(name, str) else type(name).__name__
    key = text.rsplit(".", 1)[-1].lower()
    defects = UNSAFE_RUNNERS.get(key)
    if defects is not None and not allow_unsafe:
        raise JobConfigError(
            f"--runner {text} is refused: {defects}. Rows would be lost without a trace. Use the default "
            "runner (--workers N for more processes), FlinkRunner, DataflowRunner or PortableRunner; "
            "--allow-unsafe-runner runs it anyway")
    if key == "flinkrunner":
        _check_flink_jar(options)


MAVEN = "https://repo.maven.apache.org/maven2"


def flink_jar_name(options: PipelineOptions) -> str:
    from apache_beam.version import __version__

    flink = options.view_as(FlinkRunnerOptions).flink_version
    return f"beam-runners-flink-{flink}-job-server-{__version__}.jar"


def _check_flink_jar(options: PipelineOptions, maven: str | None = None, timeout_s: float = 5.0) -> None:
    """Beam's FlinkRunner starts Beam's Flink job server from a jar it downloads from Maven
    Central at run time. Without network it hangs in retries and then fails deep in Beam; here
    a missing jar is a clear error before anything runs."""
    import os
    import urllib.error
    import urllib.request

    flink = options.view_as(FlinkRunnerOptions)
    jar = flink.flink_job_server_jar
    if jar:
        if "://" not in jar and not os.path.isfile(jar):
            raise JobConfigError(f"--flink_job_server_jar {jar}: no such file")
        return
    name = flink_jar_name(options)
    target = f":runners:flink:{flink.flink_version}:job-server:shadowJar"
    services = options.view_as(CrossLanguageOptions).beam_services or {}
    cached = os.path.join(os.path.expanduser("~"), ".apache_beam", "cache", "jars", name)
    if target in services or os.path.isfile(cached):
        return
    from apache_beam.version import __version__

    url = f"{maven or MAVEN}/org/apache/beam/{name.rsplit('-', 1)[0]}/{__version__}/{name}"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
        return  # Beam will download it
    except (urllib.error.URLError, OSError, ValueError):
        pass
    raise JobConfigError(
        f"--runner FlinkRunner needs Beam's Flink job-server jar ({name}), which Beam downloads from "
        f"Maven Central at run time, and {url} cannot be reached. Download it where you can and pass "
        f"--flink_job_server_jar=/path/to/{name}, or put it in ~/.apache_beam/cache/jars/, or submit "
        "to a Beam job server that is already running with --runner PortableRunner --job_endpoint HOST:8099")


def _count_metrics_of_every_bundle() -> None:
    """Works around Beam 2.77's BundleBasedDirectRunner keeping only a step's first bundle's metrics.

    Its worker threads' StateSampler caches each step's scoped states, and with them the
    MetricsContainer of the first bundle; later bundles' counter increments go to that
    container, which was already committed, so they are lost (a counter incremented once
    per bundle over 4 bundles reads 1). Dropping the cache before each bundle gives every
    bundle the container the executor commits.
    """
    from apache_beam.runners.direct import executor

    call = executor.TransformExecutor.call
    if getattr(call, "fresh_metrics", False):
        return

    def call_with_fresh_metrics(self, state_sampler):
        state_sampler._states_by_name.clear()
        return call(self, state_sampler)

    call_with_fresh_metrics.fresh_metrics = True
    executor.TransformExecutor.call = call_with_fresh_metrics


_END_OF_TIME = window.GlobalWindow().max_timestamp()


def _hold_watermarks_for_timers() -> None:
    """Makes Beam 2.77's BundleBasedDirectRunner hold a step's output watermark for its event-time timers.

    That runner advances a stateful step's output watermark as soon as its input watermark
    moves, before the timers this makes due have fired, so rows a timer emits (LAG/LAST/ISFIRST
    results, LEFT OUTER misses, session ends) can reach a downstream window after it closed:
    they were dropped, or fired the window a second time. Beam's Java runners hold the output
    watermark at the earliest pending timer; this does the same for user timers: a stateful
    step's output watermark stays below every event-time timer still set in its keyed state (a
    timer leaves the state in the commit that also hands its output rows to the next step, where
    they hold that step's input watermark as pending elements).
    """
    from apache_beam.runners.direct import watermark_manager as wm
    from apache_beam.utils.timestamp import TIME_GRANULARITY

    # Timers at the end of the global window (GroupIntoBatches' final flush) are not held for:
    # that runner ends the pipeline without firing them once every watermark is final, and a
    # hold would stall it instead (the watch's drain grace lets such batches leave earlier).
    refresh = wm._TransformWatermarks.refresh
    if getattr(refresh, "holds_for_timers", False):
        return

    def refresh_holding_for_timers(self) -> bool:
        with self._lock:
            earliest = None
            for state in list(self._keyed_states.values()):
                for timers in list(getattr(state, "timers", {}).values()):
                    for (name, domain, _), ts in list(timers.items()):
                        # User timers only: a GroupByKey's trigger timers are Beam's own, and it
                        # hands their output on correctly (holding for them stalls late firings).
                        if (domain == TimeDomain.WATERMARK and name.startswith("user/") and ts < _END_OF_TIME
                                and (earliest is None or ts < earliest)):
                            earliest = ts
            key = "asa-beam: earliest timer"
            if earliest is None:
                self._keyed_earliest_holds.pop(key, None)
            else:
                self._keyed_earliest_holds[key] = earliest - TIME_GRANULARITY
        return refresh(self)

    refresh_holding_for_timers.holds_for_timers = True
    wm._TransformWatermarks.refresh = refresh_holding_for_timers


# -- WatchFiles as a native source of the BundleBasedDirectRunner ------------------------------


class _LocalWatchFiles(PTransform):
    """The primitive ``WatchFiles`` becomes locally; ``_WatchFilesEvaluator`` runs it."""

    def __init__(self, watch: WatchFiles):
        super().__init__()
        self.watch = watch

    def expand(self, pbegin):
        return pvalue.PCollection(pbegin.pipeline, is_bounded=False)

    def get_windowing(self, unused_inputs):
        return Windowing(window.GlobalWindows())


class _LocalWatchOverride(PTransformOverride):
    def matches(self, applied_ptransform):
        return isinstance(applied_ptransform.transform, WatchFiles)

    def get_replacement_transform_for_applied_ptransform(self, applied_ptransform):
        return _LocalWatchFiles(applied_ptransform.transform)


class _WatchFilesEvaluator(_TransformEvaluator):
    """One poll per evaluation. Its state travels to the next evaluation in the unprocessed
    bundle it returns (as Beam's TestStream evaluator does); no unprocessed bundle ends it."""

    def start_bundle(self):
        self._state: WatchState | None = None

    def process_element(self, element):
        self._state = element.value

    def finish_bundle(self):
        watch: WatchFiles = self._applied_ptransform.transform.watch
        state = self._state
        now = time.time()
        if state is None:
            state = start_watch(watch, now)  # with a checkpoint: the files to replay first
        elif state.next_poll > now:
            time.sleep(state.next_poll - now)  # as Beam's Pub/Sub evaluator blocks in its pull
            now = time.time()
        ready = next_files(watch, state, now)  # (metadata, arrival); replayed files keep theirs
        state.next_poll = now + watch.poll_interval_s
        arrival = Timestamp.of(min([now, *(a for _, a in ready)]))
        bundles = []
        if ready:
            bundle = self._evaluation_context.create_bundle(next(iter(self._outputs)))
            for metadata, arrived in ready:
                bundle.output(window.GlobalWindows.windowed_value(metadata, timestamp=Timestamp.of(arrived)))
            bundles.append(bundle)
        if should_end(watch, state, now):
            return TransformResult(self, bundles, [], None, {None: None})
        again = self._evaluation_context.create_bundle(pvalue.PBegin(self._applied_ptransform.transform.pipeline))
        again.add(window.GlobalWindows.windowed_value(state, timestamp=arrival))
        lag = watch.watermark_lag_s
        hold = MIN_TIMESTAMP if lag is None else Timestamp.of(arrival.micros / 1e6 - lag)
        return TransformResult(self, bundles, [again], None, {None: hold})


# Beam's hook for evaluators of runner-native transforms the registry does not know.
TransformEvaluatorRegistry._test_evaluators_overrides[_LocalWatchFiles] = _WatchFilesEvaluator
