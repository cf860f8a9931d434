"""The bundled model: a taxi-fare regressor on synthetic NYC-taxi-like trips.

``generate_trips`` makes the data (stdlib only, deterministic for a seed); ``load_model`` trains
a scikit-learn pipeline on it at first use and caches it. The cache directory is, in order,
the ``cache_dir`` argument, ``$ASA_BEAM_CACHE``, ``$XDG_CACHE_HOME/asa-beam``, ``~/.cache/asa-beam``
— never the repository.

>>> generate_trips(1, seed=1)[0].keys()
dict_keys(['vendorid', 'weekday', 'pickuphour', 'passenger', 'distance', 'fare'])
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

FEATURES = ("vendorid", "weekday", "pickuphour", "passenger", "distance")
TARGET = "fare"
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MODEL_VERSION = "taxi-fare-v1"
TRAIN_ROWS = 20000
TRAIN_SEED = 20240501


def generate_trips(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` trips: vendorid 1|2, weekday name, pickuphour 0–23, passenger 1–6, distance (miles) → fare ($)."""
    rng = random.Random(seed)
    hours_weights = [2, 1, 1, 1, 1, 2, 4, 7, 9, 8, 7, 7, 8, 8, 8, 9, 10, 11, 12, 11, 9, 7, 5, 3]
    hours = list(range(24))
    trips = []
    for _ in range(n):
        vendor = 1 if rng.random() < 0.45 else 2
        day = rng.randrange(7)
        hour = rng.choices(hours, hours_weights)[0]
        passengers = min(6, 1 + int(rng.expovariate(1.6)))
        distance = round(min(40.0, 0.3 + rng.lognormvariate(0.6, 0.75)), 2)
        trips.append({
            "vendorid": vendor,
            "weekday": WEEKDAYS[day],
            "pickuphour": hour,
            "passenger": passengers,
            "distance": distance,
            "fare": round(fare_of(vendor, day, hour, passengers, distance, rng.gauss(0.0, 1.0)), 2),
        })
    return trips


def fare_of(vendor: int, day: int, hour: int, passengers: int, distance: float, noise: float = 0.0) -> float:
    """The ground truth the data is drawn from (metered fare, surcharges, traffic, tip-free)."""
    rush = 1.0 if (day < 5 and (7 <= hour <= 9 or 16 <= hour <= 19)) else 0.0
    night = 0.5 if (hour >= 20 or hour < 6) else 0.0
    traffic = 1.0 + 0.25 * rush + 0.1 * (day < 5)
    fare = 3.0 + 2.5 * distance * traffic + 1.0 * rush + night + 0.3 * (vendor == 2)
    fare += 0.2 * max(0, passengers - 4) + 0.08 * math.sqrt(distance) * noise * 3
    return max(3.0, fare)


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get("ASA_BEAM_CACHE"):
        return Path(os.environ["ASA_BEAM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "asa-beam"


def model_path(cache: str | os.PathLike | None = None) -> Path:
    import sklearn

    tag = hashlib.sha1(f"{MODEL_VERSION}/{TRAIN_ROWS}/{TRAIN_SEED}/{sklearn.__version__}".encode()).hexdigest()[:10]
    return cache_dir(cache) / "models" / f"{MODEL_VERSION}-{tag}.pkl"


def train_model(rows: list[dict[str, Any]] | None = None, n: int = TRAIN_ROWS, seed: int = TRAIN_SEED):
    """A fitted sklearn Pipeline (one-hot weekday, numeric passthrough, gradient boosting). Deterministic."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rows = rows if rows is not None else generate_trips(n, seed)
    frame = pd.DataFrame(rows)
    prep = ColumnTransformer(
        [("weekday", OneHotEncoder(categories=[list(WEEKDAYS)], handle_unknown="ignore",
                                   sparse_output=False), ["weekday"])],
        remainder="passthrough",
    )
    model = Pipeline([
        ("prep", prep),
        ("gbr", HistGradientBoostingRegressor(max_iter=120, learning_rate=0.1, max_leaf_nodes=31,
                                              early_stopping=False, random_state=0)),
    ])
    model.fit(frame[list(FEATURES)], frame[TARGET])
    return model


def load_model(cache: str | os.PathLike | None = None):
    """The cached model, trained and saved (atomically) at first use."""
    path = model_path(cache)
    if path.exists():
        try:
            with path.open("rb") as f:
                return pickle.load(f)
        except Exception:  # a truncated or foreign file: train again
            pass
    model = train_model()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".model-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return model


def predict(model, rows: list[dict[str, Any]]) -> list[float]:
    """Fares for feature records (the entry scripts' shared path).

    The bundled model gets its feature matrix built directly with numpy — the same float64
    matrix its ColumnTransformer would build (one-hot weekday in ``WEEKDAYS`` order, then the
    other features), so the same predictions — at a fraction of the cost of a DataFrame and
    the transformer per request (the endpoint shares the cores with the pipeline calling it).
    Any other model goes through a DataFrame.
    """
    regressor = _direct_regressor(model)
    if regressor is None:
        import pandas as pd

        frame = pd.DataFrame(rows, columns=list(FEATURES))
        return [round(float(x), 4) for x in model.predict(frame)]
    return [round(float(x), 4) for x in regressor.predict(feature_matrix(rows))]


_PASSTHROUGH = tuple(f for f in FEATURES if f != "weekday")
_MATRIX_COLUMNS = tuple(f"weekday__weekday_{d}" for d in WEEKDAYS) + tuple(f"remainder__{f}" for f in _PASSTHROUGH)
_DAY_INDEX = {d: i for i, d in enumerate(WEEKDAYS)}


def feature_matrix(rows: list[dict[str, Any]]):
    """The model's input matrix for typed feature records: one-hot weekday (all zeros for an
    unknown day, as ``handle_unknown="ignore"``), then vendorid, pickuphour, passenger, distance."""
    import numpy as np

    n = len(rows)
    matrix = np.zeros((n, len(_MATRIX_COLUMNS)), dtype=np.float64)
    if n:
        matrix[:, len(WEEKDAYS):] = np.array([[r[f] for f in _PASSTHROUGH] for r in rows], dtype=np.float64)
        days = [(i, _DAY_INDEX.get(r["weekday"])) for i, r in enumerate(rows)]
        known = [(i, d) for i, d in days if d is not None]
        if known:
            at, day = zip(*known, strict=True)
            matrix[list(at), list(day)] = 1.0
    return matrix


def _direct_regressor(model):
    """The model's final estimator when its preprocessing is exactly the one ``train_model``
    builds (checked once per model object), else None."""
    cached = getattr(model, "_asa_beam_direct", _UNCHECKED)
    if cached is not _UNCHECKED:
        return cached
    regressor = None
    try:
        prep = model.named_steps["prep"]
        onehot = prep.named_transformers_["weekday"]
        if (tuple(prep.get_feature_names_out()) == _MATRIX_COLUMNS
                and [list(c) for c in onehot.categories_] == [list(WEEKDAYS)]
                and onehot.handle_unknown == "ignore" and len(model.steps) == 2):
            regressor = model.steps[-1][1]
    except (AttributeError, KeyError, TypeError, ValueError):
        regressor = None
    try:
        model._asa_beam_direct = regressor
    except AttributeError:
        pass
    return regressor


_UNCHECKED = object()


class InvalidRow(ValueError):
    """A request row the model cannot score; the entry scripts answer 400 with this message."""


def clean_record(i: int, row: Any) -> dict[str, Any]:
    """A request row (record or array of the 5 features) → typed features, or InvalidRow."""
    if isinstance(row, (list, tuple)):
        if len(row) != len(FEATURES):
            raise InvalidRow(f"row {i}: expected {len(FEATURES)} values ({', '.join(FEATURES)}), got {len(row)}")
        row = dict(zip(FEATURES, row, strict=True))
    if not isinstance(row, dict):
        raise InvalidRow(f"row {i}: expected a record or an array, got {type(row).__name__}")
    try:
        out = {
            "vendorid": int(row["vendorid"]),
            "weekday": str(row["weekday"]),
            "pickuphour": int(row["pickuphour"]),
            "passenger": int(row["passenger"]),
            "distance": float(row["distance"]),
        }
    except KeyError as e:
        raise InvalidRow(f"row {i}: missing column {e.args[0]}") from None
    except (TypeError, ValueError) as e:
        raise InvalidRow(f"row {i}: {e}") from None
    if out["weekday"] not in WEEKDAYS:
        raise InvalidRow(f"row {i}: unknown weekday {out['weekday']!r}")
    if not 0 <= out["pickuphour"] <= 23:
        raise InvalidRow(f"row {i}: pickuphour {out['pickuphour']} is not 0-23")
    if not (0 <= out["distance"] < 1000 and math.isfinite(out["distance"])):
        raise InvalidRow(f"row {i}: distance {out['distance']} is out of range")
    return out
