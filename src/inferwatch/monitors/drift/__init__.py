"""Drift: the reference against each model version's window, in a background thread.

Every ``drift.interval_seconds`` the engine (``engine``) takes a consistent snapshot of each
model version's window and the evaluator (``evaluate``) compares it with the prepared reference
(``prepared``): per feature every statistic of its type (numeric: ks, psi, js, hellinger, kl,
wasserstein; categorical: chi2, linf, js, psi), basic statistics side by side, a drift decision
per feature (the method chosen by window size and type unless configured, p-values corrected
for multiple testing), the share of drifted features and a dataset decision, PCA reconstruction
error and correlation drift; the same for each model output. Nothing is computed in a request or
a scrape: ``DriftCollector`` (``collector``) yields the last results (``results``), so a feature
or version that is gone simply stops being exported. The reference itself (file or warm-up)
comes from ``reference.store.ReferenceStore``.

For fleets, ``observe`` (called by the worker after each window append) adds every event to
cumulative per-bin counters (``counters``: ``inferwatch_feature_bin_total``) and the reference
proportions are exported beside them; the fleet PSI rules of ``alerting.promql`` compute PSI
across all replicas in PromQL. docs/drift.md explains the defaults and why.
"""

from .collector import CATEGORICAL_STATISTICS, NUMERIC_STATISTICS, DriftCollector
from .counters import BinCounters
from .engine import DriftEngine
from .evaluate import Evaluator
from .prepared import PreparedCategorical, PreparedNumeric, PreparedReference
from .results import ColumnResult, VersionResult

__all__ = ["DriftEngine", "DriftCollector", "Evaluator", "PreparedReference", "PreparedNumeric",
           "PreparedCategorical", "BinCounters", "ColumnResult", "VersionResult", "NUMERIC_STATISTICS",
           "CATEGORICAL_STATISTICS"]
