"""Python callables as ``udf.<name>(...)``: for tests, and for users with Python logic.

Job file::

    functions:
      plus1: {type: python, callable: "mypkg.udfs:plus_one", output_type: bigint}
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transforms import types
from transforms.deadletter import RowError
from transforms.errors import FunctionConfigError
from transforms.functions.base import ScalarFunction


class PythonFunction(ScalarFunction):
    """A Python callable as an ASA scalar UDF; its result is converted to ``output_type``.

    An exception raised by the callable dead-letters the row (``reason: udf_error``).

    >>> f = PythonFunction("plus1", lambda x: x + 1, output_type="bigint")
    >>> f.call_batch([(1,), ("x",)])[0]
    2
    """

    kind = "python"

    def __init__(self, alias: str, fn: Callable[..., Any], output_type: str = types.ANY,
                 arity: tuple[int, int | None] | None = None):
        super().__init__(alias)
        self.fn = fn
        self.output_type = types.normalize_type(output_type)
        self._arity = arity

    def arity(self) -> tuple[int, int | None]:
        return self._arity or (0, None)

    def describe(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"python function {self.alias} = {name} -> {self.output_type}"

    def call_batch(self, args_list: Sequence[tuple]) -> list[Any]:
        out: list[Any] = []
        for args in args_list:
            try:
                out.append(types.implicit(self.fn(*args), self.output_type))
            except RowError as e:
                out.append(e)
            except Exception as e:  # the user's code: any failure is this row's failure
                out.append(RowError("udf_error", f"udf.{self.alias} raised {type(e).__name__}: {e}"))
        return out


def from_config(alias: str, spec: dict, base_dir: Path) -> PythonFunction:
    target = spec.get("callable")
    if not isinstance(target, str) or ":" not in target:
        raise FunctionConfigError(f"function '{alias}': 'callable' must be 'module:function'")
    module, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise FunctionConfigError(f"function '{alias}': cannot import {target}: {e}") from None
    try:
        output_type = spec.get("output_type", types.ANY)
        return PythonFunction(alias, fn, output_type=output_type)
    except ValueError as e:
        raise FunctionConfigError(f"function '{alias}': {e}") from None
