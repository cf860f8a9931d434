"""JavaScript UDFs on a sandboxed JavaScript engine (QuickJS): ``udf.<alias>(...)`` and a Beam transform.

``JavaScriptFunction`` is what a job file's ``type: javascript`` function becomes
(``from_config``); ``JavaScriptUdf`` applies a JavaScript function to the rows of any Beam
pipeline. The engine interface (``JsEngine``) and the type mapping live in ``engine``.
"""

from transforms.functions.javascript.engine import (
    JsCompileError,
    JsEngine,
    JsError,
    JsStateLost,
    JsTarget,
    QuickJsEngine,
    make_engine,
)
from transforms.functions.javascript.transform import (
    JavaScriptFunction,
    JavaScriptUdf,
    from_config,
    load_script,
)

__all__ = [
    "JavaScriptFunction",
    "JavaScriptUdf",
    "JsCompileError",
    "JsEngine",
    "JsError",
    "JsStateLost",
    "JsTarget",
    "QuickJsEngine",
    "from_config",
    "load_script",
    "make_engine",
]
