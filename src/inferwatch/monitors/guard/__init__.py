"""The input guard: data quality at the door, schema changes and per-event outlier scores.

Checks, against the schema of the reference profile (or ``payload.features``):
``missing`` (absent or null), ``nan``, ``infinite``, ``wrong_type`` (a string where a number
is expected, an object where a category is), ``out_of_range`` (outside the reference's
[min, max] widened by ``guard.range_tolerance`` of its span), ``unseen_category`` (not among
the reference's categories, checked when the profile holds all of them), ``unknown_feature``
(a name outside the schema: the most frequent ones become ``feature`` label values, see
``UnknownNames``; at most ``guard.max_unknown_features`` of them, the rest ``other``)
and ``duplicate`` (the whole feature vector equals one of the last N distinct vectors: row hashes
in a bounded set with a ring of evictions; ``feature="_event"``).

Outliers: the squared Mahalanobis distance of the standardised numeric features (the
profile's ``outlier`` model), divided by the threshold calibrated on the reference for
``guard.outlier_fpr``; a score above 1 is an outlier, and its largest robust z-scores (median
and MAD of the reference) name the features that made it odd.

Memory is bounded by configuration: per version a ring of per-event flags as long as the window
(for the ratios over the window), a ring of row hashes, and counters per (feature, issue) with
capped feature labels.

Modules: ``schema`` (what is checked against), ``evaluate`` (the pure, vectorised checks of a
batch), ``unknown`` (labels for unknown names), ``state`` (per version: duplicate memory, flag
ring, schema evidence), ``engine`` (``Guard``: owns all state, updated as batches are observed),
``quarantine`` (the log of failed events) and ``collector`` (reads what the engine published).
"""

from .collector import GuardCollector
from .engine import SCORE_BUCKETS, Guard
from .evaluate import EVENT_FEATURE, ISSUES, BatchCheck, Issue, evaluate
from .schema import Schema
from .state import Duplicates, VersionState
from .unknown import UnknownLabels, UnknownNames

__all__ = ["Guard", "GuardCollector", "Schema", "BatchCheck", "evaluate", "Duplicates", "VersionState",
           "UnknownLabels", "UnknownNames", "Issue", "ISSUES", "EVENT_FEATURE", "SCORE_BUCKETS"]
