"""Per model version: the duplicate memory, the per-event flag ring and the schema evidence.

Everything a reader needs is computed when a batch is recorded (or when events age out, in the
engine's periodic step) and published as plain values (``Published``): the ratios over the window
and the detected schema changes. Readers (the collector, ``/v1/status``) only read those, so what is
detected, and since when, does not depend on when, or whether, anyone scrapes.

The ratios are running sums over the ring: a recorded event adds its flags, an overwritten or
aged-out one subtracts them, so no read scans the window and a write touches only the slots it
overwrites (the timestamps are scanned only once some live event may have aged out). The
schema evidence is the
same over the last ``guard.schema_window_events`` events of the ring (missing features) and over
the last batches covering them (the frequent unknown names of each).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferwatch.config import GuardConfig
from inferwatch.exposition.metrics import OTHER

from .evaluate import FLAG_MISSING, FLAG_OUT_OF_RANGE, BatchCheck, Issue

_U64 = np.uint64
ROW_FAILED, ROW_OUTLIER = np.uint8(1), np.uint8(2)  # per-event flags of the ring's `rows`


class Duplicates:
    """Row hashes of the last ``capacity`` distinct feature vectors: a sorted array (vectorised
    membership by binary search) and a ring that says which hash to evict next."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.ring = np.zeros(capacity, dtype=_U64)
        self.filled = 0
        self.head = 0
        self.sorted = np.empty(0, dtype=_U64)  # the remembered hashes, unique, ascending

    def __len__(self) -> int:
        return int(self.sorted.size)

    def check(self, hashes: np.ndarray) -> np.ndarray:
        """Mark rows whose vector was seen before (earlier in the batch or in memory); remember the rest."""
        n = hashes.size
        mem = self.sorted
        if mem.size:
            pos = np.minimum(np.searchsorted(mem, hashes), mem.size - 1)
            dup = mem[pos] == hashes
        else:
            dup = np.zeros(n, dtype=bool)
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        again = ordered[1:] == ordered[:-1]  # every occurrence after the first, in batch order
        if again.any():
            dup[order[1:][again]] = True
        new = hashes[~dup]
        if new.size > self.capacity:
            new = new[-self.capacity:]
        k = new.size
        if k:
            positions: np.ndarray | slice
            if self.head + k <= self.capacity:
                positions = slice(self.head, self.head + k)
                old = self.ring[self.head: min(self.head + k, self.filled)]
            else:
                positions = (self.head + np.arange(k)) % self.capacity
                old = self.ring[positions[positions < self.filled]]
            if old.size:  # each evicted hash is in memory exactly once
                mem = np.delete(mem, np.searchsorted(mem, np.sort(old)))
            self.ring[positions] = new
            new = np.sort(new)
            self.sorted = np.insert(mem, np.searchsorted(mem, new), new)
            self.head = int((self.head + k) % self.capacity)
            self.filled = min(self.capacity, self.filled + k)
        return dup


@dataclass(frozen=True)
class Published:
    """What readers see of a version, replaced as a whole (never half of one batch's update)."""

    events: int  # in the window: younger than window.max_age_seconds
    missing: np.ndarray  # share of them per schema feature (empty without events)
    out_of_range: np.ndarray
    failed: float  # share with any issue (0 without events)
    outliers: float
    changes: list[dict[str, Any]]  # the detected schema changes
    view: dict[str, Any]  # the schema before and after them, for /v1/status


_NO_SHARES = np.empty(0)


def _count_flag(flags: np.ndarray, flag: np.uint8) -> np.ndarray:
    """Per row of ``flags`` (features x events), the events with ``flag`` set (a sum: faster than
    ``count_nonzero`` along an axis)."""
    return np.add.reduce(flags & flag, axis=1, dtype=np.int64) // int(flag)


class VersionState:
    """The flag ring of one version (as long as the window), its running sums and schema evidence.

    ``record`` runs in the worker, ``expire`` in the engine's periodic step; both hold ``lock``
    and end by publishing a new ``published``, which readers take without it."""

    def __init__(self, names: list[str], capacity: int, max_age_seconds: float, cfg: GuardConfig):
        f = len(names)
        self.names = names
        self.cfg = cfg
        self.capacity = capacity
        self.max_age_seconds = max_age_seconds
        self.flags = np.zeros((f, capacity), dtype=np.uint8)
        self.rows = np.zeros(capacity, dtype=np.uint8)
        self.stamps = np.full(capacity, -np.inf)
        self.live = np.zeros(capacity, dtype=bool)  # younger than max_age_seconds at the last record/expire
        self.head = 0
        self.size = 0
        # Running sums over the live slots, and a lower bound of their oldest timestamp.
        self.live_events = 0
        self.live_missing = np.zeros(f, dtype=np.int64)
        self.live_out_of_range = np.zeros(f, dtype=np.int64)
        self.live_failed = 0
        self.live_outliers = 0
        self.next_expiry = np.inf
        # Schema evidence: missing counts over the ring's last `schema_window` slots, and the
        # (events, {unknown name: events present}) of the last batches covering
        # guard.schema_window_events events with their running sum per name.
        self.schema_window = min(cfg.schema_window_events, capacity)
        self.recent_missing = np.zeros(f, dtype=np.int64)
        self.recent_batches: deque[tuple[int, dict[str, int]]] = deque()
        self.recent_total = 0
        self.recent_unknown: dict[str, int] = {}
        self.current: dict[tuple[str, str], float] = {}  # (feature, change) -> share
        self.since: dict[tuple[str, str], float] = {}  # (feature, change) -> when first detected
        self.duplicates = Duplicates(cfg.duplicate_memory_events or capacity) if cfg.duplicates else None
        self.lock = threading.Lock()
        self.published = Published(0, _NO_SHARES, _NO_SHARES, 0.0, 0.0, [], self._view([]))

    # --- writing ------------------------------------------------------------------------------
    def record(self, check: BatchCheck, stamps: list[float] | None, now: float, unknown: dict[str, int],
               labelled: Container[str]) -> None:
        """Add a checked batch (its last ``capacity`` events) observed at ``now``. ``unknown``: the
        events each frequent unknown name was present in; ``labelled``: the names with a label."""
        n = check.n
        kept = min(n, self.capacity)
        positions = self._slots(self.head, kept)
        flags = check.flags[:, n - kept:]
        rows = check.failed[n - kept:].view(np.uint8)
        if check.outlier is not None:
            rows = rows | (check.outlier[n - kept:].view(np.uint8) << np.uint8(1))
        try:
            ts = np.asarray(stamps[n - kept:], dtype=np.float64) if stamps is not None else np.full(kept, now)
        except (TypeError, ValueError):
            ts = np.full(kept, now)
        live = ts >= now - self.max_age_seconds
        # The whole batch's flags summed per feature are its counts of missing and out-of-range values.
        whole = kept == n
        missing = check.counts[:, Issue.MISSING] if whole else _count_flag(flags, FLAG_MISSING)
        with self.lock:
            self._slide_schema_window(flags, missing)
            if self.size + kept > self.capacity:  # the ring is full: overwritten live slots leave the sums
                gone = self.live[positions]
                if gone.any():
                    self._tally(self.flags[:, positions], self.rows[positions], gone, -1)
            self.flags[:, positions] = flags
            self.rows[positions] = rows
            self.stamps[positions] = ts
            self.live[positions] = live
            if live.all():
                if whole:
                    self.live_events += n
                    self.live_missing += missing
                    self.live_out_of_range += check.counts[:, Issue.OUT_OF_RANGE]
                    self.live_failed += int(np.count_nonzero(check.failed))
                    self.live_outliers += int(np.count_nonzero(check.outlier)) if check.outlier is not None else 0
                else:
                    self._tally(flags, rows, None, 1)
                self.next_expiry = min(self.next_expiry, float(ts.min()))
            elif live.any():
                self._tally(flags, rows, live, 1)
                self.next_expiry = min(self.next_expiry, float(ts[live].min()))
            self.head = int((self.head + kept) % self.capacity)
            self.size = min(self.capacity, self.size + kept)
            self._expire(now)
            self._remember_unknown(n, unknown)
            self._detect(now)
            self.publish(labelled)

    def expire(self, now: float, labelled: Container[str]) -> None:
        """Drop the events older than ``max_age_seconds`` from the ratios (the periodic step)."""
        with self.lock:
            if self._expire(now):
                self.publish(labelled)

    def _expire(self, now: float) -> bool:
        cutoff = now - self.max_age_seconds
        if not cutoff > self.next_expiry:  # no live event is older than the cutoff
            return False
        expired = self.live & (self.stamps < cutoff)
        found = bool(expired.any())
        if found:
            self._tally(self.flags, self.rows, expired, -1)
            self.live &= ~expired
        left = self.stamps[self.live]
        self.next_expiry = float(left.min()) if left.size else np.inf
        return found

    def _slots(self, start: int, count: int) -> np.ndarray | slice:
        """Ring positions ``start``, ``start + 1``, ... (``count`` of them): a slice unless they wrap."""
        start %= self.capacity
        if start + count <= self.capacity:
            return slice(start, start + count)
        return (start + np.arange(count)) % self.capacity

    def _tally(self, flags: np.ndarray, rows: np.ndarray, which: np.ndarray | None, sign: int) -> None:
        """Add (sign 1) or remove (-1) the events ``which`` (None: all) of ``flags`` and ``rows``."""
        if which is not None and not which.all():
            flags, rows = flags[:, which], rows[which]
        self.live_events += sign * int(rows.size)
        if flags.any():  # clean events (the common case) cost one pass
            self.live_missing += sign * _count_flag(flags, FLAG_MISSING)
            self.live_out_of_range += sign * _count_flag(flags, FLAG_OUT_OF_RANGE)
        if rows.any():
            self.live_failed += sign * int(np.count_nonzero(rows & ROW_FAILED))
            self.live_outliers += sign * int(np.count_nonzero(rows & ROW_OUTLIER))

    def _slide_schema_window(self, incoming: np.ndarray, incoming_missing: np.ndarray) -> None:
        """Move the missing counts of the last ``schema_window`` ring slots past ``incoming`` (the
        flags about to be written, with ``incoming_missing`` their missing counts per feature):
        the oldest slots of the window leave it, before they are overwritten, and the newest
        incoming ones enter."""
        window, kept = self.schema_window, incoming.shape[1]
        before = min(self.size, window)
        entering = min(kept, window)
        leaving = before + entering - min(self.size + kept, window)
        if leaving:
            oldest = self.flags[:, self._slots(self.head - before, leaving)]
            if oldest.any():
                self.recent_missing -= _count_flag(oldest, FLAG_MISSING)
        if entering == kept:
            self.recent_missing += incoming_missing
        elif entering:
            newest = incoming[:, kept - entering:]
            if newest.any():
                self.recent_missing += _count_flag(newest, FLAG_MISSING)

    def _remember_unknown(self, events: int, present: dict[str, int]) -> None:
        """Add a batch's frequent unknown names to the recent batches, dropping the oldest batches
        beyond guard.schema_window_events events."""
        self.recent_batches.append((events, present))
        self.recent_total += events
        for name, count in present.items():
            self.recent_unknown[name] = self.recent_unknown.get(name, 0) + count
        while self.recent_batches and self.recent_total - self.recent_batches[0][0] >= self.cfg.schema_window_events:
            events, gone = self.recent_batches.popleft()
            self.recent_total -= events
            for name, count in gone.items():
                left = self.recent_unknown[name] - count
                if left:
                    self.recent_unknown[name] = left
                else:
                    del self.recent_unknown[name]

    def _detect(self, now: float) -> None:
        """A schema feature missing from, or an unknown name present in, at least
        ``guard.schema_change_share`` of the recent events (once there are enough of them)."""
        g = self.cfg
        events = self._recent_events()
        current: dict[tuple[str, str], float] = {}
        if events >= g.schema_min_events and self.names:
            gone = self.recent_missing >= g.schema_change_share * events
            if gone.any():
                for i in np.flatnonzero(gone).tolist():
                    current[(self.names[i], "missing")] = int(self.recent_missing[i]) / events
            total = self.recent_total
            added = [name for name, count in self.recent_unknown.items() if count >= g.schema_change_share * total]
            if len(added) > 1:  # in the order the names first appear among the recent batches
                first = dict.fromkeys(name for _, present in self.recent_batches for name in present)
                added.sort(key=list(first).index)
            for name in added:  # one name in nearly all events: random keys never are
                current[(name, "added")] = self.recent_unknown[name] / total
        self.current = current
        if current or self.since:
            self.since = {key: self.since.get(key, now) for key in current}

    def publish(self, labelled: Container[str]) -> None:
        """Publish the ratios and the schema view from the current sums (under ``lock``)."""
        n = self.live_events
        changes = [{"feature": f, "change": c, "share": round(share, 4), "since": self.since[(f, c)],
                    **({"label": OTHER} if c == "added" and f not in labelled else {})}
                   for (f, c), share in sorted(self.current.items())]
        last = self.published  # without changes the view only moves while the schema window fills
        view = last.view if not changes and not last.changes and last.view["recent_events"] == self._recent_events() \
            else self._view(changes)
        self.published = Published(n, self.live_missing / n if n else _NO_SHARES,
                                   self.live_out_of_range / n if n else _NO_SHARES,
                                   self.live_failed / n if n else 0.0, self.live_outliers / n if n else 0.0,
                                   changes, view)

    def _recent_events(self) -> int:
        return min(self.size, self.schema_window)

    def _view(self, changes: list[dict[str, Any]]) -> dict[str, Any]:
        """The schema before and after the detected changes (for /v1/status)."""
        gone = [f for (f, c) in self.current if c == "missing"]
        added = [f for (f, c) in self.current if c == "added"]
        view: dict[str, Any] = {"recent_events": self._recent_events(), "before": list(self.names),
                                "after": [n for n in self.names if n not in gone] + added, "changes": changes}
        if len(gone) == 1 and len(added) == 1:
            view["possible_rename"] = {"from": gone[0], "to": added[0]}
        return view
