"""Outlier statistics: Mahalanobis against scipy, calibration, robust scale, and why not PCA error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import mahalanobis

from inferwatch.stats import PCAModel
from inferwatch.stats.outlier import (
    MahalanobisModel, calibrate_threshold, median_abs_deviation, robust_scale, robust_z,
)


def correlated(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ a * np.arange(1, d + 1) + np.arange(d) * 10.0


def test_mahalanobis_agrees_with_scipy():
    x = correlated(2000, 5)
    model = MahalanobisModel.fit(x, eigen_floor=1e-12)
    mean, std = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / std
    vi = np.linalg.inv(np.cov(z, rowvar=False, bias=True))
    rows = x[:50]
    expected = [mahalanobis((r - mean) / std, np.zeros(5), vi) ** 2 for r in rows]
    np.testing.assert_allclose(model.score(rows), expected, rtol=1e-8)
    np.testing.assert_allclose(model.precision(), vi, rtol=1e-7, atol=1e-9)


def test_contributions_sum_to_the_score():
    x = correlated(500, 4, seed=1)
    model = MahalanobisModel.fit(x)
    z = model.standardize(x[:20])
    np.testing.assert_allclose(model.contributions(z).sum(axis=1), model.score_standardized(z), rtol=1e-9)


def test_collinear_and_constant_features_stay_finite():
    rng = np.random.default_rng(2)
    a = rng.normal(size=1000)
    x = np.column_stack([a, 2 * a, np.full(1000, 3.0), rng.normal(size=1000)])
    model = MahalanobisModel.fit(x)
    scores = model.score(np.array([[1.0, 2.0, 3.0, 0.0], [1.0, -2.0, 3.0, 0.0]]))
    assert np.all(np.isfinite(scores))
    assert scores[1] > 100 * scores[0]   # breaking the collinearity is what is odd


def test_missing_and_infinite_values_count_as_the_mean():
    model = MahalanobisModel.fit(correlated(300, 3))
    assert model.score(np.array([[np.nan, np.inf, -np.inf]]))[0] == pytest.approx(0.0)


def test_calibrate_threshold_is_the_smallest_with_the_rate():
    rng = np.random.default_rng(3)
    scores = rng.chisquare(4, size=10_000)
    for fpr in (0.001, 0.01, 0.05):
        t = calibrate_threshold(scores, fpr)
        assert np.mean(scores > t) <= fpr
        assert np.mean(scores >= t) > fpr   # one step lower would exceed it
    assert calibrate_threshold(np.arange(10.0), 0.001) == 9.0   # below 1/n: the largest score
    assert math.isnan(calibrate_threshold(np.array([np.nan]), 0.01))


def test_stored_tail_reproduces_the_calibration():
    x = correlated(4000, 6, seed=4)
    model = MahalanobisModel.fit(x)
    scores = model.score(x)
    for fpr in (0.001, 0.004, 0.02, 0.049):
        assert model.resolvable(fpr)
        assert model.threshold(fpr) == pytest.approx(calibrate_threshold(scores, fpr))
    again = MahalanobisModel.from_dict(model.to_dict())
    assert again.threshold(0.001) == model.threshold(0.001)
    np.testing.assert_array_equal(again.score(x[:5]), model.score(x[:5]))


def test_gaussian_threshold_is_near_chi_squared():
    rng = np.random.default_rng(5)
    model = MahalanobisModel.fit(rng.normal(size=(50_000, 5)))
    assert model.threshold(0.01) == pytest.approx(sps.chi2.isf(0.01, 5), rel=0.05)


def test_robust_scale_and_mad_agree_with_scipy():
    rng = np.random.default_rng(6)
    v = rng.standard_t(3, size=5001)
    assert median_abs_deviation(v) == pytest.approx(sps.median_abs_deviation(v))
    assert robust_scale(median_abs_deviation(v)) == pytest.approx(sps.median_abs_deviation(v, scale="normal"))
    assert robust_scale(0.0, iqr=1.349) == pytest.approx(1.0, rel=1e-3)
    assert robust_scale(0.0, iqr=0.0, std=2.0) == 2.0
    assert robust_scale(math.nan) == 1.0
    np.testing.assert_allclose(robust_z(np.array([[3.0, 0.0]]), np.array([1.0, 0.0]), np.array([2.0, 1.0])),
                               [[1.0, 0.0]])


def test_mahalanobis_sees_what_pca_reconstruction_error_misses():
    """docs/design.md: an event extreme along the main direction of variation keeps the
    correlations, so PCA reconstruction error (the residual off the kept components) barely
    moves, while the Mahalanobis distance weighs every direction by its reference variance."""
    rng = np.random.default_rng(7)
    n, d = 10_000, 8
    latent = rng.normal(size=(n, 1))
    x = latent @ np.ones((1, d)) + 0.3 * rng.normal(size=(n, d))
    pca = PCAModel.fit(x)
    maha = MahalanobisModel.fit(x)
    extreme = np.full((1, d), 6.0)   # six standard deviations along the shared factor
    pca_t = calibrate_threshold(pca.reconstruction_error(x), 0.001)
    assert pca.reconstruction_error(extreme)[0] < pca_t
    assert maha.score(extreme)[0] > maha.threshold(0.001)
