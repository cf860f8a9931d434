"""Azurite, Microsoft's storage emulator, for the tests that need a real blob service.

``pytest_plugins = ["fixtures_azurite"]`` in a test module gives it the fixtures:

- ``azurite`` (module scope): Azurite installed by ``make azurite`` (npm, pinned in
  ``.azurite/package.json``), started on a free loopback port with its own temporary storage and
  always stopped; yields its blob endpoint URL. Skipped only when Node.js/npm are not installed.
- ``blobs``: the test's own container, with Azurite's account key in the environment as a user
  would set it (``AZURE_STORAGE_ACCOUNT``, ``AZURE_STORAGE_KEY``, ``AZURE_STORAGE_BLOB_ENDPOINT``).

``put``/``get_rows`` write and read blobs with Microsoft's own SDK (``azure-storage-blob``),
independent of the Beam filesystem under test.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import pyarrow.parquet as pq
import pytest

from transforms.io import blob as blob_module

REPO = Path(__file__).resolve().parents[1]
AZURITE = REPO / ".azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's documented development account key (public, the same in every Azurite).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
WRONG_KEY = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3Jvbmc="
UTC = dt.timezone.utc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """A running Azurite blob service: yields its blob endpoint URL; stopped afterwards."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js/npm are not installed: the Azurite blob storage tests need them "
                    "(apt-get install nodejs npm, then make azurite)")
    if not AZURITE.exists():
        pytest.fail(f"Azurite is not installed at {AZURITE}: run `make azurite` (make test does)")
    port = _free_port()
    storage = tmp_path_factory.mktemp("azurite")
    log = open(storage / "azurite.log", "wb")  # noqa: SIM115 - closed after the process stops
    proc = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(storage / "data"),
         "--skipApiVersionCheck", "--disableTelemetry", "--loose", "--silent"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"Azurite did not start: {(storage / 'azurite.log').read_text()}") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/{ACCOUNT}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _env(endpoint: str, key: str = KEY) -> dict[str, str]:
    return {blob_module.ACCOUNT: ACCOUNT, blob_module.KEY: key, blob_module.BLOB_ENDPOINT: endpoint,
            blob_module.CONNECTION_STRING: ""}


@pytest.fixture
def blobs(azurite, monkeypatch, request):
    """The test's own container (Azurite's account key in the environment, as a user would set it)."""
    from azure.storage.blob import BlobServiceClient

    for name, value in _env(azurite).items():
        monkeypatch.setenv(name, value)
    service = BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={azurite};")
    name = "t" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[-50:].strip("-")
    container = service.create_container(name)
    yield container
    container.delete_container()


def put(container, name: str, data: bytes) -> dt.datetime:
    """Uploads a blob; returns its last-modified time as the service reports it."""
    container.upload_blob(name, data, overwrite=True)
    return container.get_blob_client(name).get_blob_properties().last_modified.astimezone(UTC)


def get_rows(container, prefix: str, fmt: str) -> list[dict]:
    rows = []
    for b in sorted(container.list_blobs(name_starts_with=prefix), key=lambda b: b.name):
        data = container.download_blob(b.name).readall()
        if b.name.endswith(".gz"):
            data = gzip.decompress(data)
        if fmt == "json":
            rows += [json.loads(x) for x in data.decode().splitlines() if x]
        elif fmt == "csv":
            rows += list(csv.DictReader(io.StringIO(data.decode())))
        elif fmt == "avro":
            rows += list(fastavro.reader(io.BytesIO(data)))
        else:
            rows += pq.read_table(io.BytesIO(data)).to_pylist()
    return rows


def run_cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``asa-beam ARGS`` as a subprocess with ``env`` added to this environment."""
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout, cwd=REPO)
