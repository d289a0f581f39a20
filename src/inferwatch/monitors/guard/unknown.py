"""Unknown feature names: which of them earn a `feature` label value of their own.

A client sending a new random key in every event must not use up the labels, while a renamed
column (present in every event) must get one even after thousands of random keys: the names are
counted in a Space-Saving sketch and only frequent ones are labelled (docs/design.md).
"""

from __future__ import annotations

from typing import Callable

from inferwatch.exposition.metrics import OTHER


class UnknownNames:
    """The frequent unknown feature names: a Space-Saving sketch (Metwally et al., 2005) of at most
    ``capacity`` names with the number of events each was present in.

    A name in the sketch has ``count`` (an overestimate) and ``error`` (how much of it was inherited
    from the name it evicted), so ``count - error`` events are guaranteed. Any name present in more
    than (all unknown-name occurrences) / capacity events is in the sketch. A client sending a new
    random key in every event keeps every one of them at a guaranteed 1: none of them ever looks
    frequent, and a renamed column (present in every event) stays in the sketch and climbs."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.entries: dict[str, list[int]] = {}  # name -> [count, error]

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, name: str, events: int) -> None:
        entry = self.entries.get(name)
        if entry is not None:
            entry[0] += events
            return
        if len(self.entries) < self.capacity:
            self.entries[name] = [events, 0]
            return
        victim = min(self.entries, key=lambda k: self.entries[k][0])
        floor = self.entries.pop(victim)[0]
        self.entries[name] = [floor + events, floor]

    def guaranteed(self, name: str) -> int:
        entry = self.entries.get(name)
        return entry[0] - entry[1] if entry is not None else 0

    def rank(self, name: str, among: Callable[[str], bool]) -> int:
        """How many names for which ``among`` holds are guaranteed more events than ``name``."""
        mine = self.guaranteed(name)
        return sum(1 for other, (c, e) in self.entries.items() if c - e > mine and other != name and among(other))

    def top(self, k: int) -> list[tuple[str, int]]:
        # a copy first: /v1/status reads while the worker adds
        return sorted(((n, c - e) for n, (c, e) in list(self.entries.items())), key=lambda t: (-t[1], t[0]))[:k]


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
