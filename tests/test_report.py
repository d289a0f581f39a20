"""The drift report page (``inferwatch.report``) and ``GET /v1/report`` on a real sidecar's admin port.

The page itself in a real browser: tests/test_report_browser.py.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import requests

from inferwatch.config import load_config, parse_config
from inferwatch.ingest.events import EventBatch
from inferwatch.monitors.drift import Evaluator, PreparedReference
from inferwatch.monitors.performance import PerformanceResult
from inferwatch.pipeline.window import Window
from inferwatch.reference import build_profile
from inferwatch.report import CurrentCounts, count_snapshot, render_report
from inferwatch.sidecar import Sidecar
from inferwatch.stats.quality import widened_range

EVIL = "<script>alert(1)</script>"
EVIL_CITY = '<img src=x onerror="alert(2)">'
CITIES = ["Paris", "Lyon", "Nice", EVIL_CITY]


def columns(n: int, rng: np.random.Generator, shift: float = 0.0) -> dict[str, list]:
    p = [0.4, 0.3, 0.2, 0.1] if not shift else [0.1, 0.2, 0.3, 0.4]
    return {"age": list(rng.normal(40 + 10 * shift, 10, n)), "income": list(rng.lognormal(10 + shift, 0.5, n)),
            "city": list(rng.choice(CITIES, n, p=p)), EVIL: list(rng.random(n))}


def reference(n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    cols = columns(n, rng)
    return build_profile({"feature": {k: (np.asarray(v) if k != "city" else v) for k, v in cols.items()},
                          "output": {"prediction": rng.random(n)}})


def window(n: int, seed: int = 1, shift: float = 1.0) -> Window:
    rng = np.random.default_rng(seed)
    cols = columns(n, rng, shift)
    cols["age"][:25] = [None] * 25
    w = Window("1", capacity=n, max_age_seconds=1e9)
    w.append(EventBatch(n, features=cols, outputs={"prediction": list(rng.beta(2, 5, n))}))
    return w


class Page(HTMLParser):
    """What a browser would build: text nodes, elements with their attributes (entities decoded)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def having(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements if t == tag and all(a.get(k.replace("_", "-")) == v
                                                                for k, v in attrs.items())]


def test_feature_names_and_categories_render_as_text_never_as_markup():
    profile = reference()
    snapshot = window(600).snapshot()
    result = Evaluator(PreparedReference.build(profile), parse_config({}).drift).evaluate(snapshot)
    html = render_report(model="m<i>", version="1", reference=profile, current=snapshot, drift=result)
    assert EVIL not in html and EVIL_CITY not in html and "<i>" not in html
    assert len(re.findall(r"<script\b", html, re.I)) == 1   # the page's own sort script, nothing else
    assert "onerror=" not in html.replace("onerror=&quot;", "")
    page = Page(html)
    assert EVIL in page.text and "m<i>" in "".join(page.text)   # shown, as text
    assert page.having("tr", data_feature=EVIL) and page.having("svg", data_feature=EVIL)
    tips = [t for t in page.text if t.startswith(EVIL_CITY)]   # the category's tooltip in the chart
    assert tips and "reference 10" in tips[0]


def test_the_page_has_the_verdict_a_row_and_a_chart_per_feature_and_performance():
    profile = reference()
    snapshot = window(600).snapshot()
    result = Evaluator(PreparedReference.build(profile), parse_config({}).drift).evaluate(snapshot)
    perf = PerformanceResult(events=300, timestamp=0.0, metrics={"accuracy": 0.875, "f1": 0.5},
                             label_drift={"chi2": 3.2}, label_drift_p={"chi2": 0.2})
    html = render_report(model="m", version="1", reference=profile, current=snapshot, drift=result,
                         performance=perf, generated_at=0)
    page = Page(html)
    assert page.having("section", id="verdict", data_dataset_drift="1")
    assert "Dataset drift detected" in page.text
    for name in profile.features:
        row = page.having("tr", data_feature=name)
        assert len(row) == 1, name
        assert page.having("svg", data_feature=name)
    decided = {c.name: c for c in result.features}
    # the table's cells carry the numbers the evaluator decided with, for sorting
    assert f'data-value="{decided["age"].scores[decided["age"].method]!r}"' in html
    assert page.having("tr", data_metric="accuracy") and "0.875" in page.text
    assert "Generated 1970-01-01 00:00:00 UTC." in "".join(page.text)
    assert page.having("tr", data_feature="prediction")   # the prediction distribution, compared too
    no_labels = Page(render_report(model="m", version="1", reference=profile, current=snapshot, drift=result))
    assert no_labels.having("p", id="no-performance")
    nothing_yet = Page(render_report(model="m", version="1", reference=profile, current=snapshot))
    assert nothing_yet.having("section", id="verdict") and "Not evaluated" in nothing_yet.text


def test_counts_are_the_reference_bins_missing_and_out_of_range_and_add_up_across_chunks():
    profile = reference()
    snapshot = window(900).snapshot()
    counts = count_snapshot(profile, snapshot, range_tolerance=0.1)
    age = profile.features["age"]
    values = np.array([v for v in window(900).snapshot().features["age"].values if not np.isnan(v)])
    expected = [np.count_nonzero(values <= age.edges[0])]
    expected += [np.count_nonzero((values > lo) & (values <= hi)) for lo, hi in zip(age.edges, age.edges[1:])]
    expected += [np.count_nonzero(values > age.edges[-1])]
    assert counts.features["age"].counts.tolist() == expected
    assert counts.features["age"].missing == 25 and counts.features["age"].rows == 900
    lo, hi = widened_range(np.array([age.statistics["min"]]), np.array([age.statistics["max"]]), 0.1)
    assert counts.features["age"].out_of_range == np.count_nonzero((values < lo[0]) | (values > hi[0])) > 0
    city = counts.features["city"]
    assert city.labels == profile.features["city"].bin_labels() and city.present == 900
    # a batch counts chunk by chunk: the halves merged equal the whole
    first, second = (count_snapshot(profile, _rows(snapshot, part), range_tolerance=0.1)
                     for part in (slice(0, 400), slice(400, 900)))
    merged = first.merge(second)
    assert merged.rows == 900
    for group in ("features", "outputs"):
        for name, whole in getattr(counts, group).items():
            got = getattr(merged, group)[name]
            assert (got.counts.tolist(), got.missing, got.out_of_range) == \
                (whole.counts.tolist(), whole.missing, whole.out_of_range), name
    html = render_report(model="m", version="1", reference=profile, current=merged)
    assert Page(html).having("svg", data_feature="income")
    assert isinstance(merged, CurrentCounts)


def _rows(snapshot, rows: slice):
    from inferwatch.monitors.drift.evaluate import subset
    return subset(snapshot, np.arange(snapshot.n)[rows])


# --- GET /v1/report on a real sidecar -----------------------------------------------------------

def _sidecar(tmp_path, **overrides) -> Sidecar:
    values = {"proxy.enabled": False, "admin.port": 0, "admin.listen_address": "127.0.0.1",
              "model.name": "m", "model.version": "1", "drift.interval_seconds": 3600, **overrides}
    return Sidecar(load_config(None, values)).start()


def push(base: str, n: int, seed: int, **headers: str) -> None:
    rng = np.random.default_rng(seed)
    cols = columns(n, rng, shift=1.0)
    events = [{"prediction_id": f"p{seed}-{i}", "features": {k: v[i] for k, v in cols.items()},
               "prediction": float(rng.beta(2, 5))} for i in range(n)]
    answer = requests.post(base + "/v1/events", json={"events": events}, timeout=10, headers=headers)
    assert answer.status_code == 200 and answer.json()["accepted"] == n, answer.text


def test_report_endpoint_says_why_in_json_until_there_is_a_reference_and_a_window(tmp_path):
    off = _sidecar(tmp_path)
    try:
        answer = requests.get(f"http://127.0.0.1:{off.admin_port}/v1/report", timeout=10)
        assert answer.status_code == 503 and answer.json()["error"] == "no_reference"
    finally:
        off.stop()
    path = tmp_path / "reference.json"
    reference().save(path)
    sidecar = _sidecar(tmp_path, **{"reference.path": str(path)})
    try:
        base = f"http://127.0.0.1:{sidecar.admin_port}"
        answer = requests.get(base + "/v1/report", timeout=10)
        assert answer.status_code == 503 and answer.headers["Content-Type"] == "application/json"
        assert answer.json()["error"] == "no_window" and "'1'" in answer.json()["detail"]
        push(base, 300, seed=3)
        sidecar.pipeline.drain()
        answer = requests.get(base + "/v1/report", timeout=10)
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        page = Page(answer.text)
        for name in ("age", "income", "city", EVIL):
            assert page.having("tr", data_feature=name) and page.having("svg", data_feature=name), name
        assert "300 rows from the sidecar's window" in "".join(page.text)
        unknown = requests.get(base + "/v1/report?version=nope", timeout=10)
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_version"
    finally:
        sidecar.stop()


def test_report_endpoint_takes_the_scrape_credentials(tmp_path):
    path = tmp_path / "reference.json"
    reference().save(path)
    sidecar = _sidecar(tmp_path, **{"reference.path": str(path), "admin.metrics_auth": {"bearer_token": "s3"}})
    try:
        base = f"http://127.0.0.1:{sidecar.admin_port}"
        denied = requests.get(base + "/v1/report", timeout=10)
        assert denied.status_code == 401 and denied.json()["error"] == "unauthorized"
        push(base, 200, seed=4)
        sidecar.pipeline.drain()
        allowed = requests.get(base + "/v1/report", headers={"Authorization": "Bearer s3"}, timeout=10)
        assert allowed.status_code == 200 and "<svg" in allowed.text
    finally:
        sidecar.stop()


def test_a_report_that_fails_to_render_is_a_json_500_and_counted(tmp_path, monkeypatch):
    path = tmp_path / "reference.json"
    reference().save(path)
    sidecar = _sidecar(tmp_path, **{"reference.path": str(path)})
    try:
        base = f"http://127.0.0.1:{sidecar.admin_port}"
        push(base, 100, seed=5)
        sidecar.pipeline.drain()
        import inferwatch.report.live as live

        def boom(**kwargs):
            raise RuntimeError("boom")
        monkeypatch.setattr(live, "render_report", boom)
        answer = requests.get(base + "/v1/report", timeout=10)
        assert answer.status_code == 500 and answer.json()["error"] == "report_failed"
        assert sidecar.metrics.monitoring_errors.labels("m", "report")._value.get() == 1
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
    finally:
        sidecar.stop()


def test_columns_the_reference_lacks_are_drawn_alone_and_merge_by_category():
    profile = reference()
    rng = np.random.default_rng(9)
    parts = []
    for n, names in ((300, ["a", "b"]), (200, ["b", "c"])):
        w = Window("1", capacity=n, max_age_seconds=1e9)
        w.append(EventBatch(n, features={**columns(n, rng), "tier": list(rng.choice(names, n)),
                                         "latency": list(rng.exponential(1.0, n))}))
        parts.append(w.snapshot())
    first, second = (count_snapshot(profile, s) for s in parts)
    assert not first.features["tier"].referenced and first.features["latency"].labels[0].startswith("≤ ")
    merged = first.merge(second)
    tier = merged.features["tier"]
    assert dict(zip(tier.labels, tier.counts.tolist())) == {
        k: sum(1 for s in parts for v in s.features["tier"].category_values() if v == k) for k in "abc"}
    # bins of their own differ per chunk: the rows add up, the first histogram is kept
    assert merged.features["latency"].rows == 500 and merged.features["latency"].present == 300
    page = Page(render_report(model="m", version="1", reference=profile, current=merged))
    for name in ("tier", "latency"):
        assert page.having("svg", data_feature=name) and page.having("tr", data_feature=name)
    assert "not in the reference" in page.text
