"""Writing rows to files: ``WriteRows`` and ``WriteDeadLetters``.

Files are named like Beam's: ``<prefix>-SSSSS-of-NNNNN<ext>`` (``num_shards=0`` lets the runner
choose). A prefix may be an Azure blob (``azfs://account/container/path``) and may hold ASA's
output path pattern tokens — ``{date}``, ``{time}`` (``date_format``, ``time_format``),
``{datetime:<specifier>}``, ``{field}`` — to write each row under the folder of its
``System.Timestamp()`` and fields (``transforms.io.partitioned``). A prefix ending with the
format's extension (``out/alerts.json``) or ``.gz`` has it moved to the end
(``out/alerts-00000-of-00001.json``); ``.gz`` (or ``compression="gzip"``) gzips JSON and CSV
output. Rows written are counted by the Beam counter ``asa`` / ``output.<name>.rows``.

ASA rows have no fixed schema, so per format:

* **json** — one object per line, each ending with a newline (``WriteToText``); datetimes as
  ISO 8601 UTC with ``Z``; NaN and ±Infinity as ``null`` (see ``jsoncodec``).
* **csv** — with ``columns``, the header is exactly ``columns`` (in that order), each row
  gives its values for them and keys not listed are not written. Without ``columns``, each
  shard's header is the union of the keys of the rows in that shard, in first-seen order
  (rows lacking a key get an empty cell); shards holding differently keyed rows may so have
  different headers. A cell is ``CAST(value AS nvarchar(max))``: NULL, NaN and ±Infinity → empty, bit → 1/0,
  datetime → ISO 8601 UTC, record/array → compact JSON. RFC 4180 quoting and CRLF line ends.
* **avro** and **parquet** — the schema of each shard is inferred from *all* its rows (they
  are spooled to a local temporary file past ``SPOOL_CHUNK_ROWS`` rows, so memory stays
  bounded), so no row can fail to fit it. Every field is nullable. A field's type is the one
  type of its non-NULL values: bigint → long/int64, float → double, bigint mixed with float →
  double, nvarchar → string, bit → boolean, datetime → timestamp (µs, UTC; Avro
  ``timestamp-micros``), record → record/struct (fields merged over all rows), array →
  array/list (item types merged). A field whose values have *different* types (e.g. a string
  in some rows and a bigint in others), a field that is NULL in every row, and a record with
  no fields are written as **strings** (``CAST(value AS nvarchar(max))``, records and arrays as
  JSON). With ``columns``, the fields are those columns in that order. Avro field and record
  names must be ``[A-Za-z_][A-Za-z0-9_]*``: other characters become ``_`` and the original name
  is kept in the field's ``asa.name`` attribute (``ReadRows`` restores it). Avro blocks are
  deflate-compressed; Parquet columns snappy-compressed, in row groups of up to
  ``PARQUET_ROW_GROUP_ROWS`` rows.
"""

from __future__ import annotations

import abc
import csv
import datetime as _dt
import decimal
import io
import math
import pickle
import re
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics

from transforms.deadletter import DeadLetter
from transforms.io import jsoncodec
from transforms.io.checkpoint import OutputLog
from transforms.io.formats import _EXTENSIONS, SUFFIXES, UTC, check_format, format_from_path, to_text
from transforms.io.paths import OutputPattern, has_tokens, normalize_path

SPOOL_CHUNK_ROWS = 10_000  # rows a shard writer keeps in memory before spooling them to disk
PARQUET_ROW_GROUP_ROWS = 100_000
CSV_FLUSH_ROWS = 1_000


class WriteRows(beam.PTransform):
    """Writes a PCollection of rows to sharded files; returns the PCollection of file names.

    ``columns`` fixes the fields written, and their order (CSV header, Avro/Parquet schema);
    JSON ignores it. See the module docstring for the rules of each format. An unbounded
    PCollection (streaming) is written as it arrives, one file per bundle (``_WriteBundleFiles``);
    with ``checkpoint`` (an ``OutputLog``), each file's rows are recorded before it is committed
    and rows committed before a restart are not written again (``transforms.io.checkpoint``).

    >>> import apache_beam as beam, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with beam.Pipeline(runner="DirectRunner") as p:
    ...     _ = p | beam.Create([{"id": 1, "tags": ["a"]}]) | WriteRows(d + "/out", "csv", num_shards=1)
    >>> print(open(d + "/out-00000-of-00001.csv").read(), end="")
    id,tags
    1,"[""a""]"
    """

    def __init__(
        self,
        prefix: str,
        format: str | None = None,
        name: str = "output",
        num_shards: int = 0,
        *,
        columns: Sequence[str] | None = None,
        compression: str | None = None,
        delimiter: str = ",",
        count_rows: bool = True,
        date_format: str | None = None,
        time_format: str | None = None,
        checkpoint: OutputLog | None = None,
    ):
        super().__init__()
        self._checkpoint = checkpoint
        prefix = normalize_path(prefix)
        self._prefix, self._format, self._suffix, gzip_ = _resolve_output(prefix, format, compression)
        # ASA's output path pattern ({date}, {time}, {datetime:..}, {field}): a folder per row.
        self._pattern = OutputPattern(self._prefix, date_format, time_format) if has_tokens(self._prefix) else None
        self._compression = CompressionTypes.GZIP if gzip_ else CompressionTypes.UNCOMPRESSED
        self._name = name
        self._num_shards = num_shards
        self._columns = list(columns) if columns is not None else None
        self._delimiter = delimiter
        self._counter = f"output.{name}.rows" if count_rows else None
        if len(delimiter) != 1:
            raise ValueError(f"output '{name}': the CSV delimiter must be one character, got {delimiter!r}")

    def default_label(self) -> str:
        return f"WriteRows({self._name})"

    @property
    def reads_event_time(self) -> bool:
        """Whether the rows' event time decides where they go: a path pattern with {date}/{time}
        (``AsaQuery(outputs_read_event_time=...)``)."""
        return self._pattern is not None and self._pattern.uses_time

    def expand(self, rows):
        if self._pattern is not None:
            from transforms.io.partitioned import WritePartitionedFiles

            return rows | "WritePartitioned" >> WritePartitionedFiles(self._sink(), self._pattern, self._checkpoint)
        if not rows.is_bounded:
            return rows | "WriteBundleFiles" >> beam.ParDo(_WriteBundleFiles(self._sink(), self._checkpoint))
        if self._format == "json":
            return (
                rows
                | "EncodeJson" >> beam.ParDo(_EncodeJson(self._counter))
                | "WriteText" >> beam.io.WriteToText(
                    self._prefix, file_name_suffix=self._suffix, num_shards=self._num_shards,
                    compression_type=self._compression)
            )
        return rows | "WriteFiles" >> beam.io.Write(self._sink())

    def _sink(self) -> _RowSink:
        sink_class = {"json": _JsonSink, "csv": _CsvSink, "avro": _AvroSink, "parquet": _ParquetSink}[self._format]
        return sink_class(
            self._prefix, self._suffix, self._num_shards, self._compression,
            name=self._name, columns=self._columns, counter=self._counter, delimiter=self._delimiter)


class WriteDeadLetters(beam.PTransform):
    """Writes DeadLetter records (as ``DeadLetter.to_dict()``) and counts them by reason.

    Each record increments the Beam counter ``asa`` / ``dead_letter.<reason>``.

    >>> import apache_beam as beam, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with beam.Pipeline(runner="DirectRunner") as p:
    ...     _ = (p | beam.Create([DeadLetter("input", "malformed_json", "not JSON", raw="{")])
    ...          | WriteDeadLetters(d + "/failed", num_shards=1))
    >>> print(open(d + "/failed-00000-of-00001.json").read(), end="")
    {"step":"input","reason":"malformed_json","message":"not JSON","raw":"{"}
    """

    def __init__(self, prefix: str, format: str = "json", num_shards: int = 0, *,
                 checkpoint: OutputLog | None = None, **path_formats):
        super().__init__()
        # path_formats: date_format / time_format of a path pattern, as for WriteRows.
        self._write = WriteRows(prefix, format, name="dead_letters", num_shards=num_shards, count_rows=False,
                                checkpoint=checkpoint, **path_formats)

    @property
    def reads_event_time(self) -> bool:
        """As ``WriteRows.reads_event_time``."""
        return self._write.reads_event_time

    def expand(self, dead_letters):
        return dead_letters | "CountByReason" >> beam.ParDo(_CountDeadLetters()) | self._write


def _resolve_output(prefix: str, fmt: str | None, compression: str | None) -> tuple[str, str, str, bool]:
    """(prefix without extension, format, file suffix, gzip?) for WriteRows' arguments."""
    base = prefix
    gzip_ = False
    if base.lower().endswith(".gz"):
        base, gzip_ = base[:-3], True
    fmt = check_format(fmt) if fmt else format_from_path(prefix)
    suffix = SUFFIXES[fmt]
    lower = base.lower()
    for ext, ext_format in _EXTENSIONS.items():
        if ext_format == fmt and lower.endswith(ext) and "/" not in ext:
            base, suffix = base[: -len(ext)], ext
            break
    if compression is not None:
        key = compression.strip().lower()
        if key in ("gzip", "gz"):
            gzip_ = True
        elif key not in ("none", "", "uncompressed"):
            raise ValueError(f"unknown compression '{compression}'; expected 'gzip' or 'none'")
    if gzip_ and fmt in ("avro", "parquet"):
        raise ValueError(
            f"{fmt} files are compressed inside (Avro deflate blocks, Parquet snappy pages); "
            f"they cannot be gzipped: drop the .gz / compression option")
    return base, fmt, suffix + (".gz" if gzip_ else ""), gzip_


class _EncodeJson(beam.DoFn):
    """Row → one line of JSON. Kept lean: it is the hot path of JSON jobs."""

    def __init__(self, counter: str | None):
        self._counter_name = counter
        self._n = 0

    def setup(self):
        self._encode = jsoncodec.encode  # bytes: WriteToText's coder passes them through
        self._rows = Metrics.counter("asa", self._counter_name) if self._counter_name else None

    def start_bundle(self):
        self._n = 0

    def process(self, row):
        self._n += 1
        return (self._encode(row),)

    def finish_bundle(self):
        if self._n and self._rows is not None:
            self._rows.inc(self._n)
        self._n = 0


class _WriteBundleFiles(beam.DoFn):
    """Streaming writes: the rows of each bundle go to one new file, ``<prefix>-<UTC time>-<id><ext>``,
    written when the bundle finishes — as soon as rows arrive, so outputs appear while the job runs.

    There is no grouping, hence no window and no watermark: a row arriving after the watermark
    passed (as rows flushed by timers can on the local runner) is written like any other, so
    none can be dropped as late. A file is written under a hidden temporary name and renamed,
    so a reader globbing the prefix never sees it half-way, and a retried bundle leaves no
    partial file.

    With a checkpoint (``OutputLog``) the rename is the commit of a crash-safe job: the file is
    synced to disk and its rows' fingerprints recorded in the checkpoint first; a row whose
    fingerprint is among those committed before a restart is dropped instead of written (one
    copy of the committed multiset per row), and counted as ``output.<name>.already_written``
    (and in ``output.<name>.rows``: it is in the output).
    """

    def __init__(self, sink: _RowSink, checkpoint: OutputLog | None = None):
        self._sink = sink
        self._checkpoint = checkpoint

    def setup(self):
        # Loaded before this writer commits anything, so the multiset is the rows of earlier runs.
        self._committed = self._checkpoint.committed() if self._checkpoint is not None else None
        name = self._sink.name
        self._already = Metrics.counter("asa", f"output.{name}.already_written")
        self._rows = Metrics.counter("asa", self._sink.counter) if self._sink.counter else None

    def start_bundle(self):
        self._writer = None
        self._fingerprints: list[str] = []
        self._skipped = 0

    def process(self, row):
        if self._committed is not None:
            from transforms.io.checkpoint import fingerprint

            fp = fingerprint(row)
            if self._committed.take(fp):
                self._skipped += 1
                return
            self._fingerprints.append(fp)
        if self._writer is None:
            from transforms.io.partitioned import bundle_file

            self._final, self._temp = bundle_file(self._sink.file_path_prefix.get(), self._sink.file_name_suffix.get())
            self._writer = self._sink.open(self._temp)
        self._sink.write_record(self._writer, row)

    def finish_bundle(self):
        if self._skipped:
            self._already.inc(self._skipped)
            if self._rows is not None:
                self._rows.inc(self._skipped)
            self._skipped = 0
        if self._writer is None:
            return
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.transforms.window import GlobalWindows

        writer, self._writer = self._writer, None
        self._sink.close(writer)
        if self._checkpoint is not None:
            from transforms.io.checkpoint import fsync_file

            fsync_file(self._temp)  # the rename below must not commit a file a power cut can empty
            self._checkpoint.record(self._final, self._fingerprints)
        FileSystems.rename([self._temp], [self._final])
        yield GlobalWindows.windowed_value(self._final)


class _CountDeadLetters(beam.DoFn):
    def setup(self):
        self._counters: dict[str, Any] = {}

    def process(self, dead):
        record = dead.to_dict() if isinstance(dead, DeadLetter) else dict(dead)
        reason = str(record.get("reason"))
        counter = self._counters.get(reason)
        if counter is None:
            counter = self._counters[reason] = Metrics.counter("asa", f"dead_letter.{reason}")
        counter.inc()
        return (record,)


# -- Spooling ---------------------------------------------------------------------------------


class _Spool:
    """Rows of one shard, in order: in memory up to a chunk, then pickled to a temporary file."""

    def __init__(self, chunk_rows: int | None = None):
        self._chunk_rows = chunk_rows or SPOOL_CHUNK_ROWS
        self._chunk: list[dict] = []
        self._file = None

    def append(self, row: dict) -> None:
        self._chunk.append(row)
        if len(self._chunk) >= self._chunk_rows:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="asa-beam-spool-")
            pickle.dump(self._chunk, self._file, protocol=pickle.HIGHEST_PROTOCOL)
            self._chunk = []

    def chunks(self) -> Iterator[list[dict]]:
        if self._file is not None:
            self._file.seek(0)
            while True:
                try:
                    yield pickle.load(self._file)
                except EOFError:
                    break
        if self._chunk:
            yield self._chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunk = []


# -- Schema inference -------------------------------------------------------------------------

_NONE = type(None)
_SCALARS = frozenset({str, int, float, bool, _NONE, _dt.datetime})


class _Shape:
    """The Python types seen at one place of the rows (a field, an array's items), recursively."""

    __slots__ = ("types", "fields", "items")

    def __init__(self):
        self.types: set[type] = set()
        self.fields: dict[str, _Shape] | None = None
        self.items: _Shape | None = None

    def add(self, v: Any) -> None:
        t = type(v)
        if t in _SCALARS:
            self.types.add(t)
        elif t is dict or (t is not list and t is not tuple and isinstance(v, dict)):
            self.add_record(v)
        elif t is list or t is tuple or isinstance(v, (list, tuple)):
            self.types.add(list)
            items = self.items
            if items is None:
                items = self.items = _Shape()
            for x in v:
                items.add(x)
        else:
            self.types.add(t)

    def add_record(self, v: dict, only_known: bool = False) -> None:
        self.types.add(dict)
        fields = self.fields
        if fields is None:
            fields = self.fields = {}
        for k, x in v.items():
            s = fields.get(k)
            if s is None:
                if only_known:
                    continue
                s = fields[k] = _Shape()
            s.add(x)


def _kind(t: type) -> str | None:
    if t is _NONE:
        return None
    if issubclass(t, bool):
        return "bool"
    if issubclass(t, int):
        return "long"
    if issubclass(t, (float, decimal.Decimal)):
        return "double"
    if issubclass(t, str):
        return "string"
    if issubclass(t, _dt.date):  # datetime is a date
        return "timestamp"
    if issubclass(t, (bytes, bytearray, memoryview)):
        return "bytes"
    if t is dict:
        return "record"
    if t is list:
        return "array"
    return "mixed"  # a type ASA does not know: written as text


class _Type:
    """A resolved field type: ``kind`` is long, double, bool, string, timestamp, bytes, record
    or array; ``convert`` makes a non-NULL value fit it (None: values already fit)."""

    __slots__ = ("kind", "fields", "item", "convert")

    def __init__(self, kind, fields=None, item=None, convert=None):
        self.kind = kind
        self.fields: list[tuple[str, _Type]] | None = fields
        self.item: _Type | None = item
        self.convert = convert


def _to_timestamp(v: Any) -> _dt.datetime:
    if isinstance(v, _dt.datetime):
        return v if v.tzinfo is not None else v.replace(tzinfo=UTC)
    return _dt.datetime(v.year, v.month, v.day, tzinfo=UTC)


def _resolve(shape: _Shape | None) -> _Type:
    """The one type a place's values are written as (see the module docstring)."""
    if shape is None:
        return _Type("string")
    kinds = {k for k in map(_kind, shape.types) if k is not None}
    if kinds == {"long", "double"}:
        kinds = {"double"}
    if len(kinds) != 1 or kinds == {"mixed"}:
        only_text = shape.types <= {str, _NONE}
        return _Type("string", convert=None if only_text else to_text)
    kind = kinds.pop()
    if kind == "double":
        return _Type(kind, convert=None if shape.types <= {float, _NONE} else float)
    if kind == "timestamp":
        return _Type(kind, convert=_to_timestamp)
    if kind == "record":
        fields = [(k, _resolve(s)) for k, s in (shape.fields or {}).items()]
        if not fields:
            return _Type("string", convert=to_text)
        return _Type(kind, fields=fields)
    if kind == "array":
        item = _resolve(shape.items)
        conv = None
        if item.convert is not None or item.kind in ("record", "array"):
            item_conv = _value_converter(item)
            if item_conv is not None:
                conv = lambda v: [None if x is None else item_conv(x) for x in v]  # noqa: E731
        return _Type(kind, item=item, convert=conv)
    return _Type(kind)


def _value_converter(t: _Type):
    """A function making a non-NULL value fit ``t``; None when every value already fits."""
    return _record_converter(t) if t.kind == "record" else t.convert


def _record_converter(t: _Type):
    plan = []
    changed = False
    for key, ft in t.fields or []:
        conv = _value_converter(ft)
        changed = changed or conv is not None
        plan.append((key, conv))
    if not changed:
        return None  # missing keys are fine: both writers take them as NULL

    def convert(record: dict) -> dict:
        result = {}
        for key, conv in plan:
            v = record.get(key)
            result[key] = v if v is None or conv is None else conv(v)
        return result

    return convert


def _root_type(shape: _Shape) -> _Type:
    return _Type("record", fields=[(k, _resolve(s)) for k, s in (shape.fields or {}).items()])


# -- Sinks ------------------------------------------------------------------------------------


class _RowSink(FileBasedSink):
    """A FileBasedSink whose per-file handle is a shard writer object (``_ShardWriter``)."""

    writer_class: type

    def __init__(self, prefix, suffix, num_shards, compression, *, name, columns, counter, delimiter):
        super().__init__(
            prefix, coder=None, file_name_suffix=suffix, num_shards=num_shards,
            mime_type="application/octet-stream", compression_type=compression)
        self.name = name
        self.columns = columns
        self.counter = counter
        self.delimiter = delimiter

    def open(self, temp_path):
        return self.writer_class(self, super().open(temp_path))

    def write_record(self, writer, value):
        writer.write(value)

    def close(self, writer):
        writer.close()


class _ShardWriter(abc.ABC):
    """Writes one shard file: ``write`` each row, then ``close``."""

    def __init__(self, sink: _RowSink, handle):
        self.sink = sink
        self.handle = handle
        self.rows = 0

    @abc.abstractmethod
    def write(self, row: dict) -> None: ...

    def finish(self) -> None:  # noqa: B027 - optional hook: most writers stream and buffer nothing
        """Writes what is buffered, before the handle is closed."""

    def close(self) -> None:
        try:
            self.finish()
        finally:
            # pyarrow and fastavro leave the handle open; a gzip handle writes its trailer here.
            self.handle.close()
        if self.rows and self.sink.counter:
            Metrics.counter("asa", self.sink.counter).inc(self.rows)


class _SpoolingWriter(_ShardWriter):
    """Infers the shard's schema from all its rows, spooling them until ``close``."""

    def __init__(self, sink, handle):
        super().__init__(sink, handle)
        self.spool = _Spool()
        self.shape = _Shape()
        if sink.columns is not None:
            self.shape.fields = {c: _Shape() for c in sink.columns}

    def write(self, row):
        self.rows += 1
        self.shape.add_record(row, only_known=self.sink.columns is not None)
        self.spool.append(row)

    def finish(self):
        try:
            self.write_file(_root_type(self.shape), self.spool.chunks())
        finally:
            self.spool.close()

    @abc.abstractmethod
    def write_file(self, schema: _Type, chunks: Iterator[list[dict]]) -> None: ...


def _csv_cell(v: Any) -> str:
    if type(v) is str:
        return v
    if v is None or (type(v) is float and not math.isfinite(v)):
        return ""  # NULL; NaN and ±Infinity too (the project's rule for non-finite floats)
    return to_text(v)


class _CsvWriter(_ShardWriter):
    """CSV: header from ``columns`` (streamed), else from the shard's keys (spooled)."""

    def __init__(self, sink, handle):
        super().__init__(sink, handle)
        self.text = io.StringIO()
        self.csv = csv.writer(self.text, delimiter=sink.delimiter, lineterminator="\r\n")
        self.pending = 0
        if sink.columns is not None:
            self.header = sink.columns
            self.csv.writerow(self.header)
            self.spool = None
        else:
            self.keys: dict[str, None] = {}
            self.spool = _Spool()

    def write(self, row):
        self.rows += 1
        if self.spool is None:
            self._write_row(row)
            return
        keys = self.keys
        if not row.keys() <= keys.keys():
            for k in row:
                keys.setdefault(k)
        self.spool.append(row)

    def _write_row(self, row: dict) -> None:
        self.csv.writerow([_csv_cell(row.get(c)) for c in self.header])
        self.pending += 1
        if self.pending >= CSV_FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        self.handle.write(self.text.getvalue().encode("utf-8"))
        self.text.seek(0)
        self.text.truncate()
        self.pending = 0

    def finish(self):
        if self.spool is not None:
            try:
                self.header = list(self.keys)
                if self.header:
                    self.csv.writerow(self.header)
                for chunk in self.spool.chunks():
                    for row in chunk:
                        self._write_row(row)
            finally:
                self.spool.close()
        self._flush()


class _CsvSink(_RowSink):
    writer_class = _CsvWriter


class _JsonWriter(_ShardWriter):
    """JSON lines through a shard writer (streaming writes; batch JSON goes through WriteToText)."""

    def write(self, row):
        self.rows += 1
        self.handle.write(jsoncodec.encode(row) + b"\n")


class _JsonSink(_RowSink):
    writer_class = _JsonWriter


# Avro ---------------------------------------------------------------------------------------

_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AVRO_PRIMITIVE = {
    "long": "long", "double": "double", "bool": "boolean", "string": "string", "bytes": "bytes",
}


def _avro_name(name: str, taken: set[str]) -> str:
    """``name`` made a valid Avro name, distinct from those in ``taken`` (which it joins)."""
    out = name if _AVRO_NAME.fullmatch(name) else re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not out or out[0].isdigit():
        out = "_" + out
    base, n = out, 2
    while out in taken:
        out, n = f"{base}_{n}", n + 1
    taken.add(out)
    return out


class _AvroSchema:
    """Builds the Avro schema of a resolved row type, and the renames it needs."""

    def __init__(self):
        self.record_names: set[str] = set()
        self.renames: dict[int, dict[str, str]] = {}  # id(record _Type) → key → Avro name

    def record(self, t: _Type, name: str) -> dict:
        fields = []
        taken: set[str] = set()
        renames = {}
        for key, ft in t.fields or []:
            field_name = _avro_name(key, taken)
            field_type = self.type(ft, f"{name}_{field_name}")
            field: dict[str, Any] = {"name": field_name, "type": ["null", field_type], "default": None}
            if field_name != key:
                field["asa.name"] = key
                renames[key] = field_name
            fields.append(field)
        self.renames[id(t)] = renames
        return {"type": "record", "name": _avro_name(name, self.record_names), "fields": fields}

    def type(self, t: _Type, name: str) -> Any:
        if t.kind in _AVRO_PRIMITIVE:
            return _AVRO_PRIMITIVE[t.kind]
        if t.kind == "timestamp":
            return {"type": "long", "logicalType": "timestamp-micros"}
        if t.kind == "record":
            return self.record(t, name)
        assert t.kind == "array"
        return {"type": "array", "items": ["null", self.type(t.item, name + "_item")]}

    def converter(self, t: _Type):
        """Like ``_value_converter``, applying the Avro renames of every record."""
        if t.kind == "record":
            renames = self.renames.get(id(t), {})
            plan = []
            changed = False
            for key, ft in t.fields or []:
                conv = self.converter(ft)
                out = renames.get(key, key)
                changed = changed or conv is not None or out != key
                plan.append((key, out, conv))
            if not changed:
                return None

            def convert(record):
                result = {}
                for key, out, conv in plan:
                    v = record.get(key)
                    result[out] = v if v is None or conv is None else conv(v)
                return result

            return convert
        if t.kind == "array":
            item = self.converter(t.item)
            if item is None:
                return None
            return lambda v: [None if x is None else item(x) for x in v]
        return t.convert


class _AvroWriter(_SpoolingWriter):
    def write_file(self, schema, chunks):
        import fastavro

        builder = _AvroSchema()
        avro_schema = builder.record(schema, self.sink.name)
        convert = builder.converter(schema)
        rows = (row if convert is None else convert(row) for chunk in chunks for row in chunk)
        fastavro.writer(self.handle, fastavro.parse_schema(avro_schema), rows, codec="deflate")


class _AvroSink(_RowSink):
    writer_class = _AvroWriter


# Parquet ------------------------------------------------------------------------------------


def _arrow_type(t: _Type):
    import pyarrow as pa

    if t.kind == "long":
        return pa.int64()
    if t.kind == "double":
        return pa.float64()
    if t.kind == "bool":
        return pa.bool_()
    if t.kind == "string":
        return pa.string()
    if t.kind == "bytes":
        return pa.binary()
    if t.kind == "timestamp":
        return pa.timestamp("us", tz="UTC")
    if t.kind == "record":
        return pa.struct([pa.field(k, _arrow_type(ft)) for k, ft in t.fields or []])
    assert t.kind == "array"
    return pa.list_(_arrow_type(t.item))


class _ParquetWriter(_SpoolingWriter):
    def write_file(self, schema, chunks):
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow_schema = pa.schema([pa.field(k, _arrow_type(ft)) for k, ft in schema.fields or []])
        convert = _record_converter(schema)
        writer = pq.ParquetWriter(self.handle, arrow_schema, compression="snappy")
        try:
            batches, pending = [], 0
            for chunk in chunks:
                rows = chunk if convert is None else [convert(r) for r in chunk]
                batches.append(pa.RecordBatch.from_pylist(rows, schema=arrow_schema))
                pending += len(rows)
                if pending >= PARQUET_ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(batches), row_group_size=pending)
                    batches, pending = [], 0
            if batches:
                writer.write_table(pa.Table.from_batches(batches), row_group_size=pending)
        finally:
            writer.close()


class _ParquetSink(_RowSink):
    writer_class = _ParquetWriter
