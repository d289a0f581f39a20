"""What the guard checks against: the features, their kinds, ranges, categories and outlier model.

Built once per reference profile (or from ``payload.features`` when there is none) and read-only
afterwards, so the checks of a batch can share it with the collector without a lock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferwatch.config import FeatureSpec, GuardConfig
from inferwatch.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from inferwatch.stats.outlier import MahalanobisModel, robust_scale
from inferwatch.stats.quality import outlier_threshold, widened_range


@dataclass
class Schema:
    """The schema features with what is known of each; see ``from_profile``."""

    source: str  # "profile", "config" or "none"
    names: list[str]
    kinds: list[str]  # numeric, categorical or auto (declared without a type: presence only)
    lo: np.ndarray = field(default_factory=lambda: np.empty(0))  # per numeric feature
    hi: np.ndarray = field(default_factory=lambda: np.empty(0))
    categories: dict[str, dict[str, int]] = field(default_factory=dict)  # complete reference categories -> code
    outlier: MahalanobisModel | None = None
    outlier_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))  # into `numeric`
    threshold: float = math.nan
    threshold_resolved: bool = False
    median: np.ndarray = field(default_factory=lambda: np.empty(0))  # per outlier feature
    robust: np.ndarray = field(default_factory=lambda: np.empty(0))
    reference_hash: str = ""

    def __post_init__(self) -> None:
        self.index = {n: i for i, n in enumerate(self.names)}
        self.numeric = [n for n, k in zip(self.names, self.kinds) if k == "numeric"]
        self.categorical = [n for n, k in zip(self.names, self.kinds) if k == "categorical"]
        self.other = [n for n, k in zip(self.names, self.kinds) if k not in ("numeric", "categorical")]
        self.numeric_index = np.array([self.index[n] for n in self.numeric], dtype=np.intp)
        if self.lo.size != len(self.numeric):
            self.lo = np.full(len(self.numeric), -np.inf)
            self.hi = np.full(len(self.numeric), np.inf)

    @classmethod
    def none(cls) -> Schema:
        return cls("none", [], [])

    @classmethod
    def from_config(cls, specs: Sequence[FeatureSpec]) -> Schema:
        kinds: list[str] = [s.type for s in specs]
        return cls("config", [s.name for s in specs], kinds)

    @classmethod
    def from_profile(cls, profile: ReferenceProfile, cfg: GuardConfig) -> Schema:
        """Numeric features get the reference range widened by ``guard.range_tolerance``;
        categorical ones their categories when the profile holds all of them (no "other" bin),
        so that an unseen category can be told apart from one outside the profile's top-K."""
        names = list(profile.features)
        kinds: list[str] = [profile.features[n].kind for n in names]
        numeric = [col for col in profile.features.values() if isinstance(col, NumericProfile)]
        lo, hi = widened_range(np.array([c.statistics.get("min", math.nan) for c in numeric], dtype=np.float64),
                               np.array([c.statistics.get("max", math.nan) for c in numeric], dtype=np.float64),
                               cfg.range_tolerance)
        categories = {}
        for name in names:
            col = profile.features[name]
            if isinstance(col, CategoricalProfile) and col.bin_counts.size and col.bin_counts[-1] == 0 \
                    and col.count > 0:
                categories[name] = {c: i for i, c in enumerate(col.categories)}
        schema = cls("profile", names, kinds, lo, hi, categories, reference_hash=profile.hash)
        if cfg.outliers:
            schema._prepare_outliers(profile, cfg.outlier_fpr)
        return schema

    def _prepare_outliers(self, profile: ReferenceProfile, fpr: float) -> None:
        model, feats = profile.outlier, profile.outlier_features
        if model is None and profile.correlation is not None and profile.correlation_features:
            # A version 1 profile: the correlation matrix and moments, but no reference scores.
            feats = profile.correlation_features
            moments = [profile.features[n].statistics for n in feats]
            model = MahalanobisModel.from_correlation(
                np.array([m.get("mean", 0.0) for m in moments]),
                np.array([m.get("std", 1.0) if m.get("std", 0.0) > 0 else 1.0 for m in moments]),
                profile.correlation)
        feats = [n for n in feats if n in self.numeric]
        if model is None or not feats or len(feats) != model.n_features:
            return
        pos = {n: i for i, n in enumerate(self.numeric)}
        self.outlier = model
        self.outlier_rows = np.array([pos[n] for n in feats], dtype=np.intp)
        self.threshold, self.threshold_resolved = outlier_threshold(model, fpr)
        median, robust = [], []
        for name in feats:
            s = profile.features[name].statistics
            median.append(s.get("p50", s.get("mean", 0.0)))
            robust.append(robust_scale(s.get("mad", math.nan), s.get("p75", math.nan) - s.get("p25", math.nan),
                                       s.get("std", math.nan)))
        self.median = np.array(median, dtype=np.float64)
        self.robust = np.array(robust, dtype=np.float64)

    @property
    def outlier_names(self) -> list[str]:
        return [self.numeric[i] for i in self.outlier_rows]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "features": list(self.names),
                               "numeric": len(self.numeric), "categorical": len(self.categorical),
                               "categories_checked": sorted(self.categories)}
        if self.reference_hash:
            out["reference_hash"] = self.reference_hash
        if self.outlier is not None:
            out["outliers"] = {"method": "mahalanobis", "features": self.outlier_names,
                               "threshold": self.threshold, "calibrated_on_reference": self.threshold_resolved,
                               "reference_rows": self.outlier.reference_n}
        return out
