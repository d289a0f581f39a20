"""Forwarding headers as nginx and Envoy do (docs/design.md, "Headers through the proxy")."""

import requests

from conftest import proxy_url
from test_proxy_target import request_raw


def echoed_headers(sidecar, headers=()) -> dict:
    import json

    status, _, body = request_raw(sidecar.proxy_port, "GET", "/echo/h", headers=headers)
    assert status == 200
    return json.loads(body)["headers"]


def test_x_forwarded_for_appends_the_peer_to_the_clients_list(sidecar):
    assert echoed_headers(sidecar)["X-Forwarded-For"] == "127.0.0.1"
    chained = echoed_headers(sidecar, [("X-Forwarded-For", "203.0.113.7, 198.51.100.2")])
    assert chained["X-Forwarded-For"] == "203.0.113.7, 198.51.100.2, 127.0.0.1"
    # two header lines are one list (RFC 9110 5.3), in order
    two = echoed_headers(sidecar, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.2")])
    assert two["X-Forwarded-For"] == "203.0.113.7, 198.51.100.2, 127.0.0.1"


def test_forwarded_host_and_proto_of_an_earlier_proxy_are_kept(sidecar):
    ours = echoed_headers(sidecar)
    assert ours["X-Forwarded-Proto"] == "http" and ours["X-Forwarded-Host"] == f"127.0.0.1:{sidecar.proxy_port}"
    theirs = echoed_headers(sidecar, [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "api.example.com")])
    assert theirs["X-Forwarded-Proto"] == "https" and theirs["X-Forwarded-Host"] == "api.example.com"


def test_server_and_date_are_the_upstreams_and_none_are_added(sidecar):
    passed = requests.get(proxy_url(sidecar, "/echo/s"), timeout=5)
    assert passed.headers["Server"].startswith("BaseHTTP/")   # the model server's, not aiohttp's
    assert "Date" in passed.headers
    bare = requests.get(proxy_url(sidecar, "/bare"), timeout=5)
    assert bare.status_code == 200 and bare.content == b"bare"
    assert "Server" not in bare.headers and "Date" not in bare.headers and "Content-Type" not in bare.headers
