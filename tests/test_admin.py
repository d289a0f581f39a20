"""The admin port over real sockets: scrape, health, status, push mode, auth, TLS, limits."""

import json
import shutil
import subprocess
import sys
import time

import pytest
import requests

from conftest import admin_url, proxy_url, sample, scrape, wait_for


def test_metrics_have_help_and_pass_promtool(sidecar):
    requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [[1, 2]]}, timeout=5)
    requests.get(proxy_url(sidecar, "/nope"), timeout=5)
    sidecar.pipeline.drain()
    text = scrape(sidecar)
    for name in ("inferwatch_requests_total", "inferwatch_request_duration_seconds_bucket",
                 "inferwatch_requests_in_flight", "inferwatch_request_size_bytes_bucket",
                 "inferwatch_response_size_bytes_bucket", "inferwatch_predictions_total", "inferwatch_events_total",
                 "inferwatch_upstream_up", "inferwatch_model_info", "inferwatch_build_info",
                 "inferwatch_window_events", "inferwatch_queue_items"):
        assert f"\n{name}" in text or text.startswith(name), name
    assert ":" not in "".join(line.split("{")[0].split(" ")[0] for line in text.splitlines()
                              if line and not line.startswith("#"))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs the Debian prometheus package")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_health_ready_and_status(sidecar):
    assert requests.get(admin_url(sidecar, "/healthz"), timeout=5).json() == {"status": "ok"}
    ready = requests.get(admin_url(sidecar, "/readyz"), timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    requests.post(proxy_url(sidecar, "/v1/models/m:predict"), json={"instances": [{"a": 1}]}, timeout=5)
    sidecar.pipeline.drain()
    status = requests.get(admin_url(sidecar, "/v1/status"), timeout=5).json()
    assert status["model"] == {"name": "m", "version": "1", "info": {}}
    assert status["windows"]["1"]["events"] == 1 and status["windows"]["1"]["features"] == ["a"]
    assert status["queue"]["capacity"] == 10_000
    assert status["upstream"]["up"] is True


def test_push_events_accepts_and_rejects_by_index(sidecar):
    events = [
        {"prediction_id": "p1", "timestamp": time.time(), "features": {"a": 1.5, "c": "x"}, "prediction": 0.9},
        {"prediction_id": "p2", "features": "not an object"},
        {"prediction_id": "p3", "model_version": "2", "features": {"a": 2.5}, "prediction": {"score": 0.1}},
        "garbage",
    ]
    r = requests.post(admin_url(sidecar, "/v1/events"), json={"events": events}, timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2
    assert [rej["index"] for rej in body["rejected"]] == [1, 3]
    assert all("features" in rej["reason"] or "object" in rej["reason"] for rej in body["rejected"])
    sidecar.pipeline.drain()
    assert list(sidecar.windows.snapshot("1").prediction_ids) == ["p1"]
    assert sidecar.windows.snapshot("2").outputs["score"].values.tolist() == [0.1]
    text = scrape(sidecar)
    assert sample(text, "inferwatch_events_total", source="push") == 2
    assert sample(text, "inferwatch_events_dropped_total", reason="invalid") == 2


@pytest.mark.parametrize("body,content_type,error", [
    (b"{oops", "application/json", "invalid_json"),
    (b"\xff\xfe", "application/json", "not_utf8"),
    (b"<xml/>", "application/xml", "unsupported_content_type"),
])
def test_unusable_push_body_gets_400_with_json_error(sidecar, body, content_type, error):
    r = requests.post(admin_url(sidecar, "/v1/events"), data=body, headers={"Content-Type": content_type}, timeout=5)
    assert r.status_code == 400
    assert r.json()["error"] == error and r.json()["detail"]
    assert sample(scrape(sidecar), "inferwatch_payload_errors_total", reason=error) == 1


def test_oversized_push_body_gets_413(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"admin.max_body_bytes": 1000})
    r = requests.post(admin_url(sidecar, "/v1/events"), data=b"[" + b" " * 5000 + b"]",
                      headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_a_push_waits_while_the_worker_is_behind_then_is_refused_when_the_queue_is_full(sidecar_factory):
    from inferwatch.serving import admin

    sidecar = sidecar_factory("http://127.0.0.1:9", **{"proxy.enabled": False, "queue.max_items": 10})
    sidecar.pipeline.stop()  # nothing drains the queue now
    url = admin_url(sidecar, "/v1/events")

    def push():
        start = time.monotonic()
        r = requests.post(url, json=[{"features": {"a": 1}}], timeout=5)
        return r, time.monotonic() - start

    for _ in range(2):   # the queue at most PUSH_WAIT_ABOVE full (1 of 10): no wait
        r, waited = push()
        assert r.status_code == 200 and r.json()["accepted"] == 1 and waited < admin.PUSH_WAIT_SECONDS * 0.8
    for _ in range(7):   # above it: each push waits for the worker, then is queued
        r, waited = push()
        assert r.status_code == 200 and r.json()["accepted"] == 1
        assert waited >= admin.PUSH_WAIT_SECONDS * 0.9
    push()               # the tenth item fills the queue
    r, _ = push()        # no room left: refused with 429, counted
    assert r.status_code == 429 and r.json()["error"] == "queue_full" and r.headers["Retry-After"] == "1"
    assert sample(scrape(sidecar), "inferwatch_events_dropped_total", reason="queue_full") == 1


def test_push_only_mode_without_proxy(sidecar_factory):
    sidecar = sidecar_factory("http://127.0.0.1:9", **{"proxy.enabled": False})
    assert sidecar.proxy is None
    r = requests.post(admin_url(sidecar, "/v1/events"), json=[{"features": {"a": 1}}], timeout=5)
    assert r.json()["accepted"] == 1
    assert requests.get(admin_url(sidecar, "/readyz"), timeout=5).status_code == 200


def test_kserve_cloudevents_are_paired(sidecar):
    headers = {"ce-id": "req-1", "ce-specversion": "1.0", "ce-source": "http://localhost:9081/",
               "ce-inferenceservicename": "m", "Content-Type": "application/json"}
    r1 = requests.post(admin_url(sidecar, "/v1/events"), data=json.dumps({"instances": [[1, 2], [3, 4]]}),
                       headers={**headers, "ce-type": "org.kubeflow.serving.inference.request"}, timeout=5)
    assert r1.status_code == 202
    r2 = requests.post(admin_url(sidecar, "/v1/events"), data=json.dumps({"predictions": [0, 1]}),
                       headers={**headers, "ce-type": "org.kubeflow.serving.inference.response"}, timeout=5)
    assert r2.status_code == 200 and r2.json()["accepted"] == 1
    sidecar.pipeline.drain()
    snap = sidecar.windows.snapshot("1")
    assert snap.n == 2 and snap.outputs["prediction"].values.tolist() == [0, 1]
    assert sample(scrape(sidecar), "inferwatch_events_total", source="cloudevent") == 2


def test_bearer_auth_separately_for_metrics_and_writes(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"admin.metrics_auth": {"bearer_token": "scrape-secret"},
                                               "admin.write_auth": {"bearer_token": "write-secret"}})
    assert requests.get(admin_url(sidecar, "/metrics"), timeout=5).status_code == 401
    assert requests.get(admin_url(sidecar, "/metrics"), headers={"Authorization": "Bearer write-secret"},
                        timeout=5).status_code == 401
    assert requests.get(admin_url(sidecar, "/metrics"), headers={"Authorization": "Bearer scrape-secret"},
                        timeout=5).status_code == 200
    denied = requests.post(admin_url(sidecar, "/v1/events"), json=[{"features": {"a": 1}}], timeout=5)
    assert denied.status_code == 401 and denied.json()["error"] == "unauthorized"
    assert requests.post(admin_url(sidecar, "/v1/events"), json=[{"features": {"a": 1}}],
                         headers={"Authorization": "Bearer write-secret"}, timeout=5).status_code == 200
    assert requests.get(admin_url(sidecar, "/healthz"), timeout=5).status_code == 200  # probes stay open


def test_basic_auth_with_hashed_password(upstream, sidecar_factory):
    from inferwatch.support.auth import hash_password

    sidecar = sidecar_factory(upstream.url, **{"admin.metrics_auth": {"basic_users": {"prom": hash_password("pw")}}})
    assert requests.get(admin_url(sidecar, "/metrics"), auth=("prom", "wrong"), timeout=5).status_code == 401
    assert requests.get(admin_url(sidecar, "/metrics"), auth=("prom", "pw"), timeout=5).status_code == 200


def test_tls_on_the_admin_port(upstream, sidecar_factory, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    sidecar = sidecar_factory(upstream.url, **{"admin.tls": {"cert_file": str(cert), "key_file": str(key)}})
    r = requests.get(f"https://127.0.0.1:{sidecar.admin_port}/metrics", verify=str(cert), timeout=5)
    assert r.status_code == 200 and "inferwatch_build_info" in r.text


def test_unknown_admin_route_is_json_404(sidecar):
    r = requests.get(admin_url(sidecar, "/nope"), timeout=5)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_cli_run_serves_and_promtool_checks_live_scrape(upstream, tmp_path):
    """The real command, as a user starts it: no config file, flags only."""
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-m", "inferwatch", "run", "--upstream", upstream.url,
                             "--proxy-port", str(ports[0]), "--admin-port", str(ports[1]), "--model", "cli",
                             "--model-version", "7", "--features", "x,y"], stderr=subprocess.PIPE, text=True)
    try:
        def up():
            try:
                return requests.get(f"http://127.0.0.1:{ports[1]}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        assert wait_for(up, 20)
        r = requests.post(f"http://127.0.0.1:{ports[0]}/v1/models/cli:predict", json={"instances": [[1, 2]]}, timeout=5)
        assert r.status_code == 200
        def scraped_prediction():
            text = requests.get(f"http://127.0.0.1:{ports[1]}/metrics", timeout=5).text
            return text if sample(text, "inferwatch_predictions_total", model="cli", model_version="7") == 1 else None

        text = wait_for(scraped_prediction, 10)
        assert text
        status = requests.get(f"http://127.0.0.1:{ports[1]}/v1/status", timeout=5).json()
        assert status["windows"]["7"]["features"] == ["x", "y"]
        result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM is a clean shutdown


def test_cloudevent_request_without_response_is_monitored_after_ttl(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"cloudevents.ttl_seconds": 0.2})
    headers = {"ce-id": "lonely", "ce-specversion": "1.0", "ce-source": "x", "Content-Type": "application/json",
               "ce-type": "org.kubeflow.serving.inference.request"}
    r = requests.post(admin_url(sidecar, "/v1/cloudevents"), data=json.dumps({"instances": [{"a": 1.0}]}),
                      headers=headers, timeout=5)
    assert r.status_code == 202
    assert wait_for(lambda: (snap := sidecar.windows.snapshot("1")) is not None and snap.n == 1, 10)
    snap = sidecar.windows.snapshot("1")
    assert snap.features["a"].values.tolist() == [1.0] and not snap.outputs
    assert sample(scrape(sidecar), "inferwatch_cloudevents_unpaired_total", reason="expired") == 1
