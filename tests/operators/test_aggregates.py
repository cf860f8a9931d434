"""Accumulators of the ASA aggregate functions and MultiAggregateCombineFn.

Expected values are computed independently (by hand, ``fractions``, ``math.fsum``, ``statistics``).
"""

import datetime as dt
import math
import random
import statistics
from fractions import Fraction

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.deadletter import RowError
from transforms.operators.aggregates import (
    AGGREGATES,
    AggregateSpec,
    MultiAggregateCombineFn,
    UdaAccumulator,
    make_accumulator,
    make_input_checker,
    timestamp_slots,
)

UTC = dt.timezone.utc


def fold(spec, values, retractable=False):
    """Aggregate ``values`` (already in the form the accumulator expects) in one accumulator."""
    f = make_accumulator(spec, retractable=retractable)
    acc = f.create()
    for v in values:
        acc = f.add(acc, v)
    return f.extract(acc)


def fold_merged(spec, values, parts=3, seed=0):
    """The same through several partial accumulators merged in a shuffled order."""
    f = make_accumulator(spec)
    rnd = random.Random(seed)
    accs = [f.create() for _ in range(parts)]
    for v in values:
        i = rnd.randrange(parts)
        accs[i] = f.add(accs[i], v)
    rnd.shuffle(accs)
    return f.extract(f.merge(accs))


def timed(values):
    """(value, event time) pairs for accumulators that need timestamps (distinct, increasing)."""
    return [(v, 1_000_000 * i) for i, v in enumerate(values)]


# --------------------------------------------------------------------------- COUNT


def test_count_star_counts_rows_count_x_skips_nulls():
    values = [1, None, "a", None, {"x": 1}]
    assert fold(AggregateSpec("COUNT", star=True), values) == 5
    assert fold(AggregateSpec("COUNT"), values) == 3
    assert fold(AggregateSpec("COUNT"), []) == 0
    assert fold(AggregateSpec("COUNT"), [None, None]) == 0


def test_count_distinct():
    values = [1, 2, 2, None, "a", "a", {"b": 1, "a": 2}, {"a": 2, "b": 1}, [1, 2], [1, 2], [2, 1]]
    # distinct non-NULL: 1, 2, "a", {a:2,b:1}, [1,2], [2,1]
    spec = AggregateSpec("COUNT", distinct=True)
    assert fold(spec, values) == 6
    assert fold_merged(spec, values) == 6
    assert fold(spec, [None]) == 0


# --------------------------------------------------------------------------- SUM / AVG


def test_sum_types_and_nulls():
    assert fold(AggregateSpec("SUM"), [1, 2, None, 3]) == 6
    assert type(fold(AggregateSpec("SUM"), [1, 2, 3])) is int
    assert fold(AggregateSpec("SUM"), [1, 2.5]) == 3.5
    assert type(fold(AggregateSpec("SUM"), [1, 2.0])) is float
    assert fold(AggregateSpec("SUM"), []) is None
    assert fold(AggregateSpec("SUM"), [None, None]) is None
    assert fold(AggregateSpec("SUM", distinct=True), [1, 1, 2, None]) == 3


def test_sum_is_the_correctly_rounded_exact_sum_in_any_merge_order():
    rnd = random.Random(3)
    values = [rnd.choice([1e16, -1e16, 0.1, 3.3, -2.2, 1e-300]) * rnd.random() for _ in range(300)]
    expected = math.fsum(values)
    assert fold(AggregateSpec("SUM"), values) == expected
    for seed in range(4):
        assert fold_merged(AggregateSpec("SUM"), values, parts=5, seed=seed) == expected
    assert fold(AggregateSpec("SUM"), [0.1] * 10) == 1.0  # the exact sum, rounded once


def test_sum_special_values():
    assert fold(AggregateSpec("SUM"), [1.0, math.inf]) == math.inf
    assert fold(AggregateSpec("SUM"), [-math.inf, 2]) == -math.inf
    assert math.isnan(fold(AggregateSpec("SUM"), [math.inf, -math.inf]))
    assert math.isnan(fold(AggregateSpec("SUM"), [1.0, math.nan]))
    assert fold(AggregateSpec("SUM"), [1.7e308, 1.7e308]) == math.inf


def test_avg_is_float_and_exact():
    assert fold(AggregateSpec("AVG"), [1, 2]) == 1.5
    assert type(fold(AggregateSpec("AVG"), [2, 4])) is float
    assert fold(AggregateSpec("AVG"), [1, None, 3]) == 2.0
    assert fold(AggregateSpec("AVG"), []) is None
    values = [0.1, 0.2, 0.3, 1e20, -1e20, 7]
    assert fold(AggregateSpec("AVG"), values) == float(sum(Fraction(v) for v in values) / len(values))
    assert fold(AggregateSpec("AVG"), [2**62, 2**62, 2**62]) == float(2**62)


# --------------------------------------------------------------------------- STDEV / VAR


def _exact_var(values, population):
    xs = [Fraction(v) for v in values]
    n = len(xs)
    mean = sum(xs) / n
    ss = sum((x - mean) ** 2 for x in xs)
    return float(ss / (n if population else n - 1))


@pytest.mark.parametrize("values", [[1, 2, 3, 4], [2.5, 3.5, 10.25, -4.0, 1e10], [5, 5, 5], [1, 2.5]])
def test_var_stdev(values):
    assert fold(AggregateSpec("VAR"), values) == _exact_var(values, False)
    assert fold(AggregateSpec("VARP"), values) == _exact_var(values, True)
    assert fold(AggregateSpec("STDEV"), values) == math.sqrt(_exact_var(values, False))
    assert fold(AggregateSpec("STDEVP"), values) == math.sqrt(_exact_var(values, True))
    assert fold(AggregateSpec("STDEV"), values) == pytest.approx(statistics.stdev(values))
    assert fold_merged(AggregateSpec("VAR"), values, parts=2) == _exact_var(values, False)


def test_var_edge_cases():
    assert fold(AggregateSpec("STDEV"), [3]) is None  # sample statistics need two values
    assert fold(AggregateSpec("VAR"), [3, None]) is None
    assert fold(AggregateSpec("STDEVP"), [3]) == 0.0
    assert fold(AggregateSpec("VARP"), []) is None
    assert math.isnan(fold(AggregateSpec("VAR"), [1.0, math.inf]))
    # no catastrophic cancellation: huge offset, small spread
    assert fold(AggregateSpec("VAR"), [1e9 + 1, 1e9 + 2, 1e9 + 3]) == 1.0


# --------------------------------------------------------------------------- MIN / MAX


@pytest.mark.parametrize("retractable", [False, True])
def test_min_max(retractable):
    d1, d2 = dt.datetime(2021, 1, 1, tzinfo=UTC), dt.datetime(2021, 1, 2, tzinfo=UTC)
    assert fold(AggregateSpec("MIN"), [3, None, 1.5, 7], retractable) == 1.5
    assert fold(AggregateSpec("MAX"), [3, None, 1.5, 7], retractable) == 7
    assert fold(AggregateSpec("MAX"), ["b", "a", "c"], retractable) == "c"
    assert fold(AggregateSpec("MIN"), [d2, d1], retractable) == d1
    assert fold(AggregateSpec("MAX"), [None], retractable) is None
    assert fold(AggregateSpec("MIN"), [], retractable) is None
    assert type(fold(AggregateSpec("MAX"), [2, 1], retractable)) is int
    # mixed types: numbers < strings (a documented choice; ASA does not say)
    assert fold(AggregateSpec("MAX"), [5, "x"], retractable) == "x"
    assert fold(AggregateSpec("MIN"), [5, "x"], retractable) == 5


# --------------------------------------------------------------------------- Collect


def test_collect_in_event_time_order_skipping_nulls():
    pairs = [("c", 3), (None, 1), ("a", 1), ("b", 2)]
    assert fold(AggregateSpec("COLLECT"), pairs) == ["a", "b", "c"]
    assert fold(AggregateSpec("COLLECT"), [(None, 1)]) is None
    rows = [{"id": i} for i in range(5)]
    assert fold_merged(AggregateSpec("COLLECT"), timed(rows)) == rows  # Collect(): whole rows


def test_collect_distinct():
    got = fold(AggregateSpec("COLLECT", distinct=True), timed([1, 2, 1, {"a": 1}, {"a": 1}, None]))
    assert sorted(map(str, got)) == sorted(map(str, [1, 2, {"a": 1}]))


# --------------------------------------------------------------------------- CollectTop / TopOne


def _top_inputs(rows, *cols):
    return [((tuple(r[c] for c in cols), r), i) for i, r in enumerate(rows)]


ROWS = [
    {"id": 1, "v2": 5, "v3": 1.0},
    {"id": 2, "v2": None, "v3": 9.0},
    {"id": 3, "v2": 2, "v3": 3.0},
    {"id": 4, "v2": 2, "v3": 7.0},
    {"id": 5, "v2": 8, "v3": 0.0},
]


@pytest.mark.parametrize("retractable", [False, True])
def test_collecttop_order_by_two_columns(retractable):
    # CollectTop(3) OVER (ORDER BY v2 ASC, v3 DESC): NULL is the smallest value, so id 2 first;
    # then v2 = 2 with v3 7.0 before 3.0.
    spec = AggregateSpec("COLLECTTOP", params=(3, ("ASC", "DESC")))
    got = fold(spec, _top_inputs(ROWS, "v2", "v3"), retractable)
    assert got == [{"rank": 1, "value": ROWS[1]}, {"rank": 2, "value": ROWS[3]}, {"rank": 3, "value": ROWS[2]}]
    assert fold_merged(spec, _top_inputs(ROWS, "v2", "v3")) == got
    # DESC: NULL last
    desc = AggregateSpec("COLLECTTOP", params=(5, ("DESC",)))
    assert [e["value"]["id"] for e in fold(desc, _top_inputs(ROWS, "v2"), retractable)] == [5, 1, 3, 4, 2]


def test_collecttop_projection_ties_and_datetimes():
    t0 = dt.datetime(2021, 1, 1, tzinfo=UTC)
    spec = AggregateSpec("COLLECTTOP", params=(2, "DESC"))
    # CollectTop(2, x) OVER (ORDER BY t DESC): ties on t broken by event time (earlier first)
    t1 = t0 + dt.timedelta(seconds=1)
    inputs = [(((t0,), "old"), 0), (((t1,), "b"), 2), (((t1,), "a"), 1)]
    assert fold(spec, inputs) == [{"rank": 1, "value": "a"}, {"rank": 2, "value": "b"}]
    assert fold(spec, []) is None
    # many inputs trimmed on the way, same answer as a full sort
    rnd = random.Random(1)
    many = [(((rnd.randrange(50),), i), i) for i in range(500)]
    top = fold_merged(AggregateSpec("COLLECTTOP", params=(4, ("DESC",))), many, parts=4)
    expected = sorted(many, key=lambda m: (-m[0][0][0], m[1]))[:4]
    assert [e["value"] for e in top] == [m[0][1] for m in expected]


@pytest.mark.parametrize("retractable", [False, True])
def test_topone(retractable):
    spec = AggregateSpec("TOPONE", params=(("DESC",),))
    assert fold(spec, _top_inputs(ROWS, "v2"), retractable) == ROWS[4]
    assert fold(AggregateSpec("TOPONE", params=("ASC",)), _top_inputs(ROWS, "v2"), retractable) == ROWS[1]
    assert fold(spec, [], retractable) is None


# --------------------------------------------------------------------------- percentiles

AVAILABILITY = [0.98, 0.93, 0.78, 0.99, 0.89]  # the docs' example input


@pytest.mark.parametrize("retractable", [False, True])
def test_percentiles_docs_example(retractable):
    cont = fold(AggregateSpec("PERCENTILE_CONT", params=(0.95, "ASC")), AVAILABILITY, retractable)
    assert cont == pytest.approx(0.988)  # docs: 0.988
    assert type(cont) is float
    assert fold(AggregateSpec("PERCENTILE_DISC", params=(0.95,)), AVAILABILITY, retractable) == 0.99  # docs


def test_percentile_cont_by_hand():
    values = [10, 20, 30, 40]  # row number 1 + p*(n-1)
    assert fold(AggregateSpec("PERCENTILE_CONT", params=(0.5,)), values) == 25.0
    assert fold(AggregateSpec("PERCENTILE_CONT", params=(0.0,)), values) == 10.0
    assert fold(AggregateSpec("PERCENTILE_CONT", params=(1.0,)), values) == 40.0
    assert fold(AggregateSpec("PERCENTILE_CONT", params=(0.25, "DESC")), values) == 32.5
    assert fold(AggregateSpec("PERCENTILE_CONT", params=(0.5,)), [None, 7]) == 7.0
    assert fold(AggregateSpec("PERCENTILE_CONT", params=(0.5,)), [None]) is None


def test_percentile_disc_by_hand():
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # cume_dist of k is k/10
    disc = lambda p, d="ASC": fold(AggregateSpec("PERCENTILE_DISC", params=(p, d)), values)  # noqa: E731
    assert disc(0.1) == 1  # 0.1 is a little above 1/10 in binary; still the first value
    assert disc(0.3) == 3
    assert disc(0.31) == 4
    assert disc(0.0) == 1
    assert disc(1.0) == 10
    assert disc(0.5, "DESC") == 6
    assert fold(AggregateSpec("PERCENTILE_DISC", params=(0.5,)), [2, 2, 2, 9]) == 2
    assert type(fold(AggregateSpec("PERCENTILE_DISC", params=(0.5,)), [3, 1])) is int


# --------------------------------------------------------------------------- retraction


@pytest.mark.parametrize("spec,kind", [
    (AggregateSpec("COUNT", star=True), "num"), (AggregateSpec("COUNT"), "num"),
    (AggregateSpec("COUNT", distinct=True), "num"), (AggregateSpec("SUM"), "num"), (AggregateSpec("AVG"), "num"),
    (AggregateSpec("STDEV"), "num"), (AggregateSpec("VARP"), "num"), (AggregateSpec("MIN"), "num"),
    (AggregateSpec("MAX"), "num"), (AggregateSpec("PERCENTILE_CONT", params=(0.3, "DESC")), "num"),
    (AggregateSpec("PERCENTILE_DISC", params=(0.7,)), "num"), (AggregateSpec("COLLECT"), "timed"),
    (AggregateSpec("COLLECTTOP", params=(2, ("DESC",))), "top"), (AggregateSpec("TOPONE", params=("ASC",)), "top"),
])
def test_remove_undoes_add(spec, kind):
    rnd = random.Random(hash(spec.name) % 1000)
    raw = [rnd.choice([None, 1, 2, 3, 2.5, 1e17, -1e17, 0.1]) for _ in range(40)]
    if kind == "timed":
        values = timed(raw)
    elif kind == "top":
        values = [(((v,), {"i": i}), i) for i, v in enumerate(raw)]
    else:
        values = raw
    f = make_accumulator(spec, retractable=True)
    assert f.retractable
    acc = f.create()
    for v in values:
        acc = f.add(acc, v)
    removed = rnd.sample(range(len(values)), 25)
    for i in removed:
        acc = f.remove(acc, values[i])
    kept = [v for i, v in enumerate(values) if i not in set(removed)]
    assert f.extract(acc) == fold(spec, kept)


# --------------------------------------------------------------------------- specs and checks


def test_registry_and_spec_validation():
    assert set(AGGREGATES) == {"avg", "count", "collect", "collecttop", "max", "min", "percentile_cont",
                               "percentile_disc", "stdev", "stdevp", "sum", "topone", "var", "varp"}
    assert AGGREGATES["count"][:2] == (0, 1)
    assert AGGREGATES["collecttop"][:2] == (1, 2)
    assert AggregateSpec("count", star=True).name == "COUNT"
    with pytest.raises(ValueError, match="unknown aggregate"):
        AggregateSpec("MEDIAN")
    with pytest.raises(ValueError, match="between 0 and 1"):
        AggregateSpec("PERCENTILE_CONT", params=(1.5,))
    with pytest.raises(ValueError, match="positive integer"):
        AggregateSpec("COLLECTTOP", params=(0, ("ASC",)))
    with pytest.raises(ValueError, match="ASC or DESC"):
        AggregateSpec("TOPONE", params=(("UP",),))
    with pytest.raises(ValueError, match="only COUNT"):
        AggregateSpec("SUM", star=True)
    assert AggregateSpec("SUM") == AggregateSpec("sum")


def test_input_checker():
    specs = [AggregateSpec("COUNT", star=True), AggregateSpec("SUM"), AggregateSpec("MAX"),
             AggregateSpec("PERCENTILE_CONT", params=(0.5,)), AggregateSpec("COLLECTTOP", params=(1, ("ASC",))),
             AggregateSpec("PERCENTILE_DISC", params=(0.5,))]
    check = make_input_checker(specs)
    row = {"a": 1}
    assert check((None, "12", "x", "2.5", ((3,), row), 4)) == (None, 12, "x", 2.5, ((3,), row), 4)
    assert check((None, True, 1, 1, ((None,), row), None)) == (None, 1, 1, 1.0, ((None,), row), None)
    for bad in [(None, "abc", 1, 1, ((1,), row), 1), (None, {"x": 1}, 1, 1, ((1,), row), 1),
                (None, 1, True, 1, ((1,), row), 1), (None, 1, 1, "n/a", ((1,), row), 1),
                (None, 1, 1, 1, (({"a": 1},), row), 1), (None, 1, 1, 1, ((1,), row), "7")]:
        with pytest.raises(RowError) as e:
            check(bad)
        assert e.value.reason == "aggregate_type_error"
    assert make_input_checker([AggregateSpec("COUNT")])((object(),))  # nothing to check
    # Text is orderable (ASA orders strings: TopOne() OVER (ORDER BY Time DESC) on ISO text).
    assert check((None, 1, 1, 1, (("text",), row), 1))[4] == (("text",), row)


def test_timestamp_slots():
    specs = [AggregateSpec("SUM"), AggregateSpec("COLLECT"), AggregateSpec("TOPONE", params=("ASC",)),
             AggregateSpec("UDA.X", impl=UdaAccumulator(lambda: None))]
    assert timestamp_slots(specs) == (1, 2, 3)


# --------------------------------------------------------------------------- JS-style UDAs


class Twa:
    """A time-weighted average shaped like the docs' JS UDA (init/accumulate/computeResult)."""

    def init(self):
        self.total, self.weight, self.prev = 0.0, 0.0, None

    def accumulate(self, value, timestamp):
        assert timestamp.tzinfo is not None
        if self.prev is not None:
            w = (timestamp - self.prev[1]).total_seconds()
            self.total += self.prev[0] * w
            self.weight += w
        self.prev = (value, timestamp)

    def computeResult(self):  # noqa: N802 - the JS name
        return self.total / self.weight if self.weight else None


def test_uda_accumulator_replays_in_event_time_order():
    spec = AggregateSpec("UDA.TWA", impl=UdaAccumulator(Twa))
    f = make_accumulator(spec)
    assert f.mergeable and f.needs_timestamp
    # value 10 for 1 s, then 20 for 3 s: (10*1 + 20*3) / 4 = 17.5, whatever the arrival order
    inputs = [(20, 1_000_000), (5, 4_000_000), (10, 0)]
    assert fold_merged(spec, inputs, parts=2) == 17.5


# --------------------------------------------------------------------------- the CombineFn


def test_multi_aggregate_combine_fn_directly():
    specs = [AggregateSpec("COUNT", star=True), AggregateSpec("SUM"), AggregateSpec("MAX")]
    fn = MultiAggregateCombineFn(specs)
    a = fn.add_input(fn.create_accumulator(), (None, 2, "b"))
    b = fn.add_input(fn.add_input(fn.create_accumulator(), (None, None, "a")), (None, 3, None))
    assert fn.extract_output(fn.merge_accumulators([a, b])) == [3, 5, "b"]
    single = MultiAggregateCombineFn([AggregateSpec("COUNT", star=True)])
    acc = single.create_accumulator()
    for _ in range(4):
        acc = single.add_input(acc, (None,))
    assert single.extract_output(single.merge_accumulators([acc, acc])) == [8]
    avg = MultiAggregateCombineFn([AggregateSpec("AVG")])
    assert avg.extract_output(avg.create_accumulator()) == [None]


def test_multi_aggregate_combine_fn_in_a_pipeline():
    # Accumulators cross Beam's shuffle (pickled CombineFn, encoded partial accumulators,
    # including the big integers of the exact float sums).
    specs = [AggregateSpec("COUNT", star=True), AggregateSpec("COUNT"), AggregateSpec("AVG"),
             AggregateSpec("MIN"), AggregateSpec("COUNT", distinct=True),
             AggregateSpec("PERCENTILE_DISC", params=(0.5, "DESC")), AggregateSpec("SUM")]
    data = [("a", (None, v, v, v, v, v, 0.1)) for v in [1, 2, None, 2, 9]]
    data += [("b", (None, None, None, None, None, None, None))]
    with TestPipeline() as p:
        out = p | beam.Create(data) | beam.CombinePerKey(MultiAggregateCombineFn(specs))
        assert_that(out, equal_to([("a", [5, 4, 3.5, 1, 3, 2, math.fsum([0.1] * 5)]),
                                   ("b", [1, 0, None, None, 0, None, None])]))


def test_non_mergeable_accumulators_are_replayed_where_beam_merges():
    class Deacc:
        mergeable, retractable, needs_timestamp = False, True, False

    class AccumulateOnly:
        mergeable, retractable, needs_timestamp = False, False, False

    deacc, only = AggregateSpec("UDA.A", impl=Deacc()), AggregateSpec("UDA.B", impl=AccumulateOnly())
    assert type(make_accumulator(deacc)).__name__ == "Replay"  # combine path: replay
    assert isinstance(make_accumulator(deacc, retractable=True, merging=False), Deacc)  # sliding/session
    assert type(make_accumulator(only, retractable=True, merging=False)).__name__ == "Replay"
