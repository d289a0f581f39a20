"""The quarantine log: JSON lines of the events that failed a check or were outliers, with reasons."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from inferwatch.ingest.events import EventBatch
from inferwatch.support.jsonlines import RotatingFile, dumps, redact_value

from .evaluate import BatchCheck

log = logging.getLogger(__name__)


class QuarantineLog:
    """Lines rotated like the prediction log's; a failing disk is counted, never raised."""

    def __init__(self, path: str, max_bytes: int, backup_count: int):
        self.path = path
        self._file: RotatingFile | None = RotatingFile(path, max_bytes, backup_count)
        self.written = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._failing = False

    def write(self, lines: list[bytes], lost: int = 0) -> None:
        with self._lock:
            if self._file is None:
                self.errors += len(lines) + lost
                return
            try:
                self._file.write(lines)
                self._failing = False
            except Exception as exc:  # noqa: BLE001 - a failing disk never stops monitoring
                if not self._failing:
                    log.warning("quarantine log: cannot write %s: %s", self.path, exc)
                    self._failing = True
            self.written += self._file.progress
            self.errors += lost + len(lines) - self._file.progress

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def quarantine_lines(batch: EventBatch, check: BatchCheck, *, model: str, version: str,
                     redact: frozenset[str]) -> tuple[list[bytes], int]:
    """(lines, events that could not be encoded) for the failed and outlier events of a batch.

    Each line has the event's id, timestamp, reasons (feature and issue), its features (redacted
    like the prediction log's) and the outlier note the batch's annotations hold for it."""
    bad = check.failed.copy()
    if check.outlier is not None:
        bad |= check.outlier
    reasons: dict[int, list[dict[str, str]]] = {i: [] for i in np.flatnonzero(bad).tolist()}
    for feature, issue, mask in check.cells:
        for i in np.flatnonzero(mask).tolist():
            reasons[i].append({"feature": feature, "issue": issue})
    ids = batch.ensure_ids()
    stamps = batch.ensure_timestamps()
    annotations = batch.annotations or {}
    lines, lost = [], 0
    for i, why in reasons.items():
        try:
            line: dict[str, Any] = {
                "prediction_id": ids[i], "timestamp_unix": stamps[i], "model": model, "model_version": version,
                "reasons": why, "features": {name: redact_value(name, column[i], redact)
                                             for name, column in batch.features.items()}}
            if i in annotations and "outlier" in annotations[i]:
                line["outlier"] = annotations[i]["outlier"]
            lines.append((dumps(line) + "\n").encode("utf-8"))
        except Exception:  # noqa: BLE001
            lost += 1
    return lines, lost
