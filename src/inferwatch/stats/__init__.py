"""Pure drift statistics: numpy arrays in, Python floats out.

Families: ``numeric`` (binned PSI/JS/Hellinger/KL; KS test and Wasserstein,
together in ``compare_samples``),
``categorical`` (chi-squared, L-inf, entropy, unseen share), ``summary``
(per-feature summaries, correlation drift), ``multivariate`` (PCA
reconstruction error), ``outlier`` (per-event Mahalanobis and robust z-scores) and ``decision`` (multiple-testing corrections).
NaN means missing and is ignored; empty inputs give NaN, not exceptions.
"""

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

__all__ = [
    "PCAModel",
    "MahalanobisModel",
    "calibrate_threshold",
    "median_abs_deviation",
    "robust_scale",
    "SampleComparison",
    "compare_samples",
    "compare_samples_rows",
    "benjamini_hochberg",
    "bin_counts",
    "bonferroni",
    "chi_squared",
    "chi_squared_homogeneity",
    "correlation_drift",
    "correlation_matrix",
    "drifted_share",
    "entropy",
    "hellinger",
    "js_distance",
    "kl_divergence",
    "ks_2samp",
    "linf_distance",
    "prepare_sample",
    "proportions",
    "psi",
    "quantile_edges",
    "summary_statistics",
    "unseen_ratio",
    "wasserstein",
    "wasserstein_normalized",
]
