"""Performance statistics against scikit-learn on the same data; CBPE against realised metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn import metrics as skm

from inferwatch.stats.performance import (
    adjusted_r2, classification_metrics, confident_error_rate, confusion_matrix, estimate_binary_performance, log_loss,
    regression_metrics, roc_auc,
)

RTOL = 1e-9


@settings(max_examples=200, deadline=None)
@given(data=st.data(), k=st.integers(2, 6), n=st.integers(1, 300))
def test_multiclass_metrics_match_sklearn(data, k, n):
    t = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    p = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    np.testing.assert_array_equal(confusion_matrix(t, p, k), skm.confusion_matrix(t, p, labels=list(range(k))))
    got = classification_metrics(t, p, k)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(t, p), rel=RTOL)
    for name, fn in (("precision_macro", skm.precision_score), ("recall_macro", skm.recall_score),
                     ("f1_macro", skm.f1_score)):
        assert got[name] == pytest.approx(fn(t, p, average="macro", zero_division=0), rel=RTOL, abs=1e-12), name
    assert "precision" not in got or len(set(t) | set(p)) <= 2


def test_many_classes_cost_the_classes_present_not_their_square():
    """Classes are coded densely over those present (thousands when the window holds thousands
    of distinct classes): the metrics read the confusion matrix's diagonal and margins only."""
    rng = np.random.default_rng(16)
    k, n = 5000, 20_000
    t = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.5, t, rng.integers(0, k, n))
    got = classification_metrics(t, p, k)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(t, p), rel=RTOL)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(t, p, average="macro", zero_division=0), rel=RTOL)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(1, 200), k=st.integers(3, 5))
def test_positive_class_figures_only_when_every_class_present_is_negative_or_positive(data, n, k):
    t = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    p = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    got = classification_metrics(t, p, k, positive=1, negative=0)
    assert ("precision" in got) == (set(np.concatenate([t, p]).tolist()) <= {0, 1})
    if "precision" in got:
        assert got["f1"] == pytest.approx(skm.f1_score(t, p, pos_label=1, zero_division=0, labels=[0, 1]))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(1, 300))
def test_binary_metrics_match_sklearn(data, n):
    t = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, 1)))
    p = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, 1)))
    got = classification_metrics(t, p, 2, positive=1)
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        want = fn(t, p, pos_label=1, zero_division=0, labels=[0, 1])
        assert got[name] == pytest.approx(want, rel=RTOL, abs=1e-12), name


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(2, 400))
def test_roc_auc_and_log_loss_match_sklearn(data, n):
    t = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, 1)))
    # Rounded scores make ties common (the half-credit rule must agree too); 0 and 1 test the clipping.
    s = np.round(data.draw(hnp.arrays(np.float64, n, elements=st.floats(0, 1))), 2)
    if 0 < t.sum() < n:
        assert roc_auc(t, s) == pytest.approx(skm.roc_auc_score(t, s), rel=RTOL)
    else:
        assert math.isnan(roc_auc(t, s))
    assert log_loss(t, s) == pytest.approx(skm.log_loss(t, s, labels=[0, 1]), rel=1e-7)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scikit-learn's own R² of a constant target
@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(2, 300))
def test_regression_metrics_match_sklearn(data, n):
    values = st.floats(-1e4, 1e4, allow_nan=False)
    t = data.draw(hnp.arrays(np.float64, n, elements=values))
    # below machine epsilon scikit-learn's MAPE divides by epsilon, not by |y|: such truths are 0 here
    t[np.abs(t) < 1e-9] = 0.0
    p = data.draw(hnp.arrays(np.float64, n, elements=values))
    got = regression_metrics(t, p, n_features=3)
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(t, p)), rel=RTOL, abs=1e-9)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(t, p), rel=RTOL, abs=1e-9)
    kept = t != 0   # MAPE leaves out true zeros; on the rest it is scikit-learn's
    if kept.any():
        assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(t[kept], p[kept]), rel=1e-7)
    else:
        assert math.isnan(got["mape"])
    r2 = skm.r2_score(t, p, force_finite=False)
    if np.ptp(t) > 0 and math.isfinite(r2):
        assert got["r2"] == pytest.approx(r2, rel=1e-7, abs=1e-9)
        if n > 4:
            assert got["adjusted_r2"] == pytest.approx(1 - (1 - r2) * (n - 1) / (n - 4), rel=1e-7, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(1, 200), confident=st.sampled_from([0.8, 0.9, 0.99]))
def test_confident_error_rate_counts_confident_wrong_answers_one_by_one(data, n, confident):
    t = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, 1)))
    s = np.round(data.draw(hnp.arrays(np.float64, n, elements=st.floats(0, 1))), 2)
    decided = data.draw(hnp.arrays(np.bool_, n))   # the model's own decisions, not always score >= 0.5
    wrong_and_sure = sum(1 for y, p, d in zip(t, s, decided) if (p if d else 1 - p) >= confident and bool(y) != d)
    assert confident_error_rate(t, s, decided, confident) == pytest.approx(wrong_and_sure / n)


def test_undefined_values_are_nan_or_absent_not_errors():
    assert classification_metrics(np.array([]), np.array([]), 3) == {}
    assert regression_metrics(np.array([]), np.array([])) == {}
    assert math.isnan(roc_auc(np.ones(5), np.linspace(0, 1, 5)))
    assert math.isnan(regression_metrics(np.ones(4), np.arange(4.0))["r2"])  # constant target
    assert math.isnan(adjusted_r2(0.5, 5, 4))  # n - p - 1 = 0
    # MAPE is safe near zero: a true 0 is left out (scikit-learn reads it as an error of ~1e15)
    assert regression_metrics(np.array([0.0, 1.0]), np.array([0.5, 1.5]))["mape"] == pytest.approx(0.5)
    assert skm.mean_absolute_percentage_error([0.0, 1.0], [0.5, 1.5]) > 1e14
    assert math.isnan(regression_metrics(np.zeros(3), np.ones(3))["mape"])
    # ... and so is a truth near zero, with a floor
    near = regression_metrics(np.array([1e-12, 2.0]), np.array([0.1, 3.0]), mape_min_abs_target=1e-6)
    assert near["mape"] == pytest.approx(0.5) and near["mae"] == pytest.approx((0.1 - 1e-12 + 1.0) / 2)
    assert estimate_binary_performance(np.array([np.nan])) == {}
    assert math.isnan(confident_error_rate(np.array([]), np.array([]), np.array([]), 0.9))


def _simulate(rng, n, shift):
    """A calibrated binary model: x ~ N(shift, 1), P(y=1 | x) = sigmoid(2x - 1) = the score."""
    x = rng.normal(shift, 1.0, n)
    score = 1.0 / (1.0 + np.exp(-(2.0 * x - 1.0)))
    y = rng.random(n) < score
    return score, y


@pytest.mark.parametrize("shift", [-1.5, -0.5, 0.0, 0.5, 1.0, 2.0])
def test_cbpe_tracks_realised_metrics_under_covariate_shift(shift):
    rng = np.random.default_rng(7)
    score, y = _simulate(rng, 20_000, shift)
    estimated = estimate_binary_performance(score, threshold=0.5)
    predicted = (score >= 0.5).astype(np.int64)
    realised = classification_metrics(y.astype(np.int64), predicted, 2, positive=1)
    for metric in ("accuracy", "precision", "recall", "f1"):
        assert estimated[metric] == pytest.approx(realised[metric], abs=0.02), (shift, metric)


def test_cbpe_follows_the_shift_that_changes_performance():
    """Covariate shift moves accuracy by far more than the estimate's error: the estimate moves with it."""
    rng = np.random.default_rng(11)
    accuracy = {}
    for shift in (0.5, 2.5):
        score, y = _simulate(rng, 20_000, shift)
        est = estimate_binary_performance(score)["accuracy"]
        real = float(np.mean((score >= 0.5) == y))
        accuracy[shift] = (est, real)
        assert est == pytest.approx(real, abs=0.015)
    assert abs(accuracy[2.5][1] - accuracy[0.5][1]) > 0.1


def test_cbpe_uses_the_models_own_decisions():
    score = np.array([0.9, 0.8, 0.3, 0.2])
    decided = np.array([True, False, False, False])  # a stricter threshold than 0.5
    est = estimate_binary_performance(score, decided)
    # expected TP 0.9, FP 0.1, FN 0.8 + 0.3 + 0.2, TN 0.2 + 0.7 + 0.8
    assert est["precision"] == pytest.approx(0.9)
    assert est["recall"] == pytest.approx(0.9 / 2.2)
    assert est["accuracy"] == pytest.approx((0.9 + 1.7) / 4)
