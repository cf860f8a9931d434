"""``asa-beam tune-batch JOB.yaml FUNCTION``: find a good max batch count for an Azure ML function.

ASA's advice (asa-reference §1.1): measure latency at batch sizes 50, 200, 500, 1000, 2000, …;
the point where latency begins to climb is the max batch count. ``tune`` does that against the
live endpoint with rows sampled from the job's input, then measures throughput with 1, 2, 4, 8
requests in flight at the recommended size, and saves a chart of the sweep.

Rules (also in the report it prints):

* **batch_size**: the largest size whose median latency is at most ``climb_factor`` (2.0) times
  the median latency of the smallest size — beyond it, latency grows with the batch instead of
  being dominated by the fixed cost of a request.
* **parallel_requests**: the smallest number of requests in flight that reaches 90% of the best
  throughput measured (ASA: per job partition).

>>> report = tune(function, rows, sizes=(50, 200, 500))      # doctest: +SKIP
>>> print(report.format())                                     # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from transforms.deadletter import RowError
from transforms.functions.azureml import AzureMLFunction
from transforms.functions.azureml.client import Action
from transforms.functions.azureml.swagger import ARRAY

DEFAULT_SIZES = (50, 200, 500, 1000, 2000, 5000, 10000)
DEFAULT_PARALLEL = (1, 2, 4, 8)


class SizeResult(NamedTuple):
    batch_size: int
    requests: int
    latency_ms: float  # median
    latency_ms_max: float
    rows_per_s: float  # batch_size / median latency
    error: str = ""


class ParallelResult(NamedTuple):
    parallel_requests: int
    requests: int
    rows_per_s: float
    latency_ms: float  # median


class TuneReport(NamedTuple):
    function: str
    endpoint: str
    sizes: list[SizeResult]
    parallel: list[ParallelResult]
    batch_size: int
    parallel_requests: int
    climb_factor: float
    chart: Path | None = None

    def format(self) -> str:
        lines = [f"udf.{self.function} at {self.endpoint}", "",
                 f"{'batch size':>10}  {'latency p50':>12}  {'max':>9}  {'rows/s':>10}"]
        for s in self.sizes:
            if s.error:
                lines.append(f"{s.batch_size:>10}  failed: {s.error}")
            else:
                lines.append(f"{s.batch_size:>10}  {s.latency_ms:>9.1f} ms  {s.latency_ms_max:>6.1f} ms  "
                             f"{s.rows_per_s:>10,.0f}")
        if self.parallel:
            lines += ["", f"{'in flight':>10}  {'latency p50':>12}  {'rows/s':>10}   (batch size {self.batch_size})"]
            for p in self.parallel:
                lines.append(f"{p.parallel_requests:>10}  {p.latency_ms:>9.1f} ms  {p.rows_per_s:>10,.0f}")
        ok = [s for s in self.sizes if not s.error]
        best = max(ok, key=lambda s: s.rows_per_s) if ok else None
        lines += ["", f"recommended batch_size: {self.batch_size}  (largest size with latency <= "
                      f"{self.climb_factor:g}x the smallest size's)"]
        if best is not None and best.batch_size != self.batch_size:
            lines.append(f"  (highest throughput measured: batch_size {best.batch_size}, "
                         f"{best.rows_per_s:,.0f} rows/s at {best.latency_ms:.1f} ms per request)")
        lines.append(f"recommended parallel_requests: {self.parallel_requests}  "
                     "(fewest in flight reaching 90% of the best throughput)")
        if self.chart is not None:
            lines.append(f"chart: {self.chart}")
        return "\n".join(lines)


def sample_payloads(function: AzureMLFunction, rows: Sequence[Any]) -> list:
    """Rows → request rows the endpoint accepts (via the swagger); rows that do not convert are skipped.

    A record offered to an array-shaped endpoint is taken as its values in order (sampled input
    rows are records; the query would build the array with a JavaScript UDF).
    """
    sig = function.signature
    convert = sig.converter()
    out = []
    for row in rows:
        candidates = [row]
        if sig.row_shape == ARRAY and isinstance(row, dict):
            candidates.append(list(row.values()))
        for candidate in candidates:
            try:
                out.append(convert(candidate))
                break
            except RowError:
                continue
    return out


def tune(function: AzureMLFunction, rows: Sequence[Any], sizes: Sequence[int] = DEFAULT_SIZES, *,
         repeats: int = 3, parallel_levels: Sequence[int] = DEFAULT_PARALLEL, climb_factor: float = 2.0,
         chart: str | Path | None = None, clock: Callable[[], float] = time.perf_counter,
         log: Callable[[str], None] | None = None) -> TuneReport:
    """Probe the endpoint with each batch size (``repeats`` requests each, after one warm-up)."""
    payloads = sample_payloads(function, rows)
    if not payloads:
        raise ValueError(f"none of the {len(rows)} sample rows matches udf.{function.alias}'s input schema")
    sizes = sorted({int(s) for s in sizes if 1 <= int(s) <= 10000})
    if not sizes:
        raise ValueError("no batch sizes between 1 and 10000 to try")
    say = log or (lambda _msg: None)

    def batch(n: int) -> list:
        return list(itertools.islice(itertools.cycle(payloads), n))

    client = function.make_client().open()
    try:
        client.call(batch(sizes[0]))  # warm-up: connections, the endpoint's lazy init
        results: list[SizeResult] = []
        for size in sizes:
            body = batch(size)
            lat: list[float] = []
            error = ""
            for _ in range(max(1, repeats)):
                t0 = clock()
                res = client.call(body)
                dt = (clock() - t0) * 1000.0
                if res.action is not Action.OK:
                    error = f"HTTP {res.status}" if res.status else res.message
                    break
                lat.append(dt)
            if error:
                results.append(SizeResult(size, len(lat) + 1, 0.0, 0.0, 0.0, error))
                say(f"batch {size}: {error}; stopping the sweep")
                break
            med = statistics.median(lat)
            results.append(SizeResult(size, len(lat), med, max(lat), size / (med / 1000.0)))
            say(f"batch {size}: {med:.1f} ms, {size / (med / 1000.0):,.0f} rows/s")
        ok = [r for r in results if not r.error]
        if not ok:
            raise RuntimeError(f"udf.{function.alias}: every probe failed ({results[0].error})")
        base = ok[0].latency_ms
        recommended = max((r for r in ok if r.latency_ms <= climb_factor * base), key=lambda r: r.batch_size)
        par_results = _parallel_sweep(function, batch(recommended.batch_size), parallel_levels, repeats, clock, say)
    finally:
        client.close()
    if par_results:
        best = max(p.rows_per_s for p in par_results)
        parallel = min(p.parallel_requests for p in par_results if p.rows_per_s >= 0.9 * best)
    else:
        parallel = 1
    report = TuneReport(function.alias, function.config.endpoint, results, par_results, recommended.batch_size,
                        parallel, climb_factor)
    if chart is not None:
        report = report._replace(chart=save_chart(report, chart))
    return report


def _parallel_sweep(function: AzureMLFunction, body: list, levels: Sequence[int], repeats: int,
                    clock: Callable[[], float], say: Callable[[str], None]) -> list[ParallelResult]:
    out: list[ParallelResult] = []
    for level in sorted({int(x) for x in levels if int(x) >= 1}):
        n = max(2 * level, repeats, 4)
        client = function.make_client()
        client.pool_size = level
        client.open()
        try:
            # untimed first: the HTTP sender's start-up and one connection per request in flight
            ok, _, _ = _in_flight(client, body, level, level, clock)
            if ok:
                ok, elapsed, lat = _in_flight(client, body, level, n, clock)
        finally:
            client.close()
        if not ok:
            say(f"{level} in flight: requests failed; stopping")
            break
        rate = n * len(body) / elapsed
        out.append(ParallelResult(level, n, rate, statistics.median(lat)))
        say(f"{level} in flight: {rate:,.0f} rows/s")
    return out


def _in_flight(client, body: list, level: int, n: int, clock: Callable[[], float]) -> tuple[bool, float, list]:
    """Send ``n`` requests with ``level`` in flight: (all succeeded, seconds, latencies in ms)."""
    lat: list[float] = []

    def one(_):
        t0 = clock()
        res = client.call(body)
        lat.append((clock() - t0) * 1000.0)
        return res.action is Action.OK

    t0 = clock()
    with ThreadPoolExecutor(max_workers=level) as pool:
        ok = all(list(pool.map(one, range(n))))
    return ok, clock() - t0, lat


def save_chart(report: TuneReport, path: str | Path) -> Path:
    """A PNG: latency and rows/s per batch size, and rows/s per requests in flight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    ok = [s for s in report.sizes if not s.error]
    panels = 2 if report.parallel else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    xs = [s.batch_size for s in ok]
    ax.plot(xs, [s.latency_ms for s in ok], "o-", color="tab:blue", label="latency p50 (ms)")
    ax.set_xscale("log")
    ax.set_xlabel("batch size (rows per request)")
    ax.set_ylabel("latency per request (ms)", color="tab:blue")
    ax.axvline(report.batch_size, color="gray", linestyle="--", label=f"recommended {report.batch_size}")
    ax2 = ax.twinx()
    ax2.plot(xs, [s.rows_per_s for s in ok], "s-", color="tab:orange", label="rows/s")
    ax2.set_ylabel("rows/s (one request in flight)", color="tab:orange")
    ax.set_title(f"udf.{report.function}: batch size sweep")
    ax.legend(loc="upper left", fontsize=8)
    if report.parallel:
        bx = axes[0][1]
        bx.bar([str(p.parallel_requests) for p in report.parallel], [p.rows_per_s for p in report.parallel],
               color="tab:green")
        bx.set_xlabel(f"requests in flight (batch size {report.batch_size})")
        bx.set_ylabel("rows/s")
        bx.set_title(f"recommended parallel_requests: {report.parallel_requests}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


Loader = Callable[[str, str, int], "tuple[AzureMLFunction, list]"]


def load_from_job(job_path: str, function: str, sample: int) -> tuple[AzureMLFunction, list]:
    """(the function, up to ``sample`` rows of the job's input) — via the job loader.

    The rows are the job's first input's rows, sent as the function's argument: right for
    functions taking records (the swagger picks the columns); see the README for arrays.
    """
    from pipelines.job import load_job

    job = load_job(job_path)
    fn = job.functions().lookup(function)
    if fn is None:
        raise SystemExit(f"the job defines no function '{function}'")
    if not isinstance(fn, AzureMLFunction):
        raise SystemExit(f"function '{function}' is a {fn.kind} function; tune-batch tunes azureml functions")
    return fn, list(job.sample_rows(sample))


def main(argv: list[str] | None = None, loader: Loader | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asa-beam tune-batch",
                                     description="Measure an Azure ML function's endpoint and recommend "
                                                 "batch_size and parallel_requests.")
    parser.add_argument("job", help="job file (YAML)")
    parser.add_argument("function", help="alias of an azureml function in the job")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated batch sizes (default %(default)s)")
    parser.add_argument("--parallel", default=",".join(map(str, DEFAULT_PARALLEL)),
                        help="requests in flight to try (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="requests per batch size (default 3)")
    parser.add_argument("--sample", type=int, default=2000, help="input rows to sample (default 2000)")
    parser.add_argument("--chart", default=None, help="PNG to write (default tune-<function>.png)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        levels = [int(x) for x in args.parallel.split(",") if x.strip()]
    except ValueError:
        parser.error("--sizes and --parallel take comma-separated integers")
    fn, rows = (loader or load_from_job)(args.job, args.function, args.sample)
    chart = Path(args.chart or f"tune-{args.function}.png")
    report = tune(fn, rows, sizes, repeats=args.repeats, parallel_levels=levels, chart=chart,
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    print(report.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
