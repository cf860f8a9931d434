"""Azure ML entry script, designer style: ``Inputs.WebServiceInput0`` records → ``Results.WebServiceOutput0``.

Each output record echoes the input columns and adds ``Scored Labels`` (the fare), as Azure ML
designer endpoints do. Rows the model cannot take are answered with HTTP 400 naming the row.
The swagger is generated from the ``inference-schema`` decorators by the inference server.
"""

import os

import orjson
import pandas as pd
from azureml_inference_server_http.api.aml_response import AMLResponse
from flask import Response
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

from pipelines.serving import model as taxi

SAMPLE_INPUT = pd.DataFrame([{"vendorid": 1, "weekday": "Thursday", "pickuphour": 16, "passenger": 1,
                              "distance": 3.48}])
SAMPLE_OUTPUT = pd.DataFrame([{"vendorid": 1, "weekday": "Thursday", "pickuphour": 16, "passenger": 1,
                               "distance": 3.48, "Scored Labels": 13.66}])

_model = None


def init():
    global _model
    _model = taxi.load_model(os.environ.get("ASA_BEAM_CACHE") or None)


@input_schema("Inputs", StandardPythonParameterType({"WebServiceInput0": PandasParameterType(SAMPLE_INPUT)}),
              convert_to_provided_type=False)
@input_schema("GlobalParameters", StandardPythonParameterType({}), convert_to_provided_type=False)
@output_schema(StandardPythonParameterType(
    {"Results": StandardPythonParameterType({"WebServiceOutput0": PandasParameterType(SAMPLE_OUTPUT)})}))
def run(Inputs, GlobalParameters=None):
    rows = Inputs.get("WebServiceInput0") if isinstance(Inputs, dict) else None
    if not isinstance(rows, list):
        return AMLResponse({"message": "Inputs.WebServiceInput0 must be an array of records"}, 400, json_str=True)
    try:
        clean = [taxi.clean_record(i, row) for i, row in enumerate(rows)]
    except taxi.InvalidRow as e:
        return AMLResponse({"message": str(e)}, 400, json_str=True)
    fares = taxi.predict(_model, clean) if clean else []
    scored = [{**row, "Scored Labels": fare} for row, fare in zip(clean, fares, strict=True)]
    # The same JSON values the server's json.dumps would write (finite floats, shortest repr),
    # serialized by orjson: the body costs the endpoint a tenth of the time.
    return Response(orjson.dumps({"Results": {"WebServiceOutput0": scored}}), status=200,
                    mimetype="application/json")
