"""Writing rows under ASA's output path patterns: ``{date}/{time}``, ``{datetime:..}``, ``{field}``.

``WriteRows`` uses this when its prefix holds a token (see ``transforms.io.paths.OutputPattern``):
each row goes to the folder its ``System.Timestamp()`` and fields name, as ASA's blob output
puts it ("System.Timestamp is the time used for all time based partitioning",
https://learn.microsoft.com/en-us/azure/stream-analytics/blob-storage-azure-data-lake-gen2-output).

* Bounded rows are grouped by resolved prefix and each prefix becomes one file
  ``<prefix>-00000-of-00001<ext>`` (written under a hidden temporary name, then renamed, so a
  retried write replaces it instead of adding a second file).
* Unbounded rows are written as they arrive, one file per bundle and prefix,
  ``<prefix>-<UTC time>-<id><ext>``, like other streaming outputs.

A row without a time of its own (made by ``beam.Create``: Beam's minimum timestamp) is placed by
the time it is written.
"""

from __future__ import annotations

import datetime as _dt
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP

from transforms.io.formats import UTC
from transforms.io.paths import OutputPattern


class WritePartitionedFiles(beam.PTransform):
    """Rows → files under the folders ``pattern`` resolves for each row; returns the file names.

    ``sink`` is a ``WriteRows`` row sink (it opens, writes and closes one file of the format);
    ``WriteRows`` builds this transform when its prefix holds a path pattern token:

    >>> import apache_beam as beam, os, tempfile
    >>> from transforms.io import WriteRows
    >>> d = tempfile.mkdtemp()
    >>> with beam.Pipeline(runner="DirectRunner") as p:
    ...     _ = (p | beam.Create([{"id": 1, "kind": "a"}, {"id": 2, "kind": "b"}])
    ...          | WriteRows(d + "/{kind}/rows", "json"))
    >>> sorted(os.listdir(d + "/a")), open(d + "/b/rows-00000-of-00001.json").read()
    (['rows-00000-of-00001.json'], '{"id":2,"kind":"b"}\\n')
    """

    def __init__(self, sink, pattern: OutputPattern, checkpoint=None):
        super().__init__()
        self._sink = sink
        self._pattern = pattern
        self._checkpoint = checkpoint  # streaming: a crash-safe job's OutputLog

    def expand(self, rows):
        keyed = rows | "Partition" >> beam.ParDo(_PartitionKey(self._pattern))
        if rows.is_bounded:
            return (
                keyed
                # Windowed results of several windows may share a folder: one file per folder.
                | "Global" >> beam.WindowInto(GlobalWindows())
                | "GroupByFolder" >> beam.GroupByKey()
                | "WriteFolders" >> beam.ParDo(_WriteFolder(self._sink))
            )
        return keyed | "WriteBundles" >> beam.ParDo(_WriteBundleFolders(self._sink, self._checkpoint))


class _PartitionKey(beam.DoFn):
    def __init__(self, pattern: OutputPattern):
        self._pattern = pattern

    def process(self, row, ts=beam.DoFn.TimestampParam):
        if self._pattern.uses_time and MIN_TIMESTAMP < ts < MAX_TIMESTAMP:
            when = ts.to_utc_datetime(has_tz=True)
        else:
            when = _dt.datetime.now(UTC)
        yield self._pattern.resolve(row, when), row


def temporary_path(final: str) -> str:
    """Where a file is written before it is renamed to ``final``: a hidden name beside it."""
    directory, base = FileSystems.split(final)
    return FileSystems.join(directory, f".{base}.tmp")


def bundle_file(prefix: str, suffix: str) -> tuple[str, str]:
    """(final, temporary) paths of a new file of one bundle: ``<prefix>-<UTC time>-<random><suffix>``."""
    stamp = _dt.datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    final = f"{prefix}-{stamp}-{uuid.uuid4().hex[:8]}{suffix}"
    return final, temporary_path(final)


class _WriteFolder(beam.DoFn):
    """(prefix, rows) → one file ``<prefix>-00000-of-00001<ext>``, written then renamed into place."""

    def __init__(self, sink):
        self._sink = sink

    def process(self, element):
        prefix, rows = element
        final = f"{prefix}-00000-of-00001{self._sink.file_name_suffix.get()}"
        temp = temporary_path(final)
        writer = self._sink.open(temp)
        for row in rows:
            self._sink.write_record(writer, row)
        self._sink.close(writer)
        # A file of a re-run or a retried bundle is replaced (rename overwrites, locally and in blobs).
        FileSystems.rename([temp], [final])
        yield final


class _WriteBundleFolders(beam.DoFn):
    """Streaming: the rows of a bundle → one new file per prefix, written when the bundle ends.

    With a crash-safe job's ``checkpoint`` (``transforms.io.checkpoint.OutputLog``), as
    ``writers._WriteBundleFiles``: rows committed before a restart are not written again, and
    each file's rows are recorded before its rename commits it.
    """

    def __init__(self, sink, checkpoint=None):
        self._sink = sink
        self._checkpoint = checkpoint

    def setup(self):
        self._committed = self._checkpoint.committed() if self._checkpoint is not None else None
        self._already = beam.metrics.Metrics.counter("asa", f"output.{self._sink.name}.already_written")
        self._rows = beam.metrics.Metrics.counter("asa", self._sink.counter) if self._sink.counter else None

    def start_bundle(self):
        self._open: dict[str, tuple] = {}
        self._skipped = 0

    def process(self, element):
        prefix, row = element
        fp = None
        if self._committed is not None:
            from transforms.io.checkpoint import fingerprint

            fp = fingerprint(row)
            if self._committed.take(fp):
                self._skipped += 1
                return
        entry = self._open.get(prefix)
        if entry is None:
            final, temp = bundle_file(prefix, self._sink.file_name_suffix.get())
            entry = self._open[prefix] = (self._sink.open(temp), temp, final, [])
        self._sink.write_record(entry[0], row)
        if fp is not None:
            entry[3].append(fp)

    def finish_bundle(self):
        if self._skipped:
            self._already.inc(self._skipped)
            if self._rows is not None:
                self._rows.inc(self._skipped)
            self._skipped = 0
        entries, self._open = list(self._open.values()), {}
        for writer, temp, final, fingerprints in entries:
            self._sink.close(writer)
            if self._checkpoint is not None:
                from transforms.io.checkpoint import fsync_file

                fsync_file(temp)
                self._checkpoint.record(final, fingerprints)
            FileSystems.rename([temp], [final])
            yield GlobalWindows.windowed_value(final)
