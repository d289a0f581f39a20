"""Ground truth: parsing label batches, the join store, and the labelled window.

Labels arrive late and separately (``POST /v1/labels`` on the admin port) and are joined to
their prediction by prediction id. Until its label arrives a prediction waits in the
``JoinStore``: what performance needs of it (version, time, predicted value, score, and the
challengers' predictions), bounded by ``labels.max_pending`` entries and ``labels.ttl_seconds``;
the oldest is evicted first and evictions are counted. Ids that were matched or evicted are
remembered (bounded the same way) so a late or repeated label is told apart from an id never
seen: ``matched``, ``duplicate``, ``expired`` or ``unknown_id``.

A matched pair goes into the ``LabelledWindow`` of its model version (and of each challenger
that answered the same request): a columnar ring buffer of (predicted, actual, score, time),
bounded by ``performance.max_events`` and ``performance.max_age_seconds``, from which the
performance engine computes metrics in the background.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .events import PayloadError
from inferwatch.exposition.metrics import OTHER

OUTCOMES = ("matched", "unknown_id", "expired", "duplicate", "invalid", "dropped")
_NUMBER = (int, float)


# --------------------------------------------------------------------------- parsing


@dataclass
class LabelBatch:
    """Valid labels of one POST, in columns (the worker's unit of work)."""

    prediction_ids: list[str]
    labels: list[Any]
    timestamps: list[float | None]
    received_at: float = field(default_factory=time.time)

    @property
    def n(self) -> int:
        return len(self.prediction_ids)


def _label_value_problem(value: Any) -> str | None:
    if value is None:
        return "label: required (a string, number or boolean)"
    if isinstance(value, (dict, list)):
        return f"label: expected a string, number or boolean, got {type(value).__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return "label: must be finite"
    if isinstance(value, str) and not value:
        return "label: must not be empty"
    return None


def parse_labels(body: bytes, max_batch: int) -> tuple[LabelBatch, list[dict[str, Any]]]:
    """``{"labels": [{prediction_id, label, timestamp?}, ...]}`` or a bare list of those.

    Returns the valid labels and, for the others, ``{"index", "field", "reason"}``. A body
    that is not such a document raises ``PayloadError`` (the caller answers 400).
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("invalid_json", f"body: not JSON ({exc})") from None
    items = data.get("labels") if isinstance(data, dict) else data
    if not isinstance(items, list):
        where = "body.labels" if isinstance(data, dict) else "body"
        raise PayloadError("missing_field", f"{where}: expected a list of {{prediction_id, label, timestamp?}} objects")
    if len(items) > max_batch:
        raise PayloadError("too_large", f"body.labels: {len(items)} labels exceed labels.max_batch ({max_batch})")
    batch = LabelBatch([], [], [])
    rejected: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            rejected.append({"index": i, "field": "", "reason": f"expected an object, got {type(item).__name__}"})
            continue
        pid = item.get("prediction_id")
        if not isinstance(pid, (str, int)) or isinstance(pid, bool) or pid == "":
            rejected.append({"index": i, "field": "prediction_id",
                             "reason": "prediction_id: required, a non-empty string"})
            continue
        problem = _label_value_problem(item.get("label"))
        if problem:
            rejected.append({"index": i, "field": "label", "reason": problem})
            continue
        ts = item.get("timestamp")
        if ts is not None and (isinstance(ts, bool) or not isinstance(ts, _NUMBER) or not math.isfinite(ts)):
            rejected.append({"index": i, "field": "timestamp",
                             "reason": "timestamp: expected Unix seconds (a number) or nothing"})
            continue
        unknown = set(item) - {"prediction_id", "label", "timestamp"}
        if unknown:
            rejected.append({"index": i, "field": sorted(unknown)[0],
                             "reason": f"unknown key(s) {', '.join(sorted(unknown))} "
                                       "(expected prediction_id, label, timestamp)"})
            continue
        batch.prediction_ids.append(str(pid))
        batch.labels.append(item["label"])
        batch.timestamps.append(float(ts) if ts is not None else None)
    return batch, rejected


# --------------------------------------------------------------------------- the join store


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

    def __init__(self, max_pending: int, ttl_seconds: float, clock=time.time):
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

    def peek(self, prediction_id: str) -> Pending | None:
        with self._lock:
            return self._pending.get(prediction_id)

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


# --------------------------------------------------------------------------- classes


class ClassVocabulary:
    """Class names to dense codes, capped at ``max_classes`` (then ``other``). The negative and
    positive classes are codes 0 and 1, so a binary problem's matrix is laid out as usual."""

    def __init__(self, max_classes: int, negative: str, positive: str):
        self.max_classes = max(max_classes, 2)
        self.names: list[str] = [negative, positive]
        self._codes = {negative: 0, positive: 1}
        self.capped = 0
        self._lock = threading.Lock()

    @property
    def positive(self) -> int:
        return 1

    @property
    def negative(self) -> int:
        return 0

    def code(self, name: str) -> int:
        code = self._codes.get(name)
        if code is not None:
            return code
        with self._lock:
            code = self._codes.get(name)
            if code is not None:
                return code
            if len(self.names) < self.max_classes:
                code = len(self.names)
            else:
                self.capped += 1
                if OTHER in self._codes:
                    return self._codes[OTHER]
                name = OTHER  # one more code, for every class beyond the cap
                code = len(self.names)
            self.names.append(name)
            self._codes[name] = code
            return code

    def __len__(self) -> int:
        return len(self.names)


# --------------------------------------------------------------------------- the labelled window


@dataclass
class LabelledSnapshot:
    predicted: np.ndarray  # class codes (as float) or values
    actual: np.ndarray
    score: np.ndarray  # NaN where there is none
    delay: np.ndarray  # label time - prediction time, seconds
    segments: np.ndarray | None = None  # (segment features x n) label values, objects

    @property
    def n(self) -> int:
        return int(self.actual.size)

    def take(self, rows: np.ndarray) -> LabelledSnapshot:
        return LabelledSnapshot(self.predicted[rows], self.actual[rows], self.score[rows], self.delay[rows],
                                None if self.segments is None else self.segments[:, rows])


class LabelledWindow:
    """The last ``capacity`` labelled predictions within ``max_age_seconds`` (by label time)."""

    def __init__(self, capacity: int, max_age_seconds: float, segment_features: int = 0):
        self.capacity = capacity
        self.max_age_seconds = max_age_seconds
        self._data = np.full((5, capacity), np.nan)  # predicted, actual, score, delay, labelled_at
        # Segment label values of each row, one row of objects per segment feature (None: no segments).
        self._segments = np.full((segment_features, capacity), None, dtype=object) if segment_features else None
        self._next = 0
        self._size = 0
        self.appended_total = 0
        self._lock = threading.Lock()

    def append(self, predicted: np.ndarray, actual: np.ndarray, score: np.ndarray, delay: np.ndarray,
               labelled_at: float, segments: np.ndarray | None = None) -> None:
        n = int(np.asarray(actual).size)
        if n == 0:
            return
        rows = np.vstack([predicted, actual, score, delay, np.full(n, labelled_at)])[:, -self.capacity:]
        k = rows.shape[1]
        with self._lock:
            positions = (self._next + np.arange(k)) % self.capacity
            self._data[:, positions] = rows
            if self._segments is not None:
                self._segments[:, positions] = segments[:, -self.capacity:] if segments is not None else None
            self._next = int((self._next + k) % self.capacity)
            self._size = min(self._size + k, self.capacity)
            self.appended_total += n

    def snapshot(self, now: float | None = None) -> LabelledSnapshot:
        now = time.time() if now is None else now
        segments = None
        with self._lock:
            if self._size < self.capacity:
                data = self._data[:, :self._size].copy()
                if self._segments is not None:
                    segments = self._segments[:, :self._size].copy()
            else:
                data = np.roll(self._data, -self._next, axis=1)
                if self._segments is not None:
                    segments = np.roll(self._segments, -self._next, axis=1)
        live = data[4] >= now - self.max_age_seconds
        data = data[:, live]
        return LabelledSnapshot(data[0], data[1], data[2], data[3], None if segments is None else segments[:, live])

    def live_events(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            stamps = self._data[4, :self._size]
            return int(np.count_nonzero(stamps >= now - self.max_age_seconds))


__all__ = ["LabelBatch", "parse_labels", "JoinStore", "Pending", "ClassVocabulary", "LabelledWindow",
           "LabelledSnapshot", "OUTCOMES"]
