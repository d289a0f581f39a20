"""Label drift: the ground truth of the labelled window against the reference label.

A change in what the true answers look like (a class's base rate, the target's level) is
drift of the labels themselves, whatever the model does. Class labels are compared as counts
over the reference's categories (its top-K plus "other"), target values as a sample against the
reference's sorted sample and quantile bins. Both functions return ``(scores, p_values)`` keyed
by method name, the ``method`` label of ``inferwatch_label_drift_score`` and
``inferwatch_label_drift_p_value``; each number is the per-pair function of the same name in
``categorical`` or ``numeric``, so label drift and feature drift agree.
"""

from __future__ import annotations

import numpy as np

from .categorical import chi_squared, linf_distance
from .numeric import bin_counts, js_distance, ks_2samp, psi

__all__ = ["class_label_drift", "value_label_drift"]


def class_label_drift(reference_counts: np.ndarray,
                      current_counts: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """Class labels: chi-squared goodness of fit to the reference proportions (with its p-value),
    L-infinity, Jensen-Shannon and PSI over count vectors aligned on the same categories."""
    stat, p = chi_squared(reference_counts, current_counts)
    scores = {"chi2": stat, "linf": linf_distance(reference_counts, current_counts),
              "js": js_distance(reference_counts, current_counts), "psi": psi(reference_counts, current_counts)}
    return scores, {"chi2": p}


def value_label_drift(reference_sorted: np.ndarray, reference_edges: np.ndarray, reference_counts: np.ndarray,
                      current: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """Target values: the two-sample KS test against the reference's sorted sample (with its
    p-value), and PSI and Jensen-Shannon over the reference's bins (``reference_edges``, whose
    counts are ``reference_counts``)."""
    current_counts = bin_counts(current, reference_edges)
    stat, p = ks_2samp(reference_sorted, current)
    scores = {"ks": stat, "psi": psi(reference_counts, current_counts),
              "js": js_distance(reference_counts, current_counts)}
    return scores, {"ks": p}
