"""WindowedAggregate: the ASA windowing reference examples, boundaries, offsets, and batch vs
streaming (TestStream, out-of-order input, watermark advances) against brute-force references.

The expected outputs come from the docs' tables or from the small reference functions below,
which follow the definitions literally (every window end on the grid; every sliding output
point; sessions simulated event by event) and share no code with the transforms.
"""

import datetime as dt
import random
from collections import defaultdict

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.operators.aggregates import AggregateSpec, UdaAccumulator
from transforms.operators.windows import (
    SessionCore,
    SlidingCore,
    WindowedAggregate,
    WindowSpec,
    key_part,
)

UTC = dt.timezone.utc
ORIGIN = dt.datetime(1, 1, 1, tzinfo=UTC)  # ASA/.NET time origin: windows align to it
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
BASE = dt.datetime(2021, 10, 26, 10, 15, tzinfo=UTC)  # the docs' examples start here
SEC, MS = dt.timedelta(seconds=1), dt.timedelta(milliseconds=1)
COUNT = AggregateSpec("COUNT", star=True)


def at(seconds: float) -> dt.datetime:
    return BASE + dt.timedelta(seconds=seconds)


def us(t: dt.datetime) -> int:
    return (t - EPOCH) // dt.timedelta(microseconds=1)


def tv(key, t: dt.datetime, *args) -> TimestampedValue:
    """One input element: ((key,), args) at event time t (exact microseconds)."""
    return TimestampedValue(((key,), tuple(args)), Timestamp(micros=us(t)))


def run_batch(elements, window, specs, post=None):
    """Runs WindowedAggregate in batch; returns (pipeline context, output PCollection)."""
    p = TestPipeline()
    out = p | beam.Create(elements) | WindowedAggregate(window, specs)
    return p, (out | beam.Map(post) if post else out)


def stream_of(chunks):
    """TestStream: each chunk's elements, then the watermark it names (whole milliseconds).

    The stream ends with the watermark far in the future before +infinity: the Python
    DirectRunner does not hold the watermark for user timers, so results that timers emit
    when the watermark jumps straight to +infinity would reach assert_that's global window
    after it closed.
    """
    ts = TestStream()
    for elements, watermark in chunks:
        ts = ts.add_elements(list(elements))
        if watermark is not None:
            ts = ts.advance_watermark_to(Timestamp(micros=us(watermark)))
    return ts.advance_watermark_to(Timestamp(micros=us(BASE + dt.timedelta(days=30)))).advance_watermark_to_infinity()


def chunked(events, pieces, seed):
    """Splits time-sorted events into ``pieces`` chunks (never between equal timestamps),
    shuffles each chunk, and puts the watermark 1 ms before the next chunk's first event."""
    events = sorted(events, key=lambda e: e[1])
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(events)), pieces - 1))
    cuts = [c for c in cuts if events[c][1] != events[c - 1][1]]
    bounds = [0, *cuts, len(events)]
    chunks = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        part = events[a:b]
        rnd.shuffle(part)
        wm = events[b][1] - MS if b < len(events) else None
        chunks.append(([tv(k, t, *args) for k, t, *args in part], wm))
    return chunks


def run_stream(chunks, window, specs, post=None):
    p = TestPipeline(options=PipelineOptions(streaming=True))
    out = p | stream_of(chunks) | WindowedAggregate(window, specs)
    return p, (out | beam.Map(post) if post else out)


# --------------------------------------------------------------------------- references


def ref_hopping(events, size, hop, offset=dt.timedelta(0)):
    """{(key, end): [event indexes]}: every grid end whose (end - size, end] holds the event."""
    out = defaultdict(list)
    for i, (key, t, *_) in enumerate(events):
        k0 = (t - ORIGIN - offset) // hop
        for k in range(k0 - 2, k0 + size // hop + 3):  # ends in [t, t + size), with margin
            end = ORIGIN + (offset + k * hop)
            if end - size < t <= end:
                out[(key, end)].append(i)
    return out


def ref_sliding(events, size):
    """{(key, T): [indexes]} for every T where an event enters or leaves, window non-empty."""
    out = {}
    for key in {e[0] for e in events}:
        mine = [(i, e[1]) for i, e in enumerate(events) if e[0] == key]
        for T in {t for _, t in mine} | {t + size for _, t in mine}:
            inside = [i for i, t in mine if T - size < t <= T]
            if inside:
                out[(key, T)] = inside
    return out


def ref_sessions(points, timeout, maxdur):
    """Sessions of sorted times: [(end, [indexes])], simulated event by event."""
    out, members = [], []
    start = last = None

    def end_of():
        by_timeout = last + timeout
        if maxdur:
            check = ORIGIN + ((start - ORIGIN) // maxdur) * maxdur  # check points: multiples of maxdur
            while check - start <= maxdur:
                check += maxdur
            if check < by_timeout:
                return check, True
        return by_timeout, False

    for i, t in enumerate(points):
        while start is not None:
            end, split = end_of()
            if t <= end:
                break
            if members:
                out.append((end, members))
            members = []
            start = end if split else None
        if start is None:
            start = last = t
        last = t
        members.append(i)
    while start is not None:
        end, split = end_of()
        if members:
            out.append((end, members))
        members = []
        start = end if split else None
    return out


def ref_session_windows(events, timeout, maxdur, partition=lambda key: key):
    """{(key, end): [indexes]} with sessions computed per partition of the key."""
    out = defaultdict(list)
    parts = defaultdict(list)
    for i, e in enumerate(events):
        parts[partition(e[0])].append(i)
    for idx in parts.values():
        idx.sort(key=lambda i: events[i][1])
        for end, members in ref_sessions([events[i][1] for i in idx], timeout, maxdur):
            for m in members:
                out[(events[idx[m]][0], end)].append(idx[m])
    return out


SPECS = [COUNT, AggregateSpec("COUNT"), AggregateSpec("SUM"), AggregateSpec("MIN"), AggregateSpec("MAX"),
         AggregateSpec("COLLECT")]


def expected_rows(groups, events):
    """Output rows for SPECS (Collect sorted: its order among equal timestamps is free)."""
    rows = []
    for (key, end), idx in groups.items():
        vals = [events[i][2] for i in idx]
        nn = [v for v in vals if v is not None]
        rows.append(((key,), end, [len(vals), len(nn), sum(nn) if nn else None, min(nn, default=None),
                                   max(nn, default=None), sorted(nn) or None]))
    return rows


def sort_collect(row):
    key, end, res = row
    return key, end, [*res[:5], sorted(res[5]) if res[5] is not None else None]


def random_events(seed, n=70, keys=("a", "b"), span_s=40):
    """Millisecond times, many exactly on whole and half seconds (window boundaries), ties."""
    rnd = random.Random(seed)
    events = []
    for _ in range(n):
        if rnd.random() < 0.6:
            t = BASE + rnd.randrange(2 * span_s) * 500 * MS
        else:
            t = BASE + rnd.randrange(span_s * 1000) * MS
        events.append((rnd.choice(keys), t, rnd.choice([None, *range(10)])))
    return events


# --------------------------------------------------------------------------- docs examples


def test_tumbling_docs_example_and_boundaries():
    # TumblingWindow(second, 10) → 10:15:10 5, 10:15:20 2, 10:15:30 4 (the docs' table).
    # Events exactly at :10, :20 and :30 belong to the window ending there.
    secs = [1, 3, 6, 8, 10, 14, 20, 21, 25, 28, 30]
    stamps = [1, 5, 4, 6, 2, 8, 6, 5, 3, 6, 1]
    p, out = run_batch([tv("PST", at(s), None, v) for s, v in zip(secs, stamps, strict=True)],
                       WindowSpec.tumbling(10_000_000), [COUNT, AggregateSpec("SUM")])
    with p:
        assert_that(out, equal_to([(("PST",), at(10), [5, 18]), (("PST",), at(20), [2, 14]),
                                   (("PST",), at(30), [4, 15])]))


def test_hopping_docs_example():
    # HoppingWindow(second, 10, 5): the docs list 10:15:10 5, :15 3, :20 2, :25 4, :30 4. Their
    # input starts with events at :01 and :03, so the window (10:14:55, 10:15:05] also has
    # output (4 events here); the docs' table starts at :10.
    secs = [1, 2, 3, 5, 6, 11, 15, 21, 22, 23, 25]
    p, out = run_batch([tv("Streaming", at(s), None) for s in secs], WindowSpec.hopping(10_000_000, 5_000_000),
                       [COUNT])
    with p:
        assert_that(out, equal_to([(("Streaming",), at(s), [c]) for s, c in
                                   [(5, 4), (10, 5), (15, 3), (20, 2), (25, 4), (30, 4)]]))


SLIDING_DOCS = [(10, 1), (12, 5), (15, 9), (15, 7), (27, 8)]  # (second, Stamp): the docs' full input


def test_sliding_docs_example():
    # SlidingWindow(second, 10) HAVING COUNT(*) >= 3 → 10:15:15 4, 10:15:20 3 (the docs).
    # All outputs: entries at :10 :12 :15 :27, exits at :20 :22 (exits at :25 and :37 leave
    # empty windows, so no output).
    p, out = run_batch([tv("Streaming", at(s), None, v) for s, v in SLIDING_DOCS], WindowSpec.sliding(10_000_000),
                       [COUNT, AggregateSpec("SUM")])
    with p:
        assert_that(out, equal_to([(("Streaming",), at(s), r) for s, r in
                                   [(10, [1, 1]), (12, [2, 6]), (15, [4, 22]), (20, [3, 21]), (22, [2, 16]),
                                    (27, [1, 8])]]))
        having = out | beam.Filter(lambda r: r[2][0] >= 3) | beam.Map(lambda r: (r[1], r[2][0]))
        assert_that(having, equal_to([(at(15), 4), (at(20), 3)]), label="having")


def test_session_docs_example():
    # SessionWindow(second, 5, 10) → 10:15:09 2, 10:15:24 4, 10:15:31 2, 10:15:39 1 (the docs).
    secs = [1, 4, 13, 15, 17, 19, 25, 26, 34]
    p, out = run_batch([tv("Streaming", at(s), None) for s in secs], WindowSpec.session(5_000_000, 10_000_000),
                       [COUNT])
    with p:
        assert_that(out, equal_to([(("Streaming",), at(s), [c]) for s, c in [(9, 2), (24, 4), (31, 2), (39, 1)]]))


def test_snapshot_docs_example():
    # GROUP BY Topic, System.Timestamp() → 10:15:04 4, 10:15:10 2, 10:15:13 1, 10:15:22 2.
    secs = [4, 4, 4, 4, 10, 10, 13, 22, 22]
    p, out = run_batch([tv("Streaming", at(s), None) for s in secs], WindowSpec.snapshot(), [COUNT])
    with p:
        assert_that(out, equal_to([(("Streaming",), at(s), [c]) for s, c in [(4, 4), (10, 2), (13, 1), (22, 2)]]))


CLICKS = [(0, "00:00:00"), (0, "00:00:20"), (1, "00:00:55"), (0, "00:01:10"), (1, "00:01:15")]


def _click_events():
    day = dt.datetime(2017, 1, 26, tzinfo=UTC)
    out = []
    for user, hms in CLICKS:
        h, m, s = map(int, hms.split(":"))
        t = day + dt.timedelta(hours=h, minutes=m, seconds=s)
        out.append(TimestampedValue(((user,), (t, t)), Timestamp(micros=us(t))))
    return day, out


@pytest.mark.parametrize("partition_by", [(0,), ()])
def test_session_per_user_docs_example(partition_by):
    # SELECT user_id, MIN(time), MAX(time) ... GROUP BY user_id,
    #   SessionWindow(minute, 1, 60) OVER (PARTITION BY user_id)
    # → user 0: 00:00:00-00:01:10, user 1: 00:00:55-00:01:15 (the docs). The session ends one
    # minute after each user's last click. Without OVER (partition_by=()) one session spans all
    # users (no gap over a minute) and ends a minute after the last click of anyone.
    day, events = _click_events()
    m = lambda mm, ss: day + dt.timedelta(minutes=mm, seconds=ss)  # noqa: E731
    per_user = partition_by == (0,)
    expected = [((0,), m(2, 10) if per_user else m(2, 15), [m(0, 0), m(1, 10)]),
                ((1,), m(2, 15), [m(0, 55), m(1, 15)])]
    p, out = run_batch(events, WindowSpec.session(60_000_000, 3_600_000_000, partition_by=partition_by),
                       [AggregateSpec("MIN"), AggregateSpec("MAX")])
    with p:
        assert_that(out, equal_to(expected))


def test_session_max_duration_by_hand():
    # timeout 5 s, max duration 10 s, an event every 3 s from :01 to :43. Check points are the
    # multiples of 10 s: the first session (from :01) is over 10 s at :20 and ends there; the
    # next opens at :20 and is over 10 s only at :40 (at :30 it is exactly 10 s, not over):
    # it lasts 20 s, twice maxDuration. The event at :40 is in it (windows include their end).
    secs = list(range(1, 44, 3))
    p, out = run_batch([tv("k", at(s), None, s, s) for s in secs], WindowSpec.session(5_000_000, 10_000_000),
                       [COUNT, AggregateSpec("MIN"), AggregateSpec("MAX")])
    with p:
        assert_that(out, equal_to([(("k",), at(20), [7, 1, 19]), (("k",), at(40), [7, 22, 40]),
                                   (("k",), at(48), [1, 43, 43])]))


def test_tumbling_offset_docs_example():
    # TumblingWindow(Duration(hour, 1), Offset(millisecond, -1)) includes the window start and
    # excludes the end: windows end at hh:59:59.999.
    noon = dt.datetime(2021, 1, 1, 12, tzinfo=UTC)
    times = [noon, noon + dt.timedelta(minutes=30), noon + dt.timedelta(hours=1) - MS, noon + dt.timedelta(hours=1)]
    elements = [tv("k", t, None) for t in times]
    hour = 3_600_000_000
    p = TestPipeline()
    with p:
        shifted = (p | "c1" >> beam.Create(elements)
                   | "w1" >> WindowedAggregate(WindowSpec.tumbling(hour, -1000), [COUNT]))
        plain = p | "c2" >> beam.Create(elements) | "w2" >> WindowedAggregate(WindowSpec.tumbling(hour), [COUNT])
        h = dt.timedelta(hours=1)
        assert_that(shifted, equal_to([(("k",), noon + h - MS, [3]), (("k",), noon + 2 * h - MS, [1])]), label="offset")
        assert_that(plain, equal_to([(("k",), noon, [1]), (("k",), noon + h, [3])]), label="plain")


# --------------------------------------------------------------------------- against references

NATIVE_WINDOWS = [
    ("tumbling", WindowSpec.tumbling(5_000_000), lambda ev: ref_hopping(ev, 5 * SEC, 5 * SEC)),
    ("tumbling+offset", WindowSpec.tumbling(5_000_000, 1_500_000),
     lambda ev: ref_hopping(ev, 5 * SEC, 5 * SEC, 1500 * MS)),
    ("hopping", WindowSpec.hopping(6_000_000, 2_000_000), lambda ev: ref_hopping(ev, 6 * SEC, 2 * SEC)),
    ("hopping+negative offset", WindowSpec.hopping(5_000_000, 2_000_000, -1000),
     lambda ev: ref_hopping(ev, 5 * SEC, 2 * SEC, -MS)),
]


def _snapshot_ref(events):
    out = defaultdict(list)
    for i, (key, t, _) in enumerate(events):
        out[(key, t)].append(i)
    return out


ALL_WINDOWS = [
    *NATIVE_WINDOWS,
    ("snapshot", WindowSpec.snapshot(), _snapshot_ref),
    ("sliding", WindowSpec.sliding(4_000_000), lambda ev: ref_sliding(ev, 4 * SEC)),
    ("session", WindowSpec.session(2_000_000, 5_000_000), lambda ev: ref_session_windows(ev, 2 * SEC, 5 * SEC)),
    ("session no max", WindowSpec.session(1_500_000), lambda ev: ref_session_windows(ev, 1500 * MS, None)),
    ("session over all keys", WindowSpec.session(1_000_000, 3_000_000, partition_by=()),
     lambda ev: ref_session_windows(ev, SEC, 3 * SEC, partition=lambda key: ())),
]


@pytest.mark.parametrize("name,window,ref", ALL_WINDOWS, ids=[w[0] for w in ALL_WINDOWS])
def test_batch_matches_reference(name, window, ref):
    events = random_events(seed=len(name))
    p, out = run_batch([tv(k, t, v, v, v, v, v, v) for k, t, v in events], window, SPECS, post=sort_collect)
    with p:
        assert_that(out, equal_to(expected_rows(ref(events), events)))


STREAMED = [w for w in ALL_WINDOWS if w[0] in ("tumbling", "hopping+negative offset", "snapshot", "sliding", "session",
                                                 "session over all keys")]


@pytest.mark.parametrize("name,window,ref", STREAMED, ids=[w[0] for w in STREAMED])
def test_streaming_out_of_order_matches_reference(name, window, ref):
    events = random_events(seed=100 + len(name))
    chunks = chunked([(k, t, v, v, v, v, v, v) for k, t, v in events], pieces=6, seed=len(name))
    p, out = run_stream(chunks, window, SPECS, post=sort_collect)
    with p:
        assert_that(out, equal_to(expected_rows(ref(events), events)))


def test_streaming_docs_examples_out_of_order():
    # The sliding and session docs examples again, arriving out of order within the watermark.
    sliding = [tv("Streaming", at(s), None, v) for s, v in SLIDING_DOCS]
    chunks = [([sliding[1], sliding[0]], at(13)), ([sliding[3], sliding[2]], at(16)), ([sliding[4]], None)]
    p, out = run_stream(chunks, WindowSpec.sliding(10_000_000), [COUNT, AggregateSpec("SUM")])
    with p:
        assert_that(out, equal_to([(("Streaming",), at(s), r) for s, r in
                                   [(10, [1, 1]), (12, [2, 6]), (15, [4, 22]), (20, [3, 21]), (22, [2, 16]),
                                    (27, [1, 8])]]))
    session = [tv("Streaming", at(s), None) for s in [1, 4, 13, 15, 17, 19, 25, 26, 34]]
    chunks = [(session[1::-1], at(5)), (session[5:1:-1], at(20)), (session[:5:-1], None)]
    p, out = run_stream(chunks, WindowSpec.session(5_000_000, 10_000_000), [COUNT])
    with p:
        assert_that(out, equal_to([(("Streaming",), at(s), [c]) for s, c in [(9, 2), (24, 4), (31, 2), (39, 1)]]))


# --------------------------------------------------------------------------- more behaviour


def test_output_timestamps_are_window_ends():
    class Stamp(beam.DoFn):
        def process(self, row, t=beam.DoFn.TimestampParam, w=beam.DoFn.WindowParam):
            yield t.micros == us(row[1]), type(w).__name__

    elements = [tv("k", at(s), None) for s in (1, 3, 10, 12)]
    with TestPipeline() as p:
        for name, window in [("tumbling", WindowSpec.tumbling(10_000_000)),
                             ("hopping", WindowSpec.hopping(10_000_000, 5_000_000)),
                             ("sliding", WindowSpec.sliding(5_000_000)), ("session", WindowSpec.session(3_000_000)),
                             ("snapshot", WindowSpec.snapshot()), ("none", None)]:
            out = p | f"c {name}" >> beam.Create(elements) | f"w {name}" >> WindowedAggregate(window, [COUNT])
            checked = out | f"t {name}" >> beam.ParDo(Stamp()) | f"d {name}" >> beam.Distinct()
            assert_that(checked, equal_to([(True, "GlobalWindow")]), label=f"ts {name}")


def test_no_window_is_one_group_per_key():
    elements = [tv("a", at(1), None, 5), tv("b", at(2), None, 1), tv("a", at(7), None, 6)]
    p, out = run_batch(elements, None, [COUNT, AggregateSpec("SUM")])
    with p:
        assert_that(out, equal_to([(("a",), at(7), [2, 11]), (("b",), at(2), [1, 1])]))


@pytest.mark.parametrize("window", [WindowSpec.tumbling(60_000_000), WindowSpec.session(60_000_000)],
                         ids=["tumbling", "session"])
def test_datetime_and_record_keys_round_trip(window):
    d = dt.datetime(2020, 5, 1, tzinfo=UTC)
    elements = [TimestampedValue(((key_part(d), key_part({"b": 1, "a": [2]}), "x"), (None,)), Timestamp(micros=us(t)))
                for t in (at(1), at(2))]
    end = at(60) if window.kind == "tumbling" else at(62)
    p, out = run_batch(elements, window, [COUNT])
    with p:
        assert_that(out, equal_to([((d, {"a": [2], "b": 1}, "x"), end, [2])]))


def test_all_aggregate_kinds_in_windows():
    # Collect, CollectTop, TopOne, percentiles, DISTINCT and a JS-style UDA in tumbling,
    # sliding (retraction) and session windows.
    class Product:  # a mergeable custom aggregate without remove: sliding recomputes it
        mergeable, retractable, needs_timestamp = True, False, False

        def create(self):
            return 1

        def add(self, acc, v):
            return acc * v

        def merge(self, accs):
            out = 1
            for a in accs:
                out *= a
            return out

        def extract(self, acc):
            return acc

    class Last:  # JS-style UDA: init/accumulate/computeResult, replayed in event-time order
        def init(self):
            self.v = None

        def accumulate(self, value, timestamp):
            self.v = value

        def computeResult(self):  # noqa: N802
            return self.v

    class JsonSum:  # a non-mergeable UDA with deaccumulate and JSON state: used directly in
        mergeable, retractable, needs_timestamp = False, True, False  # sliding/session windows

        def create(self):
            return {"state": 0}

        def add(self, acc, v):
            return {"state": acc["state"] + v}

        def remove(self, acc, v):
            return {"state": acc["state"] - v}

        def extract(self, acc):
            return acc["state"]

    specs = [AggregateSpec("COLLECT"), AggregateSpec("COLLECTTOP", params=(2, ("DESC",))),
             AggregateSpec("TOPONE", params=(("ASC",),)), AggregateSpec("PERCENTILE_CONT", params=(0.5,)),
             AggregateSpec("COUNT", distinct=True), AggregateSpec("UDA.PRODUCT", impl=Product()),
             AggregateSpec("UDA.LAST", impl=UdaAccumulator(Last)), AggregateSpec("UDA.SUM", impl=JsonSum())]

    def element(s, v):
        row = {"s": s, "v": v}
        return tv("k", at(s), v, ((v,), row), ((v,), row), v, v % 2, v, v, v)

    data = [(1, 4), (2, 3), (3, 5), (9, 2)]

    def expect(points):
        vals = [v for _, v in points]
        rows = [{"s": s, "v": v} for s, v in points]
        by_v = sorted(rows, key=lambda r: r["v"])
        prod = 1
        for v in vals:
            prod *= v
        n = sorted(vals)
        mid = (len(n) - 1) / 2
        median = (n[int(mid)] + n[-(-int(mid * 2) // 2)]) / 2 if len(n) % 2 == 0 else float(n[len(n) // 2])
        return [vals, [{"rank": i + 1, "value": r} for i, r in enumerate(by_v[::-1][:2])], by_v[0], median,
                len({v % 2 for v in vals}), prod, vals[-1], sum(vals)]

    elements = [element(s, v) for s, v in data]
    with TestPipeline() as p:
        tumbling = p | "c1" >> beam.Create(elements) | "w1" >> WindowedAggregate(WindowSpec.tumbling(5_000_000), specs)
        assert_that(tumbling, equal_to([(("k",), at(5), expect(data[:3])), (("k",), at(10), expect(data[3:]))]),
                    label="tumbling")
        sliding = p | "c2" >> beam.Create(elements) | "w2" >> WindowedAggregate(WindowSpec.sliding(2_000_000), specs)
        # entries 1, 2, 3, 9; exits 3 (of 1), 4 (of 2), 5 (of 3), 11 (empty)
        points = {1: data[:1], 2: data[:2], 3: data[1:3], 4: data[2:3], 9: data[3:]}
        assert_that(sliding, equal_to([(("k",), at(s), expect(pts)) for s, pts in points.items()]), label="sliding")
        session = p | "c3" >> beam.Create(elements) | "w3" >> WindowedAggregate(WindowSpec.session(3_000_000), specs)
        assert_that(session, equal_to([(("k",), at(6), expect(data[:3])), (("k",), at(12), expect(data[3:]))]),
                    label="session")


def test_late_event_within_allowed_lateness_re_emits_the_window():
    # Tumbling 10 s: the window ending :10 fires when the watermark passes; a late event for it
    # within the allowed lateness re-emits the complete, corrected result.
    def chunks():
        return [([tv("k", at(2), None), tv("k", at(4), None)], at(15)), ([tv("k", at(6), None)], at(30))]

    p, out = run_stream(chunks(), WindowSpec.tumbling(10_000_000), [COUNT])
    with p:
        assert_that(out, equal_to([(("k",), at(10), [2])]))  # no lateness: the late event is dropped
    p = TestPipeline(options=PipelineOptions(streaming=True))
    with p:
        out = p | stream_of(chunks()) | WindowedAggregate(WindowSpec.tumbling(10_000_000), [COUNT], 60_000_000)
        assert_that(out, equal_to([(("k",), at(10), [2]), (("k",), at(10), [3])]))


def test_late_event_in_sliding_window_is_adjusted_not_lost():
    # Outputs up to :02 are out when an event stamped :01.5 arrives: it is taken as arriving
    # just after the emitted point (like ASA's Adjust policy), so it is counted, once.
    chunks = [([tv("k", at(1), None), tv("k", at(2), None)], at(5)), ([tv("k", at(1.5), None)], None)]
    p, out = run_stream(chunks, WindowSpec.sliding(10_000_000), [COUNT], post=lambda r: r[2][0])
    with p:
        # entries :01 (1), :02 (2), the adjusted late one (3); exits :11 (2), :12 (1)
        assert_that(out, equal_to([1, 2, 3, 2, 1]))


# --------------------------------------------------------------------------- the cores directly


def _core_events(events):
    return [(us(t), b"k", ("k",), (None, v, v)) for _, t, v in events]


def test_sliding_core_incremental_equals_one_shot():
    from transforms.operators.aggregates import make_accumulator

    events = random_events(seed=5, n=60, keys=("k",))
    fns = [make_accumulator(s, retractable=True) for s in (COUNT, AggregateSpec("MAX"), AggregateSpec("SUM"))]
    one = SlidingCore(3_000_000)
    one.add(_core_events(events))
    expected = one.advance(2**62, fns)
    inc = SlidingCore(3_000_000)
    evs = sorted(_core_events(events), key=lambda e: e[0])
    got = []
    for i in range(0, len(evs), 7):  # feed in order, advancing to just before the next batch
        inc.add(evs[i:i + 7])
        now = evs[i + 7][0] - 1 if i + 7 < len(evs) else 2**62
        got += inc.advance(now, fns)
        assert len(inc.live) <= len(events)  # bounded by the window
    assert got == expected
    assert inc.next_time() is None and not inc.live


def test_session_core_state_is_dropped_after_close():
    from transforms.operators.aggregates import make_accumulator

    core = SessionCore(1_000_000, 0)
    fns = [make_accumulator(COUNT)]
    core.add([(us(at(1)), b"k", ("k",), (None,)), (us(at(1.5)), b"k", ("k",), (None,))])
    assert core.advance(us(at(2)), fns) == []
    assert core.next_time() == us(at(2.5))
    assert core.advance(us(at(2.5)), fns) == [(("k",), us(at(2.5)), [2])]
    assert not core.open and not core.groups and core.next_time() is None


def test_window_spec_validation():
    assert WindowSpec.tumbling(10).hop_us == 10
    with pytest.raises(ValueError, match="unknown window kind"):
        WindowSpec("rolling", size_us=1)
    with pytest.raises(ValueError, match="must be positive"):
        WindowSpec.hopping(10, 0)
    with pytest.raises(ValueError, match="7-day"):
        WindowSpec.sliding(8 * 24 * 3600 * 1_000_000)
    with pytest.raises(ValueError, match="at least one aggregate"):
        WindowedAggregate(WindowSpec.snapshot(), [])
