"""The drift report: one self-contained HTML page a person can look at, outside Grafana.

The page (no network, no CDN: inline CSS, SVG and a little plain JavaScript) shows the dataset
verdict, a sortable table of features (the deciding statistic, its score, p-value, threshold and
decision, missing and out-of-range shares), per feature the reference and current distributions
drawn side by side in the reference's own bins, the prediction distribution, and performance when
labels are there. Every string that came from data (feature names, categories) is escaped.

The API (``inferwatch batch --report`` and ``GET /v1/report`` both call it)::

    render_report(*, model, version, reference, current, drift=None, performance=None,
                  range_tolerance=0.1, source="", generated_at=None) -> str

- ``reference``: the ``ReferenceProfile`` compared against;
- ``current``: a ``WindowSnapshot`` or a ``CurrentCounts`` (``count_snapshot(reference, snapshot)``
  per chunk, added up with ``CurrentCounts.merge``: a batch need not hold its rows);
- ``drift``: the ``VersionResult`` of ``monitors.drift.Evaluator.evaluate`` over the same rows
  (None: drawn without the tests);
- ``performance``: a ``PerformanceResult`` when labels are there (None: said so on the page);
- ``range_tolerance``: ``guard.range_tolerance`` (the reference range widening for out-of-range);
- ``source``: where the current rows came from (a file, "the sidecar's window"), shown in the header.

Modules: ``counts`` (pure: a snapshot counted in the reference's bins, mergeable), ``charts``
(SVG bars), ``page`` (the HTML), ``assets`` (the page's CSS and script), ``live`` (the sidecar's
current window, for ``/v1/report``).
"""

from .counts import ColumnCounts, CurrentCounts, count_snapshot
from .page import render_report

__all__ = ["render_report", "count_snapshot", "CurrentCounts", "ColumnCounts"]
