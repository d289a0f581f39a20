"""The reference profile's file format: the dataclasses and their versioned, hashed JSON.

A profile holds, per numeric column: quantile bin edges with open-ended first and last bins,
the reference count in each bin, mean/std/min/max/quantiles/missing ratio and a bounded sorted
sample (for the exact-sample tests KS and Wasserstein); per categorical column: the counts of
the top-K categories plus ``other``, and the cardinality; across the numeric features: the
correlation matrix and a PCA fit, and the input guard's Mahalanobis outlier model. Model
outputs and the label are profiled the same way; when the label is binary, each score output
gets a calibration map fitted on the reference (the ``calibration`` section), so performance
estimated without labels survives uncalibrated scores. The format is JSON, versioned and
content-hashed; docs/reference-profile.md documents it. ``builder`` makes profiles, ``readers``
makes them from files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inferwatch.exposition.metrics import OTHER  # the bucket of categories outside the top-K
from inferwatch.ingest.values import Kind
from inferwatch.stats import MahalanobisModel, PCAModel
from inferwatch.stats.calibration import CalibrationMap
from inferwatch.stats.seen import SeenValues

FORMAT = "inferwatch-reference-profile"
FORMAT_VERSION = 4
# Version 2 added, compatibly, the numeric statistic ``mad`` and the ``outlier`` section (the input
# guard's Mahalanobis model with its reference score tail); version 3, the ``calibration`` section
# (score -> probability maps for CBPE); version 4, the ``seen`` section (every category a
# categorical column held: exact, or a Bloom filter) and the ``multivariate_thresholds`` section
# (PCA and correlation drift thresholds by window size, resampled from the reference). Older files
# are still read: no calibration, so estimates from them are uncalibrated, no seen-value sets, so
# new categories count only where the top-K held every category, and no multivariate thresholds,
# so those scores are published but decide nothing, as before.
READABLE_VERSIONS = (1, 2, 3, 4)
CALIBRATION_VERSION = 1  # of the calibration section's own layout
SEEN_VERSION = 1  # of the seen section's own layout
MULTIVARIATE_THRESHOLDS_VERSION = 1
SAMPLE_ENCODING = "base64-float64-le"
Role = Literal["feature", "output", "label"]


@dataclass
class NumericProfile:
    name: str
    count: int  # present (non-missing) values
    missing: int
    edges: np.ndarray  # inner edges; bins (-inf, e1], (e1, e2], ..., (ek, +inf)
    bin_counts: np.ndarray
    statistics: dict[str, float]
    sample: np.ndarray  # sorted, at most sample_size values
    kind: Kind = "numeric"

    @property
    def n_bins(self) -> int:
        return int(self.edges.size + 1)

    @property
    def proportions(self) -> np.ndarray:
        total = self.bin_counts.sum()
        return self.bin_counts / total if total > 0 else np.full(self.n_bins, np.nan)

    def bin_labels(self) -> list[str]:
        return [str(i) for i in range(self.n_bins)]


@dataclass
class CategoricalProfile:
    name: str
    count: int
    missing: int
    categories: list[str]  # the top-K, most frequent first; bin i is categories[i], the last bin OTHER
    bin_counts: np.ndarray  # len(categories) + 1
    cardinality: int
    cardinality_estimated: bool
    statistics: dict[str, float]
    kind: Kind = "categorical"
    # Format 4: every key the column held (None: an older profile), and the chance that a value
    # drawn like the reference is one it never held (Good-Turing; docs/drift.md#new-categories).
    seen: SeenValues | None = None
    expected_unseen: float = math.nan

    @property
    def n_bins(self) -> int:
        return len(self.categories) + 1

    @property
    def proportions(self) -> np.ndarray:
        total = self.bin_counts.sum()
        return self.bin_counts / total if total > 0 else np.full(self.n_bins, np.nan)

    def bin_labels(self) -> list[str]:
        return [*self.categories, OTHER]

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.categories)}


ColumnProfile = NumericProfile | CategoricalProfile


@dataclass
class MultivariateThresholds:
    """The ``multivariate_thresholds`` section: for each window size, the upper ``quantile`` of the
    PCA reconstruction-error ratio and of the correlation drift in stationary windows of that
    size, resampled from the reference at profile time (``stats.resampling``)."""

    quantile: float
    draws: int
    window_events: list[int]
    pca_reconstruction: list[float]  # NaN where the profile has no PCA
    correlation: list[float]

    def threshold(self, method: str, events: int) -> float:
        """The threshold of the largest stored window size not above ``events`` (thresholds fall
        as windows grow, so this errs toward fewer alarms); NaN below the smallest size."""
        values = self.pca_reconstruction if method == "pca_reconstruction" else self.correlation
        at = int(np.searchsorted(np.asarray(self.window_events), events, side="right")) - 1
        return float(values[at]) if at >= 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"version": MULTIVARIATE_THRESHOLDS_VERSION, "quantile": self.quantile, "draws": self.draws,
                "window_events": [int(n) for n in self.window_events],
                "pca_reconstruction": _floats(np.asarray(self.pca_reconstruction)),
                "correlation": _floats(np.asarray(self.correlation))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MultivariateThresholds:
        if data.get("version") != MULTIVARIATE_THRESHOLDS_VERSION:
            raise ValueError(f"unsupported multivariate_thresholds section version {data.get('version')!r}")
        sizes = [int(n) for n in data["window_events"]]
        pca, corr = _array(data["pca_reconstruction"]).tolist(), _array(data["correlation"]).tolist()
        if not (len(pca) == len(corr) == len(sizes)) or sizes != sorted(sizes):
            raise ValueError("multivariate_thresholds: window_events must be ascending, one threshold each")
        return cls(float(data["quantile"]), int(data["draws"]), sizes, pca, corr)


@dataclass
class ScoreCalibration:
    """The ``calibration`` section: a map per score output (by its output name), fitted on the
    reference rows against ``label == positive_class`` (a category key)."""

    label: str
    positive_class: str
    maps: dict[str, CalibrationMap] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": CALIBRATION_VERSION, "label": self.label, "positive_class": self.positive_class,
                "outputs": {name: m.to_dict() for name, m in self.maps.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreCalibration:
        if data.get("version") != CALIBRATION_VERSION:
            raise ValueError(f"unsupported calibration section version {data.get('version')!r} "
                             f"(this inferwatch reads version {CALIBRATION_VERSION})")
        maps = {}
        for name, m in dict(data.get("outputs", {})).items():
            try:
                maps[str(name)] = CalibrationMap.from_dict(m)
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"calibration of output {name!r}: {e}") from None
        return cls(str(data["label"]), str(data["positive_class"]), maps)


@dataclass
class ReferenceProfile:
    features: dict[str, ColumnProfile] = field(default_factory=dict)
    outputs: dict[str, ColumnProfile] = field(default_factory=dict)
    label: dict[str, ColumnProfile] = field(default_factory=dict)  # at most one
    correlation_features: list[str] = field(default_factory=list)
    correlation: np.ndarray | None = None
    pca_features: list[str] = field(default_factory=list)
    pca: PCAModel | None = None
    outlier_features: list[str] = field(default_factory=list)
    outlier: MahalanobisModel | None = None
    calibration: ScoreCalibration | None = None  # None: estimates from this profile are uncalibrated
    multivariate_thresholds: MultivariateThresholds | None = None  # None: multivariate drift decides nothing
    rows: int = 0
    version: int = FORMAT_VERSION  # of the file it was read from (a built profile is the current one)
    source: str = ""
    created_at: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    hash: str = ""

    def group(self, role: Role) -> dict[str, ColumnProfile]:
        return {"feature": self.features, "output": self.outputs, "label": self.label}[role]

    # --- serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "created_at": self.created_at,
            "source": self.source,
            "rows": self.rows,
            "settings": self.settings,
            "features": {n: _column_to_dict(c) for n, c in self.features.items()},
            "outputs": {n: _column_to_dict(c) for n, c in self.outputs.items()},
            "label": {n: _column_to_dict(c) for n, c in self.label.items()},
            "correlation": None if self.correlation is None else {
                "features": list(self.correlation_features), "matrix": _floats(self.correlation)},
            "pca": None if self.pca is None else {"features": list(self.pca_features), **self.pca.to_dict()},
            "outlier": None if self.outlier is None else {"method": "mahalanobis",
                                                          "features": list(self.outlier_features),
                                                          **self.outlier.to_dict()},
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "seen": self._seen_to_dict(),
            "multivariate_thresholds": None if self.multivariate_thresholds is None
            else self.multivariate_thresholds.to_dict(),
        }
        data["hash"] = content_hash(data)
        return data

    def _seen_to_dict(self) -> dict[str, Any] | None:
        groups = {role: {n: {**c.seen.to_dict(), "expected_unseen_rate": _floats(np.array([c.expected_unseen]))[0]}
                         for n, c in group.items() if isinstance(c, CategoricalProfile) and c.seen is not None}
                  for role, group in (("features", self.features), ("outputs", self.outputs), ("label", self.label))}
        if not any(groups.values()):
            return None
        return {"version": SEEN_VERSION, **groups}

    def _seen_from_dict(self, data: dict[str, Any] | None) -> None:
        if not data:
            return
        if data.get("version") != SEEN_VERSION:
            raise ValueError(f"unsupported seen section version {data.get('version')!r}")
        for role, group in (("features", self.features), ("outputs", self.outputs), ("label", self.label)):
            for name, entry in dict(data.get(role, {})).items():
                col = group.get(name)
                if not isinstance(col, CategoricalProfile):
                    raise ValueError(f"seen section: {role} {name!r} is not a categorical column of the profile")
                try:
                    col.seen = SeenValues.from_dict(entry)
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"seen section, column {name!r}: {e}") from None
                rate = entry.get("expected_unseen_rate")
                col.expected_unseen = math.nan if rate is None else float(rate)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, verify: bool = True) -> ReferenceProfile:
        if data.get("format") != FORMAT:
            raise ValueError(f"not an inferwatch reference profile (format {data.get('format')!r})")
        if data.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"unsupported reference profile version {data.get('version')!r} "
                             f"(this inferwatch reads versions {', '.join(map(str, READABLE_VERSIONS))})")
        expected = content_hash(data)
        if verify and data.get("hash") != expected:
            raise ValueError(f"reference profile hash mismatch: file says {data.get('hash')!r}, content is "
                             f"{expected!r} (edited or truncated?)")
        corr = data.get("correlation")
        pca = data.get("pca")
        outlier = data.get("outlier")
        calibration = data.get("calibration")
        if outlier and outlier.get("method") != "mahalanobis":
            raise ValueError(f"unknown outlier method {outlier.get('method')!r} in the reference profile")
        thresholds = data.get("multivariate_thresholds")
        profile = cls(
            features={n: _column_from_dict(n, c) for n, c in data.get("features", {}).items()},
            outputs={n: _column_from_dict(n, c) for n, c in data.get("outputs", {}).items()},
            label={n: _column_from_dict(n, c) for n, c in data.get("label", {}).items()},
            correlation_features=list(corr["features"]) if corr else [],
            correlation=_array(corr["matrix"]).reshape(len(corr["features"]), -1) if corr else None,
            pca_features=list(pca["features"]) if pca else [],
            pca=PCAModel.from_dict({k: v for k, v in pca.items() if k != "features"}) if pca else None,
            outlier_features=list(outlier["features"]) if outlier else [],
            outlier=MahalanobisModel.from_dict(outlier) if outlier else None,
            calibration=ScoreCalibration.from_dict(calibration) if calibration else None,
            multivariate_thresholds=MultivariateThresholds.from_dict(thresholds) if thresholds else None,
            version=int(data["version"]),
            rows=int(data.get("rows", 0)),
            source=str(data.get("source", "")),
            created_at=str(data.get("created_at", "")),
            settings=dict(data.get("settings", {})),
            hash=expected,
        )
        profile._seen_from_dict(data.get("seen"))
        return profile

    def save(self, path: str | os.PathLike[str]) -> str:
        data = self.to_dict()
        self.hash = data["hash"]
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(json.dumps(data, allow_nan=False, separators=(",", ":")) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return self.hash

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceProfile:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return cls.from_dict(data)

    def memory_bytes(self) -> int:
        total = 0
        for group in (self.features, self.outputs, self.label):
            for col in group.values():
                total += col.bin_counts.nbytes
                if isinstance(col, NumericProfile):
                    total += col.sample.nbytes + col.edges.nbytes
        if self.correlation is not None:
            total += self.correlation.nbytes
        if self.pca is not None:
            total += self.pca.components.nbytes + self.pca.mean.nbytes * 2
        if self.outlier is not None:
            total += self.outlier.whitening.nbytes + self.outlier.reference_tail.nbytes + self.outlier.mean.nbytes * 2
        if self.calibration is not None:
            total += sum(m.knots_x.nbytes + m.knots_y.nbytes for m in self.calibration.maps.values())
        for group in (self.features, self.outputs, self.label):
            total += sum(c.seen.memory_bytes() for c in group.values()
                         if isinstance(c, CategoricalProfile) and c.seen is not None)
        return int(total)

    def describe(self) -> str:
        def kinds(group: dict[str, ColumnProfile]) -> str:
            n = sum(1 for c in group.values() if c.kind == "numeric")
            return f"{len(group)} ({n} numeric, {len(group) - n} categorical)"

        calibrated = ", ".join(f"{n} ({m.method})" for n, m in self.calibration.maps.items()) \
            if self.calibration is not None else ""
        return (f"{self.rows} rows; features {kinds(self.features)}; outputs {kinds(self.outputs)}; "
                f"label {', '.join(self.label) or 'none'}; calibrated scores {calibrated or 'none'}; "
                f"hash {self.hash[:12]}")


def _floats(a: np.ndarray) -> list:
    """A float array as JSON numbers, NaN/inf as null (JSON has no NaN)."""
    return [None if not math.isfinite(v) else v for v in np.asarray(a, dtype=np.float64).ravel().tolist()]


def _array(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _stats_to_json(stats: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in stats.items()}


def _stats_from_json(stats: dict[str, Any]) -> dict[str, float]:
    return {k: (math.nan if v is None else float(v)) for k, v in stats.items()}


def encode_sample(sample: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(sample, dtype="<f8").tobytes()).decode("ascii")


def decode_sample(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8").astype(np.float64)


def _column_to_dict(col: ColumnProfile) -> dict[str, Any]:
    common = {"type": col.kind, "count": int(col.count), "missing": int(col.missing),
              "bin_counts": [int(c) for c in col.bin_counts], "statistics": _stats_to_json(col.statistics)}
    if isinstance(col, NumericProfile):
        return {**common, "edges": _floats(col.edges),
                "sample": {"size": int(col.sample.size), "encoding": SAMPLE_ENCODING, "data": encode_sample(col.sample)}}
    return {**common, "categories": list(col.categories), "cardinality": int(col.cardinality),
            "cardinality_estimated": bool(col.cardinality_estimated)}


def _column_from_dict(name: str, data: dict[str, Any]) -> ColumnProfile:
    counts = np.asarray(data["bin_counts"], dtype=np.int64)
    stats = _stats_from_json(data.get("statistics", {}))
    if data["type"] == "numeric":
        sample = data["sample"]
        if sample.get("encoding") != SAMPLE_ENCODING:
            raise ValueError(f"column {name!r}: unknown sample encoding {sample.get('encoding')!r}")
        edges = _array(data["edges"])
        if counts.size != edges.size + 1:
            raise ValueError(f"column {name!r}: {counts.size} bin counts for {edges.size} edges")
        return NumericProfile(name, int(data["count"]), int(data["missing"]), edges, counts, stats,
                              decode_sample(sample["data"]))
    if data["type"] == "categorical":
        categories = [str(c) for c in data["categories"]]
        if counts.size != len(categories) + 1:
            raise ValueError(f"column {name!r}: {counts.size} bin counts for {len(categories)} categories + other")
        return CategoricalProfile(name, int(data["count"]), int(data["missing"]), categories, counts,
                                  int(data["cardinality"]), bool(data.get("cardinality_estimated", False)), stats)
    raise ValueError(f"column {name!r}: unknown type {data['type']!r}")


def content_hash(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything but ``hash`` and ``created_at``."""
    body = {k: v for k, v in data.items() if k not in ("hash", "created_at")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()

