"""Summary statistics of one feature and correlation drift across features.

NaN means missing throughout. Infinities are ordinary values.
"""

from __future__ import annotations

import numpy as np

from .numeric import prepare_sample

__all__ = ["summary_statistics", "correlation_matrix", "correlation_drift"]

_NAN = float("nan")
_QUANTILES = {"p05": 0.05, "p25": 0.25, "p50": 0.50, "p75": 0.75, "p95": 0.95}
_QUANTILE_LEVELS = np.fromiter(_QUANTILES.values(), dtype=np.float64)


def summary_statistics(values: np.ndarray) -> dict[str, float]:
    """mean, std, min, max, p05, p25, p50, p75, p95 of the non-NaN values, and missing_ratio.

    One sort serves all order statistics; quantiles interpolate linearly
    (``np.percentile``'s default method); std is the population std (ddof=0).
    ``missing_ratio`` is the NaN share of all values. With no non-NaN value every
    statistic is NaN; an empty input also has missing_ratio NaN.
    """
    raw = np.asarray(values, dtype=np.float64).ravel()
    s = prepare_sample(raw)
    out = {"mean": _NAN, "std": _NAN, "min": _NAN, "max": _NAN}
    out.update(dict.fromkeys(_QUANTILES, _NAN))
    out["missing_ratio"] = (raw.size - s.size) / raw.size if raw.size else _NAN
    if s.size == 0:
        return out
    pos = _QUANTILE_LEVELS * (s.size - 1)  # numpy's "linear" method on sorted data
    lo = np.floor(pos).astype(np.intp)
    frac = pos - lo
    a, b = s[lo], s[np.minimum(lo + 1, s.size - 1)]
    with np.errstate(invalid="ignore", over="ignore"):  # infinities give inf/nan, quietly
        quant = np.where(frac == 0, a, a + (b - a) * frac)
        out.update(mean=float(s.mean()), std=float(s.std()), min=float(s[0]), max=float(s[-1]))
    out.update(zip(_QUANTILES, map(float, quant)))
    return out


def correlation_matrix(matrix: np.ndarray) -> np.ndarray:
    """Pearson correlations between the columns of ``matrix`` (rows x features).

    Missing values are dropped pairwise: each pair uses the rows where both are
    present, so one sparse feature does not discard rows for all the others. A
    pair with fewer than 2 shared rows, or where either column is constant on
    those rows, has NaN correlation (also on the diagonal for constant columns).
    Without NaNs this is ``np.corrcoef(matrix, rowvar=False)``; with NaNs it takes
    four matrix products (sums over shared rows), no per-pair loop.
    """
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("matrix must be 2-D (rows x features)")
    n, d = x.shape
    present = ~np.isnan(x)
    col_n = present.sum(axis=0)
    col_mean = np.divide(np.where(present, x, 0.0).sum(axis=0), col_n, out=np.zeros(d), where=col_n > 0)
    # Centre each column (keeps the one-pass sums accurate); a constant column is
    # centred on its value exactly, so its variance is exactly 0, not rounding noise.
    col_min = np.where(present, x, np.inf).min(axis=0, initial=np.inf)
    col_max = np.where(present, x, -np.inf).max(axis=0, initial=-np.inf)
    constant = col_min == col_max
    col_mean[constant] = col_min[constant]
    if present.all():
        xc = x - col_mean
        sxy = xc.T @ xc
        var_i = np.broadcast_to(np.diag(sxy)[:, None], (d, d))
        var_j = var_i.T
        scale = np.zeros((d, d))
        count = np.full((d, d), float(n))
    else:
        m = present.astype(np.float64)
        count = m.T @ m
        xc = np.where(present, x - col_mean, 0.0)
        sx = xc.T @ m            # sx[i, j] = sum of x_i over rows where i and j are present
        sxx = (xc * xc).T @ m    # same for x_i**2
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_i = sx / count
            var_i = sxx - sx * mean_i
            var_j = var_i.T
            sxy = xc.T @ xc - sx * mean_i.T
        # A column constant on the shared rows only leaves rounding-level variance.
        scale = 1e-12 * sxx
    with np.errstate(invalid="ignore", divide="ignore"):
        degenerate = (count < 2) | ~(var_i > scale) | ~(var_j > scale.T)
        r = sxy / np.sqrt(var_i * var_j)
    r = np.clip(r, -1.0, 1.0)
    r[degenerate] = np.nan
    return r


def correlation_drift(ref_corr: np.ndarray, cur_matrix: np.ndarray) -> float:
    """Largest absolute change in any pairwise Pearson correlation.

    ``max_{i<j} |corr_cur[i, j] - ref_corr[i, j]|`` where ``corr_cur`` is
    ``correlation_matrix(cur_matrix)`` (pairwise NaN handling). Pairs undefined in
    either matrix (constant column, too few rows) are skipped; the std/summary
    statistics report those. NaN if no pair is comparable (e.g. one feature).
    """
    ref = np.asarray(ref_corr, dtype=np.float64)
    cur = correlation_matrix(cur_matrix)
    if ref.shape != cur.shape:
        raise ValueError(f"ref_corr has shape {ref.shape}, current data gives {cur.shape}")
    iu = np.triu_indices(cur.shape[0], k=1)
    delta = np.abs(cur[iu] - ref[iu])
    delta = delta[~np.isnan(delta)]
    return float(delta.max()) if delta.size else _NAN
