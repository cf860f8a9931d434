"""Reading input files into rows: ``ReadRows``.

Rows are plain dicts of ASA values (see ``transforms.types``). Every format streams: a file is
never held in memory whole. A record that cannot be read becomes a ``DeadLetter`` on the
``failed`` output and the other records still arrive.

Per format:

* **json** — JSON lines, one object per line, read with ``ReadFromText`` (splittable when not
  compressed). Blank lines are skipped. A line that is not JSON, or not an object, is a
  ``malformed_json`` dead letter with the line as ``raw``. A file holding one JSON array is
  *not* supported (each of its lines would be a dead letter): convert it to JSON lines, or
  give ``json_layout="auto"`` (``json_documents.py``: arrays and concatenated objects, read
  whole per file).
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
"""

from __future__ import annotations

import csv
import datetime as _dt
import decimal
import gzip
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.pvalue import TaggedOutput

from transforms.deadletter import FAILED, DeadLetter
from transforms.io.formats import UTC, bytes_to_text, check_format, format_from_path
from transforms.io.watch import Watch

ROWS = "rows"
PARQUET_BATCH_ROWS = 10_000  # rows per record batch pulled from a Parquet file

_loads = json.loads


class ReadRows(beam.PTransform):
    """Reads the files matching a glob → ``{"rows": PCollection[dict], "failed": PCollection[DeadLetter]}``.

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
        self._glob = path_glob
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
        if self._validate and not FileSystems.match([self._glob])[0].metadata_list:
            raise ValueError(f"input '{self._name}': no file matches '{self._glob}'")
        # ReadFromText splits files but is a splittable DoFn, which Beam's local streaming runner
        # cannot run: a bounded read (reference data) in a streaming pipeline reads whole files.
        if (self._format == "json" and self._json_layout == "lines"
                and not pbegin.pipeline.options.view_as(StandardOptions).streaming):
            lines = pbegin | "ReadLines" >> beam.io.ReadFromText(
                self._glob, coder=_LineCoder(), validate=False)
            parsed = lines | "ParseJson" >> beam.ParDo(_ParseJsonLines(self._name)).with_outputs(
                FAILED, main=ROWS)
        else:
            parsed = (
                pbegin
                | "Match" >> fileio.MatchFiles(self._glob)
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


class _LineCoder(StrUtf8Coder):
    """Decodes a line as UTF-8, or leaves it bytes when it is not UTF-8.

    A line that is not UTF-8 so becomes a dead letter (json.loads fails on it) instead of
    failing the whole read as StrUtf8Coder would; other lines cost what they cost with it.
    """

    def to_type_hint(self):
        # Not str: the PCollection's coder (inferred from this hint) must take bytes too.
        return str | bytes

    def encode(self, value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode("utf-8")

    def decode(self, value: bytes) -> str | bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value


def _counter(step: str):
    return Metrics.counter("asa", f"input.{step}.rows")


class _ParseJsonLines(beam.DoFn):
    """One JSON line → a row, or a dead letter. Kept lean: it is the hot path of JSON jobs."""

    def __init__(self, step: str):
        self._step = step
        self._rows = _counter(step)
        self._n = 0

    def start_bundle(self):
        self._n = 0

    def process(self, line: str | bytes):
        try:
            row = _loads(line)
        except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes: rare, off the fast path
            out = _parse_json_line(self._step, line)
            if out and type(out[0]) is dict:
                self._n += 1
            return out
        if type(row) is dict:
            self._n += 1
            return (row,)
        return (_bad_json(self._step, line, f"expected a JSON object, got {_json_kind(row)}"),)

    def finish_bundle(self):
        if self._n:
            self._rows.inc(self._n)
            self._n = 0


def _parse_json_line(step: str, line: str | bytes) -> tuple:
    """One JSON line → ``()`` (blank), ``(row,)``, or ``(dead letter,)``; a leading BOM is dropped."""
    try:
        row = _loads(line)
    except ValueError as e:
        if not line.strip():
            return ()
        if isinstance(line, str) and line.startswith("\ufeff"):  # a BOM opening the file
            return _parse_json_line(step, line[1:])
        return (_bad_json(step, line, f"not valid JSON: {e}"),)
    if type(row) is dict:
        return (row,)
    return (_bad_json(step, line, f"expected a JSON object, got {_json_kind(row)}"),)


def _bad_json(step: str, line: str | bytes, message: str) -> TaggedOutput:
    raw = line if isinstance(line, str) else line.decode("utf-8", "replace")
    return TaggedOutput(FAILED, DeadLetter(step, "malformed_json", message, raw=raw))


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


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
            # Bytes: json.loads decodes UTF-8 (with or without a BOM); other bytes are a dead letter.
            yield from _parse_json_line(self._step, raw.rstrip(b"\r\n"))


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
