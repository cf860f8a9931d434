"""JavaScript UDAs: ``uda.<alias>(x)`` in a GROUP BY step, run in the same sandboxed engine as UDFs.

Job file::

    functions:
      TWA: {type: javascript_uda, script: twa.js, output_type: float}

The script holds a constructor, as ASA documents (``function main() { this.init = ...;
this.accumulate = function (value, timestamp) {...}; this.computeResult = ...; }``). A window's
events are accumulated in event-time order (``accumulate(value, timestamp)``, the timestamp a JS
Date) in one engine crossing, then ``computeResult()`` gives the window's value. ``deaccumulate``
is not needed: asa-beam replays a window's events into a fresh object (AccumulateOnly).
"""

from __future__ import annotations

import datetime as _dt
import threading
from pathlib import Path
from typing import Any

from transforms import types
from transforms.deadletter import RowError
from transforms.errors import FunctionConfigError
from transforms.functions.base import AsaFunction
from transforms.functions.javascript.engine import DEFAULT_MEMORY_LIMIT_MB, DEFAULT_TIMEOUT_MS, JsError, make_engine
from transforms.functions.javascript.transform import load_script

_ENGINES: dict[tuple, Any] = {}  # one engine + compiled constructor per process and script
_LOCK = threading.Lock()


class _JsUdaObject:
    """One UDA object in the engine; accumulate calls are buffered and cross into JS together."""

    def __init__(self, factory: JsUdaFactory):
        self._factory = factory
        self._pending: list[list[Any]] = []
        engine, target = factory.engine()
        self._engine = engine
        self._handle = engine.construct(target)

    def init(self) -> None:
        self._check(self._engine.call_batch(self._handle, [[]], method="init"), "init")

    def accumulate(self, value: Any, timestamp: _dt.datetime) -> None:
        self._pending.append([value, timestamp])

    def computeResult(self) -> Any:  # noqa: N802 - the JS method's name
        if self._pending:
            self._check(self._engine.call_batch(self._handle, self._pending, method="accumulate"), "accumulate")
            self._pending = []
        (result,) = self._check(self._engine.call_batch(self._handle, [[]], method="computeResult"),
                                "computeResult")
        return types.implicit(result, self._factory.output_type)

    def _check(self, results: list[Any], method: str) -> list[Any]:
        for r in results:
            if isinstance(r, RowError):
                # A UDA failure fails its window's result; the message says which method failed.
                raise RowError(r.reason, f"uda.{self._factory.alias}.{method}: {r.message}")
        return results


class JsUdaFactory:
    """Picklable: builds UDA objects in a per-process engine created on first use."""

    def __init__(self, alias: str, source: str, output_type: str, timeout_ms: int, memory_limit_mb: int):
        self.alias = alias
        self.source = source
        self.output_type = output_type
        self.timeout_ms = timeout_ms
        self.memory_limit_mb = memory_limit_mb

    def engine(self):
        key = (self.source, self.timeout_ms, self.memory_limit_mb)
        with _LOCK:
            if key not in _ENGINES:
                engine = make_engine("quickjs", timeout_ms=self.timeout_ms, memory_limit_mb=self.memory_limit_mb,
                                     label=f"uda.{self.alias}")
                _ENGINES[key] = (engine, engine.compile(self.source))
            return _ENGINES[key]

    def __call__(self) -> _JsUdaObject:
        return _JsUdaObject(self)


class JavaScriptAggregate(AsaFunction):
    """A JavaScript UDA callable as ``uda.<alias>(x)`` in SELECT/HAVING of a GROUP BY step."""

    kind = "javascript_uda"

    def __init__(self, alias: str, source: str, output_type: str = types.ANY,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB):
        super().__init__(alias)
        self.factory = JsUdaFactory(alias, source, types.normalize_type(output_type), timeout_ms, memory_limit_mb)

    def arity(self) -> tuple[int, int | None]:
        return (1, 1)

    def describe(self) -> str:
        return f"javascript UDA {self.alias} -> {self.factory.output_type}"

    def validate(self) -> None:
        try:
            self.factory()  # compiles the script and constructs one UDA object
        except (JsError, Exception) as e:  # noqa: BLE001 - any failure here is a configuration problem
            raise FunctionConfigError(f"uda.{self.alias}: the script does not build a UDA object: {e}") from None

    def call_transform(self, site):  # pragma: no cover - the compiler never hoists uda.* calls
        raise FunctionConfigError(f"uda.{self.alias} is an aggregate: use it in a GROUP BY step")


def from_config(alias: str, spec: dict, base_dir: Path) -> JavaScriptAggregate:
    unknown = sorted(set(spec) - {"type", "script", "output_type", "timeout_ms", "memory_limit_mb"})
    if unknown:
        raise FunctionConfigError(f"function '{alias}': unknown setting(s) {', '.join(unknown)}")
    if "script" not in spec:
        raise FunctionConfigError(f"function '{alias}': 'script' is required (a .js file or inline source)")
    source, _ = load_script(spec["script"], base_dir)
    try:
        return JavaScriptAggregate(alias, source, str(spec.get("output_type", types.ANY)),
                                   int(spec.get("timeout_ms", DEFAULT_TIMEOUT_MS)),
                                   int(spec.get("memory_limit_mb", DEFAULT_MEMORY_LIMIT_MB)))
    except ValueError as e:
        raise FunctionConfigError(f"function '{alias}': {e}") from None
