"""Sandboxed JavaScript engines behind one small interface, and the value mapping across them.

``JsEngine`` is one isolated JavaScript realm with a per-call time limit and a memory limit.
It compiles scripts that hold one function (``compile``), can instantiate an object from a
constructor (``construct``, for JavaScript UDAs' ``init``/``accumulate``/``computeResult``
objects) and calls a function or a method for a whole chunk of argument tuples in one crossing
(``call_batch``). ``QuickJsEngine`` implements it on quickjs-ng; another engine (V8 through
mini-racer, say) needs only the five ``_open``/``_close``/``_set_time_limit``/``_dispatch``
primitives, because everything else (the JavaScript runtime that loops over a chunk, the JSON
encoding, and the recovery after a timeout or an out-of-memory error) lives here.

Values cross as JSON text in both directions, never as native engine values: the QuickJS
bindings wrap Python ints between 2^31 and 2^63 to int32 and truncate strings at NUL when
values cross natively. JSON lacks Dates, NaN and ±Infinity, so those cross as one-key tagged
objects (``{"\\u0000date": ms}``, ``{"\\u0000num": "NaN"}``) that the other side revives,
nested or not.

Type mapping (ASA's JavaScript UDF table, plus the choices it leaves open):

=========================  ======================  ===========================================
ASA / Python               JavaScript              back to ASA / Python
=========================  ======================  ===========================================
bigint ``int``             Number (exact to 2^53)  whole Number in [-2^63, 2^63) → ``int``
float ``float``            Number                  any other Number → ``float`` (NaN, ±Infinity too)
nvarchar(max) ``str``      String                  ``str``
datetime (aware)           Date (ms, truncated)    aware UTC ``datetime`` (years 1-9999)
bit ``bool``               Boolean                 ``bool``
record ``dict``            Object                  ``dict`` (own enumerable fields; class instances too)
array ``list``/``tuple``   Array                   ``list``
NULL ``None``              null                    null and undefined (also as a field) → ``None``
=========================  ======================  ===========================================

Anything else a function returns (a function, Symbol, BigInt, Error, Map, Set, RegExp,
Promise, typed array, boxed primitive, an invalid Date, a structure deeper than 256 levels or
cyclic) fails that row (``js_error``). A whole Number in int64 range comes back *exactly*
(2^60 is 1152921504606846976, not the 1152921504606847000 JSON.stringify prints); 2^63 and
beyond come back as ``float``; -2^63 comes back as ``int``.
"""

from __future__ import annotations

import abc
import datetime as _dt
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transforms.deadletter import RowError

DEFAULT_TIMEOUT_MS = 300
DEFAULT_MEMORY_LIMIT_MB = 64
# The C stack QuickJS may use for JS recursion (~600 frames of a simple recursive function).
# It must stay well under the smallest stack of a thread that calls the engine (8 MB on glibc).
DEFAULT_STACK_LIMIT_KB = 1024
# Running a script's top-level code may legitimately take longer than one call.
MIN_COMPILE_TIME_MS = 1000

TAG_DATE = "\u0000date"
TAG_NUM = "\u0000num"
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MS = _dt.timedelta(milliseconds=1)

# The runtime every realm starts with. It keeps nothing in globalThis: ``dispatch`` is the one
# value the host holds. Builtins it needs are captured up front, so a UDF that replaces
# JSON.parse or Reflect.apply cannot break the runner.
RUNTIME_JS = r"""
(function () {
  "use strict";
  const parse = JSON.parse, stringify = JSON.stringify, isArray = Array.isArray,
    keys = Object.keys, getProto = Object.getPrototypeOf, ownNames = Object.getOwnPropertyNames,
    objectProto = Object.prototype, objToString = Object.prototype.toString,
    dateGetTime = Date.prototype.getTime, apply = Reflect.apply, construct = Reflect.construct,
    toExponential = Number.prototype.toExponential, ErrorClass = Error, DateClass = Date,
    SyntaxErrorClass = SyntaxError, InternalErrorClass = typeof InternalError === "function" ? InternalError : Error,
    BigIntFn = BigInt, indirectEval = eval, global = globalThis;
  const TAG_DATE = "\u0000date", TAG_NUM = "\u0000num", MAX_DEPTH = 256;
  const MIN_DATE_MS = -62135596800000, MAX_DATE_MS = 253402300799999;  // years 1..9999 (Python)
  const targets = [];  // handle -> {fn, self}
  let st = null;       // the chunk in progress; kept so the host can salvage finished rows after an interrupt

  // An error in the value a UDF returned, as opposed to an exception the UDF threw.
  function EncodeError(message) { this.message = message; }

  function revive(key, v) {
    if (typeof v === "object" && v !== null && !isArray(v)) {
      const d = v[TAG_DATE];
      if (d !== undefined && keys(v).length === 1) return new DateClass(d);
      const n = v[TAG_NUM];
      if (n !== undefined && keys(v).length === 1) return n === "NaN" ? NaN : n === "Infinity" ? Infinity : -Infinity;
    }
    return v;
  }

  function num(x) {
    if (x >= -9007199254740992 && x <= 9007199254740992) return "" + x;  // exact in JSON as printed
    if (x !== x) { st.tagged = true; return '{"\\u0000num":"NaN"}'; }
    if (x === Infinity) { st.tagged = true; return '{"\\u0000num":"Infinity"}'; }
    if (x === -Infinity) { st.tagged = true; return '{"\\u0000num":"-Infinity"}'; }
    // Beyond 2^53 every Number is whole. Inside int64 print its exact digits (JSON.stringify would
    // print 2^60 as 1152921504606847000); outside, an exponent so that the host reads a float.
    if (x >= -9223372036854775808 && x < 9223372036854775808) return "" + BigIntFn(x);
    return apply(toExponential, x, []);
  }

  function unsupported(v) {
    const t = typeof v;
    const what = t === "object" ? apply(objToString, v, []).slice(8, -1) + " object" : t;
    return new EncodeError("the result holds a " + what + ", which has no ASA type");
  }

  // An array that native JSON.stringify encodes exactly as enc() would: strings, booleans, null
  // and Numbers within ±2^53 only (no undefined, holes, Dates, NaN, big Numbers, nesting).
  function flat(v) {
    if (v.toJSON !== undefined) return false;
    for (let i = 0, n = v.length; i < n; i++) {
      const x = v[i], t = typeof x;
      if (t === "number") {
        if (!(x >= -9007199254740992 && x <= 9007199254740992)) return false;
      } else if (t !== "string" && t !== "boolean" && x !== null) {
        return false;
      }
    }
    return true;
  }

  function enc(v, depth) {
    switch (typeof v) {
      case "number": return num(v);
      case "string": return stringify(v);
      case "boolean": return v ? "true" : "false";
      case "undefined": return "null";
      case "object": {
        if (v === null) return "null";
        if (depth >= MAX_DEPTH) {
          throw new EncodeError("the result is nested deeper than " + MAX_DEPTH + " levels (or is cyclic)");
        }
        if (isArray(v)) {
          if (flat(v)) return stringify(v);  // the common case, natively
          const n = v.length, parts = new Array(n);
          for (let i = 0; i < n; i++) parts[i] = enc(v[i], depth + 1);
          return "[" + parts.join(",") + "]";
        }
        const proto = getProto(v);
        if (proto !== objectProto && proto !== null) {
          const kind = apply(objToString, v, []);
          if (kind === "[object Date]") {
            const ms = apply(dateGetTime, v, []);
            if (ms !== ms) throw new EncodeError("the result holds an invalid Date");
            if (ms < MIN_DATE_MS || ms > MAX_DATE_MS) {
              throw new EncodeError("the result holds a Date outside the years 1-9999");
            }
            st.tagged = true;
            return '{"\\u0000date":' + ms + "}";
          }
          if (kind !== "[object Object]") throw unsupported(v);  // Error, Map, RegExp, Promise, ...
        }
        const ks = keys(v), n = ks.length, parts = new Array(n);
        for (let i = 0; i < n; i++) parts[i] = stringify(ks[i]) + ":" + enc(v[ks[i]], depth + 1);
        return "{" + parts.join(",") + "}";
      }
      default: throw unsupported(v);  // function, symbol, bigint
    }
  }

  function describe(e) {
    try {
      if (e instanceof EncodeError) return e.message;
      if (e instanceof ErrorClass) return e.name + ": " + e.message;
      // A thrown non-Error value (throw "bad input"): show it as JSON where it has a JSON form.
      const json = (typeof e === "object" && e !== null) || typeof e === "string";
      const shown = json ? stringify(e) : String(e);
      return "threw " + shown;
    } catch (_) {
      return "an exception that cannot be described";
    }
  }

  // The line in the user's script: the first frame with a file position. Frames of native
  // functions ("(native)") come without one; this runtime's frames are always below the UDF's.
  function lineOf(e) {
    try {
      if (e instanceof ErrorClass && typeof e.stack === "string") {
        const m = /<input>:(\d+)/.exec(e.stack);
        if (m) return +m[1];
      }
    } catch (_) {}
    return null;
  }

  function isOutOfMemory(e) {
    return e instanceof InternalErrorClass && e.message === "out of memory";
  }

  function finish() {
    return [st.tagged ? "T" : "P", "[[", st.out.join(","), "],", stringify(st.errors), ",",
            st.stop === null ? "null" : stringify(st.stop), "]"].join("");
  }

  function run(handle, method, payload, needsRevive) {
    st = null;
    const t = targets[handle];
    if (t === undefined) throw new ReferenceError("no JavaScript target " + handle);
    const self = method === null ? undefined : t.self;
    const fn = method === null ? t.fn : t.self[method];
    if (typeof fn !== "function") throw new TypeError("the object has no method " + method);
    const rows = needsRevive ? parse(payload, revive) : parse(payload);
    st = { out: [], errors: [], tagged: false, stop: null };
    const out = st.out, errors = st.errors;
    for (let i = 0; i < rows.length; i++) {
      let text;
      try {
        text = enc(apply(fn, self, rows[i]), 0);
      } catch (e) {
        if (isOutOfMemory(e)) { st.stop = ["oom", describe(e)]; break; }  // the host recreates the realm
        errors.push([i, describe(e), lineOf(e)]);
        text = "null";
      }
      out.push(text);
    }
    return finish();
  }

  function evalError(e, shift) {
    const m = typeof e.stack === "string" ? /<input>:(\d+):(\d+)/.exec(e.stack) : null;
    const line = m ? +m[1] : null, col = m ? +m[2] - (line === 1 ? shift : 0) : null;
    return { error: describe(e), line: line, column: col };
  }

  function after(a, b) {  // the syntax error found further into the source
    if (a.line === null) return b;
    if (b.line === null) return a;
    return (b.line > a.line || (b.line === a.line && b.column > a.column)) ? b : a;
  }

  function failure(message) {
    return stringify({ error: message, line: null, column: null });
  }

  function register(fn) {
    targets.push({ fn: fn, self: undefined });
    return stringify({ handle: targets.length - 1, name: fn.name || "", params: fn.length });
  }

  // A script holding one function: `function (x) {...}` (ASA's REST form), a named function,
  // an arrow function, or declarations (one function, or several and one of them named `prefer`).
  function compile(src, prefer) {
    let exprError = null;
    const trimmed = src.replace(/[\s;]+$/, "");  // `function (x) {...};` is a function too
    try {
      const f = indirectEval("(" + trimmed + "\n)");
      if (typeof f === "function") return register(f);
    } catch (e) {
      exprError = evalError(e, 1);
      if (!(e instanceof SyntaxErrorClass)) return stringify(exprError);
    }
    // Script form. Declarations of a strict-mode script stay inside its eval, so a probe appended
    // to the same eval reads the names the source declares; sloppy assignments to new globals
    // (`f = function ...`) are found by comparing the global object before and after.
    const names = declaredNames(src);
    const shadowed = names.map(function (n) { return global[n]; });
    const before = new Set(ownNames(global));
    const probe = "\n;(function () { return [" + names.map(function (n) {
      return "typeof " + n + ' === "function" ? ' + n + " : undefined";
    }).join(",") + "]; })()";
    let declared;
    try {
      declared = indirectEval(src + probe);
    } catch (e) {
      const lines = trimmed.split("\n").length;
      if (e instanceof SyntaxErrorClass) {
        let scriptError = evalError(e, 0);
        if (scriptError.line === null || scriptError.line > lines) {
          // An unterminated construct ran into the probe: take the position from the source alone.
          try { indirectEval(src); } catch (e2) { scriptError = evalError(e2, 0); }
        }
        // Report the syntax error found further into the source, unless the expression form only
        // failed at the ")" it appended after the last line.
        const useExpr = exprError !== null && (exprError.line === null || exprError.line <= lines);
        return stringify(useExpr ? after(exprError, scriptError) : scriptError);
      }
      return stringify(evalError(e, 0));
    }
    const found = [], fns = [];
    for (let i = 0; i < names.length; i++) {
      // A declared name that still reads as the builtin of that name was declared in a nested scope.
      if (typeof declared[i] === "function" && declared[i] !== shadowed[i]) {
        found.push(names[i]);
        fns.push(declared[i]);
      }
    }
    for (const n of ownNames(global)) {
      const v = global[n];
      if (!before.has(n) && typeof v === "function" && fns.indexOf(v) < 0) { found.push(n); fns.push(v); }
    }
    if (found.length === 0) return failure("the script does not define a function");
    if (found.length === 1) return register(fns[0]);
    for (const name of [prefer, "main"]) if (found.indexOf(name) >= 0) return register(fns[found.indexOf(name)]);
    return failure("the script defines several functions (" + found.join(", ") +
                   "); it must hold one function, or name the one to call like the alias");
  }

  // Names a script may declare at its top level: `function name(`, `const|let|var name =`.
  // Names of nested declarations are weeded out by the probe (they are not in scope there).
  function declaredNames(src) {
    const re = /(?:^|[^\w$.])(?:function\s*\*?\s*([A-Za-z_$][\w$]*)\s*\(|(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=)/g;
    const names = [];
    let m;
    while ((m = re.exec(src)) !== null) {
      const n = m[1] || m[2];
      if (names.indexOf(n) < 0) names.push(n);
    }
    return names;
  }

  return function dispatch(op, a, b, c, d) {
    switch (op) {
      case "run": return run(a, b, c, d);
      case "salvage": return st === null ? null : finish();
      case "compile": return compile(a, b);
      case "construct": {
        const t = targets[a];
        targets.push({ fn: null, self: construct(t.fn, []) });
        return targets.length - 1;
      }
    }
    throw new TypeError("unknown operation " + op);
  };
})()
"""


class JsError(Exception):
    """A JavaScript failure that is not one row's: compiling, constructing, a lost realm."""


class JsCompileError(JsError):
    """A script that does not compile, throws while loading, or holds no single function."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        self.message = message
        self.line = line
        self.column = column
        where = f" (line {line}, column {column})" if line is not None and column is not None else (
            f" (line {line})" if line is not None else "")
        super().__init__(message + where)


class JsStateLost(JsError):
    """An object made by ``construct`` is gone: its realm was recreated after a timeout or OOM."""


class _Abort(Exception):
    """A call that threw out of the runtime: ``kind`` is timeout, oom or error."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class JsTarget:
    """A compiled function: its handle in the engine, its JavaScript name and parameter count."""

    handle: int
    name: str
    params: int


@dataclass
class _Attempt:
    """What one crossing achieved: results of its first ``len(values)`` rows, and why it stopped early."""

    values: list[Any]
    errors: dict[int, RowError] = field(default_factory=dict)
    stop: str | None = None          # None, "timeout", "oom" or "error": the row after ``values`` failed
    stop_message: str = ""
    stop_row_known: bool = True      # False when the rows finished before the failure are unknown


class JsEngine(abc.ABC):
    """One isolated JavaScript realm with a per-call time limit and a memory limit.

    The realm is opened lazily and recreated after a call times out or runs out of memory (the
    previous one may hold half-built state, or the garbage that exhausted it); compiled scripts
    are loaded again, objects from ``construct`` are lost (``JsStateLost``). Every public method
    holds the engine's lock: a realm must never run on two threads at once.

    ``label`` starts every row error message (e.g. ``udf.createArray``).
    """

    name = "engine"

    def __init__(self, label: str = "javascript", timeout_ms: int = DEFAULT_TIMEOUT_MS,
                 memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB):
        if timeout_ms <= 0 or memory_limit_mb <= 0:
            raise ValueError("timeout_ms and memory_limit_mb must be positive")
        self.label = label
        self.timeout_ms = timeout_ms
        self.memory_limit_mb = memory_limit_mb
        self.crossings = 0  # calls into the realm that ran rows (a counter for metrics)
        self.resets = 0     # realms recreated after a timeout, OOM or crash
        self.generation = 0
        self._lock = threading.RLock()
        self._open_realm = False
        self._compiled: list[tuple[int, str, str | None]] = []  # (public handle, source, prefer), in order
        self._handles: dict[int, tuple[int, int]] = {}  # public handle → (generation, handle in the realm)
        self._next_handle = 0
        self._tagged = False                               # set by _encode_default during one json encoding

    # -- engine primitives ------------------------------------------------------------------------------

    @abc.abstractmethod
    def _open(self) -> None:
        """Create a fresh realm with the limits applied and ``RUNTIME_JS`` evaluated."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Drop the realm."""

    @abc.abstractmethod
    def _set_time_limit(self, ms: int) -> None:
        """Limit each following call into the realm to ``ms``."""

    @abc.abstractmethod
    def _dispatch(self, op: str, *args: Any) -> Any:
        """Call the runtime's ``dispatch(op, ...args)`` with JSON-safe scalars (str, int, bool, None).

        Raises ``_Abort`` when the call throws out of the runtime.
        """

    # -- public interface -------------------------------------------------------------------------------

    def compile(self, source: str, prefer: str | None = None) -> JsTarget:
        """Evaluate a script holding one function and return it as a callable target.

        ``prefer`` picks the function when the script declares several. Raises ``JsCompileError``.
        """
        with self._lock:
            self._ensure_open()
            try:
                info = self._compile_in_realm(source, prefer)
            except _Abort as e:
                # Top-level code that loops forever or exhausts memory: do not trust that realm.
                self._reset()
                if e.kind == "timeout":
                    raise JsCompileError(f"the script did not finish loading within "
                                         f"{max(self.timeout_ms, MIN_COMPILE_TIME_MS)} ms") from None
                raise JsCompileError(e.message) from None
            public = self._new_handle(info["handle"])
            self._compiled.append((public, source, prefer))
            return JsTarget(public, info["name"], info["params"])

    def construct(self, target: JsTarget | int) -> int:
        """``new F()`` for a compiled constructor function; the object's handle for ``call_batch(method=...)``."""
        with self._lock:
            self._ensure_open()
            inner = self._inner(target)
            self._set_time_limit(self.timeout_ms)
            try:
                made = self._dispatch("construct", inner)
            except _Abort as e:
                if e.kind != "error":
                    self._reset()
                raise JsError(f"{self.label}: constructing the object failed: {e.message}") from None
            return self._new_handle(int(made))

    def call_batch(self, target: JsTarget | int, args_list: Sequence[Sequence[Any]],
                   method: str | None = None) -> list[Any]:
        """Call a function (or ``method`` of a constructed object) once per argument tuple.

        Returns the results in order; a ``RowError`` stands in for a row that failed
        (``js_error``: an exception, an unsupported value or OOM; ``js_timeout``). The chunk
        crosses into the realm once; after a timeout or OOM the realm is recreated and the rest
        of the chunk continues there. A row that was not alone from the start of a crossing when
        it failed runs again alone, so it is charged only for its own time and memory.
        """
        with self._lock:
            self._ensure_open()
            n = len(args_list)
            results: list[Any] = [None] * n
            todo, payload = self._encodable(args_list, results)
            start, solo_once, solo_all = 0, False, False
            while start < len(todo):
                size = 1 if (solo_once or solo_all) else len(todo) - start
                rows = todo[start:start + size]
                if payload is None or start > 0 or size != len(todo):
                    payload = self._encode([args_list[i] for i in rows])
                attempt = self._attempt(self._inner(target), method, payload)
                payload = None
                done = len(attempt.values)
                for j in range(done):
                    results[rows[j]] = attempt.errors.get(j, attempt.values[j])
                start += done
                solo_once = False
                if attempt.stop is None:
                    continue
                if attempt.stop != "error":
                    self._reset()  # an ordinary exception leaves the realm sound; timeouts and OOM do not
                if not attempt.stop_row_known and size > 1:
                    solo_all = True  # nothing tells which row failed: run the rest one at a time
                elif size == 1 or (done == 0 and attempt.stop == "timeout"):
                    # Alone, or first in the crossing: the time limit was all its own.
                    results[todo[start]] = self._stop_error(attempt)
                    start += 1
                else:
                    solo_once = True
            return results

    def close(self) -> None:
        with self._lock:
            if self._open_realm:
                self._close()
                self._open_realm = False

    def __enter__(self) -> JsEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        """Open a realm if none is open, with every compiled script loaded again in order."""
        if self._open_realm:
            return
        self._open()
        self._open_realm = True
        self.generation += 1  # objects from construct() in an earlier realm are gone
        for public, source, prefer in self._compiled:
            try:
                info = self._compile_in_realm(source, prefer)
            except _Abort as e:
                self.close()
                raise JsError(f"{self.label}: the script no longer loads in a fresh context: {e.message}") from None
            self._handles[public] = (self.generation, info["handle"])

    def _reset(self) -> None:
        """A fresh realm: the previous one may hold half-built state or the garbage that exhausted it."""
        self.resets += 1
        self.close()
        self._ensure_open()

    def _inner(self, target: JsTarget | int) -> int:
        public = target.handle if isinstance(target, JsTarget) else int(target)
        if public not in self._handles:
            raise JsError(f"{self.label}: unknown JavaScript target {public}")
        generation, inner = self._handles[public]
        if generation != self.generation:
            raise JsStateLost(f"{self.label}: the JavaScript object was lost when the context was recreated")
        return inner

    def _new_handle(self, inner: int) -> int:
        public = self._next_handle
        self._next_handle += 1
        self._handles[public] = (self.generation, inner)
        return public

    def _compile_in_realm(self, source: str, prefer: str | None) -> dict[str, Any]:
        """Compile in the open realm; raises JsCompileError, or _Abort when loading timed out or ran out of memory."""
        self._set_time_limit(max(self.timeout_ms, MIN_COMPILE_TIME_MS))
        try:
            text = self._dispatch("compile", source, prefer)
        finally:
            self._set_time_limit(self.timeout_ms)
        info = json.loads(text)
        if "error" in info:
            raise JsCompileError(info["error"], info.get("line"), info.get("column"))
        return info

    def _attempt(self, inner: int, method: str | None, payload: tuple[str, bool]) -> _Attempt:
        text, revive = payload
        self.crossings += 1
        try:
            out = self._dispatch("run", inner, method, text, revive)
        except _Abort as e:
            try:
                # The realm survives an interrupt: ask which rows finished before it.
                salvaged = self._dispatch("salvage")
            except _Abort:
                salvaged = None
            if salvaged is None:
                return _Attempt([], stop=e.kind, stop_message=e.message, stop_row_known=False)
            attempt = self._decode(salvaged)
            attempt.stop, attempt.stop_message = e.kind, e.message
            return attempt
        return self._decode(out)

    def _decode(self, text: str) -> _Attempt:
        values, errors, stop = json.loads(text[1:], object_hook=_revive if text[0] == "T" else None)
        attempt = _Attempt(values)
        for index, message, line in errors:
            where = f" (line {line})" if line is not None else ""
            attempt.errors[index] = RowError("js_error", f"{self.label}: {message}{where}")
        if stop is not None:
            attempt.stop, attempt.stop_message = stop
        return attempt

    def _stop_error(self, attempt: _Attempt) -> RowError:
        if attempt.stop == "timeout":
            return RowError("js_timeout", f"{self.label}: no result within the {self.timeout_ms} ms time limit "
                                          "(CPU time); the JavaScript context was recreated")
        if attempt.stop == "oom":
            return RowError("js_error", f"{self.label}: out of memory (limit {self.memory_limit_mb} MB); "
                                        "the JavaScript context was recreated")
        return RowError("js_error", f"{self.label}: {attempt.stop_message}")

    # -- Python → JSON --------------------------------------------------------------------------------

    def _encode_default(self, value: Any) -> Any:
        if isinstance(value, _dt.datetime):
            self._tagged = True
            if value.tzinfo is None:
                value = value.replace(tzinfo=_dt.timezone.utc)  # naive datetimes are UTC, as in ASA
            return {TAG_DATE: (value - _EPOCH) // _MS}  # floor: ms precision, like a JS Date
        raise TypeError(f"a {type(value).__name__} value has no JavaScript type")

    def _encode(self, rows: list[Sequence[Any]]) -> tuple[str, bool]:
        """Argument tuples → (JSON text, whether it holds tagged values). Raises TypeError."""
        self._tagged = False
        try:
            text = json.dumps(rows, default=self._encode_default, allow_nan=False, separators=(",", ":"))
        except ValueError:
            # NaN or ±Infinity somewhere (rare): tag them and encode again.
            text = json.dumps(_tag_non_finite(rows), default=self._encode_default, allow_nan=False,
                              separators=(",", ":"))
            self._tagged = True
        return text, self._tagged

    def _encodable(self, args_list: Sequence[Sequence[Any]], results: list[Any]) -> tuple[list[int], Any]:
        """Indices of rows whose arguments JSON can carry, and the whole chunk's payload if all can."""
        try:
            return list(range(len(args_list))), self._encode(list(args_list))
        except (TypeError, ValueError):
            pass
        todo = []
        for i, args in enumerate(args_list):
            try:
                self._encode([args])
                todo.append(i)
            except (TypeError, ValueError) as e:
                results[i] = RowError("js_error", f"{self.label}: cannot pass the arguments to JavaScript: {e}")
        return todo, None


def _tag_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {TAG_NUM: "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, dict):
        return {k: _tag_non_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tag_non_finite(v) for v in value]
    return value


def _revive(obj: dict) -> Any:
    if len(obj) == 1:
        if TAG_DATE in obj:
            return _EPOCH + _dt.timedelta(milliseconds=obj[TAG_DATE])
        if TAG_NUM in obj:
            return float(obj[TAG_NUM])  # "NaN", "Infinity", "-Infinity"
    return obj


class QuickJsEngine(JsEngine):
    """``JsEngine`` on quickjs-ng: an ES2023 interpreter with no file system, network, module
    loader, ``require`` or ``process`` (none of quickjs-libc is loaded and no Python callable is
    exposed to it), a per-call CPU-time limit and a heap limit.

    QuickJS's time limit counts the CPU time of the whole process from the start of each call,
    so busy threads elsewhere in the process use up a call's budget faster than wall time.
    """

    name = "quickjs"

    def __init__(self, label: str = "javascript", timeout_ms: int = DEFAULT_TIMEOUT_MS,
                 memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB, stack_limit_kb: int = DEFAULT_STACK_LIMIT_KB):
        super().__init__(label, timeout_ms, memory_limit_mb)
        self.stack_limit_kb = stack_limit_kb
        self._context: Any = None
        self._runtime: Any = None

    def _open(self) -> None:
        import quickjs  # imported here: a pipeline that uses no JavaScript never loads it

        context = quickjs.Context()
        context.set_memory_limit(self.memory_limit_mb * 1024 * 1024)
        context.set_max_stack_size(self.stack_limit_kb * 1024)
        context.set_time_limit(max(self.timeout_ms, MIN_COMPILE_TIME_MS) / 1000)
        self._runtime = context.eval(RUNTIME_JS)
        self._context = context
        self._set_time_limit(self.timeout_ms)

    def _close(self) -> None:
        # Drop the function before its context: it holds a reference into it.
        self._runtime = None
        self._context = None

    def _set_time_limit(self, ms: int) -> None:
        self._context.set_time_limit(ms / 1000)

    def _dispatch(self, op: str, *args: Any) -> Any:
        import quickjs

        try:
            return self._runtime(op, *args)
        except quickjs.JSException as e:
            first = str(e).split("\n", 1)[0]
            if first == "InternalError: interrupted":
                raise _Abort("timeout", first) from None
            if first == "InternalError: out of memory":
                raise _Abort("oom", first) from None
            raise _Abort("error", first) from None
        except (TypeError, ValueError, MemoryError) as e:  # the binding could not convert a value
            raise _Abort("error", f"{type(e).__name__}: {e}") from None


ENGINES: dict[str, type[JsEngine]] = {"quickjs": QuickJsEngine}


def make_engine(kind: str = "quickjs", **kwargs: Any) -> JsEngine:
    """An engine by name (``quickjs``); keyword arguments go to its constructor."""
    try:
        cls = ENGINES[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown JavaScript engine '{kind}'; expected one of: {', '.join(ENGINES)}") from None
    return cls(**kwargs)
