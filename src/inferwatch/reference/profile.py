"""Reference profiles: what the training (or validation) data looked like, computed once.

A profile holds, per numeric column: quantile bin edges with open-ended first and last bins,
the reference count in each bin, mean/std/min/max/quantiles/missing ratio and a bounded sorted
sample (for the exact-sample tests KS and Wasserstein); per categorical column: the counts of
the top-K categories plus ``other``, and the cardinality; across the numeric features: the
correlation matrix and a PCA fit. Model outputs and the label are profiled the same way.
The format is JSON, versioned and content-hashed; docs/reference-profile.md documents it.

Building streams: ``ProfileBuilder.observe`` takes chunks of columns and keeps bounded state
(running moments, a uniform row sample of ``sample_size`` rows kept by smallest random keys,
capped category counters, a KMV distinct-count sketch), then ``freeze`` fixes the bin edges
from the sample and, when the input had more rows than the sample, ``count_bins`` over a second
pass gives exact reference bin counts. ``iter_file_chunks`` reads CSV, JSON lines and Parquet
(with pyarrow) in chunks; ``build_profile_from_file`` ties them together for
``inferwatch profile``; ``build_profile`` does the same for in-memory columns (warm-up).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np

from inferwatch.exposition.metrics import OTHER  # the bucket of categories outside the top-K
from inferwatch.ingest.values import MISSING_TOKENS, Kind, category_key, infer_text_kind, to_float_array
from inferwatch.stats import (
    MahalanobisModel, PCAModel, correlation_matrix, entropy, median_abs_deviation, quantile_edges, summary_statistics,
)

FORMAT = "inferwatch-reference-profile"
FORMAT_VERSION = 2
# Version 2 added, compatibly, the numeric statistic ``mad`` and the ``outlier`` section (the input
# guard's Mahalanobis model with its reference score tail); version 1 files are still read.
READABLE_VERSIONS = (1, 2)
SAMPLE_ENCODING = "base64-float64-le"
Role = Literal["feature", "output", "label"]

DEFAULT_SAMPLE_SIZE = 10_000
DEFAULT_BINS = 10
DEFAULT_TOP_K = 20
_KMV_K = 4096  # distinct-count sketch: exact up to this many distinct values, ~1.6% error above
_COUNTER_CAP = 20_000  # categories counted per column before the rarest half is pruned


# --------------------------------------------------------------------------- the profile


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
        }
        data["hash"] = content_hash(data)
        return data

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
        if outlier and outlier.get("method") != "mahalanobis":
            raise ValueError(f"unknown outlier method {outlier.get('method')!r} in the reference profile")
        return cls(
            features={n: _column_from_dict(n, c) for n, c in data.get("features", {}).items()},
            outputs={n: _column_from_dict(n, c) for n, c in data.get("outputs", {}).items()},
            label={n: _column_from_dict(n, c) for n, c in data.get("label", {}).items()},
            correlation_features=list(corr["features"]) if corr else [],
            correlation=_array(corr["matrix"]).reshape(len(corr["features"]), -1) if corr else None,
            pca_features=list(pca["features"]) if pca else [],
            pca=PCAModel.from_dict({k: v for k, v in pca.items() if k != "features"}) if pca else None,
            outlier_features=list(outlier["features"]) if outlier else [],
            outlier=MahalanobisModel.from_dict(outlier) if outlier else None,
            version=int(data["version"]),
            rows=int(data.get("rows", 0)),
            source=str(data.get("source", "")),
            created_at=str(data.get("created_at", "")),
            settings=dict(data.get("settings", {})),
            hash=expected,
        )

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
                total += col.bin_counts.nbytes + (col.sample.nbytes + col.edges.nbytes if col.kind == "numeric" else 0)
        if self.correlation is not None:
            total += self.correlation.nbytes
        if self.pca is not None:
            total += self.pca.components.nbytes + self.pca.mean.nbytes * 2
        if self.outlier is not None:
            total += self.outlier.whitening.nbytes + self.outlier.reference_tail.nbytes + self.outlier.mean.nbytes * 2
        return int(total)

    def describe(self) -> str:
        def kinds(group: dict[str, ColumnProfile]) -> str:
            n = sum(1 for c in group.values() if c.kind == "numeric")
            return f"{len(group)} ({n} numeric, {len(group) - n} categorical)"

        return (f"{self.rows} rows; features {kinds(self.features)}; outputs {kinds(self.outputs)}; "
                f"label {', '.join(self.label) or 'none'}; hash {self.hash[:12]}")


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


# --------------------------------------------------------------------------- building


class _Moments:
    """Count, missing, mean, M2 (Chan et al.'s parallel update), min, max of one column."""

    __slots__ = ("n", "missing", "mean", "m2", "min", "max")

    def __init__(self) -> None:
        self.n, self.missing, self.mean, self.m2 = 0, 0, 0.0, 0.0
        self.min, self.max = math.inf, -math.inf

    def update(self, x: np.ndarray) -> None:
        present = x[~np.isnan(x)]
        self.missing += x.size - present.size
        if present.size == 0:
            return
        nb = present.size
        mb = float(present.mean())
        m2b = float(np.square(present - mb).sum()) if np.isfinite(mb) else math.nan
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.n = n
        self.min = min(self.min, float(present.min()))
        self.max = max(self.max, float(present.max()))


class _Categories:
    """Capped category counts (the rarest half pruned at the cap) and a KMV distinct-count sketch."""

    __slots__ = ("counts", "missing", "present", "pruned", "hashes")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.missing = 0
        self.present = 0
        self.pruned = False
        self.hashes = np.empty(0, dtype=np.uint64)

    def update(self, values: Iterable[Any]) -> None:
        from collections import Counter

        keys = [category_key(v) for v in values]
        chunk = Counter(keys)
        self.missing += chunk.pop(None, 0)
        self.present += sum(chunk.values())
        counts = self.counts
        for key, c in chunk.items():
            counts[key] = counts.get(key, 0) + c
        if len(counts) > _COUNTER_CAP:
            keep = sorted(counts.items(), key=lambda kv: -kv[1])[: _COUNTER_CAP // 2]
            self.counts = dict(keep)
            self.pruned = True
        new = np.fromiter((int.from_bytes(hashlib.blake2b(k.encode("utf-8", "surrogatepass"), digest_size=8)
                                          .digest(), "little") for k in chunk), dtype=np.uint64, count=len(chunk))
        merged = np.union1d(self.hashes, new)
        self.hashes = merged[:_KMV_K]

    def cardinality(self) -> tuple[int, bool]:
        if self.hashes.size < _KMV_K:
            return int(self.hashes.size), False
        kth = float(self.hashes[-1]) / 2.0**64
        return int(round((_KMV_K - 1) / kth)), True


class ProfileBuilder:
    """Streams chunks of columns into a reference profile in bounded memory.

    ``columns`` maps a role (feature / output / label) to {name: kind}; every chunk passed to
    ``observe`` and ``count_bins`` is a mapping of column name to a sequence of values (chunks
    may lack a column: its values count as missing).
    """

    def __init__(self, columns: dict[Role, dict[str, Kind]], *, sample_size: int = DEFAULT_SAMPLE_SIZE,
                 bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K, seed: int = 0):
        if sample_size < 2:
            raise ValueError("sample_size must be at least 2")
        self.columns = {role: dict(cols) for role, cols in columns.items()}
        self.sample_size = sample_size
        self.bins = bins
        self.top_k = top_k
        self.rng = np.random.default_rng(seed)
        self.rows = 0
        self.numeric = [(role, n) for role, cols in self.columns.items() for n, k in cols.items() if k == "numeric"]
        self.categorical = [(role, n) for role, cols in self.columns.items() for n, k in cols.items()
                            if k == "categorical"]
        self._moments = {key: _Moments() for key in self.numeric}
        self._categories = {key: _Categories() for key in self.categorical}
        # The row sample: the sample_size rows with the smallest random keys (uniform without replacement).
        self._keys = np.empty(0)
        self._sample = np.empty((0, len(self.numeric)))
        self._edges: dict[tuple[str, str], np.ndarray] | None = None
        self._bin_counts: dict[tuple[str, str], np.ndarray] = {}

    # pass 1 ------------------------------------------------------------------------------
    def observe(self, chunk: dict[str, Any]) -> None:
        n = _chunk_rows(chunk)
        if n == 0:
            return
        self.rows += n
        matrix = np.empty((n, len(self.numeric)))
        for j, key in enumerate(self.numeric):
            x = to_float_array(chunk[key[1]]) if key[1] in chunk else np.full(n, np.nan)
            self._moments[key].update(x)
            matrix[:, j] = x
        for key in self.categorical:
            values = chunk.get(key[1])
            if values is None:
                self._categories[key].missing += n
            else:
                self._categories[key].update(values)
        keys = np.concatenate((self._keys, self.rng.random(n)))
        rows = np.concatenate((self._sample, matrix))
        if keys.size > self.sample_size:
            keep = np.argpartition(keys, self.sample_size - 1)[: self.sample_size]
            keys, rows = keys[keep], rows[keep]
        self._keys, self._sample = keys, rows

    @property
    def needs_second_pass(self) -> bool:
        """True when the sample is not all the data, so exact bin counts need another read."""
        return self.rows > self.sample_size

    def freeze(self) -> None:
        """Fix the numeric bin edges from the sample; count the bins on it when it is all the data."""
        self._edges = {key: quantile_edges(self._sample[:, j], self.bins) for j, key in enumerate(self.numeric)}
        self._bin_counts = {key: np.zeros(e.size + 1, dtype=np.int64) for key, e in self._edges.items()}
        if not self.needs_second_pass:
            for j, key in enumerate(self.numeric):
                self._bin_counts[key] += _bins(self._sample[:, j], self._edges[key])

    # pass 2 ------------------------------------------------------------------------------
    def count_bins(self, chunk: dict[str, Any]) -> None:
        if self._edges is None:
            raise RuntimeError("freeze() before count_bins()")
        for key in self.numeric:
            if key[1] in chunk:
                self._bin_counts[key] += _bins(to_float_array(chunk[key[1]]), self._edges[key])

    # the result --------------------------------------------------------------------------
    def build(self, *, source: str = "") -> ReferenceProfile:
        if self._edges is None:
            self.freeze()
        profile = ReferenceProfile(rows=self.rows, source=source,
                                   created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   settings={"sample_size": self.sample_size, "bins": self.bins, "top_k": self.top_k})
        for j, key in enumerate(self.numeric):
            m = self._moments[key]
            sample = np.sort(self._sample[:, j])
            sample = sample[~np.isnan(sample)]
            stats = summary_statistics(sample)  # quantiles from the sample (exact when it is all rows)
            total = m.n + m.missing
            stats.update(mean=m.mean if m.n else math.nan, std=math.sqrt(max(m.m2, 0.0) / m.n) if m.n else math.nan,
                         min=m.min if m.n else math.nan, max=m.max if m.n else math.nan,
                         missing_ratio=m.missing / total if total else math.nan,
                         mad=median_abs_deviation(sample))  # for the input guard's robust z-scores
            profile.group(key[0])[key[1]] = NumericProfile(key[1], m.n, m.missing, self._edges[key],
                                                           self._bin_counts[key], stats, sample)
        for key in self.categorical:
            c = self._categories[key]
            ranked = sorted(((k, v) for k, v in c.counts.items() if k != OTHER), key=lambda kv: (-kv[1], kv[0]))
            top = ranked[: self.top_k]
            counts = np.array([v for _, v in top] + [c.present - sum(v for _, v in top)], dtype=np.int64)
            cardinality, estimated = c.cardinality()
            total = c.present + c.missing
            stats = {"missing_ratio": c.missing / total if total else math.nan, "entropy": entropy(counts),
                     "cardinality": float(cardinality)}
            profile.group(key[0])[key[1]] = CategoricalProfile(key[1], c.present, c.missing, [k for k, _ in top],
                                                               counts, cardinality, estimated, stats)
        features = [n for role, n in self.numeric if role == "feature"]
        if len(features) >= 2 and self._sample.shape[0] >= 2:
            idx = [self.numeric.index(("feature", n)) for n in features]
            x = self._sample[:, idx]
            profile.correlation_features = features
            profile.correlation = correlation_matrix(x)
            usable = [i for i, n in enumerate(features) if self._moments[("feature", n)].n > 0]
            if len(usable) >= 2:
                profile.pca_features = [features[i] for i in usable]
                profile.pca = PCAModel.fit(x[:, usable])
        # The input guard's per-event outlier model: Mahalanobis on the standardised numeric
        # features, fitted on the row sample, with the sample's own scores kept for calibration.
        usable = [n for n in features if self._moments[("feature", n)].n > 0]
        if usable and self._sample.shape[0] >= 2:
            idx = [self.numeric.index(("feature", n)) for n in usable]
            profile.outlier_features = usable
            profile.outlier = MahalanobisModel.fit(self._sample[:, idx])
        profile.hash = profile.to_dict()["hash"]
        return profile


def _chunk_rows(chunk: dict[str, Any]) -> int:
    for values in chunk.values():
        return len(values)
    return 0


def _bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in the right-closed bins of ``edges`` (NaN ignored); ``stats.bin_counts`` without a sort."""
    x = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(edges, x, side="left"), minlength=edges.size + 1).astype(np.int64)


def build_profile(columns: dict[Role, dict[str, Any]], kinds: dict[str, Kind] | None = None, **kwargs) -> ReferenceProfile:
    """A profile of in-memory columns: ``{"feature": {name: values}, "output": {...}, "label": {...}}``.

    Kinds are inferred (``infer_kind``) unless given in ``kinds``. Used for warm-up references
    and tests; ``source`` may be passed.
    """
    kinds = kinds or {}
    source = kwargs.pop("source", "memory")
    spec = {role: {name: kinds.get(name) or infer_text_kind(values) for name, values in cols.items()}
            for role, cols in columns.items()}
    builder = ProfileBuilder(spec, **kwargs)
    chunk = {name: values for cols in columns.values() for name, values in cols.items()}
    builder.observe(chunk)
    builder.freeze()
    if builder.needs_second_pass:
        builder.count_bins(chunk)
    return builder.build(source=source)


# --------------------------------------------------------------------------- reading files


def detect_format(path: str) -> str:
    name = path.lower()
    for suffix in (".gz", ".bz2", ".xz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "csv"


def _open_text(path: str):
    """A text stream, decompressing .gz, .bz2 and .xz (the suffixes ``detect_format`` strips)."""
    import bz2
    import gzip
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(Path(path.lower()).suffix)
    if opener is not None:
        return opener(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


class _Progress:
    """A one-line progress report on a terminal (stderr), at most a few times a second."""

    def __init__(self, label: str, total_bytes: int, enabled: bool | None = None):
        self.label = label
        self.total = total_bytes
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.last = 0.0
        self.start = time.monotonic()

    def update(self, rows: int, done_bytes: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.25:
            return
        self.last = now
        pct = f" {100.0 * done_bytes / self.total:5.1f}%" if self.total else ""
        rate = rows / max(now - self.start, 1e-9)
        sys.stderr.write(f"\r{self.label}:{pct} {rows:,} rows ({rate:,.0f} rows/s)   ")
        sys.stderr.flush()

    def done(self, rows: int) -> None:
        if self.enabled:
            self.update(rows, self.total, force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


def _parse_numeric_strings(values: list[str]) -> np.ndarray:
    arr = np.array(values, dtype=object)
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        return to_float_array([None if isinstance(v, str) and v.strip().lower() in MISSING_TOKENS else v
                               for v in values])


def iter_file_chunks(path: str, *, fmt: str | None = None, chunk_rows: int = 10_000,
                     numeric: Callable[[str], bool] | None = None,
                     progress: _Progress | None = None) -> Iterator[dict[str, Any]]:
    """Chunks of at most ``chunk_rows`` rows as ``{column: values}``.

    CSV values are strings (numeric columns, as told by ``numeric(name)``, are parsed to
    float64 with missing tokens as NaN); JSON lines values are JSON values (an object with a
    ``features`` object is flattened with its ``prediction``/``outputs`` and ``label``, the
    shape of push events); Parquet columns come through pyarrow.
    """
    fmt = fmt or detect_format(path)
    if fmt == "parquet":
        yield from _iter_parquet(path, chunk_rows, progress)
        return
    with _open_text(path) as f:
        raw = getattr(f, "buffer", None)

        def position() -> int:
            try:
                return raw.tell() if raw is not None else 0
            except (OSError, ValueError):
                return 0

        rows = 0
        if fmt == "csv":
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                return
            width = len(header)
            while True:
                block = [r for _, r in zip(range(chunk_rows), reader)]
                if not block:
                    break
                block = [r if len(r) == width else (r + [""] * width)[:width] for r in block]
                cols = list(zip(*block))
                chunk: dict[str, Any] = {}
                for name, values in zip(header, cols):
                    if numeric is not None and numeric(name):
                        chunk[name] = _parse_numeric_strings(list(values))
                    else:
                        chunk[name] = [None if v.strip().lower() in MISSING_TOKENS else v for v in values]
                rows += len(block)
                if progress:
                    progress.update(rows, position())
                yield chunk
        elif fmt == "jsonl":
            from inferwatch.ingest.events import rows_to_columns

            while True:
                lines = [line for _, line in zip(range(chunk_rows), f)]
                if not lines:
                    break
                records = []
                for line in lines:
                    line = line.strip()
                    if not line:
                        continue
                    obj = json.loads(line)
                    if isinstance(obj, dict):
                        records.append(_flatten_event(obj))
                if records:
                    rows += len(records)
                    if progress:
                        progress.update(rows, position())
                    yield rows_to_columns(records)
        else:
            raise ValueError(f"unknown input format {fmt!r} (csv, jsonl, parquet)")


def _flatten_event(obj: dict[str, Any]) -> dict[str, Any]:
    """A push event (``{"features": {...}, "prediction": ...}``) as one flat record."""
    if not isinstance(obj.get("features"), dict):
        return obj
    row = dict(obj["features"])
    prediction = obj.get("prediction", obj.get("outputs"))
    if isinstance(prediction, dict):
        row.update(prediction)
    elif isinstance(prediction, list):
        row.update({f"prediction_{i}": v for i, v in enumerate(prediction)})
    elif prediction is not None:
        row["prediction"] = prediction
    if "label" in obj:
        row["label"] = obj["label"]
    return row


def _iter_parquet(path: str, chunk_rows: int, progress: _Progress | None) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError("reading Parquet needs pyarrow: pip install 'inferwatch[parquet]'") from None
    # Without pre_buffer=False Arrow reads ahead whole row groups and peak RSS grows with the
    # file (465 MB at 100k rows, 1.3 GB at 2M, benchmarks/drift.py); with it, it stays flat.
    pf = pq.ParquetFile(path, pre_buffer=False)
    total = pf.metadata.num_rows or 1
    rows = 0
    for batch in pf.iter_batches(batch_size=chunk_rows):
        chunk: dict[str, Any] = {}
        for name, column in zip(batch.schema.names, batch.columns):
            import pyarrow as pa

            if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                chunk[name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
            else:
                chunk[name] = column.to_pylist()
        rows += batch.num_rows
        if progress:
            progress.update(rows, int(progress.total * rows / total))
        yield chunk


def _header(path: str, fmt: str, sample_rows: int) -> tuple[list[str], dict[str, list[Any]]]:
    """Column names (file order) and the first rows' values, for type inference."""
    first = next(iter_file_chunks(path, fmt=fmt, chunk_rows=sample_rows), {})
    return list(first), first


def build_profile_from_file(path: str, *, fmt: str | None = None, features: list[str] | None = None,
                            categorical: Iterable[str] = (), numeric: Iterable[str] = (),
                            prediction_columns: dict[str, str] | None = None, label_column: str | None = None,
                            sample_size: int = DEFAULT_SAMPLE_SIZE, bins: int = DEFAULT_BINS,
                            top_k: int = DEFAULT_TOP_K, chunk_rows: int = 20_000, seed: int = 0,
                            progress: bool | None = None) -> ReferenceProfile:
    """Profile a CSV / JSON lines / Parquet file in chunks (two reads when it exceeds the sample).

    ``prediction_columns`` maps an input column to the output name it has in the window (the
    codecs name a scalar prediction ``prediction``). Columns named neither as features, outputs
    nor label are features unless ``features`` lists the features explicitly.
    """
    fmt = fmt or detect_format(path)
    prediction_columns = dict(prediction_columns or {})
    categorical, numeric = set(categorical), set(numeric)
    names, head = _header(path, fmt, 2000)
    if not names:
        raise ValueError(f"{path}: no rows")
    missing = [c for c in [*(features or []), *prediction_columns, *([label_column] if label_column else [])]
               if c not in names]
    if missing:
        raise ValueError(f"{path}: no column(s) {', '.join(missing)} (columns: {', '.join(names[:20])}"
                         f"{' ...' if len(names) > 20 else ''})")
    taken = set(prediction_columns) | ({label_column} if label_column else set())
    feature_names = list(features) if features else [n for n in names if n not in taken]

    def kind(name: str) -> Kind:
        if name in categorical:
            return "categorical"
        if name in numeric:
            return "numeric"
        return infer_text_kind(head.get(name, []))

    kinds = {n: kind(n) for n in [*feature_names, *prediction_columns, *([label_column] if label_column else [])]}
    spec: dict[Role, dict[str, Kind]] = {
        "feature": {n: kinds[n] for n in feature_names},
        "output": {prediction_columns[c]: kinds[c] for c in prediction_columns},
        "label": {label_column: kinds[label_column]} if label_column else {},
    }
    rename = {c: out for c, out in prediction_columns.items()}
    is_numeric = lambda name: kinds.get(name) == "numeric"  # noqa: E731
    builder = ProfileBuilder(spec, sample_size=sample_size, bins=bins, top_k=top_k, seed=seed)
    size = os.path.getsize(path) if os.path.exists(path) else 0

    def chunks(label: str) -> Iterator[dict[str, Any]]:
        bar = _Progress(label, size, progress)
        rows = 0
        for chunk in iter_file_chunks(path, fmt=fmt, chunk_rows=chunk_rows, numeric=is_numeric, progress=bar):
            rows += _chunk_rows(chunk)
            yield {rename.get(k, k): v for k, v in chunk.items() if k in kinds}
        bar.done(rows)

    for chunk in chunks(f"profiling {os.path.basename(path)}"):
        builder.observe(chunk)
    builder.freeze()
    if builder.needs_second_pass:
        for chunk in chunks("counting bins"):
            builder.count_bins(chunk)
    return builder.build(source=os.path.basename(path))


__all__ = [
    "FORMAT", "FORMAT_VERSION", "OTHER", "NumericProfile", "CategoricalProfile", "ReferenceProfile", "ProfileBuilder",
    "build_profile", "build_profile_from_file", "iter_file_chunks", "infer_text_kind", "content_hash",
]
