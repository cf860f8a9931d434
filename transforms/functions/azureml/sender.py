"""The HTTP side of scoring in a small child process: the pipeline's process only moves bytes.

Python runs one thread at a time. An HTTP exchange in a thread of the pipeline's process
costs ~1.5 ms of interpreter time per request (headers, the connection pool, response
parsing, a dozen socket calls, each of which must win the GIL back from the pipeline's
thread). Here the pipeline's process writes the request body to a pipe and reads the
response from another: two system calls and one wake-up per request. This child does the
exchange on its own core, with the standard library only, so it starts in a few tens of
milliseconds and never imports the pipeline.

Protocol (both directions): frames of a 4-byte big-endian length and a ``marshal``-ed tuple.
- The parent's first frame is the configuration: ``(url, headers, connect_timeout_s,
  timeout_s, threads, cafile)``. It carries the key in ``headers``, so the key never appears
  on a command line or in the environment. The child answers ``"ready"``.
- Then each request is ``(id, body)``, and each answer ``(id, status, retry_after, error,
  content)``: ``status`` is the HTTP status or ``None`` when no response came; ``error`` is
  then ``"timeout"`` or the exception's class name.
- The child exits when its standard input closes: the parent stopped or died. It ignores
  SIGINT, which a terminal sends to the pipeline's whole process group.
"""

from __future__ import annotations

import http.client
import marshal
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from typing import NamedTuple
from urllib.parse import urlsplit

_LEN = struct.Struct(">I")


def write_frame(stream, value) -> None:
    data = marshal.dumps(value)
    stream.write(_LEN.pack(len(data)) + data)  # one write: one system call
    stream.flush()


def read_frame(stream):
    """The next frame's value, or None at the end of the stream."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = _LEN.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return marshal.loads(data)


class _Connection:
    """One keep-alive connection, opened again when the server closed it."""

    def __init__(self, url: str, connect_timeout_s: float, timeout_s: float, cafile: str | None):
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        if self._https:
            import ssl  # only for https: ~10 ms of the child's start-up

            self._context = ssl.create_default_context(cafile=cafile)
        else:
            self._context = None
        self._conn: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._connect_timeout_s,
                                               context=self._context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout_s)
        conn.connect()
        conn.sock.settimeout(self._timeout_s)  # the connect timeout was for connecting only
        return conn

    def _usable(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None:
            # an idle keep-alive connection the server closed reads as ready (EOF): open a new one
            # instead of sending the body into it
            if not select.select([conn.sock], [], [], 0)[0]:
                return conn
        self.close()
        self._conn = self._open()
        return self._conn

    def post(self, body: bytes, headers: dict) -> tuple:
        try:
            conn = self._usable()
            conn.request("POST", self._path, body=body, headers=headers)
            resp = conn.getresponse()
            content = resp.read()
            encoding = (resp.getheader("Content-Encoding") or "").strip().lower()
            if encoding in ("gzip", "x-gzip"):
                content = zlib.decompress(content, 16 + zlib.MAX_WBITS)
            elif encoding == "deflate":
                content = zlib.decompress(content)
            if resp.will_close:
                self.close()
            return resp.status, resp.getheader("Retry-After"), None, content
        except TimeoutError:
            self.close()
            return None, None, "timeout", b""
        except (OSError, http.client.HTTPException, zlib.error) as e:
            self.close()
            return None, None, type(e).__name__, b""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def serve(stdin, stdout) -> None:
    config = read_frame(stdin)
    if config is None:
        return
    url, headers, connect_timeout_s, timeout_s, threads, cafile = config
    pending: queue.SimpleQueue = queue.SimpleQueue()
    out_lock = threading.Lock()

    def work() -> None:
        conn = _Connection(url, connect_timeout_s, timeout_s, cafile)
        while True:
            item = pending.get()
            if item is None:
                return
            rid, body = item
            status, retry_after, error, content = conn.post(body, headers)
            with out_lock:
                write_frame(stdout, (rid, status, retry_after, error, content))

    for _ in range(max(1, threads)):
        threading.Thread(target=work, daemon=True).start()
    write_frame(stdout, "ready")
    while True:
        item = read_frame(stdin)
        if item is None:
            return
        pending.put(item)


class Exchange(NamedTuple):
    """One request's outcome: ``status`` None means no response (``error`` says why)."""

    status: int | None
    retry_after: str | None
    error: str | None
    content: bytes


_EXITED = Exchange(None, None, "SenderProcessExited", b"")  # what a request gets when the child is gone


class SenderClosed(Exception):
    """``SenderProcess.close`` was called while this request waited for its answer."""


class PendingExchange:
    """A request sent by ``SenderProcess.submit``: its answer arrives later.

    ``done()`` never blocks; ``result()`` waits for the ``Exchange`` (``SenderClosed`` when the
    sender was closed first). ``latency_s``: from the write of the request to the arrival of its
    answer, measured by the answers' reader (not when the caller looked).
    """

    __slots__ = ("_event", "_answer", "_proc", "_sent", "_arrived")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._answer: Exchange | None = None
        self._proc: subprocess.Popen | None = None  # the child it went to
        self._sent = self._arrived = time.monotonic()  # (a request that could not be sent: 0 s)

    def _set(self, answer: Exchange | None) -> None:
        self._arrived = time.monotonic()
        self._answer = answer
        self._event.set()

    def done(self) -> bool:
        return self._event.is_set()

    def wait(self) -> None:
        self._event.wait()

    def result(self) -> Exchange:
        self._event.wait()
        if self._answer is None:
            raise SenderClosed()
        return self._answer

    @property
    def latency_s(self) -> float:
        return max(0.0, self._arrived - self._sent)


class SenderProcess:
    """The parent's end: starts the child, sends bodies, hands each answer to its caller.

    ``exchange`` may be called from several threads at once (up to ``threads`` requests are
    sent in parallel); ``submit`` sends without waiting, for a caller that does other work
    meanwhile. If the child dies, the requests waiting for it get a connection error
    (the caller's retry policy applies) and the next ``exchange`` starts a new child.

    >>> sender = SenderProcess("http://127.0.0.1:9/score", {}, 1.0, 1.0, threads=1)
    >>> sender.exchange(b"{}").error   # nothing listens on port 9
    'ConnectionRefusedError'
    >>> sender.close()
    """

    def __init__(self, url: str, headers: dict[str, str], connect_timeout_s: float, timeout_s: float,
                 threads: int = 1, cafile: str | None = None):
        self._config = (url, dict(headers), float(connect_timeout_s), float(timeout_s), int(threads), cafile)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._reading: subprocess.Popen | None = None  # the child whose answers are being read
        self._waiting: dict[int, PendingExchange] = {}
        self._next_id = 0
        self._closed = False

    def _start(self) -> subprocess.Popen:
        """A running child (started if needed); call with ``_lock`` held."""
        old = self._proc
        # Not only poll(): a dying child closes its stdout (its answers' reader sees the end and
        # fails what waits) a moment before waitpid() reports it, and its stdin may still take a
        # request then, which nobody would ever answer. A child whose reader has ended is gone.
        if old is not None and old is self._reading and old.poll() is None:
            return old
        if old is not None:
            self._proc = None
            _discard(old)
        # -I: no PYTHON* variables, no user site, not the script's directory on sys.path;
        # -S: no site-packages either (the child needs the standard library only; ~15 ms less)
        proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=_PIPE_BYTES)
        _widen(proc.stdin)
        _widen(proc.stdout)
        try:
            write_frame(proc.stdin, self._config)
        except (OSError, ValueError):
            proc.kill()
            proc.wait()
            raise OSError("the sender process did not start") from None
        # Not waited for: its start-up (~40 ms) overlaps the caller's work, and requests written
        # meanwhile wait in the pipe. Its answers' reader checks its "ready" first.
        self._proc = self._reading = proc
        threading.Thread(target=self._read_answers, args=(proc,), name="sender-answers", daemon=True).start()
        return proc

    def start(self) -> SenderProcess:
        """Start the child now (it is otherwise started by the first ``exchange``)."""
        with self._lock:
            if not self._closed:
                self._start()
        return self

    def _read_answers(self, proc: subprocess.Popen) -> None:
        try:
            # a child that did not start (or took no configuration) never says "ready": it is gone
            ready = read_frame(proc.stdout) == "ready"
            while ready:
                answer = read_frame(proc.stdout)
                if answer is None:
                    break
                rid, status, retry_after, error, content = answer
                with self._lock:
                    pending = self._waiting.pop(rid, None)
                if pending is not None:
                    pending._set(Exchange(status, retry_after, error, content))
        except (OSError, ValueError, EOFError):
            pass
        # the child is gone: what was sent to it gets a connection error
        with self._lock:
            if self._reading is proc:
                self._reading = None  # from now on exchange() starts another child
            lost = [rid for rid, pending in self._waiting.items() if pending._proc is proc]
            orphans = [self._waiting.pop(rid) for rid in lost]
        for pending in orphans:
            pending._set(_EXITED)
        try:
            proc.stdout.close()
        except (OSError, ValueError):
            pass

    def exchange(self, body: bytes) -> Exchange:
        """POST ``body`` and wait for the answer; raises ``SenderClosed`` when the sender is closed meanwhile."""
        return self.submit(body).result()

    def submit(self, body: bytes) -> PendingExchange:
        """POST ``body`` without waiting for the answer (only for the write to the child's pipe)."""
        pending = PendingExchange()
        with self._lock:
            if self._closed:
                raise SenderClosed()
            try:
                proc = self._start()
            except OSError:
                pending._set(_EXITED)
                return pending
            rid = self._next_id = self._next_id + 1
            self._waiting[rid] = pending
            pending._proc = proc
        pending._sent = time.monotonic()
        try:
            with self._write_lock:  # not under _lock: the answers' reader needs it meanwhile
                write_frame(proc.stdin, (rid, body))
        except (OSError, ValueError):  # the child died: the next call starts another
            with self._lock:
                mine = self._waiting.pop(rid, None) is not None
            if mine:  # (else its reader has already failed it)
                pending._set(_EXITED)
        return pending

    def close(self) -> None:
        """Stop the child; requests waiting for an answer raise ``SenderClosed``."""
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
            waiting, self._waiting = self._waiting, {}
        for pending in waiting.values():
            pending._set(None)
        if proc is not None:
            try:
                proc.stdin.close()  # the child exits at the end of its input
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()


# A 1000-row request or answer is ~100 KB, more than a pipe holds by default (64 KB): the
# pipeline's thread would block in its write until the child (on a busy machine) reads, and the
# answers' reader would need two reads, each taking the GIL back from the pipeline's thread.
_PIPE_BYTES = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size


def _widen(stream) -> None:
    """Let the pipe behind ``stream`` hold ``_PIPE_BYTES`` where the system allows it."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    except (ImportError, AttributeError, OSError):  # not Linux, or above the system's limit
        pass


def _discard(proc: subprocess.Popen) -> None:
    """Let go of a child that ended (or is ending): kill it if it somehow is not, close its input.
    Not waited for here (it may still be exiting): ``subprocess`` reaps it later, and its answers'
    reader closes its output."""
    try:
        proc.kill()
    except OSError:
        pass
    try:
        proc.stdin.close()
    except (OSError, ValueError):  # unflushed bytes to a closed pipe
        pass
    proc.poll()


def main() -> None:  # pragma: no cover - runs as the child process
    # Ctrl-C reaches the terminal's whole process group: the pipeline decides what it means
    # (the CLI drains a streaming job); this child lives until its input closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:
        pass
    finally:
        os._exit(0)  # do not wait for requests in flight: nobody reads their answers


if __name__ == "__main__":  # pragma: no cover
    main()
