"""Plan → Beam: one named composite PTransform per step, and ``AsaQuery`` for a whole query.

Each WITH step and each SELECT statement becomes a composite labelled with the step name, so
the Beam graph reads like the query. A step read by several statements is applied once and
its PCollection shared. UDF calls run as call stages (see ``transforms.functions.base``)
before the step's final projection; every failure leaves on the FAILED side output.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from transforms import progress, types
from transforms.deadletter import FAILED, DeadLetter, RowError
from transforms.errors import QueryError
from transforms.functions.base import ROWS, AsaFunction, CallSite, RowStage, RowStageDoFn
from transforms.functions.registry import FunctionRegistry
from transforms.operators.accounting import CountDeadLetters, Ledger, StepAccounts, count
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
    RowRef,
    SelectStep,
    UdfCall,
    UnionStep,
    to_sql,
)
from transforms.query.runtime import conform_row


class SelectStepTransform(beam.PTransform):
    """One SELECT step: event time, JOIN/APPLY, analytic functions, UDF call stages, WHERE,
    GROUP BY with windows and aggregates, HAVING, then the projection.

    Applied to the step's source PCollection (or a tuple: the source, then one per JOIN)::

        out = rows | "ModelInput" >> SelectStepTransform(plan.step("ModelInput"), registry)
        out["rows"], out["failed"]
    """

    def __init__(self, step: SelectStep, functions: FunctionRegistry,
                 ordering: EventOrdering | None = None, ledger: Ledger | None = None,
                 source_counts: Sequence[Sequence[str] | None] | None = None, keep_event_time: bool = True):
        super().__init__()
        self.step = step
        self.functions = functions
        # False: nothing reads the rows' event time after this step (CallSite.keeps_event_time)
        self.keep_event_time = keep_event_time
        self.ordering = ordering or EventOrdering()
        # Row accounting (transforms.operators.accounting): the counters of the rows entering the
        # step, one list per source (main, then each JOIN's; None: count them here), and the
        # ledger to write balances into.
        self.ledger = ledger if ledger is not None else Ledger()
        self.source_counts = source_counts
        self._count_in: tuple[str, str] | None = None

    def expand(self, pcolls):
        step = self.step
        primary, others = (pcolls[0], pcolls[1:]) if isinstance(pcolls, tuple) else (pcolls, ())
        failed: list[Any] = []
        given = self.source_counts or [None] * (1 + len(step.joins))
        sources = [c if c is not None else [f"step.{step.name}.in"] for c in given[:1]]
        sources += [c if c is not None else [f"step.{step.name}.in.{j.alias}"] for c, j in zip(
            given[1:], step.joins, strict=True)]
        if given[0] is None:
            live = f"rows_read.{step.source}@{step.name}"
            if step.timestamp_by is not None or self._evaluates_first():
                # counted by the step's first DoFn (TIMESTAMP BY, or WHERE/SELECT): no extra DoFn
                self._count_in = (sources[0][0], live)
            else:
                primary = count(primary, "Count in", sources[0][0], live)
        others = tuple(
            o if c is not None else count(o, f"Count in {j.alias}", s[0], f"rows_read.{j.source}@{step.name}")
            for o, c, s, j in zip(others, given[1:], sources[1:], step.joins, strict=True))
        acct = self._acct = StepAccounts(self.ledger, step.name, sources[0])
        rows = self._event_time(primary, step.timestamp_by, "Timestamp by", failed)
        if step.timestamp_by is not None and _is_streaming(primary):
            # Late events (streaming): adjusted ones go on, dropped ones are dead letters.
            acct.record.details.append(("late events", acct.name("late_events")))
        if step.source_key is not None:
            rows = rows | "Sources" >> beam.Map(_wrap, step.source_key)
        for i, (join, other) in enumerate(zip(step.joins, others, strict=True)):
            rows = self._join(rows, join, other, failed, i + 1, sources[i + 1])
        for i, apply in enumerate(step.applies):
            label = f"{apply.kind.capitalize()} apply {apply.alias}"
            names = ApplyCounts(*(acct.name(f"apply{i + 1}.{k}") for k in ApplyCounts._fields))
            acct.cut(failed, names.rows_in, label)
            out = rows | label >> beam.ParDo(
                ApplyDoFn(step.name, apply, compile_args([apply.arg]), names)).with_outputs(FAILED, main=ROWS)
            failed.append(out[FAILED])
            dead = acct.name(f"apply{i + 1}.dead")
            acct.operator(failed, f"apply{i + 1}")
            acct.ledger.balance(step.name, label, [names.rows_in], [
                ("expanded", names.expanded), ("empty", names.empty), ("dead letters", dead)])
            acct.record.details += [(f"{label}: rows expanded", names.expanded), (f"{label}: rows empty", names.empty),
                                    (f"{label}: rows out", names.rows_out)]
            acct.begin(names.rows_out, label)
            rows = out[ROWS]
        if step.uses_timestamp:
            rows = rows | "System.Timestamp()" >> beam.ParDo(_AttachTimestamp())
        if step.analytic:
            rows = self._analytic(rows, failed)
        out = acct.name("out")
        fused = fused_call(step, self.functions)
        if fused is not None:
            rows = self._fused_call_stage(rows, fused, failed, out)
            acct.finish(failed, out)
            return {ROWS: rows, FAILED: _flatten(acct.count_failed(failed), rows.pipeline, "Failed")}
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
        rows = self._evaluate(rows, "Select", compile_projection(step.columns, where), failed, out)
        acct.finish(failed, out)
        return {ROWS: rows, FAILED: _flatten(acct.count_failed(failed), rows.pipeline, "Failed")}

    def _event_time(self, rows, timestamp_by, label: str, failed: list):
        if timestamp_by is not None:
            kind = AssignTimestampLateDoFn if _is_streaming(rows) else AssignTimestampDoFn
            count_in, self._count_in = self._count_in, None
            out = rows | label >> beam.ParDo(
                kind(self.step.name, compile_value(timestamp_by), self.ordering, count_in)
            ).with_outputs(FAILED, main=ROWS)
            failed.append(out[FAILED])
            return out[ROWS]
        # No TIMESTAMP BY: the rows keep their arrival time, which AsaQuery gave every input row
        # that had none (ArrivalTime), so time read after a step that needed none is still real.
        return rows

    def _evaluates_first(self) -> bool:
        """Whether the step's first per-row operation is its WHERE or SELECT ``RowStageDoFn``."""
        s = self.step
        if (s.timestamp_by is not None or s.source_key is not None
                or s.uses_timestamp or s.analytic or any(c.phase == "where" for c in s.calls)):
            return False
        if fused_call(s, self.functions) is not None:
            return True  # the call's DoFn counts them (its ``before`` stage)
        later = any(c.phase in ("select", "group") for c in s.calls) or s.grouping is not None
        return not later or s.where is not None

    def _evaluate(self, rows, label: str, fn: CompiledFunction, failed: list, out: str | None = None):
        """A generated row function as its own step: a dict goes on, None is filtered, an error is
        dead-lettered; rows filtered (and, with ``out``, passed on) are counted."""
        filtered = self._acct.filtered(label)
        count_in, self._count_in = self._count_in, None
        stage = RowStage(self.step.name, fn, filtered, out, count_in)
        out = rows | label >> beam.ParDo(RowStageDoFn(stage)).with_outputs(FAILED, main=ROWS)
        failed.append(out[FAILED])
        return out[ROWS]

    def _join(self, rows, join: JoinDef, other, failed: list, index: int, source: Sequence[str]):
        from transforms.operators.joins import IntervalJoin, ReferenceJoin, TimeBound

        label = f"{'Left join' if join.kind == 'left' else 'Join'} {join.alias}"
        acct = self._acct
        left_in, right_in, joined = (acct.name(f"join{index}.{k}") for k in ("left_in", "right_in", "out"))
        acct.cut(failed, left_in, label)
        rows = count(rows, f"{label}: count left", left_in)
        other = self._event_time(other, join.timestamp_by, f"{label}: timestamp by", failed)
        other = count(other, f"{label}: count right", right_in)
        acct.side(failed, source, right_in, f"{join.alias}")
        left_key = compile_args(join.left_keys)
        right_key = compile_args(join.right_keys)
        residual = _PairPredicate(compile_predicate_3vl(join.residual), join.key) if join.residual is not None else None
        if join.reference:
            prefix = acct.name(f"join{index}")
            out = rows | label >> ReferenceJoin(other, left_key, right_key, join.kind, residual, self.step.name,
                                                counters=prefix)
            # Each stream row matches reference rows, or none (LEFT keeps it, INNER drops it), or fails.
            acct.ledger.balance(self.step.name, f"{label}: stream rows", [left_in], [
                ("matched", f"{prefix}.matched"), ("unmatched", f"{prefix}.unmatched"),
                ("dead letters", f"{prefix}.lookup_dead")])
            acct.record.details += [(f"{label}: matched", f"{prefix}.matched"),
                                    (f"{label}: unmatched" + (" (kept)" if join.kind == "left" else " (dropped)"),
                                     f"{prefix}.unmatched")]
        else:
            acct.record.details += [(f"{label}: rows in", left_in), (f"{label}: {join.alias} rows in", right_in)]
            unit, lo, hi = join.bound
            bound = TimeBound.between(unit, lo, hi)
            out = (rows, other) | label >> IntervalJoin(left_key, right_key, bound, join.kind, residual, self.step.name)
        failed.append(out[FAILED])
        acct.operator(failed, f"join{index}")
        acct.record.details.append((f"{label}: rows out", joined))
        acct.begin(joined, label)
        merged = out[ROWS] | f"{label}: merge" >> beam.Map(_merge_pair, join.key)
        return count(merged, f"{label}: count out", joined)

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
        acct = self._acct
        folded, groups = acct.name("group.in"), acct.name("group.out")
        acct.cut(failed, folded, "Group by")
        rows = count(rows, "Count folded", folded)
        out = rows | "Group by" >> GroupAndAggregate(self.step.name, self.step.grouping, lateness, self.functions)
        failed.append(out[FAILED])
        acct.operator(failed, "group")
        acct.record.details += [("Group by: rows folded", folded), ("Group by: groups out", groups)]
        acct.begin(groups, "Group by")
        return count(out[ROWS], "Count groups", groups)

    def _call_stages(self, rows, calls: list[UdfCall], failed: list):
        for call in sorted(calls, key=lambda c: c.stage):
            rows = self._call(rows, call, failed)
        return rows

    def _call(self, rows, call: UdfCall, failed: list, before: RowStage | None = None,
              after: RowStage | None = None):
        function = self.functions.lookup(call.function)
        assert function is not None  # bound by lower()
        site = CallSite(
            step=self.step.name,
            function=function.alias,
            column=call.column,
            args=compile_args(call.args),
            guard=compile_predicate(call.guard) if call.guard is not None else None,
            before=before,
            after=after,
            arg_is_row=tuple(call.args) == (RowRef(strip_hidden=True),),
            keeps_event_time=self.keep_event_time,
        )
        label = f"udf.{function.alias} #{call.column[len(HIDDEN_PREFIX):]}"
        out = rows | label >> function.call_transform(site)
        failed.append(out[FAILED])
        return out[ROWS]

    def _fused_call_stage(self, rows, call: UdfCall, failed: list, out: str):
        """WHERE, the call and the projection in the call's own DoFn (see ``fused_call``)."""
        step, acct = self.step, self._acct
        count_in, self._count_in = self._count_in, None
        before = None
        if step.where is not None or count_in is not None:
            where = compile_projection([OutputColumn(None, None)], step.where) if step.where is not None else None
            before = RowStage(step.name, where, acct.filtered("Where") if where is not None else None,
                              rows_in=count_in)
        after = RowStage(step.name, compile_projection(step.columns, None), acct.filtered("Select"), out)
        return self._call(rows, call, failed, before, after)


def fused_call(step: SelectStep, functions: FunctionRegistry) -> UdfCall | None:
    """The step's one UDF call, when its WHERE, the call and its projection can share one DoFn.

    That is a step without GROUP BY whose only call is in its SELECT list (not in its WHERE),
    to a function that runs a call site's row stages itself (``AsaFunction.fuses_row_stages``).
    Each Beam step costs about a microsecond per row, as much as the rest of a simple step.
    """
    if step.grouping is not None or len(step.calls) != 1 or step.calls[0].phase != "select":
        return None
    function = functions.lookup(step.calls[0].function)
    return step.calls[0] if function is not None and function.fuses_row_stages else None


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

    def __init__(self, step: str, fn: CompiledFunction, ordering: EventOrdering | None = None,
                 rows_in: tuple[str, str] | None = None):
        self._step = step
        self._compiled = fn
        self._ordering = ordering or EventOrdering()
        self._late = beam.metrics.Metrics.counter("asa", f"step.{step}.late_events")
        # (counter, live progress name) of the rows entering the step, when this DoFn is its first
        self._in = (beam.metrics.Metrics.counter("asa", rows_in[0]), rows_in[1]) if rows_in else None

    def start_bundle(self):
        self._n_in = self._reported = 0

    def finish_bundle(self):
        if self._n_in and self._in is not None:
            self._in[0].inc(self._n_in)
            progress.add(self._in[1], self._n_in - self._reported)
        self._n_in = self._reported = 0

    def _count_in(self) -> None:
        self._n_in += 1
        if self._n_in - self._reported >= progress.EVERY:
            progress.add(self._in[1], self._n_in - self._reported)
            self._reported = self._n_in

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
        if self._in is not None:
            self._count_in()
        try:
            _, event = self.event_time(row)
        except RowError as e:
            yield beam.pvalue.TaggedOutput(FAILED, e.dead_letter(self._step, row))
            return
        yield TimestampedValue(row, event)


class AssignTimestampLateDoFn(AssignTimestampDoFn):
    """TIMESTAMP BY in streaming: also applies the late-arrival policy against the arrival time."""

    def process(self, row, arrival=beam.DoFn.TimestampParam):
        if self._in is not None:
            self._count_in()
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


class ArrivalTime(beam.DoFn):
    """A row's arrival time: the timestamp it came with (a file's last-modified time, a watched
    file's or a TestStream's arrival); a row with none (Beam's MIN_TIMESTAMP: ``beam.Create``, a
    file whose filesystem gives no modification time) gets ``at``, one instant shared by all such
    rows of a bounded input (as a file's rows share its last-modified time), or, with ``at=None``
    (streaming), the time it is processed.

    >>> fixed = ArrivalTime(Timestamp(60))
    >>> [tv.timestamp for tv in fixed.process({"a": 1}, MIN_TIMESTAMP)], fixed.process({"a": 1}, Timestamp(5))
    ([Timestamp(60)], ({'a': 1},))
    """

    def __init__(self, at: Timestamp | None = None):
        self._at = at

    def process(self, row, ts=beam.DoFn.TimestampParam):
        if ts > MIN_TIMESTAMP:
            return (row,)
        return (TimestampedValue(row, self._at if self._at is not None else Timestamp.now()),)


def inputs_needing_arrival_time(plan: Plan) -> set[str]:
    """The inputs (lower case) whose rows need an arrival time: some step of the query reads time
    (a window, a GROUP BY, a JOIN, an analytic function, System.Timestamp()), and the input is
    read without TIMESTAMP BY at least once. Time flows through the steps, so the step that
    needs it may be several steps after the one that reads the input."""
    if not any(isinstance(s, SelectStep) and s.needs_event_time for s in plan.steps):
        return set()
    read = set()
    for s in plan.steps:
        if isinstance(s, SelectStep):
            readings = [(s.source, s.timestamp_by), *((j.source, j.timestamp_by) for j in s.joins)]
        else:
            readings = [(p, None) for p in s.parts]
        read |= {source.lower() for source, by in readings if by is None}
    return read & {n.lower() for n in plan.inputs}


class _AttachTimestamp(beam.DoFn):
    """Puts the element's event time where ``System.Timestamp()`` reads it."""

    def process(self, row, ts=beam.DoFn.TimestampParam):
        yield {**row, TS_COLUMN: timestamp_to_datetime(ts)}


class ApplyDoFn(beam.DoFn):
    """CROSS/OUTER APPLY GetArrayElements(array) / GetRecordProperties(record): one row per element."""

    def __init__(self, step: str, apply: ApplyDef, arg: CompiledFunction, counts: ApplyCounts | None = None):
        self._step = step
        self._apply = apply
        self._compiled = arg
        self._counters = ApplyCounts(*(beam.metrics.Metrics.counter("asa", n) for n in counts)) if counts else None

    def setup(self):
        self._fn = self._compiled.fn

    def start_bundle(self):
        self._n = [0, 0, 0, 0]  # ApplyCounts: rows in, expanded, empty, rows out

    def finish_bundle(self):
        if self._counters is not None:
            for counter, n in zip(self._counters, self._n, strict=True):
                if n:
                    counter.inc(n)
        self._n = [0, 0, 0, 0]

    def process(self, row):
        a = self._apply
        n = self._n
        n[0] += 1
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
        if not items:
            n[2] += 1
            return
        n[1] += 1
        n[3] += len(items)
        for item in items:
            yield {**row, a.key: item}


class ApplyCounts(NamedTuple):
    """The counters of an APPLY: rows read = rows expanded + rows with nothing to expand + dead letters."""

    rows_in: Any
    expanded: Any
    empty: Any
    rows_out: Any


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


def _apply_schemas(plan: Plan, sources: dict, failed: list, ledger: Ledger) -> tuple[dict, dict]:
    """Inputs with a CREATE TABLE go through their conversion stage before any step reads them.

    The stage is a step of the ledger: rows in = rows out + dead letters, and its rows in are
    the input's rows entering the query. Returns the sources and, per converted input, the
    counter of its rows out (what the steps reading it start from).
    """
    out = dict(sources)
    typed: dict[str, list[str]] = {}
    for schema in plan.schemas:
        key = schema.input.lower()
        if key not in out:
            continue
        step = f"CREATE TABLE {schema.input}"
        c_in, c_out, c_dead = (f"step.{step}.{w}" for w in ("in", "out", "dead"))
        rows = count(out[key], f"{step}: count in", c_in, f"rows_read.{schema.input}@{step}")
        converted = rows | step >> beam.ParDo(ConformDoFn(schema)).with_outputs(FAILED, main=ROWS)
        failed.append(converted[FAILED] | f"{step}: count dead letters" >> beam.ParDo(CountDeadLetters(c_dead)))
        out[key] = count(converted[ROWS], f"{step}: count out", c_out)
        ledger.add_step(step, ins=[c_in], out=[c_out]).dead.append(c_dead)
        ledger.balance(step, "rows", [c_in], [("out", c_out), ("dead letters", c_dead)])
        name = next((n for n in plan.inputs if n.lower() == key), schema.input)
        ledger.inputs.setdefault(name, []).append(c_in)
        typed[key] = [c_out]
    return out, typed


class QueryOutputs(dict):
    """The PCollections a query writes, by output name, plus ``.failed`` (DeadLetter records)
    and ``.ledger``: the row-accounting counters and balances (``transforms.operators.accounting``)."""

    failed: Any = None
    ledger: Ledger | None = None


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
                 reference_inputs: Iterable[str] = (), event_ordering: EventOrdering | None = None,
                 arrival_time: _dt.datetime | None = None, outputs_read_event_time: bool = True):
        super().__init__()
        self.ordering = event_ordering or EventOrdering()
        # False: whatever reads the outputs and dead letters ignores the rows' event time and
        # windows (a job's writers without {date}/{time} in their paths: ``WriteRows.reads_event_time``).
        # With no step of the query reading it either, bounded UDF calls need not carry it.
        self.outputs_read_event_time = outputs_read_event_time
        # The arrival time of bounded input rows that carry no timestamp (ArrivalTime); None:
        # when the pipeline is built. Given, it makes such a query's windows reproducible.
        self.arrival_time = arrival_time
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
        # A row always has an arrival time (ASA): input rows that carry none get one, here, before
        # any step, so a window several steps later never sees Beam's MIN_TIMESTAMP.
        from transforms.operators.windows import datetime_to_us

        at = Timestamp.now() if self.arrival_time is None else Timestamp(micros=datetime_to_us(self.arrival_time))
        for name in inputs_needing_arrival_time(plan):
            sources[name] = sources[name] | f"Arrival time of {name}" >> beam.ParDo(
                ArrivalTime(None if _is_streaming(sources[name]) else at))
        # Row accounting: a step reading an input counts the rows entering it (and reports them
        # live); a step reading a step starts from that step's rows out (a union's: its parts').
        ledger = Ledger()
        counted: dict[str, list[str] | None] = dict.fromkeys(sources)
        failed: list[Any] = []
        sources, typed = _apply_schemas(plan, sources, failed, ledger)
        counted.update(typed)  # steps read a CREATE TABLE input's converted rows, counted there
        computed: dict[str, Any] = dict(sources)
        keep_time = self.outputs_read_event_time or any(
            isinstance(s, SelectStep) and s.needs_event_time for s in plan.steps)
        for step in plan.steps:
            if isinstance(step, SelectStep):
                src = computed[step.source.lower()]
                terms = [counted[step.source.lower()], *(counted[j.source.lower()] for j in step.joins)]
                if step.joins:
                    src = (src, *(computed[j.source.lower()] for j in step.joins))
                transform = SelectStepTransform(step, self.functions, self.ordering, ledger, terms, keep_time)
                out = src | step.name >> transform
                record = ledger.steps[step.name]
                entering = [record.ins, *(terms for _, terms in record.joined)]
                for source, terms in zip(step.sources, entering, strict=True):
                    if source.lower() in sources and source.lower() not in typed:
                        name = next(n for n in plan.inputs if n.lower() == source.lower())
                        ledger.inputs.setdefault(name, []).extend(terms)
                failed.append(out[FAILED])
                computed[step.name.lower()] = out[ROWS]
                counted[step.name.lower()] = [f"step.{step.name}.out"]
            else:
                parts = tuple(computed[p.lower()] for p in step.parts)
                computed[step.name.lower()] = parts | step.name >> UnionStepTransform(step)
                counted[step.name.lower()] = [c for p in step.parts for c in counted[p.lower()]]
                ledger.add_step(step.name, ins=counted[step.name.lower()], out=counted[step.name.lower()])
        result = QueryOutputs()
        result.ledger = ledger
        for name in plan.output_names():
            pcolls = [computed[o.step.lower()] for o in plan.outputs if o.output == name]
            ledger.outputs[name] = [c for o in plan.outputs if o.output == name for c in counted[o.step.lower()]]
            result[name] = pcolls[0] if len(pcolls) == 1 else tuple(pcolls) | f"Into {name}" >> beam.Flatten()
        result.failed = _flatten(failed, pipeline, "All failed") | "Clean dead letters" >> beam.Map(
            _clean_dead_letter)
        return result
