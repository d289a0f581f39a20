"""Per-event outlier scores: robust z-scores per feature and the Mahalanobis distance.

``MahalanobisModel.fit`` standardises a reference matrix (mean/std per column), estimates the
covariance of the standardised rows (the correlation matrix, missing values imputed with the
mean, i.e. 0) and keeps a whitening matrix ``W`` with ``|W z|^2 = z^T C^-1 z``. Eigenvalues
below ``eigen_floor`` (relative to the mean eigenvalue, which is 1 after standardising) are
raised to it, so collinear features (x and 2x) do not make the inverse explode.
``calibrate_threshold`` turns the reference's own scores into the threshold with a given
false-positive rate. docs/design.md says why Mahalanobis and not PCA reconstruction error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): MAD * this estimates sigma for normal data
IQR_TO_SIGMA = 1.0 / 1.3489795003921634  # (p75 - p25) / 1.349 estimates sigma for normal data
DEFAULT_EIGEN_FLOOR = 1e-3


def robust_scale(mad: float, iqr: float = math.nan, std: float = math.nan) -> float:
    """A positive sigma estimate: 1.4826 MAD, else IQR / 1.349, else std, else 1."""
    for value in (mad * MAD_TO_SIGMA, iqr * IQR_TO_SIGMA, std):
        if math.isfinite(value) and value > 0:
            return float(value)
    return 1.0


def median_abs_deviation(values: np.ndarray) -> float:
    """Unscaled MAD of the non-NaN values (``scipy.stats.median_abs_deviation`` with scale=1)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan
    return float(np.median(np.abs(x - np.median(x))))


def robust_z(x: np.ndarray, median: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(x - median) / scale, elementwise and broadcast over rows (rows x features)."""
    return (np.asarray(x, dtype=np.float64) - median) / scale


def calibrate_threshold(scores: np.ndarray, fpr: float) -> float:
    """The smallest threshold t with share(scores > t) <= fpr: the (floor(fpr n) + 1)-th largest score.

    With ``fpr * n < 1`` it is the largest reference score (the rate cannot be resolved finer
    than 1/n). NaN scores are ignored; no scores gives NaN.
    """
    if not 0.0 < fpr < 1.0:
        raise ValueError("fpr must be between 0 and 1")
    s = np.asarray(scores, dtype=np.float64)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return math.nan
    k = int(math.floor(fpr * s.size + 1e-9))
    k = min(k, s.size - 1)
    return float(np.partition(s, s.size - 1 - k)[s.size - 1 - k])


@dataclass(frozen=True)
class MahalanobisModel:
    """Squared Mahalanobis distance of standardised rows: ``|W ((x - mean) / scale)|^2``.

    ``whitening`` is (d x d); ``reference_tail`` holds the largest reference scores in
    descending order, so a threshold can be calibrated at load time for any false-positive
    rate from 1/``reference_n`` to ``len(reference_tail) / reference_n``.
    """

    mean: np.ndarray
    scale: np.ndarray
    whitening: np.ndarray
    reference_n: int
    reference_tail: np.ndarray
    eigen_floor: float = DEFAULT_EIGEN_FLOOR

    @property
    def n_features(self) -> int:
        return int(self.mean.size)

    @classmethod
    def fit(cls, reference: np.ndarray, *, eigen_floor: float = DEFAULT_EIGEN_FLOOR,
            tail_share: float = 0.05) -> MahalanobisModel:
        x = np.asarray(reference, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise ValueError("need a (rows x features) matrix with at least 2 rows and 1 feature")
        x = np.where(np.isfinite(x), x, np.nan)
        present = ~np.isnan(x)
        col_n = present.sum(axis=0)
        d = x.shape[1]
        mean = np.divide(np.where(present, x, 0.0).sum(axis=0), col_n, out=np.zeros(d), where=col_n > 0)
        z = np.where(present, x - mean, 0.0)
        std = np.sqrt(np.divide((z * z).sum(axis=0), col_n, out=np.zeros(d), where=col_n > 0))
        scale = np.where(std > 0, std, 1.0)
        z /= scale
        cov = (z.T @ z) / x.shape[0]
        eigval, eigvec = np.linalg.eigh((cov + cov.T) / 2.0)
        floor = eigen_floor * max(float(np.mean(eigval)), 1e-12)
        eigval = np.maximum(eigval, floor)
        whitening = (eigvec / np.sqrt(eigval)).T  # rows: principal axes scaled by 1/sqrt(lambda)
        model = cls(mean, scale, whitening, 0, np.empty(0), eigen_floor)
        scores = model.score_standardized(z)
        keep = max(1, int(math.ceil(tail_share * scores.size)) + 1)
        tail = np.sort(scores)[::-1][:keep].copy()
        return cls(mean, scale, whitening, int(scores.size), tail, eigen_floor)

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / scale with non-finite values (missing, NaN, inf) as 0: the mean."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        z[~np.isfinite(z)] = 0.0
        return z

    def score_standardized(self, z: np.ndarray) -> np.ndarray:
        w = z @ self.whitening.T
        return np.einsum("ij,ij->i", w, w)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of ``x`` (rows x features)."""
        return self.score_standardized(self.standardize(np.atleast_2d(x)))

    def precision(self) -> np.ndarray:
        """The inverse covariance (of standardised features) the score uses: W^T W."""
        return self.whitening.T @ self.whitening

    def contributions(self, z: np.ndarray) -> np.ndarray:
        """Per-feature terms z_j (P z)_j of each row's score (they sum to the score)."""
        return z * (z @ self.precision())

    def threshold(self, fpr: float) -> float:
        """The calibrated threshold from the stored reference tail (``calibrate_threshold``'s rule)."""
        if not 0.0 < fpr < 1.0:
            raise ValueError("fpr must be between 0 and 1")
        k = int(math.floor(fpr * self.reference_n + 1e-9))
        k = min(k, self.reference_tail.size - 1, max(self.reference_n - 1, 0))
        return float(self.reference_tail[k]) if self.reference_tail.size else math.nan

    def resolvable(self, fpr: float) -> bool:
        """Whether the stored reference can calibrate ``fpr`` (1/n <= fpr <= tail share)."""
        k = int(math.floor(fpr * self.reference_n + 1e-9))
        return 1 <= k < self.reference_tail.size

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "whitening": self.whitening.ravel().tolist(), "reference_n": self.reference_n,
                "reference_tail": self.reference_tail.tolist(), "eigen_floor": self.eigen_floor}

    @classmethod
    def from_dict(cls, data: dict) -> MahalanobisModel:
        mean = np.asarray(data["mean"], dtype=np.float64)
        d = mean.size
        whitening = np.asarray(data["whitening"], dtype=np.float64)
        if whitening.size != d * d:
            raise ValueError(f"whitening has {whitening.size} values for {d} features")
        return cls(mean, np.asarray(data["scale"], dtype=np.float64), whitening.reshape(d, d),
                   int(data["reference_n"]), np.asarray(data["reference_tail"], dtype=np.float64),
                   float(data.get("eigen_floor", DEFAULT_EIGEN_FLOOR)))

    @classmethod
    def from_correlation(cls, mean: np.ndarray, scale: np.ndarray, correlation: np.ndarray, *,
                         eigen_floor: float = DEFAULT_EIGEN_FLOOR) -> MahalanobisModel:
        """From a correlation matrix alone (a version 1 profile): no reference scores to calibrate on."""
        corr = np.where(np.isfinite(correlation), correlation, 0.0)
        np.fill_diagonal(corr, 1.0)
        eigval, eigvec = np.linalg.eigh((corr + corr.T) / 2.0)
        eigval = np.maximum(eigval, eigen_floor * max(float(np.mean(eigval)), 1e-12))
        return cls(np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64),
                   (eigvec / np.sqrt(eigval)).T, 0, np.empty(0), eigen_floor)


__all__ = ["MahalanobisModel", "calibrate_threshold", "median_abs_deviation", "robust_scale", "robust_z",
           "MAD_TO_SIGMA", "IQR_TO_SIGMA"]
