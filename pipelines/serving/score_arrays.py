"""Azure ML entry script, inference-schema style: ``{"data": [[...5 features], ...]}`` → ``[fare, ...]``.

Each row is ``[vendorid, weekday, pickuphour, passenger, distance]``.

As in ASA's sample, the numpy sample mixes types, so the swagger declares every cell a string.
Rows the model cannot take are answered with HTTP 400 naming the row.
"""

import os

import numpy as np
from azureml_inference_server_http.api.aml_response import AMLResponse
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema

from pipelines.serving import model as taxi

SAMPLE_INPUT = np.array([[1, "Thursday", 16, 1, 3.48]])
SAMPLE_OUTPUT = np.array([13.66304196])

_model = None


def init():
    global _model
    _model = taxi.load_model(os.environ.get("ASA_BEAM_CACHE") or None)


@input_schema("data", NumpyParameterType(SAMPLE_INPUT), convert_to_provided_type=False)
@output_schema(NumpyParameterType(SAMPLE_OUTPUT))
def run(data):
    if not isinstance(data, list):
        return AMLResponse({"message": "data must be an array of arrays"}, 400, json_str=True)
    try:
        clean = [taxi.clean_record(i, row) for i, row in enumerate(data)]
    except taxi.InvalidRow as e:
        return AMLResponse({"message": str(e)}, 400, json_str=True)
    return taxi.predict(_model, clean) if clean else []
