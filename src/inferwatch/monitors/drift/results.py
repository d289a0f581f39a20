"""What one drift evaluation found: per column and per model version (or segment value)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Evidence:
    """One statistic on one view of a column that the drift rule decides on (``Evaluator._decide``).

    ``view`` says which rows or which statistic: ``full`` (the whole window), ``recent`` (the
    window's most recent events); ``effect`` is the share of probability mass that moved (KS D,
    total variation), compared with ``min_effect``; ``alpha`` the level before correction.
    """

    view: str
    method: str
    p_value: float
    effect: float
    min_effect: float
    alpha: float
    drifted: bool = False


@dataclass
class ColumnResult:
    name: str
    kind: str
    n: int
    scores: dict[str, float] = field(default_factory=dict)
    p_values: dict[str, float] = field(default_factory=dict)
    method: str = ""
    threshold: float = math.nan
    drifted: bool = False
    statistics: dict[str, float] = field(default_factory=dict)
    # What the drift rule decided on (empty for distance decisions and disabled columns).
    evidence: list[Evidence] = field(default_factory=list)


@dataclass
class VersionResult:
    version: str
    events: int
    timestamp: float
    duration: float = 0.0
    features: list[ColumnResult] = field(default_factory=list)
    outputs: list[ColumnResult] = field(default_factory=list)
    drifted_ratio: float = math.nan
    dataset_drifted: bool = False
    multivariate: float = math.nan
    correlation: float = math.nan
    # The multivariate decisions: each score against the reference's threshold for a window of
    # this size (format 4's multivariate_thresholds; NaN and no entry without one).
    multivariate_thresholds: dict[str, float] = field(default_factory=dict)  # method -> threshold
    multivariate_drifted: dict[str, bool] = field(default_factory=dict)  # pca_reconstruction, correlation

    def summary(self) -> dict[str, Any]:
        """The result as /v1/status reports it (JSON: NaN and infinities as null)."""
        return {"timestamp": self.timestamp, "duration_seconds": round(self.duration, 6), "events": self.events,
                "features_evaluated": len(self.features),
                "drifted_features": sorted(c.name for c in self.features if c.drifted),
                "drifted_features_ratio": _json_float(self.drifted_ratio), "dataset_drifted": self.dataset_drifted,
                "drifted_outputs": sorted(c.name for c in self.outputs if c.drifted),
                "multivariate_drift_score": _json_float(self.multivariate),
                "correlation_drift_score": _json_float(self.correlation),
                "multivariate_decisions": {m: {"drifted": d, "threshold": _json_float(self.multivariate_thresholds[m])}
                                           for m, d in self.multivariate_drifted.items()}}


def _json_float(v: float) -> float | None:
    return v if isinstance(v, float) and math.isfinite(v) else None
