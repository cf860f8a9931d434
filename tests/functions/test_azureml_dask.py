"""On Beam's DaskRunner (no user state or timers) ScoreRows batches within bundles, losing nothing.

Beam 2.77's DaskRunner computes only the branch that ends in the pipeline's last transform, so
these pipelines are linear (rows → ScoreRows → "rows" → sink). Skipped without ``apache-beam[dask]``.
"""

import json
import logging
import os
import sys
import uuid
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

pytest.importorskip("dask.distributed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]

from pipelines.serving.fake import swagger_for  # noqa: E402
from transforms.functions.azureml import AzureMLConfig, AzureMLFunction, ScoreRows  # noqa: E402


class _FileSink(beam.DoFn):
    """Dask runs DoFns in worker processes: results travel back through files."""

    def __init__(self, directory: str):
        self._dir = directory

    def setup(self):
        self._file = open(os.path.join(self._dir, uuid.uuid4().hex), "a")

    def process(self, row):
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def teardown(self):
        self._file.close()


def test_dask_runner_falls_back_to_bundle_batches(fake_endpoint, tmp_path, caplog):
    from apache_beam.runners.dask.dask_runner import DaskRunner

    ep = fake_endpoint()
    fn = AzureMLFunction("score", AzureMLConfig(endpoint=ep.url, swagger=swagger_for("arrays"), batch_size=50))
    data = [{"id": i, "x": i * 0.5 if i % 100 else None} for i in range(1000)]
    p = beam.Pipeline(runner=DaskRunner(), options=PipelineOptions(["--dask_n_workers", "1"]))
    with caplog.at_level(logging.WARNING):
        out = p | beam.Create(data) | ScoreRows(fn, argument=lambda r: [r["id"], r["x"]], column="s")
    assert "DaskRunner has no user state and timers" in caplog.text
    out["rows"] | beam.ParDo(_FileSink(str(tmp_path)))
    result = p.run()
    try:
        result.wait_until_finish()
    finally:
        result.client.close()
    rows = [json.loads(line) for f in tmp_path.iterdir() for line in f.open()]
    assert sorted(r["id"] for r in rows) == [i for i in range(1000) if i % 100]  # NULL inputs: dead letter
    assert all(r["s"] == r["id"] + r["x"] for r in rows)
    assert all(r.rows <= 50 for r in ep.log) and sum(r.rows for r in ep.log) == 990
