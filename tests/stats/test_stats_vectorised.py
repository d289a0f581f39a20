"""Window-at-once statistics equal the library's per-feature ones and scipy on the same inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats as sps

from inferwatch.stats import PCAModel, compare_samples, compare_samples_rows, correlation_drift, correlation_matrix
from inferwatch.stats import summary_statistics
from inferwatch.stats.vectorised import (
    correlation_drift_fast, pca_complement, pca_drift_score_standardised, summary_statistics_rows,
)

# scipy's exact KS p-value falls back to the asymptotic one (with a warning) on some examples.
pytestmark = pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful:RuntimeWarning")

ROW_STATISTICS = ["mean", "std", "min", "max", "p05", "p25", "p50", "p75", "p95"]


# --- KS and Wasserstein over rows (stats.numeric.compare_samples_rows) ------------------------------


def test_compare_samples_rows_equals_compare_samples_and_scipy():
    rng = np.random.default_rng(3)
    ref = np.sort(rng.normal(size=(6, 700)).round(1), axis=1)  # ties on purpose
    cur = np.sort(rng.normal(0.2, 1.3, size=(6, 450)).round(1), axis=1)
    ks, p, w, wn = compare_samples_rows(ref, cur)
    for i in range(6):
        one = compare_samples(ref[i], cur[i], method="fast", current_sorted=True)
        assert ks[i] == one.ks_statistic
        assert p[i] == pytest.approx(one.ks_pvalue, abs=1e-12)
        assert w[i] == pytest.approx(one.wasserstein, rel=1e-12)
        assert wn[i] == pytest.approx(one.wasserstein_normalized, rel=1e-12)
        assert ks[i] == pytest.approx(sps.ks_2samp(ref[i], cur[i]).statistic, abs=1e-12)
        assert w[i] == pytest.approx(sps.wasserstein_distance(ref[i], cur[i]), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40), st.lists(st.floats(-1e6, 1e6), min_size=1,
                                                                         max_size=40))
def test_compare_samples_rows_property(a, b):
    ref, cur = np.sort(np.array(a))[None, :], np.sort(np.array(b))[None, :]
    ks, _, w, _ = compare_samples_rows(ref, cur)
    assert ks[0] == pytest.approx(sps.ks_2samp(a, b).statistic, abs=1e-12)
    assert w[0] == pytest.approx(sps.wasserstein_distance(a, b), rel=1e-9, abs=1e-9)


# --- summary statistics over rows -----------------------------------------------------------------


def test_summary_rows_equal_summary_statistics():
    rng = np.random.default_rng(5)
    rows = np.sort(np.vstack([rng.normal(size=301), rng.exponential(size=301).round(1), np.full(301, 2.5)]), axis=1)
    got = summary_statistics_rows(rows)
    assert list(got) == ROW_STATISTICS
    for i in range(rows.shape[0]):
        expected = summary_statistics(rows[i])
        for name in ROW_STATISTICS:
            assert got[name][i] == pytest.approx(expected[name], rel=1e-12, abs=1e-15), name


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3).flatmap(lambda d: hnp.arrays(np.float64, st.tuples(st.just(d), st.integers(1, 50)),
                                                      elements=st.floats(-1e6, 1e6))))
def test_summary_rows_match_numpy(matrix):
    rows = np.sort(matrix, axis=1)
    got = summary_statistics_rows(rows)
    for i, row in enumerate(rows):
        scale = max(1.0, float(np.abs(row).max()))
        expected = {"mean": row.mean(), "std": row.std(), "min": row.min(), "max": row.max()}
        expected.update(zip(["p05", "p25", "p50", "p75", "p95"], np.percentile(row, [5, 25, 50, 75, 95])))
        for name, value in expected.items():
            assert got[name][i] == pytest.approx(value, rel=1e-9, abs=1e-9 * scale), name


# --- correlation drift ------------------------------------------------------------------------------


def _correlated(n: int, rng: np.random.Generator, rho: float) -> np.ndarray:
    x = rng.normal(size=(n, 4))
    x[:, 1] = rho * x[:, 0] + math.sqrt(1 - rho * rho) * x[:, 1]
    return x


def test_correlation_drift_fast_equals_the_library():
    rng = np.random.default_rng(6)
    ref_corr = correlation_matrix(_correlated(2000, rng, 0.8))
    cur = _correlated(500, rng, 0.2)
    assert correlation_drift_fast(ref_corr, cur, has_nan=False) == pytest.approx(correlation_drift(ref_corr, cur),
                                                                                  rel=1e-9)
    cur[:, 3] = 1.5  # a constant column: its pairs are skipped by both
    assert correlation_drift_fast(ref_corr, cur, has_nan=False) == pytest.approx(correlation_drift(ref_corr, cur),
                                                                                  rel=1e-9)
    cur[::7, 2] = np.nan  # missing values: the library's pairwise computation
    assert correlation_drift_fast(ref_corr, cur, has_nan=True) == correlation_drift(ref_corr, cur)


def test_correlation_drift_fast_of_one_row_is_the_library():
    ref_corr = np.eye(3)
    one = np.array([[1.0, 2.0, 3.0]])
    got, expected = correlation_drift_fast(ref_corr, one, has_nan=False), correlation_drift(ref_corr, one)
    assert math.isnan(got) and math.isnan(expected)


# --- PCA reconstruction error -------------------------------------------------------------------------


@pytest.mark.parametrize("d, correlated", [(6, False), (6, True), (3, False)])
def test_pca_score_of_standardised_rows_equals_the_model(d, correlated):
    rng = np.random.default_rng(7)
    ref = rng.normal(size=(3000, d))
    if correlated:  # few components explain it: the kept subspace is the smaller one
        ref[:, 1:] = ref[:, [0]] + 0.05 * ref[:, 1:]
    pca = PCAModel.fit(ref)
    x = rng.normal(size=(500, d)) * np.linspace(1.0, 1.5, d)
    x[3, 0] = np.nan
    z = (x - pca.mean) / pca.scale
    z[np.isnan(z)] = 0.0
    complement = pca_complement(pca)
    assert (complement is None) == (pca.n_components <= d // 2)
    assert pca_drift_score_standardised(pca, z, complement) == pytest.approx(pca.drift_score(x), rel=1e-9)
    assert pca_drift_score_standardised(pca, z) == pytest.approx(pca.drift_score(x), rel=1e-9)


def test_pca_complement_is_an_orthonormal_basis_of_the_residual():
    rng = np.random.default_rng(8)
    pca = PCAModel.fit(rng.normal(size=(2000, 5)))
    complement = pca_complement(pca)
    assert complement is not None and complement.shape == (5 - pca.n_components, 5)
    assert np.allclose(complement @ complement.T, np.eye(complement.shape[0]), atol=1e-12)
    assert np.allclose(complement @ pca.components.T, 0.0, atol=1e-12)


def test_pca_score_of_no_rows_is_nan():
    pca = PCAModel.fit(np.random.default_rng(9).normal(size=(100, 3)))
    assert math.isnan(pca_drift_score_standardised(pca, np.empty((0, 3))))
