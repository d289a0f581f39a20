"""The join store: predictions waiting for their late label, by prediction id.

Until its label arrives a prediction waits in the ``JoinStore``: what performance needs of it
(version, time, predicted value, score, segment values, and the shadow challengers' answers),
bounded by ``labels.max_pending`` entries and ``labels.ttl_seconds``; the oldest is evicted
first and evictions are counted. Ids that were matched or evicted are remembered (bounded the
same way) so a late or repeated label is told apart from an id never seen: ``matched``,
``duplicate``, ``expired`` or ``unknown_id``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(slots=True)
class Pending:
    """A prediction waiting for its label."""

    version: str
    timestamp: float  # when the prediction was made
    predicted: Any  # the prediction output's raw value
    score: float  # the score output (NaN when none)
    stored_at: float
    challengers: dict[str, tuple[Any, float]] | None = None  # challenger -> (predicted, score)
    segments: tuple[str, ...] | None = None  # segment label values, in segments.features order


class JoinStore:
    """Predictions by id until their label arrives, bounded in count and time. Thread-safe.

    ``evicted`` counts entries dropped before their label came, by reason (``full``: the store
    was at ``max_pending``; ``expired``: older than ``ttl_seconds``; ``replaced``: a newer
    prediction with the same id took its place, e.g. a client that retried with its id).
    """

    def __init__(self, max_pending: int, ttl_seconds: float, clock: Callable[[], float] = time.time):
        self.max_pending = max_pending
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        # Ids already matched or evicted: id -> (outcome of a further label, version, when).
        self._done: OrderedDict[str, tuple[str, str, float]] = OrderedDict()
        self.evicted = {"full": 0, "expired": 0, "replaced": 0}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def _forget(self, pid: str, entry: Pending, outcome: str, now: float) -> None:
        done = self._done
        done[pid] = (outcome, entry.version, now)
        done.move_to_end(pid)
        while len(done) > self.max_pending:
            done.popitem(last=False)

    def _expire(self, now: float) -> None:
        pending, cutoff = self._pending, now - self.ttl_seconds
        while pending:
            pid, entry = next(iter(pending.items()))
            if entry.stored_at > cutoff:
                break
            pending.popitem(last=False)
            self.evicted["expired"] += 1
            self._forget(pid, entry, "expired", now)
        done = self._done
        while done and next(iter(done.values()))[2] <= cutoff:
            done.popitem(last=False)

    def put(self, version: str, prediction_ids: list[str], timestamps: list[float], predicted: list[Any],
            scores: list[float], segments: list[tuple[str, ...]] | None = None) -> None:
        now = self.clock()
        rows = segments if segments is not None else [None] * len(prediction_ids)
        with self._lock:
            self._expire(now)
            pending = self._pending
            for pid, ts, pred, score, seg in zip(prediction_ids, timestamps, predicted, scores, rows):
                if pid in pending:  # a repeated id: the newest prediction wins, the older is counted
                    del pending[pid]
                    self.evicted["replaced"] += 1
                pending[pid] = Pending(version, ts, pred, score, now, None, seg)
            while len(pending) > self.max_pending:
                pid, entry = pending.popitem(last=False)
                self.evicted["full"] += 1
                self._forget(pid, entry, "expired", now)

    def attach_challenger(self, prediction_id: str, challenger: str, predicted: Any, score: float) -> Pending | None:
        """Record a challenger's answer to a pending prediction; the champion's entry, or None."""
        with self._lock:
            entry = self._pending.get(prediction_id)
            if entry is not None:
                if entry.challengers is None:
                    entry.challengers = {}
                entry.challengers[challenger] = (predicted, score)
            return entry

    def take(self, prediction_id: str) -> tuple[str, Pending | None, str | None]:
        """``(outcome, entry, version)``: ``matched`` with the entry, else why there is none."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            entry = self._pending.pop(prediction_id, None)
            if entry is not None:
                self._forget(prediction_id, entry, "duplicate", now)
                return "matched", entry, entry.version
            done = self._done.get(prediction_id)
            if done is not None:
                return done[0], None, done[1]
            return "unknown_id", None, None

    def expire(self) -> None:
        with self._lock:
            self._expire(self.clock())


__all__ = ["JoinStore", "Pending"]
