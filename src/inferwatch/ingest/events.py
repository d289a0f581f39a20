"""The event: one prediction (one row of a request), carried in columnar batches.

Codecs turn request/response bodies into an ``EventBatch``; the window stores batches.
Columns are plain Python lists of JSON values here (``None`` = missing); the window turns
them into typed numpy arrays once, in the background worker.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any


class PayloadError(ValueError):
    """A body that cannot be decoded. ``reason`` is a bounded label value."""

    REASONS = (
        "invalid_json",
        "not_utf8",
        "unsupported_content_type",
        "unknown_format",
        "missing_field",
        "shape_mismatch",
        "row_count_mismatch",
        "too_large",
        "invalid_event",
        "decompression",
    )

    def __init__(self, reason: str, detail: str = ""):
        if reason not in self.REASONS:
            raise ValueError(f"unknown payload error reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class EventBatch:
    """N events in columns. Every column list has length ``n``."""

    n: int
    features: dict[str, list[Any]] = field(default_factory=dict)
    outputs: dict[str, list[Any]] = field(default_factory=dict)
    prediction_ids: list[str] | None = None
    timestamps: list[float] | None = None
    model_version: str | None = None
    source: str = "proxy"
    # Reasons (PayloadError.REASONS) for parts that could not be decoded while the rest could,
    # e.g. a response body that is not JSON under a request whose features decoded fine.
    errors: list[str] = field(default_factory=list)
    # Output name -> "class" where the payload says so (an OIP v2 INT/UINT/BOOL/BYTES tensor); a
    # hint for outputs ``predictions.outputs`` does not name.
    output_kinds: dict[str, str] = field(default_factory=dict)
    # Segment label values per segment feature (``segments.SegmentLabeler``), one per row; the
    # worker fills them before the batch reaches observers (drift counters, outputs, joins).
    segments: dict[str, Any] = field(default_factory=dict)
    # Per-row notes added by monitoring stages for the prediction log, e.g. the input guard's
    # {"outlier": {...}} for outlier rows: row index -> fields.
    annotations: dict[int, dict[str, Any]] | None = None
    # Feature columns the window converted to numeric arrays while appending the batch (all
    # numbers: int/float/bool dtypes), for the worker's later stages; set by ``Window.append``.
    converted: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for kind, columns in (("feature", self.features), ("output", self.outputs)):
            for name, column in columns.items():
                if len(column) != self.n:
                    raise PayloadError(
                        "row_count_mismatch",
                        f"{kind} {name!r} has {len(column)} values for {self.n} rows",
                    )

    def ensure_ids(self, base_id: str | None = None) -> list[str]:
        """Fill prediction ids: ``base_id`` for one row, ``base_id-<i>`` for many, else UUIDs."""
        if self.prediction_ids is None:
            if base_id is None:
                base_id = uuid.uuid4().hex
            if self.n == 1:
                self.prediction_ids = [base_id]
            else:
                self.prediction_ids = [f"{base_id}-{i}" for i in range(self.n)]
        return self.prediction_ids

    def ensure_timestamps(self, now: float | None = None) -> list[float]:
        if self.timestamps is None:
            self.timestamps = [time.time() if now is None else now] * self.n
        return self.timestamps


def rows_to_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Records (list of objects) to columns; a key absent from a row is ``None`` there."""
    names = dict.fromkeys(key for row in rows for key in row)
    return {name: [row.get(name) for row in rows] for name in names}


def matrix_to_columns(rows: list[Any], names: list[str] | None, prefix: str = "f") -> dict[str, list[Any]]:
    """Positional rows (list of lists) to columns named by ``names`` or ``<prefix><i>``."""
    if not rows:
        return {}
    width = max(len(row) if isinstance(row, (list, tuple)) else 1 for row in rows)
    if names is None or len(names) < width:
        names = list(names or []) + [f"{prefix}{i}" for i in range(len(names or []), width)]
    columns: dict[str, list[Any]] = {}
    for i in range(width):
        columns[names[i]] = [
            (row[i] if i < len(row) else None) if isinstance(row, (list, tuple)) else (row if i == 0 else None)
            for row in rows
        ]
    return columns
