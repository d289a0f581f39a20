"""Categorical drift statistics against scipy and direct formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from inferwatch.stats import categorical, numeric
from inferwatch.stats.categorical import (
    chi_squared, chi_squared_homogeneity, entropy, js_distance, linf_distance, psi, unseen_ratio,
)

RTOL = 1e-9
positive_counts = hnp.arrays(np.int64, st.integers(2, 12), elements=st.integers(1, 5000))


@given(ref=positive_counts, data=st.data())
def test_chi_squared_matches_scipy(ref, data):
    cur = data.draw(hnp.arrays(np.int64, ref.size, elements=st.integers(0, 5000)))
    if cur.sum() == 0:
        return
    expected = stats.chisquare(cur, f_exp=ref / ref.sum() * cur.sum())
    stat, p = chi_squared(ref, cur)
    assert stat == pytest.approx(expected.statistic, rel=RTOL, abs=1e-12)
    np.testing.assert_allclose(p, expected.pvalue, rtol=RTOL, atol=1e-15)


def test_chi_squared_zero_expected_handling():
    # Empty in both: dropped, so the test equals scipy on the remaining categories.
    ref, cur = np.array([50, 0, 30, 20]), np.array([10, 0, 5, 9])
    kept = [0, 2, 3]
    expected = stats.chisquare(cur[kept], f_exp=ref[kept] / ref.sum() * cur.sum())
    np.testing.assert_allclose(chi_squared(ref, cur), tuple(expected), rtol=RTOL, atol=1e-12)
    # Empty in the reference only: smoothed, large but finite.
    stat, p = chi_squared(np.array([50, 0, 50]), np.array([40, 20, 40]))
    assert math.isfinite(stat) and stat > 1000 and p < 1e-12
    # One category left or nothing to compare.
    assert chi_squared([10, 0], [5, 0]) == (0.0, 1.0)
    assert all(math.isnan(x) for x in chi_squared([10, 5], [0, 0]))
    assert all(math.isnan(x) for x in chi_squared([0, 0], [1, 2]))
    with pytest.raises(ValueError):
        chi_squared([1, 2], [1, 2, 3])


def test_chi_squared_identical_proportions():
    ref = np.array([300, 150, 60, 90])
    stat, p = chi_squared(ref, ref // 3)
    assert stat == pytest.approx(0.0, abs=1e-9) and p == pytest.approx(1.0)


def test_chi_squared_grows_with_shift():
    ref = np.array([400, 300, 200, 100])
    base = ref / ref.sum()
    target = np.array([0.1, 0.2, 0.3, 0.4])
    stats_ = [chi_squared(ref, np.round(1000 * ((1 - t) * base + t * target)))[0] for t in (0, 0.25, 0.5, 1.0)]
    assert np.all(np.diff(stats_) > 0)


def test_binned_helpers_are_numerics():
    assert categorical.psi is numeric.psi and psi is numeric.psi
    assert categorical.js_distance is numeric.js_distance and js_distance is numeric.js_distance


@given(p=hnp.arrays(np.int64, 6, elements=st.integers(0, 100)),
       q=hnp.arrays(np.int64, 6, elements=st.integers(0, 100)))
def test_linf_distance(p, q):
    if p.sum() == 0 or q.sum() == 0:
        return
    direct = max(abs(a / p.sum() - b / q.sum()) for a, b in zip(p, q))
    assert linf_distance(p, q) == pytest.approx(direct, rel=RTOL, abs=1e-15)
    assert linf_distance(p, q) == linf_distance(q, p)
    assert linf_distance(p, 2 * p) == pytest.approx(0.0, abs=1e-15)


def test_linf_distance_edge_cases():
    assert linf_distance([1, 0], [0, 1]) == 1.0
    assert math.isnan(linf_distance([1, 2], [0, 0]))
    assert math.isnan(linf_distance([], []))
    with pytest.raises(ValueError):
        linf_distance([1], [1, 2])


def test_unseen_ratio():
    assert unseen_ratio(5, 20) == 0.25
    assert unseen_ratio(np.array([1, 2, 3]), 12) == 0.5
    assert unseen_ratio(0, 10) == 0.0
    assert math.isnan(unseen_ratio(0, 0))


@given(c=hnp.arrays(np.int64, st.integers(1, 20), elements=st.integers(0, 10_000)))
def test_entropy_matches_scipy(c):
    if c.sum() == 0:
        assert math.isnan(entropy(c))
        return
    assert entropy(c) == pytest.approx(stats.entropy(c), rel=RTOL, abs=1e-12)


def test_entropy_values():
    assert entropy([5, 5]) == pytest.approx(math.log(2))
    assert entropy([7]) == 0.0
    assert math.isnan(entropy([]))


@given(ref=st.lists(st.integers(1, 500), min_size=3, max_size=12), data=st.data())
def test_chi_squared_homogeneity_matches_scipy(ref, data):
    ref = np.array(ref, dtype=float)
    cur = np.array(data.draw(st.lists(st.integers(1, 500), min_size=ref.size, max_size=ref.size)), dtype=float)
    expected = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    # identical proportions: scipy gives exactly 0, the closed form ~1e-30
    np.testing.assert_allclose(chi_squared_homogeneity(ref, cur), (expected.statistic, expected.pvalue), rtol=RTOL,
                               atol=1e-12)


def test_chi_squared_homogeneity_edges_and_properties():
    ref = np.array([500.0, 300.0, 200.0])
    assert chi_squared_homogeneity(ref, ref / 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert chi_squared_homogeneity([10, 0, 0], [5, 0, 0]) == (0.0, 1.0)
    assert all(math.isnan(x) for x in chi_squared_homogeneity([10, 5], [0, 0]))
    # categories empty in both are dropped, as chi2_contingency needs
    stat, p = chi_squared_homogeneity([50, 0, 50], [40, 0, 60])
    expected = stats.chi2_contingency([[50, 50], [40, 60]], correction=False)
    assert (stat, p) == pytest.approx((expected.statistic, expected.pvalue), rel=RTOL)
    # a growing shift gives a growing statistic; a small window is less significant than the same shift
    # in a larger one; and a reference sample is less certain than exact proportions
    shifted = [chi_squared_homogeneity(ref, np.array([500 - d, 300, 200 + d]) / 5)[0] for d in (0, 50, 100, 200)]
    assert shifted == sorted(shifted) and shifted[-1] > shifted[1] > 0
    cur = np.array([80.0, 60.0, 60.0])
    assert chi_squared_homogeneity(ref, cur)[1] > chi_squared(ref, cur)[1]


@settings(max_examples=60, deadline=None)
@given(ref=hnp.arrays(np.int64, st.integers(2, 10), elements=st.integers(1, 5000)), data=st.data())
def test_every_categorical_score_grows_along_a_mixture_path(ref, data):
    """Property: moving the current proportions from the reference's towards any other
    distribution (a mixture with weight t) never lowers a score, and identical proportions
    score ~0. Proportions are used directly (no sampling noise), scaled to counts."""
    target = data.draw(hnp.arrays(np.float64, ref.size, elements=st.floats(0.0, 1.0)))
    if target.sum() <= 0:
        return
    base, target = ref / ref.sum(), target / target.sum()
    if np.abs(base - target).max() < 1e-6:
        return
    rows = []
    for t in (0.0, 0.1, 0.3, 0.6, 1.0):
        cur = ((1 - t) * base + t * target) * 1e6
        rows.append([linf_distance(ref, cur), js_distance(ref, cur), psi(ref, cur),
                     chi_squared_homogeneity(ref, cur)[0] / cur.sum()])
    scores = np.array(rows)
    assert np.all(scores[0] < 1e-6), scores[0]   # JS is a square root: 1e-17 rounding reads 3e-9
    assert np.all(np.diff(scores, axis=0) >= -1e-9), scores
    assert np.all(scores[-1] > scores[0]), scores
