"""Issue 16 item 1: the reference profile's calibration section, and estimates from calibrated scores
in a running sidecar (`inferwatch profile` -> reference.path -> /v1/events -> /metrics and /v1/status)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import requests
from sklearn.metrics import accuracy_score, roc_auc_score

from conftest import admin_url, sample, scrape, wait_for
from inferwatch.cli import main
from inferwatch.reference import FORMAT_VERSION, ReferenceProfile, build_profile, content_hash

W, B = np.array([1.5, -1.0]), 0.3


def simulate(seed: int, n: int, mean: float = 0.5, overconfidence: float = 3.0):
    """A logistic truth over two features and a model whose scores are overconfident."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) + np.array([mean, 0.0])
    logit = x @ W + B
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    return x, 1.0 / (1.0 + np.exp(-overconfidence * logit)), y


def profile_columns(seed: int = 0, n: int = 5000, labels=None):
    x, score, y = simulate(seed, n)
    label = y.tolist() if labels is None else [labels[v] for v in y]
    return {"feature": {"x0": x[:, 0].tolist(), "x1": x[:, 1].tolist()},
            "output": {"probability": score.tolist(), "prediction": (score >= 0.5).astype(int).tolist()},
            "label": {"y": label}}


def test_a_profile_with_the_label_and_the_score_holds_a_calibration_map(tmp_path):
    profile = build_profile(profile_columns())
    section = profile.calibration
    assert section is not None and section.label == "y" and section.positive_class == "1"
    assert list(section.maps) == ["probability"]  # the 0/1 prediction is a class, not a score
    fitted = section.maps["probability"]
    assert fitted.method == "isotonic" and fitted.rows == 5000
    assert fitted.apply(np.array([0.999]))[0] < 0.95  # an overconfident 0.999 is not that sure
    path = tmp_path / "reference.json"
    profile.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == FORMAT_VERSION >= 3  # format 4 added the seen and multivariate_thresholds sections
    assert data["calibration"]["version"] == 1 and data["calibration"]["outputs"]["probability"]["method"] == "isotonic"
    loaded = ReferenceProfile.load(path)
    grid = np.linspace(0, 1, 101)
    np.testing.assert_array_equal(loaded.calibration.maps["probability"].apply(grid), fitted.apply(grid))
    assert "calibrated scores probability (isotonic)" in loaded.describe()


def test_class_names_as_labels_take_the_class_the_score_points_to():
    profile = build_profile(profile_columns(labels={0: "legit", 1: "fraud"}))
    assert profile.calibration.positive_class == "fraud"
    small = build_profile(profile_columns(n=400))  # under 1,000 rows: Platt scaling
    assert small.calibration.maps["probability"].method == "platt"
    assert build_profile({"output": {"probability": [0.2, 0.9] * 50}, "label": {"y": ["a", "b", "c", "a"] * 25}}
                         ).calibration is None  # not a binary label


def test_older_profiles_still_load_without_calibration(tmp_path):
    data = build_profile({"feature": {"x": list(range(100))}}).to_dict()
    del data["calibration"]
    data["version"] = 2
    data["hash"] = content_hash(data)
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(data))
    loaded = ReferenceProfile.load(path)
    assert loaded.version == 2 and loaded.calibration is None
    data["calibration"] = {"version": 9, "label": "y", "positive_class": "1", "outputs": {}}
    data["hash"] = content_hash(data)
    with pytest.raises(ValueError, match="unsupported calibration section version 9"):
        ReferenceProfile.from_dict(data)


def write_csv(path, seed: int, n: int):
    x, score, y = simulate(seed, n)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x0", "x1", "score", "y"])
        writer.writerows(zip(x[:, 0], x[:, 1], score, y))


def push_window(sidecar, seed: int, n: int, mean: float):
    x, score, y = simulate(seed, n, mean)
    events = [{"features": {"x0": float(a), "x1": float(b)}, "prediction": {"probability": float(s)}}
              for a, b, s in zip(x[:, 0], x[:, 1], score)]
    for start in range(0, n, 1000):
        r = requests.post(admin_url(sidecar, "/v1/events"), json={"events": events[start:start + 1000]}, timeout=10)
        assert r.status_code == 200 and r.json()["accepted"] == min(1000, n - start), r.text
    decided = score >= 0.5
    return {"accuracy": accuracy_score(y, decided), "roc_auc": roc_auc_score(y, score)}


def evaluations(sidecar) -> int:
    return requests.get(admin_url(sidecar, "/v1/status"), timeout=5).json()["performance"]["evaluations"]


def settled_estimates(sidecar) -> dict[str, float]:
    """The estimates of an evaluation that began after the whole window was in."""
    assert wait_for(lambda: sample(scrape(sidecar), "inferwatch_window_events") >= 5000, timeout=30)
    start = evaluations(sidecar)
    assert wait_for(lambda: evaluations(sidecar) >= start + 2, timeout=30)
    text = scrape(sidecar)
    out = {}
    for m in ("accuracy", "roc_auc"):
        out[m] = sample(text, "inferwatch_estimated_performance", metric=m)
        out[f"{m}_se"] = sample(text, "inferwatch_estimated_performance_standard_error", metric=m)
    return out


@pytest.mark.parametrize("mean", [0.5, -0.2, 1.5], ids=["no shift", "toward the boundary", "away from it"])
def test_the_sidecar_estimates_from_calibrated_scores(tmp_path, upstream, sidecar_factory, mean):
    """The profile command fits the map; the sidecar estimates accuracy and ROC-AUC within 0.02
    of the realised values on overconfident scores (before: 0.08 to 0.13 too high), with a
    standard error each, and /v1/status says the estimate is calibrated."""
    src, ref = tmp_path / "reference.csv", tmp_path / "reference.json"
    write_csv(src, seed=11, n=20_000)
    assert main(["profile", "--input", str(src), "--output", str(ref), "--label-column", "y",
                 "--prediction-column", "score=probability", "--sample-size", "20000"]) == 0
    sidecar = sidecar_factory(upstream.url, **{"reference.path": str(ref), "labels.enabled": True,
                                               "performance.score_output": "probability",
                                               "performance.interval_seconds": 0.2, "proxy.enabled": False})
    realised = push_window(sidecar, seed=12, n=5000, mean=mean)
    got = settled_estimates(sidecar)
    for metric, value in realised.items():
        assert got[metric] == pytest.approx(value, abs=0.02), metric
        assert 0.001 < got[f"{metric}_se"] < 0.02
    status = requests.get(admin_url(sidecar, "/v1/status"), timeout=5).json()["performance"]
    assert status["estimate_calibration"].startswith("calibrated: isotonic map of 'probability'")
    assert set(status["estimated_standard_error"]["1"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}


def test_an_older_profile_estimates_as_before_and_says_so(tmp_path, upstream, sidecar_factory):
    data = build_profile({"feature": {"x0": [0.0, 1.0] * 50, "x1": [1.0, 0.0] * 50}}).to_dict()
    del data["calibration"]
    data["version"] = 2
    data["hash"] = content_hash(data)
    ref = tmp_path / "v2.json"
    ref.write_text(json.dumps(data))
    sidecar = sidecar_factory(upstream.url, **{"reference.path": str(ref), "labels.enabled": True,
                                               "performance.score_output": "probability",
                                               "performance.interval_seconds": 0.2, "proxy.enabled": False})
    push_window(sidecar, seed=12, n=5000, mean=0.5)
    got = settled_estimates(sidecar)
    _, score, _ = simulate(12, 5000, 0.5)
    trusted = np.mean(np.where(score >= 0.5, score, 1 - score))  # the scores taken as probabilities
    assert got["accuracy"] == pytest.approx(trusted, abs=1e-9)
    status = requests.get(admin_url(sidecar, "/v1/status"), timeout=5).json()["performance"]
    assert status["estimate_calibration"].startswith("uncalibrated: the reference profile (format version 2) has "
                                                     "no calibration section")
