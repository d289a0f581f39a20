"""The report of a running sidecar: its current window, evaluated now (``GET /v1/report``).

The page's test results and its bars describe the same rows: the window is snapshot once and the
drift evaluator (pure, the engine's own) runs on that snapshot, rather than showing the engine's
last periodic result beside a window that has moved on since. Performance is the performance
engine's last evaluation of the labelled window (labels have their own window).
"""

from __future__ import annotations

import time

from inferwatch.monitors.drift import DriftEngine
from inferwatch.monitors.performance import CHAMPION, PerformanceEngine
from inferwatch.pipeline.window import WindowStore

from .page import render_report


class ReportUnavailable(Exception):
    """Nothing to draw yet: ``reason`` (``no_reference``, ``no_window``, ``unknown_version``) and a
    sentence for the JSON body; ``status`` is the HTTP status to answer with."""

    def __init__(self, reason: str, detail: str, status: int = 503):
        super().__init__(detail)
        self.reason, self.detail, self.status = reason, detail, status


def render_live_report(*, model: str, version: str, main_version: str, windows: WindowStore,
                       drift: DriftEngine | None, performance: PerformanceEngine | None,
                       range_tolerance: float, now: float | None = None) -> str:
    """The page for model ``version``'s window (``main_version`` when the client named none)."""
    if drift is None:
        raise ReportUnavailable("no_reference", "drift is off (reference.enabled: false): there is no reference "
                                                "to compare the window with")
    reference, evaluator = drift.reference, drift.evaluator
    if reference is None or evaluator is None:
        raise ReportUnavailable("no_reference", "no reference profile yet: reference.path is not loaded, or the "
                                                "warm-up is still collecting reference.warmup_events")
    window = windows.windows().get(version)
    if window is None and version != main_version:
        known = sorted(windows.windows())
        raise ReportUnavailable("unknown_version", f"no window for model version {version!r}; windows: "
                                                   f"{', '.join(known) or 'none'}", status=404)
    now = time.time() if now is None else now
    snapshot = window.snapshot(now) if window is not None else None
    if snapshot is None or snapshot.n == 0:
        raise ReportUnavailable("no_window", f"the window of model version {version!r} is empty: no events yet "
                                             "(or none younger than window.max_age_seconds)")
    result = evaluator.evaluate(snapshot, now=now)
    labelled = performance.results.get((version, CHAMPION)) if performance is not None else None
    return render_report(model=model, version=version, reference=reference, current=snapshot, drift=result,
                         performance=labelled, range_tolerance=range_tolerance,
                         source="the sidecar's window", generated_at=now)
