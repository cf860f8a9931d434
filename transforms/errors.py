"""Errors that stop a job before (or instead of) processing data."""

from __future__ import annotations


class AsaError(Exception):
    """Base class: a problem with the job, the query or a function's configuration."""


class QueryError(AsaError):
    """A query that does not parse or does not bind; carries line:column (1-based)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        self.message = message
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)


class FunctionConfigError(AsaError):
    """A function whose configuration cannot work (bad swagger, JS that does not compile, ...)."""


class JobConfigError(AsaError):
    """A job file that is missing something or names something that does not exist."""


class EndpointConfigError(AsaError):
    """An endpoint answering 401/403/404: the job must stop at once.

    The message names the function, the URL and the status, never the key.
    """

    def __init__(self, function: str, url: str, status: int, detail: str = ""):
        self.function = function
        self.url = url
        self.status = status
        self.detail = detail
        msg = f"function '{function}': endpoint {url} answered HTTP {status}"
        if detail:
            msg += f" ({detail})"
        msg += "; check the endpoint URL and key. The job was stopped."
        super().__init__(msg)

    def __reduce__(self):
        return (EndpointConfigError, (self.function, self.url, self.status, self.detail))
