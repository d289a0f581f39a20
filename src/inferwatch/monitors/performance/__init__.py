"""Performance: predictions joined to late labels, metrics computed in the background.

Flow: the worker's observer hook (``PerformanceEngine.observe``) puts every windowed
prediction's predicted value and score in the ``JoinStore``; ``POST /v1/labels`` queues a
``LabelBatch`` that the worker hands to ``add_labels``, which joins each label to its prediction
(outcomes counted in ``inferwatch_labels_total``, delays in ``inferwatch_label_delay_seconds``),
adds the pair to the version's ``LabelledWindow`` and to the cumulative confusion matrix. Every
``performance.interval_seconds`` a background thread computes, per version, the metrics of
``inferwatch.stats.performance`` over the labelled window, label drift against the reference
profile's label (or, with a warm-up reference, the first ``reference.warmup_events`` labels),
and (binary classifiers with calibrated scores) CBPE estimates over the prediction window, which
needs no labels at all. ``PerformanceCollector`` publishes the last results at scrape time;
nothing is computed in a request or a scrape.

Shadow challengers (``inferwatch.serving.shadow``) add their answers to the champion's pending
entry, so one label scores both; challenger metrics are ``inferwatch_shadow_performance{challenger}``.

Modules: ``joins`` (the join store), ``window`` (class ids, the capped vocabulary of exported
class labels, labelled windows), ``evaluate`` (pure: snapshots in, metrics, label drift and
estimates out; the metric names are ``inferwatch.stats.performance``'s), ``task`` (pure: which
task ``performance.task: auto`` means, and why), ``engine`` (state,
the join, the thread), ``collector`` (the scrape).
"""

from .collector import PerformanceCollector
from .engine import CHAMPION, PerformanceEngine
from .evaluate import PerformanceResult
from .joins import JoinStore, Pending
from .window import ClassVocabulary, LabelledSnapshot, LabelledWindow

__all__ = ["PerformanceEngine", "PerformanceCollector", "PerformanceResult", "CHAMPION", "JoinStore", "Pending",
           "ClassVocabulary", "LabelledWindow", "LabelledSnapshot"]
