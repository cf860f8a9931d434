"""Plan → Beam: one named composite PTransform per step, and ``AsaQuery`` for a whole query.

Each WITH step and each SELECT statement becomes a composite labelled with the step name, so
the Beam graph reads like the query. A step read by several statements is applied once and
its PCollection shared. UDF calls run as call stages (see ``transforms.functions.base``)
before the step's final projection; every failure leaves on the FAILED side output.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from transforms import types
from transforms.deadletter import FAILED, DeadLetter, RowError
from transforms.errors import QueryError
from transforms.functions.base import ROWS, AsaFunction, CallSite
from transforms.functions.registry import FunctionRegistry
from transforms.query.expressions import (
    CompiledFunction,
    compile_args,
    compile_predicate,
    compile_predicate_3vl,
    compile_projection,
    compile_value,
)
from transforms.query.lower import lower
from transforms.query.parser import parse
from transforms.query.plan import (
    HIDDEN_PREFIX,
    SOURCE_PREFIX,
    TS_COLUMN,
    ApplyDef,
    InputSchema,
    JoinDef,
    OutputColumn,
    Plan,
    SelectStep,
    UdfCall,
    UnionStep,
    to_sql,
)
from transforms.query.runtime import conform_row


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
    """One SELECT step: event time, JOIN/APPLY, analytic functions, UDF call stages, WHERE,
    GROUP BY with windows and aggregates, HAVING, then the projection.

    Applied to the step's source PCollection (or a tuple: the source, then one per JOIN)::

        out = rows | "ModelInput" >> SelectStepTransform(plan.step("ModelInput"), registry)
        out["rows"], out["failed"]
    """

    def __init__(self, step: SelectStep, functions: FunctionRegistry, reads_input: bool = False,
                 ordering: EventOrdering | None = None):
        super().__init__()
        self.step = step
        self.functions = functions
        self.reads_input = reads_input
        self.ordering = ordering or EventOrdering()

    def expand(self, pcolls):
        step = self.step
        primary, others = (pcolls[0], pcolls[1:]) if isinstance(pcolls, tuple) else (pcolls, ())
        failed: list[Any] = []
        rows = self._event_time(primary, step.timestamp_by, "Timestamp by", failed)
        if step.source_key is not None:
            rows = rows | "Sources" >> beam.Map(_wrap, step.source_key)
        for join, other in zip(step.joins, others, strict=True):
            rows = self._join(rows, join, other, failed)
        for apply in step.applies:
            out = rows | f"{apply.kind.capitalize()} apply {apply.alias}" >> beam.ParDo(
                ApplyDoFn(step.name, apply, compile_args([apply.arg]))).with_outputs(FAILED, main=ROWS)
            failed.append(out[FAILED])
            rows = out[ROWS]
        if step.uses_timestamp:
            rows = rows | "System.Timestamp()" >> beam.ParDo(_AttachTimestamp())
        if step.analytic:
            rows = self._analytic(rows, failed)
        phases = {ph: [c for c in step.calls if c.phase == ph] for ph in ("where", "select", "group", "post")}
        where = step.where
        if phases["where"]:
            rows = self._call_stages(rows, phases["where"], failed)
        later = phases["select"] or phases["group"] or step.grouping is not None
        if later and where is not None:
            rows = self._evaluate(rows, "Where", compile_projection([OutputColumn(None, None)], where), failed)
            where = None
        rows = self._call_stages(rows, phases["select"] + phases["group"], failed)
        if step.grouping is not None:
            rows = self._aggregate(rows, failed)
            rows = self._call_stages(rows, phases["post"], failed)
            where = step.grouping.having
        rows = self._evaluate(rows, "Select", compile_projection(step.columns, where), failed)
        return {ROWS: rows, FAILED: _flatten(failed, rows.pipeline, "Failed")}

    def _event_time(self, rows, timestamp_by, label: str, failed: list):
        if timestamp_by is not None:
            kind = AssignTimestampLateDoFn if _is_streaming(rows) else AssignTimestampDoFn
            out = rows | label >> beam.ParDo(
                kind(self.step.name, compile_value(timestamp_by), self.ordering)
            ).with_outputs(FAILED, main=ROWS)
            failed.append(out[FAILED])
            return out[ROWS]
        if self.reads_input and self.step.needs_event_time:
            # No TIMESTAMP BY: ASA uses the arrival time (EventEnqueuedUtcTime); for files, the time read.
            return rows | f"{label} (arrival time)" >> beam.ParDo(_ArrivalTime())
        return rows

    def _evaluate(self, rows, label: str, fn: CompiledFunction, failed: list):
        out = rows | label >> beam.ParDo(EvaluateDoFn(self.step.name, fn)).with_outputs(FAILED, main=ROWS)
        failed.append(out[FAILED])
        return out[ROWS]

    def _join(self, rows, join: JoinDef, other, failed: list):
        from transforms.operators.joins import IntervalJoin, ReferenceJoin, TimeBound

        label = f"{'Left join' if join.kind == 'left' else 'Join'} {join.alias}"
        other = self._event_time(other, join.timestamp_by, f"{label}: timestamp by", failed)
        left_key = compile_args(join.left_keys)
        right_key = compile_args(join.right_keys)
        residual = _PairPredicate(compile_predicate_3vl(join.residual), join.key) if join.residual is not None else None
        if join.reference:
            out = rows | label >> ReferenceJoin(other, left_key, right_key, join.kind, residual, self.step.name)
        else:
            unit, lo, hi = join.bound
            bound = TimeBound.between(unit, lo, hi)
            out = (rows, other) | label >> IntervalJoin(left_key, right_key, bound, join.kind, residual, self.step.name)
        failed.append(out[FAILED])
        return out[ROWS] | f"{label}: merge" >> beam.Map(_merge_pair, join.key)

    def _analytic(self, rows, failed: list):
        from transforms.operators.analytic import AGGREGATE_KINDS, AnalyticCall, AnalyticFunctions, CheckedValue

        partitions: dict[str, Any] = {}
        calls = []
        for a in self.step.analytic:
            part = None
            if a.partition:
                text = "|".join(map(to_sql, a.partition)).lower()
                part = partitions.setdefault(text, compile_args(a.partition))
            value = compile_value(a.value) if a.value is not None else None
            if value is not None and a.kind in AGGREGATE_KINDS:
                value = CheckedValue(value, a.kind)
            calls.append(AnalyticCall(
                a.kind, a.column,
                value=value,
                offset=a.offset,
                partition=part,
                duration_us=a.duration_us,
                when=compile_predicate_3vl(a.when) if a.when is not None else None,
                default_fn=compile_value(a.default) if a.default is not None else None,
            ))
        out = rows | "Analytic functions" >> AnalyticFunctions(calls, self.step.name)
        failed.append(out[FAILED])
        return out[ROWS]

    def _aggregate(self, rows, failed: list):
        from transforms.operators.aggregation import GroupAndAggregate

        # Batch has no late data; allowed lateness would add late firings and cost combiner lifting.
        lateness = self.ordering.allowed_lateness_us if _is_streaming(rows) else 0
        out = rows | "Group by" >> GroupAndAggregate(self.step.name, self.step.grouping, lateness, self.functions)
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


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MICROSECOND = _dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class EventOrdering:
    """ASA's event-ordering policy (applies with TIMESTAMP BY).

    An event whose time is more than ``late_arrival_s`` before its arrival time (the element's
    timestamp when it reached the step: a streaming source's arrival time) is *late*: with
    ``policy="adjust"`` its time becomes arrival − tolerance, with ``"drop"`` it is dead-lettered
    (``late_event``). ``late_arrival_s=-1`` waits indefinitely. Bounded file reads have no
    arrival time, so nothing is late in batch. ``out_of_order_s`` is how far behind the
    watermark an event may still be counted by windows and joins (allowed lateness).
    Defaults are ASA's portal defaults: 5 s, 0 s, adjust.
    """

    late_arrival_s: float = 5.0
    out_of_order_s: float = 0.0
    policy: str = "adjust"

    def __post_init__(self):
        if self.policy not in ("adjust", "drop"):
            raise ValueError(f"event ordering policy must be 'adjust' or 'drop', not {self.policy!r}")

    @property
    def allowed_lateness_us(self) -> int:
        late = max(self.late_arrival_s, 0)
        return int((late + self.out_of_order_s) * 1_000_000)


class AssignTimestampDoFn(beam.DoFn):
    """TIMESTAMP BY: the row's event time becomes its Beam timestamp; a NULL or bad time is a row error;
    late events are adjusted or dead-lettered per the EventOrdering policy."""

    def __init__(self, step: str, fn: CompiledFunction, ordering: EventOrdering | None = None):
        self._step = step
        self._compiled = fn
        self._ordering = ordering or EventOrdering()
        self._late = beam.metrics.Metrics.counter("asa", f"step.{step}.late_events")

    def setup(self):
        self._fn = self._compiled.fn
        o = self._ordering
        self._tolerance = None if o.late_arrival_s < 0 else Duration(micros=int(o.late_arrival_s * 1_000_000))

    def event_time(self, row) -> tuple[_dt.datetime, Timestamp]:
        value = self._fn(row)
        if value is None:
            raise RowError("invalid_timestamp", "TIMESTAMP BY gave NULL")
        try:
            when = types.to_datetime(value)
        except RowError as e:
            raise RowError("invalid_timestamp", f"TIMESTAMP BY: {e.message}") from None
        return when, Timestamp(micros=(when - _EPOCH) // _MICROSECOND)

    def process(self, row):
        # Batch: bounded reads carry no arrival time, so no event can be late.
        try:
            _, event = self.event_time(row)
        except RowError as e:
            yield beam.pvalue.TaggedOutput(FAILED, e.dead_letter(self._step, row))
            return
        yield TimestampedValue(row, event)


class AssignTimestampLateDoFn(AssignTimestampDoFn):
    """TIMESTAMP BY in streaming: also applies the late-arrival policy against the arrival time."""

    def process(self, row, arrival=beam.DoFn.TimestampParam):
        try:
            when, event = self.event_time(row)
        except RowError as e:
            yield beam.pvalue.TaggedOutput(FAILED, e.dead_letter(self._step, row))
            return
        if self._tolerance is not None and arrival > MIN_TIMESTAMP and event < arrival - self._tolerance:
            self._late.inc()
            if self._ordering.policy == "drop":
                yield beam.pvalue.TaggedOutput(FAILED, DeadLetter(
                    self._step, "late_event", f"event time {when.isoformat()} is more than "
                    f"{self._ordering.late_arrival_s} s before its arrival time {arrival.to_rfc3339()}", row))
                return
            event = arrival - self._tolerance
        yield TimestampedValue(row, event)


class _ArrivalTime(beam.DoFn):
    """Keeps a streaming source's arrival time (a watched file's, a TestStream's); else the time now."""

    def process(self, row, ts=beam.DoFn.TimestampParam):
        if ts > MIN_TIMESTAMP:
            return (row,)
        return (TimestampedValue(row, Timestamp.now()),)


class _AttachTimestamp(beam.DoFn):
    """Puts the element's event time where ``System.Timestamp()`` reads it."""

    def process(self, row, ts=beam.DoFn.TimestampParam):
        yield {**row, TS_COLUMN: timestamp_to_datetime(ts)}


class ApplyDoFn(beam.DoFn):
    """CROSS/OUTER APPLY GetArrayElements(array) / GetRecordProperties(record): one row per element."""

    def __init__(self, step: str, apply: ApplyDef, arg: CompiledFunction):
        self._step = step
        self._apply = apply
        self._compiled = arg

    def setup(self):
        self._fn = self._compiled.fn

    def process(self, row):
        a = self._apply
        try:
            (value,) = self._fn(row)
            if value is None:
                items = []
            elif a.function == "GetArrayElements":
                if not isinstance(value, list):
                    raise RowError("type_error", f"GetArrayElements needs an array, got {types.type_of(value)}")
                items = [{"ArrayIndex": i, "ArrayValue": v} for i, v in enumerate(value)]
            else:
                if not isinstance(value, dict):
                    raise RowError("type_error", f"GetRecordProperties needs a record, got {types.type_of(value)}")
                items = [{"PropertyName": k, "PropertyValue": v} for k, v in value.items()]
        except RowError as e:
            yield beam.pvalue.TaggedOutput(FAILED, e.dead_letter(self._step, _unwrap(row)))
            return
        if not items and a.kind == "outer":
            items = [None]
        for item in items:
            yield {**row, a.key: item}


class _PairPredicate:
    """A JOIN's residual ON condition, evaluated on the joined row."""

    def __init__(self, fn: CompiledFunction, key: str):
        self.fn = fn
        self.key = key

    def __call__(self, left: dict, right: dict) -> bool | None:
        return self.fn({**left, self.key: right})


def _is_streaming(pcoll) -> bool:
    options = pcoll.pipeline.options
    return bool(options is not None and options.view_as(StandardOptions).streaming)


def _wrap(row: dict, key: str) -> dict:
    return {key: row}


def _unwrap(row: dict) -> dict:
    """A composite row (JOIN/APPLY) as a dead letter shows it: its sources by alias."""
    return {k[len(SOURCE_PREFIX):] if k.startswith(SOURCE_PREFIX) else k: v for k, v in row.items()}


def _merge_pair(pair: tuple, key: str) -> dict:
    left, right = pair
    return {**left, key: right}


def timestamp_to_datetime(ts: Timestamp) -> _dt.datetime:
    return _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(microseconds=ts.micros)


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
    """Dead letters show rows as the query sees them: no hidden columns, composite rows by alias."""
    if isinstance(d.row, dict) and any(k.startswith(HIDDEN_PREFIX) for k in d.row):
        return d._replace(row={k[len(SOURCE_PREFIX):] if k.startswith(SOURCE_PREFIX) else k: v
                               for k, v in d.row.items() if k.startswith(SOURCE_PREFIX)
                               or not k.startswith(HIDDEN_PREFIX)})
    return d


class ConformDoFn(beam.DoFn):
    """CREATE TABLE: converts an input's declared columns to their types; a row whose value does
    not convert is dead-lettered (``schema_mismatch``; ASA drops it)."""

    def __init__(self, schema: InputSchema):
        self._schema = schema

    def process(self, row):
        try:
            yield conform_row(row, self._schema.input, self._schema.columns)
        except RowError as e:
            yield beam.pvalue.TaggedOutput(FAILED, e.dead_letter(f"CREATE TABLE {self._schema.input}", row))


def _apply_schemas(plan: Plan, sources: dict, failed: list) -> dict:
    """Inputs with a CREATE TABLE go through their conversion stage before any step reads them."""
    out = dict(sources)
    for schema in plan.schemas:
        key = schema.input.lower()
        if key not in out:
            continue
        converted = out[key] | f"CREATE TABLE {schema.input}" >> beam.ParDo(ConformDoFn(schema)).with_outputs(
            FAILED, main=ROWS)
        failed.append(converted[FAILED])
        out[key] = converted[ROWS]
    return out


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
                 inputs: Iterable[str] | None = None, outputs: Iterable[str] | None = None,
                 reference_inputs: Iterable[str] = (), event_ordering: EventOrdering | None = None):
        super().__init__()
        self.ordering = event_ordering or EventOrdering()
        self.functions = functions if isinstance(functions, FunctionRegistry) else FunctionRegistry(functions)
        self.plan = query if isinstance(query, Plan) else lower(
            parse(query), self.functions, inputs, outputs, reference_inputs)

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
        failed: list[Any] = []
        sources = _apply_schemas(plan, sources, failed)
        computed: dict[str, Any] = dict(sources)
        for step in plan.steps:
            if isinstance(step, SelectStep):
                reads_input = step.source.lower() in sources
                src = computed[step.source.lower()]
                if step.joins:
                    src = (src, *(computed[j.source.lower()] for j in step.joins))
                out = src | step.name >> SelectStepTransform(step, self.functions, reads_input, self.ordering)
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
