"""JSON files that are not JSON lines: one array of objects, or objects one after another.

ASA's local runs and test tool take a local input file as a JSON array (``[{...}, {...}]``),
as newline-separated objects, or as objects concatenated with no separator (``{...}{...}``,
what an Event Hub capture dump looks like). ``ReadRows(..., json_layout="auto")`` reads any
of these with ``ReadJsonDocumentsFile``; each file is read whole (local input files are small),
so it is not the reader for big JSON lines files, which split across workers.

A value that is not an object, an object nested deeper than ``jsoncodec.MAX_DEPTH``, and text
that is not JSON up to the end of its line become ``malformed_json`` dead letters and the
reading goes on after them, as for JSON lines (``NaN``, ``Infinity``, ``1e999`` are floats;
bytes that are not UTF-8 become U+FFFD).

>>> list(iter_documents('[{"a": 1}, {"a": 2}]'))
[(True, {'a': 1}), (True, {'a': 2})]
>>> list(iter_documents('{"a": 1}{"a": 2}\\n\\n{"a":\\n 3}'))
[(True, {'a': 1}), (True, {'a': 2}), (True, {'a': 3})]
>>> [ok for ok, _ in iter_documents('{"a": 1}\\nnot json\\n{"a": 2}')]
[True, False, True]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from apache_beam.pvalue import TaggedOutput

from transforms.deadletter import FAILED, DeadLetter
from transforms.io.jsoncodec import _TOO_DEEP, _json_kind, _no_lone_surrogates, too_deep
from transforms.io.readers import _FileReader  # readers imports this module lazily

_DECODER = json.JSONDecoder()
_SPACE = " \t\r\n\ufeff"


def iter_documents(text: str) -> Iterator[tuple[bool, Any]]:
    """``(True, value)`` for each top-level value (an array's items when the text is one array);
    ``(False, (raw, message))`` for text that does not parse (skipped up to the end of its line)."""
    pos, end = 0, len(text)
    first = True
    while True:
        while pos < end and text[pos] in _SPACE:
            pos += 1
        if pos >= end:
            return
        try:
            value, after = _DECODER.raw_decode(text, pos)
        except RecursionError:  # nested beyond Python's stack: a dead letter, as jsoncodec's rule
            stop = text.find("\n", pos)
            stop = end if stop < 0 else stop
            yield False, (text[pos:stop].strip()[:1000], _TOO_DEEP)
            pos, first = stop, False
            continue
        except json.JSONDecodeError as e:
            # Resume at the next line: one bad line of a JSON lines file costs that line only.
            stop = text.find("\n", pos)
            stop = end if stop < 0 else stop
            yield False, (text[pos:stop].strip(), f"not valid JSON: {e.msg} (character {e.pos + 1})")
            pos, first = stop, False
            continue
        if first and isinstance(value, list) and not text[after:].strip(_SPACE):
            for item in value:  # the whole file is one array: its items are the rows
                yield True, item
            return
        yield True, value
        pos, first = after, False



class ReadJsonDocumentsFile(_FileReader):
    """One whole JSON file → rows (array items / concatenated or newline-separated objects)."""

    reason = "malformed_json"

    def read(self, stream, path):
        text = stream.read().decode("utf-8-sig", errors="replace")
        for ok, value in iter_documents(text):
            if ok and type(value) is dict and too_deep(value):
                yield TaggedOutput(FAILED, DeadLetter(self._step, self.reason, f"{path}: {_TOO_DEEP}"))
            elif ok and type(value) is dict:
                yield _no_lone_surrogates(value)  # the rules of JSON lines (jsoncodec)
            elif ok:
                yield TaggedOutput(FAILED, DeadLetter(
                    self._step, self.reason, f"{path}: expected a JSON object, got {_json_kind(value)}",
                    raw=json.dumps(value)))
            else:
                raw, message = value
                yield TaggedOutput(FAILED, DeadLetter(self._step, self.reason, f"{path}: {message}", raw=raw))
