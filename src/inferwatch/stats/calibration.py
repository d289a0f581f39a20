"""Calibration maps: a binary classifier's score to the probability that the positive class is true.

Confidence-based performance estimation reads the expected confusion matrix off the scores, which
is only right when a score of 0.8 is right 80% of the time; real models are often over- or
under-confident. Fitted on a reference where both the score and the label are known, a monotone
map turns the score into that probability, and the estimate is computed from mapped scores.

- ``isotonic``: the non-decreasing step function closest to the labels in squared error, by pool
  adjacent violators (``isotonic_regression``: scikit-learn's ``IsotonicRegression`` knots, the
  tests hold the two equal). Used from ``MIN_ISOTONIC_ROWS`` reference rows. The map is not the
  step function itself, for what a shifted window does to it: its rows land in the end blocks
  and beyond the reference, where a step says the same probability for every row (so the rows'
  own order, which ROC-AUC is, counts for nothing) and a handful of extreme reference rows that
  were all positive say 1.0, certainly right. Measured in benchmarks/cbpe.py, either moved the
  estimated ROC-AUC by several hundredths. So: an end block holding under ``END_BLOCK_SHARE``
  of the rows is pooled into its neighbour; the end blocks take Laplace's rule of succession,
  ``(positives + 1) / (rows + 2)``; the map interpolates linearly between the blocks' centres
  (the mean logit of their scores) on the logit scale of both score and probability
  ("centred isotonic regression"); and past the outer centres it continues with the slope of
  a Platt fit on the same rows.
- ``platt``: a logistic regression on the score's logit (two parameters, Platt's smoothed
  targets), for smaller references, where a step function fitted on a few hundred rows would
  be mostly noise.

Fewer than ``MIN_CALIBRATION_ROWS`` usable rows, or fewer than ``MIN_CLASS_ROWS`` of either
class: no map (``fit_calibration`` returns None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_CALIBRATION_ROWS = 100
MIN_CLASS_ROWS = 10
MIN_ISOTONIC_ROWS = 1000
END_BLOCK_SHARE = 0.01
_LOGIT_EPS = 1e-12  # scores of exactly 0 or 1 get a finite logit

__all__ = [
    "MIN_CALIBRATION_ROWS",
    "MIN_CLASS_ROWS",
    "MIN_ISOTONIC_ROWS",
    "END_BLOCK_SHARE",
    "CalibrationMap",
    "fit_calibration",
    "isotonic_regression",
    "pool_adjacent_violators",
    "platt_scaling",
]


def pool_adjacent_violators(y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``y`` in weighted squared error (PAV: adjacent
    blocks that decrease are merged into their weighted mean until none does)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    w = np.asarray(weight, dtype=np.float64).ravel()
    means, weights, sizes = np.empty(y.size), np.empty(y.size), np.empty(y.size, dtype=np.int64)
    top = -1
    for value, wt in zip(y.tolist(), w.tolist()):  # one pass with a stack of blocks
        top += 1
        means[top], weights[top], sizes[top] = value, wt, 1
        while top > 0 and means[top - 1] >= means[top]:
            total = weights[top - 1] + weights[top]
            means[top - 1] = (means[top - 1] * weights[top - 1] + means[top] * weights[top]) / total
            weights[top - 1] = total
            sizes[top - 1] += sizes[top]
            top -= 1
    return np.repeat(means[: top + 1], sizes[: top + 1])


def isotonic_regression(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Knots ``(xs, ys)`` of the isotonic fit of ``y`` on ``x``: equal ``x`` pooled first (their
    weighted mean ``y``), then PAV, then only the ends of each constant block kept, which
    ``np.interp`` evaluates exactly as the full fit. NaN pairs are ignored."""
    xs, fitted, _ = _isotonic_fit(x, y, weight)
    return _knots(xs, fitted)


def _isotonic_fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct ``x``, the isotonic fit at each, and the weight at each."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    w = np.ones_like(x) if weight is None else np.asarray(weight, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(w)
    x, y, w = x[keep], y[keep], w[keep]
    if x.size == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    xs, inverse = np.unique(x, return_inverse=True)
    wsum = np.bincount(inverse, weights=w, minlength=xs.size)
    ymean = np.bincount(inverse, weights=w * y, minlength=xs.size) / wsum
    return xs, pool_adjacent_violators(ymean, wsum), wsum


def _pool_light_ends(fitted: np.ndarray, weight: np.ndarray, min_weight: float) -> np.ndarray:
    """The fit with its first and last constant blocks merged inward (weighted mean, so the
    result stays non-decreasing) until each holds at least ``min_weight``."""
    starts = np.flatnonzero(np.r_[True, fitted[1:] != fitted[:-1]])
    bounds = [*starts.tolist(), fitted.size]
    blocks = [[a, b] for a, b in zip(bounds[:-1], bounds[1:])]

    def mean(block: list[int]) -> float:
        a, b = block
        return float(np.dot(fitted[a:b], weight[a:b]) / weight[a:b].sum())

    while len(blocks) > 1 and weight[blocks[0][0]:blocks[0][1]].sum() < min_weight:
        blocks[1][0] = blocks[0][0]
        blocks.pop(0)
    while len(blocks) > 1 and weight[blocks[-1][0]:blocks[-1][1]].sum() < min_weight:
        blocks[-2][1] = blocks[-1][1]
        blocks.pop()
    out = fitted.copy()
    for block in (blocks[0], blocks[-1]):
        a, b = block
        # Laplace's rule of succession: an end block whose rows were all one class says
        # "very likely", never "certain" (kept between its neighbours' values, so still monotone).
        total = float(weight[a:b].sum())
        out[a:b] = (mean(block) * total + 1.0) / (total + 2.0)
    if len(blocks) > 1:
        out[: blocks[0][1]] = min(out[0], out[blocks[1][0]])
        out[blocks[-1][0]:] = max(out[-1], out[blocks[-2][1] - 1])
    return out


def _centred_knots(xs: np.ndarray, fitted: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One knot per constant block: (score at the block's weighted mean logit, block value)."""
    starts = np.flatnonzero(np.r_[True, fitted[1:] != fitted[:-1]])
    z = _logit(xs) * weight
    centres = np.add.reduceat(z, starts) / np.add.reduceat(weight, starts)
    return _sigmoid(centres), fitted[starts]


def _knots(xs: np.ndarray, fitted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ends = np.ones(xs.size, dtype=bool)  # a knot where the value changes on either side
    if xs.size > 2:
        ends[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    return xs[ends], fitted[ends]


def _logit(score: np.ndarray) -> np.ndarray:
    p = np.clip(score, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


def platt_scaling(score: np.ndarray, outcome: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """``(slope, intercept)`` of ``P(positive) = sigmoid(slope * logit(score) + intercept)`` by
    Newton's method on the log loss, with Platt's smoothed targets ``(n+ + 1) / (n+ + 2)`` and
    ``1 / (n- + 2)`` so separable data still has a finite fit."""
    z = _logit(np.asarray(score, dtype=np.float64).ravel())
    y = np.asarray(outcome, dtype=bool).ravel()
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    target = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    design = np.column_stack((z, np.ones_like(z)))
    def loss(b: np.ndarray) -> float:
        t = design @ b  # log(1 + e^t) - target * t, stably
        return float(np.sum(np.logaddexp(0.0, t) - target * t))

    beta = np.array([1.0, 0.0])
    current = loss(beta)
    for _ in range(iterations):
        p = _sigmoid(design @ beta)
        gradient = design.T @ (p - target)
        hessian = (design * (p * (1.0 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        while True:  # halve the Newton step until the loss does not rise (far from the optimum it can)
            trial = beta - step
            value = loss(trial)
            if value <= current or np.max(np.abs(step)) < 1e-12:
                break
            step = step / 2.0
        beta, improvement, current = trial, current - value, value
        if np.max(np.abs(step)) < 1e-10 or improvement < 1e-12 * max(1.0, abs(current)):
            break
    return float(beta[0]), float(beta[1])


@dataclass(frozen=True)
class CalibrationMap:
    """A fitted score -> probability map: ``isotonic`` knots or ``platt`` coefficients, with
    the reference rows (and positives among them) it was fitted on."""

    method: str
    rows: int
    positives: int
    knots_x: np.ndarray = field(default_factory=lambda: np.empty(0))
    knots_y: np.ndarray = field(default_factory=lambda: np.empty(0))
    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, score: np.ndarray) -> np.ndarray:
        """The calibrated probability of every score (NaN stays NaN), vectorised."""
        s = np.asarray(score, dtype=np.float64)
        if self.method == "isotonic":  # logit-linear between block centres, the tail slope past them
            z, zk, lk = _logit(s), _logit(self.knots_x), _logit(self.knots_y)
            inner = np.interp(z, zk, lk)
            below = lk[0] + self.slope * (z - zk[0])
            above = lk[-1] + self.slope * (z - zk[-1])
            return _sigmoid(np.where(z < zk[0], below, np.where(z > zk[-1], above, inner)))
        return np.where(np.isnan(s), np.nan, _sigmoid(self.slope * _logit(s) + self.intercept))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "rows": self.rows, "positives": self.positives}
        if self.method == "isotonic":
            out.update(x=self.knots_x.tolist(), y=self.knots_y.tolist(), tail_slope=self.slope)
        else:
            out.update(slope=self.slope, intercept=self.intercept)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationMap:
        method = data.get("method")
        rows, positives = int(data.get("rows", 0)), int(data.get("positives", 0))
        if method == "isotonic":
            x = np.asarray(data["x"], dtype=np.float64)
            y = np.asarray(data["y"], dtype=np.float64)
            tail = float(data.get("tail_slope", 0.0))
            if x.size == 0 or x.size != y.size or np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0) \
                    or not np.all((x > 0) & (x < 1) & (y > 0) & (y < 1)) or not (tail >= 0 and math.isfinite(tail)):
                raise ValueError("isotonic calibration: x must increase strictly and y not decrease, both of "
                                 "one non-zero length, strictly between 0 and 1; tail_slope finite, >= 0")
            return cls("isotonic", rows, positives, knots_x=x, knots_y=y, slope=tail)
        if method == "platt":
            slope, intercept = float(data["slope"]), float(data["intercept"])
            if not (math.isfinite(slope) and math.isfinite(intercept)):
                raise ValueError("platt calibration: slope and intercept must be finite")
            return cls("platt", rows, positives, slope=slope, intercept=intercept)
        raise ValueError(f"unknown calibration method {method!r} (isotonic or platt)")


def fit_calibration(score: np.ndarray, outcome: np.ndarray) -> CalibrationMap | None:
    """The calibration map of ``score`` for the boolean ``outcome`` (the positive class is
    true): isotonic from ``MIN_ISOTONIC_ROWS`` usable rows, Platt scaling below, None under
    ``MIN_CALIBRATION_ROWS`` or ``MIN_CLASS_ROWS`` of either class. NaN scores are ignored."""
    s = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(outcome, dtype=bool).ravel()
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    positives = int(y.sum())
    if s.size < MIN_CALIBRATION_ROWS or min(positives, s.size - positives) < MIN_CLASS_ROWS:
        return None
    if s.size >= MIN_ISOTONIC_ROWS:
        xs, fitted, weight = _isotonic_fit(s, y.astype(np.float64), None)
        xs, ys = _centred_knots(xs, _pool_light_ends(fitted, weight, END_BLOCK_SHARE * s.size), weight)
        tail = max(platt_scaling(s, y)[0], 0.0)
        return CalibrationMap("isotonic", int(s.size), positives, knots_x=xs, knots_y=ys, slope=tail)
    slope, intercept = platt_scaling(s, y)
    return CalibrationMap("platt", int(s.size), positives, slope=slope, intercept=intercept)
