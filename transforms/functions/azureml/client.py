"""HTTP calls to an Azure ML endpoint, and the one place where statuses become actions.

The failure policy (documented in the README; the table is ``classify``):

=================================================  ==============================================
What the endpoint did                              What happens
=================================================  ==============================================
2xx with one result per row where the swagger says  rows are scored
2xx with the wrong count / shape / not JSON         the batch's rows are dead-lettered
                                                    (``endpoint_bad_response``), no retry
connection error, timeout, 408, 429, 500, 502,      retried with capped exponential back-off and
503, 504                                            jitter (``Retry-After`` honoured on any of
                                                    them) until ``deadline_s`` after the batch's
                                                    first request (default 30 min; negative:
                                                    forever), with no attempt cap unless
                                                    ``max_attempts`` is set; then the rows are
                                                    dead-lettered (``endpoint_unavailable``)
400, 413, 422                                       ``SPLIT``: the caller isolates the rejected rows
                                                    (``scoring.PoisonIsolation``); only those are
                                                    dead-lettered (``endpoint_rejected_row``)
401, 403, 404                                       ``EndpointConfigError``: the job stops at once
anything else (e.g. 405, 409, 501, 3xx)             not retried, not split: the batch's rows are
                                                    dead-lettered (``endpoint_unavailable``)
=================================================  ==============================================

Time is injected (``Timing``: clock, sleep, jitter) so tests never sleep. The key is sent as
``Authorization: Bearer <key>`` and removed from every message this module produces.
"""

from __future__ import annotations

import email.utils
import enum
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from transforms import progress
from transforms.deadletter import json_default
from transforms.errors import EndpointConfigError
from transforms.functions.azureml.sender import Exchange, PendingExchange, SenderClosed, SenderProcess
from transforms.functions.azureml.swagger import SwaggerSignature, _safe_url

try:  # several times faster than json for request and response bodies; optional
    import msgspec
    import orjson
except ImportError:  # pragma: no cover - both are in install_requires
    msgspec = orjson = None

_LOG = logging.getLogger(__name__)

ENDPOINT_UNAVAILABLE = "endpoint_unavailable"
ENDPOINT_REJECTED_ROW = "endpoint_rejected_row"
ENDPOINT_BAD_RESPONSE = "endpoint_bad_response"


class Action(enum.Enum):
    """What to do with a batch after one HTTP exchange."""

    OK = "ok"
    RETRY = "retry"  # transient: try again after a back-off
    SPLIT = "split"  # the endpoint rejected the request's contents: bisect
    STOP = "stop"  # configuration error: stop the job
    FAIL = "fail"  # give up on this batch without retrying


RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
SPLIT_STATUSES = frozenset({400, 413, 422})
STOP_STATUSES = frozenset({401, 403, 404})


def classify(status: int | None) -> Action:
    """The failure policy in one function; ``None`` means no HTTP response (connection error, timeout)."""
    if status is None or status in RETRY_STATUSES:
        return Action.RETRY
    if 200 <= status < 300:
        return Action.OK
    if status in SPLIT_STATUSES:
        return Action.SPLIT
    if status in STOP_STATUSES:
        return Action.STOP
    return Action.FAIL


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on retrying a transient failure.

    The n-th retry waits ``min(backoff_max_s, backoff_base_s * 2**(n-1))`` scaled by a jitter
    factor in [0.5, 1) ("equal jitter"), or the ``Retry-After`` the endpoint sent (capped at
    ``retry_after_max_s``). A batch is given up when the next wait would end after ``deadline_s``
    from its first request (negative: never, as ASA retries 503 until the endpoint recovers), or
    when ``max_attempts`` requests failed (0: no cap, the default).

    Defaults: a 30-minute deadline covers endpoint restarts, redeployments and scale-outs, which
    take minutes; the 10 s cap on a single wait means a recovered endpoint is noticed within
    10 s, while a down endpoint sees one request per batch in flight every 5-10 s.
    """

    max_attempts: int = 0
    deadline_s: float = 1800.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 10.0
    retry_after_max_s: float = 120.0

    def gives_up(self, attempts: int, elapsed_after_wait: float) -> bool:
        """Whether a batch that failed ``attempts`` times stops instead of waiting more."""
        if self.max_attempts > 0 and attempts >= self.max_attempts:
            return True
        return self.deadline_s >= 0 and elapsed_after_wait > self.deadline_s

    def backoff(self, retry: int, jitter: float) -> float:
        """Seconds before retry number ``retry`` (1-based); ``jitter`` in [0, 1)."""
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** (retry - 1)) * (0.5 + jitter / 2)


def _default_sleep(seconds: float) -> None:
    time.sleep(seconds)


@dataclass(frozen=True)
class Timing:
    """Injected time: a monotonic clock, a sleep, a jitter source in [0, 1)."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = _default_sleep
    jitter: Callable[[], float] = random.random


class CallStats(NamedTuple):
    """What one ``call`` cost; the DoFn turns these into Beam metrics in its own thread."""

    requests: int = 0
    rows_sent: int = 0
    failed_requests: int = 0
    retries: int = 0
    latencies_ms: tuple[float, ...] = ()
    wait_s: float = 0.0  # time spent in back-off before retries

    def __add__(self, other: CallStats) -> CallStats:  # type: ignore[override]
        return CallStats(self.requests + other.requests, self.rows_sent + other.rows_sent,
                         self.failed_requests + other.failed_requests, self.retries + other.retries,
                         self.latencies_ms + other.latencies_ms, self.wait_s + other.wait_s)


class CallResult(NamedTuple):
    """The outcome of scoring one batch (after retries).

    ``action`` is OK (``results`` holds one value per row), SPLIT (rejected: ``status`` and the
    endpoint's ``message``) or FAIL (unavailable or a bad response: ``reason``, ``status``, ``message``).
    """

    action: Action
    results: list | None
    status: int | None
    reason: str | None
    message: str
    stats: CallStats


class FirstRequest(NamedTuple):
    """A batch's first request, sent by ``ScoringClient.start_call`` and not yet answered."""

    body: bytes
    start: float  # Timing.clock() when it was sent: the batch's retry deadline counts from here
    exchange: PendingExchange


class Cancelled(Exception):
    """The client was closed (another batch stopped the job) while this call was pending."""


@dataclass
class ScoringClient:
    """Posts batches of converted rows to one endpoint; owns a pooled ``requests.Session``.

    Create it where it is used (a DoFn's ``setup``): the session is never pickled.

    >>> client = ScoringClient("score", "http://127.0.0.1:5001/score", signature)  # doctest: +SKIP
    >>> client.call([{"vendorid": 1, ...}]).results                                 # doctest: +SKIP
    [{'Scored Labels': 13.2}]
    """

    alias: str
    url: str
    signature: SwaggerSignature
    key: str | None = field(default=None, repr=False)
    timeout_s: float = 100.0
    connect_timeout_s: float = 10.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    pool_size: int = 1
    timing: Timing | None = None
    http_client: str = "process"  # "process": HTTP in a child process (sender.py); "thread": requests here

    def __post_init__(self):
        self._session = None
        self._sender: SenderProcess | None = None
        self._closed = threading.Event()
        self._timing = self.timing or Timing(sleep=self._interruptible_sleep)
        self._safe_url = _safe_url(self.url)
        self._secrets = _secrets_of(self.url, self.key)

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> ScoringClient:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        if self.http_client == "process" and not urlsplit(self.url).username:
            cafile = None
            if self.url.startswith("https:"):
                import certifi  # the CA bundle requests would use

                cafile = certifi.where()
            self._sender = SenderProcess(self.url, headers, self.connect_timeout_s, self.timeout_s,
                                         threads=max(1, self.pool_size), cafile=cafile)
            try:
                self._sender.start()  # starts while the pipeline reads its first rows
            except OSError:
                pass  # the first request tries again, and fails as a connection error if it must
            return self
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, self.pool_size), max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update(headers)
        session.trust_env = False  # no proxies or .netrc credentials picked up behind our back
        self._session = session
        return self

    def close(self) -> None:
        """Stop pending retries and release connections."""
        self._closed.set()
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> ScoringClient:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _interruptible_sleep(self, seconds: float) -> None:
        self._closed.wait(seconds)

    # -- override points ----------------------------------------------------------------------

    def encode(self, payloads: Sequence[Any]) -> bytes:
        """The request body for already-converted rows. ValueError/TypeError if a value is not JSON.

        orjson when it can be trusted to agree with the standard library: it writes NaN and
        Infinity as ``null`` and rejects integers beyond 64 bits, so a body containing ``null``
        or one orjson refuses is encoded again by ``json`` (which raises on non-finite floats).
        (Not msgspec: it writes datetimes in its own format instead of asking ``json_default``.)
        """
        body = self.signature.envelope(payloads if isinstance(payloads, list) else list(payloads))
        if orjson is not None:
            try:
                data = orjson.dumps(body, default=json_default, option=_ORJSON_OPTIONS)
            except (TypeError, ValueError):
                data = None
            if data is not None and b"null" not in data:
                return data
        return json.dumps(body, default=json_default, separators=(",", ":"), allow_nan=False,
                          ensure_ascii=False).encode("utf-8")

    def decode(self, content: bytes) -> list:
        """The per-row results of a 2xx response body; ValueError when they are not there.

        msgspec first (it keeps every digit of big integers, which orjson turns into floats);
        ``json`` where msgspec refuses (``NaN``/``Infinity`` literals that Python endpoints
        write), so both accept the same bodies and give the same values.
        """
        body: Any = _UNSET
        if msgspec is not None:
            try:
                body = _MSGSPEC_DECODE(content)
            except (msgspec.DecodeError, ValueError):
                body = _UNSET
        if body is _UNSET:
            try:
                body = json.loads(content)
            except ValueError:
                raise ValueError("the response is not JSON") from None
        return self.signature.results(body)

    # -- the call -----------------------------------------------------------------------------

    def call(self, payloads: Sequence[Any], first: FirstRequest | None = None) -> CallResult:
        """Score one batch, retrying transient failures; raises EndpointConfigError on 401/403/404.

        ``first``: the batch's first request, already sent by ``start_call`` (its answer is
        awaited, then handled like any other). Also counts requests in flight, sent and retried
        for the live progress line."""
        if first is None:
            progress.add("ml.in_flight", 1)  # (start_call counted it)
        try:
            result = self._call(payloads, first)
        finally:
            progress.add("ml.in_flight", -1)
        progress.add("ml.requests", result.stats.requests)
        progress.add("ml.retries", result.stats.retries)
        return result

    def start_call(self, payloads: Sequence[Any]) -> FirstRequest | None:
        """Send a batch's first request without waiting for its answer (HTTP in the sender
        process only). None when it was not sent: no sender process, or a value JSON cannot
        carry (``call`` finds which). Then ``call(payloads, first)``: at once when ``answered_2xx``.

        The caller's thread does the encoding and one pipe write, and no other thread of this
        process runs for the request except the sender's answers' reader; ``call`` in a pool
        thread costs that thread several GIL hand-offs with the caller's thread per request."""
        if self._sender is None or self._closed.is_set():
            return None
        try:
            body = self.encode(payloads)
        except (ValueError, TypeError):
            return None
        start = self._timing.clock()
        try:
            pending = self._sender.submit(body)
        except SenderClosed:
            return None
        progress.add("ml.in_flight", 1)
        return FirstRequest(body, start, pending)

    def answered_2xx(self, first: FirstRequest) -> bool:
        """True when ``first`` has been answered with a 2xx: ``call(payloads, first)`` then
        neither waits nor sleeps (the rows are scored, or the response is bad). False when it is
        not answered yet, or its answer is a failure to retry or isolate."""
        if not first.exchange.done():
            return False
        try:
            status = first.exchange.result().status
        except SenderClosed:
            return False
        return classify(status) is Action.OK

    def _exchange(self, data: bytes) -> Exchange:
        """One POST of ``data``: in the sender process, or with requests in this thread."""
        if self._sender is not None:
            try:
                return self._sender.exchange(data)
            except SenderClosed:
                raise Cancelled() from None
        import requests
        import urllib3

        try:
            # stream + one raw read: the body arrives in a few large recv() calls instead of
            # 10 KB chunks, each of which would wait for the GIL behind the pipeline's thread.
            with self._session.post(self.url, data=data, stream=True,
                                    timeout=(self.connect_timeout_s, self.timeout_s)) as resp:
                return Exchange(resp.status_code, resp.headers.get("Retry-After"), None,
                                resp.raw.read(decode_content=True))
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            return Exchange(None, None, "timeout", b"")
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            return Exchange(None, None, type(e).__name__, b"")

    def _call(self, payloads: Sequence[Any], first: FirstRequest | None = None) -> CallResult:
        if self._session is None and self._sender is None:
            raise RuntimeError("ScoringClient.open() was not called")
        timing, policy = self._timing, self.policy
        if first is not None:
            data, start = first.body, first.start
        else:
            data, start = self.encode(payloads), timing.clock()
        n = len(payloads)
        requests_sent = failed = retries = 0
        waited = 0.0
        latencies: list[float] = []
        status: int | None = None
        last_status: int | None = None
        message = ""
        while True:
            if first is not None:  # sent already: its answer
                try:
                    status, retry_after_header, error, content = first.exchange.result()
                except SenderClosed:
                    raise Cancelled() from None
                latencies.append(first.exchange.latency_s * 1000.0)
                first = None
            else:
                if self._closed.is_set():
                    raise Cancelled()
                t0 = timing.clock()
                status, retry_after_header, error, content = self._exchange(data)
                latencies.append((timing.clock() - t0) * 1000.0)
            if error == "timeout":
                message = f"timed out (request_timeout_s {self.timeout_s:g})"
            elif error is not None:
                message = f"connection failed ({error})"
            if status is not None:
                last_status = status
            requests_sent += 1
            action = classify(status)
            if action is Action.OK:
                try:
                    results = self.decode(content)
                except ValueError as e:
                    return CallResult(Action.FAIL, None, status, ENDPOINT_BAD_RESPONSE,
                                      self._redact(f"udf.{self.alias}: {e}"),
                                      _stats(requests_sent, n, failed, retries, latencies, waited))
                if len(results) != n:
                    return CallResult(Action.FAIL, None, status, ENDPOINT_BAD_RESPONSE,
                                      f"udf.{self.alias}: the endpoint returned {len(results)} results "
                                      f"for {n} rows", _stats(requests_sent, n, failed, retries, latencies, waited))
                return CallResult(Action.OK, results, status, None, "",
                                  _stats(requests_sent, n, failed, retries, latencies, waited))
            failed += 1
            if status is not None:
                message = self._endpoint_message(content)
            if action is Action.STOP:
                raise EndpointConfigError(self.alias, self._safe_url, status, message)
            if action is Action.SPLIT:
                return CallResult(Action.SPLIT, None, status, ENDPOINT_REJECTED_ROW,
                                  self._describe(status, message),
                                  _stats(requests_sent, n, failed, retries, latencies, waited))
            if action is Action.RETRY:
                retry_after = _retry_after(retry_after_header, time.time())
                if retry_after is not None:
                    delay = min(retry_after, policy.retry_after_max_s)
                else:
                    delay = policy.backoff(requests_sent, timing.jitter())
                if not policy.gives_up(requests_sent, timing.clock() + delay - start):
                    retries += 1
                    # the first retry and then every 10th: an outage of minutes must not flood the log
                    if retries == 1 or retries % 10 == 0:
                        _LOG.warning("udf.%s: %s from %s; retry %d in %.2f s", self.alias,
                                     f"HTTP {status}" if status else message, self._safe_url, retries, delay)
                    timing.sleep(delay)
                    waited += delay
                    continue
            why = "" if action is Action.FAIL else f" after {requests_sent} attempt(s)"
            return CallResult(Action.FAIL, None, last_status, ENDPOINT_UNAVAILABLE,
                              self._describe(status, message) + why,
                              _stats(requests_sent, n, failed, retries, latencies, waited))

    # -- messages -----------------------------------------------------------------------------

    def _describe(self, status: int | None, message: str) -> str:
        head = f"udf.{self.alias}: {self._safe_url} "
        head += f"answered HTTP {status}" if status is not None else "did not answer"
        return self._redact(f"{head}: {message}" if message else head)

    def _endpoint_message(self, content: bytes) -> str:
        text = content[:2000].decode("utf-8", "replace").strip()
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            for k in ("message", "error", "detail", "Message", "Error"):
                if k in body:
                    v = body[k]
                    text = v if isinstance(v, str) else json.dumps(v)
                    break
        elif isinstance(body, str):
            text = body
        text = " ".join(text.split())
        return self._redact(text[:300])

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def _secrets_of(url: str, key: str | None) -> tuple[str, ...]:
    """What must never be shown: the key, query-string values and the password of the URL."""
    parts = urlsplit(url)
    found = [key] if key else []
    found += [v for _, v in parse_qsl(parts.query) if len(v) >= 4]
    if parts.password:
        found.append(parts.password)
    return tuple(sorted(set(found), key=len, reverse=True))


def _stats(requests_sent: int, rows: int, failed: int, retries: int, latencies: list[float],
           waited: float = 0.0) -> CallStats:
    return CallStats(requests_sent, requests_sent * rows, failed, retries, tuple(latencies), waited)


_UNSET = object()
_MSGSPEC_DECODE = msgspec.json.Decoder().decode if msgspec is not None else None
_ORJSON_OPTIONS = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                   | orjson.OPT_PASSTHROUGH_SUBCLASS) if orjson is not None else 0


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
