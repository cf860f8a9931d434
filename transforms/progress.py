"""Live counts of a running job (rows read, rows per output, dead letters, ML requests) for the
progress line of ``asa-beam run``. A display only: the row accounting uses Beam metrics.

Why not Beam's metrics: a runner reports them when a bundle ends, and a local batch run reads a
file in one or a few bundles, so they arrive all at once at the end. Instead the DoFns that see
the rows add to a process-wide table here every few thousand rows (``EVERY``; one integer add
per row in between). In the driver's process (the in-memory FnApiRunner, the DirectRunner's
threads) the display reads that table directly. SDK worker subprocesses (``--workers N``)
inherit ``ASA_BEAM_PROGRESS`` (host:port:pid of the driver) from the driver's environment; in
them a daemon thread sends the table's deltas twice a second as one UDP datagram to the
driver's loopback socket, which adds them to its table. UDP on loopback never blocks a worker;
a datagram lost at worst makes the display lag, never a result wrong.

    >>> reset(); add("rows_read.input", 5); add("rows_read.input", 2); snapshot()["rows_read.input"]
    7
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

EVERY = 4096
ENV = "ASA_BEAM_PROGRESS"

_lock = threading.Lock()
_counts: dict[str, int] = {}
_pending: dict[str, int] = {}
_sender: threading.Thread | None = None


def add(name: str, n: int = 1) -> None:
    """Adds ``n`` to the live count ``name`` (in a worker process, also sends it to the driver)."""
    global _sender
    with _lock:
        _counts[name] = _counts.get(name, 0) + n
        target = os.environ.get(ENV)
        if target is None or target.rsplit(":", 1)[1] == str(os.getpid()):
            return
        _pending[name] = _pending.get(name, 0) + n
        if _sender is None:
            _sender = threading.Thread(target=_send_forever, args=(target,), daemon=True, name="asa-progress")
            _sender.start()


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def reset() -> None:
    with _lock:
        _counts.clear()
        _pending.clear()


def _send_forever(target: str) -> None:
    host, port, _ = target.rsplit(":", 2)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while True:
        time.sleep(0.5)
        with _lock:
            if not _pending:
                continue
            deltas = dict(_pending)
            _pending.clear()
        try:
            sock.sendto(json.dumps(deltas).encode(), (host, int(port)))
        except OSError:
            pass  # the driver is gone or busy: a display count is lost, nothing else


class Listener:
    """In the driver: receives worker deltas while the job runs (``with Listener(): ...``)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True, name="asa-progress-listener")
        self._previous: str | None = None

    def __enter__(self) -> Listener:
        self._previous = os.environ.get(ENV)
        host, port = self._sock.getsockname()
        os.environ[ENV] = f"{host}:{port}:{os.getpid()}"
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
        if self._previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self._previous

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            try:
                deltas = json.loads(data)
            except ValueError:
                continue
            with _lock:
                for name, n in deltas.items():
                    _counts[name] = _counts.get(name, 0) + int(n)
