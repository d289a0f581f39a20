"""Binned scores of many features at once and the pooled chi-squared test: equal to the
registry's per-pair functions and to scipy on the same inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats as sps

from inferwatch.stats import chi_squared_homogeneity, hellinger, js_distance, kl_divergence, linf_distance, psi
from inferwatch.stats.binned import BINNED_METHODS, binned_scores, pooled_chi_squared
from inferwatch.stats.registry import DRIFT_TESTS


def test_binned_scores_equal_the_library():
    rng = np.random.default_rng(4)
    ref = rng.integers(0, 200, size=(5, 8))
    cur = rng.integers(0, 200, size=(5, 8))
    cur[0, 3] = 0
    got = binned_scores(ref, cur, {"psi", "js", "hellinger", "kl", "linf"})
    for i in range(5):
        assert got["psi"][i] == pytest.approx(psi(ref[i], cur[i]), rel=1e-12)
        assert got["js"][i] == pytest.approx(js_distance(ref[i], cur[i]), rel=1e-12)
        assert got["hellinger"][i] == pytest.approx(hellinger(ref[i], cur[i]), rel=1e-12)
        assert got["kl"][i] == pytest.approx(kl_divergence(ref[i], cur[i]), rel=1e-12)
        assert got["linf"][i] == pytest.approx(linf_distance(ref[i], cur[i]), rel=1e-12)


def test_the_binned_methods_are_registry_methods():
    assert BINNED_METHODS <= set(DRIFT_TESTS)
    assert all(not DRIFT_TESTS[m].is_test for m in BINNED_METHODS)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6).flatmap(lambda k: st.tuples(
    hnp.arrays(np.int64, (4, k), elements=st.integers(0, 1000)),
    hnp.arrays(np.int64, (4, k), elements=st.integers(0, 1000)))))
def test_binned_scores_equal_the_registry_functions(counts):
    ref, cur = counts
    got = binned_scores(ref, cur, BINNED_METHODS)
    assert set(got) == BINNED_METHODS
    for name in BINNED_METHODS:
        function = DRIFT_TESTS[name].function
        for i in range(ref.shape[0]):
            expected = function(ref[i], cur[i])
            if math.isnan(expected):  # an all-zero row
                assert math.isnan(got[name][i]), name
            else:
                assert got[name][i] == pytest.approx(expected, rel=1e-9, abs=1e-12), name


def test_binned_scores_computes_only_what_is_asked():
    ref, cur = np.array([[10, 20, 30]]), np.array([[30, 20, 10]])
    assert set(binned_scores(ref, cur, {"psi", "ks", "chi2"})) == {"psi"}  # the rest are not binned scores


def test_chi2_pools_rare_categories():
    ref = np.array([5000.0, 3000.0, 1990.0, 10.0, 0.0])
    cur = np.array([50.0, 30.0, 18.0, 1.0, 1.0])  # a new category once in 100: no alarm
    stat, p = pooled_chi_squared(ref, cur)
    assert p > 0.05
    expected = sps.chisquare([50, 30, 20], f_exp=np.array([5000, 3000, 2000]) / 10000 * 100)
    assert (stat, p) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-9)


def test_pooled_chi2_without_rare_categories_is_the_homogeneity_test():
    ref = np.array([400, 300, 200, 100])
    cur = np.array([30, 40, 20, 10])
    got = pooled_chi_squared(ref, cur)
    assert got == pytest.approx(chi_squared_homogeneity(ref, cur), rel=1e-12)
    expected = sps.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert got == pytest.approx((expected[0], expected[1]), rel=1e-9)


def test_pooled_chi2_folds_a_still_rare_pool_into_the_smallest_category():
    ref = np.array([9000, 990, 5, 5])
    cur = np.array([85, 12, 2, 1])  # the pool (expected 0.1) goes into the second category
    expected = sps.chi2_contingency(np.array([[9000, 1000], [85, 15]]), correction=False)
    assert pooled_chi_squared(ref, cur) == pytest.approx((expected[0], expected[1]), rel=1e-9)


def test_pooled_chi2_of_an_empty_sample_is_nan():
    assert all(math.isnan(v) for v in pooled_chi_squared(np.array([5, 5]), np.array([0, 0])))
    assert all(math.isnan(v) for v in pooled_chi_squared(np.array([0, 0]), np.array([5, 5])))
