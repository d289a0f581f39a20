"""Summary statistics and correlation drift."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inferwatch.stats import correlation_drift, correlation_matrix, summary_statistics

KEYS = ["mean", "std", "min", "max", "p05", "p25", "p50", "p75", "p95", "missing_ratio"]


@given(hnp.arrays(np.float64, st.integers(1, 200),
                  elements=st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(np.nan))))
def test_summary_matches_numpy(values):
    out = summary_statistics(values)
    assert list(out) == KEYS
    assert all(type(v) is float for v in out.values())
    valid = values[~np.isnan(values)]
    assert out["missing_ratio"] == pytest.approx(1 - valid.size / values.size)
    if valid.size == 0:
        assert all(math.isnan(out[k]) for k in KEYS if k != "missing_ratio")
        return
    scale = max(1.0, float(np.abs(valid).max()))
    expected = {"mean": valid.mean(), "std": valid.std(), "min": valid.min(), "max": valid.max()}
    expected.update(zip(["p05", "p25", "p50", "p75", "p95"], np.percentile(valid, [5, 25, 50, 75, 95])))
    for k, v in expected.items():
        assert out[k] == pytest.approx(v, rel=1e-9, abs=1e-9 * scale), k


def test_summary_edge_cases():
    empty = summary_statistics(np.array([]))
    assert all(math.isnan(v) for v in empty.values())
    one = summary_statistics([3.0, np.nan, np.nan, np.nan])
    assert one["missing_ratio"] == 0.75
    assert one["p05"] == one["p95"] == one["mean"] == 3.0 and one["std"] == 0.0
    inf = summary_statistics([1.0, np.inf])
    assert inf["max"] == math.inf and inf["missing_ratio"] == 0.0


def _pairwise_reference(x: np.ndarray) -> np.ndarray:
    d = x.shape[1]
    out = np.full((d, d), np.nan)
    for i in range(d):
        for j in range(d):
            rows = ~np.isnan(x[:, i]) & ~np.isnan(x[:, j])
            a, b = x[rows, i], x[rows, j]
            if rows.sum() >= 2 and a.std() > 0 and b.std() > 0:
                out[i, j] = np.corrcoef(a, b)[0, 1]
    return out


def test_correlation_matrix_without_missing_matches_corrcoef():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 1e6  # large offset
    np.testing.assert_allclose(correlation_matrix(x), np.corrcoef(x, rowvar=False), rtol=1e-9, atol=1e-9)


def test_correlation_matrix_pairwise_missing():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:, 4] = np.where(np.isnan(x[:, 4]), np.nan, 7.0)  # constant where present
    x[3:, 3] = np.nan  # only 3 rows present
    np.testing.assert_allclose(correlation_matrix(x), _pairwise_reference(x), rtol=1e-9, atol=1e-9)


def test_correlation_matrix_constant_and_tiny():
    x = np.column_stack([np.arange(10.0), np.full(10, 0.1), np.arange(10.0) ** 2])
    r = correlation_matrix(x)
    assert np.isnan(r[1]).all() and np.isnan(r[:, 1]).all()
    assert r[0, 0] == pytest.approx(1.0) and r[0, 2] == pytest.approx(np.corrcoef(x[:, 0], x[:, 2])[0, 1])
    assert np.isnan(correlation_matrix(np.ones((1, 3)))).all()
    with pytest.raises(ValueError):
        correlation_matrix(np.ones(3))


def test_correlation_drift():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(5000, 2))
    ref = np.column_stack([z[:, 0], 0.8 * z[:, 0] + 0.6 * z[:, 1], rng.normal(size=5000)])
    ref_corr = correlation_matrix(ref)
    assert correlation_drift(ref_corr, ref) == pytest.approx(0.0, abs=1e-12)
    flipped = ref.copy()
    flipped[:, 1] = -0.8 * z[:, 0] + 0.6 * z[:, 1]
    assert correlation_drift(ref_corr, flipped) == pytest.approx(1.6, abs=0.05)
    # Growing decorrelation gives a growing drift score.
    scores = [correlation_drift(ref_corr, np.column_stack([ref[:, 0], (1 - t) * ref[:, 1] + t * z[:, 1], ref[:, 2]]))
              for t in (0.0, 0.25, 0.5, 1.0)]
    assert np.all(np.diff(scores) > 0)
    # Missing values are dropped pairwise; a constant column is skipped.
    with_nan = ref.copy()
    with_nan[::7, 0] = np.nan
    assert correlation_drift(ref_corr, with_nan) < 0.05
    const = ref.copy()
    const[:, 2] = 1.0
    assert correlation_drift(ref_corr, const) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(correlation_drift(np.ones((1, 1)), ref[:, :1]))
    with pytest.raises(ValueError):
        correlation_drift(ref_corr, ref[:, :2])
