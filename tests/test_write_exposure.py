"""The admin port's write endpoints open beyond loopback are warned about, in `check-config` and
at start; the demo traffic sends the write token when the sidecar asks for one."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest
import requests

from conftest import sample, scrape, wait_for
from inferwatch.config import load_config
from inferwatch.sidecar import Sidecar


def check_config(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferwatch", "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("admin,warned", [
    ("{}", True),                                                   # the default: 0.0.0.0, no write auth
    ("{listen_address: 10.1.2.3}", True),
    ("{listen_address: '::'}", True),
    ("{listen_address: 127.0.0.1}", False),
    ("{listen_address: localhost}", False),
    ("{listen_address: '::1'}", False),
    ("{write_auth: {bearer_token: t}}", False),
    ("{write_auth: {basic_users: {u: x}}}", False),
    ("{metrics_auth: {bearer_token: t}}", True),                    # scrape auth protects no write
])
def test_check_config_warns_when_write_endpoints_are_open_beyond_loopback(tmp_path, admin, warned):
    path = tmp_path / "c.yaml"
    path.write_text(f"admin: {admin}\nlabels: {{enabled: true}}\n")
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stdout.splitlines() if line.startswith("WARNING:") and "write_auth" in line]
    assert bool(warning) == warned, result.stdout
    if warned:
        assert "/v1/events, /v1/cloudevents, /v1/labels" in warning[0]


def test_the_sidecar_warns_at_start_when_write_endpoints_are_open(caplog):
    with caplog.at_level(logging.WARNING, logger="inferwatch.sidecar"):
        Sidecar(load_config(None, {"admin.listen_address": "0.0.0.0", "proxy.enabled": False}))
    assert any("/v1/events" in r.getMessage() and "write_auth" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inferwatch.sidecar"):
        Sidecar(load_config(None, {"admin.listen_address": "0.0.0.0", "admin.write_auth.bearer_token": "t",
                                   "proxy.enabled": False}))
        Sidecar(load_config(None, {"admin.listen_address": "127.0.0.1", "proxy.enabled": False}))
    assert not [r for r in caplog.records if "write_auth" in r.getMessage()]


def test_demo_traffic_sends_the_write_token(upstream, sidecar_factory):
    from inferwatch.demo.traffic import TrafficGenerator

    sidecar = sidecar_factory(upstream.url, **{"admin.write_auth.bearer_token": "s3cret", "labels.enabled": True})
    url = f"http://127.0.0.1:{sidecar.proxy_port}/v1/models/m:predict"
    labels_url = f"http://127.0.0.1:{sidecar.admin_port}/v1/labels"
    assert requests.post(labels_url, json={"labels": []}, timeout=5).status_code == 401
    traffic = TrafficGenerator(url, duration=1.0, concurrency=1, rate_per_worker=20, labels_url=labels_url,
                               label_delay=(0.0, 0.1), labels_token="s3cret").start()
    deadline = time.monotonic() + 30
    while traffic.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    traffic.stop()
    assert traffic.labels_sent > 0
    sidecar.pipeline.drain()
    assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_labels_total") > 0, 10)
