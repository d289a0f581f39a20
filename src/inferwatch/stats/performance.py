"""Model performance statistics: predictions and labels in, numbers out.

Classification inputs are integer class codes (``0 .. k-1``, the classes present, densely coded),
binary scores are the probability of the positive class; regression inputs are floats. Every
function is vectorised (``np.bincount``, one sort for ROC-AUC) and agrees with scikit-learn's
function of the same name on the same data (tests/stats/test_stats_performance.py); scikit-learn
itself is a test dependency only. Undefined results (no rows, one class for ROC-AUC, a constant
target for R²) are NaN, never exceptions; a ratio with a zero denominator is 0, as scikit-learn's
``zero_division=0``.

``estimate_binary_performance`` is confidence-based performance estimation (CBPE): with
calibrated scores, a prediction of the positive class with score p is right with probability p,
so the expected confusion matrix, and from it accuracy, precision, recall and F1, follow from
the scores alone, before any label arrives; ROC-AUC is expected the same way, each row a positive
with weight p and a negative with weight 1 - p, ranked by the model's own score. Scores that are
not calibrated are first mapped by ``inferwatch.stats.calibration`` (the ``probability``
argument). ``estimate_standard_errors`` says how far the realised metrics would spread around
those expectations: their standard deviation over label sets drawn from the probabilities.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

#: The names of the metrics this module computes: the ``metric`` label of
#: ``inferwatch_model_performance`` and the keys the alert thresholds may name.
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "precision_macro", "recall_macro", "f1_macro",
                          "roc_auc", "log_loss", "confident_error_rate")
REGRESSION_METRICS = ("rmse", "mae", "mape", "r2", "adjusted_r2")
PERFORMANCE_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS
#: What CBPE estimates without labels (``inferwatch_estimated_performance``).
ESTIMATED_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "PERFORMANCE_METRICS",
    "ESTIMATED_METRICS",
    "confusion_matrix",
    "classification_metrics",
    "roc_auc",
    "log_loss",
    "regression_metrics",
    "adjusted_r2",
    "confident_error_rate",
    "estimate_binary_performance",
    "estimate_standard_errors",
    "expected_confusion",
    "expected_roc_auc",
]

_NAN = float("nan")
LOG_LOSS_EPS = float(np.finfo(np.float64).eps)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``k x k`` counts, rows = actual class, columns = predicted class (codes ``0 .. k-1``)."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} != {p.size}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                           positive: int | None = None, negative: int | None = None) -> dict[str, float]:
    """Accuracy; macro precision, recall and F1 over the classes present in either array; and,
    when ``positive`` is given and the problem is binary, precision, recall and F1 of the
    positive class (scikit-learn's ``average="binary"``). Binary: every class present is
    ``negative`` or ``positive`` (without ``negative``: at most two classes are present), so a
    multiclass window that happens to hold two other classes gets no positive-class figures.
    Empty input: ``{}``."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    if t.size == 0:
        return {}
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} != {p.size}")
    # The diagonal and the margins of the confusion matrix, without the k x k matrix itself:
    # O(n + k), so a window with thousands of distinct classes stays cheap.
    tp = np.bincount(t[t == p], minlength=n_classes).astype(np.float64)
    actual, predicted = np.bincount(t, minlength=n_classes), np.bincount(p, minlength=n_classes)
    precision, recall = _ratio(tp, predicted), _ratio(tp, actual)
    f1 = _ratio(2 * tp, actual + predicted)
    present = (actual + predicted) > 0
    out = {
        "accuracy": float(tp.sum() / t.size),
        "precision_macro": float(precision[present].mean()),
        "recall_macro": float(recall[present].mean()),
        "f1_macro": float(f1[present].mean()),
    }
    if negative is None:
        binary = int(present.sum()) <= 2
    else:
        others = np.ones(n_classes, dtype=bool)
        others[[c for c in (negative, positive) if c is not None and 0 <= c < n_classes]] = False
        binary = not present[others].any()
    if positive is not None and 0 <= positive < n_classes and binary:
        out.update(precision=float(precision[positive]), recall=float(recall[positive]), f1=float(f1[positive]))
    return out


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of binary labels (1 = positive) and scores, ties counted half
    (the Mann-Whitney U statistic over n_pos * n_neg). NaN unless both classes are present."""
    t = np.asarray(y_true).ravel().astype(bool)
    s = np.asarray(score, dtype=np.float64).ravel()
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return _NAN
    ranks = rankdata(s)  # average ranks for ties
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def log_loss(y_true: np.ndarray, score: np.ndarray, eps: float = LOG_LOSS_EPS) -> float:
    """Mean binary cross-entropy of labels (1 = positive) and positive-class probabilities,
    clipped to ``[eps, 1 - eps]`` as scikit-learn does. Empty input: NaN."""
    t = np.asarray(y_true).ravel().astype(bool)
    p = np.clip(np.asarray(score, dtype=np.float64).ravel(), eps, 1.0 - eps)
    if t.size == 0:
        return _NAN
    return float(-np.mean(np.where(t, np.log(p), np.log1p(-p))))


def confident_error_rate(y_true: np.ndarray, score: np.ndarray, predicted_positive: np.ndarray,
                         confident_score: float) -> float:
    """Share of binary predictions that were confident and wrong: the probability the model gave
    the class it chose (``score`` for a positive decision, ``1 - score`` for a negative one) is at
    least ``confident_score``, and the label is the other class. Empty input: NaN."""
    t = np.asarray(y_true).ravel().astype(bool)
    s = np.asarray(score, dtype=np.float64).ravel()
    pos = np.asarray(predicted_positive).ravel().astype(bool)
    if t.size == 0:
        return _NAN
    confidence = np.where(pos, s, 1.0 - s)
    return float(np.count_nonzero((confidence >= confident_score) & (pos != t)) / t.size)


def adjusted_r2(r2: float, n: int, n_features: int) -> float:
    """``1 - (1 - R²)(n - 1)/(n - p - 1)``; NaN when ``n - p - 1 <= 0``."""
    if not math.isfinite(r2) or n - n_features - 1 <= 0:
        return _NAN
    return 1.0 - (1.0 - r2) * (n - 1) / (n - n_features - 1)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_features: int | None = None,
                       mape_min_abs_target: float = 0.0) -> dict[str, float]:
    """RMSE, MAE, MAPE, R² and (with ``n_features``) adjusted R². Empty input: ``{}``.

    MAPE is safe near zero: it is the mean over the rows whose ``|y|`` exceeds
    ``mape_min_abs_target`` (default: every nonzero truth). scikit-learn divides a true 0 by
    machine epsilon instead, so one zero among thousands of rows reads as an error of ~1e15 and
    hides every real change; rows left out are simply not part of this ratio (the other metrics
    keep them). No row left: MAPE is NaN. On rows that are all kept it equals scikit-learn's.
    R² of a constant target is NaN (scikit-learn's ``force_finite=False``).
    """
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} != {p.size}")
    if t.size == 0:
        return {}
    err = p - t
    sse = float(np.dot(err, err))
    centred = t - t.mean()
    sst = float(np.dot(centred, centred))
    r2 = 1.0 - sse / sst if sst > 0 else _NAN
    out = {
        "rmse": math.sqrt(sse / t.size),
        "mae": float(np.mean(np.abs(err))),
        "mape": _mape(t, err, mape_min_abs_target),
        "r2": r2,
    }
    if n_features is not None:
        out["adjusted_r2"] = adjusted_r2(r2, t.size, n_features)
    return out


def _mape(t: np.ndarray, err: np.ndarray, min_abs_target: float) -> float:
    kept = np.abs(t) > min_abs_target
    if not kept.any():
        return _NAN
    return float(np.mean(np.abs(err[kept]) / np.abs(t[kept])))


def expected_confusion(score: np.ndarray, predicted_positive: np.ndarray) -> tuple[float, float, float, float]:
    """Expected (TP, FP, FN, TN) of binary predictions whose calibrated positive-class
    probability is ``score``: a positive prediction is a true positive with probability p, a
    negative prediction a false negative with probability p."""
    p = np.asarray(score, dtype=np.float64).ravel()
    pos = np.asarray(predicted_positive, dtype=bool).ravel()
    tp = float(p[pos].sum())
    fp = float(pos.sum()) - tp
    fn = float(p[~pos].sum())
    tn = float((~pos).sum()) - fn
    return tp, fp, fn, tn


def estimate_binary_performance(score: np.ndarray, predicted_positive: np.ndarray | None = None,
                                threshold: float = 0.5, probability: np.ndarray | None = None) -> dict[str, float]:
    """CBPE: accuracy, precision, recall, F1 and ROC-AUC expected from the scores alone.

    ``predicted_positive`` is the model's decision per row (default ``score >= threshold``);
    ``probability`` the calibrated probability of the positive class per row (default: the
    score itself, taken as calibrated). Rows with a NaN score or probability are ignored; none
    left: ``{}``. ROC-AUC is left out when the expected count of either class is zero.
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    pos = (s >= threshold) if predicted_positive is None else np.asarray(predicted_positive, dtype=bool).ravel()
    p = s if probability is None else np.asarray(probability, dtype=np.float64).ravel()
    keep = np.isfinite(s) & np.isfinite(p)
    s, p, pos = s[keep], np.clip(p[keep], 0.0, 1.0), pos[keep]
    if p.size == 0:
        return {}
    tp, fp, fn, tn = expected_confusion(p, pos)
    out = {
        "accuracy": (tp + tn) / p.size,
        "precision": tp / (tp + fp) if tp + fp > 0 else 0.0,
        "recall": tp / (tp + fn) if tp + fn > 0 else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0,
    }
    auc = expected_roc_auc(s, p)
    if math.isfinite(auc):
        out["roc_auc"] = auc
    return out


def expected_roc_auc(score: np.ndarray, probability: np.ndarray) -> float:
    """The ROC-AUC expected when row i is positive with probability ``probability[i]``,
    independently, ranked by ``score`` (ties half): the expected Mann-Whitney count over the
    expected number of (positive, negative) pairs of distinct rows. NaN when that is zero."""
    s = np.asarray(score, dtype=np.float64).ravel()
    q = np.clip(np.asarray(probability, dtype=np.float64).ravel(), 0.0, 1.0)
    neg = 1.0 - q
    if s.size < 2:
        return _NAN
    values, group = np.unique(s, return_inverse=True)
    neg_by_value = np.bincount(group, weights=neg, minlength=values.size)
    below = np.cumsum(neg_by_value) - neg_by_value  # expected negatives scored strictly lower
    tied = neg_by_value[group] - neg  # expected negatives with the same score, the row itself left out
    pairs = float(q.sum() * neg.sum() - np.dot(q, neg))
    if pairs <= 0:
        return _NAN
    return float(np.dot(q, below[group] + 0.5 * tied) / pairs)


#: Label sets drawn for ``estimate_standard_errors``: the standard error's own relative error is
#: about 1 / sqrt(2 * draws), 5% at 200.
ESTIMATE_DRAWS = 200
_DRAW_CELLS = 2_000_000  # draws x rows held at once (16 MB of float64), so memory stays bounded


def estimate_standard_errors(score: np.ndarray, probability: np.ndarray, predicted_positive: np.ndarray,
                             draws: int = ESTIMATE_DRAWS, seed: int = 0,
                             reference_rows: int | None = None) -> dict[str, float]:
    """The standard error of each CBPE estimate: the standard deviation of the realised
    accuracy, precision, recall, F1 and ROC-AUC of these rows over ``draws`` label sets drawn
    with ``P(positive) = probability`` (a fixed seed, so the same window gives the same figure).
    It is the spread the realised metric has around the estimate when the probabilities are
    right. With ``reference_rows`` (the rows a calibration map was fitted on) the map's own
    sampling error is added as if the window's rows had been the reference's: the variance
    times ``1 + n / reference_rows`` (the map averages reference labels the way the realised
    metric averages the window's). NaN rows are ignored."""
    s = np.asarray(score, dtype=np.float64).ravel()
    q = np.asarray(probability, dtype=np.float64).ravel()
    pos = np.asarray(predicted_positive, dtype=bool).ravel()
    keep = np.isfinite(s) & np.isfinite(q)
    s, q, pos = s[keep], np.clip(q[keep], 0.0, 1.0), pos[keep].astype(np.float64)
    n = s.size
    if n < 2 or draws < 2:
        return {}
    rng = np.random.default_rng(seed)
    ranks = rankdata(s)
    predicted = float(pos.sum())
    samples: dict[str, list[np.ndarray]] = {m: [] for m in ESTIMATED_METRICS}
    step = max(1, _DRAW_CELLS // n)
    for start in range(0, draws, step):
        y = (rng.random((min(step, draws - start), n)) < q).astype(np.float64)
        positives = y.sum(axis=1)
        tp = y @ pos
        fp, fn = predicted - tp, positives - tp
        tn = (n - predicted) - fn
        samples["accuracy"].append((tp + tn) / n)
        samples["precision"].append(tp / predicted if predicted > 0 else np.zeros_like(tp))
        samples["recall"].append(_ratio(tp, positives))
        samples["f1"].append(_ratio(2 * tp, 2 * tp + fp + fn))
        pairs = positives * (n - positives)
        u = y @ ranks - positives * (positives + 1) / 2.0
        samples["roc_auc"].append(np.divide(u, pairs, out=np.full_like(u, np.nan), where=pairs > 0))
    inflation = math.sqrt(1.0 + n / reference_rows) if reference_rows else 1.0
    out = {}
    for metric, chunks in samples.items():
        values = np.concatenate(chunks)
        values = values[np.isfinite(values)]
        if values.size >= 2:
            out[metric] = float(np.std(values, ddof=1)) * inflation
    return out
