"""Swagger → signature: envelopes, row shapes, result paths, type conversion, and clear errors."""

import copy
import datetime as dt
import json
import math

import pytest
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.schema_util import get_input_schema, get_output_schema

from pipelines.serving import score_arrays, score_records
from transforms import types
from transforms.deadletter import RowError
from transforms.errors import FunctionConfigError
from transforms.functions.azureml import AzureMLConfig, AzureMLFunction
from transforms.functions.azureml.swagger import (
    ARRAY,
    RECORD,
    SCALAR,
    SwaggerError,
    default_swagger_url,
    parse_swagger,
)


def swagger2(run, path="/score"):
    """The swagger 2.0 document azmlinfsrv builds around an entry script's decorated run()."""
    return {
        "swagger": "2.0", "info": {"title": "t", "version": "1"},
        "paths": {path: {"post": {
            "parameters": [{"name": "serviceInputPayload", "in": "body",
                            "schema": {"$ref": "#/definitions/ServiceInput"}}],
            "responses": {"200": {"description": "ok", "schema": {"$ref": "#/definitions/ServiceOutput"}}},
        }}, "/": {"get": {"responses": {"200": {"description": "Healthy"}}}}},
        "definitions": {"ServiceInput": get_input_schema(run), "ServiceOutput": get_output_schema(run)},
    }


def openapi3(run):
    return {
        "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
        "paths": {"/score": {"post": {
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ServiceInput"}}}},
            "responses": {"200": {"description": "ok", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ServiceOutput"}}}}},
        }}},
        "components": {"schemas": {"ServiceInput": get_input_schema(run), "ServiceOutput": get_output_schema(run)}},
    }


# ASA's two published samples (asa-reference §2.2, §2.3), trimmed.
ASA_DESIGNER = {
    "swagger": "2.0", "info": {"version": "1", "title": "rtendpoint"},
    "paths": {
        "/swagger.json": {"get": {"operationId": "getSwaggerDocument"}},
        "/": {"get": {"operationId": "ServiceHealthCheck"}},
        "/score": {"post": {
            "operationId": "RunMLService",
            "parameters": [{"name": "serviceInputPayload", "in": "body",
                            "schema": {"$ref": "#/definitions/ExecutionRequest"}}],
            "responses": {"200": {"schema": {"$ref": "#/definitions/ExecutionResults"}},
                          "default": {"schema": {"$ref": "#/definitions/ErrorResponse"}}}}},
    },
    "definitions": {
        "ExecutionRequest": {"properties": {"Inputs": {"$ref": "#/definitions/ExecutionInputs"},
                                            "GlobalParameters": {"$ref": "#/definitions/GlobalParameters"}},
                             "example": {"Inputs": {"WebServiceInput0": [{"symboling": 3}]}, "GlobalParameters": {}}},
        "ExecutionInputs": {"type": "object", "properties": {"WebServiceInput0": {
            "type": "array", "items": {"$ref": "#/definitions/WebServiceInput0Item"}}}},
        "ExecutionResults": {"properties": {"Results": {"$ref": "#/definitions/ExecutionOutputs"}}},
        "ExecutionOutputs": {"type": "object", "properties": {"WebServiceOutput0": {
            "type": "array", "items": {"$ref": "#/definitions/WebServiceOutput0Item"}}}},
        "WebServiceInput0Item": {"required": ["symboling", "make"], "properties": {
            "symboling": {"type": "integer", "format": "int64"},
            "normalized-losses": {"type": "number", "format": "double"},
            "make": {"type": "string"}}},
        "WebServiceOutput0Item": {"required": ["Scored Labels"], "properties": {
            "symboling": {"type": "integer", "format": "int64"},
            "Scored Labels": {"type": "number", "format": "double"}}},
        "GlobalParameters": {"type": "object", "properties": {}},
        "ErrorResponse": {"type": "object", "properties": {"message": {"type": "string"}}},
    },
}

ASA_INFERENCE_SCHEMA = {
    "swagger": "2.0", "info": {"title": "nyc-fare-predict", "version": "1"}, "schemes": ["https"],
    "paths": {
        "/api/v1/service/nyc-fare-predict/": {"get": {"operationId": "ServiceHealthCheck"}},
        "/api/v1/service/nyc-fare-predict/score": {"post": {
            "operationId": "RunMLService",
            "parameters": [{"name": "serviceInputPayload", "in": "body",
                            "schema": {"$ref": "#/definitions/ServiceInput"}}],
            "responses": {"200": {"schema": {"$ref": "#/definitions/ServiceOutput"}}}}}},
    "definitions": {
        "ServiceInput": {"type": "object",
                         "properties": {"data": {"type": "array",
                                                 "items": {"type": "array", "items": {"type": "string"}}}},
                         "example": {"data": [["1", "Thursday", "16", "1", "3.48"]]}},
        "ServiceOutput": {"type": "array", "items": {"type": "number", "format": "double"}, "example": [13.66304196]},
    },
}


# -- envelopes and shapes, from the real inference-schema decorators -------------------------------

def test_designer_records_from_inference_schema():
    sig = parse_swagger(swagger2(score_records.run))
    assert sig.request_path == ("Inputs", "WebServiceInput0")
    assert sig.request_extra == {"GlobalParameters": {}}
    assert sig.row_shape == RECORD
    assert [(c.name, c.type, c.required) for c in sig.columns] == [
        ("vendorid", types.BIGINT, True), ("weekday", types.NVARCHAR, True), ("pickuphour", types.BIGINT, True),
        ("passenger", types.BIGINT, True), ("distance", types.FLOAT, True)]
    assert sig.response_path == ("Results", "WebServiceOutput0")
    assert sig.result_shape == RECORD and "Scored Labels" in sig.result_fields
    assert sig.envelope([{"a": 1}]) == {"Inputs": {"WebServiceInput0": [{"a": 1}]}, "GlobalParameters": {}}
    body = {"Results": {"WebServiceOutput0": [{"Scored Labels": 1.5}]}}
    assert sig.results(body) == [{"Scored Labels": 1.5}]
    assert "designer" in sig.describe()


def test_arrays_from_inference_schema():
    sig = parse_swagger(swagger2(score_arrays.run))
    assert sig.request_path == ("data",) and sig.request_extra == {}
    assert sig.row_shape == ARRAY and sig.item_type == types.NVARCHAR  # mixed numpy sample → strings
    assert sig.response_path == () and sig.result_shape == SCALAR
    assert sig.envelope([["1", "x"]]) == {"data": [["1", "x"]]}
    assert sig.results([1.0, 2.0]) == [1.0, 2.0]


def test_openapi3_gives_the_same_signature():
    for run in (score_records.run, score_arrays.run):
        a, b = parse_swagger(swagger2(run)), parse_swagger(openapi3(run))
        assert (a.request_path, a.row_shape, a.columns, a.response_path, a.result_shape, a.request_extra) == (
            b.request_path, b.row_shape, b.columns, b.response_path, b.result_shape, b.request_extra)
        assert b.version.startswith("3")


def test_numeric_numpy_rows_and_other_single_property():
    @input_schema("input_data", NumpyParameterType(__import__("numpy").array([[1.0, 2.0, 3.0]])))
    @output_schema(StandardPythonParameterType({"predictions": [0.5]}))
    def run(input_data):
        return {"predictions": [0.5] * len(input_data)}

    sig = parse_swagger(swagger2(run))
    assert sig.request_path == ("input_data",)
    assert sig.row_shape == ARRAY and sig.item_type == types.FLOAT
    assert sig.response_path == ("predictions",)
    assert sig.converter()(["1", 2, 3.5]) == [1.0, 2.0, 3.5]
    assert sig.results({"predictions": [1, 2]}) == [1, 2]


def test_asa_published_samples():
    designer = parse_swagger(ASA_DESIGNER)
    assert designer.request_path == ("Inputs", "WebServiceInput0")
    assert designer.request_extra == {"GlobalParameters": {}}
    assert [c.name for c in designer.columns] == ["symboling", "normalized-losses", "make"]
    assert designer.response_path == ("Results", "WebServiceOutput0")
    inf = parse_swagger(ASA_INFERENCE_SCHEMA, endpoint="https://h/api/v1/service/nyc-fare-predict/score")
    assert inf.request_path == ("data",) and inf.row_shape == ARRAY and inf.response_path == ()
    assert inf.operation == "/api/v1/service/nyc-fare-predict/score"


def test_operation_matches_the_endpoint_path_and_basepath():
    doc = copy.deepcopy(swagger2(score_arrays.run, path="/predict"))
    doc["paths"]["/other"] = copy.deepcopy(doc["paths"]["/predict"])
    doc["basePath"] = "/api"
    assert parse_swagger(doc, endpoint="http://h/api/predict").operation == "/predict"
    with pytest.raises(SwaggerError, match="several exist"):
        parse_swagger(doc, endpoint="http://h/elsewhere")


def test_double_encoded_response_and_bad_responses():
    sig = parse_swagger(swagger2(score_records.run))
    body = json.dumps({"Results": {"WebServiceOutput0": [{"Scored Labels": 2.0}]}})
    assert sig.results(body) == [{"Scored Labels": 2.0}]
    with pytest.raises(ValueError, match="Results.WebServiceOutput0"):
        sig.results({"Results": {}})
    with pytest.raises(ValueError, match="not an array"):
        sig.results({"Results": {"WebServiceOutput0": {"a": 1}}})


def test_default_swagger_url():
    assert default_swagger_url("http://127.0.0.1:5001/score") == "http://127.0.0.1:5001/swagger.json"
    assert default_swagger_url("https://h/api/v1/service/x/score?code=k") == "https://h/api/v1/service/x/swagger.json"


# -- errors name what is missing ------------------------------------------------------------------

def _broken(mutate):
    doc = copy.deepcopy(swagger2(score_records.run))
    mutate(doc)
    return doc


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("swagger"), "neither 'swagger'"),
    (lambda d: d.__setitem__("paths", {}), "no 'paths'"),
    (lambda d: d["paths"].pop("/score"), "no POST operation"),
    (lambda d: d["paths"]["/score"]["post"].__setitem__("parameters", []), "no body parameter"),
    (lambda d: d["paths"]["/score"]["post"].__setitem__("responses", {"default": {}}), "no 200 response"),
    (lambda d: d["paths"]["/score"]["post"]["responses"]["200"].pop("schema"), "has no schema"),
    (lambda d: d["definitions"].__setitem__("ServiceInput", {"type": "object",
                                                            "properties": {"a": {"type": "string"}}}),
     "no array property"),
    (lambda d: d["definitions"]["ServiceInput"]["properties"]["Inputs"]["properties"].__setitem__(
        "WebServiceInput1", {"type": "array", "items": {}}), "several arrays in 'Inputs'"),
    (lambda d: d["definitions"].__setitem__("ServiceInput", {"$ref": "other.json#/x"}), "only local references"),
    (lambda d: d["definitions"].__setitem__("ServiceInput", {"$ref": "#/definitions/ServiceInput"}), "circular"),
    (lambda d: d["definitions"].pop("ServiceOutput"), "points to nothing"),
    (lambda d: d.__setitem__("swagger", "1.2"), "unsupported"),
])
def test_swagger_errors(mutate, message):
    with pytest.raises(SwaggerError, match=message):
        parse_swagger(_broken(mutate))


def test_required_extra_member_without_example_is_an_error():
    def mutate(d):
        d["definitions"]["ServiceInput"]["properties"]["Threshold"] = {"type": "number"}
        d["definitions"]["ServiceInput"]["required"] = ["Threshold"]
    with pytest.raises(SwaggerError, match="requires 'Threshold'"):
        parse_swagger(_broken(mutate))


def test_function_config_error_names_function_and_source(tmp_path):
    bad = tmp_path / "swagger.json"
    bad.write_text(json.dumps(_broken(lambda d: d.__setitem__("paths", {}))))
    fn = AzureMLFunction("score", AzureMLConfig(endpoint="http://127.0.0.1:9/score", swagger="swagger.json",
                                                base_dir=str(tmp_path)))
    with pytest.raises(FunctionConfigError, match=r"function 'score': swagger swagger.json: .*no 'paths'"):
        fn.validate()
    missing = AzureMLFunction("score", AzureMLConfig(endpoint="http://127.0.0.1:9/score",
                                                     swagger=str(tmp_path / "nope.json")))
    with pytest.raises(FunctionConfigError, match="cannot read the swagger file"):
        missing.validate()
    unreachable = AzureMLFunction("score", AzureMLConfig(endpoint="http://127.0.0.1:9/score?code=SECRET",
                                                         request_timeout_s=2))
    with pytest.raises(FunctionConfigError, match="cannot fetch the swagger") as e:
        unreachable.validate()
    assert "SECRET" not in str(e.value)


def test_yaml_swagger_file(tmp_path):
    import yaml

    path = tmp_path / "openapi.yaml"
    path.write_text(yaml.safe_dump(openapi3(score_arrays.run)))
    fn = AzureMLFunction("s", AzureMLConfig(endpoint="http://127.0.0.1:9/score", swagger=str(path)))
    assert fn.signature.request_path == ("data",)


# -- converting UDF arguments to request rows -----------------------------------------------------

@pytest.fixture(scope="module")
def records():
    return parse_swagger(swagger2(score_records.run)).converter()


def test_record_conversion_implicit_types(records):
    got = records({"vendorid": "2", "weekday": 5, "pickuphour": 3.0, "passenger": True, "distance": "4.5",
                   "extra": "dropped"})
    assert got == {"vendorid": 2, "weekday": "5", "pickuphour": 3, "passenger": 1, "distance": 4.5}
    assert list(got) == ["vendorid", "weekday", "pickuphour", "passenger", "distance"]


def test_record_conversion_of_rows_already_typed(records):
    # the common row: declared names and types; extra columns are dropped, the input is not changed
    row = {"fare": 9.0, "distance": 2.5, "passenger": 2, "pickuphour": 8, "weekday": "Monday", "vendorid": 1}
    got = records(row)
    assert got == {"vendorid": 1, "weekday": "Monday", "pickuphour": 8, "passenger": 2, "distance": 2.5}
    assert list(got) == ["vendorid", "weekday", "pickuphour", "passenger", "distance"] and "fare" in row
    # one value of another type: converted like any other row (int 2 → 2.0 for a number column)
    got = records(dict(row, distance=2))
    assert got["distance"] == 2.0 and type(got["distance"]) is float
    assert type(records(dict(row, passenger=True))["passenger"]) is int


def test_record_conversion_case_insensitive_and_positional(records):
    row = {"VendorId": 1, "WEEKDAY": "Monday", "pickuphour": 8, "passenger": 1, "distance": 2}
    assert records(row)["vendorid"] == 1
    assert records([1, "Monday", 8, 1, 2.5]) == {"vendorid": 1, "weekday": "Monday", "pickuphour": 8,
                                                 "passenger": 1, "distance": 2.5}


@pytest.mark.parametrize("value, message", [
    (None, "input is NULL"),
    ({"vendorid": 1, "weekday": "M", "pickuphour": 8, "passenger": 1}, "lacks required column 'distance'"),
    ({"vendorid": None, "weekday": "M", "pickuphour": 8, "passenger": 1, "distance": 1.0}, "'vendorid' is NULL"),
    ({"vendorid": 1.5, "weekday": "M", "pickuphour": 8, "passenger": 1, "distance": 1.0}, "expects an integer"),
    ({"vendorid": "one", "weekday": "M", "pickuphour": 8, "passenger": 1, "distance": 1.0}, "expects an integer"),
    ({"vendorid": 1, "weekday": {"a": 1}, "pickuphour": 8, "passenger": 1, "distance": 1.0}, "expects a string"),
    ({"vendorid": 1, "weekday": "M", "pickuphour": 8, "passenger": 1, "distance": math.nan}, "finite number"),
    ({"vendorid": 2**70, "weekday": "M", "pickuphour": 8, "passenger": 1, "distance": 1.0}, "out of range"),
    ([1, 2, 3], "record of 5 columns"),
    ("text", "expects a record"),
])
def test_record_mismatches(records, value, message):
    with pytest.raises(RowError, match=message) as e:
        records(value)
    assert e.value.reason == "schema_mismatch"


def test_record_fast_path_quotes_any_column_name_and_checks_every_bound():
    """Typed rows take a generated one-call path; names come from the swagger, so they must be
    used as literals, and every value the general path would refuse must be left to it."""
    from pipelines.serving.fake import swagger_for

    doc = copy.deepcopy(swagger_for("records"))
    props = {"it's \"odd\"\n": {"type": "number", "format": "double"},
             "small": {"type": "integer", "format": "int32"}, "s": {"type": "string"}}
    item = doc["definitions"]["ServiceInput"]["properties"]["Inputs"]["properties"]["WebServiceInput0"]["items"]
    item.update({"properties": props, "required": list(props)})
    conv = parse_swagger(doc).converter()
    odd = "it's \"odd\"\n"
    assert conv({odd: 1.5, "small": 2**31 - 1, "s": "x", "other": 0}) == {odd: 1.5, "small": 2**31 - 1, "s": "x"}
    assert conv({odd: 1.5, "small": -(2**31), "s": "x"})["small"] == -(2**31)
    for bad, message in (({"small": 2**31}, "out of range"), ({"small": -(2**31) - 1}, "out of range"),
                         ({odd: math.inf}, "finite number"), ({odd: -math.inf}, "finite number"),
                         ({odd: math.nan}, "finite number")):
        with pytest.raises(RowError, match=message):
            conv({odd: 1.5, "small": 1, "s": "x", **bad})


def test_record_reader_reads_a_query_row_in_place_as_the_converter_does(records):
    """``udf.score(Alias)`` rows are read without a stripped copy: whatever the reader returns
    must be what the converter returns for the row without its hidden columns; anything else
    (a missing column, another type, a bound) must be left to the converter (None)."""
    from pipelines.serving.fake import swagger_for
    from transforms.query.plan import HIDDEN_PREFIX

    sig = parse_swagger(swagger2(score_records.run))
    read = sig.record_reader()
    typed = {"vendorid": 1, "weekday": "Monday", "pickuphour": 8, "passenger": 2, "distance": 2.5}
    row = {**typed, "fare": 9.0, HIDDEN_PREFIX + "udf1": {"x": 1}, HIDDEN_PREFIX + "ts": 17}
    assert read(row) == records(typed) == typed and list(read(row)) == list(typed)
    for other in ({"distance": 2}, {"vendorid": "1"}, {"vendorid": 2**70}, {"distance": math.nan}):
        assert read({**row, **other}) is None  # the converter decides (converts or fails the row)
    assert read({k: v for k, v in row.items() if k != "weekday"}) is None
    assert read({"VendorId": 1, **{k: v for k, v in typed.items() if k != "vendorid"}}) is None  # case
    assert parse_swagger(swagger2(score_arrays.run)).record_reader() is None
    assert parse_swagger(swagger_for("arrays")).record_reader() is None


def test_array_conversion():
    conv = parse_swagger(swagger2(score_arrays.run)).converter()
    assert conv([1, "Thursday", 16, 1, 3.48]) == ["1", "Thursday", "16", "1", "3.48"]
    assert conv((True, 2.0)) == ["1", "2"]
    for bad, message in (([1, None], "item 1 is NULL"), ({"a": 1}, "expects an array"), ([[1]], "expects a string")):
        with pytest.raises(RowError, match=message):
            conv(bad)


def test_datetime_bool_and_nested_types():
    doc = swagger2(score_arrays.run)
    doc["definitions"]["ServiceInput"] = {"type": "object", "properties": {"rows": {"type": "array", "items": {
        "type": "object", "required": ["t", "flag"], "properties": {
            "t": {"type": "string", "format": "date-time"}, "flag": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "integer", "format": "int32"}},
            "opt": {"type": "number"}}}}}}
    conv = parse_swagger(doc).converter()
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert conv({"t": when, "flag": "true", "tags": ["1", 2], "opt": None}) == {
        "t": "2024-05-01T12:00:00.0000000Z", "flag": True, "tags": [1, 2], "opt": None}
    assert conv({"t": "2024-05-01T12:00:00Z", "flag": 0}) == {"t": "2024-05-01T12:00:00.0000000Z", "flag": False}
    with pytest.raises(RowError, match="int32"):
        conv({"t": when, "flag": 1, "tags": [2**40]})
    with pytest.raises(RowError, match="date-time"):
        conv({"t": "yesterday", "flag": 1})
    with pytest.raises(RowError, match="boolean"):
        conv({"t": when, "flag": "maybe"})
