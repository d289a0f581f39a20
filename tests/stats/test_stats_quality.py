"""The input guard's statistics: the chi-squared threshold against scipy, the calibrated or
chi-squared outlier threshold, widened ranges, Prometheus-style buckets and the largest |z|."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from inferwatch.stats.outlier import MahalanobisModel
from inferwatch.stats.quality import (
    THRESHOLD_FLOOR, bucket_counts, chi_squared_threshold, largest_magnitudes, outlier_threshold, widened_range,
)


@pytest.mark.parametrize("dof", [1, 2, 5, 18, 100])
@pytest.mark.parametrize("fpr", [1e-6, 0.001, 0.01, 0.05, 0.5])
def test_chi_squared_threshold_agrees_with_scipy(dof, fpr):
    t = chi_squared_threshold(fpr, dof)
    assert t == pytest.approx(sps.chi2.isf(fpr, dof), rel=1e-12)
    assert sps.chi2.sf(t, dof) == pytest.approx(fpr, rel=1e-9)


def test_chi_squared_threshold_is_the_gaussian_squared_distance_tail():
    rng = np.random.default_rng(0)
    squared = (rng.normal(size=(200_000, 4)) ** 2).sum(axis=1)
    assert np.mean(squared > chi_squared_threshold(0.01, 4)) == pytest.approx(0.01, abs=0.001)


@pytest.mark.parametrize("fpr, dof", [(0.0, 3), (1.0, 3), (0.01, 0)])
def test_chi_squared_threshold_rejects_impossible_arguments(fpr, dof):
    with pytest.raises(ValueError):
        chi_squared_threshold(fpr, dof)


def test_outlier_threshold_is_calibrated_when_the_model_has_reference_scores():
    rng = np.random.default_rng(1)
    model = MahalanobisModel.fit(rng.normal(size=(10_000, 3)))
    assert outlier_threshold(model, 0.001) == (model.threshold(0.001), True)
    assert outlier_threshold(model, 1e-5) == (model.threshold(1e-5), False)   # below 1/n: not resolvable


def test_outlier_threshold_falls_back_to_chi_squared_and_is_never_zero():
    model = MahalanobisModel.from_correlation(np.zeros(3), np.ones(3), np.eye(3))
    assert outlier_threshold(model, 0.001) == (pytest.approx(sps.chi2.isf(0.001, 3)), False)
    empty = MahalanobisModel(np.zeros(2), np.ones(2), np.eye(2), 10, np.empty(0))   # no stored tail: NaN
    assert outlier_threshold(empty, 0.01) == (THRESHOLD_FLOOR, False)


def test_widened_range():
    lo, hi = widened_range(np.array([0.0, 5.0, -2.0, math.nan, 0.0]), np.array([10.0, 5.0, -2.0, 1.0, math.inf]), 0.1)
    assert lo.tolist() == [-1.0, 4.5, -2.2, -math.inf, -math.inf]
    assert hi.tolist() == [11.0, 5.5, -1.8, math.inf, math.inf]
    lo, hi = widened_range(np.array([0.0]), np.array([10.0]), 0.0)
    assert (lo.tolist(), hi.tolist()) == ([0.0], [10.0])


def test_bucket_counts_are_prometheus_le_buckets():
    bounds = (0.5, 1.0, 2.0)
    counts, total = bucket_counts(np.array([0.1, 0.5, 0.7, 1.0, 3.0, math.nan, math.inf]), bounds)
    assert counts.tolist() == [2, 2, 0, 1]   # a value equal to a bound is in that bound's bucket
    assert total == pytest.approx(5.3)
    cumulative = np.cumsum(counts)
    values = np.array([0.1, 0.5, 0.7, 1.0, 3.0])
    assert cumulative[:-1].tolist() == [int(np.sum(values <= b)) for b in bounds]
    counts, total = bucket_counts(np.empty(0), bounds)
    assert counts.tolist() == [0, 0, 0, 0] and total == 0.0


def test_largest_magnitudes_per_column():
    z = np.array([[1.0, -5.0, math.nan],
                  [-3.0, 2.0, math.nan],
                  [3.0, math.inf, 0.5]])
    top = largest_magnitudes(z, 2)
    assert top[:, 0].tolist() == [1, 2]    # |-3| and |3| tie: the first feature first
    assert top[:, 1].tolist() == [0, 1]    # infinities are not finite magnitudes
    assert top[:, 2].tolist() == [2, -1]   # only one finite value
    assert largest_magnitudes(z, 10).shape == (3, 3)
