"""What a ``udf.<name>(...)`` implementation is, and how the compiler calls it.

The compiler hoists every UDF call out of a step's expressions into a *call stage*: the
stage evaluates the call's arguments on each row, calls the function, and stores the result
in a hidden column of the row (``CallSite.column``) that the step's expressions then read.
A function decides how its calls are executed by returning a PTransform from
``call_transform``: in-process functions (Python, JavaScript) evaluate chunks of rows in one
crossing (``ScalarFunction``); remote functions (Azure ML) batch rows across bundles with
GroupIntoBatches. Either way rows that fail leave as ``DeadLetter`` records.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from transforms import progress
from transforms.deadletter import FAILED, DeadLetter, RowError

ROWS = "rows"  # key of the main output in a call transform's result


@dataclass(frozen=True)
class CallSite:
    """One ``udf.f(...)`` call in a query step, as the compiler hands it to the function.

    ``args(row)`` evaluates the argument expressions on a row and returns a tuple; it may raise
    ``RowError`` (e.g. a CAST error), which dead-letters the row. Where ``guard`` is given,
    the function is called only for rows where ``guard(row)`` is true (a CASE branch); other
    rows pass through with ``column`` set to None.
    """

    step: str
    function: str
    column: str
    args: Callable[[dict], tuple]
    guard: Callable[[dict], bool] | None = None
    # The step's per-row stages around the call (its WHERE before, its projection after), set
    # by the compiler only for functions with ``fuses_row_stages``: they run in the call's own
    # DoFn, which saves two Beam steps per row. See ``RowStage``.
    before: RowStage | None = None
    after: RowStage | None = None
    # The call's one argument is the row itself, hidden columns stripped (``udf.f(Alias)``): a
    # function may then read the row's fields in place instead of evaluating ``args``.
    arg_is_row: bool = False
    # False when nothing after the call reads a row's event time or window (the compiler proved
    # it: no step of the query needs event time and the caller's writers do not either): a
    # bounded call may then let its rows leave stamped like the row being processed at the time,
    # instead of carrying each row's own timestamp (see ScoreRowsUntimedDoFn).
    keeps_event_time: bool = True


class RowStage:
    """One per-row stage of a step: a generated row function with its counters.

    ``apply(row)`` gives the row to pass on, None when the stage filters it, or a ``DeadLetter``
    (an error in the row's expressions fails that row, the job goes on). ``fn`` None passes
    every row (a stage that only counts). Rows filtered (and, with ``out``, passed on) are
    counted per bundle into those Beam counters; ``rows_in`` (counter, live progress name)
    counts every row entering it, when it is the step's first per-row operation.

    Used alone by ``RowStageDoFn`` (the compiler's WHERE and SELECT steps), or inside a UDF
    call's DoFn (``CallSite.before``/``after``). Between bundles: ``start_bundle``, any number
    of ``apply``, ``finish_bundle``; ``setup`` once per DoFn instance.

    >>> stage = RowStage("S", lambda row: row if row["a"] > 1 else None)
    >>> stage.setup()
    >>> stage.apply({"a": 1}), stage.apply({"a": 2})
    (None, {'a': 2})
    >>> stage.apply({}).reason     # a KeyError in the row function: that row fails
    'evaluation_error'
    """

    def __init__(self, step: str, fn: Callable[[dict], Any] | None, filtered: str | None = None,
                 out: str | None = None, rows_in: tuple[str, str] | None = None):
        self.step = step
        self._compiled = fn
        self._filtered_name = filtered or f"step.{step}.filtered"
        self._out_name = out
        self._rows_in = rows_in

    def setup(self) -> None:
        fn = self._compiled
        self._fn = getattr(fn, "fn", fn)  # a CompiledFunction's generated function, called directly
        self._filtered = beam.metrics.Metrics.counter("asa", self._filtered_name)
        self._out = beam.metrics.Metrics.counter("asa", self._out_name) if self._out_name else None
        self._in = beam.metrics.Metrics.counter("asa", self._rows_in[0]) if self._rows_in else None
        if self._in is None:
            self.apply = self._apply  # nothing to count on the way in: one call less per row
        self.start_bundle()

    def start_bundle(self) -> None:
        self._n_filtered = self._n_out = self._n_in = self._reported = 0

    def apply(self, row: dict) -> Any:
        if self._in is not None:  # inline, not _count_in: a call less per row
            self._n_in += 1
            if self._n_in - self._reported >= progress.EVERY:
                progress.add(self._rows_in[1], self._n_in - self._reported)
                self._reported = self._n_in
        return self._apply(row)

    def _apply(self, row: dict) -> Any:
        if self._fn is None:
            out = row
        else:
            try:
                out = self._fn(row)
            except Exception as e:
                return self._dead_letter(row, e)
            if out is None:
                self._n_filtered += 1
                return None
        self._n_out += 1
        return out

    def passed(self, n: int) -> None:
        """``n`` rows went through a stage without a row function: counted at once, no call per row."""
        self._count_in(n)
        self._n_out += n

    def apply_all(self, rows: list) -> list:
        """``apply`` of each row, in one call (for a DoFn that has a batch of rows at once).

        >>> stage = RowStage("S", lambda row: row if row["a"] > 1 else None)
        >>> stage.setup()
        >>> out = stage.apply_all([{"a": 1}, {"a": 2}, {}])
        >>> out[:2], out[2].reason
        ([None, {'a': 2}], 'evaluation_error')
        """
        fn = self._fn
        if fn is None:
            self.passed(len(rows))
            return rows
        self._count_in(len(rows))
        # _apply's work inlined: a call less per row on the scoring DoFn's output path
        out = []
        append = out.append
        filtered = failed = 0
        for row in rows:
            try:
                o = fn(row)
            except Exception as e:
                o = self._dead_letter(row, e)
                failed += 1
            else:
                if o is None:
                    filtered += 1
            append(o)
        self._n_filtered += filtered
        self._n_out += len(rows) - filtered - failed
        return out

    def _dead_letter(self, row: dict, e: Exception) -> DeadLetter:
        if isinstance(e, RowError):
            return e.dead_letter(self.step, row)
        # a value no operator expected: this row fails, the job goes on
        return DeadLetter(self.step, "evaluation_error", f"{type(e).__name__}: {e}", row)

    def _count_in(self, n: int) -> None:
        if self._in is not None:
            self._n_in += n
            if self._n_in - self._reported >= progress.EVERY:
                progress.add(self._rows_in[1], self._n_in - self._reported)
                self._reported = self._n_in

    def finish_bundle(self) -> None:
        if self._n_filtered:
            self._filtered.inc(self._n_filtered)
        if self._n_out and self._out is not None:
            self._out.inc(self._n_out)
        if self._n_in and self._in is not None:
            self._in.inc(self._n_in)
            progress.add(self._rows_in[1], self._n_in - self._reported)
        self.start_bundle()


class RowStageDoFn(beam.DoFn):
    """A ``RowStage`` as its own Beam step: rows go on, filtered rows stop, failures leave on FAILED.

    >>> from apache_beam.testing.util import assert_that, equal_to
    >>> from apache_beam.testing.test_pipeline import TestPipeline
    >>> with TestPipeline() as p:
    ...     out = (p | beam.Create([{"a": 1}, {"a": 2}])
    ...            | beam.ParDo(RowStageDoFn(RowStage("S", lambda r: r if r["a"] > 1 else None)))
    ...              .with_outputs(FAILED, main=ROWS))
    ...     _ = assert_that(out[ROWS], equal_to([{"a": 2}]))
    """

    def __init__(self, stage: RowStage):
        self._stage = stage

    def setup(self):
        self._stage.setup()
        self._apply = self._stage.apply

    def start_bundle(self):
        self._stage.start_bundle()

    def process(self, row):
        out = self._apply(row)
        if out is None:
            return None
        if type(out) is DeadLetter:
            return (beam.pvalue.TaggedOutput(FAILED, out),)
        return (out,)

    def finish_bundle(self):
        self._stage.finish_bundle()


class AsaFunction(abc.ABC):
    """A function callable from a query as ``udf.<alias>(...)``: the one extension point."""

    kind: str = "function"
    # Whether ``call_transform`` honours ``CallSite.before``/``after`` (runs them itself, fused
    # with the call where it can); the compiler gives them only to functions that do.
    fuses_row_stages: bool = False

    def __init__(self, alias: str):
        self.alias = alias

    def validate(self) -> None:
        """Check the configuration without reading data; raise FunctionConfigError if it cannot work.

        Called by ``asa-beam check`` and before a pipeline is built.
        """
        return None

    def arity(self) -> tuple[int, int | None]:
        """(min, max) number of arguments; max None means any."""
        return (0, None)

    def describe(self) -> str:
        """One line for ``asa-beam explain``."""
        return f"{self.kind} function {self.alias}"

    @abc.abstractmethod
    def call_transform(self, site: CallSite) -> beam.PTransform:
        """A PTransform: PCollection[row dict] → ``{"rows": rows with site.column set, "failed": DeadLetters}``.

        Each input row must come out exactly once, on one of the two outputs.
        """


class ScalarFunction(AsaFunction):
    """An in-process function evaluated a chunk of rows at a time.

    Override ``call_batch``; ``setup``/``teardown`` run once per DoFn instance (create engines
    there: the function object is pickled with the pipeline, its engine must not be).
    """

    chunk_size: int = 500

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    @abc.abstractmethod
    def call_batch(self, args_list: Sequence[tuple]) -> list[Any]:
        """Results for each argument tuple, in order; a RowError instance in place of a value fails that row."""

    def call_transform(self, site: CallSite) -> beam.PTransform:
        return CallInProcess(self, site)


class CallInProcess(beam.PTransform):
    """Runs a ScalarFunction's calls for one call site, chunk by chunk within each bundle.

    >>> # rows | CallInProcess(PythonFunction("plus1", lambda x: x + 1), site)
    """

    def __init__(self, function: ScalarFunction, site: CallSite):
        super().__init__()
        self._function = function
        self._site = site

    def expand(self, rows):
        out = rows | beam.ParDo(_CallInProcessDoFn(self._function, self._site)).with_outputs(FAILED, main=ROWS)
        return {ROWS: out[ROWS], FAILED: out[FAILED]}


class _CallInProcessDoFn(beam.DoFn):
    def __init__(self, function: ScalarFunction, site: CallSite):
        self._function = function
        self._site = site
        self._calls = beam.metrics.Metrics.counter("asa", f"{site.function}.function_events")

    def setup(self):
        self._function.setup()

    def start_bundle(self):
        self._pending: list[tuple[dict, tuple, Any, Any]] = []

    def process(self, row, wv=beam.DoFn.WindowedValueParam):
        site = self._site
        if site.guard is not None and not site.guard(row):
            yield {**row, site.column: None}
            return
        try:
            args = site.args(row)
        except RowError as e:
            yield beam.pvalue.TaggedOutput(FAILED, e.dead_letter(site.step, row))
            return
        # Keep the element's WindowedValue: results leave later (at a chunk boundary or in
        # finish_bundle) and must keep their own timestamp and windows.
        self._pending.append((row, args, wv))
        if len(self._pending) >= self._function.chunk_size:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush()

    def _flush(self):
        pending, self._pending = self._pending, []
        if not pending:
            return
        site = self._site
        try:
            results = self._function.call_batch([p[1] for p in pending])
        except RowError as e:
            results = [e] * len(pending)
        self._calls.inc(len(pending))
        for (row, _, wv), result in zip(pending, results, strict=True):
            if isinstance(result, RowError):
                out = beam.pvalue.TaggedOutput(FAILED, wv.with_value(result.dead_letter(site.step, row)))
            else:
                # A new dict: the input row may be shared with another consumer of the PCollection.
                out = wv.with_value({**row, site.column: result})
            yield out

    def teardown(self):
        self._function.teardown()

