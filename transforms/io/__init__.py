"""File I/O: input files → rows (``ReadRows``), rows → output files (``WriteRows``), and dead
letters → files (``WriteDeadLetters``), in JSON lines, CSV, Avro and Parquet. Streaming inputs
are watched globs (``Watch``, ``WatchFiles``)."""

from transforms.io.formats import FORMATS, format_from_path
from transforms.io.readers import ReadRows
from transforms.io.watch import Watch, WatchFiles
from transforms.io.writers import WriteDeadLetters, WriteRows

__all__ = ["FORMATS", "ReadRows", "Watch", "WatchFiles", "WriteDeadLetters", "WriteRows", "format_from_path"]
