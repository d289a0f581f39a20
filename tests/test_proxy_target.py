"""The proxy forwards the request target byte for byte and monitors what the model server serves.

The upstream (tests/upstream_server.py) echoes the target it received in ``X-Request-Target``;
http.client and a raw socket send targets exactly as written (requests would requote them).
"""

import http.client

import pytest

from conftest import proxy_url, sample, scrape

# Each was rewritten before (issue 12, item 4): dot segments resolved, %3A decoded, //x to ////x,
# %zz requoted to %25zz.
RAW_TARGETS = [
    "/%2e%2e/%2e%2e/etc/passwd",
    "/echo/a%3Ab",
    "//x",
    "/%zz",
    "/echo?q=%zz&x=a+b&y=%2F",
    "/a/./b/../c",
    "/v1/models/x%2Fy:predict",
    "/sp%20ace?a=%20",
]


def request_raw(port: int, method: str, target: str, body: bytes | None = None, headers=()):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{port}")
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("target", RAW_TARGETS)
def test_request_target_is_forwarded_byte_for_byte(sidecar, target):
    status, headers, _ = request_raw(sidecar.proxy_port, "GET", target)
    assert status in (200, 404)   # the model server's own answer
    assert headers["X-Request-Target"] == target


def test_absolute_form_target_is_forwarded_as_its_path_and_query(sidecar):
    status, headers, _ = request_raw(sidecar.proxy_port, "GET", "http://elsewhere.example/echo/%2e/a?q=%zz")
    assert status == 200 and headers["X-Request-Target"] == "/echo/%2e/a?q=%zz"
    status, _, body = request_raw(sidecar.proxy_port, "GET", "ftp://elsewhere.example/echo")   # no path of ours
    assert status == 400 and b"bad_request_target" in body
    assert sample(scrape(sidecar), "inferwatch_requests_total", endpoint="other", code="400") == 1


@pytest.mark.parametrize("target", [
    "/v1/models/./m:predict",      # served by the model server, was not monitored
    "/v1//models/m:predict",
    "/v1/models/x/../m:predict",
    "/v1/models/%2e/m:predict",
])
def test_every_spelling_the_model_server_serves_is_monitored(sidecar, target):
    body = b'{"instances": [{"a": 1.0}, {"a": 2.0}]}'
    status, headers, answer = request_raw(sidecar.proxy_port, "POST", target, body,
                                          [("Content-Type", "application/json")])
    assert status == 200 and headers["X-Request-Target"] == target
    assert sidecar.pipeline.drain()
    assert sidecar.windows.snapshot("1").n == 2
    text = scrape(sidecar)
    assert sample(text, "inferwatch_requests_total", endpoint="/v1/models/{model}:predict", code="200") == 1
    assert sample(text, "inferwatch_predictions_total") == 2


def test_query_and_plain_paths_still_route(sidecar):
    import requests

    r = requests.post(proxy_url(sidecar, "/v1/models/m:predict?trace=1"), json={"instances": [[1]]}, timeout=5)
    assert r.status_code == 200
    assert sample(scrape(sidecar), "inferwatch_requests_total", endpoint="/v1/models/{model}:predict") == 1
