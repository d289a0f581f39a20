"""The benchmark's reference point: alibi-detect's ``TabularDrift`` decision, and a reproduction of it.

alibi-detect 0.13 installs ~1.1 GB (OpenCV, transformers, numba, scikit-image, matplotlib: no
torch or TensorFlow, but far over the 500 MB a benchmark-only dependency may cost), so it stays out
of the project's environment. ``TabularReference`` uses ``alibi_detect.cd.TabularDrift`` when it
is importable (a separate venv, see ``detection_quality.py``) and ``tabular_drift`` below
otherwise; with alibi-detect it runs both on every window and counts how often they agree.

``tabular_drift`` reproduces the tabular detector with scipy: per feature a two-sample KS test
(``method="asymp"``) for numbers and a chi-squared test of the 2 x k table of counts over the union
of the reference's and the window's categories (``scipy.stats.chi2_contingency``, its default
Yates correction for 2 x 2) for categories; the batch drifts when any p-value is below
``p_val / n_features`` (Bonferroni, ``p_val = 0.05``, its defaults). This follows
``TabularDrift.feature_score`` in alibi-detect's ``alibi_detect/cd/tabular.py`` line by line
(counts over the union of the reference's and the batch's categories, ``chi2_contingency`` with its
defaults, ``ks_2samp(..., alternative="two-sided", mode="asymp")``) and ``BaseUnivariateDrift``'s
Bonferroni rule; the one difference is that alibi-detect stores the p-values as float32. Standard
library, numpy and scipy only.
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


class TabularReference:
    """TabularDrift at its defaults on one reference: alibi-detect's when importable, else the reproduction.

    ``label`` says which one decides. With alibi-detect, every window also goes through
    ``tabular_drift``: ``compared`` / ``agreed`` count the windows and the equal decisions, and
    ``largest_p_difference`` is the largest difference of one feature's p-value between the two.
    """

    def __init__(self, reference: dict[str, np.ndarray], categorical: set[str]):
        self.reference, self.categorical, self.names = reference, categorical, list(reference)
        self.compared = self.agreed = 0
        self.largest_p_difference = 0.0
        try:
            import alibi_detect
            from alibi_detect.cd import TabularDrift
        except ImportError:
            self.detector = None
            self.label = "the reproduction of TabularDrift (_tabular_reference.py; alibi-detect not importable)"
            return
        self.version = alibi_detect.__version__
        self.label = f"alibi-detect {self.version} TabularDrift"
        cats = {j: None for j, name in enumerate(self.names) if name in categorical}
        self.detector = TabularDrift(self._matrix(reference), p_val=0.05, categories_per_feature=cats)

    def _matrix(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in self.names])

    def drifted(self, current: dict[str, np.ndarray]) -> bool:
        ours, p = tabular_drift(self.reference, current, self.categorical)
        if self.detector is None:
            return ours
        data = self.detector.predict(self._matrix(current), return_p_val=True)["data"]
        theirs = bool(data["is_drift"])
        self.compared += 1
        self.agreed += theirs == ours
        difference = np.abs(np.asarray(data["p_val"], dtype=np.float64) - np.array([p[n] for n in self.names]))
        self.largest_p_difference = max(self.largest_p_difference, float(difference.max()))
        return theirs
