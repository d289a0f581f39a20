"""Open Inference Protocol details as the servers send them: the request ``id``, output datatypes,
and KServe's payload-logger ``ce-component`` / ``ce-endpoint``."""

from __future__ import annotations

import json

import pytest
import requests
from conftest import admin_url, json_server, proxy_url, sample, scrape, wait_for

from inferwatch.ingest.codecs import decode_exchange, v2_request_id

# A tritonclient / KServe InferRequest body: the id first, then the tensors.
V2_REQUEST = {"id": "order-8841", "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                                            "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}


def mlserver_response(request: dict) -> dict:
    """MLServer's sklearn runtime answering ``predict``: an INT64 class per row, the id echoed."""
    rows = request["inputs"][0]["shape"][0]
    return {"model_name": "income", "model_version": None, "id": request.get("id", "generated"),
            "parameters": {"content_type": "np"},
            "outputs": [{"name": "predict", "shape": [rows, 1], "datatype": "INT64",
                         "parameters": {"content_type": "np"}, "data": [i % 2 for i in range(rows)]}]}


def test_v2_request_id_is_read_from_the_fields_before_the_tensors():
    assert v2_request_id(json.dumps(V2_REQUEST).encode()) == "order-8841"
    assert v2_request_id(b'{ "parameters": null, "id" : "a-1", "inputs": []}') == "a-1"
    # After the tensors (never scanned), nested, compressed or absent: no id.
    assert v2_request_id(b'{"inputs": [{"name": "x", "id": "no"}], "id": "late"}') is None
    assert v2_request_id(b'\x1f\x8b\x08\x00') is None
    assert v2_request_id(b'{"inputs": []}') is None


def test_int_outputs_are_class_hints_and_fp_outputs_are_not():
    req = json.dumps(V2_REQUEST).encode()
    resp = mlserver_response(V2_REQUEST)
    resp["outputs"].append({"name": "predict_proba", "shape": [2, 2], "datatype": "FP64",
                            "data": [0.9, 0.1, 0.2, 0.8]})
    batch = decode_exchange(req, json.dumps(resp).encode())
    assert batch.outputs["predict"] == [0, 1]
    assert batch.output_kinds == {"predict": "class"}


@pytest.fixture
def mlserver():
    with json_server(lambda path, request: mlserver_response(request)) as url:
        yield url


def test_v2_id_is_the_prediction_id_and_int64_predict_counts_classes(mlserver, sidecar_factory):
    sidecar = sidecar_factory(mlserver, **{"labels.enabled": True})
    r = requests.post(proxy_url(sidecar, "/v2/models/income/infer"), json=V2_REQUEST, timeout=5)
    assert r.status_code == 200
    assert r.headers["X-Prediction-ID"] == "order-8841"
    # The client's own header still wins over the body's id.
    r = requests.post(proxy_url(sidecar, "/v2/models/income/infer"), json=V2_REQUEST,
                      headers={"X-Prediction-ID": "mine"}, timeout=5)
    assert r.headers["X-Prediction-ID"] == "mine"
    sidecar.pipeline.drain()
    text = scrape(sidecar)
    assert sample(text, "inferwatch_predicted_class_total", output="predict", **{"class": "1"}) == 2
    assert sample(text, "inferwatch_prediction_value_count", output="predict") == 0
    # Labels joined by the id the client already had (two rows: <id>-0, <id>-1).
    labels = {"labels": [{"prediction_id": "order-8841-0", "label": 0}, {"prediction_id": "order-8841-1", "label": 1}]}
    assert requests.post(admin_url(sidecar, "/v1/labels"), json=labels, timeout=5).status_code == 202
    assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_labels_total", outcome="matched") == 2, 10)
    # Two 0/1 answers are too few to tell classes from values; the INT64 datatype says classes.
    performance = requests.get(admin_url(sidecar, "/v1/status"), timeout=5).json()["performance"]
    assert performance["task"] == "classification", performance
    assert "declares predict" in performance["task_reason"], performance


def kserve_headers(kind: str, event_id: str, component: str = "predictor", endpoint: str = "default"):
    # kserve pkg/logger: the same Ce-Id on both halves, the component and endpoint as extensions.
    return {"Ce-Id": event_id, "Ce-Specversion": "1.0", "Ce-Source": "http://localhost:9081/",
            "Ce-Type": f"org.kubeflow.serving.inference.{kind}", "Ce-Inferenceservicename": "income",
            "Ce-Namespace": "default", "Ce-Component": component, "Ce-Endpoint": endpoint,
            "Content-Type": "application/json"}


def test_transformer_inputs_stay_out_and_canary_is_its_own_version(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url)
    url = admin_url(sidecar, "/v1/cloudevents")

    def exchange(event_id, request, response, **where):
        requests.post(url, data=json.dumps(request), headers=kserve_headers("request", event_id, **where), timeout=5)
        return requests.post(url, data=json.dumps(response), headers=kserve_headers("response", event_id, **where),
                             timeout=5)

    # The transformer sees raw text; the predictor the features it made of it.
    exchange("t-1", {"instances": [{"text": "hello world"}]}, {"predictions": [1]}, component="transformer")
    exchange("t-1", {"instances": [[0.2, 0.4]]}, {"predictions": [1]})
    exchange("c-1", {"instances": [[0.9, 0.1]]}, {"predictions": [0]}, endpoint="canary")
    sidecar.pipeline.drain()
    main = sidecar.windows.snapshot("1")
    assert main.n == 1 and "text" not in main.features
    canary = sidecar.windows.snapshot("canary")
    assert canary is not None and canary.n == 1
    assert sample(scrape(sidecar), "inferwatch_cloudevents_total", outcome="ignored") == 2


def test_components_and_endpoint_versions_are_configurable(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"cloudevents.components": ["transformer"],
                                               "cloudevents.endpoint_versions": False})
    url = admin_url(sidecar, "/v1/cloudevents")
    for kind, body in (("request", {"instances": [{"text": "hi"}]}), ("response", {"predictions": [1]})):
        requests.post(url, data=json.dumps(body), headers=kserve_headers(kind, "x", "transformer", "canary"),
                      timeout=5)
    sidecar.pipeline.drain()
    snap = sidecar.windows.snapshot("1")
    assert snap is not None and snap.n == 1 and list(snap.features) == ["text"]
