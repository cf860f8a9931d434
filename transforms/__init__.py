"""asa-beam: Azure Stream Analytics queries as Apache Beam transforms.

The public API: ``AsaQuery`` (a whole query as a PTransform), the function implementations
``udf.<name>(...)`` binds to, and the ``DeadLetter`` record every failed row becomes.
"""

from transforms.deadletter import FAILED, DeadLetter, RowError
from transforms.errors import AsaError, EndpointConfigError, FunctionConfigError, QueryError
from transforms.functions.azureml import AzureMLConfig, AzureMLFunction, ScoreRows
from transforms.functions.base import AsaFunction, CallSite, ScalarFunction
from transforms.functions.javascript import JavaScriptFunction, JavaScriptUdf
from transforms.functions.python import PythonFunction
from transforms.functions.registry import FunctionRegistry
from transforms.operators.compile import AsaQuery, EventOrdering, QueryOutputs

__all__ = [
    "FAILED", "AsaError", "AsaFunction", "AsaQuery", "AzureMLConfig", "AzureMLFunction", "CallSite", "DeadLetter",
    "EndpointConfigError", "EventOrdering", "FunctionConfigError", "FunctionRegistry", "JavaScriptFunction",
    "JavaScriptUdf", "PythonFunction", "QueryError", "QueryOutputs", "RowError", "ScalarFunction", "ScoreRows",
]
