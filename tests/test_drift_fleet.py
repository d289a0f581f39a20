"""Fleet-wide PSI: the PromQL of fleet_psi_rules on a real Prometheus equals the sidecar's own PSI.

Two in-process sidecars (replicas of one model) get different halves of the traffic; a real
Prometheus scrapes both every second and evaluates the recording rules. The PSI computed in
PromQL from the summed cumulative bin counters must equal, to 1e-6, the PSI the drift engine
computes over the same events: per replica (each sidecar's own result) and for the fleet (the
engine over the union of both windows).

``increase()`` extrapolates to the range boundaries by a factor that depends on each series'
sample count, so the exact comparison is made at an evaluation time and range where both
replicas have the same number of samples, the first of them taken before any event (0) and
the last after all of them; then the factor is the same for every series and cancels in the
proportions. The recorded rule (1 s evaluations, arbitrary alignment: series with different sample
counts are extrapolated differently) is checked sample by sample against the expression queried
at each recorded sample's own timestamp (runs differed from the aligned fleet PSI by 0.001% to 5.5%).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import numpy as np
import pytest
import requests
import yaml

from inferwatch.config import load_config
from inferwatch.alerting.promql import fleet_psi_expr, fleet_psi_rules
from inferwatch.monitors.drift import Evaluator, PreparedReference
from inferwatch.ingest.events import EventBatch
from inferwatch.reference import build_profile
from inferwatch.sidecar import Sidecar
from inferwatch.pipeline.window import Window



def _prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:   # a fail, not a skip: `make test` installs it, so its absence is a broken setup
        pytest.fail("prometheus is not installed: `make test` installs the Debian prometheus package")
    return path

RANGE = "10m"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(predicate, timeout: float = 30.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(interval)
    return None


def _events(n: int, rng: np.random.Generator, shift: float) -> EventBatch:
    return EventBatch(n, features={
        "amount": list(rng.lognormal(3 + shift, 1, n)),
        "age": list(np.round(rng.normal(40 - 10 * shift, 10, n))),
        "country": list(rng.choice(["DE", "FR", "IT", "ES", "PL"], n, p=[0.1, 0.2, 0.3, 0.2, 0.2])),
    })


@pytest.fixture
def fleet(tmp_path):
    rng = np.random.default_rng(42)
    n = 4000
    profile = build_profile({"feature": {
        "amount": rng.lognormal(3, 1, n), "age": np.round(rng.normal(40, 10, n)),
        "country": list(rng.choice(["DE", "FR", "IT", "ES", "PL", "NL"], n, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1]))}},
        top_k=4)
    ref_path = tmp_path / "reference.json"
    profile.save(ref_path)
    sidecars = [Sidecar(load_config(None, {
        "proxy.enabled": False, "admin.listen_address": "127.0.0.1", "admin.port": 0,
        "model.name": "m", "model.version": "1", "reference.path": str(ref_path),
        "drift.interval_seconds": 0.2, "drift.min_events": 10})).start() for _ in range(2)]
    port = _free_port()
    rules = tmp_path / "fleet.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "fleet-psi", "interval": "1s", "rules": [
        {"record": name, "expr": expr} for name, expr in fleet_psi_rules(RANGE).items()]}]}, sort_keys=False))
    check = subprocess.run([shutil.which("promtool") or "/usr/bin/promtool", "check", "rules", str(rules)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": [str(rules)],
              "scrape_configs": [{"job_name": "inferwatch", "static_configs": [
                  {"targets": [f"127.0.0.1:{s.admin_port}" for s in sidecars]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")
    prometheus = subprocess.Popen([_prometheus(), f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield profile, sidecars, f"http://127.0.0.1:{port}"
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(10)
        except subprocess.TimeoutExpired:
            prometheus.kill()
        log.close()
        for s in sidecars:
            s.stop()


def _query(url: str, expr: str, at: float | None = None) -> list[dict]:
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    answer = requests.get(f"{url}/api/v1/query", params=params, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _aligned_range(url: str, instances: list[str], now: float) -> int | None:
    """A range (s) ending at ``now`` with as many samples of each replica, the first one before any event."""
    samples = {}
    for inst in instances:
        result = _query(url, f'inferwatch_feature_bin_total{{instance="{inst}", feature="age", bin="0"}}[15m]', now)
        samples[inst] = [(float(t), float(v)) for t, v in result[0]["values"]]
    for r in range(3, 900):
        counts, ok = [], True
        for inst in instances:
            inside = [(t, v) for t, v in samples[inst] if t > now - r]
            ok = ok and len(inside) >= 3 and inside[0][1] == 0.0 and now - inside[-1][0] > 1.5
            counts.append(len(inside))
        if ok and len(set(counts)) == 1:
            return r
    return None


def test_fleet_psi_in_promql_equals_the_sidecars_psi(fleet):
    profile, sidecars, url = fleet
    instances = [f"127.0.0.1:{s.admin_port}" for s in sidecars]
    # Both replicas are scraped with their counters at 0 before any event arrives.
    assert _until(lambda: len(_query(url, 'inferwatch_feature_bin_total{feature="age", bin="0"} == 0')) == 2, 40)
    time.sleep(2.5)
    rng = np.random.default_rng(7)
    batches = [_events(1500, rng, 0.3), _events(2500, rng, 0.5)]
    for sidecar, batch in zip(sidecars, batches):
        for start in range(0, batch.n, 250):  # several pushes, as traffic arrives
            part = EventBatch(min(250, batch.n - start),
                              features={k: v[start:start + 250] for k, v in batch.features.items()})
            sidecar.pipeline.submit_batch("1", part)
        sidecar.pipeline.drain()
    total = 'sum by (instance) (inferwatch_feature_bin_total{feature="age"})'
    assert _until(lambda: sorted(float(r["value"][1]) for r in _query(url, total)) == [1500.0, 2500.0], 20)
    final_at = time.time()  # Prometheus holds both replicas' final counts from here on
    assert _until(lambda: all(s.drift.results.get("1") and s.drift.results["1"].events == b.n
                              for s, b in zip(sidecars, batches)), 10)
    own = [{c.name: c.scores["psi"] for c in s.drift.results["1"].features} for s in sidecars]
    # The recording rules run on their own schedule: present and close.
    recorded_expr = f'model_version_feature:inferwatch_feature_psi:{RANGE}'
    assert _until(lambda: _query(url, recorded_expr), 20)
    time.sleep(2.5)
    # Read once every replica's final counts were scraped and the rule evaluated since: the first
    # record can predate a replica's last scrape (half the PSI was seen once).
    recorded = _query(url, recorded_expr)
    assert {r["metric"]["feature"] for r in recorded} == {"amount", "age", "country"}
    # Rule evaluations between final_at and cleared_at saw both replicas' final counts; after
    # cleared_at the replicas' series go stale one scrape apart, and a rule evaluated in between
    # sees one replica only (its PSI alone: 0.072 against the fleet's 0.166, seen once in CI).
    time.sleep(max(0.0, final_at + 6.5 - time.time()))
    cleared_at = time.time()
    for s in sidecars:  # the counters' last samples are final (the reference ratios stay current)
        s.drift.counters = {}
    time.sleep(2.0)
    now = time.time()
    r = _aligned_range(url, instances, now)
    assert r is not None, [(i, _query(url, f'inferwatch_feature_bin_total{{instance="{i}", feature="age", bin="0"}}[15m]', now)) for i in instances]

    # The fleet: PromQL over both replicas vs the engine over the union of both windows.
    union = Window("1", capacity=10_000, max_age_seconds=1e9)
    for batch in batches:
        union.append(EventBatch(batch.n, features=batch.features))
    fleet_result = Evaluator(PreparedReference.build(profile), sidecars[0].cfg.drift).evaluate(union.snapshot())
    expected = {c.name: c.scores["psi"] for c in fleet_result.features}
    got = {x["metric"]["feature"]: float(x["value"][1]) for x in _query(url, fleet_psi_expr(f"{r}s"), now)}
    assert set(got) == set(expected) == {"amount", "age", "country"}
    for feature, value in expected.items():
        assert got[feature] == pytest.approx(value, abs=1e-6), feature
        if feature != "country":  # the numeric features were shifted: a real, non-trivial PSI
            assert value > 0.01
    # Each replica alone: the same expression restricted to its instance vs that sidecar's own result.
    for inst, mine in zip(instances, own):
        expr = fleet_psi_expr(f"{r}s").replace("inferwatch_feature_bin_total[",
                                               f'inferwatch_feature_bin_total{{instance="{inst}"}}[')
        got = {x["metric"]["feature"]: float(x["value"][1]) for x in _query(url, expr, now)}
        for feature, value in mine.items():
            assert got[feature] == pytest.approx(value, abs=1e-6), (inst, feature)
    # The recorded series is the expression, evaluated by the rule engine at its own timestamps
    # (where extrapolation differs from the aligned range above): each recorded sample equals the
    # expression queried at that sample's timestamp. A scrape stamped just before an evaluation
    # but stored just after it can make one sample differ, so most of the last ones must match.
    history = _query(url, f"{recorded_expr}[8s]", cleared_at)
    stamps = sorted({float(t) for series in history for t, _ in series["values"]
                     if final_at + 1.0 <= float(t) <= cleared_at})[-5:]
    assert len(stamps) >= 3, history
    matching = 0
    for stamp in stamps:
        rec = {s["metric"]["feature"]: float(v) for s in history for t, v in s["values"] if float(t) == stamp}
        direct = {x["metric"]["feature"]: float(x["value"][1])
                  for x in _query(url, fleet_psi_expr(RANGE), stamp)}
        assert set(rec) == {"amount", "age", "country"}, rec
        matching += all(rec[f] == pytest.approx(direct[f], rel=1e-9, abs=1e-12) for f in rec)
        for feature, value in expected.items():  # and it is the fleet's PSI, up to extrapolation
            assert rec[feature] == pytest.approx(value, rel=0.25), feature
    assert matching >= len(stamps) - 1, (matching, stamps)
