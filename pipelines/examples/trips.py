"""A deterministic, synthetic NYC-taxi-like trip data set (the examples', tests' and model's data).

Columns: vendorid (bigint 1|2), weekday ("Mon".."Sun"), pickuphour (0..23), passenger (1..6),
distance (miles, float), fare (float, a noisy function of the others). ``dirty`` adds the
kinds of rows real feeds have: malformed JSON lines and distances that are not numbers.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def fare_for(vendorid: int, weekday: str, pickuphour: int, passenger: int, distance: float) -> float:
    """The noiseless fare the synthetic world charges (the model learns to approximate it)."""
    rush = 1.25 if pickuphour in (7, 8, 9, 16, 17, 18) and weekday not in ("Sat", "Sun") else 1.0
    night = 0.5 if pickuphour < 6 or pickuphour >= 22 else 0.0
    return round((2.5 + 2.35 * distance + 0.3 * (passenger - 1) + night + 0.4 * (vendorid == 2)) * rush, 2)


def trips(n: int, seed: int = 7) -> Iterator[dict]:
    rnd = random.Random(seed)
    for i in range(n):
        vendorid = rnd.choice((1, 2))
        weekday = WEEKDAYS[rnd.randrange(7)]
        hour = rnd.randrange(24)
        passenger = rnd.choices((1, 2, 3, 4, 5, 6), weights=(60, 20, 8, 6, 4, 2))[0]
        distance = round(min(rnd.lognormvariate(0.8, 0.8), 40.0), 2)
        fare = round(fare_for(vendorid, weekday, hour, passenger, distance) * rnd.uniform(0.92, 1.08), 2)
        yield {"tripid": i, "vendorid": vendorid, "weekday": weekday, "pickuphour": hour,
               "passenger": passenger, "distance": distance, "fare": fare}


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
