"""A small Azure-ML-like endpoint with scripted faults, for tests and benchmarks (stdlib only).

It serves a swagger like the inference server's (``GET /swagger.json``) and scores rows with a
Python function; faults are queued with ``plan`` and consumed by the next scoring requests::

    with FakeEndpoint(style="arrays") as ep:
        ep.plan(Fault(status=503, count=2), Fault(status=429, retry_after="3"), Fault(drop=True))
        ...  # POST ep.url {"data": [[1, 2.5], ...]} → [3.5, ...]
        ep.log  # one RequestRecord per scoring request

Styles: ``arrays`` (``{"data": [[id, x], ...]}`` → ``[id + x, ...]``) and ``records``
(designer ``Inputs.WebServiceInput0`` of ``{"id", "x"}`` → ``Results.WebServiceOutput0`` of
``{"id", "Scored Labels": id + x}``). ``poison(row) -> bool`` rows make the whole request fail
with 400 naming the row, like a model rejecting bad input (``poison_rate(r)`` picks a fraction
``r`` of the rows by a hash of their id).

Beyond scripted faults: ``error_rate`` answers that fraction of requests at random with one of
``error_statuses`` (429 with ``Retry-After``); ``outage(refuse_s, unavailable_s)`` takes the
endpoint fully down — the port refuses connections and open connections are dropped — for
``refuse_s``, then answers 503 for ``unavailable_s`` (a restarting server), then recovers;
``outage_after(n, ...)`` starts that outage at the ``n``-th scoring request, in the middle of a job.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple


@dataclass(frozen=True)
class Fault:
    """What the next ``count`` scoring requests get instead of a normal answer.

    ``status`` (with ``body`` and ``retry_after``), ``delay`` seconds before answering normally
    (or with ``status``), or ``drop`` (close the connection without answering).
    """

    status: int | None = None
    count: int = 1
    retry_after: str | None = None
    delay: float = 0.0
    drop: bool = False
    body: Any = None


class RequestRecord(NamedTuple):
    start: float  # time.monotonic()
    end: float
    rows: int
    status: int | None  # None: dropped


def _sum_numbers(row) -> float:
    values = row.values() if isinstance(row, dict) else row
    return float(sum(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)))


def poison_rate(rate: float) -> Callable[[Any], bool]:
    """A poison predicate rejecting about ``rate`` of the rows, chosen by a hash of the row's id
    (first array item or ``id`` field): the same rows on every run and in every process."""
    threshold = int(rate * 2**32)

    def poison(row: Any) -> bool:
        key = row.get("id") if isinstance(row, dict) else (row[0] if row else 0)
        try:
            n = int(key)
        except (TypeError, ValueError):
            return False
        return (n * 2654435761 + 97) % 2**32 < threshold

    return poison


def default_score(style: str) -> Callable[[Any], Any]:
    if style == "records":
        return lambda row: {"id": row.get("id"), "Scored Labels": _sum_numbers(row)}
    return _sum_numbers


def echo_score(row: Any) -> Any:
    """A designer endpoint's answer: the input record echoed, plus ``Scored Labels``."""
    return {**row, "Scored Labels": _sum_numbers(row)}


def swagger_for(style: str, version: int = 2) -> dict:
    """The swagger an inference-schema entry script for this style would produce."""
    if style == "records":
        row = {"type": "object", "required": ["id", "x"],
               "properties": {"id": {"type": "integer", "format": "int64"},
                              "x": {"type": "number", "format": "double"}}}
        out_row = {"type": "object", "properties": {"id": {"type": "integer", "format": "int64"},
                                                    "Scored Labels": {"type": "number", "format": "double"}}}
        service_input = {
            "type": "object",
            "properties": {
                "Inputs": {"type": "object", "required": ["WebServiceInput0"],
                           "properties": {"WebServiceInput0": {"type": "array", "items": row,
                                                               "format": "pandas.DataFrame:records"}}},
                "GlobalParameters": {"type": "object", "required": [], "properties": {}},
            },
            "example": {"Inputs": {"WebServiceInput0": [{"id": 1, "x": 2.5}]}, "GlobalParameters": {}},
        }
        service_output = {"type": "object", "required": ["Results"], "properties": {"Results": {
            "type": "object", "required": ["WebServiceOutput0"], "properties": {"WebServiceOutput0": {
                "type": "array", "items": out_row, "format": "pandas.DataFrame:records"}}}}}
    else:
        service_input = {"type": "object", "properties": {"data": {
            "type": "array", "items": {"type": "array", "items": {"type": "number", "format": "double"}},
            "format": "numpy.ndarray"}}, "example": {"data": [[1.0, 2.5]]}}
        service_output = {"type": "array", "items": {"type": "number", "format": "double"},
                          "format": "numpy.ndarray", "example": [3.5]}
    if version == 3:
        ref = "#/components/schemas/"
        return {
            "openapi": "3.0.3", "info": {"title": f"fake {style}", "version": "1.0"},
            "paths": {"/score": {"post": {
                "requestBody": {"content": {"application/json": {"schema": {"$ref": ref + "ServiceInput"}}}},
                "responses": {"200": {"description": "ok", "content": {"application/json": {
                    "schema": {"$ref": ref + "ServiceOutput"}}}}}}}},
            "components": {"schemas": {"ServiceInput": service_input, "ServiceOutput": service_output}},
        }
    ref = "#/definitions/"
    return {
        "swagger": "2.0", "info": {"title": f"fake {style}", "version": "1.0"},
        "schemes": ["http"], "consumes": ["application/json"], "produces": ["application/json"],
        "securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}},
        "paths": {
            "/": {"get": {"operationId": "ServiceHealthCheck", "responses": {"200": {"description": "ok"}}}},
            "/score": {"post": {
                "operationId": "RunMLService", "security": [{"Bearer": []}],
                "parameters": [{"name": "serviceInputPayload", "in": "body", "schema": {"$ref": ref + "ServiceInput"}}],
                "responses": {"200": {"description": "ok", "schema": {"$ref": ref + "ServiceOutput"}},
                              "default": {"description": "error", "schema": {"$ref": ref + "ErrorResponse"}}}}},
        },
        "definitions": {
            "ServiceInput": service_input, "ServiceOutput": service_output,
            "ErrorResponse": {"type": "object", "properties": {"status_code": {"type": "integer"},
                                                               "message": {"type": "string"}}},
        },
    }


class FakeEndpoint:
    """A threaded loopback HTTP server that behaves like an Azure ML scoring endpoint.

    Each scoring request takes ``latency_s + latency_per_row_s * rows`` (simulated work).
    ``key``: requests without ``Authorization: Bearer <key>`` get 401 (``echo_auth`` puts the
    header it received in the 401 message, as a careless endpoint might).
    """

    def __init__(self, style: str = "arrays", *, latency_s: float = 0.0, latency_per_row_s: float = 0.0,
                 key: str | None = None,
                 echo_auth: bool = False, poison: Callable[[Any], bool] | None = None,
                 score: Callable[[Any], Any] | None = None, host: str = "127.0.0.1", port: int = 0,
                 error_rate: float = 0.0, error_statuses: tuple[int, ...] = (503, 429),
                 error_retry_after: str | None = "0.2", seed: int = 7):
        if style not in ("arrays", "records"):
            raise ValueError("style must be 'arrays' or 'records'")
        self.style = style
        self.latency_s = latency_s
        self.latency_per_row_s = latency_per_row_s
        self.key = key
        self.echo_auth = echo_auth
        self.poison = poison
        self.score = score or default_score(style)
        self._host, self._port = host, port
        self.error_rate = error_rate
        self.error_statuses = error_statuses
        self.error_retry_after = error_retry_after
        self._rng = random.Random(seed)
        self._refuse_until = 0.0  # time.monotonic(): connections refused / dropped until then
        self._unavailable_until = 0.0  # ... then 503 until then
        self._outage_at: tuple[int, float, float] | None = None
        self._scoring_requests = 0
        self._faults: deque[list] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.log: list[RequestRecord] = []
        self.active = 0
        self.max_active = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def url(self) -> str:
        return self.base_url + "/score"

    @property
    def swagger_url(self) -> str:
        return self.base_url + "/swagger.json"

    def plan(self, *faults: Fault) -> None:
        """Queue faults for the next scoring requests, in order."""
        with self._lock:
            for f in faults:
                self._faults.append([f, f.count])

    def outage(self, refuse_s: float, unavailable_s: float = 0.0) -> None:
        """Go fully down now: refuse connections for ``refuse_s``, then answer 503 for ``unavailable_s``."""
        now = time.monotonic()
        with self._lock:
            self._refuse_until = now + refuse_s
            self._unavailable_until = now + refuse_s + unavailable_s
        if refuse_s > 0:
            threading.Thread(target=self._refuse_for, args=(refuse_s,), name="fake-aml-outage", daemon=True).start()

    def outage_after(self, requests: int, refuse_s: float, unavailable_s: float = 0.0) -> None:
        """Start ``outage(refuse_s, unavailable_s)`` when the ``requests``-th scoring request arrives."""
        with self._lock:
            self._outage_at = (requests, refuse_s, unavailable_s)

    def _refuse_for(self, seconds: float) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        port = server.server_address[1]
        server.shutdown()  # the listening socket closes: new connections are refused
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        if self._stopping.wait(seconds):
            return
        self._port = port  # the same port, as a restarted endpoint behind the same URL
        self._serve()

    def _state(self) -> str:
        """"refuse", "unavailable" or "up" (and starts a planned outage)."""
        start = None
        with self._lock:
            self._scoring_requests += 1
            if self._outage_at is not None and self._scoring_requests >= self._outage_at[0]:
                start, self._outage_at = self._outage_at, None
        if start is not None:
            self.outage(start[1], start[2])
        now = time.monotonic()
        if now < self._refuse_until:
            return "refuse"
        if now < self._unavailable_until:
            return "unavailable"
        return "up"

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.log = []
            self.max_active = 0

    @property
    def rows_scored(self) -> int:
        return sum(r.rows for r in self.log if r.status == 200)

    def stats(self) -> dict:
        """Summary of the request log (``GET /stats``; ``POST /stats/reset`` clears it)."""
        with self._lock:
            log = list(self.log)
        ok = [r for r in log if r.status == 200]
        span = (max(r.end for r in ok) - min(r.start for r in ok)) if ok else 0.0
        return {"requests": len(log), "rows_sent": sum(r.rows for r in log),
                "rows_scored": sum(r.rows for r in ok), "seconds": span,
                "max_active": self.max_active,
                "rows_per_s": (sum(r.rows for r in ok) / span) if span > 0 else 0.0}

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            entry = self._faults[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self._faults.popleft()
            return entry[0]

    def start(self) -> FakeEndpoint:
        self._serve()
        return self

    def _serve(self) -> None:
        endpoint = self

        class Handler(_Handler):
            ep = endpoint

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._port = self._server.server_address[1]
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-aml-endpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeEndpoint:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- scoring -------------------------------------------------------------------------------

    def rows_of(self, body: Any) -> list | None:
        if self.style == "records":
            rows = body.get("Inputs", {}).get("WebServiceInput0") if isinstance(body, dict) else None
        else:
            rows = body.get("data") if isinstance(body, dict) else None
        return rows if isinstance(rows, list) else None

    def answer(self, rows: list) -> Any:
        results = [self.score(r) for r in rows]
        if self.style == "records":
            return {"Results": {"WebServiceOutput0": results}}
        return results


class _Handler(BaseHTTPRequestHandler):
    ep: FakeEndpoint
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # headers and body are separate writes: without NODELAY, Nagle + delayed ACK add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass

    def do_GET(self):
        if self.path == "/":
            self._send(200, b"Healthy")
        elif self.path == "/stats":
            self._send(200, self.ep.stats())
        elif self.path.startswith("/swagger.json"):
            self._send(200, swagger_for(self.ep.style, 3 if "version=3" in self.path else 2))
        else:
            self._send(404, {"message": f"no route {self.path}"})

    def do_POST(self):
        ep = self.ep
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path == "/stats/reset":
            ep.clear()
            self._send(200, {})
            return
        if self.path.split("?")[0] != "/score":
            self._send(404, {"message": f"no route {self.path}"})
            return
        state = ep._state()
        if state == "refuse":  # fully down: the connection dies without an answer
            self._drop_connection()
            return
        if state == "unavailable":
            self._send(503, {"message": "the endpoint is restarting"})
            return
        start = time.monotonic()
        with ep._lock:
            ep.active += 1
            ep.max_active = max(ep.max_active, ep.active)
        rows: list | None = None
        reply: tuple[int, Any, dict] | None = None  # None: drop the connection
        try:
            reply, rows = self._decide(raw)
        finally:
            # logged before the answer leaves, so a client that has its answer sees it logged
            with ep._lock:
                ep.active -= 1
                ep.log.append(RequestRecord(start, time.monotonic(), len(rows or []),
                                            reply[0] if reply is not None else None))
        if reply is None:
            self._drop_connection()
            return
        self._send(*reply)

    def _drop_connection(self) -> None:
        """Close the connection without an answer (the client sees it reset or closed)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _decide(self, raw: bytes) -> tuple[tuple[int, Any, dict] | None, list | None]:
        ep = self.ep
        auth = self.headers.get("Authorization")
        if ep.key is not None and auth != f"Bearer {ep.key}":
            detail = f"invalid key in {auth!r}" if ep.echo_auth else "missing or invalid key"
            return (401, {"message": detail}, {}), None
        try:
            body = json.loads(raw)
        except ValueError:
            return (400, {"message": "body is not JSON"}, {}), None
        rows = ep.rows_of(body)
        if rows is None:
            return (400, {"message": "no rows where the swagger says"}, {}), None
        fault = ep._next_fault()
        if fault is not None and fault.delay:
            ep._stopping.wait(fault.delay)
        if fault is not None and fault.drop:
            return None, rows
        if ep.latency_s or ep.latency_per_row_s:
            ep._stopping.wait(ep.latency_s + ep.latency_per_row_s * len(rows))
        if fault is None and ep.error_rate > 0:
            with ep._lock:
                hit = ep._rng.random() < ep.error_rate
                status = ep._rng.choice(ep.error_statuses)
            if hit:
                headers = {"Retry-After": ep.error_retry_after} if status == 429 and ep.error_retry_after else {}
                return (status, {"message": f"injected random {status}"}, headers), rows
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            body = fault.body if fault.body is not None else {"message": f"injected {fault.status}"}
            return (fault.status, body, headers), rows
        if ep.poison is not None:
            for i, row in enumerate(rows):
                if ep.poison(row):
                    return (400, {"message": f"row {i}: the model cannot score {row!r}"}, {}), rows
        return (200, ep.answer(rows), {}), rows


class FakeEndpointProcess:
    """A FakeEndpoint in a child process (no GIL shared with the caller), e.g. for benchmarks."""

    def __init__(self, style: str = "arrays", latency_s: float = 0.0, latency_per_row_s: float = 0.0,
                 poison_rate: float = 0.0, echo: bool = False):
        self.style, self.latency_s, self.latency_per_row_s = style, latency_s, latency_per_row_s
        self.poison_rate = poison_rate
        self.echo = echo  # records: answer each row with the row echoed plus "Scored Labels" (echo_score)
        self._proc = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + "/score"

    @property
    def swagger_url(self) -> str:
        return self.base_url + "/swagger.json"

    def stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.base_url + "/stats", timeout=10) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(self.base_url + "/stats/reset", data=b"{}"), timeout=10).read()

    def __enter__(self) -> FakeEndpointProcess:
        import subprocess
        import sys
        import urllib.request

        from pipelines.serving.server import _die_with_parent, free_port

        self.port = free_port()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.serving.fake", "--port", str(self.port), "--style", self.style,
             "--latency", str(self.latency_s), "--latency-per-row", str(self.latency_per_row_s),
             "--poison-rate", str(self.poison_rate)] + (["--echo"] if self.echo else []),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.base_url + "/", timeout=1).read()
                return self
            except OSError:
                if self._proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("the fake endpoint process did not start")

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except Exception:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="A fake Azure ML endpoint (for benchmarks).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--style", choices=("arrays", "records"), default="arrays")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--latency-per-row", type=float, default=0.0, help="seconds per row")
    parser.add_argument("--poison-rate", type=float, default=0.0, help="fraction of rows answered with 400")
    parser.add_argument("--echo", action="store_true", help="records: echo each row plus Scored Labels")
    args = parser.parse_args(argv)
    ep = FakeEndpoint(args.style, latency_s=args.latency, latency_per_row_s=args.latency_per_row, port=args.port,
                      poison=poison_rate(args.poison_rate) if args.poison_rate > 0 else None,
                      score=echo_score if args.echo and args.style == "records" else None)
    ep.start()
    try:
        ep._thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        ep.stop()


if __name__ == "__main__":
    main()
