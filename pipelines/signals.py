"""SIGINT and SIGTERM for asa-beam's long-running commands (``run --streaming``, ``serve-model``).

A non-interactive shell starts a background command (``asa-beam serve-model &``) with SIGINT
*ignored*, and Python then installs no KeyboardInterrupt handler: ``kill -INT`` would do
nothing. And SIGTERM's default action kills the process at once, skipping every ``finally``
(child servers, temporary files, the streaming checkpoint's lock). ``interruptible`` installs
both handlers explicitly: each raises ``KeyboardInterrupt`` in the main thread, so the command
stops the way Ctrl-C stops it. The previous handlers come back on exit.

>>> import os, signal
>>> with interruptible():
...     try:
...         os.kill(os.getpid(), signal.SIGTERM)
...         signal.sigtimedwait([], 0.1)  # a moment for the handler to run
...     except KeyboardInterrupt:
...         print("stopped")
stopped
"""

from __future__ import annotations

import contextlib
import signal
import threading


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def handling(handler):
    """``handler`` for SIGINT and SIGTERM while the block runs; the previous handlers come back after."""
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def interruptible():
    """SIGINT and SIGTERM raise KeyboardInterrupt while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with handling(_interrupt):
        yield
