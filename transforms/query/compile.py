"""Plan → Beam: one named composite PTransform per step, and ``AsaQuery`` for a whole query.

Each WITH step and each SELECT statement becomes a composite labelled with the step name, so
the Beam graph reads like the query. A step read by several statements is applied once and
its PCollection shared. UDF calls run as call stages (see ``transforms.functions.base``)
before the step's final projection; every failure leaves on the FAILED side output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam

from transforms.deadletter import FAILED, DeadLetter, RowError
from transforms.errors import QueryError
from transforms.functions.base import ROWS, AsaFunction, CallSite
from transforms.functions.registry import FunctionRegistry
from transforms.query.expressions import CompiledFunction, compile_args, compile_predicate, compile_projection
from transforms.query.lower import lower
from transforms.query.parser import parse
from transforms.query.plan import HIDDEN_PREFIX, OutputColumn, Plan, SelectStep, UdfCall, UnionStep


class EvaluateDoFn(beam.DoFn):
    """Applies a generated row function: a dict goes on, None means filtered, an error is dead-lettered."""

    def __init__(self, step: str, fn: CompiledFunction):
        self._step = step
        self._compiled = fn
        self._filtered = beam.metrics.Metrics.counter("asa", f"step.{step}.filtered")

    def setup(self):
        self._fn = self._compiled.fn

    def process(self, row):
        try:
            out = self._fn(row)
        except RowError as e:
            yield beam.pvalue.TaggedOutput(FAILED, e.dead_letter(self._step, row))
            return
        except Exception as e:  # a value no operator expected: this row fails, the job goes on
            yield beam.pvalue.TaggedOutput(
                FAILED, DeadLetter(self._step, "evaluation_error", f"{type(e).__name__}: {e}", row))
            return
        if out is None:
            self._filtered.inc()
            return
        yield out


class SelectStepTransform(beam.PTransform):
    """One SELECT step: UDF call stages, WHERE, then the projection.

    >>> # rows | "ModelInput" >> SelectStepTransform(plan.step("ModelInput"), registry)
    Returns ``{"rows": ..., "failed": ...}``.
    """

    def __init__(self, step: SelectStep, functions: FunctionRegistry):
        super().__init__()
        self.step = step
        self.functions = functions

    def expand(self, rows):
        step = self.step
        failed: list[Any] = []
        where_calls = [c for c in step.calls if c.phase == "where"]
        select_calls = [c for c in step.calls if c.phase == "select"]
        where = step.where
        if where_calls:
            rows = self._call_stages(rows, where_calls, failed)
        if select_calls:
            if where is not None:
                rows = self._evaluate(rows, "Where", compile_projection([OutputColumn(None, None)], where), failed)
                where = None
            rows = self._call_stages(rows, select_calls, failed)
        rows = self._evaluate(rows, "Select", compile_projection(step.columns, where), failed)
        return {ROWS: rows, FAILED: _flatten(failed, rows.pipeline, "Failed")}

    def _evaluate(self, rows, label: str, fn: CompiledFunction, failed: list):
        out = rows | label >> beam.ParDo(EvaluateDoFn(self.step.name, fn)).with_outputs(FAILED, main=ROWS)
        failed.append(out[FAILED])
        return out[ROWS]

    def _call_stages(self, rows, calls: list[UdfCall], failed: list):
        for call in sorted(calls, key=lambda c: c.stage):
            function = self.functions.lookup(call.function)
            assert function is not None  # bound by lower()
            site = CallSite(
                step=self.step.name,
                function=function.alias,
                column=call.column,
                args=compile_args(call.args),
                guard=compile_predicate(call.guard) if call.guard is not None else None,
            )
            label = f"udf.{function.alias} #{call.column[len(HIDDEN_PREFIX):]}"
            out = rows | label >> function.call_transform(site)
            failed.append(out[FAILED])
            rows = out[ROWS]
        return rows


class UnionStepTransform(beam.PTransform):
    """All rows of the parts; a part's columns are renamed by position to the first part's names."""

    def __init__(self, step: UnionStep):
        super().__init__()
        self.step = step

    def expand(self, parts):
        names = self.step.static_columns
        renamed = []
        for i, (pcoll, rename) in enumerate(zip(parts, self.step.rename, strict=True)):
            if rename is not None and names is not None:
                pcoll = pcoll | f"Rename part {i + 1}" >> beam.Map(_rename, names)
            renamed.append(pcoll)
        return tuple(renamed) | "Union" >> beam.Flatten()


def _rename(row: dict, names: tuple[str, ...]) -> dict:
    return dict(zip(names, row.values(), strict=False))


def _flatten(pcolls: list, pipeline, label: str):
    if not pcolls:
        return pipeline | label >> beam.Create([])
    if len(pcolls) == 1:
        return pcolls[0]
    return tuple(pcolls) | label >> beam.Flatten()


def _clean_dead_letter(d: DeadLetter) -> DeadLetter:
    if isinstance(d.row, dict) and any(k.startswith(HIDDEN_PREFIX) for k in d.row):
        return d._replace(row={k: v for k, v in d.row.items() if not k.startswith(HIDDEN_PREFIX)})
    return d


class QueryOutputs(dict):
    """The PCollections a query writes, by output name, plus ``.failed`` (DeadLetter records)."""

    failed: Any = None


FunctionsLike = FunctionRegistry | Mapping[str, AsaFunction] | Iterable[AsaFunction] | None


class AsaQuery(beam.PTransform):
    """An ASA query as a Beam PTransform: ``{input name: PCollection of dicts}`` → outputs.

    The query is parsed and bound when the transform is constructed, so a bad query fails
    before any data is read (``QueryError`` with line and column).

    Example::

        with beam.Pipeline(runner="DirectRunner") as p:
            trips = p | beam.Create([{"fare": 12.5, "distance": 3.1}, {"fare": None}])
            out = {"input": trips} | AsaQuery(
                "SELECT fare / distance AS per_km INTO output FROM input WHERE fare IS NOT NULL")
            out["output"] | beam.Map(print)       # {'per_km': 4.032...}
            out.failed | beam.Map(print)          # DeadLetter records (none here)
    """

    def __init__(self, query: str | Plan, functions: FunctionsLike = None,
                 inputs: Iterable[str] | None = None, outputs: Iterable[str] | None = None):
        super().__init__()
        self.functions = functions if isinstance(functions, FunctionRegistry) else FunctionRegistry(functions)
        self.plan = query if isinstance(query, Plan) else lower(parse(query), self.functions, inputs, outputs)

    def expand(self, pvalueish):
        plan = self.plan
        if isinstance(pvalueish, beam.pvalue.PCollection):
            if len(plan.inputs) != 1:
                raise QueryError(f"the query reads {len(plan.inputs)} inputs; pass a dict {{name: PCollection}}")
            sources = {plan.inputs[0].lower(): pvalueish}
            pipeline = pvalueish.pipeline
        else:
            sources = {name.lower(): pc for name, pc in dict(pvalueish).items()}
            pipeline = next(iter(sources.values())).pipeline if sources else None
            missing = [n for n in plan.inputs if n.lower() not in sources]
            if missing:
                raise QueryError(f"no PCollection given for input(s): {', '.join(missing)}")
        computed: dict[str, Any] = dict(sources)
        failed: list[Any] = []
        for step in plan.steps:
            if isinstance(step, SelectStep):
                out = computed[step.source.lower()] | step.name >> SelectStepTransform(step, self.functions)
                failed.append(out[FAILED])
                computed[step.name.lower()] = out[ROWS]
            else:
                parts = tuple(computed[p.lower()] for p in step.parts)
                computed[step.name.lower()] = parts | step.name >> UnionStepTransform(step)
        result = QueryOutputs()
        for name in plan.output_names():
            pcolls = [computed[o.step.lower()] for o in plan.outputs if o.output == name]
            result[name] = pcolls[0] if len(pcolls) == 1 else tuple(pcolls) | f"Into {name}" >> beam.Flatten()
        result.failed = _flatten(failed, pipeline, "All failed") | "Clean dead letters" >> beam.Map(
            _clean_dead_letter)
        return result
