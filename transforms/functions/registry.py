"""``udf.<name>`` → implementation: the registry the compiler binds calls through.

Names are case-insensitive, like every ASA identifier. Function types from a job file's
``functions:`` section are built by the factories in ``FUNCTION_TYPES``; each takes
``(alias, config dict, base directory)`` and returns an ``AsaFunction``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from transforms.errors import FunctionConfigError
from transforms.functions.base import AsaFunction

# type name → "module:factory"; imported lazily so a job pays only for the kinds it uses.
FUNCTION_TYPES: dict[str, str] = {
    "python": "transforms.functions.python:from_config",
    "javascript": "transforms.functions.javascript:from_config",
    "javascript_uda": "transforms.functions.javascript.uda:from_config",
    "azureml": "transforms.functions.azureml:from_config",
}


class FunctionRegistry:
    """The functions a query may call, by alias (case-insensitive)."""

    def __init__(self, functions: Iterable[AsaFunction] | Mapping[str, AsaFunction] | None = None):
        self._by_key: dict[str, AsaFunction] = {}
        if isinstance(functions, Mapping):
            for alias, fn in functions.items():
                if fn.alias.lower() != alias.lower():
                    raise FunctionConfigError(f"function registered as '{alias}' is named '{fn.alias}'")
                self.register(fn)
        else:
            for fn in functions or ():
                self.register(fn)

    def register(self, function: AsaFunction) -> None:
        key = function.alias.lower()
        if key in self._by_key:
            raise FunctionConfigError(f"function '{function.alias}' is defined twice")
        self._by_key[key] = function

    def lookup(self, alias: str) -> AsaFunction | None:
        return self._by_key.get(alias.lower())

    def __iter__(self):
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    def validate(self) -> None:
        for fn in self:
            fn.validate()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, base_dir: Path | str = ".") -> FunctionRegistry:
        """Build functions from a job file's ``functions:`` mapping."""
        registry = cls()
        for alias, spec in (config or {}).items():
            if not isinstance(spec, Mapping) or "type" not in spec:
                raise FunctionConfigError(
                    f"function '{alias}': expected a mapping with a 'type' ({', '.join(FUNCTION_TYPES)})"
                )
            kind = str(spec["type"]).lower()
            if kind not in FUNCTION_TYPES:
                raise FunctionConfigError(
                    f"function '{alias}': unknown type '{spec['type']}'; expected one of {', '.join(FUNCTION_TYPES)}"
                )
            registry.register(_factory(kind)(alias, dict(spec), Path(base_dir)))
        return registry


def _factory(kind: str) -> Callable[[str, dict, Path], AsaFunction]:
    module, _, attr = FUNCTION_TYPES[kind].partition(":")
    return getattr(importlib.import_module(module), attr)
