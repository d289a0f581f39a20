"""Label drift statistics against scipy and the per-pair functions they are made of."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from inferwatch.stats import js_distance, linf_distance, psi, quantile_edges
from inferwatch.stats.labels import class_label_drift, value_label_drift


def test_class_label_drift_is_chi_squared_goodness_of_fit_and_the_category_distances():
    reference, current = np.array([900, 80, 20]), np.array([30, 60, 10])
    scores, p_values = class_label_drift(reference, current)
    expected = stats.chisquare(current, f_exp=reference / reference.sum() * current.sum())
    assert scores["chi2"] == pytest.approx(expected.statistic) and p_values == {"chi2": pytest.approx(expected.pvalue)}
    assert scores["linf"] == pytest.approx(np.max(np.abs(reference / 1000 - current / 100)))
    assert scores["js"] == pytest.approx(jensenshannon(reference / 1000, current / 100, base=2))
    assert scores["psi"] == psi(reference, current) and scores["linf"] == linf_distance(reference, current)
    assert list(scores) == ["chi2", "linf", "js", "psi"]


def test_class_label_drift_of_the_same_proportions_is_none():
    scores, p_values = class_label_drift(np.array([500, 300, 200]), np.array([50, 30, 20]))
    assert scores["chi2"] == pytest.approx(0.0, abs=1e-12) and p_values["chi2"] == pytest.approx(1.0)
    assert scores["linf"] == pytest.approx(0.0, abs=1e-12) and scores["psi"] == pytest.approx(0.0, abs=1e-12)


def test_value_label_drift_is_the_ks_test_and_the_binned_distances():
    rng = np.random.default_rng(4)
    reference = np.sort(rng.normal(5, 1, 2000))
    edges = quantile_edges(reference, 10)
    reference_counts = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=edges.size + 1)
    current = rng.normal(5.5, 1.3, 300)
    scores, p_values = value_label_drift(reference, edges, reference_counts, current)
    expected = stats.ks_2samp(reference, current)
    assert scores["ks"] == pytest.approx(expected.statistic) and p_values["ks"] == pytest.approx(expected.pvalue)
    # bins are right-closed, (-inf, e1], (e1, e2], ...: searchsorted(side="left") counts the same
    current_counts = np.bincount(np.searchsorted(edges, current, side="left"), minlength=edges.size + 1)
    assert scores["psi"] == pytest.approx(psi(reference_counts, current_counts))
    assert scores["js"] == pytest.approx(js_distance(reference_counts, current_counts))
    assert scores["js"] == pytest.approx(jensenshannon(reference_counts / reference_counts.sum(),
                                                       current_counts / current_counts.sum(), base=2))
    assert list(scores) == ["ks", "psi", "js"] and p_values["ks"] < 1e-6


def test_value_label_drift_of_nothing_is_nan():
    scores, p_values = value_label_drift(np.arange(10.0), np.array([4.5]), np.array([5, 5]), np.empty(0))
    assert np.isnan(scores["ks"]) and np.isnan(p_values["ks"])
