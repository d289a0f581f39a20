"""Thresholds for the multivariate drift scores, calibrated on the reference by resampling.

PCA reconstruction error and correlation drift have no p-value: how large they get by chance
depends on the features, their shapes and the window's size. So at profile time stationary
windows are drawn from the reference's own row sample, both scores are computed for each as the
evaluator computes them, and an upper quantile is kept per window size.

* **Held-out rows.** A window must be scored against statistics that did not see its rows: the
  PCA is *fitted* on the sample, and extreme rows pull both the components and the correlations
  toward themselves, so the sample's own rows look closer to the reference than fresh ones.
  Drawing windows from the rows the statistics came from (a first version) gave thresholds
  that stationary windows crossed in 7.8% of cases at 1k events with 100 features of mixed
  shapes and in 10% at 10k with 7 (stationary PCA ratios are 1.2 with 90 features, not 1); a
  bootstrap refit of the PCA still gave 3.3% at 1k. So the sample is cut in
  5 folds; for each, the PCA (fitted as the profile fits it) and the correlation matrix are
  computed on the other four, and windows drawn with replacement from the fold left out are
  scored against them. Fitted on fewer rows, the folds' statistics are a little noisier and
  more optimistic than the profile's, so the thresholds err toward fewer alarms.
* **Small windows, drawn directly.** Every stored size up to ``_DIRECT_MAX`` rows (and a fold's
  size) is drawn at its own size: heavy tails make both scores far from normal there (one
  extreme pair of values decides a correlation drift at 1,000 rows), so no scaling from another
  size holds.
* **Larger windows, scaled.** Above the largest directly drawn size ``n0`` the scores are close
  to normal noise shrinking like ``sqrt(1/n + 1/N)`` around the PCA's optimism (``N`` sample
  rows): the deviation above the draws' mean at ``n0`` is scaled by
  ``sqrt((1/n + 1/N) / (1/n0 + 1/N))``. Tails at ``n0`` are heavier than at ``n``, so this errs
  toward fewer alarms too.

The upper quantile of each size's deviations is the larger of a Gumbel quantile fitted by
moments (a correlation drift is a maximum over pairs, whose tail is Gumbel) and the largest draw
(with 200 draws, about the 0.995 quantile itself).
"""

from __future__ import annotations

import math

import numpy as np

from .multivariate import PCAModel
from .summary import correlation_matrix
from .vectorised import correlation_drift_fast, pca_complement, pca_drift_score_standardised, robust_standardised

__all__ = ["WINDOW_SIZES", "DEFAULT_QUANTILE", "DEFAULT_DRAWS", "gumbel_upper_quantile", "resampled_thresholds"]

#: Window sizes a profile stores thresholds for (a window uses the largest one not above it).
WINDOW_SIZES = (100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
                1_000_000, 10_000_000)
#: Each score's upper quantile: two scores at 0.995 alarm on at most 1% of stationary windows
#: together, the family-wise rate of the per-feature rule at its default drift.alpha = 0.01.
DEFAULT_QUANTILE = 0.995
DEFAULT_DRAWS = 200
_DIRECT_MAX = 1_000  # sizes drawn directly; larger ones are scaled from the largest of these
# Rows x feature pairs the direct draws may cost in all (the correlation is one n x d x d
# product per window): with more features, fewer draws (at least _MIN_DRAWS).
_DRAW_BUDGET = 3_000_000_000
_MIN_DRAWS = 50
_FOLDS = 5
_EULER = 0.5772156649015329


def gumbel_upper_quantile(values: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of a Gumbel distribution with the mean and standard deviation of ``values``."""
    v = values[np.isfinite(values)]
    if v.size < 2:
        return math.nan
    beta = float(v.std(ddof=1)) * math.sqrt(6.0) / math.pi
    mu = float(v.mean()) - _EULER * beta
    return mu - beta * math.log(-math.log(quantile))


def _upper(values: np.ndarray, quantile: float) -> float:
    """The larger of the Gumbel quantile and the largest finite value (NaN without two values)."""
    v = values[np.isfinite(values)]
    if v.size < 2:
        return math.nan
    return max(gumbel_upper_quantile(v, quantile), float(v.max()))


def resampled_thresholds(corr_rows: np.ndarray | None, ref_corr: np.ndarray | None,
                         pca_rows: np.ndarray | None, pca: PCAModel | None, *,
                         rng: np.random.Generator, sizes: tuple[int, ...] = WINDOW_SIZES,
                         quantile: float = DEFAULT_QUANTILE,
                         draws: int = DEFAULT_DRAWS) -> tuple[list[float], list[float]] | None:
    """(PCA ratio thresholds, correlation drift thresholds), one per size of ``sizes``.

    ``corr_rows`` / ``pca_rows`` are the reference sample's rows over the correlation's / the
    PCA's features (NaN where missing) that ``ref_corr`` / ``pca`` were computed from. NaN
    thresholds where a score is absent; None when a fold is smaller than the smallest size.
    """
    rows = corr_rows if corr_rows is not None else pca_rows
    if rows is None:
        return None
    total, d = rows.shape
    folds = np.array_split(rng.permutation(total), _FOLDS)
    fold_size = min(f.size for f in folds)
    direct = [n for n in sizes if n <= min(_DIRECT_MAX, fold_size)]
    if not direct:
        return None
    per_fold = max(_MIN_DRAWS, min(draws, _DRAW_BUDGET // max(sum(direct) * d * d, 1))) // _FOLDS
    # The evaluator reads the correlation off the PCA's clipped matrix when both cover the same features.
    shared = corr_rows is not None and pca_rows is not None and corr_rows.shape[1] == pca_rows.shape[1]
    corr_dev: dict[int, list[float]] = {n: [] for n in direct}
    pca_dev: dict[int, list[float]] = {n: [] for n in direct}
    for k, held in enumerate(folds):
        fitted = np.concatenate([f for j, f in enumerate(folds) if j != k])
        corr_fit = None
        if corr_rows is not None and ref_corr is not None:
            corr_fit = (correlation_matrix(corr_rows[fitted]), corr_rows[held], bool(np.isnan(corr_rows).any()))
        pca_fit = None
        if pca_rows is not None and pca is not None:
            try:
                model = PCAModel.fit(pca_rows[fitted], pca.variance_share)
                pca_fit = (model, pca_complement(model), pca_rows[held])
            except (ValueError, np.linalg.LinAlgError):
                pca_fit = None
        for n in direct:
            for _ in range(per_fold):
                idx = rng.integers(held.size, size=n)
                z = None
                if pca_fit is not None:  # as the evaluator: clipped, NaN kept for the correlation
                    model, complement, pca_held = pca_fit
                    z = robust_standardised(pca_held[idx], model.mean, model.scale)
                if corr_fit is not None:
                    ref, corr_held, has_nan = corr_fit
                    window = z if shared and z is not None else corr_held[idx]
                    corr_dev[n].append(correlation_drift_fast(ref, window, has_nan=has_nan))
                if pca_fit is not None and z is not None:
                    z[np.isnan(z)] = 0.0
                    pca_dev[n].append(pca_drift_score_standardised(pca_fit[0], z, pca_fit[1]) - 1.0)
    largest = direct[-1]
    scale = {n: math.sqrt((1.0 / n + 1.0 / total) / (1.0 / largest + 1.0 / total)) for n in sizes}

    def thresholds(dev: dict[int, list[float]], base: float, centred: bool) -> list[float]:
        """``base`` + each size's upper deviation; above the direct sizes, the deviation beyond
        the draws' mean (``centred``: the PCA's optimism, kept as is) scaled to the size."""
        values = {n: np.array(v, dtype=np.float64) for n, v in dev.items()}
        if not all(np.isfinite(v).sum() >= 2 for v in values.values()):
            return [math.nan] * len(sizes)
        upper = {n: max(_upper(v, quantile), 0.0) for n, v in values.items()}
        center = max(float(np.nanmean(values[largest])), 0.0) if centred else 0.0
        return [base + (upper[n] if n in upper else center + max(upper[largest] - center, 0.0) * scale[n])
                for n in sizes]

    return thresholds(pca_dev, 1.0, True), thresholds(corr_dev, 0.0, False)
