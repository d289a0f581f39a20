"""The proxy over real sockets: a real upstream process, the sidecar, real HTTP clients."""

import base64
import gzip
import json
import math

import numpy as np
import requests

from conftest import Upstream, admin_url, proxy_url, sample, scrape, wait_for


def test_forwards_method_path_query_headers_and_body_unchanged(sidecar):
    body = b"\x00\x01binary\xff"
    r = requests.put(proxy_url(sidecar, "/echo/a/b?x=1&y=%20z"), data=body,
                     headers={"X-Custom": "kept", "Content-Type": "application/octet-stream"}, timeout=5)
    assert r.status_code == 200
    echoed = r.json()
    assert echoed["method"] == "PUT"
    assert echoed["path"] == "/echo/a/b" and echoed["query"] == "x=1&y=%20z"
    assert echoed["headers"]["X-Custom"] == "kept"
    assert base64.b64decode(echoed["body_b64"]) == body
    assert r.headers["X-Upstream"] == "yes" and r.headers["Set-Cookie"] == "a=1"
    assert len(r.headers["X-Prediction-ID"]) == 32


def test_no_cookie_of_one_client_reaches_the_next(upstream, sidecar_factory):
    # By name, not by IP: aiohttp's default cookie jar ignores cookies from IP addresses only.
    sidecar = sidecar_factory(upstream.url.replace("127.0.0.1", "localhost"))
    first = requests.post(proxy_url(sidecar, "/echo/a"), data=b"x", timeout=5)
    assert first.headers["Set-Cookie"] == "a=1"   # passed through to its own client
    second = requests.post(proxy_url(sidecar, "/echo/b"), data=b"x", timeout=5)
    assert "Cookie" not in second.json()["headers"]   # and never stored for anyone else


def test_prediction_id_is_kept_when_given(sidecar):
    r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [[1, 2]]},
                      headers={"X-Prediction-ID": "abc-123"}, timeout=5)
    assert r.headers["X-Prediction-ID"] == "abc-123"
    sidecar.pipeline.drain()
    snap = sidecar.windows.snapshot("1")
    assert list(snap.prediction_ids) == ["abc-123"]


def test_status_codes_pass_through_and_are_counted(sidecar):
    for code in (200, 404, 500, 503):
        assert requests.get(proxy_url(sidecar, f"/status/{code}"), timeout=5).status_code == code
    text = scrape(sidecar)
    assert sample(text, "inferwatch_requests_total", code="503", endpoint="other", method="GET") == 1
    assert sample(text, "inferwatch_request_duration_seconds_count", endpoint="other") == 4


def test_kserve_rows_become_events_and_metrics(sidecar):
    rows = [{"a": 1.0, "b": "x"}, {"a": 2.0, "b": "y"}, {"a": 3.0, "b": "x"}]
    r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": rows}, timeout=5)
    assert r.status_code == 200 and r.json() == {"predictions": [0.25, 0.75, 0.25]}
    assert sidecar.pipeline.drain()
    snap = sidecar.windows.snapshot("1")
    assert snap.n == 3
    assert snap.features["a"].values.tolist() == [1.0, 2.0, 3.0]
    assert snap.features["b"].category_values().tolist() == ["x", "y", "x"]
    assert snap.outputs["prediction"].values.tolist() == [0.25, 0.75, 0.25]
    text = scrape(sidecar)
    labels = {"model": "m", "model_version": "1"}
    assert sample(text, "inferwatch_predictions_total", **labels) == 3
    assert sample(text, "inferwatch_events_total", source="proxy", **labels) == 3
    assert sample(text, "inferwatch_window_events", **labels) == 3
    assert sample(text, "inferwatch_requests_total", endpoint="/v1/models/{model}:predict", code="200") == 1
    assert sample(text, "inferwatch_request_size_bytes_count", endpoint="/v1/models/{model}:predict") == 1


def test_v2_and_mlflow_through_the_proxy(sidecar):
    v2 = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}
    assert requests.post(proxy_url(sidecar, "/v2/models/m/infer"), json=v2, timeout=5).status_code == 200
    mlflow = {"dataframe_records": [{"p": 1}, {"p": 2}]}
    assert requests.post(proxy_url(sidecar, "/invocations"), json=mlflow, timeout=5).status_code == 200
    assert sidecar.pipeline.drain()
    # the v2 response names model_version "2": its events go to that version's window
    assert sidecar.windows.snapshot("2").n == 2
    assert sidecar.windows.snapshot("1").features["p"].values.tolist() == [1, 2]


def test_tf_serving_columnar_and_missing_fields_through_the_proxy(sidecar):
    # TF Serving's columnar "inputs": one list per feature, the batch dimension first
    columnar = {"inputs": {"a": [1.0, 2.0], "b": ["x", "y"]}}
    assert requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json=columnar, timeout=5).status_code == 200
    # a row without a feature: the event is kept, the feature is missing in it
    rows = [{"a": 3.0, "b": "z"}, {"a": 4.0}]
    assert requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": rows},
                         timeout=5).status_code == 200
    assert sidecar.pipeline.drain()
    snap = sidecar.windows.snapshot("1")
    assert snap.n == 4 and snap.features["a"].values.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert snap.features["b"].category_values().tolist()[:3] == ["x", "y", "z"]
    assert snap.features["b"].state.tolist()[3] != 0   # missing, not a value
    assert snap.outputs["prediction"].values.tolist() == [0.25, 0.75, 0.25, 0.75]


def test_records_at_dotted_paths_through_the_proxy(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"payload.codec": "records", "payload.input_path": "data.rows",
                                               "payload.output_path": "result.scores",
                                               "proxy.routes": ["/records"]})   # a custom inference route
    body = {"data": {"rows": [{"a": 1.5, "b": "x"}, {"a": 2.5, "b": "y"}, {"a": 3.5, "b": "x"}]}, "meta": "kept"}
    r = requests.post(proxy_url(sidecar, "/records"), json=body, timeout=5)
    assert r.status_code == 200 and r.json() == {"result": {"scores": [0.1, 0.2, 0.3]}}
    assert sidecar.pipeline.drain()
    snap = sidecar.windows.snapshot("1")
    assert snap.n == 3 and snap.features["a"].values.tolist() == [1.5, 2.5, 3.5]
    assert set(snap.features) == {"a", "b"}   # only what the path points at
    assert snap.outputs["prediction"].values.tolist() == [0.1, 0.2, 0.3]


def test_bad_inputs_are_forwarded_and_counted(sidecar):
    url = proxy_url(sidecar, "/v1/models/m:predict")
    cases = [
        (b"{not json", "application/json", "invalid_json"),
        (b"\xff\xfe\x00bad", "application/json", "not_utf8"),
        (b"--x\r\n", "multipart/form-data; boundary=x", "unsupported_content_type"),
        (b'"just a string"', "application/json", "unknown_format"),
    ]
    for body, content_type, _ in cases:
        r = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=5)
        assert r.status_code in (200, 400)  # the upstream's own answer, forwarded
    assert sidecar.pipeline.drain()
    text = scrape(sidecar)
    for _, _, reason in cases:
        assert sample(text, "inferwatch_payload_errors_total", reason=reason) >= 1, reason


def test_nan_and_inf_values_are_kept(sidecar):
    body = '{"instances": [{"a": NaN, "b": Infinity}, {"a": 1, "b": null}]}'
    requests.post(proxy_url(sidecar, "/v1/models/m:predict"), data=body,
                  headers={"Content-Type": "application/json"}, timeout=5)
    assert sidecar.pipeline.drain()
    snap = sidecar.windows.snapshot("1")
    assert math.isnan(snap.features["a"].values[0]) and snap.features["a"].state.tolist() == [0, 0]
    assert math.isinf(snap.features["b"].values[0]) and snap.features["b"].state.tolist() == [0, 1]


def test_large_body_is_forwarded_but_not_decoded(upstream, sidecar_factory):
    # A 20 MB body takes the test model server a while to parse on a busy machine.
    sidecar = sidecar_factory(upstream.url, **{"payload.max_decode_bytes": 1024 * 1024, "upstream.timeout_seconds": 30})
    rows = [[float(i)] * 12 for i in range(200_000)]
    body = json.dumps({"instances": rows}).encode()
    assert len(body) > 20 * 1024 * 1024
    r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), data=body,
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 200_000
    assert sidecar.pipeline.drain()
    # Over proxy.max_monitored_body_bytes (8 MiB): streamed to the model server, never held whole.
    text = scrape(sidecar)
    assert sample(text, "inferwatch_unmonitored_bodies_total", body="request", reason="too_large") == 1
    assert sample(text, "inferwatch_request_size_bytes_sum", endpoint="/v1/models/{model}:predict") == len(body)


def test_body_over_decode_limit_but_within_monitoring_cap_is_counted_undecodable(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"payload.max_decode_bytes": 1024})
    body = json.dumps({"instances": [[float(i)] * 12 for i in range(200)]}).encode()
    r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), data=body,
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 200
    assert sidecar.pipeline.drain()
    assert sample(scrape(sidecar), "inferwatch_payload_errors_total", reason="too_large") == 1


def test_body_over_proxy_limit_gets_413(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"proxy.max_body_bytes": 1000})
    r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), data=b"x" * 5000, timeout=5)
    assert r.status_code == 413 and r.json()["error"] == "request_too_large"


def test_gzip_request_is_decoded_and_forwarded_compressed(sidecar):
    body = gzip.compress(json.dumps({"instances": [{"a": 5}]}).encode())
    r = requests.post(proxy_url(sidecar, "/echo/v"), data=body,
                      headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}, timeout=5)
    assert base64.b64decode(r.json()["body_b64"]) == body  # untouched on the way through


def test_unknown_route_and_method_labels_are_bounded(sidecar):
    for i in range(50):
        requests.get(proxy_url(sidecar, f"/random/path/{i}"), timeout=5)
    requests.request("PROPFIND", proxy_url(sidecar, "/status/200"), timeout=5)
    text = scrape(sidecar)
    endpoints = {line.split('endpoint="')[1].split('"')[0] for line in text.splitlines()
                 if line.startswith("inferwatch_requests_total{")}
    assert endpoints == {"other"}
    assert sample(text, "inferwatch_requests_total", method="other") == 1


def test_upstream_down_gives_502_and_is_counted(sidecar_factory):
    upstream = Upstream()
    sidecar = sidecar_factory(upstream.url)
    upstream.stop()
    r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [[1]]}, timeout=5)
    assert r.status_code == 502
    assert r.json()["error"] == "upstream_unavailable"
    text = scrape(sidecar)
    assert sample(text, "inferwatch_upstream_errors_total", reason="connection") == 1
    assert sample(text, "inferwatch_requests_total", code="502") == 1
    assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_upstream_up", model="m") == 0, 5)
    ready = requests.get(admin_url(sidecar, "/readyz"), timeout=5)
    assert ready.status_code == 503 and "unreachable" in ready.json()["checks"]["upstream"]


def test_upstream_timeout_gives_504(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"upstream.timeout_seconds": 0.3})
    r = requests.get(proxy_url(sidecar, "/slow?seconds=2"), timeout=5)
    assert r.status_code == 504 and r.json()["error"] == "upstream_timeout"
    assert sample(scrape(sidecar), "inferwatch_upstream_errors_total", reason="timeout") == 1


def test_upstream_reset_gives_502(sidecar):
    r = requests.get(proxy_url(sidecar, "/reset"), timeout=5)
    assert r.status_code == 502
    assert sample(scrape(sidecar), "inferwatch_upstream_errors_total") == 1


def test_full_queue_drops_and_counts_without_failing_requests(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"queue.max_items": 1})
    sidecar.pipeline.stop()  # nothing drains the queue now
    for _ in range(5):
        r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [[1]]}, timeout=5)
        assert r.status_code == 200
    assert sample(scrape(sidecar), "inferwatch_events_dropped_total", reason="queue_full") == 4


def test_large_bodies_fill_the_byte_bound_and_are_dropped_and_counted(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"queue.max_bytes": 100_000})
    sidecar.pipeline.stop()  # nothing drains the queue now
    body = {"instances": [[0.123456789] * 100] * 40}   # ~50 kB with its answer
    for _ in range(4):
        r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json=body, timeout=5)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 40
    text = scrape(sidecar)
    assert sample(text, "inferwatch_events_dropped_total", reason="queue_full") == 3   # only the first fits
    assert 40_000 < sample(text, "inferwatch_queue_bytes") <= 100_000
    assert sample(text, "inferwatch_queue_capacity_bytes") == 100_000


def test_monitoring_failure_never_breaks_serving(sidecar, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("monitoring bug")

    monkeypatch.setattr(sidecar.pipeline, "submit_exchange", boom)
    r = requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [[1]]}, timeout=5)
    assert r.status_code == 200
    # The answer is relayed before it is observed, so the error is counted just after the client has it.
    wait_for(lambda: sample(scrape(sidecar), "inferwatch_monitoring_errors_total", stage="proxy") == 1)
    assert sample(scrape(sidecar), "inferwatch_monitoring_errors_total", stage="proxy") == 1


def test_worker_exception_is_counted_and_worker_goes_on(sidecar, monkeypatch):
    calls = {"n": 0}
    original = sidecar.windows.get

    def flaky(version):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("window bug")
        return original(version)

    monkeypatch.setattr(sidecar.windows, "get", flaky)
    # One at a time: exchanges queued together are windowed as one batch, which the bug would take whole.
    requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [[1]]}, timeout=5)
    wait_for(lambda: sample(scrape(sidecar), "inferwatch_monitoring_errors_total", stage="worker") == 1)
    requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [[1]]}, timeout=5)
    wait_for(lambda: sample(scrape(sidecar), "inferwatch_predictions_total") == 1)
    assert sidecar.pipeline.drain()
    text = scrape(sidecar)
    assert sample(text, "inferwatch_monitoring_errors_total", stage="worker") == 1
    assert sample(text, "inferwatch_predictions_total") == 1


def test_concurrent_requests_all_counted(sidecar):
    from concurrent.futures import ThreadPoolExecutor

    def call(i):
        with requests.Session() as s:
            return s.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [[i, i]]}, timeout=10).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(call, range(200)))
    assert codes == [200] * 200
    assert sidecar.pipeline.drain()
    text = scrape(sidecar)
    assert sample(text, "inferwatch_requests_total", code="200") == 200
    assert sample(text, "inferwatch_predictions_total") == 200
    assert sample(text, "inferwatch_requests_in_flight") == 0
    values = np.sort(sidecar.windows.snapshot("1").features["f0"].values)
    assert values.tolist() == list(range(200))
