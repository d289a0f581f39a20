"""Bounded, columnar ring buffers of recent events, one per model version.

Each feature and each model output is a typed numpy column:
- numeric: float64 values;
- categorical: int32 codes into a bounded vocabulary (overflow -> the ``other`` code);
and beside it a uint8 ``state`` array that says explicitly what each cell is:
PRESENT, MISSING (absent or null) or INVALID (a value of the wrong type, e.g. a string where
a number is expected). Numeric NaN/inf sent by a client stay PRESENT with their value, so
data-quality checks can tell "null" from "NaN".

Memory is bounded by configuration: ``max_events`` rows x (``max_features`` + ``max_outputs``)
columns, whatever the traffic. The schema's names (``payload.features``, the configured outputs,
the reference's) keep their columns; the other columns go to the names present in the most
events (``FrequentSlots``), so junk names cannot take the columns a later real feature needs. Readers take ``snapshot()``: a consistent copy made under a
short lock, so drift and quality computations never stop ingestion for long.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Callable, Sequence

import numpy as np

from inferwatch.ingest.events import EventBatch
from inferwatch.exposition.metrics import OTHER
from inferwatch.stats.heavy_hitters import FrequentSlots
from inferwatch.stats.seen import SeenValues
from inferwatch.ingest.values import INVALID, MISSING, PRESENT, Kind, category_key, infer_kind, to_numeric

MISSING_CODE = -1
_STR = {str}
_OVERFLOW_MEMO = 65_536  # keys outside a column's vocabulary whose seen/unseen verdict is remembered


@dataclass
class ColumnSnapshot:
    kind: Kind
    values: np.ndarray
    state: np.ndarray
    categories: tuple[str, ...] = ()
    # Per row: its value is one the reference never held (categorical columns of a format-4
    # reference, judged when written, so values filed under ``other`` still count); else None.
    unseen: np.ndarray | None = None

    @property
    def present(self) -> np.ndarray:
        return self.state == PRESENT

    def category_values(self) -> np.ndarray:
        """Categorical codes decoded to strings (None where not present)."""
        table = np.array([*self.categories, None], dtype=object)
        codes = np.where(self.present, self.values, len(self.categories))
        return table[codes]


class Column:
    """One ring-buffered column. Not thread-safe on its own: the Window holds the lock."""

    def __init__(self, kind: Kind, capacity: int, max_categories: int, seed: Sequence[str] = ()):
        self.kind = kind
        if kind == "numeric":
            self.values = np.full(capacity, np.nan)
        else:
            self.values = np.full(capacity, MISSING_CODE, dtype=np.int32)
        self.state = np.full(capacity, MISSING, dtype=np.uint8)
        self.max_categories = max_categories
        self.vocabulary: dict[str, int] = {}
        self.categories: list[str] = []
        self.categories_capped = 0
        self.reserve(seed)
        self.seen: SeenValues | None = None  # the reference's values (watch_unseen)
        self.unseen: np.ndarray | None = None  # per row, beside ``state``
        self._code_unseen = np.zeros(0, dtype=bool)  # per vocabulary code
        self._overflow_unseen: dict[str, bool] = {}  # keys filed under OTHER, judged once
        self._pending: np.ndarray | None = None  # the last encode's flags, for write()

    def watch_unseen(self, seen: SeenValues | None) -> None:
        """Flag every value written from now on that ``seen`` never held (None: stop)."""
        if self.kind == "numeric":
            return
        self.seen = seen
        self.unseen = None if seen is None else np.zeros(self.state.size, dtype=bool)
        self._code_unseen = np.zeros(0, dtype=bool)
        self._overflow_unseen = {}

    def _flag_unseen(self, keys: Sequence[str | None], codes: np.ndarray, overflow: set[str]) -> None:
        """The rows' unseen flags: by code for the vocabulary, by key for the values filed under
        OTHER (hashed once per distinct key, vectorised; the memo is bounded)."""
        seen = self.seen
        if seen is None:
            return
        known = self._code_unseen.size
        if known < len(self.categories):
            added = ~seen.contains(self.categories[known:])
            self._code_unseen = np.concatenate((self._code_unseen, added))
        flags = np.zeros(codes.size, dtype=bool)
        valid = codes >= 0
        flags[valid] = self._code_unseen[codes[valid]]
        if overflow:
            memo = self._overflow_unseen
            fresh = [k for k in overflow if k not in memo]
            if len(memo) + len(fresh) > _OVERFLOW_MEMO:
                memo.clear()
            memo.update(zip(fresh, (~seen.contains(fresh)).tolist()))
            rows = np.flatnonzero(codes == self.vocabulary[OTHER])
            flags[rows] = [memo.get(keys[i] or "", False) for i in rows.tolist()]  # never None: None is MISSING
        self._pending = flags

    def reserve(self, categories: Sequence[str]) -> None:
        """Give these categories codes now, while the vocabulary has room (the reference's).

        The vocabulary is first come, first served: without this a column seeing more than
        ``max_categories`` distinct values before a reference category would file it under
        ``other``, and drift would see the reference's categories vanish.
        """
        if self.kind == "numeric":
            return
        for key in categories:
            if len(self.categories) >= self.max_categories - 1:
                break
            if key != OTHER and key not in self.vocabulary:
                self.vocabulary[key] = len(self.categories)
                self.categories.append(key)

    def encode(self, values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "numeric":
            return to_numeric(values)
        # category_key(s) is s for a string: the common all-strings column skips the call per value.
        all_str = set(map(type, values)) == _STR
        keys = values if all_str else [category_key(v) for v in values]
        vocabulary = self.vocabulary
        overflow: set[str] = set()
        for key in dict.fromkeys(keys):  # first-seen order, so the cap is deterministic
            if key in vocabulary:
                continue
            if key is None:
                continue
            # The last slot is kept for OTHER, so the vocabulary never exceeds max_categories.
            if len(self.categories) < self.max_categories - 1 or (
                    len(self.categories) == self.max_categories - 1 and key == OTHER):
                vocabulary[key] = len(self.categories)
                self.categories.append(key)
            else:
                overflow.add(key)
        if overflow:
            if OTHER not in vocabulary:
                vocabulary[OTHER] = len(self.categories)
                self.categories.append(OTHER)
            self.categories_capped += sum(1 for k in keys if k in overflow)
        other = vocabulary.get(OTHER, MISSING_CODE)
        if all_str:  # every string is in the vocabulary or overflowed to OTHER: no missing codes
            codes = np.fromiter(map(vocabulary.get, keys, repeat(other)), dtype=np.int32, count=len(keys))
            self._flag_unseen(keys, codes, overflow)
            return codes, np.zeros(len(values), dtype=np.uint8)
        codes = np.fromiter((vocabulary.get(k, other) if k is not None else MISSING_CODE for k in keys),
                            dtype=np.int32, count=len(keys))
        state = np.zeros(len(values), dtype=np.uint8)
        is_key_none = codes == MISSING_CODE
        if is_key_none.any():
            is_none = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
            state[is_key_none] = INVALID
            state[is_none] = MISSING
        self._flag_unseen(keys, codes, overflow)
        return codes, state

    def write(self, positions: np.ndarray | slice, values: np.ndarray, state: np.ndarray) -> None:
        self.values[positions] = values
        self.state[positions] = state
        if self.unseen is not None:
            pending, self._pending = self._pending, None
            self.unseen[positions] = False if pending is None or pending.size != state.size else pending

    def clear(self, positions: np.ndarray | slice) -> None:
        self.values[positions] = np.nan if self.kind == "numeric" else MISSING_CODE
        self.state[positions] = MISSING
        if self.unseen is not None:
            self.unseen[positions] = False


@dataclass
class WindowSnapshot:
    model_version: str
    prediction_ids: np.ndarray
    timestamps: np.ndarray
    features: dict[str, ColumnSnapshot] = field(default_factory=dict)
    outputs: dict[str, ColumnSnapshot] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.timestamps)


# Column slots' counts halve every this many rows: a name absent for a few thousand events
# no longer holds its column against one present in them.
HALVE_EVERY_ROWS = 1024


class ColumnGroup:
    """The features (or outputs) of a window: a capped, lazily grown set of columns.

    The ``reserved`` names (the schema) always get a column; the others compete for the rest by
    the number of events they are present in (``FrequentSlots``). A name without a column is
    counted in ``columns_capped`` (once per batch); a column taken back from a name that stopped
    arriving, in ``columns_reclaimed``."""

    def __init__(self, capacity: int, max_columns: int, max_categories: int, kinds: dict[str, Kind],
                 reserved: Sequence[str] = (), on_reclaim: Callable[[], None] | None = None):
        self.capacity = capacity
        self.max_columns = max_columns
        self.max_categories = max_categories
        self.kinds = kinds
        self.columns: dict[str, Column] = {}
        self.columns_capped = 0
        self.columns_reclaimed = 0
        self.on_reclaim = on_reclaim
        self.slots = FrequentSlots(max_columns, reserved, halve_every=HALVE_EVERY_ROWS,
                                   sketch_capacity=max(64, max_columns))
        self.seeds: dict[str, list[str]] = {}  # categories reserved in new columns (Column.reserve)
        self.seen: dict[str, SeenValues] = {}  # the reference's values, flagged in new columns (watch_unseen)
        # The float64-convertible arrays of the last write's all-number columns (the worker's
        # later stages, e.g. the input guard, reuse them instead of converting the lists again).
        self.converted: dict[str, np.ndarray] = {}

    def seed(self, seeds: dict[str, list[str]]) -> None:
        self.seeds.update(seeds)
        for name, categories in seeds.items():
            if name in self.columns:
                self.columns[name].reserve(categories)

    def watch_unseen(self, seen: dict[str, SeenValues]) -> None:
        """Flag values these columns' reference never held (replaces the previous sets)."""
        self.seen = dict(seen)
        for name, column in self.columns.items():
            column.watch_unseen(self.seen.get(name))

    def reserve(self, names: Sequence[str]) -> None:
        """Keep a column for these names from now on (a reference loaded after the start)."""
        for victim in self.slots.reserve(names):
            self._reclaim(victim)

    def _reclaim(self, name: str) -> None:
        if self.columns.pop(name, None) is not None:
            self.columns_reclaimed += 1
            if self.on_reclaim is not None:
                self.on_reclaim()

    def write(self, data: dict[str, list[Any]], positions: np.ndarray | slice, take: slice) -> None:
        written = set()
        converted = self.converted = {}
        slots, held = self.slots, self.slots.held
        if data:
            slots.tick(len(next(iter(data.values()))))
        for name, values in data.items():
            column = self.columns.get(name)
            if column is None:
                kind = self.kinds.get(name) or infer_kind(values)
                if kind is None:  # all null so far: nothing to learn the type from yet
                    continue
                admitted, victim = slots.place(name, len(values) - values.count(None))
                if victim is not None:
                    self._reclaim(victim)
                if not admitted:
                    self.columns_capped += 1
                    continue
                column = self.columns[name] = Column(kind, self.capacity, self.max_categories,
                                                     self.seeds.get(name, ()))
                if name in self.seen:
                    column.watch_unseen(self.seen[name])
            elif name in held:  # not the schema's: its column is kept by the events it is present in
                held[name] += len(values) - values.count(None)
            values = values[take] if take.start else values
            if column.kind == "numeric" and values:
                # to_numeric's common case inline: all numbers are written as one cast assignment
                # and a PRESENT fill, without the intermediate float64 and state arrays.
                arr = np.asarray(values)
                if arr.dtype.kind in "fiub" and arr.ndim == 1:
                    column.values[positions] = arr
                    column.state[positions] = PRESENT
                    written.add(name)
                    converted[name] = arr
                    continue
            encoded, state = column.encode(values)
            column.write(positions, encoded, state)
            written.add(name)
        for name, column in self.columns.items():
            if name not in written:
                column.clear(positions)

    def snapshot(self, order: np.ndarray) -> dict[str, ColumnSnapshot]:
        return {
            name: ColumnSnapshot(col.kind, col.values[order], col.state[order], tuple(col.categories),
                                 None if col.unseen is None else col.unseen[order])
            for name, col in self.columns.items()
        }


class Window:
    """A ring buffer of the most recent ``capacity`` events of one model version."""

    def __init__(self, model_version: str, capacity: int, max_age_seconds: float, *, max_features: int = 256,
                 max_outputs: int = 32, max_categories: int = 64, feature_kinds: dict[str, Kind] | None = None,
                 reserved_features: Sequence[str] = (), reserved_outputs: Sequence[str] = (),
                 on_reclaim: Callable[[str], None] | None = None, clock=time.time):
        self.model_version = model_version
        self.capacity = capacity
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        # on_reclaim("feature" or "output"): a column went to a more frequent name (counted)
        self.features = ColumnGroup(capacity, max_features, max_categories, dict(feature_kinds or {}),
                                    reserved_features, on_reclaim and (lambda: on_reclaim("feature")))
        self.outputs = ColumnGroup(capacity, max_outputs, max_categories, {}, reserved_outputs,
                                   on_reclaim and (lambda: on_reclaim("output")))
        self.prediction_ids = np.empty(capacity, dtype=object)
        self.timestamps = np.full(capacity, -np.inf)
        self._head = 0  # next write position
        self._size = 0
        self.appended_total = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def seed_categories(self, features: dict[str, list[str]], outputs: dict[str, list[str]]) -> None:
        """Reserve vocabulary codes for these categories (``Column.reserve``)."""
        with self._lock:
            self.features.seed(features)
            self.outputs.seed(outputs)

    def watch_unseen(self, features: dict[str, SeenValues], outputs: dict[str, SeenValues]) -> None:
        """Flag values the reference never held (``ColumnGroup.watch_unseen``)."""
        with self._lock:
            self.features.watch_unseen(features)
            self.outputs.watch_unseen(outputs)

    def reserve_columns(self, features: Sequence[str], outputs: Sequence[str]) -> None:
        """Keep columns for these names (``ColumnGroup.reserve``)."""
        with self._lock:
            self.features.reserve(features)
            self.outputs.reserve(outputs)

    def append(self, batch: EventBatch) -> int:
        """Add a batch; when it holds more rows than the window, only the newest are kept."""
        n = batch.n
        if n == 0:
            return 0
        ids = batch.ensure_ids()
        stamps = batch.ensure_timestamps()
        skip = max(0, n - self.capacity)
        take = slice(skip, None)
        with self._lock:
            kept = n - skip
            if self._head + kept <= self.capacity:  # no wrap: a slice, not an index array
                positions: np.ndarray | slice = slice(self._head, self._head + kept)
            else:
                positions = (self._head + np.arange(kept)) % self.capacity
            self.prediction_ids[positions] = ids[skip:]
            self.timestamps[positions] = stamps[skip:]
            self.features.write(batch.features, positions, take)
            batch.converted = self.features.converted if not skip else None
            self.outputs.write(batch.outputs, positions, take)
            self._head = int((self._head + n - skip) % self.capacity)
            self._size = min(self.capacity, self._size + n - skip)
            self.appended_total += n
        return n

    def _order(self) -> np.ndarray:
        if self._size < self.capacity:
            return np.arange(self._size)
        return (self._head + np.arange(self.capacity)) % self.capacity

    def snapshot(self, now: float | None = None) -> WindowSnapshot:
        """A consistent copy, oldest first, of the events younger than ``max_age_seconds``."""
        now = self.clock() if now is None else now
        with self._lock:
            order = self._order()
            stamps = self.timestamps[order]
            order = order[stamps >= now - self.max_age_seconds]
            return WindowSnapshot(
                model_version=self.model_version,
                prediction_ids=self.prediction_ids[order],
                timestamps=self.timestamps[order],
                features=self.features.snapshot(order),
                outputs=self.outputs.snapshot(order),
            )

    def live_events(self, now: float | None = None) -> int:
        """Events in the window that are within the age bound (cheap: no copy of columns)."""
        now = self.clock() if now is None else now
        with self._lock:
            return int(np.count_nonzero(self.timestamps >= now - self.max_age_seconds))

    def memory_bytes(self) -> int:
        columns = [*self.features.columns.values(), *self.outputs.columns.values()]
        return int(self.timestamps.nbytes + self.prediction_ids.nbytes
                   + sum(c.values.nbytes + c.state.nbytes + (0 if c.unseen is None else c.unseen.nbytes)
                         for c in columns))


class WindowStore:
    """One window per model version; versions beyond the cap share the ``other`` window."""

    def __init__(self, *, capacity: int, max_age_seconds: float, max_versions: int, max_features: int = 256,
                 max_outputs: int = 32, max_categories: int = 64, feature_kinds: dict[str, Kind] | None = None,
                 reserved_features: Sequence[str] = (), reserved_outputs: Sequence[str] = (),
                 on_reclaim: Callable[[str], None] | None = None, clock=time.time):
        self._kwargs = dict(capacity=capacity, max_age_seconds=max_age_seconds, max_features=max_features,
                            max_outputs=max_outputs, max_categories=max_categories,
                            feature_kinds=feature_kinds, on_reclaim=on_reclaim, clock=clock)
        self.max_versions = max_versions
        self._windows: dict[str, Window] = {}
        self._lock = threading.Lock()
        self._seeds: tuple[dict[str, list[str]], dict[str, list[str]]] = ({}, {})
        self._seen: tuple[dict[str, SeenValues], dict[str, SeenValues]] = ({}, {})
        self._reserved: tuple[list[str], list[str]] = (list(reserved_features), list(reserved_outputs))

    def seed_categories(self, features: dict[str, list[str]], outputs: dict[str, list[str]]) -> None:
        """Reserve these categories' codes in every window, present and future (the reference's)."""
        with self._lock:
            self._seeds = ({**self._seeds[0], **features}, {**self._seeds[1], **outputs})
            windows = list(self._windows.values())
        for window in windows:
            window.seed_categories(features, outputs)

    def watch_unseen(self, features: dict[str, SeenValues], outputs: dict[str, SeenValues]) -> None:
        """Flag values the reference never held in every window, present and future (replaces
        the previous reference's sets)."""
        with self._lock:
            self._seen = (dict(features), dict(outputs))
            windows = list(self._windows.values())
        for window in windows:
            window.watch_unseen(features, outputs)

    def reserve_columns(self, features: Sequence[str], outputs: Sequence[str]) -> None:
        """Keep columns for these names in every window, present and future (the reference's)."""
        with self._lock:
            self._reserved = (list(dict.fromkeys([*self._reserved[0], *features])),
                              list(dict.fromkeys([*self._reserved[1], *outputs])))
            windows = list(self._windows.values())
        for window in windows:
            window.reserve_columns(features, outputs)

    def drop(self, model_version: str) -> None:
        """Forget a version's window: its label slot went to a more frequent version."""
        with self._lock:
            if model_version in self._windows:
                self._windows = {v: w for v, w in self._windows.items() if v != model_version}

    def get(self, model_version: str) -> Window:
        """The window of an (already capped) version label."""
        window = self._windows.get(model_version)
        if window is None:
            with self._lock:
                window = self._windows.get(model_version)
                if window is None:
                    window = Window(model_version, **self._kwargs, reserved_features=self._reserved[0],
                                    reserved_outputs=self._reserved[1])
                    window.seed_categories(*self._seeds)
                    window.watch_unseen(*self._seen)
                    self._windows = {**self._windows, model_version: window}
        return window

    def windows(self) -> dict[str, Window]:
        return dict(self._windows)

    def snapshot(self, model_version: str) -> WindowSnapshot | None:
        window = self._windows.get(model_version)
        return window.snapshot() if window is not None else None
