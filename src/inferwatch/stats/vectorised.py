"""Library statistics computed for a whole window at once, for the drift evaluator's hot path.

Each function here equals a per-feature or per-matrix function of the library on the same
inputs (tests hold them equal); they exist because a 100-feature evaluation must take
milliseconds: ``summary_statistics_rows`` is ``summary.summary_statistics`` for every row of a
sorted matrix, ``correlation_drift_fast`` is ``summary.correlation_drift`` with one matrix
product when nothing is missing, and ``pca_drift_score_standardised`` is
``PCAModel.drift_score`` of rows already standardised (shared with the correlation), through
the smaller of the kept and the residual subspaces (``pca_complement``).
"""

from __future__ import annotations

import math

import numpy as np

from .multivariate import PCAModel
from .summary import correlation_drift

__all__ = ["summary_statistics_rows", "correlation_drift_fast", "pca_complement", "pca_drift_score_standardised",
           "ROBUST_Z", "robust_standardised"]

#: Standardised values beyond this many reference standard deviations count as this many in the
#: multivariate scores, so no single value decides them (docs/drift.md#multivariate-drift).
ROBUST_Z = 5.0


def robust_standardised(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(x - mean) / scale`` clipped to ``[-ROBUST_Z, ROBUST_Z]``, NaN kept, column-major.

    One value of 135,702 in a lognormal column (z about 1,000) made the PCA ratio and the
    correlation drift of a stationary 1k window cross any threshold; clipped, one row moves a
    correlation by at most about ``ROBUST_Z ** 2 / n``. A correlation is unchanged by the
    standardisation, so both scores read this one matrix.
    """
    z = np.subtract(x, mean, order="F")
    z /= scale
    return np.clip(z, -ROBUST_Z, ROBUST_Z, out=z)

# summary_statistics' quantiles (numpy's "linear" method).
_QUANTILES = (("p05", 0.05), ("p25", 0.25), ("p50", 0.50), ("p75", 0.75), ("p95", 0.95))


def summary_statistics_rows(sorted_rows: np.ndarray) -> dict[str, np.ndarray]:
    """mean, std, min, max and the quantiles of ``summary_statistics``, for each row of a
    (features x n) matrix whose rows are sorted and NaN-free (n >= 1; not checked).

    One array per statistic, one value per row; ``missing_ratio`` is the caller's (the rows
    hold only present values).
    """
    s = sorted_rows
    n = s.shape[1]
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", over="ignore"):
        out["mean"] = s.mean(axis=1)
        out["std"] = s.std(axis=1)
        out["min"], out["max"] = s[:, 0], s[:, -1]
        for name, q in _QUANTILES:
            pos = q * (n - 1)
            lo = int(math.floor(pos))
            frac = pos - lo
            a, b = s[:, lo], s[:, min(lo + 1, n - 1)]
            out[name] = a if frac == 0 else a + (b - a) * frac
    return out


def correlation_drift_fast(ref_corr: np.ndarray, x: np.ndarray, *, has_nan: bool) -> float:
    """``correlation_drift(ref_corr, x)`` with a fast path for a matrix without missing values.

    The same Pearson correlations (one centred matrix product, constant columns NaN); with
    missing values (``has_nan``, which the caller knows from building ``x``) or fewer than two
    rows, the library's pairwise computation is used.
    """
    if x.shape[0] < 2 or has_nan:
        return correlation_drift(ref_corr, x)
    xc = x - x.mean(axis=0)
    sxy = xc.T @ xc
    var = np.diag(sxy).copy()
    constant = np.ptp(x, axis=0) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip(sxy / np.sqrt(np.outer(var, var)), -1.0, 1.0)
    r[constant, :] = np.nan
    r[:, constant] = np.nan
    iu = np.triu_indices(r.shape[0], k=1)
    delta = np.abs(r[iu] - ref_corr[iu])
    delta = delta[~np.isnan(delta)]
    return float(delta.max()) if delta.size else math.nan


def pca_complement(pca: PCAModel) -> np.ndarray | None:
    """An orthonormal basis (rows) of the residual subspace when it is the smaller one, else None.

    The residual of z is ``z - z V^T V`` for the kept components V, or ``z W^T W`` for an
    orthonormal basis W of their complement: the second is cheaper when k > d/2.
    """
    if pca.n_components <= pca.n_features // 2:
        return None
    _, _, vt = np.linalg.svd(pca.components, full_matrices=True)
    return vt[pca.n_components:].copy()


def pca_drift_score_standardised(pca: PCAModel, z: np.ndarray, complement: np.ndarray | None = None) -> float:
    """``pca.drift_score(x)`` of rows ``z = (x - pca.mean) / pca.scale`` with NaN already 0.

    ``complement`` (``pca_complement(pca)``) measures the residual as ``|z W^T|^2``. NaN for
    no rows.
    """
    if z.shape[0] == 0:
        return math.nan
    if complement is not None:
        r = z @ complement.T
    else:
        r = z - (z @ pca.components.T) @ pca.components
    err = float(np.einsum("ij,ij->", r, r)) / (z.shape[0] * pca.n_features)
    if pca.ref_error_mean > 0:
        return err / pca.ref_error_mean
    return 1.0 if err <= 1e-24 else math.inf
