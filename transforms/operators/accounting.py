"""Row accounting: where every row of every step went, and the check that the numbers add up.

While ``AsaQuery`` builds the graph it writes a ``Ledger``: for each step, the Beam counters
(namespace ``asa``) that count the rows entering it, leaving it, filtered by WHERE/HAVING,
dead-lettered, folded into an aggregate, expanded by APPLY, or entering and leaving a join; and
the *balances* those counters must satisfy. A step is cut into segments at the operators that
change the number of rows (JOIN, APPLY, GROUP BY). Inside a segment every row leaves as exactly
one row, or is filtered, or dead-lettered, so ``rows in = rows out + filtered + dead letters``
must hold exactly; APPLY must account for each row it reads (expanded, empty, dead-lettered).
The counts at a segment's ends are taken by operators other than the ones inside it, so a row
dropped without a trace anywhere in a segment breaks its balance. What a balance cannot see:
rows an aggregate or join consumes legitimately (a window folds many rows into one; an inner
join drops rows that match nothing), and in streaming the rows a window drops as too late;
the summary shows those numbers (folded → groups, join in → out) without a check.

Counts are kept per bundle in the DoFns that see the rows (an integer add per row) and added
to the Beam counter once per bundle, so the per-row cost stays tiny; counting DoFns fuse with
their neighbours. ``check`` runs after the run on the runner's metrics (summed across worker
processes by the runner).

    >>> ledger = Ledger()
    >>> ledger.balance("S", "rows", ["step.S.in"], [("out", "step.S.out"), ("filtered", "step.S.filtered")])
    >>> ledger.check({"step.S.in": 10, "step.S.out": 7, "step.S.filtered": 3})
    []
    >>> ledger.check({"step.S.in": 10, "step.S.out": 6, "step.S.filtered": 3})[0].message()
    'step S: rows: 10 in, but out 6 + filtered 3 = 9 (1 row unaccounted for)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import progress

NAMESPACE = "asa"


@dataclass(frozen=True)
class Balance:
    """Σ ``ins`` must equal Σ ``outs`` (counter names; ``outs`` carry a label for the message)."""

    step: str
    what: str
    ins: tuple[str, ...]
    outs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Imbalance:
    balance: Balance
    ins: int
    outs: tuple[tuple[str, int], ...]

    def message(self) -> str:
        b = self.balance
        total = sum(v for _, v in self.outs)
        parts = " + ".join(f"{label} {v}" for label, v in self.outs)
        diff = self.ins - total
        gap = (f"{diff} row{'s' if diff != 1 else ''} unaccounted for" if diff > 0
               else f"{-diff} row{'s' if diff != -1 else ''} more out than in")
        return f"step {b.step}: {b.what}: {self.ins} in, but {parts} = {total} ({gap})"


@dataclass
class StepRecord:
    """The counters that describe one step in the summary."""

    name: str
    ins: list[str] = field(default_factory=list)  # rows entering from the main source
    joined: list[tuple[str, list[str]]] = field(default_factory=list)  # (alias, counters) of each JOIN's source
    out: list[str] = field(default_factory=list)  # rows leaving (a union's = its parts')
    details: list[tuple[str, str]] = field(default_factory=list)  # (label, counter) shown as they are
    dead: list[str] = field(default_factory=list)  # counters of the step's dead letters


@dataclass
class Ledger:
    steps: dict[str, StepRecord] = field(default_factory=dict)
    balances: list[Balance] = field(default_factory=list)
    outputs: dict[str, list[str]] = field(default_factory=dict)  # output name → counters of its rows
    inputs: dict[str, list[str]] = field(default_factory=dict)  # input name → counters of its rows entering steps

    def add_step(self, name: str, ins: Sequence[str] = (), out: Sequence[str] = ()) -> StepRecord:
        record = self.steps.setdefault(name, StepRecord(name))
        record.ins.extend(ins)
        record.out.extend(out)
        return record

    def balance(self, step: str, what: str, ins: Sequence[str], outs: Sequence[tuple[str, str]]) -> None:
        self.balances.append(Balance(step, what, tuple(ins), tuple(outs)))

    def check(self, counters: Mapping[str, int]) -> list[Imbalance]:
        """The balances that do not hold, given the run's counters (a missing counter is 0)."""
        bad = []
        for b in self.balances:
            ins = sum(value(counters, n) for n in b.ins)
            outs = tuple((label, value(counters, n)) for label, n in b.outs)
            if ins != sum(v for _, v in outs):
                bad.append(Imbalance(b, ins, outs))
        return bad


def counters_of(result) -> dict[str, int]:
    """The ``asa`` counters of a finished pipeline result, by name (summed over steps), as
    ``Ledger.check`` takes them: ``ledger.check(counters_of(pipeline.run()))``."""
    from apache_beam.metrics.metric import MetricsFilter

    return sum_counters(result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"])


def sum_counters(results) -> dict[str, int]:
    """Beam counter results → {name: value summed over steps} (committed where the runner has it)."""
    counters: dict[str, int] = {}
    for c in results:
        v = c.committed if c.committed is not None else c.attempted
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + (v or 0)
    return counters


def value(counters: Mapping[str, int], name: str) -> int:
    """A counter's value; ``prefix.*`` is the sum of the counters under ``prefix.``; missing is 0."""
    if name.endswith(".*"):
        return sum(v for k, v in counters.items() if k.startswith(name[:-1]))
    return counters.get(name, 0)


class CountRows(beam.DoFn):
    """Passes every element on and counts them into the counter ``name`` (once per bundle).

    ``live`` also reports the count to ``transforms.progress`` every few thousand rows, for the
    progress line of long runs.

    >>> # rows | beam.ParDo(CountRows("step.S.out"))
    """

    def __init__(self, name: str, live: str | None = None):
        self._name = name
        self._live = live
        self._counter = Metrics.counter(NAMESPACE, name)

    def start_bundle(self):
        self._n = 0
        self._reported = 0

    def process(self, element):
        self._n += 1
        if self._live is not None and self._n - self._reported >= progress.EVERY:
            progress.add(self._live, self._n - self._reported)
            self._reported = self._n
        return (element,)

    def finish_bundle(self):
        if self._n:
            self._counter.inc(self._n)
            if self._live is not None:
                progress.add(self._live, self._n - self._reported)
        self._n = self._reported = 0


class CountDeadLetters(CountRows):
    """Counts a step's dead letters (rare: off the hot path) and reports them live."""

    def __init__(self, name: str):
        super().__init__(name, live="dead_letters")

    def process(self, element):
        progress.add("dead_letters", 1)
        self._n += 1
        self._reported = self._n
        return (element,)


def count(pcoll, label: str, name: str, live: str | None = None):
    """``pcoll`` with its elements counted into ``name`` (a fused counting ParDo)."""
    return pcoll | label >> beam.ParDo(CountRows(name, live))


class StepAccounts:
    """Writes one SELECT step's counters and balances into a ``Ledger`` while the step is built.

    The step's failed outputs are collected in one list as operators are applied; ``claim``
    gives the ones added since the last claim to a segment or an operator, whose dead-letter
    counter then counts them (``count_failed``).
    """

    def __init__(self, ledger: Ledger, step: str, source: Sequence[str]):
        self.ledger = ledger
        self.step = step
        self.record = ledger.add_step(step, ins=source)
        self._segment = 0
        self._after = ""
        self._in = list(source)
        self._outs: list[tuple[str, str]] = []
        self._dead: list[str] = []

    def name(self, what: str) -> str:
        return f"step.{self.step}.{what}"

    def filtered(self, label: str) -> str:
        name = self.name(f"{label.lower()}.filtered")
        self._outs.append((f"filtered by {label}", name))
        return name

    def claim(self, failed: list, what: str) -> str | None:
        new = len(failed) - len(self._dead)
        if new <= 0:
            return None
        name = self.name(f"{what}.dead")
        self._dead += [name] * new
        if name not in self.record.dead:
            self.record.dead.append(name)
        return name

    def cut(self, failed: list, into: str, label: str) -> None:
        """The current segment ends where its rows enter the operator that ``into`` counts."""
        dead = self.claim(failed, f"segment{self._segment}")
        outs = [(label, into), *self._outs, *([("dead letters", dead)] if dead else [])]
        what = "rows" + (f" after {self._after}" if self._after else "") + (f" into {label}" if label != "out" else "")
        self.ledger.balance(self.step, what, self._in, outs)

    def begin(self, source: str, after: str) -> None:
        self._segment += 1
        self._in, self._outs, self._after = [source], [], after

    def side(self, failed: list, source: Sequence[str], into: str, label: str) -> None:
        """A joined source: its rows reach the join (counted by ``into``) or are dead-lettered."""
        self.record.joined.append((label, list(source)))
        dead = self.claim(failed, f"{label.lower().replace(' ', '_')}.side")
        self.ledger.balance(self.step, f"rows of {label}", source,
                            [(label, into), *([("dead letters", dead)] if dead else [])])

    def operator(self, failed: list, what: str) -> None:
        """Failed outputs added since the last claim are dead letters of the operator ``what``."""
        self.claim(failed, what)

    def finish(self, failed: list, out: str) -> None:
        self.cut(failed, out, "out")
        self.record.out.append(out)

    def count_failed(self, failed: list) -> list:
        return [pc | f"Count dead letters {i + 1}" >> beam.ParDo(CountDeadLetters(name))
                for i, (pc, name) in enumerate(zip(failed, self._dead, strict=True))]
