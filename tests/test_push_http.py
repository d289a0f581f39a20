"""Push over HTTP (the admin port): compressed bodies and batches with nothing usable."""

import gzip
import json
import zlib

import requests

from conftest import admin_url, registry_samples


def dropped_invalid(sidecar) -> float:
    return sum(v for labels, v in registry_samples(sidecar.metrics.registry).get("inferwatch_events_dropped_total", [])
               if labels.get("reason") == "invalid")


def test_gzip_and_deflate_bodies_are_decoded(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url)
    events = {"events": [{"prediction_id": f"p{i}", "features": {"a": i}, "prediction": 0.5} for i in range(3)]}
    raw = json.dumps(events).encode()
    for encoding, body in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        r = requests.post(admin_url(sidecar, "/v1/events"), data=body, timeout=5,
                          headers={"Content-Type": "application/json", "Content-Encoding": encoding})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 3, encoding
    ndjson = "\n".join(json.dumps(e) for e in events["events"]).encode()
    r = requests.post(admin_url(sidecar, "/v1/events"), data=gzip.compress(ndjson), timeout=5,
                      headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["accepted"] == 3


def test_gzip_bomb_is_refused_at_the_body_cap(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url, **{"admin.max_body_bytes": 1024 * 1024})
    bomb = gzip.compress(b'{"events": [' + b" " * (4 * 1024 * 1024) + b"]}")
    assert len(bomb) < 64 * 1024
    r = requests.post(admin_url(sidecar, "/v1/events"), data=bomb, timeout=5,
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = requests.post(admin_url(sidecar, "/v1/events"), data=b"not gzip", timeout=5,
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 400 and r.json()["error"] == "decompression"
    r = requests.post(admin_url(sidecar, "/v1/events"), data=b"{}", timeout=5,
                      headers={"Content-Type": "application/json", "Content-Encoding": "br"})
    assert r.status_code == 400 and "br" in r.json()["detail"]


def test_a_batch_with_no_valid_event_is_a_400_with_the_rejections(upstream, sidecar_factory):
    sidecar = sidecar_factory(upstream.url)
    events = [{"features": "not an object"}, "garbage", {"prediction": 1}]
    r = requests.post(admin_url(sidecar, "/v1/events"), json={"events": events}, timeout=5)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_events" and body["accepted"] == 0
    assert [rej["index"] for rej in body["rejected"]] == [0, 1, 2]
    assert dropped_invalid(sidecar) == 3
    # One valid event is enough for 200, the others still rejected one by one.
    r = requests.post(admin_url(sidecar, "/v1/events"), json={"events": events + [{"features": {"a": 1}}]},
                      timeout=5)
    assert r.status_code == 200 and r.json()["accepted"] == 1 and len(r.json()["rejected"]) == 3
    # An empty batch has nothing wrong in it.
    r = requests.post(admin_url(sidecar, "/v1/events"), json={"events": []}, timeout=5)
    assert r.status_code == 200 and r.json()["accepted"] == 0
