"""Unknown feature names: which of them earn a `feature` label value of their own.

A client sending a new random key in every event must not use up the labels, while a renamed
column (present in every event) must get one even after thousands of random keys: the names are
counted in a Space-Saving sketch and only frequent ones are labelled (docs/design.md).
"""

from __future__ import annotations

from typing import Callable

from inferwatch.exposition.metrics import OTHER
from inferwatch.stats.heavy_hitters import SpaceSaving as UnknownNames


class UnknownLabels:
    """The `feature` label values given to unknown names, at most ``max_labels``, kept once given
    (a counter's label set must stay stable); every other unknown name is ``other``."""

    def __init__(self, max_labels: int, min_events: int, on_capped: Callable[[], None] | None = None):
        self.max_labels = max_labels
        self.min_events = min_events
        self.on_capped = on_capped
        self.sketch = UnknownNames(max(32, 4 * max_labels))
        self.labels: dict[str, int] = {}  # labelled name -> its slot, in the order given
        self.labelled: tuple[str, ...] = ()  # the same names, replaced (not mutated) for readers

    def __contains__(self, name: str) -> bool:
        """Whether ``name`` is frequent enough to be schema-change evidence: labelled or in the sketch."""
        return name in self.labels or name in self.sketch

    def label(self, name: str, events: int) -> str:
        """The `feature` label of an unknown name present in ``events`` events of a batch.

        A name earns its own label once it was present in at least
        ``guard.unknown_feature_min_events`` events (guaranteed by the sketch) and it is among the
        most frequent names still without a label; everything else is ``other``."""
        sketch = self.sketch
        sketch.add(name, events)  # labelled names too: /v1/status lists the frequent names by events
        if name in self.labels:
            return name
        free = self.max_labels - len(self.labels)
        if free > 0 and sketch.guaranteed(name) >= self.min_events \
                and sketch.rank(name, lambda other: other not in self.labels) < free:
            self.labels[name] = len(self.labels)
            self.labelled = (*self.labelled, name)
            return name
        if self.on_capped is not None:
            self.on_capped()
        return OTHER
