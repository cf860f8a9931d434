"""JavaScript UDFs: ``JavaScriptFunction`` for ``udf.<alias>(...)`` calls, ``JavaScriptUdf`` for any pipeline.

Job file::

    functions:
      createArray:
        type: javascript
        script: createArray.js   # a file next to the job file holding one function, or inline source
        output_type: array       # any (default) | bigint | float | nvarchar(max) | datetime | bit | record | array
        timeout_ms: 300          # per-call CPU-time limit (default 300)
        memory_limit_mb: 64      # heap limit of the JavaScript context (default 64)

Row failures (dead-lettered, the pipeline goes on): ``js_error`` for an exception thrown by the
function (message and line), a returned value with no ASA type, or running out of memory;
``js_timeout`` for a call over the time limit; ``cast_error`` for a result that does not convert
to ``output_type`` without loss (``types.implicit``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam

from transforms import types
from transforms.deadletter import RowError
from transforms.errors import FunctionConfigError
from transforms.functions.base import CallInProcess, CallSite, ScalarFunction
from transforms.functions.javascript.engine import (
    DEFAULT_MEMORY_LIMIT_MB,
    DEFAULT_TIMEOUT_MS,
    ENGINES,
    JsCompileError,
    JsEngine,
    JsError,
    JsTarget,
    make_engine,
)

_CONFIG_KEYS = {"type", "script", "output_type", "timeout_ms", "memory_limit_mb", "engine"}
_FUNCTION_NAME = re.compile(r"function\s*\*?\s*([A-Za-z_$][\w$]*)\s*\(")


class JavaScriptFunction(ScalarFunction):
    """A JavaScript function as an ASA scalar UDF, run in a sandboxed engine (QuickJS).

    Only the source travels with the pipeline; each DoFn instance builds its own engine in
    ``setup()`` (engines cannot be pickled) and sends each chunk of rows into it in one crossing.

    >>> f = JavaScriptFunction("add", "function (x, y) { return x + y; }", output_type="bigint")
    >>> f.call_batch([(1, 2), (2**40, 1)])
    [3, 1099511627777]
    """

    kind = "javascript"

    def __init__(self, alias: str, script: str, output_type: str = types.ANY,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
                 origin: str | None = None, engine: str = "quickjs"):
        super().__init__(alias)
        if engine.lower() not in ENGINES:
            raise ValueError(f"unknown JavaScript engine '{engine}'; expected one of: {', '.join(ENGINES)}")
        if not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be a positive integer, not {timeout_ms!r}")
        if not isinstance(memory_limit_mb, int) or isinstance(memory_limit_mb, bool) or memory_limit_mb <= 0:
            raise ValueError(f"memory_limit_mb must be a positive integer, not {memory_limit_mb!r}")
        self.script = script
        self.output_type = types.normalize_type(output_type)
        self.timeout_ms = timeout_ms
        self.memory_limit_mb = memory_limit_mb
        self.origin = origin or "inline script"
        self.engine_kind = engine.lower()
        self._init_runtime_state()

    def _init_runtime_state(self) -> None:
        self._engine: JsEngine | None = None
        self._target: JsTarget | None = None
        self._lock = threading.Lock()
        ns = "asa"
        self._errors = beam.metrics.Metrics.counter(ns, f"{self.alias}.js_errors")
        self._timeouts = beam.metrics.Metrics.counter(ns, f"{self.alias}.js_timeouts")
        self._resets = beam.metrics.Metrics.counter(ns, f"{self.alias}.js_context_resets")
        self._crossings = beam.metrics.Metrics.counter(ns, f"{self.alias}.js_crossings")

    # The engine, its lock and the counters never travel: only configuration and source do.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_engine", "_target", "_lock", "_errors", "_timeouts", "_resets", "_crossings")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime_state()

    def describe(self) -> str:
        return (f"javascript function {self.alias} = {self.origin} -> {self.output_type} "
                f"({self.engine_kind}, timeout {self.timeout_ms} ms, memory {self.memory_limit_mb} MB)")

    def _new_engine(self) -> JsEngine:
        return make_engine(self.engine_kind, label=f"udf.{self.alias}", timeout_ms=self.timeout_ms,
                           memory_limit_mb=self.memory_limit_mb)

    def _compile(self, engine: JsEngine) -> JsTarget:
        try:
            return engine.compile(self.script, prefer=self.alias)
        except JsCompileError as e:
            raise FunctionConfigError(f"function '{self.alias}' ({self.origin}): {e}") from None
        except JsError as e:
            raise FunctionConfigError(f"function '{self.alias}' ({self.origin}): {e}") from None

    def validate(self) -> None:
        """Compile the script in a throw-away engine: it must compile and hold one function."""
        with self._new_engine() as engine:
            self._compile(engine)

    def setup(self) -> None:
        with self._lock:
            if self._engine is None:
                engine = self._new_engine()
                self._target = self._compile(engine)
                self._engine = engine

    def teardown(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
            self._engine = None
            self._target = None

    def call_batch(self, args_list: Sequence[tuple]) -> list[Any]:
        if self._engine is None:
            self.setup()  # called outside a DoFn (tests, doctests)
        engine, target = self._engine, self._target
        assert engine is not None and target is not None
        crossings, resets = engine.crossings, engine.resets
        results = engine.call_batch(target, args_list)
        self._crossings.inc(engine.crossings - crossings)
        if engine.resets != resets:
            self._resets.inc(engine.resets - resets)
        target_type = self.output_type
        errors = timeouts = 0
        for i, value in enumerate(results):
            if isinstance(value, RowError):
                if value.reason == "js_timeout":
                    timeouts += 1
                else:
                    errors += 1
            elif target_type != types.ANY and value is not None:
                try:
                    results[i] = types.implicit(value, target_type)
                except RowError as e:
                    errors += 1
                    results[i] = RowError(e.reason, f"udf.{self.alias} returned a value that is not "
                                                    f"{target_type}: {e.message}")
        if errors:
            self._errors.inc(errors)
        if timeouts:
            self._timeouts.inc(timeouts)
        return results


def load_script(script: str | Path, base_dir: Path | str = ".") -> tuple[str, str]:
    """``(source, origin)`` for a script given as a file path (relative to ``base_dir``) or as source.

    A one-line string naming an existing file is read; otherwise a string that looks like code
    (it has braces, parentheses or ``=>``) is the source itself. Raises FunctionConfigError.
    """
    if isinstance(script, Path):
        path = script if script.is_absolute() else Path(base_dir) / script
        return _read(path), str(script)
    if not isinstance(script, str) or not script.strip():
        raise FunctionConfigError("'script' must be a file name or JavaScript source")
    text = script.strip()
    if "\n" not in text:
        path = Path(text).expanduser()
        path = path if path.is_absolute() else Path(base_dir) / path
        try:
            if path.is_file():
                return _read(path), text
        except OSError:  # e.g. a name too long to be a file: it is source
            pass
        if not any(c in text for c in "{}()") and "=>" not in text:
            raise FunctionConfigError(f"script file {path} not found")
    return script, "inline script"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise FunctionConfigError(f"cannot read script file {path}: {e.strerror or e}") from None


def from_config(alias: str, spec: dict, base_dir: Path) -> JavaScriptFunction:
    """The ``type: javascript`` factory of the function registry."""
    unknown = sorted(set(spec) - _CONFIG_KEYS)
    if unknown:
        raise FunctionConfigError(f"function '{alias}': unknown setting(s) {', '.join(unknown)}; "
                                  f"expected {', '.join(sorted(_CONFIG_KEYS - {'type'}))}")
    if "script" not in spec:
        raise FunctionConfigError(f"function '{alias}': 'script' is required (a .js file or inline source)")
    try:
        source, origin = load_script(spec["script"], base_dir)
    except FunctionConfigError as e:
        raise FunctionConfigError(f"function '{alias}': {e}") from None
    try:
        return JavaScriptFunction(
            alias, source,
            output_type=str(spec.get("output_type", types.ANY)),
            timeout_ms=spec.get("timeout_ms", DEFAULT_TIMEOUT_MS),
            memory_limit_mb=spec.get("memory_limit_mb", DEFAULT_MEMORY_LIMIT_MB),
            origin=origin,
            engine=str(spec.get("engine", "quickjs")),
        )
    except ValueError as e:
        raise FunctionConfigError(f"function '{alias}': {e}") from None


class _RowArgs:
    """Evaluates the argument list on a row: a field name reads ``row.get(name)`` (missing → NULL),
    a callable is called with the row; no arguments given passes the whole row (``udf.f(input)``)."""

    def __init__(self, args: Sequence[str | Callable[[dict], Any]] | None):
        self.args = None if args is None else tuple(args)
        for a in self.args or ():
            if not isinstance(a, str) and not callable(a):
                raise TypeError(f"JavaScriptUdf args must be field names or callables, not {a!r}")
        # This runs once per row: field names alone (the usual case) take a path without a
        # per-argument type test (~4x cheaper than a generator).
        self._names_only = self.args is not None and all(isinstance(a, str) for a in self.args)

    def __call__(self, row: dict) -> tuple:
        if self._names_only:
            return tuple(map(row.get, self.args))
        if self.args is None:
            return (row,)
        return tuple([row.get(a) if isinstance(a, str) else a(row) for a in self.args])


class JavaScriptUdf(beam.PTransform):
    """Calls a JavaScript function on every row dict: ``{"rows": rows + output_column, "failed": DeadLetters}``.

    ``script`` is JavaScript source holding one function, or the path of a file holding it.
    ``args`` lists the arguments: field names (``row.get(name)``) or callables of the row; left
    out, the whole row is the one argument. The result, converted to ``output_type``, goes into
    ``output_column``. Rows whose call fails leave on ``failed`` as ``DeadLetter`` records
    (``js_error``, ``js_timeout``, ``cast_error``), tagged with ``step``.

    Example::

        import apache_beam as beam
        from transforms.functions.javascript import JavaScriptUdf

        with beam.Pipeline() as p:
            out = (p | beam.Create([{"a": 1, "b": 2}, {"a": 3, "b": None}])
                     | JavaScriptUdf("function (a, b) { return b === null ? null : [a, b]; }",
                                     args=["a", "b"], output_type="array", output_column="pair"))
            out["rows"] | "rows" >> beam.Map(print)      # {'a': 1, 'b': 2, 'pair': [1, 2]} ...
            out["failed"] | "failed" >> beam.Map(print)  # DeadLetter records, none here
    """

    def __init__(self, script: str | Path, output_type: str = types.ANY,
                 args: Sequence[str | Callable[[dict], Any]] | None = None,
                 output_column: str | None = None, step: str | None = None, name: str | None = None,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB):
        source, origin = load_script(script)
        match = _FUNCTION_NAME.search(source)
        alias = name or (match.group(1) if match else "javascript")
        super().__init__()
        self.function = JavaScriptFunction(alias, source, output_type=output_type, timeout_ms=timeout_ms,
                                           memory_limit_mb=memory_limit_mb, origin=origin)
        self.function.validate()  # a script that does not compile fails here, not in a worker
        self.site = CallSite(step=step or alias, function=alias, column=output_column or alias,
                             args=_RowArgs(args))

    def expand(self, rows):
        return rows | CallInProcess(self.function, self.site)
