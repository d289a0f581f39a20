"""A reference profile prepared for evaluation: what every evaluation would otherwise redo."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inferwatch.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from inferwatch.stats.vectorised import pca_complement


@dataclass
class PreparedNumeric:
    """A numeric column of the reference: its bin counts, sorted sample and std."""

    name: str
    profile: NumericProfile
    counts: np.ndarray
    sample: np.ndarray
    std: float


@dataclass
class PreparedCategorical:
    """A categorical column of the reference: its bin counts (top-K + other) and category -> bin."""

    name: str
    profile: CategoricalProfile
    counts: np.ndarray
    index: dict[str, int]


@dataclass
class PreparedReference:
    """A profile with what every evaluation needs precomputed (stacked samples, PCA complement)."""

    profile: ReferenceProfile
    numeric: dict[str, dict[str, PreparedNumeric]]  # role -> name -> ref
    categorical: dict[str, dict[str, PreparedCategorical]]
    pca_complement: np.ndarray | None = None  # orthonormal basis of the residual subspace

    @classmethod
    def build(cls, profile: ReferenceProfile) -> PreparedReference:
        numeric: dict[str, dict[str, PreparedNumeric]] = {"feature": {}, "output": {}}
        categorical: dict[str, dict[str, PreparedCategorical]] = {"feature": {}, "output": {}}
        for role, group in (("feature", profile.features), ("output", profile.outputs)):
            for name, col in group.items():
                if isinstance(col, NumericProfile):
                    std = col.statistics.get("std", math.nan)
                    if not math.isfinite(std):
                        std = float(col.sample.std()) if col.sample.size else math.nan
                    numeric[role][name] = PreparedNumeric(name, col, col.bin_counts, col.sample, std)
                else:
                    categorical[role][name] = PreparedCategorical(name, col, col.bin_counts, col.index())
        complement = pca_complement(profile.pca) if profile.pca is not None else None
        return cls(profile, numeric, categorical, complement)
