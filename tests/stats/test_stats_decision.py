"""Multiple-testing corrections."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from inferwatch.stats import benjamini_hochberg, bonferroni, drifted_share

pvals = hnp.arrays(np.float64, st.integers(0, 60),
                   elements=st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1e-4, 0.01, 0.05, np.nan])))


@given(p=pvals, alpha=st.sampled_from([0.01, 0.05, 0.1]))
def test_bonferroni(p, alpha):
    flags = bonferroni(p, alpha)
    valid = ~np.isnan(p)
    m = valid.sum()
    assert flags.dtype == bool and flags.shape == p.shape
    assert not flags[~valid].any()
    np.testing.assert_array_equal(flags[valid], p[valid] * m <= alpha)


@given(p=pvals, alpha=st.sampled_from([0.01, 0.05, 0.1]))
def test_benjamini_hochberg_matches_scipy(p, alpha):
    flags = benjamini_hochberg(p, alpha)
    valid = ~np.isnan(p)
    assert flags.dtype == bool and flags.shape == p.shape
    assert not flags[~valid].any()
    if valid.any():
        np.testing.assert_array_equal(flags[valid], stats.false_discovery_control(p[valid], method="bh") <= alpha)
    # BH is never more conservative than Bonferroni.
    assert np.all(benjamini_hochberg(p, alpha) >= bonferroni(p, alpha))


def test_benjamini_hochberg_step_up():
    p = np.array([0.01, 0.02, 0.03, 0.04, 0.5])
    # 0.04 <= 4/5 * 0.05 rejects all four smaller ones (step-up), Bonferroni only 0.01.
    np.testing.assert_array_equal(benjamini_hochberg(p, 0.05), [True, True, True, True, False])
    np.testing.assert_array_equal(bonferroni(p, 0.05), [True, False, False, False, False])


def test_drifted_share():
    assert drifted_share(np.array([True, False, True, False])) == 0.5
    assert drifted_share([False, False]) == 0.0
    assert math.isnan(drifted_share([]))
