"""Azure ML endpoints as ``udf.<alias>(x)``: ASA's "Azure Machine Learning Service" functions.

Job file::

    functions:
      score:
        type: azureml
        endpoint: http://127.0.0.1:5001/score
        swagger: http://127.0.0.1:5001/swagger.json  # optional; default: swagger.json beside the endpoint
        key_env: SCORE_KEY          # optional: variable holding the key ("Authorization: Bearer <key>")
        batch_size: 1000            # ASA "max batch count", 1..10000
        parallel_requests: 1        # ASA "number of parallel requests per partition"
        request_timeout_s: 100      # per request (ASA's documented Azure ML timeout)
        max_buffering_s: 1.0        # streaming: a partial batch waits at most this long
        retry_deadline_s: 1800      # transient failures are retried this long per batch (-1: forever;
                                    # default: 1800 in batch, forever in streaming)
        max_attempts: 0             # optional cap on tries per batch (0: none)
        http_client: process        # process: HTTP in a small child process (off the GIL); thread

Python::

    fn = AzureMLFunction("score", AzureMLConfig(endpoint="http://127.0.0.1:5001/score"))
    out = rows | ScoreRows(fn, argument=lambda r: r["features"], column="prediction")
    out["rows"], out["failed"]

The signature (request envelope, row shape and types, where results are) comes from the
endpoint's swagger when the pipeline is built (``swagger.py``); the HTTP status policy lives in
``client.py``; batching, overlap and poison-row isolation in ``scoring.py``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from transforms.errors import EndpointConfigError, FunctionConfigError
from transforms.functions.azureml.client import (
    Action,
    CallResult,
    CallStats,
    RetryPolicy,
    ScoringClient,
    Timing,
    classify,
)
from transforms.functions.azureml.scoring import (
    BUNDLE,
    STATEFUL,
    ScoreBatchesDoFn,
    ScoreRows,
    metric_names,
)
from transforms.functions.azureml.swagger import (
    SwaggerError,
    SwaggerSignature,
    _safe_url,
    default_swagger_url,
    load_swagger_document,
    parse_swagger,
)
from transforms.functions.base import AsaFunction, CallSite

__all__ = [
    "Action", "AzureMLConfig", "AzureMLFunction", "CallResult", "CallStats", "RetryPolicy",
    "ScoreBatchesDoFn", "ScoreRows", "ScoringClient", "SwaggerError", "SwaggerSignature", "Timing",
    "classify", "find_endpoint_error", "from_config", "metric_names", "parse_swagger",
]

MAX_BATCH_SIZE = 10000  # ASA's limit for "max batch count"
DEFAULT_RETRY_DEADLINE_S = 1800.0  # batch jobs: how long a batch waits for an endpoint to recover


@dataclass(frozen=True)
class AzureMLConfig:
    """Where the endpoint is and how to call it; the job file's keys, with ASA's defaults.

    ``key`` (Python only) or ``key_env`` (an environment variable read where the requests are
    made) hold the endpoint key; neither is ever logged. ``swagger`` may be a URL, a local file
    (relative to ``base_dir``) or an already parsed dict.
    """

    endpoint: str
    swagger: str | dict | None = None
    key_env: str | None = None
    key: str | None = field(default=None, repr=False)
    batch_size: int = 1000
    parallel_requests: int = 1
    request_timeout_s: float = 100.0
    connect_timeout_s: float = 10.0
    max_buffering_s: float = 1.0
    max_attempts: int = 0  # 0: no cap; the deadline decides
    retry_deadline_s: float | None = None  # None: 1800 s in batch, forever (-1) in streaming
    backoff_base_s: float = 0.5
    backoff_max_s: float = 10.0
    # auto: bundle-local batches in batch jobs, GroupIntoBatches in streaming; bundle: bundle-local
    # batches through a GroupByKey (a synchronous scorer, no user state or timers)
    batching: str = "auto"
    gil_switch_interval_ms: float = 0.2  # while requests are in flight (scoring.GilHandoff); 0 = off
    # process: the HTTP exchanges run in a child process (sender.py), off the pipeline's GIL;
    # thread: with requests in the pipeline's process
    http_client: str = "process"
    base_dir: str = "."

    JOB_KEYS = ("endpoint", "swagger", "key_env", "batch_size", "parallel_requests", "request_timeout_s",
                "connect_timeout_s", "max_buffering_s", "max_attempts", "retry_deadline_s",
                "backoff_base_s", "backoff_max_s", "batching", "gil_switch_interval_ms", "http_client")

    @classmethod
    def from_dict(cls, alias: str, spec: dict, base_dir: Path | str = ".") -> AzureMLConfig:
        """From a job file's function entry; FunctionConfigError names unknown or ill-typed keys."""
        spec = {k: v for k, v in spec.items() if k != "type"}
        unknown = sorted(set(spec) - set(cls.JOB_KEYS))
        if unknown:
            raise FunctionConfigError(
                f"function '{alias}': unknown key(s) {', '.join(unknown)}; expected {', '.join(cls.JOB_KEYS)}")
        if "endpoint" not in spec:
            raise FunctionConfigError(f"function '{alias}': 'endpoint' (the scoring URL) is required")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in spec:
                continue
            value = spec[f.name]
            if f.type in ("int", "float", "float | None"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise FunctionConfigError(f"function '{alias}': '{f.name}' must be a number, got {value!r}")
                if f.type == "int":
                    if value != int(value):
                        raise FunctionConfigError(f"function '{alias}': '{f.name}' must be a whole number")
                    value = int(value)
                else:
                    value = float(value)
            elif f.name == "swagger":
                if not isinstance(value, (str, dict)):
                    raise FunctionConfigError(f"function '{alias}': 'swagger' must be a URL or a file path")
            elif not isinstance(value, str):
                raise FunctionConfigError(f"function '{alias}': '{f.name}' must be a string, got {value!r}")
            kwargs[f.name] = value
        config = cls(base_dir=str(base_dir), **kwargs)
        config.check(alias)
        return config

    def check(self, alias: str) -> None:
        """Value checks that need no network; FunctionConfigError."""
        def bad(msg: str):
            raise FunctionConfigError(f"function '{alias}': {msg}")

        parts = urlsplit(self.endpoint) if isinstance(self.endpoint, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            bad(f"'endpoint' must be an http(s) URL, got {self.endpoint!r}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            bad(f"'batch_size' (max batch count) must be between 1 and {MAX_BATCH_SIZE}, got {self.batch_size}")
        if not 1 <= self.parallel_requests <= 256:
            bad(f"'parallel_requests' must be between 1 and 256, got {self.parallel_requests}")
        deadline = self.retry_deadline_s
        if deadline is not None and not (deadline == -1 or (deadline > 0 and math.isfinite(deadline))):
            bad(f"'retry_deadline_s' must be a positive number of seconds or -1 (forever), got {deadline!r}")
        for name in ("request_timeout_s", "connect_timeout_s", "backoff_max_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                bad(f"'{name}' must be a positive number of seconds, got {value!r}")
        if not self.max_buffering_s > 0:
            bad(f"'max_buffering_s' must be positive, got {self.max_buffering_s!r}")
        if self.backoff_base_s < 0:
            bad("'backoff_base_s' must not be negative")
        if not 0 <= self.gil_switch_interval_ms <= 5:
            bad(f"'gil_switch_interval_ms' must be between 0 (off) and 5, got {self.gil_switch_interval_ms!r}")
        if self.max_attempts < 0:
            bad(f"'max_attempts' must be 0 (no cap) or more, got {self.max_attempts}")
        if self.batching not in ("auto", STATEFUL, BUNDLE):
            bad(f"'batching' must be auto, {STATEFUL} or {BUNDLE}, got {self.batching!r}")
        if self.http_client not in ("process", "thread"):
            bad(f"'http_client' must be process or thread, got {self.http_client!r}")
        if self.key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.key_env):
            bad(f"'key_env' must be an environment variable name, got {self.key_env!r}")

    @property
    def swagger_source(self) -> str | dict:
        return self.swagger if self.swagger is not None else default_swagger_url(self.endpoint)

    def retry_policy(self, streaming: bool = False) -> RetryPolicy:
        """The retry policy; without ``retry_deadline_s``, 30 minutes in batch and forever in
        streaming (there the job applies back-pressure: batches wait, nothing is dead-lettered)."""
        deadline = self.retry_deadline_s
        if deadline is None:
            deadline = -1.0 if streaming else DEFAULT_RETRY_DEADLINE_S
        return RetryPolicy(max_attempts=self.max_attempts, deadline_s=deadline,
                           backoff_base_s=self.backoff_base_s, backoff_max_s=self.backoff_max_s)

    def resolve_key(self) -> str | None:
        if self.key:
            return self.key
        if self.key_env:
            return os.environ.get(self.key_env) or None
        return None


class AzureMLFunction(AsaFunction):
    """An Azure ML endpoint as an ASA scalar function of one argument (array or record).

    The swagger is read once, when the pipeline is built (``validate`` or ``call_transform``);
    the result travels with the pipeline, so workers never fetch it.
    """

    kind = "azureml"
    fuses_row_stages = True  # ScoreRows runs the step's WHERE and projection in its own DoFn

    def __init__(self, alias: str, config: AzureMLConfig, signature: SwaggerSignature | None = None):
        super().__init__(alias)
        config.check(alias)
        self.config = config
        self._signature = signature

    def arity(self) -> tuple[int, int | None]:
        return (1, 1)

    def validate(self) -> None:
        cfg = self.config
        cfg.check(self.alias)
        if cfg.key_env and not os.environ.get(cfg.key_env):
            raise FunctionConfigError(
                f"function '{self.alias}': environment variable {cfg.key_env} (key_env) is not set")
        _ = self.signature

    @property
    def signature(self) -> SwaggerSignature:
        if self._signature is None:
            self._signature = self.load_signature()
        return self._signature

    def load_signature(self) -> SwaggerSignature:
        """Read and parse the swagger; FunctionConfigError naming the function and what is missing."""
        cfg = self.config
        source = cfg.swagger_source
        shown = "<inline>" if isinstance(source, dict) else (
            _safe_url(source) if source.startswith(("http://", "https://")) else source)
        key = cfg.resolve_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            doc = load_swagger_document(source, cfg.base_dir, headers=headers,
                                        timeout=min(cfg.request_timeout_s, 30.0))
            return parse_swagger(doc, endpoint=cfg.endpoint, source=shown)
        except SwaggerError as e:
            text = str(e)
            if key:
                text = text.replace(key, "***")
            raise FunctionConfigError(f"function '{self.alias}': swagger {shown}: {text}") from None

    def describe(self) -> str:
        cfg = self.config
        text = (f"azureml function {self.alias} -> {_safe_url(cfg.endpoint)} "
                f"(batch_size {cfg.batch_size}, parallel_requests {cfg.parallel_requests})")
        if self._signature is not None:
            text += f": {self._signature.describe()}"
        return text

    def make_client(self, timing: Timing | None = None, streaming: bool = False) -> ScoringClient:
        """A client for this endpoint (not opened). Reads the key now: call it where requests are made."""
        cfg = self.config
        return ScoringClient(self.alias, cfg.endpoint, self.signature, key=cfg.resolve_key(),
                             timeout_s=cfg.request_timeout_s, connect_timeout_s=cfg.connect_timeout_s,
                             policy=cfg.retry_policy(streaming), pool_size=cfg.parallel_requests, timing=timing,
                             http_client=cfg.http_client)

    def call_transform(self, site: CallSite) -> ScoreRows:
        return ScoreRows(self, site)


def from_config(alias: str, spec: dict, base_dir: Path) -> AzureMLFunction:
    """The registry's factory for ``type: azureml``; the swagger is read later, by ``validate``."""
    return AzureMLFunction(alias, AzureMLConfig.from_dict(alias, spec, base_dir))


_WRAPPED = re.compile(r"EndpointConfigError: (function '(?P<fn>[^']*)': endpoint (?P<url>\S+) answered HTTP "
                      r"(?P<status>\d{3})(?: \((?P<detail>.*?)\))?; check the endpoint URL and key\.)")


def find_endpoint_error(exc: BaseException | None) -> EndpointConfigError | None:
    """The EndpointConfigError behind an exception from ``pipeline.run()``, however Beam wrapped it.

    Beam's runners re-raise DoFn errors as RuntimeError (in-process: with the original as
    ``__context__``; remote: only as text). Walks the chain, then parses the text.
    """
    seen = set()
    node = exc
    while node is not None and id(node) not in seen:
        if isinstance(node, EndpointConfigError):
            return node
        seen.add(id(node))
        node = node.__cause__ or node.__context__
    if exc is None:
        return None
    m = _WRAPPED.search(str(exc))
    if not m:
        return None
    return EndpointConfigError(m["fn"], m["url"], int(m["status"]), m["detail"] or "")
