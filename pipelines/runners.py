"""Pipeline options and runner choice for asa-beam jobs.

Beam options pass straight through (``--runner``, ``--direct_num_workers``, Flink and Dataflow
options). The default is DirectRunner in batch mode. Beam's DirectRunner first tries the
Prism runner, which it downloads at run time; asa-beam switches that off so local runs never
reach for the network: batch pipelines run on the FnApiRunner, streaming ones (``--streaming``,
or a pipeline holding a TestStream) on the BundleBasedDirectRunner, where ``WatchFiles`` runs
as a native polling source (see ``transforms.io.watch``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pipeline import PTransformOverride
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner, SwitchingDirectRunner
from apache_beam.runners.direct.transform_evaluator import TransformEvaluatorRegistry, _TransformEvaluator
from apache_beam.runners.direct.util import TransformResult
from apache_beam.runners.runner import PipelineRunner
from apache_beam.transforms import PTransform, Windowing, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

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


def pipeline_options(argv: Sequence[str] = (), streaming: bool = False) -> PipelineOptions:
    options = PipelineOptions(list(argv))
    if streaming:
        options.view_as(StandardOptions).streaming = True
    return options


def make_runner(options: PipelineOptions) -> PipelineRunner | str:
    """The runner to use: our Prism-free DirectRunner for DirectRunner (the default), else the name."""
    name = options.view_as(StandardOptions).runner
    if name is None or (isinstance(name, str) and name.lower() in _DIRECT_NAMES):
        return LocalDirectRunner()
    return name


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
