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

from transforms.deadletter import FAILED, RowError

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


class AsaFunction(abc.ABC):
    """A function callable from a query as ``udf.<alias>(...)``: the one extension point."""

    kind: str = "function"

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

