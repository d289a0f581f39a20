"""Numeric drift statistics: agreement with scipy / direct formulas, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from scipy.spatial.distance import jensenshannon

from inferwatch.stats import (
    bin_counts,
    compare_samples,
    hellinger,
    js_distance,
    kl_divergence,
    ks_2samp,
    prepare_sample,
    proportions,
    psi,
    quantile_edges,
    wasserstein,
    wasserstein_normalized,
)

# scipy's own exact p-value falls back to the asymptotic one (with a warning)
# when rounding puts it outside [0, 1]; ks_2samp follows it silently.
pytestmark = pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful:RuntimeWarning")

RTOL = 1e-9
SHIFTS = (0.0, 0.25, 0.5, 1.0, 2.0)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
small_ints = st.integers(-5, 5).map(float)  # many ties
sample = st.one_of(
    hnp.arrays(np.float64, st.integers(1, 40), elements=finite),
    hnp.arrays(np.float64, st.integers(1, 40), elements=small_ints),
)
counts = hnp.arrays(np.int64, 8, elements=st.integers(0, 1000))


def assert_ks_matches_scipy(a: np.ndarray, b: np.ndarray, method: str = "auto") -> None:
    expected = stats.ks_2samp(a, b, method=method)
    got = ks_2samp(prepare_sample(a), b, method=method)
    assert got[0] == pytest.approx(float(expected.statistic), rel=RTOL, abs=1e-15)
    np.testing.assert_allclose(got[1], expected.pvalue, rtol=RTOL, atol=1e-12)


# --------------------------------------------------------------------------- samples


def test_prepare_sample_drops_nan_and_sorts():
    out = prepare_sample(np.array([3.0, np.nan, -1.0, 2.0, np.nan]))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [-1.0, 2.0, 3.0])
    assert prepare_sample(np.array([np.nan, np.nan])).size == 0


def test_unsorted_reference_is_rejected():
    with pytest.raises(ValueError, match="sorted"):
        ks_2samp(np.array([2.0, 1.0, 3.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="sorted"):
        wasserstein(np.array([1.0, 2.0]), np.array([3.0, 1.0]), current_sorted=True)


# --------------------------------------------------------------------------- binning


def test_quantile_edges_match_reference_quantiles():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=10_000)
    edges = quantile_edges(ref, 10)
    expected = np.quantile(ref, np.arange(1, 10) / 10, method="inverted_cdf")
    np.testing.assert_array_equal(edges, expected)
    shares = bin_counts(ref, edges) / ref.size
    np.testing.assert_allclose(shares, 0.1, atol=1e-3)


def test_quantile_edges_dedupe_and_edge_cases():
    discrete = np.array([0.0] * 70 + [1.0] * 30)
    edges = quantile_edges(discrete, 10)
    np.testing.assert_array_equal(edges, [0.0, 1.0])
    np.testing.assert_array_equal(bin_counts(discrete, edges), [70, 30, 0])
    assert quantile_edges(np.array([np.nan, np.nan])).size == 0
    assert quantile_edges(np.array([1.0, 2.0]), n_bins=1).size == 0
    assert np.all(np.isfinite(quantile_edges(np.array([-np.inf, 1.0, 2.0, np.inf]), 4)))
    with pytest.raises(ValueError):
        quantile_edges(discrete, 0)


@given(values=hnp.arrays(np.float64, st.integers(0, 60),
                         elements=st.one_of(small_ints, st.just(np.nan))),
       edges=hnp.arrays(np.float64, st.integers(0, 6), elements=small_ints, unique=True))
def test_bin_counts_match_definition(values, edges):
    edges = np.sort(edges)
    got = bin_counts(values, edges)
    valid = values[~np.isnan(values)]
    # Right-closed bins (-inf, e1], (e1, e2], ..., (ek, inf): index = #edges < v.
    direct = np.array([sum(1 for v in valid if (i == 0 or v > edges[i - 1]) and (i == edges.size or v <= edges[i]))
                       for i in range(edges.size + 1)])
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, direct)
    np.testing.assert_array_equal(bin_counts(prepare_sample(values), edges, values_sorted=True), direct)


def test_proportions_smoothing():
    np.testing.assert_allclose(proportions([1, 3]), [0.25, 0.75])
    eps = 0.01
    p = proportions([0, 2, 2], smoothing=eps)
    np.testing.assert_allclose(p, (np.array([0, 0.5, 0.5]) + eps) / (1 + 3 * eps))
    assert p.sum() == pytest.approx(1.0)
    assert np.all(np.isnan(proportions([0, 0])))


# --------------------------------------------------------------------------- binned statistics


def _smoothed(c, eps):
    c = [float(x) for x in c]
    total = sum(c)
    return [(x / total + eps) / (1 + len(c) * eps) for x in c]


@given(p=counts, q=counts)
def test_binned_statistics_match_direct_formulas(p, q):
    if p.sum() == 0 or q.sum() == 0:
        return
    eps = 1e-4
    ps, qs = _smoothed(p, eps), _smoothed(q, eps)
    direct_psi = sum((b - a) * math.log(b / a) for a, b in zip(ps, qs))
    direct_kl = sum(b * math.log(b / a) for a, b in zip(ps, qs))
    pu, qu = p / p.sum(), q / q.sum()
    direct_h = math.sqrt(0.5 * sum((math.sqrt(a) - math.sqrt(b)) ** 2 for a, b in zip(pu, qu)))
    assert psi(p, q, eps) == pytest.approx(direct_psi, rel=RTOL, abs=1e-12)
    assert kl_divergence(p, q, eps) == pytest.approx(direct_kl, rel=RTOL, abs=1e-12)
    assert hellinger(p, q) == pytest.approx(direct_h, rel=RTOL, abs=1e-12)
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), rel=RTOL, abs=1e-12)


@given(p=counts, q=counts)
def test_binned_statistics_symmetry_and_identity(p, q):
    if p.sum() == 0 or q.sum() == 0:
        return
    assert psi(p, q) == pytest.approx(psi(q, p), rel=1e-12, abs=1e-15)
    assert js_distance(p, q) == pytest.approx(js_distance(q, p), rel=1e-12, abs=1e-15)
    assert hellinger(p, q) == pytest.approx(hellinger(q, p), rel=1e-12, abs=1e-15)
    for f in (psi, js_distance, hellinger, kl_divergence):
        assert f(p, 3 * p) == pytest.approx(0.0, abs=1e-12)
        assert f(p, q) >= -1e-15
    assert 0.0 <= js_distance(p, q) <= 1.0 + 1e-12
    assert 0.0 <= hellinger(p, q) <= 1.0 + 1e-12


def test_binned_statistics_empty_and_mismatch():
    for f in (psi, js_distance, hellinger, kl_divergence):
        assert math.isnan(f([1, 2, 3], [0, 0, 0]))
        with pytest.raises(ValueError):
            f([1, 2], [1, 2, 3])


def test_kl_direction_is_current_given_reference():
    ref, cur = np.array([90, 10]), np.array([50, 50])
    p, q = _smoothed(ref, 1e-4), _smoothed(cur, 1e-4)
    assert kl_divergence(ref, cur) == pytest.approx(sum(b * math.log(b / a) for a, b in zip(p, q)))
    assert kl_divergence(ref, cur) != pytest.approx(kl_divergence(cur, ref))


# --------------------------------------------------------------------------- KS test


@pytest.mark.parametrize("n1,n2", [(1, 1), (1, 7), (3, 5), (7, 7), (20, 20), (50, 30), (100, 100),
                                   (999, 1000), (2000, 2000), (10_000, 10_000), (10_000, 9_000)])
@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5, 3.0])
def test_ks_matches_scipy_exact_regime(n1, n2, shift):
    rng = np.random.default_rng(n1 * 31 + n2)
    assert_ks_matches_scipy(rng.normal(size=n1), rng.normal(shift, size=n2))


@pytest.mark.parametrize("n1,n2", [(10_001, 10_001), (20_000, 300), (12_000, 15_000), (300, 30_000)])
@pytest.mark.parametrize("shift", [0.0, 0.05, 0.5])
def test_ks_matches_scipy_asymptotic_regime(n1, n2, shift):
    rng = np.random.default_rng(n1 + n2)
    assert_ks_matches_scipy(rng.normal(size=n1), rng.normal(shift, size=n2))


@pytest.mark.parametrize("method", ["exact", "asymp"])
def test_ks_matches_scipy_explicit_methods(method):
    rng = np.random.default_rng(5)
    for n1, n2 in [(40, 40), (40, 60), (500, 500), (800, 300)]:
        assert_ks_matches_scipy(rng.normal(size=n1), rng.normal(0.2, size=n2), method)


def test_ks_matches_scipy_with_heavy_ties():
    rng = np.random.default_rng(7)
    for n1, n2 in [(10, 10), (200, 200), (300, 120), (5000, 5000), (12_000, 4000)]:
        assert_ks_matches_scipy(rng.integers(0, 4, n1).astype(float), rng.integers(0, 5, n2).astype(float))


@settings(max_examples=150, deadline=None)
@given(a=sample, b=sample)
def test_ks_matches_scipy_property(a, b):
    assert_ks_matches_scipy(a, b)


def test_ks_ignores_nan_and_empty_gives_nan():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=300), rng.normal(size=200)
    b_nan = np.concatenate([b, [np.nan] * 17])
    assert ks_2samp(prepare_sample(a), b_nan) == ks_2samp(prepare_sample(a), b)
    ref_with_nan = np.sort(np.concatenate([a, [np.nan, np.nan]]))
    assert ks_2samp(ref_with_nan, b) == ks_2samp(prepare_sample(a), b)
    for empty in (np.array([]), np.array([np.nan, np.nan])):
        assert all(math.isnan(x) for x in ks_2samp(prepare_sample(a), empty))
        assert all(math.isnan(x) for x in ks_2samp(empty, a))


def test_ks_current_sorted_flag_gives_same_result():
    rng = np.random.default_rng(2)
    ref, cur = prepare_sample(rng.normal(size=1000)), rng.normal(size=700)
    assert ks_2samp(ref, cur) == ks_2samp(ref, prepare_sample(cur), current_sorted=True)


def test_ks_fast_method_is_close_to_scipy():
    rng = np.random.default_rng(3)
    for n1, n2 in [(300, 300), (500, 2000), (1000, 1000), (10_000, 3000), (20_000, 5000)]:
        for shift in np.linspace(0, 0.3, 7):
            a, b = rng.normal(size=n1), rng.normal(shift, size=n2)
            d, p = ks_2samp(prepare_sample(a), b, method="fast")
            expected = stats.ks_2samp(a, b)
            assert d == pytest.approx(expected.statistic, rel=1e-12)
            assert abs(p - expected.pvalue) < 0.02
    with pytest.raises(ValueError):
        ks_2samp(prepare_sample(a), b, method="bogus")


def test_ks_identical_samples():
    x = prepare_sample(np.random.default_rng(4).normal(size=500))
    assert ks_2samp(x, x) == (0.0, 1.0)
    for method in ("asymp", "fast"):
        d, p = ks_2samp(x, x, method=method)
        assert d == 0.0 and p == pytest.approx(1.0)


# --------------------------------------------------------------------------- Wasserstein


@pytest.mark.parametrize("n1,n2", [(1, 1), (1, 5), (13, 7), (1000, 1000), (10_000, 3000)])
def test_wasserstein_matches_scipy(n1, n2):
    rng = np.random.default_rng(n1 + 7 * n2)
    a, b = rng.lognormal(size=n1), rng.lognormal(0.3, size=n2)
    expected = stats.wasserstein_distance(a, b)
    assert wasserstein(prepare_sample(a), b) == pytest.approx(expected, rel=RTOL, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(a=sample, b=sample)
def test_wasserstein_matches_scipy_property(a, b):
    expected = stats.wasserstein_distance(a, b)
    got = wasserstein(prepare_sample(a), b)
    assert got == pytest.approx(expected, rel=RTOL, abs=1e-9 * max(1.0, np.abs(a).max(), np.abs(b).max()))
    assert got == pytest.approx(wasserstein(prepare_sample(b), a), rel=1e-12, abs=1e-9 * max(1.0, got))


def test_wasserstein_normalized():
    rng = np.random.default_rng(8)
    a, b = rng.normal(5, 3, size=2000), rng.normal(6, 3, size=1000)
    ref = prepare_sample(a)
    assert wasserstein_normalized(ref, b) == pytest.approx(stats.wasserstein_distance(a, b) / a.std(), rel=RTOL)
    assert wasserstein_normalized(ref, b, reference_std=2.0) == pytest.approx(
        stats.wasserstein_distance(a, b) / 2.0, rel=RTOL)
    const = np.full(50, 4.0)
    assert wasserstein_normalized(const, const) == 0.0
    assert wasserstein_normalized(const, np.full(10, 5.0)) == pytest.approx(1.0)  # raw distance
    assert math.isnan(wasserstein_normalized(ref, np.array([np.nan])))
    assert math.isnan(wasserstein(ref, np.array([])))


def test_compare_samples_equals_individual_functions():
    rng = np.random.default_rng(9)
    for n1, n2 in [(500, 500), (800, 300), (12_000, 2000)]:
        ref = prepare_sample(rng.normal(size=n1))
        cur = np.round(rng.normal(0.2, size=n2), 1)
        res = compare_samples(ref, cur)
        assert (res.ks_statistic, res.ks_pvalue) == ks_2samp(ref, cur)
        assert res.wasserstein == pytest.approx(wasserstein(ref, cur), rel=1e-15)
        assert res.wasserstein_normalized == pytest.approx(wasserstein_normalized(ref, cur), rel=1e-15)
        fast = compare_samples(ref, prepare_sample(cur), current_sorted=True, method="fast",
                               reference_std=float(ref.std()))
        assert fast.ks_pvalue == ks_2samp(ref, cur, method="fast")[1]
    assert all(math.isnan(x) for x in compare_samples(ref, np.array([])))
    with pytest.raises(ValueError):
        compare_samples(ref, cur, method="nope")


# --------------------------------------------------------------------------- monotonicity in a mean shift


@pytest.mark.parametrize("seed", range(5))
def test_scores_grow_with_mean_shift(seed):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=5000)
    noise = rng.normal(size=2000)  # common random numbers: only the shift changes
    ref_sorted = prepare_sample(ref)
    edges = quantile_edges(ref)
    ref_counts = bin_counts(ref_sorted, edges, values_sorted=True)
    rows = []
    for shift in SHIFTS:
        cur = noise + shift * ref.std()
        q = bin_counts(cur, edges)
        d, p = ks_2samp(ref_sorted, cur)
        rows.append([psi(ref_counts, q), js_distance(ref_counts, q), hellinger(ref_counts, q),
                     kl_divergence(ref_counts, q), d, -p, wasserstein(ref_sorted, cur),
                     wasserstein_normalized(ref_sorted, cur), -ks_2samp(ref_sorted, cur, method="fast")[1]])
    scores = np.array(rows)
    assert np.all(np.diff(scores, axis=0) >= -1e-12), scores
    assert np.all(scores[-1, :5] > scores[0, :5])
    assert rows[0][5] < -0.01  # no shift: KS p-value not small


@pytest.mark.parametrize("n", [1, 2, 7, 60, 100, 101, 500, 3001, 10_000])
def test_ks_equal_sizes_exact_pvalue_grid(n):
    """Equal sizes use a vectorised exact series: check it across D = h/n."""
    ref = np.arange(n, dtype=np.float64)
    hs = sorted({1, 2, 3, n // 7 + 1, n // 3 + 1, n // 2 + 1, n} | set(range(1, n + 1, max(1, n // 25))))
    for h in hs:
        if h > n:
            continue
        cur = ref + (h - 0.5)  # D = h / n exactly
        assert_ks_matches_scipy(ref, cur)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.1, 100.0), loc=st.floats(-1e3, 1e3),
       shifts=st.lists(st.floats(0.05, 3.0), min_size=2, max_size=5, unique=True))
def test_scores_grow_with_any_mean_shift(seed, scale, loc, shifts):
    """Property: for any location, scale and set of shifts (in reference standard deviations),
    a larger shift of the same sample never scores lower, and no shift scores ~0 on the
    distances (the current sample is a copy of the reference)."""
    rng = np.random.default_rng(seed)
    ref = loc + scale * rng.normal(size=3000)
    ref_sorted = prepare_sample(ref)
    edges = quantile_edges(ref)
    ref_counts = bin_counts(ref_sorted, edges, values_sorted=True)
    rows = []
    for shift in [0.0, *sorted(shifts)]:
        cur = ref + shift * ref.std()
        q = bin_counts(cur, edges)
        rows.append([psi(ref_counts, q), js_distance(ref_counts, q), hellinger(ref_counts, q),
                     ks_2samp(ref_sorted, cur)[0], wasserstein_normalized(ref_sorted, cur)])
    scores = np.array(rows)
    assert np.all(scores[0] < 1e-6), scores[0]
    assert np.all(np.diff(scores, axis=0) >= -1e-9), scores
    assert np.all(scores[-1] > scores[0])
