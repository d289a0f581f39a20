"""Frequent values in bounded memory: a Space-Saving sketch, and slots handed out by frequency.

Two users cap what traffic may name: the guard's labels for unknown feature names, and the label
and column caps (model versions, window columns). A first-come cap lets junk squat: seven junk
model versions once took every slot for good. Here the schema's values are reserved, and the
other slots go to the values that keep arriving, so a slot held by a value that stopped arriving
is taken back by one that did not (docs/metrics.md, "Bounded labels").
"""

from __future__ import annotations

from typing import Callable, Iterable


class SpaceSaving:
    """The frequent names: a Space-Saving sketch (Metwally et al., 2005) of at most ``capacity``
    names with the number of events each was present in.

    A name in the sketch has ``count`` (an overestimate) and ``error`` (how much of it was inherited
    from the name it evicted), so ``count - error`` events are guaranteed. Any name present in more
    than (all occurrences) / capacity events is in the sketch. A client sending a new random key in
    every event keeps every one of them at a guaranteed 1: none of them ever looks frequent, and a
    name present in every event stays in the sketch and climbs."""

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

    def discard(self, name: str) -> None:
        self.entries.pop(name, None)

    def halve(self) -> None:
        """Halve every count and error (recent events weigh more); names left at 0 leave."""
        for name, entry in list(self.entries.items()):
            entry[0] //= 2
            entry[1] //= 2
            if entry[0] == 0:
                del self.entries[name]

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


class FrequentSlots:
    """At most ``limit`` values hold a slot: the ``reserved`` ones (the schema's) for good, the
    others by how often they arrive.

    While a slot is free, a value takes it at once. When none is, the value is counted in a
    Space-Saving sketch, and it takes the slot of the least frequent holder once its guaranteed
    count reaches twice that holder's plus 2 (a margin, so two values arriving equally often do
    not swap slots back and forth; a value seen once never takes a slot). Holders' counts and the
    sketch halve every ``halve_every`` events, so a holder that stopped arriving falls to 0 and
    its slot goes to the next value that arrives a few times: junk cannot keep slots, traffic can.
    Not thread-safe: the caller holds a lock (``LabelCap``, the window's).
    """

    def __init__(self, limit: int, reserved: Iterable[str] = (), *, halve_every: int = 1024,
                 sketch_capacity: int | None = None):
        self.limit = limit
        self.reserved: frozenset[str] = frozenset(list(dict.fromkeys(reserved))[:limit])
        self.held: dict[str, int] = {}  # value -> its events since admitted, halved with the sketch
        self.candidates = SpaceSaving(sketch_capacity or max(32, 4 * limit))
        self.halve_every = halve_every
        self.reclaimed = 0  # slots taken back from a less frequent holder
        self._since_halving = 0

    def __contains__(self, value: str) -> bool:
        return value in self.reserved or value in self.held

    def __len__(self) -> int:
        return len(self.reserved) + len(self.held)

    def reserve(self, values: Iterable[str]) -> list[str]:
        """Reserve more schema values (a reference loaded later) while slots allow; returns the
        holders evicted to make room for them, most recently counted last."""
        evicted = []
        for value in values:
            if value in self.reserved:
                continue
            if value in self.held:
                del self.held[value]
            elif len(self) >= self.limit:
                if not self.held:
                    break
                victim = min(self.held, key=self.held.__getitem__)
                del self.held[victim]
                evicted.append(victim)
            self.reserved = self.reserved | {value}
        return evicted

    def admit(self, value: str, events: int = 1) -> tuple[bool, str | None]:
        """Count ``events`` of ``value``: whether it holds a slot now, and the holder it took the
        slot from (None when it took none)."""
        if value in self.reserved:
            return True, None
        self.tick(events)
        return self.place(value, events)

    def tick(self, events: int) -> None:
        """``events`` more events went by (the clock of the halving)."""
        self._since_halving += events
        if self._since_halving >= self.halve_every:
            self._halve()

    def place(self, value: str, events: int) -> tuple[bool, str | None]:
        """``admit`` without the tick: for callers that tick once per batch of many values."""
        if value in self.reserved:
            return True, None
        held = self.held
        if value in held:
            held[value] += events
            return True, None
        if len(self.reserved) + len(held) < self.limit:
            held[value] = events
            return True, None
        if not held:  # every slot reserved
            return False, None
        sketch = self.candidates
        sketch.add(value, events)
        count = sketch.guaranteed(value)
        if count < 2:  # the cheap common case of junk: a value seen once
            return False, None
        victim = min(held, key=held.__getitem__)
        if count < 2 * held[victim] + 2:
            return False, None
        del held[victim]
        sketch.discard(value)
        held[value] = count
        self.reclaimed += 1
        return True, victim

    def _halve(self) -> None:
        self._since_halving = 0
        for value in self.held:
            self.held[value] //= 2
        self.candidates.halve()
