"""The live progress line of ``asa-beam run``: rows read (and rows/s), rows written per output,
dead letters, ML requests in flight and retries, elapsed time.

The counts come from ``transforms.progress`` (see there why not from Beam's metrics, and how
worker processes report). On a terminal one line is rewritten in place twice a second; when
stderr is not a terminal (a log file, CI), a plain line is printed every ``interval_s``
(default 10 s); ``--quiet`` prints nothing.

    >>> format_line({"rows_read.trips": 5000, "rows_written.out": 4000, "dead_letters": 2}, 2.0)
    'asa-beam: 0:02 read 5,000 rows (2,500/s) | written out 4,000 | dead letters 2'
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from transforms import progress


def format_line(counts: dict[str, int], elapsed_s: float) -> str:
    # Each step reading an input counts its rows (rows_read.<input>@<step>): an input's rows read
    # are the most any of its steps has seen.
    per_input: dict[str, int] = {}
    for k, v in counts.items():
        if k.startswith("rows_read."):
            name = k[len("rows_read."):].split("@", 1)[0]
            per_input[name] = max(per_input.get(name, 0), v)
    read = sum(per_input.values())
    minutes, seconds = divmod(int(elapsed_s), 60)
    rate = read / elapsed_s if elapsed_s > 0 else 0.0
    parts = [f"asa-beam: {minutes}:{seconds:02d} read {read:,} rows ({rate:,.0f}/s)"]
    written = [(k.split(".", 1)[1], v) for k, v in sorted(counts.items()) if k.startswith("rows_written.")]
    if written:
        parts.append("written " + ", ".join(f"{name} {n:,}" for name, n in written))
    parts.append(f"dead letters {counts.get('dead_letters', 0):,}")
    if "ml.requests" in counts or "ml.in_flight" in counts:
        parts.append(f"ML requests {counts.get('ml.requests', 0):,} ({counts.get('ml.in_flight', 0)} in flight, "
                     f"{counts.get('ml.retries', 0)} retries)")
    return " | ".join(parts)


class ProgressLine:
    """``with ProgressLine(sys.stderr): run()`` shows progress while ``run`` works."""

    def __init__(self, stream: TextIO = sys.stderr, interval_s: float | None = None):
        self._stream = stream
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._interval = interval_s if interval_s is not None else (0.5 if self._tty else 10.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="asa-progress-line")
        self._started = 0.0
        self._width = 0

    def __enter__(self) -> ProgressLine:
        progress.reset()
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._tty and self._width:
            self._stream.write("\r" + " " * self._width + "\r")  # the summary replaces the line
            self._stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            line = format_line(progress.snapshot(), time.monotonic() - self._started)
            if self._tty:
                self._stream.write("\r" + line.ljust(self._width))
                self._width = max(self._width, len(line))
            else:
                self._stream.write(line + "\n")
            self._stream.flush()
