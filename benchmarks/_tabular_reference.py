"""The benchmark's reference point: what alibi-detect's ``TabularDrift`` decides, implemented here.

alibi-detect 0.13 installs ~1.1 GB here (OpenCV, transformers, numba, scikit-image, matplotlib:
no torch or TensorFlow, but far over the 500 MB a benchmark-only dependency may cost), so its
tabular detector is reproduced with scipy: per feature a two-sample KS test (``method="asymp"``)
for numbers and a chi-squared test of the 2 x k table of counts over the union of the reference's
and the window's categories (``scipy.stats.chi2_contingency``, its default Yates correction for
2 x 2) for categories; the batch drifts when any p-value is below ``p_val / n_features``
(Bonferroni, ``p_val = 0.05``, its defaults). This follows ``TabularDrift.feature_score`` in
alibi-detect's ``alibi_detect/cd/tabular.py`` line by line (counts over the union of the
reference's and the batch's categories, ``chi2_contingency`` with its defaults, ``ks_2samp(...,
alternative="two-sided", mode="asymp")``) and ``BaseUnivariateDrift``'s Bonferroni rule; the one
difference is that alibi-detect stores the p-values as float32. Standard library, numpy and
scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2_contingency, ks_2samp


def tabular_drift(reference: dict[str, np.ndarray], current: dict[str, np.ndarray], categorical: set[str],
                  p_val: float = 0.05) -> tuple[bool, dict[str, float]]:
    """(batch drifted, p-value per feature) as ``TabularDrift(x_ref, p_val, categories_per_feature=...)``
    would say with ``drift_type="batch"``."""
    p: dict[str, float] = {}
    for name, ref in reference.items():
        cur = current[name]
        if name in categorical:
            values = np.union1d(np.unique(ref), np.unique(cur))
            table = np.vstack([np.array([np.count_nonzero(ref == v) for v in values]),
                               np.array([np.count_nonzero(cur == v) for v in values])])
            table = table[:, table.sum(axis=0) > 0]
            p[name] = float(chi2_contingency(table)[1]) if table.shape[1] > 1 else 1.0
        else:
            p[name] = float(ks_2samp(ref, cur, method="asymp").pvalue)
    threshold = p_val / len(p)
    return any(v < threshold for v in p.values()), p
