"""Which task a model does when ``performance.task`` is ``auto``: the evidence, strongest first.

Whole numbers alone do not make classes: whole-dollar prices are integers too, and read as
classes they scored "accuracy 0.91" for predictions off by thousands. So the choice weighs, in
order: the configured type of the prediction output (``predictions.outputs.<name>.type``); a
score output beside the prediction (a classifier's probability); the reference profile's label
(categorical, or the values of its sample) and prediction output; and the values seen (the
prediction window and the labels): text is classes, fractions are values (unless they are
probabilities beside 0/1 labels), and whole numbers are classes only when few distinct values
(at most ``performance.max_classes``) repeat. Each rule gives a ``TaskChoice`` saying why and whether the evidence is weak (too few
values to tell), so ``/v1/status`` and the log can say so and how to set the task. Pure: values
in, a choice out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from inferwatch.ingest.values import as_number
from inferwatch.reference.format import CategoricalProfile, ColumnProfile

Task = Literal["classification", "regression"]

#: Fewer values than this and a count of distinct values tells nothing: the choice is weak.
MIN_EVIDENCE = 30
#: Whole numbers are classes when each distinct value is seen at least this often on average.
MIN_REPEATS = 3

HOW_TO_SET = ("set performance.task (classification or regression), or the prediction output's type in "
              "predictions.outputs (class or value), to choose")


@dataclass(frozen=True)
class TaskChoice:
    task: Task
    reason: str
    weak: bool = False

    def describe(self) -> str:
        """One line for /v1/status and the log: the task, why, and (when weak) how to set it."""
        text = f"auto: {self.task} because {self.reason}"
        return f"{text} (weak evidence; {HOW_TO_SET})" if self.weak else text


def from_output_type(name: str, output_type: str) -> TaskChoice | None:
    """``predictions.outputs.<name>.type``: class or score (a probability decided at the
    threshold) is a classifier, value a regression."""
    if output_type in ("class", "score"):
        return TaskChoice("classification", f"predictions.outputs.{name}.type is {output_type}")
    if output_type == "value":
        return TaskChoice("regression", f"predictions.outputs.{name}.type is value")
    return None


def from_profile(column: ColumnProfile, role: str, max_classes: int) -> TaskChoice | None:
    """A reference profile's column (its label, or the prediction output): categorical is
    classes; a numeric one is judged by its sample's values."""
    if isinstance(column, CategoricalProfile):
        return TaskChoice("classification", f"the reference profile's {role} {column.name!r} is categorical")
    choice = from_values(column.sample, (), max_classes)
    if choice is None:
        return None
    return TaskChoice(choice.task, f"the reference profile's {role} {column.name!r} has {choice.reason}", choice.weak)


def from_values(predictions: Iterable[Any], labels: Sequence[Any], max_classes: int) -> TaskChoice | None:
    """The values seen: predictions (e.g. the prediction window's) and labels. None: no value."""
    seen: tuple[list[float], list[float]] = ([], [])  # numbers of the predictions, of the labels
    for side, values in enumerate((predictions, labels)):
        for value in values:
            if value is None:
                continue
            if isinstance(value, (bool, np.bool_)):
                return TaskChoice("classification", "boolean values")
            number = as_number(value)
            if isinstance(value, str) and math.isnan(number):
                return TaskChoice("classification", f"text values such as {value[:40]!r}")
            if math.isfinite(number):
                seen[side].append(number)
    pred_x, label_x = np.asarray(seen[0], dtype=np.float64), np.asarray(seen[1], dtype=np.float64)
    x = np.concatenate([pred_x, label_x])
    if x.size == 0:
        return None
    fractional = x != np.floor(x)
    if fractional.any():
        if label_x.size and np.isin(label_x, (0.0, 1.0)).all() and ((pred_x >= 0) & (pred_x <= 1)).all():
            return TaskChoice("classification", "probabilities in [0, 1] beside 0/1 labels (decided at "
                              "performance.threshold)", weak=label_x.size < MIN_EVIDENCE)
        example = float(x[fractional][0])
        return TaskChoice("regression", f"values with a fraction (e.g. {example:g})")
    distinct = np.unique(x)
    d, n = int(distinct.size), int(x.size)
    counted = f"{d} distinct whole numbers among {n} values"
    low, high = float(distinct[0]), float(distinct[-1])
    codes_like = low >= -1 and high - low + 1 <= 2 * d  # 0 .. k-1, nearly every code used
    if d > max_classes:
        # More values than classes are tracked: amounts, counts, ages. Dense small codes may
        # still be a classifier with many classes, so that case is said to be weak.
        return TaskChoice("regression", f"{counted}, more than performance.max_classes ({max_classes})",
                          weak=codes_like)
    if n >= MIN_EVIDENCE and d * MIN_REPEATS <= n:
        return TaskChoice("classification", f"{counted}, each seen {n / d:.0f} times on average")
    # Few values: class numbers are small (0 .. k-1), amounts are not.
    if low >= -1 and high < max(max_classes, 2):
        return TaskChoice("classification", f"{counted}, all from -1 to {max(max_classes, 2) - 1}", weak=True)
    return TaskChoice("regression", f"{counted}, too few repeats for classes", weak=True)


def choose(candidates: Iterable[TaskChoice | None]) -> TaskChoice | None:
    """The first strong choice, in the order given (strongest evidence first); else the first
    weak one; None when there is no evidence at all."""
    weak: TaskChoice | None = None
    for choice in candidates:
        if choice is None:
            continue
        if not choice.weak:
            return choice
        weak = weak or choice
    return weak


__all__ = ["TaskChoice", "Task", "MIN_EVIDENCE", "HOW_TO_SET", "from_output_type", "from_profile", "from_values",
           "choose"]
