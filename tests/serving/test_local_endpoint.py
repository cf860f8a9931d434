"""The real Azure ML inference server with the bundled entry scripts, and `asa-beam serve-model`."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]
pytest.register_assert_rewrite("fixtures_azureml")
from fixtures_azureml import model_cache_dir  # noqa: E402

from pipelines.serving.server import LocalEndpoint, free_port  # noqa: E402

TRIP = {"vendorid": 1, "weekday": "Monday", "pickuphour": 8, "passenger": 1, "distance": 3.2}


def test_records_endpoint(records_endpoint):
    assert requests.get(records_endpoint.base_url + "/", timeout=5).text.strip().strip('"') == "Healthy"
    body = {"Inputs": {"WebServiceInput0": [TRIP, dict(TRIP, distance=10.0)]}, "GlobalParameters": {}}
    out = requests.post(records_endpoint.url, json=body, timeout=10).json()["Results"]["WebServiceOutput0"]
    assert [r["weekday"] for r in out] == ["Monday", "Monday"]
    assert 8 < out[0]["Scored Labels"] < out[1]["Scored Labels"]
    bad = requests.post(records_endpoint.url, json={"Inputs": {"WebServiceInput0": [dict(TRIP, weekday="Caturday")]}},
                        timeout=10)
    assert bad.status_code == 400 and "Caturday" in bad.json()["message"]
    swagger = requests.get(records_endpoint.swagger_url, timeout=5).json()
    assert swagger["swagger"] == "2.0" and "Inputs" in swagger["definitions"]["ServiceInput"]["properties"]


def test_arrays_endpoint(arrays_endpoint):
    out = requests.post(arrays_endpoint.url, json={"data": [["1", "Monday", "8", "1", "3.2"]]}, timeout=10).json()
    assert isinstance(out, list) and len(out) == 1 and 8 < out[0] < 30
    v3 = requests.get(arrays_endpoint.swagger_url + "?version=3", timeout=5).json()
    assert v3["openapi"].startswith("3.")
    assert requests.post(arrays_endpoint.url, json={"data": [[1, 2]]}, timeout=10).status_code == 400


def test_endpoint_binds_loopback_and_stops():
    port = free_port()
    ep = LocalEndpoint(style="arrays", port=port, cache_dir=model_cache_dir())
    with ep:
        pid = ep._proc.pid
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    assert ep._proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_serve_model_command():
    port = free_port()
    env = dict(os.environ, ASA_BEAM_CACHE=model_cache_dir())
    cmd = [sys.executable, "-m", "pipelines.serving.server", "--port", str(port), "--style", "arrays"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(lambda: proc.stdout.readline().decode(
        errors="replace"), "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("Press Ctrl-C" in line for line in list(lines)):
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        assert any("Press Ctrl-C" in line for line in list(lines)), "".join(lines)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        reader.join(timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "".join(lines).encode()
    text = output.decode(errors="replace")
    assert f"http://127.0.0.1:{port}/score" in text and "swagger" in text
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
