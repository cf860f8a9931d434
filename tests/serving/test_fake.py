"""The fake endpoint in its own process, as the benchmarks start it."""

import requests

from pipelines.serving.fake import FakeEndpointProcess


def test_an_echoing_records_endpoint_answers_like_a_designer_endpoint():
    # by hand: the row comes back as sent, plus "Scored Labels" = the sum of its numbers (1 + 2.5)
    row = {"id": 1, "x": 2.5, "name": "a"}
    with FakeEndpointProcess("records", echo=True) as ep:
        body = requests.post(ep.url, json={"Inputs": {"WebServiceInput0": [row]}, "GlobalParameters": {}},
                             timeout=30).json()
    assert body["Results"]["WebServiceOutput0"] == [{"id": 1, "x": 2.5, "name": "a", "Scored Labels": 3.5}]
    with FakeEndpointProcess("records") as ep:  # the default answer: id and the score only
        body = requests.post(ep.url, json={"Inputs": {"WebServiceInput0": [row]}, "GlobalParameters": {}},
                             timeout=30).json()
    assert body["Results"]["WebServiceOutput0"] == [{"id": 1, "Scored Labels": 3.5}]
