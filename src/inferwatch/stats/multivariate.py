"""Multivariate drift: PCA reconstruction error of the numeric feature vector.

Per-feature tests miss changes in how features move together. A PCA fitted on
the standardised reference keeps the directions that explain most variance; a
row that breaks the reference's correlation structure is reconstructed badly
from them. ``drift_score`` compares the mean reconstruction error of a window
with the reference's own: about 1 without drift, growing with drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PCAModel"]

_FORMAT_VERSION = 1


def _as_matrix(x: np.ndarray, n_features: int | None = None) -> np.ndarray:
    """2-D float64 view; a 1-D input of length n_features is one row."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1 and n_features is not None and a.size == n_features:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise ValueError("expected a 2-D matrix (rows x features)")
    if n_features is not None and a.shape[1] != n_features:
        raise ValueError(f"expected {n_features} features, got {a.shape[1]}")
    return a


@dataclass(frozen=True, eq=False)
class PCAModel:
    """PCA of the standardised reference, for reconstruction-error drift.

    ``mean``/``scale``: per-feature reference mean and std (ddof=0; 1 where the
    std is 0). ``components``: (k, d) orthonormal principal axes in standardised
    space. ``ref_error_mean``/``ref_error_std``: of the reference rows' errors.

    Missing values (NaN) are imputed with the reference mean, i.e. 0 after
    standardising: a missing value neither adds error nor moves the projection.
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray
    ref_error_mean: float
    ref_error_std: float
    variance_share: float = 0.95

    @property
    def n_features(self) -> int:
        return int(self.mean.size)

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, reference: np.ndarray, variance_share: float = 0.95) -> PCAModel:
        """Fit on a (rows x features) reference matrix.

        Keeps the fewest components whose explained variance reaches
        ``variance_share`` (via ``np.linalg.svd`` of the standardised matrix), but
        at most d - 1, so a residual subspace always remains to measure (with one
        feature, k = 0 and the error is the squared z-score). All-NaN columns get
        mean 0, scale 1.
        """
        if not 0.0 < variance_share <= 1.0:
            raise ValueError("variance_share must be in (0, 1]")
        x = _as_matrix(reference)
        n, d = x.shape
        if n < 2 or d < 1:
            raise ValueError("need at least 2 rows and 1 feature to fit")
        present = ~np.isnan(x)
        col_n = present.sum(axis=0)
        mean = np.divide(np.where(present, x, 0.0).sum(axis=0), col_n, out=np.zeros(d), where=col_n > 0)
        z = np.where(present, x - mean, 0.0)
        var = np.divide((z * z).sum(axis=0), col_n, out=np.zeros(d), where=col_n > 0)
        std = np.sqrt(var)
        scale = np.where(std > 0, std, 1.0)
        z /= scale
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        power = s * s
        total = power.sum()
        if total > 0:
            ratio = power / total
            k = int(np.searchsorted(np.cumsum(ratio), variance_share - 1e-12) + 1)
            k = min(k, ratio.size, d - 1)
        else:  # every column constant: nothing to project on
            ratio = np.zeros_like(power)
            k = 0
        model = cls(mean=mean, scale=scale, components=vt[:k].copy(),
                    explained_variance_ratio=ratio[:k].copy(), ref_error_mean=0.0,
                    ref_error_std=0.0, variance_share=float(variance_share))
        err = model.reconstruction_error(x)
        object.__setattr__(model, "ref_error_mean", float(err.mean()))
        object.__setattr__(model, "ref_error_std", float(err.std()))
        return model

    def reconstruction_error(self, x: np.ndarray) -> np.ndarray:
        """Per-row mean squared reconstruction error in standardised units.

        ``mean_j (z - z V^T V)_j**2`` with ``z = (x - mean) / scale`` (NaN -> 0,
        i.e. reference-mean imputation) and V the kept components.
        """
        a = _as_matrix(x, self.n_features)
        z = (a - self.mean) / self.scale
        z[np.isnan(z)] = 0.0
        resid = z - (z @ self.components.T) @ self.components
        return np.mean(resid * resid, axis=1)

    def drift_score(self, x: np.ndarray) -> float:
        """Mean reconstruction error of ``x`` divided by the reference mean error.

        About 1 without drift (exactly 1 on the reference rows; fresh rows from
        the same distribution score slightly above, by in-sample optimism of
        order k/n). If the reference error is 0 (the kept components span the
        data), returns 1.0 while ``x`` is also reconstructed exactly, else inf.
        NaN for no rows.
        """
        err = self.reconstruction_error(x)
        if err.size == 0:
            return math.nan
        m = float(err.mean())
        if self.ref_error_mean > 0:
            return m / self.ref_error_mean
        return 1.0 if m <= 1e-24 else math.inf

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of floats and lists, for a JSON reference profile."""
        return {
            "version": _FORMAT_VERSION,
            "variance_share": self.variance_share,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "components": self.components.tolist(),
            "explained_variance_ratio": self.explained_variance_ratio.tolist(),
            "ref_error_mean": self.ref_error_mean,
            "ref_error_std": self.ref_error_std,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PCAModel:
        """Inverse of ``to_dict``; validates shapes."""
        if data.get("version", _FORMAT_VERSION) != _FORMAT_VERSION:
            raise ValueError(f"unsupported PCAModel format version {data.get('version')!r}")
        mean = np.asarray(data["mean"], dtype=np.float64).ravel()
        scale = np.asarray(data["scale"], dtype=np.float64).ravel()
        d = mean.size
        components = np.asarray(data["components"], dtype=np.float64).reshape(-1, d)
        ratio = np.asarray(data.get("explained_variance_ratio", []), dtype=np.float64).ravel()
        if scale.size != d or ratio.size not in (0, components.shape[0]):
            raise ValueError("inconsistent PCAModel dict: mean/scale/components sizes differ")
        if ratio.size == 0:
            ratio = np.full(components.shape[0], np.nan)
        return cls(mean=mean, scale=scale, components=components, explained_variance_ratio=ratio,
                   ref_error_mean=float(data["ref_error_mean"]), ref_error_std=float(data["ref_error_std"]),
                   variance_share=float(data.get("variance_share", 0.95)))
