"""An Azure ML endpoint's swagger → the signature of ``udf.<alias>(x)``.

Azure Stream Analytics infers an ML function's signature from the endpoint's swagger; the
rules are not documented, so asa-beam uses these (asa-reference §2.4), for swagger 2.0 and
OpenAPI 3.x alike:

1. **Operation.** The POST operation whose path (after ``basePath`` / the server URL's path)
   equals the endpoint URL's path; else the POST path ending in ``/score``; else the only POST.
2. **Request envelope.** The body schema of that operation (``$ref`` resolved):

   * a property ``Inputs`` that is an object with exactly one array property → designer style:
     ``{"Inputs": {"WebServiceInput0": [rows]}, "GlobalParameters": {}}``;
   * otherwise exactly one top-level array property → inference-schema style ``{"data": [rows]}``
     (whatever its name);
   * a body that is itself an array → the rows are the body.

   Other top-level members of the request are sent with the value of the schema's ``example``
   (``GlobalParameters`` defaults to ``{}``); required members without an example are an error.
3. **Row shape.** The ``items`` of that array: an object with ``properties`` → a *record* with
   named, typed columns; an ``array`` → an *array* of values (one item type, or positional types
   with ``prefixItems``); a scalar type → a *scalar*; no type → *any* (sent unchecked).
4. **Results.** The schema of the 200 (else first 2xx) response: an array → the body; an object
   with a ``Results`` object holding one array property → ``Results.<name>``; an object with one
   array property → that property.
5. **Types.** ``integer`` → bigint, ``number`` → float, ``string`` → nvarchar(max)
   (``format: date-time`` → datetime, sent as ISO 8601), ``boolean`` → bit, ``object`` → record,
   ``array`` → array, none → any.

A swagger that does not fit raises ``SwaggerError`` naming what is missing.

>>> sig = parse_swagger({"swagger": "2.0", "paths": {"/score": {"post": {
...     "parameters": [{"in": "body", "name": "b", "schema": {"type": "object", "properties": {
...         "data": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}}}],
...     "responses": {"200": {"schema": {"type": "array", "items": {"type": "number"}}}}}}}})
>>> sig.envelope([[1.0, 2.0]])
{'data': [[1.0, 2.0]]}
>>> sig.converter()(["1", 2])
[1.0, 2.0]
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from transforms import types
from transforms.deadletter import RowError, format_datetime
from transforms.query.plan import HIDDEN_PREFIX

RECORD, ARRAY, SCALAR, ANY = "record", "array", "scalar", "any"  # row / result shapes
SCHEMA_MISMATCH = "schema_mismatch"


class SwaggerError(ValueError):
    """The swagger cannot be read or does not describe a scoring operation we understand."""


class Column(NamedTuple):
    """One named input column of a record-shaped row."""

    name: str
    type: str  # ASA type name (transforms.types), "any" when undeclared
    required: bool
    schema: dict  # the resolved swagger schema of the column


@dataclass(frozen=True)
class SwaggerSignature:
    """What the swagger says about one scoring operation; everything the client needs.

    ``request_path`` is where the rows go in the request body (``("Inputs", "WebServiceInput0")``,
    ``("data",)`` or ``()`` for a bare array); ``request_extra`` holds the other top-level
    members to send. ``response_path`` is where the results are in the response body.
    """

    request_path: tuple[str, ...]
    row_shape: str  # RECORD, ARRAY, SCALAR or ANY
    row_schema: dict = field(repr=False)  # resolved ``items`` schema of the input array
    response_path: tuple[str, ...] = ()
    result_shape: str = ANY
    request_extra: dict = field(default_factory=dict)
    columns: tuple[Column, ...] = ()
    item_type: str = types.ANY  # ARRAY / SCALAR rows: the type of each value
    result_fields: tuple[str, ...] = ()
    operation: str = "/score"
    version: str = "2.0"
    source: str = ""

    @property
    def style(self) -> str:
        """``designer``, ``inference-schema`` or ``bare`` (for describe/logs)."""
        if len(self.request_path) == 2:
            return "designer"
        return "inference-schema" if self.request_path else "bare"

    def envelope(self, rows: list) -> Any:
        """The request body for these (already converted) rows."""
        if not self.request_path:
            return rows
        inner: Any = rows
        for key in reversed(self.request_path[1:]):
            inner = {key: inner}
        body = {self.request_path[0]: inner}
        body.update(self.request_extra)
        return body

    def results(self, body: Any) -> list:
        """The per-row results in a response body; ValueError when they are not where the swagger says."""
        if isinstance(body, str):  # scoring scripts that return json.dumps(...) are double encoded
            try:
                body = json.loads(body)
            except ValueError:
                raise ValueError("the response is a string, not the declared JSON") from None
        node = body
        for i, key in enumerate(self.response_path):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(self.response_path[: i + 1])
                raise ValueError(f"the response has no '{where}' (got {_shape_of(node)})")
            node = node[key]
        if not isinstance(node, list):
            where = ".".join(self.response_path) or "body"
            raise ValueError(f"the response's {where} is {_shape_of(node)}, not an array of results")
        return node

    def converter(self) -> Callable[[Any], Any]:
        """A function: UDF argument → the JSON-ready row to send; raises RowError(schema_mismatch).

        NULL input is a mismatch; values are converted to the declared types with ASA's implicit
        conversions (``"3"`` → 3 for an integer column, 3 → ``"3"`` for a string column, ...).
        """
        return _row_converter(self)

    def record_reader(self) -> Callable[[dict], dict | None] | None:
        """For records: a function reading the declared columns straight from a query row, or
        None when a value needs the converter (missing, another type, out of range, not finite);
        None for other row shapes.

        It only reads the declared columns, so hidden columns of the row (names starting with
        NUL) are never read and the row need not be stripped of them first; what it returns is
        what ``converter()`` returns for the stripped row.
        """
        if self.row_shape != RECORD:
            return None
        fast = getattr(_record_converter(self.row_schema, "input"), "fast", None)
        if fast is None or any(c.name.startswith(HIDDEN_PREFIX) for c in self.columns):
            return None
        return fast

    def describe(self) -> str:
        if self.row_shape == RECORD and self.columns:
            row = "record(" + ", ".join(f"{c.name} {c.type}" for c in self.columns) + ")"
        elif self.row_shape == ARRAY:
            row = f"array of {self.item_type}"
        elif self.row_shape == SCALAR:
            row = self.item_type
        else:
            row = self.row_shape
        if self.result_shape == RECORD and self.result_fields:
            result = "record(" + ", ".join(self.result_fields) + ")"
        else:
            result = self.result_shape
        req = ".".join(self.request_path) or "<body>"
        resp = ".".join(self.response_path) or "<body>"
        return f"{row} -> {result} ({self.style}: {req} -> {resp})"


# ---------------------------------------------------------------------------------------------
# Reading


def load_swagger_document(source: str | Path | Mapping, base_dir: Path | str = ".",
                          headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> dict:
    """The swagger as a dict, from a URL (http/https), a local JSON/YAML file, or a dict."""
    if isinstance(source, Mapping):
        return dict(source)
    text = str(source)
    if text.startswith(("http://", "https://")):
        import requests

        try:
            resp = requests.get(text, headers=dict(headers or {}), timeout=timeout)
        except requests.RequestException as e:
            raise SwaggerError(f"cannot fetch the swagger from {_safe_url(text)}: {type(e).__name__}") from None
        if resp.status_code != 200:
            raise SwaggerError(f"cannot fetch the swagger from {_safe_url(text)}: HTTP {resp.status_code}")
        try:
            doc = resp.json()
        except ValueError:
            raise SwaggerError(f"the swagger at {_safe_url(text)} is not JSON") from None
    else:
        path = Path(text[7:] if text.startswith("file://") else text)
        if not path.is_absolute():
            path = Path(base_dir) / path
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as e:
            raise SwaggerError(f"cannot read the swagger file {path}: {e.strerror or e}") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                doc = yaml.safe_load(raw)
            else:
                doc = json.loads(raw)
        except ValueError as e:
            raise SwaggerError(f"the swagger file {path} does not parse: {e}") from None
    if not isinstance(doc, dict):
        raise SwaggerError("the swagger is not a JSON object")
    return doc


def default_swagger_url(endpoint: str) -> str:
    """``http://h:5001/score`` → ``http://h:5001/swagger.json`` (the file beside the endpoint)."""
    parts = urlsplit(endpoint)
    head, _, _ = parts.path.rpartition("/")
    return parts._replace(path=f"{head}/swagger.json", query="", fragment="").geturl()


def parse_swagger(doc: Mapping, endpoint: str | None = None, source: str = "") -> SwaggerSignature:
    """Derive the signature of the scoring operation; SwaggerError names what is missing."""
    doc = dict(doc)
    if "openapi" in doc:
        version = str(doc["openapi"])
    elif "swagger" in doc:
        version = str(doc["swagger"])
    else:
        raise SwaggerError("the document has neither 'swagger' (2.0) nor 'openapi' (3.x) version field")
    oas3 = version.startswith("3")
    if not version.startswith(("2", "3")):
        raise SwaggerError(f"unsupported swagger/OpenAPI version {version}")
    r = _Resolver(doc)
    path, op = _find_operation(doc, oas3, endpoint)

    req_schema = _request_schema(r, op, oas3, path)
    request_path, row_schema, container = _find_rows(r, req_schema, "Inputs", f"request body of POST {path}")
    extra = _request_extra(r, req_schema, container, request_path, op, oas3)

    resp_schema = _response_schema(r, op, oas3, path)
    response_path, result_schema, _ = _find_rows(r, resp_schema, "Results", f"200 response of POST {path}")

    row_shape, columns, item_type = _row_shape(r, row_schema)
    result_shape, result_fields, _ = _row_shape(r, result_schema)
    return SwaggerSignature(
        request_path=request_path, row_shape=row_shape, row_schema=r.deep(row_schema),
        response_path=response_path, result_shape=result_shape, request_extra=extra,
        columns=columns, item_type=item_type,
        result_fields=tuple(c.name for c in result_fields), operation=path, version=version,
        source=source,
    )


class _Resolver:
    """Local ``$ref`` resolution (``#/definitions/...``, ``#/components/schemas/...``)."""

    def __init__(self, doc: dict):
        self.doc = doc

    def __call__(self, node: Any, what: str = "schema") -> Any:
        seen: set[str] = set()
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise SwaggerError(f"{what}: only local references (#/...) are supported, got {ref!r}")
            if ref in seen:
                raise SwaggerError(f"{what}: circular reference {ref}")
            seen.add(ref)
            target: Any = self.doc
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise SwaggerError(f"{what}: reference {ref} points to nothing")
                target = target[part]
            node = target
        if isinstance(node, dict) and "allOf" in node and isinstance(node["allOf"], list):
            merged: dict = {k: v for k, v in node.items() if k != "allOf"}
            props: dict = dict(merged.get("properties") or {})
            required: list = list(merged.get("required") or [])
            for part in node["allOf"]:
                part = self(part, what)
                if isinstance(part, dict):
                    props.update(part.get("properties") or {})
                    required += list(part.get("required") or [])
                    for k in ("type", "items", "example"):
                        if k in part and k not in merged:
                            merged[k] = part[k]
            if props:
                merged["properties"] = props
                merged.setdefault("type", "object")
            if required:
                merged["required"] = required
            node = merged
        return node

    def deep(self, node: Any, depth: int = 0) -> Any:
        """A copy with every reference resolved (bounded depth), so the signature stands alone."""
        if depth > 32:
            return {}
        node = self(node)
        if isinstance(node, dict):
            return {k: self.deep(v, depth + 1) for k, v in node.items() if k != "example"}
        if isinstance(node, list):
            return [self.deep(v, depth + 1) for v in node]
        return node


def _find_operation(doc: dict, oas3: bool, endpoint: str | None) -> tuple[str, dict]:
    paths = doc.get("paths")
    if not isinstance(paths, dict) or not paths:
        raise SwaggerError("the swagger has no 'paths'")
    posts = {p: item["post"] for p, item in paths.items()
             if isinstance(item, dict) and isinstance(item.get("post"), dict)}
    if not posts:
        raise SwaggerError(f"the swagger has no POST operation (paths: {', '.join(paths)})")
    if endpoint:
        want = urlsplit(endpoint).path.rstrip("/") or "/"
        for prefix in _path_prefixes(doc, oas3):
            for p, op in posts.items():
                if ((prefix + "/" + p.lstrip("/")).rstrip("/") or "/") == want:
                    return p, op
    scoring = [p for p in posts if p.rstrip("/").endswith("/score")]
    if len(scoring) == 1:
        return scoring[0], posts[scoring[0]]
    if len(posts) == 1:
        return next(iter(posts.items()))
    raise SwaggerError(
        "cannot tell which POST operation scores: none matches the endpoint path and several exist "
        f"({', '.join(posts)})"
    )


def _path_prefixes(doc: dict, oas3: bool) -> list[str]:
    prefixes = [""]
    if oas3:
        for server in doc.get("servers") or []:
            if isinstance(server, dict) and isinstance(server.get("url"), str):
                prefixes.append(urlsplit(server["url"]).path.rstrip("/"))
    elif isinstance(doc.get("basePath"), str):
        prefixes.append(doc["basePath"].rstrip("/"))
    return prefixes


def _json_content(r: _Resolver, holder: Any, what: str) -> dict | None:
    holder = r(holder, what)
    content = holder.get("content") if isinstance(holder, dict) else None
    if not isinstance(content, dict) or not content:
        return None
    for mime, media in content.items():
        if "json" in mime.lower() and isinstance(media, dict):
            return media
    media = next(iter(content.values()))
    return media if isinstance(media, dict) else None


def _request_schema(r: _Resolver, op: dict, oas3: bool, path: str) -> dict:
    what = f"request body of POST {path}"
    if oas3:
        media = _json_content(r, op.get("requestBody"), what)
        if media is None or "schema" not in media:
            raise SwaggerError(f"POST {path} declares no requestBody with a JSON schema")
        schema = media["schema"]
        if isinstance(media.get("example"), dict) and isinstance(r(schema), dict) and "example" not in r(schema):
            schema = {**r(schema), "example": media["example"]}
        return schema
    for param in op.get("parameters") or []:
        param = r(param, what)
        if isinstance(param, dict) and param.get("in") == "body":
            if "schema" not in param:
                raise SwaggerError(f"the body parameter of POST {path} has no schema")
            return param["schema"]
    raise SwaggerError(f"POST {path} declares no body parameter (the rows' schema is missing)")


def _response_schema(r: _Resolver, op: dict, oas3: bool, path: str) -> dict:
    responses = op.get("responses")
    if not isinstance(responses, dict):
        raise SwaggerError(f"POST {path} declares no responses")
    codes = [c for c in responses if str(c) == "200"] or sorted(c for c in responses if str(c).startswith("2"))
    if not codes:
        raise SwaggerError(f"POST {path} declares no 200 response (the results' schema is missing)")
    resp = r(responses[codes[0]], f"response {codes[0]} of POST {path}")
    if oas3:
        media = _json_content(r, resp, f"response {codes[0]} of POST {path}")
        schema = media.get("schema") if media else None
    else:
        schema = resp.get("schema") if isinstance(resp, dict) else None
    if schema is None:
        raise SwaggerError(f"the {codes[0]} response of POST {path} has no schema (the results' shape is missing)")
    return schema


def _type_name(schema: Any) -> str | None:
    if not isinstance(schema, dict):
        return None
    t = schema.get("type")
    if isinstance(t, list):  # OpenAPI 3.1: ["number", "null"]
        t = next((x for x in t if x != "null"), None)
    if t is None:
        if "properties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
    return t


def _nullable(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return True
    t = schema.get("type")
    return bool(schema.get("nullable") or schema.get("x-nullable") or (isinstance(t, list) and "null" in t))


def _find_rows(r: _Resolver, schema: Any, wrapper: str, what: str) -> tuple[tuple[str, ...], Any, dict]:
    """(path to the array of rows, the array's item schema, the top-level schema)."""
    s = r(schema, what)
    if not isinstance(s, dict):
        raise SwaggerError(f"the {what} schema is not an object")
    if _type_name(s) == "array":
        return (), _items(r, s, what), s
    props = s.get("properties")
    if not isinstance(props, dict) or not props:
        raise SwaggerError(
            f"the {what} schema is neither an array nor an object with properties "
            "(expected e.g. {\"data\": [rows]} or {\"" + wrapper + "\": {\"...\": [rows]}})"
        )
    for name, sub in props.items():
        if name.lower() == wrapper.lower():
            inner = r(sub, what)
            inner_props = inner.get("properties") if isinstance(inner, dict) else None
            if isinstance(inner_props, dict):
                arrays = [k for k, v in inner_props.items() if _type_name(r(v, what)) == "array"]
                if len(arrays) == 1:
                    return (name, arrays[0]), _items(r, r(inner_props[arrays[0]], what), what), s
                if len(arrays) > 1:
                    raise SwaggerError(
                        f"the {what} declares several arrays in '{name}' ({', '.join(arrays)}); "
                        "an ML function takes exactly one input"
                    )
                raise SwaggerError(f"'{name}' in the {what} holds no array of rows")
    arrays = [k for k, v in props.items() if _type_name(r(v, what)) == "array"]
    if len(arrays) == 1:
        return (arrays[0],), _items(r, r(props[arrays[0]], what), what), s
    if not arrays:
        raise SwaggerError(
            f"the {what} has no array property for the rows (properties: {', '.join(props)})"
        )
    raise SwaggerError(
        f"the {what} has several array properties ({', '.join(arrays)}); cannot tell which holds the rows")


def _items(r: _Resolver, array_schema: dict, what: str) -> Any:
    items = array_schema.get("items")
    if items is None and "prefixItems" in array_schema:
        return {"type": "array", "prefixItems": array_schema["prefixItems"]}
    if isinstance(items, list):
        return {"type": "array", "prefixItems": items}
    return r(items, what) if items is not None else {}


def _asa_type(schema: Any) -> str:
    t = _type_name(schema)
    if t == "integer":
        return types.BIGINT
    if t == "number":
        return types.FLOAT
    if t == "string":
        fmt = schema.get("format") if isinstance(schema, dict) else None
        return types.DATETIME if fmt == "date-time" else types.NVARCHAR
    if t == "boolean":
        return types.BIT
    if t == "object":
        return types.RECORD
    if t == "array":
        return types.ARRAY
    return types.ANY


def _row_shape(r: _Resolver, items: Any) -> tuple[str, tuple[Column, ...], str]:
    items = r(items)
    t = _type_name(items)
    if t == "object":
        props = items.get("properties") or {}
        required = set(items.get("required") or [])
        cols = tuple(Column(name, _asa_type(r(sub)), name in required, r.deep(sub)) for name, sub in props.items())
        return RECORD, cols, types.RECORD
    if t == "array":
        inner = items.get("items")
        item_type = _asa_type(r(inner)) if isinstance(inner, dict) else types.ANY
        return ARRAY, (), item_type
    if t is None:
        return ANY, (), types.ANY
    return SCALAR, (), _asa_type(items)


def _request_extra(r: _Resolver, top: Any, container: dict, request_path: tuple[str, ...],
                   op: dict, oas3: bool) -> dict:
    if not request_path:
        return {}
    props = container.get("properties") or {}
    example = container.get("example")
    if not isinstance(example, dict):
        example = {}
    required = set(container.get("required") or [])
    extra: dict = {}
    for name, sub in props.items():
        if name == request_path[0]:
            continue
        if name in example:
            extra[name] = example[name]
        elif name == "GlobalParameters" or (name in required and _type_name(r(sub)) == "object"):
            extra[name] = {}
        elif name in required:
            raise SwaggerError(
                f"the request requires '{name}' besides the rows, and the swagger gives no example value for it"
            )
    return extra


# ---------------------------------------------------------------------------------------------
# Converting UDF arguments to request rows


class _Mismatch(Exception):
    pass


def _shape_of(value: Any) -> str:
    t = types.type_of(value)
    return "NULL" if t == "null" else t


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _scalar_converter(asa_type: str, schema: Any, label: str, r: _Resolver | None = None) -> Callable[[Any], Any]:
    """value (not None) → JSON-ready value of the declared type, or _Mismatch."""
    fmt = schema.get("format") if isinstance(schema, dict) else None

    if asa_type == types.BIGINT:
        lo, hi = (-(2**31), 2**31 - 1) if fmt == "int32" else (types.INT64_MIN, types.INT64_MAX)

        def conv(v):
            if type(v) is not int:
                if isinstance(v, (dict, list, tuple)):
                    raise _Mismatch(f"{label} expects an integer, got {_shape_of(v)}")
                try:
                    v = types.implicit(v, types.BIGINT)
                except RowError:
                    raise _Mismatch(f"{label} expects an integer, got {_shape_of(v)} {_short(v)}") from None
            if not lo <= v <= hi:
                raise _Mismatch(f"{label} expects an {fmt or 'int64'}, {v} is out of range")
            return v

        return conv
    if asa_type == types.FLOAT:
        def conv(v):
            if type(v) is float:
                if math.isfinite(v):
                    return v
            elif type(v) is int:
                return float(v)
            elif not isinstance(v, (dict, list, tuple)):
                try:
                    v = types.implicit(v, types.FLOAT)
                except RowError:
                    raise _Mismatch(f"{label} expects a number, got {_shape_of(v)} {_short(v)}") from None
                if math.isfinite(v):
                    return v
            else:
                raise _Mismatch(f"{label} expects a number, got {_shape_of(v)}")
            raise _Mismatch(f"{label} expects a finite number, got {v!r}")

        return conv
    if asa_type == types.NVARCHAR:
        def conv(v):
            if type(v) is str:
                return v
            if isinstance(v, (dict, list, tuple)):
                raise _Mismatch(f"{label} expects a string, got {_shape_of(v)}")
            return types.to_nvarchar(v)

        return conv
    if asa_type == types.DATETIME:
        def conv(v):
            try:
                return format_datetime(types.to_datetime(v))
            except RowError:
                raise _Mismatch(f"{label} expects a date-time, got {_shape_of(v)} {_short(v)}") from None

        return conv
    if asa_type == types.BIT:
        def conv(v):
            if type(v) is bool:
                return v
            try:
                return types.to_bit(v)
            except RowError:
                raise _Mismatch(f"{label} expects a boolean, got {_shape_of(v)} {_short(v)}") from None

        return conv
    if asa_type == types.RECORD:
        return _record_converter(schema, label)
    if asa_type == types.ARRAY:
        return _array_converter(schema, label)
    return lambda v: v


def _value_converter(schema: Any, label: str) -> Callable[[Any], Any]:
    """Like _scalar_converter but NULL is accepted when the schema is nullable."""
    conv = _scalar_converter(_asa_type(schema), schema, label)
    nullable = _nullable(schema)

    def convert(v):
        if v is None:
            if nullable:
                return None
            raise _Mismatch(f"{label} is NULL")
        return conv(v)

    return convert


def _record_converter(schema: Any, label: str) -> Callable[[Any], Any]:
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not props:
        def passthrough(v):
            if not isinstance(v, dict):
                raise _Mismatch(f"{label} expects a record, got {_shape_of(v)}")
            return v

        return passthrough
    required = set(schema.get("required") or [])
    fields = []
    for name, sub in props.items():
        sub = sub if isinstance(sub, dict) else {}
        conv = _scalar_converter(_asa_type(sub), sub, f"{label}.{name}" if label != "input" else f"column '{name}'")
        nullable = _nullable(sub) or name not in required
        fields.append((name, name.lower(), conv, name in required, nullable))
    names = tuple(f[0] for f in fields)
    # The common row already holds every column under its declared name with the declared
    # Python type: (name, exact type, integer bounds) lets it be copied without a call per value;
    # anything else (other names, types, NULL, out of range) takes the general path below.
    exact = []
    for name, sub in props.items():
        sub = sub if isinstance(sub, dict) else {}
        asa = _asa_type(sub)
        if asa == types.BIGINT:
            bounds = (-(2**31), 2**31 - 1) if sub.get("format") == "int32" else (types.INT64_MIN, types.INT64_MAX)
            exact.append((name, int, bounds))
        elif asa == types.FLOAT:
            exact.append((name, float, None))
        elif asa == types.NVARCHAR:
            exact.append((name, str, None))
        else:
            exact = None
            break

    fast = _exact_record_function(exact) if exact else None

    def convert(v):
        if fast is not None and type(v) is dict:
            out = fast(v)
            if out is not None:
                return out
        if isinstance(v, (list, tuple)):  # positional: an array with one value per column
            if len(v) != len(fields):
                raise _Mismatch(f"{label} expects a record of {len(fields)} columns ({', '.join(names)}), "
                                f"got an array of {len(v)} values")
            v = dict(zip(names, v, strict=True))
        elif not isinstance(v, dict):
            raise _Mismatch(f"{label} expects a record, got {_shape_of(v)}")
        out = {}
        lowered = None
        for name, low, conv, req, nullable in fields:
            if name in v:
                x = v[name]
            else:  # ASA names are case-insensitive: fall back to a case-insensitive match
                if lowered is None:
                    lowered = {k.lower(): k for k in v}
                k = lowered.get(low)
                if k is None:
                    if req:
                        raise _Mismatch(f"{label} lacks required column '{name}'")
                    continue
                x = v[k]
            if x is None:
                if nullable:
                    out[name] = None
                    continue
                raise _Mismatch(f"column '{name}' is NULL")
            out[name] = conv(x)
        return out

    convert.fast = fast  # type: ignore[attr-defined]
    return convert


def _exact_record_function(exact: list[tuple[str, type, tuple[int, int] | None]]) -> Callable[[dict], dict | None]:
    """A generated function: the row copied with its declared columns, or None when a value is
    missing, of another Python type, out of range or not finite (the general path decides then).

    One line per column instead of a loop over them: this runs once per scored row.
    """
    lines = ["def fast(v):", "    get = v.get"]
    for i, (name, t, bounds) in enumerate(exact):
        x = f"x{i}"
        lines.append(f"    {x} = get({name!r})")  # repr: any column name is a safe literal
        if t is int:
            lines.append(f"    if type({x}) is not int or not {bounds[0]} <= {x} <= {bounds[1]}: return None")
        elif t is float:  # x - x is 0.0 for every finite float, NaN for NaN and ±Infinity
            lines.append(f"    if type({x}) is not float or {x} - {x} != 0.0: return None")
        else:
            lines.append(f"    if type({x}) is not str: return None")
    lines.append("    return {" + ", ".join(f"{name!r}: x{i}" for i, (name, _, _) in enumerate(exact)) + "}")
    env: dict[str, Any] = {"__builtins__": {"type": type, "int": int, "float": float, "str": str}}
    exec(compile("\n".join(lines), "<swagger-record>", "exec"), env)  # noqa: S102 - names are repr() literals
    return env["fast"]


def _array_converter(schema: Any, label: str) -> Callable[[Any], Any]:
    prefix = schema.get("prefixItems") if isinstance(schema, dict) else None
    if isinstance(prefix, list):
        convs = [_value_converter(s if isinstance(s, dict) else {}, f"{label}[{i}]") for i, s in enumerate(prefix)]

        def positional(v):
            if not isinstance(v, (list, tuple)):
                raise _Mismatch(f"{label} expects an array, got {_shape_of(v)}")
            if len(v) != len(convs):
                raise _Mismatch(f"{label} expects {len(convs)} values, got {len(v)}")
            return [c(x) for c, x in zip(convs, v, strict=True)]

        return positional
    items = schema.get("items") if isinstance(schema, dict) else None
    if not isinstance(items, dict) or _type_name(items) is None:
        def any_array(v):
            if not isinstance(v, (list, tuple)):
                raise _Mismatch(f"{label} expects an array, got {_shape_of(v)}")
            return list(v)

        return any_array
    conv = _scalar_converter(_asa_type(items), items, f"{label} item")
    nullable = _nullable(items)
    item_type = _asa_type(items)

    if item_type == types.NVARCHAR:
        def strings(v):
            if not isinstance(v, (list, tuple)):
                raise _Mismatch(f"{label} expects an array, got {_shape_of(v)}")
            out = []
            for i, x in enumerate(v):
                if type(x) is str:
                    out.append(x)
                elif x is None:
                    if not nullable:
                        raise _Mismatch(f"{label} item {i} is NULL")
                    out.append(None)
                else:
                    out.append(conv(x))
            return out

        return strings

    def convert(v):
        if not isinstance(v, (list, tuple)):
            raise _Mismatch(f"{label} expects an array, got {_shape_of(v)}")
        out = []
        for i, x in enumerate(v):
            if x is None:
                if not nullable:
                    raise _Mismatch(f"{label} item {i} is NULL")
                out.append(None)
            else:
                out.append(conv(x))
        return out

    return convert


def _row_converter(sig: SwaggerSignature) -> Callable[[Any], Any]:
    schema = sig.row_schema
    if sig.row_shape == RECORD:
        inner = _record_converter(schema, "input")
    elif sig.row_shape == ARRAY:
        inner = _array_converter(schema, "input")
    elif sig.row_shape == SCALAR:
        inner = _scalar_converter(sig.item_type, schema, "input")
    else:
        inner = lambda v: v  # noqa: E731 - untyped rows are sent as they are

    fast = getattr(inner, "fast", None)

    def convert(value):
        if fast is not None and type(value) is dict:  # the common row: one call
            out = fast(value)
            if out is not None:
                return out
        if value is None:
            raise RowError(SCHEMA_MISMATCH, "the ML function's input is NULL")
        try:
            return inner(value)
        except _Mismatch as e:
            raise RowError(SCHEMA_MISMATCH, f"input does not match the endpoint's schema: {e}") from None

    return convert


def _safe_url(url: str) -> str:
    """The URL without credentials or query string (which may carry a key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host, query="", fragment="").geturl()
