"""The drift engine: evaluates every model version's window in a background thread.

Every ``drift.interval_seconds`` it takes a consistent ``snapshot()`` of each version's window
and has the ``Evaluator`` compare it with the reference (and each segment value's rows, with
``segments.drift``); the collector publishes the last results. Until the ``ReferenceStore`` has
a reference the thread asks it for the warm-up about once a second. The worker calls
``observe`` after each window append, which counts the batch in the reference bins.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from inferwatch.config import Config, DriftConfig
from inferwatch.ingest.events import EventBatch
from inferwatch.pipeline.segments import SegmentLabeler
from inferwatch.pipeline.window import WindowStore
from inferwatch.reference import CategoricalProfile, ReferenceProfile, ReferenceStore

from ..background import BackgroundWorker
from .counters import BinCounters
from .coverage import ColumnCoverage
from .evaluate import Evaluator
from .prepared import PreparedReference
from .results import VersionResult

log = logging.getLogger(__name__)


class DriftEngine(BackgroundWorker):
    """Owns the background evaluation thread, the prepared reference, the bin counters and the results.

    ``config`` is the ``drift:`` section; ``main_version`` the model version label whose bin
    counters exist from the start; ``segments`` slices each window by segment value (None: no
    per-segment drift).
    """

    thread_name = "inferwatch-drift"

    def __init__(self, config: DriftConfig, windows: WindowStore, store: ReferenceStore, *, model: str,
                 main_version: str, on_error: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time, segments: SegmentLabeler | None = None):
        self.config = config
        self.windows = windows
        self.store = store
        self.model = model
        self.main_version = main_version
        self.on_error = on_error
        self.clock = clock
        self.segments = segments if segments is not None and segments.enabled else None
        self.prepared: PreparedReference | None = None
        self.evaluator: Evaluator | None = None
        self.results: dict[str, VersionResult] = {}
        # Drift per segment value: {version: {(segment, value): result}}.
        self.segment_results: dict[str, dict[tuple[str, str], VersionResult]] = {}
        self.counters: dict[str, BinCounters] = {}
        self.errors = 0
        self.evaluations = 0
        self.coverage: ColumnCoverage | None = None   # reference columns the traffic never brings
        self._counters_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        profile = store.current()
        if profile is not None:
            self.set_reference(profile)

    @classmethod
    def from_config(cls, cfg: Config, windows: WindowStore, *, profile: ReferenceProfile | None = None,
                    version_label: Callable[[str], str] | None = None, segments: SegmentLabeler | None = None,
                    **kwargs: Any) -> DriftEngine:
        """An engine (and its reference store) from the whole configuration, as the sidecar wires it;
        ``profile`` stands in for ``reference.path``."""
        main_version = version_label(cfg.model.version) if version_label else cfg.model.version
        store = ReferenceStore(cfg.reference, main_version=main_version,
                               main_window=lambda: windows.windows().get(main_version), profile=profile)
        return cls(cfg.drift, windows, store, model=cfg.model.name, main_version=main_version,
                   segments=segments if cfg.segments.drift else None, **kwargs)

    @property
    def reference(self) -> ReferenceProfile | None:
        """The reference the results were evaluated against (None until there is one)."""
        return self.prepared.profile if self.prepared is not None else None

    @property
    def reference_type(self) -> str:
        return self.store.type

    def set_reference(self, profile: ReferenceProfile) -> None:
        prepared = PreparedReference.build(profile)
        # The reference's categories keep their own codes in every window, whatever arrives first.
        self.windows.seed_categories(*({name: list(col.categories) for name, col in group.items()
                                        if isinstance(col, CategoricalProfile)}
                                       for group in (profile.features, profile.outputs)))
        # Format 4: every value the reference held, so the windows flag new ones as they are written.
        self.windows.watch_unseen(*({name: col.seen for name, col in group.items()
                                     if isinstance(col, CategoricalProfile) and col.seen is not None}
                                    for group in (profile.features, profile.outputs)))
        self.evaluator = Evaluator(prepared, self.config)
        self.coverage = ColumnCoverage(profile.features, profile.outputs, self.config.min_events)
        with self._counters_lock:
            self.counters = {}
            self.prepared = prepared
        if self.config.bin_counters:
            self._bin_counters(self.main_version)  # exported at 0 from the start: clean increase()
        log.info("drift reference (%s): %s", self.store.type, profile.describe())

    # --- the worker's hook ------------------------------------------------------------------
    def _bin_counters(self, version: str) -> BinCounters | None:
        counters = self.counters.get(version)
        if counters is None and self.prepared is not None:
            with self._counters_lock:
                counters = self.counters.get(version)
                if counters is None:
                    counters = BinCounters(self.prepared)
                    self.counters = {**self.counters, version: counters}
        return counters

    def observe(self, version: str, batch: EventBatch) -> None:
        """Count a windowed batch in the reference bins (the worker thread; never raises)."""
        coverage = self.coverage
        if coverage is not None and batch.n:
            try:
                coverage.observe(_with_values(batch.features), _with_values(batch.outputs), batch.n)
            except Exception:  # noqa: BLE001 - fail open
                log.exception("drift column coverage failed")
                self.count_error()
        if self.prepared is None or not self.config.bin_counters or batch.n == 0:
            return
        try:
            counters = self._bin_counters(version)
            if counters is not None:
                counters.add(batch.features, batch.n)
        except Exception:  # noqa: BLE001 - fail open
            log.exception("drift bin counting failed")
            self.count_error()

    # --- evaluation -----------------------------------------------------------------------------
    def evaluate_all(self) -> dict[str, VersionResult]:
        evaluator = self.evaluator
        if evaluator is None:
            return {}
        results: dict[str, VersionResult] = {}
        segment_results: dict[str, dict[tuple[str, str], VersionResult]] = {}
        now = self.clock()
        for version, window in self.windows.windows().items():
            try:
                snapshot = window.snapshot(now)
                results[version] = evaluator.evaluate(snapshot, now=now)
                if self.segments is not None:
                    segment_results[version] = evaluator.evaluate_segments(snapshot, self.segments, now)
            except Exception:  # noqa: BLE001 - one bad window must not stop the others
                log.exception("drift evaluation of version %s failed", version)
                self.count_error()
                if version in self.results:
                    results[version] = self.results[version]
                if version in self.segment_results:
                    segment_results[version] = self.segment_results[version]
        self.results = results
        self.segment_results = segment_results
        self.evaluations += 1
        return results

    def _run(self) -> None:
        interval = self.config.interval_seconds
        next_due = time.monotonic()
        while not self._stop.is_set():
            try:
                if self.prepared is None:
                    profile = self.store.try_warmup()
                    if profile is not None:
                        self.set_reference(profile)
                if self.prepared is not None and time.monotonic() >= next_due:
                    self.evaluate_all()
                    next_due = time.monotonic() + interval
            except Exception:  # noqa: BLE001
                log.exception("drift engine failed")
                self.count_error()
                next_due = time.monotonic() + interval
            wait = min(max(next_due - time.monotonic(), 0.01), 1.0) if self.prepared is None else \
                max(next_due - time.monotonic(), 0.01)
            self._stop.wait(wait)

    def status(self) -> dict[str, Any]:
        return {"reference": self.store.status(), "interval_seconds": self.config.interval_seconds,
                "evaluations": self.evaluations, "errors": self.errors,
                "columns": self.coverage.status() if self.coverage is not None else None,
                "versions": {v: r.summary() for v, r in self.results.items()},
                "segments": {v: {f"{segment}={value}": r.summary() for (segment, value), r in seg.items()}
                             for v, seg in self.segment_results.items()}}


def _with_values(columns: dict[str, list[Any]]) -> list[str]:
    """Names of the columns holding at least one value (a column of nulls is not the column arriving)."""
    return [name for name, values in columns.items() if any(v is not None for v in values)]
