"""The example VS Code ASA project ``pipelines/examples/TaxiScoring``: the ML UDF doc's seed scenario.

A JavaScript UDF (``Functions/createArray.js``) builds the array the model takes, an Azure ML
function (``Functions/score.json``) scores it, and ``test/testConfig.json`` holds two test cases
in the format of Microsoft's ``azure-streamanalytics-cicd test``. Run it against the local
endpoint (``asa-beam serve-model --style arrays --port 5001`` serves the bundled model)::

    asa-beam run pipelines/examples/TaxiScoring --function-endpoint score=http://127.0.0.1:5001/score
    asa-beam test pipelines/examples/TaxiScoring --function-endpoint score=http://127.0.0.1:5001/score

``python -m pipelines.examples.taxi_project`` writes the data files and the expected outputs.
The expected fares are the bundled model's own predictions (``model.predict`` on the trips'
features, as the endpoint's entry script computes them), never asa-beam's output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipelines.examples.trips import trips
from pipelines.serving import model as taxi

PROJECT = Path(__file__).parent / "TaxiScoring"
LONG_TRIP_MILES = 5  # the query's threshold for the longTrips output


def _dump(path: Path, rows: list[dict], lines: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if lines:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


def expected_outputs(rows: list[dict], model=None) -> tuple[list[dict], list[dict]]:
    """(scored, longTrips) as the query defines them, the fares from the model itself."""
    model = model if model is not None else taxi.load_model()
    fares = taxi.predict(model, [{k: r[k] for k in taxi.FEATURES} for r in rows])
    scored = [{"tripid": r["tripid"], "weekday": r["weekday"], "distance": r["distance"], "predictedFare": f}
              for r, f in zip(rows, fares, strict=True)]
    long_trips = [{"tripid": s["tripid"], "predictedFare": s["predictedFare"]} for s in scored
                  if s["distance"] > LONG_TRIP_MILES]
    return scored, long_trips


def generate(project: Path = PROJECT, model=None) -> Path:
    """The local input (a JSON array, as ASA's local-run samples have it) and both test cases."""
    local = [dict(r, fare=None) for r in trips(12, seed=42)]
    for r in local:
        del r["fare"]  # the model predicts it: the live feed has no fare
    _dump(project / "Data" / "trips.json", local)
    weekend = [r for r in (dict(t) for t in trips(60, seed=43)) if r["weekday"] in ("Saturday", "Sunday")][:8]
    for r in weekend:
        del r["fare"]
    _dump(project / "test" / "weekend_trips.json", weekend, lines=True)
    for name, rows in (("all_trips", local), ("weekend", weekend)):
        scored, long_trips = expected_outputs(rows, model)
        _dump(project / "test" / f"{name}_scored.json", scored)
        _dump(project / "test" / f"{name}_longTrips.json", long_trips)
    return project


if __name__ == "__main__":
    print(f"wrote the data and expected outputs of {generate()}")
    sys.exit(0)
