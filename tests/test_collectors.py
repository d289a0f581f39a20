"""A custom collector that raises loses its own families, never the scrape (exposition/collectors)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from conftest import sample
from inferwatch.config import load_config
from inferwatch.exposition.collectors import CollectorSet
from inferwatch.sidecar import Sidecar


class Healthy:
    def __init__(self, name: str = "healthy_value"):
        self.name = name

    def describe(self):
        return [GaugeMetricFamily(self.name, "A value.")]

    def collect(self):
        yield GaugeMetricFamily(self.name, "A value.", value=1.0)


class Broken:
    """Yields one family, then raises: the family it already yielded must not be served either."""

    def __init__(self):
        self.calls = 0

    def describe(self):
        return []

    def collect(self):
        self.calls += 1
        yield GaugeMetricFamily("half_done", "Yielded before the error.", value=1.0)
        raise RuntimeError("collector bug")


class Partial(Healthy):
    """Reads some of what it is configured to read (the model-process collector's AccessDenied)."""

    last_success = False


def scrape(registry: CollectorRegistry) -> dict:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def by_collector(family) -> dict[str, float]:
    return {s.labels["collector"]: s.value for s in family.samples}


def test_a_raising_collector_is_skipped_counted_and_reported_while_the_others_are_served(caplog):
    registry = CollectorRegistry()
    errors = Counter("errors", "Errors.", registry=registry)
    collectors = CollectorSet(errors)
    broken = Broken()
    collectors.add("broken", broken)
    collectors.add("healthy", Healthy())
    collectors.add("partial", Partial("partial_value"))
    registry.register(collectors)
    with caplog.at_level(logging.WARNING, logger="inferwatch.exposition.collectors"):
        families = scrape(registry)
        scrape(registry)  # a second failure is counted but not logged again (rate-limited)
    assert "half_done" not in families
    assert families["healthy_value"].samples[0].value == 1.0
    assert families["partial_value"].samples[0].value == 1.0
    assert by_collector(families["inferwatch_collector_success"]) == {"broken": 0.0, "healthy": 1.0, "partial": 0.0}
    durations = by_collector(families["inferwatch_collector_duration_seconds"])
    assert set(durations) == {"broken", "healthy", "partial"} and all(d >= 0 for d in durations.values())
    assert broken.calls == 2 and registry.get_sample_value("errors_total") == 2
    failures = [r for r in caplog.records if "collector broken failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


def test_failures_are_logged_again_after_the_interval_with_the_count_in_between(caplog):
    now = [0.0]
    collectors = CollectorSet(clock=lambda: now[0])
    collectors.add("broken", Broken())
    with caplog.at_level(logging.WARNING, logger="inferwatch.exposition.collectors"):
        for _ in range(3):
            list(collectors.collect())
        now[0] += 301.0
        list(collectors.collect())
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "2 more failures" in messages[1]


def test_names_are_checked_at_registration():
    collectors = CollectorSet()
    collectors.add("a", Healthy())
    with pytest.raises(ValueError):
        collectors.add("a", Healthy("other_value"))
    registry = CollectorRegistry()
    registry.register(collectors)  # the held collectors' descriptions are the set's
    with pytest.raises(ValueError):
        registry.register(Healthy())


@pytest.fixture
def sidecar():
    cfg = load_config(None, {"proxy.enabled": False, "admin.port": 0, "admin.listen_address": "127.0.0.1",
                             "model.name": "m", "model.version": "1", "process.pid": os.getpid()})
    sidecar = Sidecar(cfg).start()
    yield sidecar
    sidecar.stop()


def test_a_raising_collector_leaves_the_rest_of_a_real_sidecars_metrics_intact(sidecar):
    events = [{"features": {"x": 1.0}, "prediction": {"score": 0.5}}]
    r = requests.post(f"http://127.0.0.1:{sidecar.admin_port}/v1/events", json={"events": events}, timeout=5)
    assert r.status_code == 200, r.text
    assert sidecar.pipeline.drain()

    def snapshot():
        raise RuntimeError("an output monitor bug")

    sidecar.outputs.snapshot = snapshot
    response = requests.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics", timeout=5)
    assert response.status_code == 200
    text = response.text
    names = [f.name for f in text_string_to_metric_families(text)]
    assert "inferwatch_prediction_score" not in names  # the broken collector's families are skipped
    for name in ("inferwatch_window_events", "inferwatch_queue_items", "inferwatch_events",
                 "inferwatch_model_process_up", "inferwatch_build_info"):
        assert name in names, name
    assert names.count("inferwatch_collector_success") == 1  # one family, whatever the collectors
    assert sample(text, "inferwatch_collector_success", collector="outputs") == 0
    for name in ("state", "model_process"):
        assert sample(text, "inferwatch_collector_success", collector=name) == 1
        assert f'inferwatch_collector_duration_seconds{{collector="{name}"}}' in text
    assert sample(text, "inferwatch_window_events", model_version="1") == 1
    # The error counter is exposed before the collectors run: the next scrape shows this one's failure.
    again = requests.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics", timeout=5).text
    assert sample(again, "inferwatch_monitoring_errors_total", model="m", stage="collector") == 1
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed"
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_custom_collector_of_a_sidecar_is_wrapped_and_healthy(sidecar):
    names = sidecar.collectors.names()
    assert {"state", "outputs", "guard", "model_process"} <= set(names)
    text = requests.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics", timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert by_collector(families["inferwatch_collector_success"]) == dict.fromkeys(names, 1.0)
    assert set(by_collector(families["inferwatch_collector_duration_seconds"])) == set(names)
    assert sample(text, "inferwatch_monitoring_errors_total", stage="collector") == 0
