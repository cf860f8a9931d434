"""``asa-beam serve-model``: the real Azure ML inference server scoring the bundled taxi model.

>>> with LocalEndpoint(style="records") as ep:          # doctest: +SKIP
...     requests.post(ep.url, json={"Inputs": {"WebServiceInput0": [...]}}).json()

``LocalEndpoint`` trains (or loads) the model first, starts ``azmlinfsrv`` in a child process on
a free loopback port, waits until it answers ``GET /`` with "Healthy", and stops it on exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from pipelines.serving import model as taxi

STYLES = {"records": "score_records.py", "arrays": "score_arrays.py"}
_HERE = Path(__file__).resolve().parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EndpointStartError(RuntimeError):
    """The inference server did not come up; the message carries the end of its log."""


class LocalEndpoint:
    """The Azure ML inference server on ``host:port`` with one of the bundled entry scripts.

    ``url`` is the scoring URL, ``swagger_url`` the generated swagger (2.0; add ``?version=3``
    for OpenAPI 3). ``log`` is where the server's output goes: None (a temporary file, shown
    if it fails to start), a path, or ``"-"`` (this process's stdout/stderr).
    """

    def __init__(self, style: str = "records", port: int | None = None, host: str = "127.0.0.1",
                 cache_dir: str | os.PathLike | None = None, workers: int = 1, startup_timeout: float = 90.0,
                 log: str | os.PathLike | None = None, quiet: bool = True):
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
        self.style = style
        self.host = host
        self.port = port
        self.cache_dir = cache_dir
        self.workers = workers
        self.startup_timeout = startup_timeout
        self.quiet = quiet
        self._log_path = Path(log) if log else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/score"

    @property
    def swagger_url(self) -> str:
        return f"{self.base_url}/swagger.json"

    def start(self) -> LocalEndpoint:
        taxi.load_model(self.cache_dir)  # train once here, so the server's init() only loads
        if self.port is None:
            self.port = free_port(self.host)
        self._tmp = tempfile.TemporaryDirectory(prefix="asa-beam-serve-")
        app_root = Path(self._tmp.name)  # empty: no stray swagger.json/config.json is picked up
        env = dict(os.environ)
        env.update({
            "ASA_BEAM_SERVE_HOST": self.host,
            "AML_APP_ROOT": str(app_root),
            "AZUREML_MODEL_DIR": str(taxi.cache_dir(self.cache_dir)),
            "ASA_BEAM_CACHE": str(taxi.cache_dir(self.cache_dir)),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_HERE.parent.parent), env.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
            "AZUREML_LOG_LEVEL": "WARNING" if self.quiet else "INFO",
            "SERVICE_NAME": f"asa-beam taxi fare ({self.style})",
        })
        # One thread per worker: OpenMP's spinning threads (scikit-learn's gradient boosting) slow
        # a request ~40x when another process keeps a core busy — e.g. the pipeline calling it.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        cmd = [sys.executable, "-m", "pipelines.serving._launch", "--entry_script", str(_HERE / STYLES[self.style]),
               "--port", str(self.port), "--worker_count", str(self.workers)]
        inherit = self._log_path is not None and str(self._log_path) == "-"
        log_path = app_root / "server.log" if (inherit or self._log_path is None) else self._log_path
        self._log_file = None if inherit else open(log_path, "ab")
        self._proc = subprocess.Popen(cmd, env=env, cwd=app_root, stdout=self._log_file,
                                      stderr=None if inherit else subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            self._wait_healthy(log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, log_path: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with requests.Session() as s:
            s.trust_env = False
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise EndpointStartError(
                        f"azmlinfsrv exited with code {self._proc.returncode}:\n{_tail(log_path)}")
                try:
                    r = s.get(self.base_url + "/", timeout=2)
                    if r.status_code == 200 and s.get(self.swagger_url, timeout=5).status_code == 200:
                        return
                except requests.RequestException:
                    pass
                time.sleep(0.1)
        raise EndpointStartError(f"azmlinfsrv did not become healthy within {self.startup_timeout:g} s:\n"
                                 f"{_tail(log_path)}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # gunicorn's master stops its workers on SIGTERM
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the group this endpoint started
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def wait(self) -> int:
        """Block until the server exits (``serve-model`` in the foreground)."""
        return self._proc.wait() if self._proc is not None else 0

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Linux: the server gets SIGTERM if the process that started it dies without stopping it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    """``asa-beam serve-model [--port N] [--style records|arrays]``: serve until Ctrl-C, SIGINT or SIGTERM
    (exit 0 after stopping the server; see ``pipelines.signals`` for the background case)."""
    parser = argparse.ArgumentParser(
        prog="asa-beam serve-model",
        description="Serve the bundled taxi-fare model with the Azure ML inference server.")
    parser.add_argument("--port", type=int, default=5001, help="port to listen on (default 5001; 0 = any free port)")
    parser.add_argument("--style", choices=sorted(STYLES), default="records",
                        help="records: designer Inputs/WebServiceInput0 → Results/WebServiceOutput0 (default); "
                             "arrays: inference-schema data → list")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument("--cache-dir", default=None, help="where the trained model is cached "
                                                          "(default $ASA_BEAM_CACHE or ~/.cache/asa-beam)")
    args = parser.parse_args(argv)
    from pipelines.signals import interruptible

    with interruptible():  # Ctrl-C, kill -INT (even when started with SIGINT ignored) and SIGTERM stop it
        return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    print(f"Preparing the taxi-fare model (cache: {taxi.model_path(args.cache_dir)}) ...", flush=True)
    endpoint = LocalEndpoint(style=args.style, port=args.port or None, host=args.host, cache_dir=args.cache_dir,
                             workers=args.workers, log="-", quiet=False)
    try:
        endpoint.start()
    except EndpointStartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        endpoint.stop()
        print("Stopped before the server was ready.", flush=True)
        return 130
    print(f"Serving the taxi-fare model ({args.style} style)\n"
          f"  scoring URL: {endpoint.url}\n  swagger:     {endpoint.swagger_url}\n"
          f"Job file:\n  functions:\n    score:\n      type: azureml\n      endpoint: {endpoint.url}\n"
          "Press Ctrl-C to stop.", flush=True)
    try:
        code = endpoint.wait()
        print(f"The inference server exited by itself with code {code}.", file=sys.stderr, flush=True)
        return code
    except KeyboardInterrupt:
        endpoint.stop()
        print(f"Stopped the inference server on {endpoint.base_url}.", flush=True)
        return 0
    finally:
        endpoint.stop()


if __name__ == "__main__":
    sys.exit(main())
