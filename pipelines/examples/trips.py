"""The examples' trip files: the bundled model's synthetic NYC-taxi-like trips, as JSON lines.

Columns: tripid, vendorid (1|2), weekday ("Monday".."Sunday"), pickuphour (0..23), passenger
(1..6), distance (miles), fare. ``dirty`` adds the kinds of rows real feeds have: malformed
JSON lines and distances that are not numbers.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from pipelines.serving.model import generate_trips


def trips(n: int, seed: int = 7) -> Iterator[dict]:
    """``n`` trips with a ``tripid``: the bundled model's own data generator (stdlib only)."""
    for i, row in enumerate(generate_trips(n, seed)):
        yield {"tripid": i, **row}


def write_trips(path: str | Path, n: int, seed: int = 7, dirty: bool = False) -> Path:
    """Write ``n`` trips as JSON lines (gzip if the name ends in .gz); returns the path.

    With ``dirty``, about 1 line in 97 is malformed JSON and 1 row in 53 has distance "n/a".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for row in trips(n, seed):
            i = row["tripid"]
            if dirty and i % 97 == 13:
                f.write(f'{{"tripid": {i}, "vendorid": 1, "weekday": "Mon", "distance": \n')
                continue
            if dirty and i % 53 == 7:
                row["distance"] = "n/a"
            f.write(json.dumps(row) + "\n")
    return path
