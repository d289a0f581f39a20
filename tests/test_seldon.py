"""Seldon Core v1 payloads as Seldon sends them: the proxy, the executor's payload logger, feedback.

The bodies are SeldonMessage JSON (``prediction.proto``): ``data.names`` + ``ndarray`` or
``tensor``, ``jsonData``, ``strData``, ``binData``, with ``meta``; the CloudEvents carry the
executor logger's attributes (``Ce-Requestid`` shared by both halves, a new ``Ce-Id`` per half,
``Ce-Modelid`` the graph node).
"""

from __future__ import annotations

import json
import uuid

import pytest
import requests
from conftest import admin_url, json_server, proxy_url, sample, scrape, wait_for

from inferwatch.ingest.codecs import decode_exchange, detect_codec
from inferwatch.ingest.events import PayloadError
from inferwatch.ingest.ground_truth import parse_feedback

IRIS_NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
# What seldon-core's SKLearn server answers for predict_proba: t:<class> columns, meta beside data.
PROBA_RESPONSE = {"data": {"names": ["t:0", "t:1", "t:2"],
                           "ndarray": [[0.97, 0.03, 0.0], [0.0, 0.02, 0.98]]},
                  "meta": {"requestPath": {"classifier": "seldonio/sklearnserver:1.17.1"}}}


def j(obj) -> bytes:
    return json.dumps(obj).encode()


# --- the codec -----------------------------------------------------------------------------


def test_ndarray_with_names_is_rows_and_named_outputs():
    req = j({"data": {"names": IRIS_NAMES, "ndarray": IRIS_ROWS}, "meta": {}})
    assert detect_codec(json.loads(req)) == "seldon_v1"
    batch = decode_exchange(req, j(PROBA_RESPONSE))
    assert batch.n == 2 and not batch.errors
    assert batch.features == {name: [row[i] for row in IRIS_ROWS] for i, name in enumerate(IRIS_NAMES)}
    assert batch.outputs == {"t:0": [0.97, 0.0], "t:1": [0.03, 0.02], "t:2": [0.0, 0.98]}


def test_tensor_rows_use_configured_names_when_the_message_has_none():
    req = j({"data": {"tensor": {"shape": [2, 4], "values": [v for row in IRIS_ROWS for v in row]}}})
    resp = j({"data": {"names": [], "tensor": {"shape": [2], "values": [0, 2]}}, "meta": {}})
    batch = decode_exchange(req, resp, feature_names=IRIS_NAMES)
    assert batch.features == {name: [row[i] for row in IRIS_ROWS] for i, name in enumerate(IRIS_NAMES)}
    assert batch.outputs == {"prediction": [0, 2]}


def test_json_data_mapping_is_decoded_like_records():
    req = j({"jsonData": {"age": 41, "plan": "gold"}, "meta": {"tags": {"a": 1}}})
    resp = j({"jsonData": {"score": 0.8, "label": "churn"}, "meta": {}})
    batch = decode_exchange(req, resp)
    assert batch.features == {"age": [41], "plan": ["gold"]}
    assert batch.outputs == {"score": [0.8], "label": ["churn"]}


@pytest.mark.parametrize("body", [
    {"strData": "The quick brown fox"},
    {"binData": "aGVsbG8="},
    {"jsonData": "just a string"},
    {"data": {"names": ["x"], "tftensor": {"dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": "1"}]}}}},
    {"data": {"names": ["a"], "tensor": {"shape": [2, 2], "values": [1, 2, 3]}}},
])
def test_what_carries_no_features_is_a_payload_error_not_one_feature(body):
    with pytest.raises(PayloadError):
        decode_exchange(j(body), None)


def test_a_failure_response_is_a_counted_error_and_the_features_stay():
    req = j({"data": {"names": IRIS_NAMES, "ndarray": IRIS_ROWS[:1]}})
    resp = j({"status": {"code": -1, "info": "model raised", "reason": "MICROSERVICE_INTERNAL_ERROR",
                         "status": "FAILURE"}})
    batch = decode_exchange(req, resp)
    assert batch.n == 1 and batch.outputs == {} and batch.errors == ["unknown_format"]


def test_feedback_truth_becomes_labels_of_the_predicted_puid():
    feedback = {"request": {"data": {"names": IRIS_NAMES, "ndarray": IRIS_ROWS[:1]}},
                "response": {"meta": {"puid": "p-123"}, "data": {"ndarray": [[0.1, 0.9]]}},
                "reward": 1.0, "truth": {"data": {"ndarray": [[0, 1, 0]]}}}
    batch = parse_feedback(j(feedback), "ignored-request-id", 100)
    assert batch.prediction_ids == ["p-123"] and batch.labels == [1]
    two = parse_feedback(j({"truth": {"data": {"ndarray": [2, 0]}}}), "req-9", 100)
    assert two.prediction_ids == ["req-9-0", "req-9-1"] and two.labels == [2, 0]
    with pytest.raises(PayloadError):
        parse_feedback(j({"reward": 1.0}), "req-9", 100)  # a reward alone is no label


# --- end to end: a Seldon model server behind the proxy --------------------------------------


def seldon_answer(path: str, body: dict) -> dict:
    """Answers /api/v1.0/predictions like seldon-core's Python wrapper (predict_proba)."""
    if "strData" in body:
        return {"strData": "positive", "meta": {}}
    rows = body["data"]["ndarray"]
    return {"data": {"names": ["t:0", "t:1"], "ndarray": [[0.25, 0.75] for _ in rows]}, "meta": {}}


@pytest.fixture
def seldon_server():
    with json_server(seldon_answer) as url:
        yield url


def test_seldon_through_the_proxy_names_features_and_outputs(seldon_server, sidecar_factory):
    sidecar = sidecar_factory(seldon_server)
    path = "/seldon/models/iris/api/v1.0/predictions"
    r = requests.post(proxy_url(sidecar, path), json={"data": {"names": IRIS_NAMES, "ndarray": IRIS_ROWS}}, timeout=5)
    assert r.status_code == 200
    r = requests.post(proxy_url(sidecar, path), json={"strData": "I loved it"}, timeout=5)
    assert r.status_code == 200
    sidecar.pipeline.drain()
    snap = sidecar.windows.snapshot("1")
    assert snap.n == 2
    assert sorted(snap.features) == sorted(IRIS_NAMES) and "data" not in snap.features
    assert snap.outputs["t:1"].values.tolist() == [0.75, 0.75]
    text = scrape(sidecar)
    assert sample(text, "inferwatch_payload_errors_total", reason="unknown_format") == 1
    assert sample(text, "inferwatch_requests_total",
                  endpoint="/seldon/{namespace}/{deployment}/api/v1.0/predictions") == 2


# --- end to end: the executor's payload logger and feedback ------------------------------------


def seldon_logger_headers(kind: str, request_id: str) -> dict[str, str]:
    # seldon-core executor/api/payloadLogger: a fresh Ce-Id per event, the puid as Ce-Requestid.
    return {"Ce-Id": str(uuid.uuid4()), "Ce-Specversion": "1.0", "Ce-Source": "http://iris-default:8000/",
            "Ce-Type": f"io.seldon.serving.{kind}", "Ce-Requestid": request_id, "Ce-Modelid": "classifier",
            "Ce-Inferenceservicename": "iris", "Ce-Namespace": "seldon", "Ce-Endpoint": "default",
            "Content-Type": "application/json"}


def test_payload_logger_and_feedback_join_as_labels(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"labels.enabled": True})
    puid = "b7d1a1f0-6f7c-4d35-9d0b-6a3f0a1f5b9e"
    url = admin_url(sidecar, "/v1/cloudevents")
    request = {"data": {"names": IRIS_NAMES, "ndarray": IRIS_ROWS[:1]}}
    response = {"data": {"names": ["class"], "ndarray": [[2]]}, "meta": {"puid": puid}}
    assert requests.post(url, data=j(request), headers=seldon_logger_headers("inference.request", puid),
                         timeout=5).status_code == 202
    assert requests.post(url, data=j(response), headers=seldon_logger_headers("inference.response", puid),
                         timeout=5).status_code == 200
    sidecar.pipeline.drain()
    snap = sidecar.windows.snapshot("1")
    assert snap.n == 1 and sorted(snap.features) == sorted(IRIS_NAMES)
    assert snap.outputs["class"].values.tolist() == [2]
    # The client's POST /api/v1.0/feedback, logged by the executor under the same Seldon-Puid.
    feedback = {"request": request, "response": response, "reward": 1.0, "truth": {"data": {"ndarray": [[2]]}}}
    r = requests.post(url, data=j(feedback), headers=seldon_logger_headers("feedback", puid), timeout=5)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1
    assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_labels_total", outcome="matched") == 1, 10)


def test_feedback_without_truth_is_a_400_saying_why(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"labels.enabled": True})
    r = requests.post(admin_url(sidecar, "/v1/cloudevents"), data=j({"reward": 0.0}),
                      headers=seldon_logger_headers("feedback", "p-1"), timeout=5)
    assert r.status_code == 400 and "truth" in r.json()["detail"]
