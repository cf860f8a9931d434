"""GROUP BY in a plan → the windowed-aggregation engine: keys and aggregate arguments per row,
``WindowedAggregate``, then the grouped row HAVING and the SELECT list read.

The grouped row holds each GROUP BY key, each aggregate's result (hidden columns named in the
plan) and ``System.Timestamp()`` = the window end.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from transforms.deadletter import FAILED, DeadLetter, RowError
from transforms.functions.base import ROWS
from transforms.functions.registry import FunctionRegistry
from transforms.operators.aggregates import AggregateSpec, UdaAccumulator, make_input_checker
from transforms.operators.windows import WindowedAggregate, WindowSpec, key_part, unplaceable
from transforms.query.expressions import CompiledFunction, compile_args
from transforms.query.plan import TS_COLUMN, AggregateDef, Grouping, RowRef


def window_spec(grouping: Grouping) -> WindowSpec | None:
    w = grouping.window
    if w is None:
        return None
    # A session without OVER (PARTITION BY ...) has one timeline for all keys (ASA's session window).
    partition = (w.partition if w.partition is not None else ()) if w.kind == "session" else None
    return WindowSpec(w.kind, size_us=w.size_us, hop_us=w.hop_us, offset_us=w.offset_us, timeout_us=w.timeout_us,
                      max_duration_us=w.max_duration_us, partition_by=partition)


def aggregate_spec(a: AggregateDef, functions: FunctionRegistry | None = None) -> AggregateSpec:
    if a.function is not None:  # a JavaScript UDA: replayed in event-time order into one JS object
        fn = functions.lookup(a.function) if functions is not None else None
        if fn is None:
            raise ValueError(f"uda.{a.function} is not in the function registry")
        return AggregateSpec(a.name, impl=UdaAccumulator(fn.factory))
    directions = tuple("DESC" if desc else "ASC" for _, desc in a.order_by)
    if a.name == "COLLECTTOP":
        params = (a.params[0], directions)
    elif a.name == "TOPONE":
        params = (directions,)
    elif a.name in ("PERCENTILE_CONT", "PERCENTILE_DISC"):
        params = (a.params[0], directions[0] if directions else "ASC")
    else:
        params = a.params
    return AggregateSpec(a.name, distinct=a.distinct, star=a.star, params=params)


class _Recipe:
    """Where each aggregate's input comes from in the flat tuple of evaluated expressions."""

    def __init__(self, aggregates: tuple[AggregateDef, ...]):
        self.exprs: list = []
        self.shapes: list[tuple] = []
        for a in aggregates:
            if a.star:
                self.shapes.append(("none",))
            elif a.name in ("COLLECTTOP", "TOPONE"):
                order = [self._slot(e) for e, _ in a.order_by]
                value = self._slot(a.args[0]) if a.args else self._slot(RowRef(True))
                self.shapes.append(("ordered", tuple(order), value))
            elif a.name in ("PERCENTILE_CONT", "PERCENTILE_DISC"):
                self.shapes.append(("one", self._slot(a.order_by[0][0])))
            elif a.name == "COLLECT" and not a.args:
                self.shapes.append(("one", self._slot(RowRef(True))))
            else:
                self.shapes.append(("one", self._slot(a.args[0])))

    def _slot(self, e) -> int:
        self.exprs.append(e)
        return len(self.exprs) - 1


def _assemble(shapes: list[tuple], values: tuple) -> tuple:
    out = []
    for shape in shapes:
        if shape[0] == "none":
            out.append(None)
        elif shape[0] == "one":
            out.append(values[shape[1]])
        else:
            out.append((tuple(values[i] for i in shape[1]), values[shape[2]]))
    return tuple(out)


# A KV output type lets the runner lift the combine before the shuffle (combiner lifting needs a KV coder).
@beam.typehints.with_output_types(tuple[Any, Any])
class _KeyAndArgs(beam.DoFn):
    """A row → (key, aggregate arguments); a row that cannot be placed in a window (its event time
    is missing, or its window would end after the last representable time) is a dead letter
    (``invalid_timestamp``) instead of an error that stops the job."""

    def __init__(self, step: str, keys: CompiledFunction, args: CompiledFunction, shapes: list[tuple],
                 specs: tuple[AggregateSpec, ...], window: WindowSpec | None = None):
        self._step = step
        self._keys_c = keys
        self._args_c = args
        self._shapes = shapes
        self._specs = specs
        self._window = window

    def setup(self):
        self._keys = self._keys_c.fn
        self._args = self._args_c.fn
        self._check = make_input_checker(self._specs)

    def process(self, row, ts=beam.DoFn.TimestampParam):
        why = unplaceable(self._window, ts.micros)
        if why is not None:
            yield beam.pvalue.TaggedOutput(FAILED, DeadLetter(
                self._step, "invalid_timestamp", f"the row cannot be placed in a window: {why}", row))
            return
        try:
            # Datetimes, records and arrays cannot be Beam keys as they are: key_part wraps them.
            key = tuple(key_part(v) for v in self._keys(row))
            args = self._check(_assemble(self._shapes, self._args(row)))
        except RowError as e:
            yield beam.pvalue.TaggedOutput(FAILED, e.dead_letter(self._step, row))
            return
        except Exception as e:  # noqa: BLE001 - any failure is this row's
            yield beam.pvalue.TaggedOutput(FAILED, DeadLetter(
                self._step, "evaluation_error", f"{type(e).__name__}: {e}", row))
            return
        yield key, args


def _grouped_row(element: tuple, key_columns: tuple[str, ...], agg_columns: tuple[str, ...]) -> dict:
    key, window_end, results = element
    row = dict(zip(key_columns, key, strict=True))
    row.update(zip(agg_columns, results, strict=False))
    row[TS_COLUMN] = window_end
    return row


class GroupAndAggregate(beam.PTransform):
    """A step's GROUP BY: rows → one grouped row per (key, window) ASA emits.

    ``{"rows": grouped rows, "failed": DeadLetters}`` (rows whose keys or aggregate arguments fail).
    """

    def __init__(self, step: str, grouping: Grouping, allowed_lateness_us: int = 0,
                 functions: FunctionRegistry | None = None):
        super().__init__()
        self.step = step
        self.grouping = grouping
        self.lateness = allowed_lateness_us
        self.functions = functions

    def expand(self, rows):
        g = self.grouping
        aggregates = g.aggregates or (AggregateDef("\x00count", "COUNT", star=True),)  # GROUP BY without aggregates
        recipe = _Recipe(aggregates)
        specs = tuple(aggregate_spec(a, self.functions) for a in aggregates)
        keyed = rows | "Keys and arguments" >> beam.ParDo(
            _KeyAndArgs(self.step, compile_args(g.keys), compile_args(recipe.exprs), recipe.shapes, specs,
                        window_spec(g))
        ).with_outputs(FAILED, main=ROWS)
        results = keyed[ROWS] | "Windowed aggregate" >> WindowedAggregate(window_spec(g), specs, self.lateness)
        grouped = results | "Grouped rows" >> beam.Map(
            _grouped_row, g.key_columns, tuple(a.column for a in g.aggregates))
        return {ROWS: grouped, FAILED: keyed[FAILED]}
