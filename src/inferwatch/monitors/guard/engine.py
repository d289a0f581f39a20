"""The guard's engine: it owns the schema, the counters and the per-version state.

The worker calls ``Guard.observe(version, batch)`` after each window append (a pipeline
observer): the batch is checked (``evaluate``), its duplicates found in the version's memory,
unknown names given labels, and the counters, the flag ring's running sums and the schema changes
updated, all before ``observe`` returns. ``start()`` runs a periodic step that ages events out of
the window ratios when no batch arrives. Readers (``GuardCollector``, ``status``) only read what
was published.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from inferwatch.config import FeatureSpec, GuardConfig
from inferwatch.ingest.events import EventBatch
from inferwatch.reference import ReferenceProfile
from inferwatch.stats.quality import bucket_counts

from ..background import BackgroundWorker
from .evaluate import EVENT_FEATURE, ISSUES, BatchCheck, Issue, evaluate, explain_outliers
from .quarantine import QuarantineLog, quarantine_lines
from .schema import Schema
from .state import VersionState
from .unknown import UnknownLabels

log = logging.getLogger(__name__)

# inferwatch_outlier_score is the Mahalanobis distance over the calibrated threshold: 1 = the threshold.
SCORE_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)
EXPIRY_INTERVAL_SECONDS = 1.0  # how often events age out of the window ratios without traffic


@dataclass
class Current:
    """What belongs to one schema, replaced as a whole when the reference changes (so a reader
    never pairs a new schema with the old states): unknown labels and the per-version states."""

    schema: Schema
    unknown: UnknownLabels
    states: dict[str, VersionState] = field(default_factory=dict)  # replaced, not mutated, on a new version


class Guard(BackgroundWorker):
    """Owns the schema, the per-version states, the counters and the quarantine log.

    ``reference`` returns the current reference profile (or None: the schema is then
    ``declared_features``, or nothing); ``redact`` are the prediction log's redacted fields,
    kept out of the quarantine log and the outlier notes too."""

    thread_name = "inferwatch-guard"

    def __init__(self, cfg: GuardConfig, *, model: str, window_capacity: int, window_max_age_seconds: float,
                 declared_features: Sequence[FeatureSpec] = (), redact: Iterable[str] = (),
                 reference: Callable[[], ReferenceProfile | None] | None = None,
                 on_error: Callable[[], None] | None = None, on_capped: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.gcfg = cfg
        self.model = model
        self.window_capacity = window_capacity
        self.window_max_age_seconds = window_max_age_seconds
        self.declared_features = list(declared_features)
        self.redact = frozenset(redact)
        self.reference = reference
        self.on_error = on_error
        self.on_capped = on_capped
        self.clock = clock
        self._profile: ReferenceProfile | None = None
        self.current = Current(self._declared_schema(), self._unknown_labels())
        self.totals: dict[tuple[str, str, str], int] = {}  # (version, feature, issue) -> count
        self.events: dict[tuple[str, str], int] = {}  # (version, passed|failed) -> count
        self.outliers: dict[str, int] = {}
        self.histograms: dict[str, tuple[np.ndarray, float]] = {}  # version -> (bucket counts, sum)
        self.errors = 0
        self._lock = threading.Lock()  # the counters above; the states have their own
        q = cfg.quarantine
        self.quarantine = QuarantineLog(q.path, q.max_bytes, q.backup_count) if q.path else None
        self._stop = threading.Event()
        self._thread = None

    # --- the current schema -------------------------------------------------------------------
    @property
    def schema(self) -> Schema:
        return self.current.schema

    @property
    def unknown(self) -> UnknownLabels:
        return self.current.unknown

    @property
    def states(self) -> dict[str, VersionState]:
        return self.current.states

    def _declared_schema(self) -> Schema:
        specs = self.declared_features
        return Schema.from_config(specs) if specs else Schema.none()

    def _unknown_labels(self) -> UnknownLabels:
        return UnknownLabels(self.gcfg.max_unknown_features, self.gcfg.unknown_feature_min_events, self.on_capped)

    def _refresh_schema(self) -> None:
        profile = self.reference() if self.reference is not None else None
        if profile is self._profile:
            return
        self._profile = profile
        schema = Schema.from_profile(profile, self.gcfg) if profile is not None else self._declared_schema()
        # flags, schema evidence and unknown labels belong to a schema; the counters carry on
        self.current = Current(schema, self._unknown_labels())
        log.info("input guard: schema from %s, %d features", schema.source, len(schema.names))

    def _state(self, version: str) -> VersionState:
        current = self.current
        state = current.states.get(version)
        if state is None:
            state = VersionState(current.schema.names, self.window_capacity, self.window_max_age_seconds, self.gcfg)
            current.states = {**current.states, version: state}
        return state

    # --- writing (the worker) -----------------------------------------------------------------
    def observe(self, version: str, batch: EventBatch) -> None:
        """Check a windowed batch (the worker thread; never raises)."""
        if not self.gcfg.enabled or batch.n == 0:
            return
        try:
            self._observe(version, batch)
        except Exception:  # noqa: BLE001 - fail open
            self._failed("input guard failed on a batch")

    def _failed(self, message: str) -> None:
        log.exception(message)
        self.count_error()

    def _observe(self, version: str, batch: EventBatch) -> None:
        self._refresh_schema()
        current = self.current
        schema = current.schema
        state = self._state(version)
        check = evaluate(schema, batch, want_cells=self.quarantine is not None,
                         want_hashes=state.duplicates is not None)
        duplicates = 0
        if check.hashes is not None and state.duplicates is not None:
            dup = state.duplicates.check(check.hashes)
            duplicates = int(np.count_nonzero(dup))
            if duplicates:
                check.failed |= dup
                if self.quarantine is not None:
                    check.cells.append((EVENT_FEATURE, Issue.DUPLICATE.label, dup))
        # Labels go to the most present names first; schema evidence is the frequent names only.
        labelled_before = current.unknown.labelled
        unknown_labels = [(current.unknown.label(name, events), events) for name, events in check.unknown.items()]
        evidence = {name: events for name, events in check.unknown.items() if name in current.unknown}
        now = self.clock()
        labelled = current.unknown.labelled
        state.record(check, batch.timestamps, now, evidence, labelled)
        if labelled is not labelled_before:  # a new label changes how other versions' changes read
            for other in current.states.values():
                if other is not state:
                    with other.lock:
                        other.publish(labelled)
        self._count(version, schema, check, unknown_labels, duplicates)
        outliers = np.flatnonzero(check.outlier) if check.outlier is not None else np.empty(0, np.intp)
        if outliers.size:
            notes = explain_outliers(schema, check, outliers, self.gcfg.top_features, self.redact)
            batch.annotations = {**(batch.annotations or {}),
                                 **{i: {"outlier": note} for i, note in zip(outliers.tolist(), notes)}}
        if self.quarantine is not None and (np.any(check.failed) or outliers.size):
            lines, lost = quarantine_lines(batch, check, model=self.model, version=version, redact=self.redact)
            self.quarantine.write(lines, lost)

    def _count(self, version: str, schema: Schema, check: BatchCheck, unknown: list[tuple[str, int]],
               duplicates: int) -> None:
        failed = int(np.count_nonzero(check.failed))
        with self._lock:
            totals = self.totals
            for row, issue in zip(*np.nonzero(check.counts)):
                key = (version, schema.names[row], ISSUES[issue])
                totals[key] = totals.get(key, 0) + int(check.counts[row, issue])
            for label, events in unknown:
                key = (version, label, Issue.UNKNOWN_FEATURE.label)
                totals[key] = totals.get(key, 0) + events
            if duplicates:
                key = (version, EVENT_FEATURE, Issue.DUPLICATE.label)
                totals[key] = totals.get(key, 0) + duplicates
            self.events[(version, "failed")] = self.events.get((version, "failed"), 0) + failed
            self.events[(version, "passed")] = self.events.get((version, "passed"), 0) + check.n - failed
            if check.scores is not None and check.outlier is not None:
                buckets, total = self.histograms.get(version, (np.zeros(len(SCORE_BUCKETS) + 1, np.int64), 0.0))
                counts, added = bucket_counts(check.scores, SCORE_BUCKETS)
                self.histograms[version] = (buckets + counts, total + added)
                self.outliers[version] = self.outliers.get(version, 0) + int(np.count_nonzero(check.outlier))

    # --- the periodic step --------------------------------------------------------------------
    def expire(self) -> None:
        """Age events out of every version's window ratios (also done by each batch of a version)."""
        current = self.current
        now = self.clock()
        for state in current.states.values():
            state.expire(now, current.unknown.labelled)

    def _run(self) -> None:
        while not self._stop.wait(EXPIRY_INTERVAL_SECONDS):
            try:
                self.expire()
            except Exception:  # noqa: BLE001 - never stops monitoring
                self._failed("input guard: the periodic step failed")

    # --- reading ------------------------------------------------------------------------------
    def counters(self) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], int], dict[str, int],
                                dict[str, tuple[np.ndarray, float]]]:
        """Copies of (issue totals, events by result, outliers, score histograms)."""
        with self._lock:
            return dict(self.totals), dict(self.events), dict(self.outliers), dict(self.histograms)

    def status(self) -> dict[str, Any]:
        current = self.current
        totals, events, outliers, _ = self.counters()
        versions = {}
        for version, state in current.states.items():
            published = state.published
            versions[version] = {
                "schema": published.view,
                "window": {"events": published.events, "failed_ratio": published.failed if published.events else None,
                           "outlier_ratio": published.outliers if published.events else None},
                "issues": {f"{feature}:{issue}": count for (v, feature, issue), count in sorted(totals.items())
                           if v == version},
                "events": {result: events.get((version, result), 0) for result in ("passed", "failed")},
                "outliers": outliers.get(version, 0),
            }
        out = {"enabled": self.gcfg.enabled, "schema": current.schema.describe(), "errors": self.errors,
               "unknown_features": sorted(current.unknown.labelled),
               "frequent_unknown_features": [{"feature": n, "events": c} for n, c in current.unknown.sketch.top(20)],
               "versions": versions}
        if self.quarantine is not None:
            out["quarantine"] = {"path": self.quarantine.path, "written": self.quarantine.written,
                                 "errors": self.quarantine.errors}
        return out

    def close(self) -> None:
        self.stop()
        if self.quarantine is not None:
            self.quarantine.close()
