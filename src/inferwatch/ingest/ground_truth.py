"""Ground truth as it arrives: the body of ``POST /v1/labels`` parsed into a ``LabelBatch``.

Labels arrive late and separately (on the admin port) and name their prediction by id. This
module only checks and columnises them; the worker hands each batch to the performance monitor,
which joins it to the waiting predictions (``inferwatch.monitors.performance``). "Label" here is
the true answer of a prediction, not a Prometheus label.

Seldon Core's feedback (``POST /api/v1.0/feedback``, logged as an ``io.seldon.serving.feedback``
CloudEvent) is ground truth too: ``parse_feedback`` turns its ``truth`` message into labels of
the request it names.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from .events import PayloadError
from .seldon import feedback_puid, message_columns

_NUMBER = (int, float)


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


def _truth_labels(columns: dict[str, list[Any]], n: int) -> list[Any]:
    """One truth column is the label; several (a one-hot or a probability row, as Seldon's own
    multiclass feedback servers read it) give the index of the largest, like ``argmax``."""
    if len(columns) == 1:
        return next(iter(columns.values()))
    rows = list(zip(*columns.values())) if columns else [()] * n
    labels: list[Any] = []
    for row in rows:
        if not row or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
            raise PayloadError("unknown_format", "feedback truth: a row of several values must be numbers (one-hot)")
        labels.append(max(range(len(row)), key=row.__getitem__))
    return labels


def parse_feedback(body: bytes, request_id: str | None, max_batch: int) -> LabelBatch:
    """A Seldon ``Feedback`` (``{"request", "response", "truth", "reward"}``) to the labels of the
    prediction it answers: ``response.meta.puid`` when the client kept it, else ``request_id``
    (the CloudEvent's ``ce-requestid``: the ``Seldon-Puid`` the feedback was sent with). A truth of
    N rows labels ``<id>-0 .. <id>-(N-1)``, the ids the request's N events were given."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("invalid_json", f"feedback: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PayloadError("unknown_format", "feedback: expected a Seldon Feedback object")
    if data.get("truth") in (None, {}):
        raise PayloadError("missing_field", "feedback.truth: required (a reward alone is no label)")
    pid = feedback_puid(data) or request_id
    if not pid:
        raise PayloadError("missing_field", "feedback: no response.meta.puid and no ce-requestid to join by")
    n, columns = message_columns(data["truth"], None)
    if n > max_batch:
        raise PayloadError("too_large", f"feedback.truth: {n} labels exceed labels.max_batch ({max_batch})")
    labels = _truth_labels(columns, n)
    for label in labels:
        problem = _label_value_problem(label)
        if problem:
            raise PayloadError("unknown_format", f"feedback.truth: {problem}")
    ids = [pid] if n == 1 else [f"{pid}-{i}" for i in range(n)]
    return LabelBatch(ids, list(labels), [None] * n)


__all__ = ["LabelBatch", "parse_labels", "parse_feedback"]
