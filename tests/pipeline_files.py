"""Helpers for tests that run pipelines writing files: collect elements, read outputs, counters."""

from __future__ import annotations

import csv
import glob
import json
import os
import pickle
from pathlib import Path

import fastavro
import pyarrow.parquet as pq
from apache_beam.metrics.metric import MetricsFilter


def collect(element, path: str) -> None:
    """Appends an element to a file: the pipeline's functions are pickled, so a list would be copied."""
    with open(path, "ab") as f:
        pickle.dump(element, f)


def collected(path: str) -> list:
    out = []
    if os.path.exists(path):
        with open(path, "rb") as f:
            while True:
                try:
                    out.append(pickle.load(f))
                except EOFError:
                    return out
    return out


def counter(result, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_namespace("asa").with_name(name))["counters"]
    return sum(c.committed for c in found)


def read_output(prefix: Path, fmt: str) -> list[dict]:
    rows = []
    for name in sorted(glob.glob(f"{prefix}-*")):
        if fmt == "json":
            rows += [json.loads(line) for line in Path(name).read_text().splitlines() if line]
        elif fmt == "csv":
            with open(name, newline="") as f:
                rows += list(csv.DictReader(f))
        elif fmt == "avro":
            with open(name, "rb") as f:
                rows += list(fastavro.reader(f))
        else:
            rows += pq.read_table(name).to_pylist()
    return rows


def write_streaming_job(tmp_path: Path, query: str, late_arrival_seconds: int) -> Path:
    """A streaming job file over ``in/*.json`` (created) with the outputs ``counts`` (JSON) and
    ``expensive`` (CSV) that the streaming end-to-end tests read."""
    (tmp_path / "in").mkdir()
    job = tmp_path / "job.yaml"
    job.write_text(
        "query: |\n  " + query.strip().replace("\n", "\n  ") + "\n"
        "inputs:\n  trips: {path: in/*.json}\n"
        "outputs:\n  counts: {path: out/counts, format: json}\n  expensive: {path: out/expensive, format: csv}\n"
        f"event_ordering: {{late_arrival_seconds: {late_arrival_seconds}, out_of_order_seconds: 0}}\n")
    return job
