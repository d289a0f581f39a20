"""The labelled windows: joined (prediction, label) pairs that performance is computed over.

A matched pair goes into the ``LabelledWindow`` of its model version (and of each challenger
that answered the same request): a columnar ring buffer of (predicted, actual, score, delay,
time), bounded by ``performance.max_events`` and ``performance.max_age_seconds``. Classes are
stored as ``class_id``s, stable hashes of the real class, so correctness compares real classes
however many there are; the capped ``ClassVocabulary`` (``performance.max_classes``, then
``other``) names only what is exported (confusion matrix cells, the status's class list).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from inferwatch.exposition.metrics import OTHER


@lru_cache(maxsize=4096)
def class_id(key: str) -> int:
    """A class's identity in the labelled window: 52 bits of its BLAKE2b digest (stable across
    processes, exact as a float64). Two classes collide with probability about k²/2^53 (k = 10,000
    classes: 1e-8); capping instead made every pair of classes beyond the cap a hit."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=7).digest()
    return int.from_bytes(digest, "big") >> 4


class ClassVocabulary:
    """Class names to dense codes for export, capped at ``max_classes`` (then ``other``). The
    negative and positive classes are codes 0 and 1. Never used to decide a hit (``class_id``)."""

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

    def label(self, name: str) -> str:
        """The exported label of a class: its name, or ``other`` beyond the cap."""
        return self.names[self.code(name)]

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class LabelledSnapshot:
    predicted: np.ndarray  # class_ids (exact as float) or values
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


__all__ = ["ClassVocabulary", "LabelledSnapshot", "LabelledWindow", "class_id"]
