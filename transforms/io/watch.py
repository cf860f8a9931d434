"""Watching a directory for new files: ``WatchFiles`` (the unbounded source of streaming jobs).

ASA reads a blob container as a stream: each blob once, when it appears. ``WatchFiles`` does
the same for a glob: it polls it every ``poll_interval_s`` and emits the ``FileMetadata`` of
each file once, when the file has *settled* (the same size and modification time at two
polls in a row, so a file still being written is not read half-way). A file changed after it
was read is not read again (ASA does not re-read appended blobs either). Files already there
when the job starts are read first.

Each emitted file carries its *arrival time* (when it was found) as its Beam timestamp; the
rows read from it inherit it, which is what ``TIMESTAMP BY``'s late-arrival policy compares
event times with. The source's watermark is ``arrival - watermark_lag_s`` (the query's
late-arrival + out-of-order tolerances), so windows close that long after real time passes
their end; ``watermark_lag_s=None`` holds it back until the watch stops ("wait indefinitely").

The watch ends — the watermark jumps to the end of time, every open window is emitted and
the pipeline finishes — when no new file has appeared for ``stop_after_idle_s`` seconds (None:
never), or when ``request_drain()`` is called (the CLI does on the first Ctrl-C), after
``drain_grace_s`` more seconds without polling (see ``should_end``).

Crash safety (``checkpoint``, an ``InputLog`` of ``transforms.io.checkpoint``): each file is
recorded in the checkpoint's arrival log, and synced to disk, *before* it is emitted; a watch
started again first re-emits the files of the checkpoint's current epoch (those whose results
may not all be written yet) with the arrival times they had, then polls as usual; files of
earlier epochs are done and never read again. ``start_watch`` and ``next_files`` implement it.

How it runs: on Flink, Dataflow and other portable runners ``WatchFiles`` expands to Beam's
``fileio.MatchContinuously`` (idle stop and drain are then the runner's: cancel or drain the
job). Beam 2.77's local runners cannot run that splittable DoFn in real time, so asa-beam's
``LocalDirectRunner`` replaces ``WatchFiles`` with a native source of Beam's
BundleBasedDirectRunner (``pipelines.runners``), which polls with the rules above.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

if TYPE_CHECKING:
    from transforms.io.checkpoint import InputLog

_drain = threading.Event()


def request_drain() -> None:
    """Asks every local watch to stop now; the pipeline then emits what it holds and ends."""
    _drain.set()


def drain_requested() -> bool:
    return _drain.is_set()


def reset_drain() -> None:
    _drain.clear()


@dataclass(frozen=True)
class Watch:
    """How a streaming input watches its glob (``ReadRows(..., watch=Watch(...))``); see ``WatchFiles``."""

    poll_interval_s: float = 1.0
    stop_after_idle_s: float | None = None
    watermark_lag_s: float | None = 0.0
    drain_grace_s: float = 0.0
    checkpoint: InputLog | None = None

    def files(self, pattern: str) -> WatchFiles:
        return WatchFiles(pattern, self.poll_interval_s, self.stop_after_idle_s, self.watermark_lag_s,
                          self.drain_grace_s, checkpoint=self.checkpoint)


class WatchFiles(beam.PTransform):
    """PBegin → unbounded PCollection of ``FileMetadata``: each file matching ``pattern`` once.

    >>> import apache_beam as beam, pathlib, tempfile
    >>> from apache_beam.options.pipeline_options import PipelineOptions
    >>> from pipelines.runners import LocalDirectRunner
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.json").write_text('{"id": 1}\\n')
    >>> with beam.Pipeline(runner=LocalDirectRunner(), options=PipelineOptions(streaming=True)) as p:
    ...     _ = (p | WatchFiles(str(d / "*.json"), poll_interval_s=0.1, stop_after_idle_s=0.5)
    ...          | beam.Map(lambda m: print(pathlib.Path(m.path).name)))
    a.json
    """

    def __init__(
        self,
        pattern: str,
        poll_interval_s: float = 1.0,
        stop_after_idle_s: float | None = None,
        watermark_lag_s: float | None = 0.0,
        drain_grace_s: float = 0.0,
        *,
        checkpoint: InputLog | None = None,
    ):
        super().__init__()
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        if stop_after_idle_s is not None and stop_after_idle_s < 0:
            raise ValueError(f"stop_after_idle_s must be >= 0, got {stop_after_idle_s}")
        self.pattern = pattern
        self.poll_interval_s = poll_interval_s
        self.stop_after_idle_s = stop_after_idle_s
        self.watermark_lag_s = watermark_lag_s
        self.drain_grace_s = drain_grace_s
        self.checkpoint = checkpoint

    def to_runner_api_parameter(self, context):
        # Pickled, so the transform is still a WatchFiles after Beam's runner-API round trip
        # and LocalDirectRunner can recognise and replace it.
        return self.to_runner_api_pickled(context)

    def expand(self, pbegin):
        # The portable form; LocalDirectRunner swaps in a native local source instead.
        return pbegin | "MatchContinuously" >> fileio.MatchContinuously(
            self.pattern, interval=self.poll_interval_s, has_deduplication=True,
            empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)


@dataclass
class WatchState:
    """What a watch knows between polls: files emitted, files seen once (settling), when it last saw a change."""

    started: float
    emitted: dict[str, tuple[int, float]] = field(default_factory=dict)
    settling: dict[str, tuple[int, float]] = field(default_factory=dict)
    last_change: float = 0.0
    next_poll: float = 0.0
    finishing_since: float | None = None  # when the watch decided to end (it then waits drain_grace_s)
    replay: list = field(default_factory=list)  # checkpointed Arrivals to emit again before polling


def poll(pattern: str, state: WatchState, now: float) -> list[FileMetadata]:
    """One look at ``pattern``: the files that settled since the last look, oldest first.

    A file is new when first seen; it is returned at the next look that finds the same size
    and modification time. ``state`` is updated in place.
    """
    matched = FileSystems.match([pattern])[0].metadata_list
    ready = []
    current = set()
    for m in matched:
        current.add(m.path)
        if m.path in state.emitted:
            continue
        key = (m.size_in_bytes, m.last_updated_in_seconds)
        if state.settling.get(m.path) == key:
            del state.settling[m.path]
            state.emitted[m.path] = key
            ready.append(m)
        else:
            state.settling[m.path] = key
            state.last_change = now
    for gone in [p for p in state.settling if p not in current]:  # deleted before it settled
        del state.settling[gone]
    if ready:
        state.last_change = now
    return sorted(ready, key=lambda m: (m.last_updated_in_seconds, m.path))


def is_finished(transform: WatchFiles, state: WatchState, now: float) -> bool:
    if drain_requested():
        return True
    idle = transform.stop_after_idle_s
    return idle is not None and not state.settling and now - max(state.last_change, state.started) >= idle


def should_end(transform: WatchFiles, state: WatchState, now: float) -> bool:
    """Whether the watch ends now: it is finished (no more polls) and its drain grace has passed.

    The grace keeps the watermark short of the end of time a little longer, so processing-time
    flushes (a partial batch of ML rows waiting ``max_buffering_s``) leave before every window
    closes; on Beam's local runner a timer's output holds no watermark and would come too late.
    """
    if state.finishing_since is None:
        if not is_finished(transform, state, now):
            return False
        state.finishing_since = now
    return now - state.finishing_since >= transform.drain_grace_s


def start_watch(transform: WatchFiles, now: float) -> WatchState:
    """A watch's first state: with a checkpoint, the files it already read are known (never read
    again) and those of the current epoch wait in ``replay``."""
    state = WatchState(started=now)
    if transform.checkpoint is not None:
        done, replay = transform.checkpoint.load()
        for a in (*done, *replay):
            state.emitted[a.path] = (a.size, a.mtime)
        state.replay = replay
    return state


def next_files(transform: WatchFiles, state: WatchState, now: float) -> list[tuple[FileMetadata, float]]:
    """The files to emit now, each with its arrival time (seconds): first the checkpoint's replay
    (with the arrival times they had), then the files that settled since the last poll, arriving
    ``now``. With a checkpoint, new files are in its arrival log, on disk, before this returns."""
    out = []
    if state.replay:
        for a in state.replay:
            if FileSystems.exists(a.path):
                out.append((FileMetadata(a.path, a.size, a.mtime), a.arrival))
            else:  # cannot be read again: the results it had committed stay, the others are lost
                logging.getLogger(__name__).warning(
                    "%s was deleted before the job ended cleanly: it cannot be read again after the "
                    "restart; keep input files until the job has ended", a.path)
        state.replay = []
        state.last_change = now
    if state.finishing_since is None:
        ready = poll(transform.pattern, state, now)
        if ready and transform.checkpoint is not None:
            from transforms.io.checkpoint import Arrival

            transform.checkpoint.append(
                [Arrival(m.path, m.size_in_bytes, m.last_updated_in_seconds, now) for m in ready])
        out += [(m, now) for m in ready]
    return out
