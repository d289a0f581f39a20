"""Pairing KServe / Seldon payload-logger CloudEvents into request/response exchanges."""

from __future__ import annotations

import base64
import json
import threading

import pytest

from inferwatch.ingest.cloudevents import CloudEventPairer, PairedExchange, parse_cloudevent
from inferwatch.ingest.codecs import decode_exchange
from inferwatch.ingest.events import PayloadError

KSERVE_REQ = b'{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}'
KSERVE_RESP = b'{"predictions": [1, 1]}'


def kserve_headers(kind: str, event_id: str = "5a3c1c2e-8a55-4ef0-a4a4-1b3f5e0d7a11", **extra) -> dict[str, str]:
    headers = {
        "Ce-Id": event_id,
        "Ce-Specversion": "1.0",
        "Ce-Source": "http://localhost:9081/",
        "Ce-Type": f"org.kubeflow.serving.inference.{kind}",
        "Ce-Inferenceservicename": "sklearn-iris",
        "Ce-Namespace": "default",
        "Ce-Component": "predictor",
        "Ce-Endpoint": "default",
        "Content-Type": "application/json",
    }
    headers.update(extra)
    return headers


def seldon_headers(kind: str, request_id: str = "2fb8a086-ee22-4285-9826-9d38111cbb9e", ce_id: str | None = None):
    return {
        "ce-id": ce_id or request_id,
        "ce-specversion": "0.3",
        "ce-source": "io.seldon.serving.deployment.mlserver.seldon-mesh",
        "ce-type": f"io.seldon.serving.inference.{kind}",
        "ce-requestid": request_id,
        "ce-modelid": "iris_1",
        "ce-inferenceservicename": "mlserver",
        "ce-namespace": "seldon-mesh",
        "ce-endpoint": "iris_1",
        "content-type": "application/json",
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_kserve_request_then_response():
    pairer = CloudEventPairer()
    assert pairer.add(kserve_headers("request"), KSERVE_REQ) is None
    assert len(pairer) == 1
    exchange = pairer.add(kserve_headers("response"), KSERVE_RESP)
    assert isinstance(exchange, PairedExchange)
    assert exchange.event_id == "5a3c1c2e-8a55-4ef0-a4a4-1b3f5e0d7a11"
    assert exchange.request_body == KSERVE_REQ
    assert exchange.response_body == KSERVE_RESP
    assert exchange.content_type == "application/json"
    assert exchange.response_content_type == "application/json"
    assert exchange.model_name == "sklearn-iris"
    assert exchange.namespace == "default"
    assert exchange.component == "predictor"
    assert exchange.endpoint == "default"
    assert len(pairer) == 0 and pairer.paired == 1
    batch = decode_exchange(exchange.request_body, exchange.response_body,
                            request_content_type=exchange.content_type)
    assert batch.n == 2 and batch.outputs == {"prediction": [1, 1]}


def test_response_first_waits_for_request():
    pairer = CloudEventPairer()
    assert pairer.add(kserve_headers("response"), KSERVE_RESP) is None
    exchange = pairer.add(kserve_headers("request"), KSERVE_REQ)
    assert exchange is not None
    assert exchange.request_body == KSERVE_REQ and exchange.response_body == KSERVE_RESP


def test_headers_are_case_insensitive():
    pairer = CloudEventPairer()
    lower = {k.lower(): v for k, v in kserve_headers("request").items()}
    upper = {k.upper(): v for k, v in kserve_headers("response").items()}
    assert pairer.add(lower, KSERVE_REQ) is None
    assert pairer.add(upper, KSERVE_RESP) is not None


def test_seldon_pairs_on_requestid_even_with_different_ce_ids():
    pairer = CloudEventPairer()
    req = b'{"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}]}'
    resp = (
        b'{"model_name": "iris_1_1", "model_version": "1", '
        b'"outputs": [{"name": "predict", "shape": [1, 1], "datatype": "INT64", "data": [2]}]}'
    )
    assert pairer.add(seldon_headers("request", ce_id="a"), req) is None
    exchange = pairer.add(seldon_headers("response", ce_id="b"), resp)
    assert exchange is not None
    assert exchange.event_id == "2fb8a086-ee22-4285-9826-9d38111cbb9e"
    assert exchange.model_name == "mlserver"
    assert exchange.model_id == "iris_1"
    batch = decode_exchange(exchange.request_body, exchange.response_body)
    assert batch.features == {"predict_0": [1], "predict_1": [2], "predict_2": [3], "predict_3": [4]}
    assert batch.outputs == {"predict": [2]} and batch.model_version == "1"


def test_seldon_without_ce_id_uses_requestid():
    headers = seldon_headers("request")
    del headers["ce-id"]
    assert parse_cloudevent(headers, b"{}").event_id == "2fb8a086-ee22-4285-9826-9d38111cbb9e"


def test_kserve_transformer_and_predictor_do_not_cross_pair():
    pairer = CloudEventPairer(components=None)  # both monitored: pairing keeps them apart
    same_id = "req-1"
    assert pairer.add(kserve_headers("request", same_id, **{"Ce-Component": "transformer"}), b'{"raw": 1}') is None
    assert pairer.add(kserve_headers("request", same_id, **{"Ce-Component": "predictor"}), KSERVE_REQ) is None
    predictor = pairer.add(kserve_headers("response", same_id, **{"Ce-Component": "predictor"}), KSERVE_RESP)
    assert predictor is not None and predictor.request_body == KSERVE_REQ
    transformer = pairer.add(kserve_headers("response", same_id, **{"Ce-Component": "transformer"}), b"[1]")
    assert transformer is not None and transformer.request_body == b'{"raw": 1}'


def test_different_ids_do_not_pair():
    pairer = CloudEventPairer()
    assert pairer.add(kserve_headers("request", "a"), KSERVE_REQ) is None
    assert pairer.add(kserve_headers("response", "b"), KSERVE_RESP) is None
    assert len(pairer) == 2


def test_duplicate_half_replaces_pending():
    pairer = CloudEventPairer()
    pairer.add(kserve_headers("request"), b'{"a": 1}')
    pairer.add(kserve_headers("request"), b'{"a": 2}')
    assert pairer.duplicates == 1 and len(pairer) == 1
    exchange = pairer.add(kserve_headers("response"), b"[0]")
    assert exchange.request_body == b'{"a": 2}'


def test_structured_mode_with_json_data():
    envelope = {
        "specversion": "1.0",
        "id": "s-1",
        "type": "org.kubeflow.serving.inference.request",
        "source": "http://localhost:9081/",
        "inferenceservicename": "iris",
        "datacontenttype": "application/json",
        "data": {"instances": [[1, 2]]},
    }
    pairer = CloudEventPairer()
    headers = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
    assert pairer.add(headers, json.dumps(envelope).encode()) is None
    response = dict(envelope, type="org.kubeflow.serving.inference.response", data=None)
    del response["data"]
    response["data_base64"] = base64.b64encode(b'{"predictions": [7]}').decode()
    exchange = pairer.add(headers, json.dumps(response).encode())
    assert exchange is not None
    assert json.loads(exchange.request_body) == {"instances": [[1, 2]]}
    assert exchange.response_body == b'{"predictions": [7]}'
    assert exchange.model_name == "iris"
    batch = decode_exchange(exchange.request_body, exchange.response_body,
                            request_content_type=exchange.content_type)
    assert batch.outputs == {"prediction": [7]}


def test_structured_mode_with_string_data():
    envelope = {"specversion": "1.0", "id": "x", "type": "io.seldon.serving.inference.request",
                "source": "s", "data": '{"a": 1}'}
    event = parse_cloudevent({"content-type": "application/cloudevents+json"}, json.dumps(envelope).encode())
    assert event.body == b'{"a": 1}' and event.kind == "request"


@pytest.mark.parametrize(
    "headers,body",
    [
        ({"Content-Type": "application/json"}, b'{"instances": [[1]]}'),  # not a CloudEvent
        (dict(kserve_headers("request"), **{"Ce-Type": "io.seldon.serving.inference.outlier"}), b"{}"),
        (dict(kserve_headers("request"), **{"Ce-Type": "com.example.something"}), b"{}"),
        ({"ce-type": "org.kubeflow.serving.inference.request"}, b"{}"),  # no id at all
        ({"content-type": "application/cloudevents+json"}, b"{not json"),
        ({"content-type": "application/cloudevents+json"}, b"[1]"),
        ({"content-type": "application/cloudevents+json"},
         b'{"id": "1", "type": "org.kubeflow.serving.inference.request", "data_base64": "***"}'),
        ({"content-type": "application/cloudevents-batch+json"}, b"[]"),
    ],
)
def test_invalid_events(headers, body):
    pairer = CloudEventPairer()
    with pytest.raises(PayloadError) as exc:
        pairer.add(headers, body)
    assert exc.value.reason == "invalid_event"
    assert len(pairer) == 0


def test_max_pending_evicts_oldest():
    pairer = CloudEventPairer(max_pending=3)
    for i in range(5):
        pairer.add(kserve_headers("request", f"id-{i}"), KSERVE_REQ)
    assert len(pairer) == 3
    assert pairer.evicted_full == 2
    # The two oldest are gone: their responses now wait alone.
    assert pairer.add(kserve_headers("response", "id-0"), KSERVE_RESP) is None
    assert pairer.add(kserve_headers("response", "id-4"), KSERVE_RESP) is not None


def test_max_pending_bytes_evicts_oldest():
    pairer = CloudEventPairer(max_pending_bytes=100)
    pairer.add(kserve_headers("request", "a"), b"x" * 60)
    pairer.add(kserve_headers("request", "b"), b"y" * 60)
    assert len(pairer) == 1 and pairer.evicted_full == 1 and pairer.pending_bytes == 60


def test_ttl_expiry_and_unanswered_requests():
    clock = FakeClock()
    pairer = CloudEventPairer(ttl_seconds=60, clock=clock)
    pairer.add(kserve_headers("request", "old"), KSERVE_REQ)
    pairer.add(kserve_headers("response", "orphan"), KSERVE_RESP)
    clock.now += 30
    pairer.add(kserve_headers("request", "young"), KSERVE_REQ)
    clock.now += 31
    unanswered = pairer.expire()
    assert pairer.expired == 2
    assert len(pairer) == 1
    # The expired request comes back without a response so its features still count.
    assert [u.event_id for u in unanswered] == ["old"]
    assert unanswered[0].response_body is None and unanswered[0].request_body == KSERVE_REQ
    assert pairer.expire() == []
    # The response of an expired request no longer pairs.
    assert pairer.add(kserve_headers("response", "old"), KSERVE_RESP) is None
    assert pairer.add(kserve_headers("response", "young"), KSERVE_RESP) is not None


def test_add_expires_stale_halves_too():
    clock = FakeClock()
    pairer = CloudEventPairer(ttl_seconds=1, clock=clock)
    pairer.add(kserve_headers("request", "a"), KSERVE_REQ)
    clock.now += 2
    pairer.add(kserve_headers("request", "b"), KSERVE_REQ)
    assert pairer.expired == 1 and len(pairer) == 1
    assert [u.event_id for u in pairer.expire()] == ["a"]


def test_unanswered_requests_are_bounded_when_nobody_collects_them():
    clock = FakeClock()
    pairer = CloudEventPairer(max_pending=3, ttl_seconds=1, clock=clock)
    for i in range(10):
        pairer.add(kserve_headers("request", f"r{i}"), KSERVE_REQ)
        clock.now += 2
    assert pairer.expired == 9 and pairer.pending == 1
    assert [u.event_id for u in pairer.expire()] == ["r7", "r8", "r9"]


def test_thread_safety():
    pairer = CloudEventPairer()
    results: list[PairedExchange] = []
    lock = threading.Lock()

    def worker(kind: str, prefix: str) -> None:
        body = KSERVE_REQ if kind == "request" else KSERVE_RESP
        for i in range(2000):
            exchange = pairer.add(kserve_headers(kind, f"{prefix}-{i}"), body)
            if exchange is not None:
                with lock:
                    results.append(exchange)

    # Each id gets one request and one response, from two threads racing each other.
    threads = [threading.Thread(target=worker, args=(kind, prefix)) for kind in ("request", "response")
               for prefix in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == pairer.paired == 4000
    assert len(pairer) == 0 and pairer.duplicates == 0
    assert all(r.request_body == KSERVE_REQ and r.response_body == KSERVE_RESP for r in results)
