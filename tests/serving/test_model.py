"""The bundled taxi-fare data generator and model: deterministic, cached outside the repository."""

from pathlib import Path

import pytest

from pipelines.serving import model as taxi

REPO = Path(__file__).resolve().parents[2]


def test_generator_is_deterministic_and_plausible():
    a, b = taxi.generate_trips(500, seed=3), taxi.generate_trips(500, seed=3)
    assert a == b and a != taxi.generate_trips(500, seed=4)
    for t in a:
        assert t["vendorid"] in (1, 2) and t["weekday"] in taxi.WEEKDAYS
        assert 0 <= t["pickuphour"] <= 23 and 1 <= t["passenger"] <= 6
        assert 0.3 <= t["distance"] <= 40 and t["fare"] >= 3.0
    mean_fare_per_mile = sum(t["fare"] for t in a) / sum(t["distance"] for t in a)
    assert 2.0 < mean_fare_per_mile < 5.0


def test_training_is_deterministic():
    rows = taxi.generate_trips(1500, seed=11)
    probe = [{k: t[k] for k in taxi.FEATURES} for t in taxi.generate_trips(50, seed=12)]
    m1, m2 = taxi.train_model(rows), taxi.train_model(rows)
    assert taxi.predict(m1, probe) == taxi.predict(m2, probe)


def test_model_is_cached_where_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(taxi, "TRAIN_ROWS", 1000)  # a small model: this test is about the cache
    path = taxi.model_path(tmp_path)
    assert not path.exists()
    first = taxi.load_model(tmp_path)
    assert path.exists() and tmp_path in path.parents and REPO not in path.parents
    mtime = path.stat().st_mtime_ns
    second = taxi.load_model(tmp_path)
    assert path.stat().st_mtime_ns == mtime  # loaded, not retrained
    probe = [{k: t[k] for k in taxi.FEATURES} for t in taxi.generate_trips(20, seed=1)]
    assert taxi.predict(first, probe) == taxi.predict(second, probe)
    path.write_bytes(b"garbage")  # a broken cache file is replaced
    taxi.load_model(tmp_path)
    assert path.read_bytes() != b"garbage"


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("ASA_BEAM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert taxi.cache_dir() == tmp_path / "asa-beam"
    monkeypatch.setenv("ASA_BEAM_CACHE", str(tmp_path / "x"))
    assert taxi.cache_dir() == tmp_path / "x"


@pytest.mark.parametrize("row, message", [
    ([1, "Monday", 8, 1], "expected 5 values"),
    ({"vendorid": 1, "weekday": "Monday", "pickuphour": 8, "passenger": 1}, "missing column distance"),
    ({"vendorid": "x", "weekday": "Monday", "pickuphour": 8, "passenger": 1, "distance": 1}, "row 0"),
    ({"vendorid": 1, "weekday": "Funday", "pickuphour": 8, "passenger": 1, "distance": 1}, "unknown weekday"),
    ({"vendorid": 1, "weekday": "Monday", "pickuphour": 24, "passenger": 1, "distance": 1}, "not 0-23"),
    ("text", "expected a record"),
])
def test_clean_record_rejects(row, message):
    with pytest.raises(taxi.InvalidRow, match=message):
        taxi.clean_record(0, row)


def test_clean_record_accepts_strings():
    assert taxi.clean_record(0, ["2", "Friday", "17", "3", "4.5"]) == {
        "vendorid": 2, "weekday": "Friday", "pickuphour": 17, "passenger": 3, "distance": 4.5}


def test_direct_feature_matrix_predicts_exactly_what_the_sklearn_pipeline_predicts():
    # The reference is the fitted sklearn Pipeline itself (DataFrame → ColumnTransformer → regressor).
    import pandas as pd

    model = taxi.train_model(taxi.generate_trips(1500, seed=21))
    rows = [taxi.clean_record(i, {k: t[k] for k in taxi.FEATURES})
            for i, t in enumerate(taxi.generate_trips(3000, seed=22))]
    rows += [dict(rows[0], weekday="Caturday")]  # unknown category: all-zero one-hot, as handle_unknown="ignore"

    def reference(some):
        return [round(float(x), 4) for x in model.predict(pd.DataFrame(some, columns=list(taxi.FEATURES)))]

    assert taxi._direct_regressor(model) is not None  # the fast path is taken for the bundled model
    assert taxi.predict(model, rows) == reference(rows)
    assert taxi.predict(model, rows[:1]) == reference(rows[:1])


def test_other_models_go_through_a_dataframe():
    from sklearn.dummy import DummyRegressor
    from sklearn.pipeline import Pipeline

    frame_model = Pipeline([("gbr", DummyRegressor(strategy="constant", constant=7.5))])
    frame_model.fit([[0.0] * len(taxi.FEATURES)], [7.5])
    assert taxi._direct_regressor(frame_model) is None
