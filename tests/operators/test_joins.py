"""IntervalJoin and ReferenceJoin against the documented ASA JOIN examples and a brute-force join.

Expected results are computed in the tests (by hand or with a nested loop over all pairs),
never by the code under test. Each case runs in batch and, where it matters, on TestStream
with rows out of order within the watermark.
"""

from __future__ import annotations

import datetime as dt
import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.deadletter import RowError
from transforms.operators.joins import MAX_BOUND_US, IntervalJoin, ReferenceJoin, TimeBound, unit_us

MS = 1_000  # microseconds
S = 1_000_000
MIN = 60 * S
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


def at(us: int) -> dt.datetime:
    return T0 + dt.timedelta(microseconds=us)


def t_us(d: dt.datetime) -> int:
    return (d - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)


def ts(us: int) -> Timestamp:
    return Timestamp(micros=us)


def stamped(rows, field):
    return [TimestampedValue(r, ts(t_us(r[field]))) for r in rows]


def streaming():
    return TestPipeline(options=PipelineOptions(streaming=True))


def finish(stream: TestStream) -> TestStream:
    """End a TestStream: first a finite watermark past every deadline, then infinity.

    Python's streaming DirectRunner holds no output watermark for user timers: rows a timer
    emits when the watermark jumps straight to infinity reach assert_that's GroupByKey after
    it has fired. A finite step first lets the timers fire while the global window is open.
    (TestStream also keeps timestamps to the millisecond only, so streaming cases use ms.)
    """
    return stream.advance_watermark_to(ts(t_us(T0) + 30 * 86_400 * S)).advance_watermark_to_infinity()


def both(p, lefts, rights, field="t"):
    return p | "lefts" >> beam.Create(stamped(lefts, field)), p | "rights" >> beam.Create(stamped(rights, field))


def k(r):
    return (r["k"],)


def ids_with_time(pairs, lid="id", rid="id"):
    """(left id, right id or None, output timestamp in µs) for each joined pair."""
    return pairs | "ids" >> beam.Map(
        lambda p, t=beam.DoFn.TimestampParam: (p[0][lid], None if p[1] is None else p[1][rid], t.micros)
    )


def test_time_bound_helpers():
    assert TimeBound.between("mi", 0, 15) == TimeBound(0, 15 * MIN)
    assert TimeBound.between("second", -2, 10) == TimeBound(-2 * S, 10 * S)
    assert TimeBound.compare("second", "<", 0) == TimeBound(None, -1)
    assert TimeBound.compare("ss", ">=", 0) == TimeBound(0, None)
    assert TimeBound.compare("ms", ">", 5) == TimeBound(5001, None)
    assert TimeBound.between("minute", 0, 15).swapped() == TimeBound(-15 * MIN, 0)
    both = TimeBound.between("second", 0, 5).intersect(TimeBound.compare("second", "<", 3))
    assert both == TimeBound(0, 3 * S - 1)
    assert unit_us("dd") == 86_400 * S and unit_us("mcs") == 1
    with pytest.raises(ValueError, match="fixed length"):
        unit_us("month")
    with pytest.raises(ValueError, match="both sides"):
        TimeBound.compare("second", ">=", 0).validate()
    with pytest.raises(ValueError, match="7 days"):
        TimeBound.between("day", 0, 8).validate()
    assert TimeBound.between("day", -7, 7).validate() == (-MAX_BOUND_US, MAX_BOUND_US)
    with pytest.raises(ValueError, match="kind"):
        IntervalJoin(lambda r: (), lambda r: (), TimeBound(0, 1), kind="right")


# --- the toll booth example of the JOIN page -------------------------------------------------
# ON I1.TollId = I2.TollId AND I1.LicensePlate = I2.LicensePlate AND DATEDIFF(minute, I1, I2) BETWEEN 0 AND 15

ENTRIES = [
    {"id": "e1", "TollId": 1, "LicensePlate": "JNB7001", "EntryTime": at(0)},
    {"id": "e2", "TollId": 1, "LicensePlate": "YXZ1001", "EntryTime": at(1 * MIN)},
    {"id": "e3", "TollId": 3, "LicensePlate": "ABC1004", "EntryTime": at(2 * MIN)},
    {"id": "e4", "TollId": 2, "LicensePlate": "XYZ1003", "EntryTime": at(3 * MIN)},
    {"id": "e5", "TollId": 1, "LicensePlate": "BNJ1007", "EntryTime": at(4 * MIN)},
    {"id": "e6", "TollId": 2, "LicensePlate": "CDE1007", "EntryTime": at(5 * MIN)},
    {"id": "e7", "TollId": 1, "LicensePlate": None, "EntryTime": at(6 * MIN)},  # NULL key: never matches
]
EXITS = [
    {"id": "x1", "TollId": 1, "LicensePlate": "JNB7001", "ExitTime": at(15 * MIN)},  # exactly 15 min: in
    {"id": "x2", "TollId": 1, "LicensePlate": "YXZ1001", "ExitTime": at(16 * MIN + MS)},  # 15 min + 1 ms: out
    {"id": "x3", "TollId": 3, "LicensePlate": "ABC1004", "ExitTime": at(2 * MIN)},  # same instant: in
    {"id": "x4", "TollId": 2, "LicensePlate": "XYZ1003", "ExitTime": at(3 * MIN - MS)},  # 1 ms before entry: out
    {"id": "x5", "TollId": 1, "LicensePlate": "BNJ1007", "ExitTime": at(5 * MIN)},
    {"id": "x6", "TollId": 1, "LicensePlate": "BNJ1007", "ExitTime": at(6 * MIN)},  # second match for e5
    {"id": "x7", "TollId": 9, "LicensePlate": "CDE1007", "ExitTime": at(7 * MIN)},  # other toll: no match
    {"id": "x8", "TollId": 1, "LicensePlate": None, "ExitTime": at(7 * MIN)},
]


def toll_key_entry(r):
    return (r["TollId"], r["LicensePlate"])


def toll_key_exit(r):
    return (r["TollId"], r["LicensePlate"])


def brute_force(lefts, rights, lkey, rkey, lts, rts, lo, hi, kind, residual=None):
    """Every (left, right) pair compared: the definition, with ASA's output timestamps."""
    out = []
    for left in lefts:
        hit = False
        for right in rights:
            lk, rk = lkey(left), rkey(right)
            if any(v is None for v in lk + rk) or lk != rk:
                continue
            d = t_us(right[rts]) - t_us(left[lts])
            if lo <= d <= hi and (residual is None or residual(left, right) is True):
                hit = True
                out.append((left["id"], right["id"], max(t_us(left[lts]), t_us(right[rts]))))
        if kind == "left" and not hit:
            out.append((left["id"], None, t_us(left[lts]) + max(hi, 0)))
    return out


def test_brute_force_matches_the_hand_computed_toll_result():
    got = brute_force(ENTRIES, EXITS, toll_key_entry, toll_key_exit, "EntryTime", "ExitTime", 0, 15 * MIN, "left")
    assert sorted((a, b) for a, b, _ in got) == sorted(
        [("e1", "x1"), ("e2", None), ("e3", "x3"), ("e4", None), ("e5", "x5"), ("e5", "x6"), ("e6", None), ("e7", None)]
    )


def test_bound_edges_to_the_microsecond_batch():
    """Exact elapsed time, both ends inclusive: 15 min matches, 15 min + 1µs and -1µs do not."""
    lefts = [{"id": "l", "k": 1, "t": at(0)}]
    offsets = {"r0": 0, "r15": 15 * MIN, "r15+": 15 * MIN + 1, "r-": -1, "r1": 30 * S + 1}
    rights = [{"id": name, "k": 1, "t": at(d)} for name, d in offsets.items()]
    with TestPipeline() as p:
        out = both(p, lefts, rights) | IntervalJoin(
            lambda r: (r["k"],), lambda r: (r["k"],), TimeBound.between("minute", 0, 15)
        )
        assert_that(out["rows"] | beam.Map(lambda p: p[1]["id"]), equal_to(["r0", "r15", "r1"]))


@pytest.mark.parametrize("kind", ["inner", "left"])
def test_toll_booth_join_batch(kind):
    bound = TimeBound.between("minute", 0, 15)
    expected = brute_force(ENTRIES, EXITS, toll_key_entry, toll_key_exit, "EntryTime", "ExitTime", 0, 15 * MIN, kind)
    with TestPipeline() as p:
        entries = p | "entries" >> beam.Create(stamped(ENTRIES, "EntryTime"))
        exits = p | "exits" >> beam.Create(stamped(EXITS, "ExitTime"))
        out = (entries, exits) | IntervalJoin(toll_key_entry, toll_key_exit, bound, kind=kind)
        assert_that(ids_with_time(out["rows"]), equal_to(expected))
        assert_that(out["failed"], equal_to([]), label="no failures")


def test_left_outer_absence_query_streaming_out_of_order():
    """LEFT OUTER ... WHERE I2.TollId IS NULL: entries without an exit within 15 minutes."""
    expected = brute_force(ENTRIES, EXITS, toll_key_entry, toll_key_exit, "EntryTime", "ExitTime", 0, 15 * MIN, "left")
    early = [EXITS[2], EXITS[4]]
    stream = finish(
        TestStream()
        .add_elements([TimestampedValue(("x", r), ts(t_us(r["ExitTime"]))) for r in early])
        .add_elements([TimestampedValue(("e", r), ts(t_us(r["EntryTime"]))) for r in reversed(ENTRIES)])
        .advance_watermark_to(ts(t_us(at(2 * MIN))))
        .add_elements([TimestampedValue(("x", r), ts(t_us(r["ExitTime"]))) for r in reversed(EXITS) if r not in early])
        .advance_watermark_to(ts(t_us(at(10 * MIN))))
    )
    with streaming() as p:
        events = p | stream
        entries = events | "e" >> beam.Filter(lambda e: e[0] == "e") | "er" >> beam.Map(lambda e: e[1])
        exits = events | "x" >> beam.Filter(lambda e: e[0] == "x") | "xr" >> beam.Map(lambda e: e[1])
        bound = TimeBound.between("mi", 0, 15)
        out = (entries, exits) | IntervalJoin(toll_key_entry, toll_key_exit, bound, kind="left")
        absent = out["rows"] | "absent" >> beam.Filter(lambda pair: pair[1] is None)
        assert_that(ids_with_time(out["rows"]), equal_to(expected))
        assert_that(
            absent | "absent ids" >> beam.Map(lambda pair: pair[0]["id"]),
            equal_to(["e2", "e4", "e6", "e7"]),
            label="absence",
        )


# --- the LEFT OUTER example of the System.Timestamp() page: DATEDIFF(minute, input1, input2) BETWEEN -2 AND 10


def test_output_timestamps_negative_lower_bound_and_window_downstream():
    lefts = [{"id": "l1", "k": 1, "t": at(10 * MIN)}, {"id": "l2", "k": 2, "t": at(10 * MIN)}]
    rights = [
        {"id": "r1", "k": 1, "t": at(8 * MIN)},
        {"id": "r2", "k": 1, "t": at(20 * MIN)},
        {"id": "r3", "k": 2, "t": at(7 * MIN)},
    ]
    # r1: 2 minutes before l1 (in, stamped at l1's time); r2: 10 minutes after (in, stamped at r2);
    # r3: 3 minutes before l2 (out): l2 is a miss stamped l2 + 10 minutes.
    expected = [("l1", "r1", t_us(at(10 * MIN))), ("l1", "r2", t_us(at(20 * MIN))), ("l2", None, t_us(at(20 * MIN)))]
    assert expected == brute_force(lefts, rights, k, k, "t", "t", -2 * MIN, 10 * MIN, "left")
    with TestPipeline() as p:
        out = both(p, lefts, rights) | IntervalJoin(
            lambda r: (r["k"],), lambda r: (r["k"],), TimeBound.between("minute", -2, 10), kind="left"
        )
        assert_that(ids_with_time(out["rows"]), equal_to(expected))
        # The timestamps are real event times: a 10-minute window downstream sees them.
        counted = (
            out["rows"]
            | beam.WindowInto(FixedWindows(600))
            | beam.Map(lambda pair: ("n", 1))
            | beam.CombinePerKey(sum)
            | beam.Map(lambda kv, w=beam.DoFn.WindowParam: (w.start.micros, kv[1]))
        )
        assert_that(counted, equal_to([(t_us(at(10 * MIN)), 1), (t_us(at(20 * MIN)), 2)]), label="windowed")


def test_bound_entirely_before_the_left_row():
    """DATEDIFF(second, l, r) BETWEEN -10 AND -5: a miss is certain at the left row's own time."""
    lefts = [{"id": "l1", "k": "a", "t": at(60 * S)}, {"id": "l2", "k": "a", "t": at(100 * S)}]
    rights = [
        {"id": "r1", "k": "a", "t": at(52 * S)},
        {"id": "r2", "k": "a", "t": at(55 * S)},
        {"id": "r3", "k": "a", "t": at(96 * S)},
    ]
    expected = brute_force(lefts, rights, k, k, "t", "t", -10 * S, -5 * S, "left")
    assert ("l2", None, t_us(at(100 * S))) in expected
    with TestPipeline() as p:
        out = both(p, lefts, rights) | IntervalJoin(
            lambda r: (r["k"],), lambda r: (r["k"],), TimeBound.between("second", -10, -5), kind="left"
        )
        assert_that(ids_with_time(out["rows"]), equal_to(expected))


def test_residual_three_valued_logic_key_coercion_and_failures():
    lefts = [
        {"id": "l1", "k": 1, "limit": 10, "t": at(0)},
        {"id": "l2", "k": "2", "limit": None, "t": at(0)},  # residual NULL: no match → miss
        {"id": "l3", "k": 3, "limit": "boom", "t": at(0)},  # residual raises: pair dead-lettered, then miss
        {"id": "l4", "k": "bad", "limit": 1, "t": at(0)},  # key raises: dead-lettered
        {"id": "l5", "k": "1.0", "limit": 100, "t": at(0)},  # '1.0' = 1 and = 1.0, but not = '1'
    ]
    rights = [
        {"id": "r1", "k": 1.0, "v": 5, "t": at(S)},
        {"id": "r2", "k": 2, "v": 50, "t": at(S)},
        {"id": "r3", "k": 3, "v": 5, "t": at(S)},
        {"id": "r4", "k": "1", "v": 5, "t": at(S)},
    ]

    def lkey(r):
        if r["k"] == "bad":
            raise RowError("cast_error", "bad key")
        return (r["k"],)

    def residual(left, right):
        if left["limit"] == "boom":
            raise RowError("type_error", "boom")
        return None if left["limit"] is None else right["v"] < left["limit"]

    with TestPipeline() as p:
        out = both(p, lefts, rights) | IntervalJoin(
            lkey, lambda r: (r["k"],), TimeBound.between("second", 0, 5), kind="left", residual=residual, step="J"
        )
        pairs = out["rows"] | beam.Map(lambda p: (p[0]["id"], p[1] and p[1]["id"]))
        assert_that(
            pairs,
            equal_to([("l1", "r1"), ("l1", "r4"), ("l2", None), ("l3", None), ("l5", "r1")]),
        )
        failed = out["failed"] | beam.Map(
            lambda d: (d.step, d.reason, d.row["id"] if "id" in d.row else (d.row["left"]["id"], d.row["right"]["id"]))
        )
        assert_that(failed, equal_to([("J", "cast_error", "l4"), ("J", "type_error", ("l3", "r3"))]), label="failed")


@pytest.mark.parametrize("kind", ["inner", "left"])
def test_random_streams_out_of_order_match_brute_force(kind):
    """Many keys, rows shuffled within a 30 s disorder bound; batch and TestStream both agree with the loop."""
    rng = random.Random(7 if kind == "inner" else 11)
    lefts, rights = [], []
    for i in range(60):
        lefts.append({"id": f"l{i}", "k": rng.randrange(4), "t": at(rng.randrange(0, 300) * S)})
        offset = rng.randrange(0, 300) * S + rng.choice([0, MS, 500_000])
        rights.append({"id": f"r{i}", "k": rng.randrange(4), "t": at(offset)})
    lo, hi = -5 * S, 20 * S
    expected = brute_force(lefts, rights, lambda r: (r["k"],), lambda r: (r["k"],), "t", "t", lo, hi, kind)
    assert any(b is not None for _, b, _ in expected) and (kind == "inner" or any(b is None for _, b, _ in expected))

    def join(pl, pr):
        return (pl, pr) | IntervalJoin(lambda r: (r["k"],), lambda r: (r["k"],), TimeBound(lo, hi), kind=kind)

    with TestPipeline() as p:
        out = join(p | "l" >> beam.Create(stamped(lefts, "t")), p | "r" >> beam.Create(stamped(rights, "t")))
        assert_that(ids_with_time(out["rows"]), equal_to(expected))

    # Arrival: by time, each row delayed by up to 30 s; the watermark trails 30 s behind arrivals
    # and never reaches a timestamp still to come.
    events = [("l", r, t_us(r["t"])) for r in lefts] + [("r", r, t_us(r["t"])) for r in rights]
    arrival = sorted(events, key=lambda e: e[2] + rng.randrange(0, 30 * S))
    stream = TestStream()
    for n in range(0, len(arrival), 10):
        chunk = arrival[n:n + 10]
        stream.add_elements([TimestampedValue((side, row), ts(t)) for side, row, t in chunk])
        rest = [t for _, _, t in arrival[n + 10:]]
        if rest:
            stream.advance_watermark_to(ts(min(rest) - MS))
    finish(stream)
    with streaming() as p:
        ev = p | stream
        out = join(
            ev | "fl" >> beam.Filter(lambda e: e[0] == "l") | "ml" >> beam.Map(lambda e: e[1]),
            ev | "fr" >> beam.Filter(lambda e: e[0] == "r") | "mr" >> beam.Map(lambda e: e[1]),
        )
        assert_that(ids_with_time(out["rows"]), equal_to(expected))


# --- reference data: the Registration example ------------------------------------------------
# SELECT ... FROM Input1 I1 TIMESTAMP BY EntryTime JOIN Registration R ON I1.LicensePlate = R.LicensePlate
# WHERE R.Expired = '1'

REGISTRATIONS = [  # as read from a CSV file: every value is text
    {"LicensePlate": "JNB7001", "RegistrationId": "285429838", "Expired": "1", "TollId": "1"},
    {"LicensePlate": "YXZ1001", "RegistrationId": "326874133", "Expired": "0", "TollId": "1"},
    {"LicensePlate": "XYZ1003", "RegistrationId": "876133137", "Expired": "1", "TollId": "2"},
    {"LicensePlate": "XYZ1003", "RegistrationId": "876133138", "Expired": "0", "TollId": "2"},  # duplicate key
    {"LicensePlate": None, "RegistrationId": "1", "Expired": "1", "TollId": "9"},
]


def plate(r):
    return (r["LicensePlate"],)


def reg_id(pair):
    return pair[1] and pair[1]["RegistrationId"]


def test_reference_join_inner_left_and_duplicates_batch():
    expired = [("e1", "285429838"), ("e4", "876133137")]
    with TestPipeline() as p:
        entries = p | "entries" >> beam.Create(stamped(ENTRIES, "EntryTime"))
        ref = p | "ref" >> beam.Create(REGISTRATIONS)
        inner = entries | "inner" >> ReferenceJoin(ref, plate, plate, residual=lambda i, r: r["Expired"] == "1")
        left = entries | "left" >> ReferenceJoin(ref, plate, plate, kind="left")
        # Numbers from the stream against text from the CSV compare as ``=`` does.
        toll_plate = lambda r: (r["TollId"], r["LicensePlate"])  # noqa: E731
        by_toll = entries | "toll" >> ReferenceJoin(ref, toll_plate, toll_plate)
        assert_that(inner["rows"] | "i" >> beam.Map(lambda p: (p[0]["id"], p[1]["RegistrationId"])), equal_to(expired))
        assert_that(
            left["rows"] | "l" >> beam.Map(lambda p, t=beam.DoFn.TimestampParam: (p[0]["id"], reg_id(p), t.micros)),
            equal_to(
                [(r["id"], reg, t_us(r["EntryTime"])) for r, reg in [
                    (ENTRIES[0], "285429838"), (ENTRIES[1], "326874133"), (ENTRIES[2], None),
                    (ENTRIES[3], "876133137"), (ENTRIES[3], "876133138"), (ENTRIES[4], None),
                    (ENTRIES[5], None), (ENTRIES[6], None),
                ]]
            ),
            label="left",
        )
        assert_that(
            by_toll["rows"] | "t" >> beam.Map(lambda p: (p[0]["id"], p[1]["RegistrationId"])),
            equal_to([("e1", "285429838"), ("e2", "326874133"), ("e4", "876133137"), ("e4", "876133138")]),
            label="coerced",
        )


def test_reference_join_streaming_with_bounded_reference_and_failures():
    stream = finish(
        TestStream()
        .add_elements([TimestampedValue(r, ts(t_us(r["EntryTime"]))) for r in reversed(ENTRIES[3:])])
        .advance_watermark_to(ts(t_us(at(MIN))))
        .add_elements([TimestampedValue(r, ts(t_us(r["EntryTime"]))) for r in reversed(ENTRIES[1:3])])
        .advance_watermark_to(ts(t_us(at(2 * MIN))))
        .add_elements([TimestampedValue(r, ts(t_us(r["EntryTime"]))) for r in ENTRIES[:1]])  # late: 12:00 < watermark
    )

    def ref_key(r):
        if r["RegistrationId"] == "1":
            raise RowError("cast_error", "bad reference row")
        return plate(r)

    with streaming() as p:
        ref = p | "ref" >> beam.Create(REGISTRATIONS)
        expired = lambda i, r: r["Expired"] == "1"  # noqa: E731
        out = p | stream | ReferenceJoin(ref, plate, ref_key, kind="left", residual=expired, step="R")
        assert_that(
            out["rows"] | beam.Map(lambda p: (p[0]["id"], p[1] and p[1]["RegistrationId"])),
            equal_to([("e1", "285429838"), ("e4", "876133137")] + [(f"e{i}", None) for i in (2, 3, 5, 6, 7)]),
        )
        failed = out["failed"] | beam.Map(lambda d: (d.step, d.reason))
        assert_that(failed, equal_to([("R", "cast_error")]), label="failed")
