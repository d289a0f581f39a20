"""Statistics of the input guard: range bounds, the outlier threshold, score histograms, top features.

Pure functions (numpy arrays in, numbers or arrays out) that ``monitors.guard`` calls when it
builds its schema from a reference and when it summarises a batch. Non-finite inputs are
handled explicitly (documented per function) rather than raising.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .outlier import MahalanobisModel

THRESHOLD_FLOOR = 1e-12  # a non-positive or NaN threshold would make every score infinite or NaN


def widened_range(minimum: np.ndarray, maximum: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Per feature ``[min - t * span, max + t * span]``: the reference range widened by ``tolerance``.

    The span is ``max - min``, or ``max(|max|, 1)`` when every reference value was the same (so a
    constant feature still tolerates a little); a feature without a finite min and max gets
    ``(-inf, inf)``: nothing is out of its range.
    """
    lo = np.asarray(minimum, dtype=np.float64)
    hi = np.asarray(maximum, dtype=np.float64)
    known = np.isfinite(lo) & np.isfinite(hi)
    with np.errstate(invalid="ignore"):
        span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    return (np.where(known, lo - tolerance * span, -np.inf), np.where(known, hi + tolerance * span, np.inf))


def chi_squared_threshold(fpr: float, dof: int) -> float:
    """The value a chi-squared variable with ``dof`` degrees of freedom exceeds with probability ``fpr``.

    The squared Mahalanobis distance of Gaussian data in ``dof`` dimensions is chi-squared, so this
    is the outlier threshold for a false-positive rate ``fpr`` when no reference scores calibrate
    it (``scipy.stats.chi2.isf(fpr, dof)``, via ``scipy.special`` to keep ``scipy.stats`` unloaded).
    """
    if not 0.0 < fpr < 1.0:
        raise ValueError("fpr must be between 0 and 1")
    if dof < 1:
        raise ValueError("dof must be at least 1")
    return float(special.chdtri(dof, fpr))


def outlier_threshold(model: MahalanobisModel, fpr: float) -> tuple[float, bool]:
    """(threshold, calibrated on the reference) for a false-positive rate.

    Calibrated on the model's stored reference scores when it has them (``calibrated`` says whether
    the rate is resolvable by them: 1/n <= fpr <= tail share); otherwise the chi-squared value for
    the model's dimension (exact for Gaussian data only), which is never "calibrated". A threshold
    that is not positive (e.g. NaN from an empty tail) becomes ``THRESHOLD_FLOOR``.
    """
    if model.reference_n:
        threshold, calibrated = model.threshold(fpr), model.resolvable(fpr)
    else:
        threshold, calibrated = chi_squared_threshold(fpr, model.n_features), False
    return (threshold if threshold > 0 else THRESHOLD_FLOOR), calibrated


def bucket_counts(values: np.ndarray, upper_bounds: tuple[float, ...]) -> tuple[np.ndarray, float]:
    """(count per bucket, sum) of the finite values, Prometheus style: bucket ``i`` holds the values
    in ``(upper_bounds[i-1], upper_bounds[i]]`` and a last one those above every bound (``+Inf``).

    Counts are per bucket, not cumulative; non-finite values are in neither the counts nor the sum.
    """
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    counts = np.bincount(np.searchsorted(upper_bounds, finite, side="left"), minlength=len(upper_bounds) + 1)
    return counts.astype(np.int64, copy=False), float(finite.sum())


def largest_magnitudes(z: np.ndarray, k: int) -> np.ndarray:
    """Per column of ``z`` (features x rows), the rows of its ``k`` largest finite ``|z|``, largest first.

    Ties keep the feature order; slots beyond a column's finite values hold -1.
    """
    z = np.asarray(z, dtype=np.float64)
    k = max(0, min(k, z.shape[0]))
    magnitude = np.where(np.isfinite(z), np.abs(z), -1.0)
    top = np.argsort(-magnitude, axis=0, kind="stable")[:k]
    return np.where(np.take_along_axis(magnitude, top, axis=0) >= 0, top, -1)


__all__ = ["THRESHOLD_FLOOR", "bucket_counts", "chi_squared_threshold", "largest_magnitudes", "outlier_threshold",
           "widened_range"]
