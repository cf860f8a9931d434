"""Reading input files into rows: ``ReadRows``.

Rows are plain dicts of ASA values (see ``transforms.types``). Every format streams: a file is
never held in memory whole. A record that cannot be read becomes a ``DeadLetter`` on the
``failed`` output and the other records still arrive.

Per format:

* **json** — JSON lines, one object per line; an uncompressed file is read in byte ranges
  in parallel (``_ReadJsonLines``). Blank lines are skipped; a BOM is dropped; ``NaN``,
  ``Infinity``, ``-Infinity`` and ``1e999`` are floats; integers keep every digit. A line that
  is not UTF-8, not JSON, not an object, or nested deeper than ``jsoncodec.MAX_DEPTH`` levels
  is a ``malformed_json`` dead letter with the line as ``raw`` (``jsoncodec`` has the rules).
  A file holding one JSON array is *not* supported (each of its lines would be a dead letter):
  convert it to JSON lines, or give ``json_layout="auto"`` (``json_documents.py``: arrays and
  concatenated objects, read whole per file).
* **csv** — the first record is the header; values stay strings (``""`` for an empty cell),
  as ASA reads CSV. Quoted fields may hold delimiters and newlines. A record with a column
  count different from the header's is a ``malformed_csv`` dead letter with its text as
  ``raw``. Text is UTF-8 (a BOM is dropped; undecodable bytes become U+FFFD).
* **avro** — records as fastavro decodes them; timestamps are aware UTC datetimes
  (``local-timestamp-*`` values are taken as UTC), ``date`` → midnight UTC datetime,
  ``decimal`` → float, ``uuid``/``time-*`` → text, ``bytes``/``fixed`` → text (see
  ``formats.bytes_to_text``). Field names written by ``WriteRows`` that had to be renamed for
  Avro get their original name back. A file that is not Avro, or is cut short, is one
  ``malformed_avro`` dead letter (rows before the damage are kept).
* **parquet** — ``ParquetFile.iter_batches``; timestamps (any unit, any zone, or none: taken
  as UTC) → aware UTC datetimes, dates → midnight UTC datetimes, decimals → float, structs →
  dicts, lists → lists, maps → dicts, binary → text. A damaged file is one
  ``malformed_parquet`` dead letter.

``.gz`` files are decompressed by extension for every format. Rows read are counted by the
Beam counter ``asa`` / ``input.<name>.rows``.

Paths are local files or Azure blobs (``azfs://account/container/path``, see
``transforms.io.paths``); both go through Beam's ``FileSystems``.

**Arrival time.** In a bounded read every row of a file carries the file's last-modified time
(``FileMetadata.last_updated_in_seconds``; a blob's ``BlobLastModifiedUtcTime``) as its Beam
timestamp, in every format: ASA's arrival time of a blob event, "based only on
BlobLastModifiedTime" and shared by all the blob's events
(https://learn.microsoft.com/en-us/azure/stream-analytics/stream-analytics-define-inputs).
A query without ``TIMESTAMP BY`` so windows over files, as ASA does. A watched read (streaming)
gives rows the time their file was found (``transforms.io.watch``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import decimal
import gzip
import io
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.deadletter import FAILED, DeadLetter
from transforms.io import jsoncodec
from transforms.io.formats import UTC, bytes_to_text, check_format, format_from_path
from transforms.io.paths import is_blob, normalize_path
from transforms.io.watch import Watch

ROWS = "rows"
PARQUET_BATCH_ROWS = 10_000  # rows per record batch pulled from a Parquet file



class ReadRows(beam.PTransform):
    """Reads the files matching a glob → ``{"rows": PCollection[dict], "failed": PCollection[DeadLetter]}``.

    The glob may name Azure blobs (``azfs://account/container/*.json``; see ``transforms.io.blob``
    for credentials). Rows carry their file's last-modified time (see the module docstring).
    ``format`` defaults to the one the glob's extension names (``format_from_path``).
    ``name`` names the input in dead letters (``step``), counters and the transform label.
    ``delimiter`` is the CSV field separator. With ``validate`` (the default) a glob matching
    no file is a ValueError when the pipeline is built. With ``watch`` (a ``Watch``: poll
    interval, idle stop, watermark lag) the read is unbounded: each file is read when it arrives, and its rows carry
    its arrival time as their timestamp; an empty directory is then fine.

    >>> import apache_beam as beam, pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.json").write_text('{"id": 1}\\nnot json\\n')
    >>> with beam.Pipeline(runner="DirectRunner") as p:
    ...     out = p | ReadRows(str(d / "*.json"), name="events")
    ...     _ = out["rows"] | "rows" >> beam.Map(print)
    ...     _ = out["failed"] | "failed" >> beam.Map(lambda d: print(d.reason, d.raw))
    {'id': 1}
    malformed_json not json
    """

    def __init__(
        self,
        path_glob: str,
        format: str | None = None,
        name: str = "input",
        *,
        delimiter: str = ",",
        validate: bool = True,
        watch: Watch | None = None,
        json_layout: str = "lines",
    ):
        super().__init__()
        self._watch = watch
        # "auto": a JSON array, concatenated or newline-separated objects (json_documents.py).
        self._json_layout = json_layout
        if json_layout not in ("lines", "auto"):
            raise ValueError(f"input '{name}': json_layout must be 'lines' or 'auto', got {json_layout!r}")
        self._glob = normalize_path(path_glob)
        self._format = check_format(format) if format else format_from_path(path_glob)
        self._name = name
        self._delimiter = delimiter
        self._validate = validate
        if self._format == "csv" and len(delimiter) != 1:
            raise ValueError(f"input '{name}': the CSV delimiter must be one character, got {delimiter!r}")

    def default_label(self) -> str:
        return f"ReadRows({self._name})"

    def expand(self, pbegin):
        if self._watch is not None:
            # Streaming: each file as it arrives, read whole by one DoFn call (files are the unit).
            parsed = (
                pbegin
                | "Watch" >> self._watch.files(self._glob)
                | "Open" >> fileio.ReadMatches()
                | "Parse" >> beam.ParDo(self._file_reader()).with_outputs(FAILED, main=ROWS)
            )
            return {ROWS: parsed[ROWS], FAILED: parsed[FAILED]}
        _match_files(self._glob, f"input '{self._name}'", self._validate)
        # ReadFromText splits files but is a splittable DoFn, which Beam's local streaming runner
        # cannot run: a bounded read (reference data) in a streaming pipeline reads whole files.
        if (self._format == "json" and self._json_layout == "lines"
                and not pbegin.pipeline.options.view_as(StandardOptions).streaming):
            parsed = pbegin | "ReadJsonLines" >> _ReadJsonLines(self._glob, self._name)
        else:
            parsed = (
                pbegin
                | "Match" >> fileio.MatchFiles(self._glob)
                | "FileTime" >> beam.ParDo(_FileTime())
                # Breaks fusion so that the files, not only their names, spread over workers.
                | "Spread" >> beam.Reshuffle()
                | "Open" >> fileio.ReadMatches()
                | "Parse" >> beam.ParDo(self._file_reader()).with_outputs(FAILED, main=ROWS)
            )
        return {ROWS: parsed[ROWS], FAILED: parsed[FAILED]}

    def _file_reader(self) -> _FileReader:
        if self._format == "json" and self._json_layout != "lines":
            from transforms.io.json_documents import ReadJsonDocumentsFile

            return ReadJsonDocumentsFile(self._name)
        return {
            "json": lambda: _ReadJsonFile(self._name),
            "csv": lambda: _ReadCsvFile(self._name, self._delimiter),
            "avro": lambda: _ReadAvroFile(self._name),
            "parquet": lambda: _ReadParquetFile(self._name),
        }[self._format]()


def _counter(step: str):
    return Metrics.counter("asa", f"input.{step}.rows")


class _ReadJsonLines(beam.PTransform):
    """Batch JSON lines: each file cut into byte ranges (``JSON_SPLIT_BYTES``; a compressed file is
    one range), spread over workers, each range read in large blocks and parsed line by line.

    Replaces ``ReadFromText``, whose per-line bookkeeping (range claims, timestamps, seeking for
    separators) cost more than parsing the line. A line belongs to the range holding its first
    byte, so every line is read exactly once however the file is cut.
    """

    def __init__(self, glob: str, step: str):
        super().__init__()
        self._glob = glob
        self._step = step

    def expand(self, pbegin):
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self._glob)
            | "FileTime" >> beam.ParDo(_FileTime())  # inherited by the ranges and their rows
            | "Split" >> beam.FlatMap(_json_ranges)
            # Breaks fusion so that the ranges, not only the file names, spread over workers.
            | "Spread" >> beam.Reshuffle()
            | "Parse" >> beam.ParDo(_ParseJsonRange(self._step)).with_outputs(FAILED, main=ROWS)
        )


JSON_SPLIT_BYTES = 64 << 20  # bytes of an uncompressed JSON-lines file per parallel read
_READ_BLOCK = 1 << 20


def _json_ranges(metadata) -> Iterator[tuple[Any, int, int]]:
    """(file metadata, start, end) byte ranges of one file; end -1 = to the end of the file."""
    if CompressionTypes.detect_compression_type(metadata.path) != CompressionTypes.UNCOMPRESSED:
        yield metadata, 0, -1
        return
    size = metadata.size_in_bytes
    for start in range(0, max(size, 1), JSON_SPLIT_BYTES):
        end = start + JSON_SPLIT_BYTES
        yield metadata, start, (-1 if end >= size else end)


class _ParseJsonRange(beam.DoFn):
    """The JSON lines starting in one byte range of a file → rows and ``malformed_json`` dead letters."""

    def __init__(self, step: str):
        self._step = step
        self._rows = _counter(step)

    def process(self, item):
        metadata, start, end = item
        path = metadata.path
        handle = FileSystems.open(path, compression_type=CompressionTypes.detect_compression_type(path))
        n = 0
        try:
            for line in _range_lines(handle, start, end):
                try:
                    row = _decode(line)
                except _DECODE_ERRORS:
                    row = None
                # The fast path: short lines cannot be too deep (see jsoncodec.parse_row).
                if type(row) is dict and len(line) <= _SHORT_LINE:
                    n += 1
                    yield row
                    continue
                for out in _parse_json_line(self._step, line):
                    if type(out) is dict:
                        n += 1
                    yield out
        finally:
            handle.close()
            if n:
                self._rows.inc(n)


def _range_lines(handle, start: int, end: int) -> Iterator[bytes]:
    """The lines (without line breaks) that start in ``[start, end)`` of an open file."""
    pos = start
    if start > 0:
        handle.seek(start - 1)
        # The line holding byte start - 1 belongs to the previous range (or ends right there).
        pos = start - 1 + len(handle.readline())
    tail = b""
    bounded = end >= 0
    while not bounded or pos < end:
        block = handle.read(_READ_BLOCK)
        if not block:
            if tail:
                yield tail
            return
        buf = tail + block if tail else block
        lines = buf.split(b"\n")
        tail = lines.pop()
        if not bounded or pos + len(buf) - len(tail) <= end:  # every line here starts before end
            pos += len(buf) - len(tail)
            yield from lines
            continue
        for line in lines:
            if pos >= end:
                return
            pos += len(line) + 1
            yield line
    # pos >= end: the line starting at pos belongs to the next range.


_decode = jsoncodec.fast_decode
_DECODE_ERRORS = jsoncodec.FAST_DECODE_ERRORS
_SHORT_LINE = 2 * jsoncodec.MAX_DEPTH


def _parse_json_line(step: str, line: bytes | str) -> tuple:
    """One JSON line → ``()`` (blank), ``(row,)``, or ``(dead letter,)``.

    A trailing CR (CRLF files) is dropped; a line holding lone CRs (old Mac line ends) that
    fails to parse whole is parsed as the lines they separate.
    """
    cr = b"\r" if isinstance(line, bytes) else "\r"
    if line.endswith(cr):
        line = line[:-1]
    try:
        row = jsoncodec.parse_row(line)
    except jsoncodec.BadLine as e:
        if cr in line:
            return tuple(out for part in line.split(cr) for out in _parse_json_line(step, part))
        raw = line if isinstance(line, str) else line.decode("utf-8", "replace")
        return (TaggedOutput(FAILED, DeadLetter(step, "malformed_json", str(e), raw=raw)),)
    return () if row is None else (row,)


def _match_files(glob: str, what: str, validate: bool) -> list:
    """The files of ``glob`` when the pipeline is built; a blob that cannot be listed is a clear error."""
    if is_blob(glob):
        from transforms.io.blob import check_access

        return check_access(glob, what, must_match=validate)
    matched = FileSystems.match([glob])[0].metadata_list
    if validate and not matched:
        raise ValueError(f"{what}: no file matches '{glob}'")
    return matched


def file_timestamp(last_updated_in_seconds: float | None) -> Timestamp | None:
    """A file's last-modified time as a Beam timestamp (None when its filesystem does not tell)."""
    if not last_updated_in_seconds or last_updated_in_seconds <= 0:
        return None
    return Timestamp.of(last_updated_in_seconds)


@beam.typehints.with_output_types(FileMetadata)  # a TimestampedValue is its value to Beam's type checks
class _FileTime(beam.DoFn):
    """A matched file's metadata stamped with the file's last-modified time.

    Stamped once per file, before the files are spread over workers: the ranges, lines and rows
    read from it inherit the timestamp, so rows cost nothing more (a per-row TimestampedValue
    made Beam re-assign each row's window, ~25% of a simple JSON query).
    """

    def process(self, metadata):
        ts = file_timestamp(metadata.last_updated_in_seconds)
        yield metadata if ts is None else TimestampedValue(metadata, ts)


class _FileReader(beam.DoFn):
    """Base of the per-file readers: opens the file, counts rows, closes everything."""

    reason = "malformed_file"

    def __init__(self, step: str):
        self._step = step
        self._rows = _counter(step)

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        raw = readable.open(compression_type=CompressionTypes.UNCOMPRESSED)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.lower().endswith(".gz") else raw
        n = 0
        try:
            for item in self.read(stream, path):
                if type(item) is dict:
                    n += 1
                yield item
        except Exception as e:  # a damaged file: keep the rows read so far, report the rest
            yield TaggedOutput(FAILED, DeadLetter(
                self._step, self.reason, f"{path}: cannot read further ({n} rows read): "
                f"{type(e).__name__}: {e}"))
        finally:
            if n:
                self._rows.inc(n)
            stream.close()
            raw.close()

    def read(self, stream, path: str) -> Iterator[Any]:
        """Rows (dicts) and dead letters (TaggedOutput) of one file; each format's reader overrides it."""
        raise TypeError(f"{type(self).__name__} must override read()")


class _ReadJsonFile(_FileReader):
    """JSON lines of one whole file (streaming reads; batch reads split files with ReadFromText)."""

    reason = "malformed_json"

    def read(self, stream, path):
        for raw in stream:
            yield from _parse_json_line(self._step, raw[:-1] if raw.endswith(b"\n") else raw)


class _ReadCsvFile(_FileReader):
    reason = "malformed_csv"

    def __init__(self, step: str, delimiter: str):
        super().__init__(step)
        self._delimiter = delimiter

    def read(self, stream, path):
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
        consumed: list[str] = []  # the physical lines of the record being parsed, for `raw`

        def tap():
            for line in text:
                consumed.append(line)
                yield line

        reader = csv.reader(tap(), delimiter=self._delimiter)
        header: list[str] | None = None
        width = 0
        while True:
            consumed.clear()
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                if not consumed:
                    raise
                yield self._bad(f"{path} line {reader.line_num}: {e}", consumed)
                continue
            if not fields:  # a blank line
                continue
            if header is None:
                header, width = fields, len(fields)
                continue
            if len(fields) != width:
                first = reader.line_num - len(consumed) + 1
                yield self._bad(
                    f"{path} line {first}: expected {width} columns (as in the header), "
                    f"got {len(fields)}", consumed)
                continue
            yield dict(zip(header, fields, strict=True))

    def _bad(self, message: str, consumed: list[str]) -> TaggedOutput:
        raw = "".join(consumed)
        if raw.endswith("\n"):
            raw = raw[:-1]
        if raw.endswith("\r"):
            raw = raw[:-1]
        return TaggedOutput(FAILED, DeadLetter(self._step, self.reason, message, raw=raw))


# -- Avro -------------------------------------------------------------------------------------

Converter = Callable[[Any], Any]


def _nullable(fn: Converter) -> Converter:
    return lambda v: None if v is None else fn(v)


def _date_to_datetime(v: _dt.date) -> _dt.datetime:
    return _dt.datetime(v.year, v.month, v.day, tzinfo=UTC)


def _utc(v: _dt.datetime) -> _dt.datetime:
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


def to_asa_value(value: Any) -> Any:
    """Any decoded value → ASA values, by Python type (used where the schema cannot tell)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, dict):
        return {k: to_asa_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_asa_value(v) for v in value]
    if isinstance(value, _dt.datetime):
        return _utc(value)
    if isinstance(value, _dt.date):
        return _date_to_datetime(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes_to_text(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, _dt.time):
        return value.isoformat()
    return str(value)  # uuid.UUID and other exotic decodings


_AVRO_LOGICAL: dict[str, Converter] = {
    "timestamp-millis": _utc, "timestamp-micros": _utc, "timestamp-nanos": to_asa_value,
    "local-timestamp-millis": _utc, "local-timestamp-micros": _utc,
    "local-timestamp-nanos": to_asa_value,
    "date": _date_to_datetime, "decimal": float, "uuid": str,
    "time-millis": to_asa_value, "time-micros": to_asa_value,
}
_AVRO_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}


def avro_converter(schema: Any, named: dict[str, Any] | None = None) -> Converter | None:
    """A function making a value decoded with ``schema`` an ASA value; None when it already is.

    Driven by the schema so that files needing no conversion (the usual case) cost nothing.
    ``named`` collects named types for later references by name.
    """
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in ("bytes",):
            return bytes_to_text
        if schema in _AVRO_PRIMITIVES:
            return None
        # A reference to a named type; unknown (or still being built: a recursive type),
        # it is converted by Python type.
        return named.get(schema, to_asa_value)
    if isinstance(schema, list):  # a union
        convs = [avro_converter(s, named) for s in schema]
        non_null = [s for s in schema if s != "null"]
        if all(c is None for c in convs):
            return None
        if len(non_null) == 1:
            return _nullable(convs[schema.index(non_null[0])])
        return to_asa_value
    if not isinstance(schema, dict):
        return to_asa_value
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical in _AVRO_LOGICAL:
        return _nullable(_AVRO_LOGICAL[logical])
    if kind == "record" or kind == "error":
        name = schema.get("name", "")
        named.setdefault(name, to_asa_value)  # recursive references convert by type
        fields = []
        changed = False
        for f in schema.get("fields", []):
            conv = avro_converter(f["type"], named)
            original = f.get("asa.name", f["name"])
            changed = changed or conv is not None or original != f["name"]
            fields.append((f["name"], original, conv))
        fn = _record_converter(fields) if changed else None
        named[name] = fn
        return fn
    if kind == "array":
        item = avro_converter(schema.get("items"), named)
        return None if item is None else (lambda v: [item(x) for x in v])
    if kind == "map":
        val = avro_converter(schema.get("values"), named)
        return None if val is None else (lambda v: {k: val(x) for k, x in v.items()})
    if kind == "fixed":
        named[schema.get("name", "")] = bytes_to_text
        return bytes_to_text
    if kind == "enum":
        named[schema.get("name", "")] = None
        return None
    if isinstance(kind, (dict, list)) or kind in ("bytes",) or kind not in _AVRO_PRIMITIVES:
        return avro_converter(kind, named)
    return None


def _record_converter(fields: list[tuple[str, str, Converter | None]]) -> Converter:
    def convert(record):
        if record is None:
            return None
        out = {}
        for name, original, conv in fields:
            v = record.get(name)
            out[original] = v if conv is None or v is None else conv(v)
        return out

    return convert


class _ReadAvroFile(_FileReader):
    reason = "malformed_avro"

    def read(self, stream, path):
        import fastavro

        reader = fastavro.reader(stream)
        convert = avro_converter(reader.writer_schema)
        for record in reader:
            if convert is not None:
                record = convert(record)
            if type(record) is dict:
                yield record
            else:
                yield TaggedOutput(FAILED, DeadLetter(
                    self._step, self.reason, f"{path}: the Avro schema is not a record",
                    raw=repr(record)[:1000]))


# -- Parquet ----------------------------------------------------------------------------------


def _arrow_target(t):
    """The Arrow type ``t`` is cast to before ``to_pylist`` (None: keep ``t``)."""
    import pyarrow as pa
    import pyarrow.types as pat

    utc_us = pa.timestamp("us", tz="+00:00")  # "+00:00" decodes to datetime.timezone.utc
    if pat.is_timestamp(t) or pat.is_date(t):
        return None if t == utc_us else utc_us
    if pat.is_decimal(t) or pat.is_float16(t):
        return pa.float64()
    if pat.is_struct(t):
        changed = False
        fields = []
        for f in t:
            sub = _arrow_target(f.type)
            changed = changed or sub is not None
            fields.append(f.with_type(sub) if sub is not None else f)
        return pa.struct(fields) if changed else None
    if pat.is_map(t):
        k, v = _arrow_target(t.key_type), _arrow_target(t.item_type)
        if k is None and v is None:
            return None
        return pa.map_(k or t.key_type, v or t.item_type)
    if pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t):
        sub = _arrow_target(t.value_type)
        if sub is None:
            return None
        field = t.value_field.with_type(sub)
        if pat.is_large_list(t):
            return pa.large_list(field)
        if pat.is_fixed_size_list(t):
            return pa.list_(field, t.list_size)
        return pa.list_(field)
    if pat.is_dictionary(t):
        return _arrow_target(t.value_type)  # to_pylist decodes dictionaries itself
    return None


def _arrow_converter(t) -> Converter | None:
    """Python-side conversion of ``to_pylist`` values of (already cast) type ``t``; None if none."""
    import pyarrow.types as pat

    if pat.is_binary(t) or pat.is_large_binary(t) or pat.is_fixed_size_binary(t) or (
            hasattr(pat, "is_binary_view") and pat.is_binary_view(t)):
        return _nullable(bytes_to_text)
    if pat.is_time(t) or pat.is_duration(t):
        return to_asa_value
    if pat.is_struct(t):
        fields = [(f.name, _arrow_converter(f.type)) for f in t]
        fields = [(n, c) for n, c in fields if c is not None]
        if not fields:
            return None

        def convert_struct(v):
            if v is None:
                return None
            for n, c in fields:
                x = v.get(n)
                if x is not None:
                    v[n] = c(x)
            return v

        return convert_struct
    if pat.is_map(t):
        k = _arrow_converter(t.key_type) or (lambda x: x)
        i = _arrow_converter(t.item_type) or (lambda x: x)
        return _nullable(lambda v: {k(a): i(b) for a, b in v})
    if pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t):
        item = _arrow_converter(t.value_type)
        return None if item is None else _nullable(lambda v: [item(x) for x in v])
    if pat.is_dictionary(t):
        return _arrow_converter(t.value_type)
    return None


class _ReadParquetFile(_FileReader):
    reason = "malformed_parquet"

    def read(self, stream, path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(stream)
        schema = pf.schema_arrow
        target_fields = []
        cast = False
        for f in schema:
            sub = _arrow_target(f.type)
            cast = cast or sub is not None
            target_fields.append(f.with_type(sub) if sub is not None else f)
        target = pa.schema(target_fields) if cast else None
        convs = [(f.name, c) for f in (target or schema) if (c := _arrow_converter(f.type)) is not None]
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            if target is not None:
                batch = batch.cast(target, safe=False)  # truncates ns timestamps to µs
            rows = batch.to_pylist()
            if convs:
                for row in rows:
                    for name, conv in convs:
                        v = row[name]
                        if v is not None:
                            row[name] = conv(v)
            yield from rows
