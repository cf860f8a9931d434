"""Crash-safe streaming: the checkpoint of ``asa-beam run --streaming``.

A streaming job killed at any moment (SIGKILL, OOM kill, power cut) and started again with
the same command resumes: every input file is processed, none is skipped, and a row already
committed to an output is not written again. How:

* **Epochs.** The checkpoint counts *clean ends* (the job stopped after an idle period or a
  drain: every window emitted, every output file written). The files that arrived before the
  last clean end are *done*: their results are all in the outputs, and a new run never reads
  them again (``EPOCH``, replaced atomically at each clean end).
* **Arrival log (write-ahead).** Each watched input appends one line per file it reads
  (path, size, modification time, arrival time) and syncs it to disk *before* the file
  enters the pipeline (``InputLog``). After a crash, the files of the current epoch are
  *replayed*: read again, with the arrival times they had, before any new file. Replaying all of
  them — not only those whose rows were not yet written — is what rebuilds the windows, sessions,
  joins and LAG states that were open at the crash from their events: outputs are a
  deterministic function of the events and their arrival times.
* **Committed-output log.** An output file is committed by its rename from a hidden temporary
  name. Just before that rename, the writer records the file's name and one fingerprint per
  row (a hash of the row's canonical JSON) in a *sidecar* in the checkpoint (``OutputLog``).
  On restart, the sidecars whose output file exists are the rows committed in this epoch (a
  sidecar whose file is missing was cut off by the crash before the rename: its rows were not
  committed). The replay recomputes those rows, and the writer drops each one whose fingerprint
  is still in that multiset (taking one copy out per row dropped), so the outputs hold each row
  exactly as often as an uninterrupted run would.

Delivery per output kind (see README, "delivery guarantee per output kind"): exactly-once for
every row that is a deterministic function of the input — query outputs in every format, and
the dead letters of reading, casting, evaluation and timestamp errors. At-least-once where
the result depends on something outside the input: a row whose ML or JavaScript call failed
before the crash and succeeds on replay (or the reverse) is in the dead letters *and* the
output; a dead letter whose message carries an endpoint's answer can be written again with a
different message. Files that arrived while the job was down get their arrival time when the
job finds them, as in ASA, so rows that depend on arrival time (no ``TIMESTAMP BY``, late
events adjusted) can differ from an uninterrupted run's.

Layout of the checkpoint directory::

    LOCK                            flock'ed by the running job: one job per checkpoint
    EPOCH                           {"epoch": n, "job": hash of the job}
    inputs/<input>.jsonl            {"epoch", "path", "size", "mtime", "arrival"} per file read
    committed/<epoch>/<output>/<output file name>.json   {"file": path, "rows": [fingerprints]}

The checkpoint must be on a local file system (it uses ``flock`` and ``fsync``); outputs may
be anywhere Beam's ``FileSystems`` writes. It serves the local runner (one process); on Flink or
Dataflow the runner's own checkpointing takes this role.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from transforms.deadletter import json_default


class CheckpointError(Exception):
    """The checkpoint cannot be used (held by another job, written by a different job)."""


class Arrival(NamedTuple):
    """One watched file as the arrival log records it."""

    path: str
    size: int
    mtime: float
    arrival: float  # seconds since the epoch: the Beam timestamp its rows got


def fingerprint(row: Any) -> str:
    """A row's identity in the committed-output log: a hash of its canonical JSON (keys sorted).

    >>> fingerprint({"a": 1, "b": [1.5]}) == fingerprint({"b": [1.5], "a": 1})
    True
    >>> fingerprint({"a": 1}) == fingerprint({"a": 1.0})
    False
    """
    text = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_canonical)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _canonical(value: Any) -> Any:
    try:
        return json_default(value)
    except TypeError:
        return f"{type(value).__name__}:{value!r}"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name.lower()) or "_"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Writes ``path`` so that a crash leaves either the old content or the new one (fsync'ed)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def fsync_file(path: str) -> None:
    """Flushes a closed local file to disk (no-op for remote paths), so its rename commits its content."""
    if "://" in path:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Checkpoint:
    """An opened checkpoint: its directory, current epoch and this run's id (picklable).

    ``open_checkpoint`` opens one (and locks it); ``input_log`` / ``output_log`` give what the
    watches and writers of the pipeline use; ``finish`` records a clean end.
    """

    directory: str
    epoch: int
    run_id: str

    @property
    def path(self) -> Path:
        return Path(self.directory)

    def input_log(self, name: str) -> InputLog:
        return InputLog(self.directory, self.epoch, _safe_name(name))

    def output_log(self, name: str) -> OutputLog:
        return OutputLog(self.directory, self.epoch, _safe_name(name), self.run_id)

    def pending(self) -> dict[str, int]:
        """Input name → number of files of this epoch (to be replayed by this run)."""
        out = {}
        for log in sorted((self.path / "inputs").glob("*.jsonl")):
            _, replay = InputLog(self.directory, self.epoch, log.stem).load()
            if replay:
                out[log.stem] = len(replay)
        return out

    def finish(self, job: str) -> None:
        """A clean end: every file read so far is done; the next run starts a new epoch."""
        write_atomically(self.path / "EPOCH", json.dumps({"epoch": self.epoch + 1, "job": job}).encode())
        shutil.rmtree(self.path / "committed" / str(self.epoch), ignore_errors=True)
        _forget(self)


class CheckpointLock:
    """Holds the checkpoint's ``LOCK`` (released by the OS when the process dies, SIGKILL included)."""

    def __init__(self, directory: Path):
        self._file = open(directory / "LOCK", "a+")  # noqa: SIM115 - held for the job's lifetime
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise CheckpointError(
                f"the checkpoint {directory} is in use by another running job; stop it, "
                f"or give this job its own --checkpoint-dir") from None

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def open_checkpoint(directory: str | os.PathLike, job: str) -> tuple[Checkpoint, CheckpointLock]:
    """Opens (creating it if needed) and locks the checkpoint in ``directory`` for the job whose
    hash is ``job``. A checkpoint holding files not yet done by a *different* job is refused: its
    replay would mix two jobs' results."""
    path = Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    lock = CheckpointLock(path)
    try:
        state = json.loads((path / "EPOCH").read_text()) if (path / "EPOCH").exists() else {}
        checkpoint = Checkpoint(str(path), int(state.get("epoch", 0)), uuid.uuid4().hex)
        pending = checkpoint.pending()
        if pending and state.get("job") not in (None, job):
            raise CheckpointError(
                f"the checkpoint {path} holds {sum(pending.values())} file(s) of a different job "
                f"(its query, inputs or outputs changed) that it has not finished; run the job it was "
                f"written by to resume it, or give this job another --checkpoint-dir")
        if state.get("job") != job:
            write_atomically(path / "EPOCH", json.dumps({"epoch": checkpoint.epoch, "job": job}).encode())
    except BaseException:
        lock.release()
        raise
    return checkpoint, lock


@dataclass(frozen=True)
class InputLog:
    """The write-ahead arrival log of one watched input (``inputs/<name>.jsonl``)."""

    directory: str
    epoch: int
    name: str

    @property
    def path(self) -> Path:
        return Path(self.directory) / "inputs" / f"{self.name}.jsonl"

    def load(self) -> tuple[list[Arrival], list[Arrival]]:
        """(done: files of earlier epochs, replay: files of this epoch in arrival order).

        A last line cut short by a crash is dropped (its file was not emitted yet: it is logged
        before it is) and cut off the log, so the next append starts on a line of its own.
        """
        if not self.path.exists():
            return [], []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
        done, replay = [], []
        for line in data[:end].splitlines():
            record = json.loads(line)
            arrival = Arrival(record["path"], record["size"], record["mtime"], record["arrival"])
            (done if record["epoch"] < self.epoch else replay).append(arrival)
        replay.sort(key=lambda a: (a.arrival, a.mtime, a.path))
        return done, replay

    def append(self, arrivals: list[Arrival]) -> None:
        """Logs files about to be emitted; returns once the lines are on disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        text = "".join(json.dumps({"epoch": self.epoch, **a._asdict()}) + "\n" for a in arrivals)
        with open(self.path, "ab") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        if created:  # the new file's directory entry too (a power cut must not lose the log)
            _fsync_dir(self.path.parent)


@dataclass(frozen=True)
class OutputLog:
    """The committed-output log of one output (``committed/<epoch>/<name>/``)."""

    directory: str
    epoch: int
    name: str
    run_id: str

    @property
    def path(self) -> Path:
        return Path(self.directory) / "committed" / str(self.epoch) / self.name

    def committed(self) -> CommittedRows:
        """The rows committed before this run, shared by every writer of this output in this process."""
        key = (self.directory, self.epoch, self.name, self.run_id)
        with _registry_lock:
            rows = _registry.get(key)
            if rows is None:
                rows = _registry[key] = CommittedRows(self._load())
            return rows

    def _load(self) -> Counter:
        from apache_beam.io.filesystems import FileSystems

        counts: Counter = Counter()
        if not self.path.exists():
            return counts
        for sidecar in self.path.glob("*.json"):
            record = json.loads(sidecar.read_text())
            if FileSystems.exists(record["file"]):  # else: the crash came before the rename
                counts.update(record["rows"])
        return counts

    def record(self, final_path: str, fingerprints: list[str]) -> None:
        """Records the rows of an output file about to be committed (call before its rename)."""
        self.path.mkdir(parents=True, exist_ok=True)
        name = final_path.replace("\\", "/").rsplit("/", 1)[-1]
        write_atomically(self.path / f"{name}.json",
                         json.dumps({"file": final_path, "rows": fingerprints}).encode())


class CommittedRows:
    """A multiset of row fingerprints committed before the restart; ``take`` removes one copy."""

    def __init__(self, counts: Counter):
        self._counts = counts
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(self._counts.values())

    def take(self, fp: str) -> bool:
        """True (and one copy fewer) if a row with this fingerprint was committed before."""
        if not self._counts:
            return False
        with self._lock:
            n = self._counts.get(fp, 0)
            if not n:
                return False
            if n == 1:
                del self._counts[fp]
            else:
                self._counts[fp] = n - 1
            return True


_registry: dict[tuple, CommittedRows] = {}
_registry_lock = threading.Lock()


def _forget(checkpoint: Checkpoint) -> None:
    with _registry_lock:
        for key in [k for k in _registry if k[0] == checkpoint.directory and k[3] == checkpoint.run_id]:
            del _registry[key]
