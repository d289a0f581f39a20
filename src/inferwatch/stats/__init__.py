"""Pure drift statistics: numpy arrays in, Python floats out.

Families: ``numeric`` (binned PSI/JS/Hellinger/KL; KS test and Wasserstein,
together in ``compare_samples``),
``categorical`` (chi-squared, L-inf, entropy, unseen share), ``summary``
(per-feature summaries, correlation drift), ``multivariate`` (PCA
reconstruction error), ``outlier`` (per-event Mahalanobis and robust z-scores) and ``decision`` (multiple-testing corrections).
NaN means missing and is ignored; empty inputs give NaN, not exceptions.

The names below are imported on first use (PEP 562), not when the package is: a module that
needs one small piece (``exposition.metrics`` takes ``heavy_hitters``) does not bring scipy with
it, so a proxy worker process (``serving/workers.py``) starts without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real imports, for type checkers
    from .categorical import chi_squared, chi_squared_homogeneity, entropy, linf_distance, unseen_ratio
    from .decision import benjamini_hochberg, bonferroni, drifted_share
    from .multivariate import PCAModel
    from .outlier import MahalanobisModel, calibrate_threshold, median_abs_deviation, robust_scale
    from .numeric import (
        SampleComparison,
        compare_samples,
        compare_samples_rows,
        bin_counts,
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
    from .summary import correlation_drift, correlation_matrix, summary_statistics

_HOMES = {
    "chi_squared": "categorical",
    "chi_squared_homogeneity": "categorical",
    "entropy": "categorical",
    "linf_distance": "categorical",
    "unseen_ratio": "categorical",
    "benjamini_hochberg": "decision",
    "bonferroni": "decision",
    "drifted_share": "decision",
    "PCAModel": "multivariate",
    "MahalanobisModel": "outlier",
    "calibrate_threshold": "outlier",
    "median_abs_deviation": "outlier",
    "robust_scale": "outlier",
    "SampleComparison": "numeric",
    "compare_samples": "numeric",
    "compare_samples_rows": "numeric",
    "bin_counts": "numeric",
    "hellinger": "numeric",
    "js_distance": "numeric",
    "kl_divergence": "numeric",
    "ks_2samp": "numeric",
    "prepare_sample": "numeric",
    "proportions": "numeric",
    "psi": "numeric",
    "quantile_edges": "numeric",
    "wasserstein": "numeric",
    "wasserstein_normalized": "numeric",
    "correlation_drift": "summary",
    "correlation_matrix": "summary",
    "summary_statistics": "summary",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "MahalanobisModel",
    "PCAModel",
    "SampleComparison",
    "benjamini_hochberg",
    "bin_counts",
    "bonferroni",
    "calibrate_threshold",
    "chi_squared",
    "chi_squared_homogeneity",
    "compare_samples",
    "compare_samples_rows",
    "correlation_drift",
    "correlation_matrix",
    "drifted_share",
    "entropy",
    "hellinger",
    "js_distance",
    "kl_divergence",
    "ks_2samp",
    "linf_distance",
    "median_abs_deviation",
    "prepare_sample",
    "proportions",
    "psi",
    "quantile_edges",
    "robust_scale",
    "summary_statistics",
    "unseen_ratio",
    "wasserstein",
    "wasserstein_normalized",
]
