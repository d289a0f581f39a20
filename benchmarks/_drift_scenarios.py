"""Data for benchmarks/detection_quality.py: 100 stationary features of mixed shapes, the changes
issue 19 names, real datasets bundled with scikit-learn, and window snapshots for the evaluator."""

from __future__ import annotations

import numpy as np

from inferwatch.pipeline.window import ColumnSnapshot, WindowSnapshot

CAT8 = tuple(f"c{i}" for i in range(8))
CAT8_P = np.array([0.30, 0.22, 0.15, 0.12, 0.09, 0.06, 0.04, 0.02])
# A 300-level column, Zipf-like (s = 1.1): the reference's top 20 hold 65% of the mass, `other` the other third.
HIGH = tuple(f"h{i}" for i in range(300)) + ("brand-new",)
HIGH_P = 1.0 / np.arange(1, 301) ** 1.1
HIGH_P /= HIGH_P.sum()
SHAPES = {"n": 50, "l": 15, "z": 10, "i": 10, "u": 5}   # normal, lognormal, zero-inflated, Poisson, uniform
N_CAT8 = 9                                             # + one 300-level column: 100 features

# name -> (the feature it changes, the keyword of `draw`)
SCENARIOS: dict[str, tuple[str, dict]] = {
    "stationary": ("", {}),
    "single extreme value (135,702 in a lognormal column)": ("", {"extreme": True}),
    "mean shift 0.5σ (one normal feature)": ("n0", {"shift": 0.5}),
    "variance ×1.5 (one normal feature)": ("n0", {"scale": 1.5}),
    "heavy tails: lognormal (σ_log 1.4) ×1.2": ("l0", {"lognormal_scale": 1.2}),
    "zero inflation: zeros 60% → 54%": ("z0", {"zeros": 0.54}),
    "category swap 30% ↔ 22%": ("c0", {"swap": True}),
    "new category in 5% of rows (300-level column)": ("h0", {"new_share": 0.05}),
    "correlation 0 → 0.7 (two normal features, marginals unchanged)": ("n1", {"rho": 0.7}),
}


def draw(n: int, rng: np.random.Generator, *, shift: float = 0.0, scale: float = 1.0, lognormal_scale: float = 1.0,
         zeros: float = 0.60, swap: bool = False, new_share: float = 0.0, rho: float = 0.0,
         extreme: bool = False) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Numeric columns and categorical codes (into CAT8, or HIGH for `h0`) of n rows."""
    num: dict[str, np.ndarray] = {}
    for i in range(SHAPES["n"]):
        num[f"n{i}"] = rng.normal(shift, scale, n) if i == 0 else rng.normal(size=n)
    if rho:
        num["n1"] = rho * num["n0"] + np.sqrt(1 - rho ** 2) * num["n1"]
    for i in range(SHAPES["l"]):
        num[f"l{i}"] = rng.lognormal(3.0, 1.4, n) * (lognormal_scale if i == 0 else 1.0)
    for i in range(SHAPES["z"]):
        share = zeros if i == 0 else 0.60
        num[f"z{i}"] = np.where(rng.random(n) < share, 0.0, rng.gamma(2.0, 50.0, n))
    for i in range(SHAPES["i"]):
        num[f"i{i}"] = rng.poisson(4.0, n).astype(np.float64)
    for i in range(SHAPES["u"]):
        num[f"u{i}"] = rng.random(n)
    if extreme:
        num["l1"][int(rng.integers(n))] = 135_702.0
    cat: dict[str, np.ndarray] = {}
    for i in range(N_CAT8):
        p = CAT8_P.copy()
        if swap and i == 0:
            p[[0, 1]] = p[[1, 0]]
        cat[f"c{i}"] = rng.choice(len(CAT8), n, p=p).astype(np.int32)
    high = rng.choice(300, n, p=HIGH_P).astype(np.int32)
    if new_share:
        high[rng.random(n) < new_share] = 300
    cat["h0"] = high
    return num, cat


def snapshot(num: dict[str, np.ndarray], cat: dict[str, np.ndarray]) -> WindowSnapshot:
    n = len(next(iter(num.values())))
    zero = np.zeros(n, dtype=np.uint8)
    features = {k: ColumnSnapshot("numeric", v, zero) for k, v in num.items()}
    features.update({k: ColumnSnapshot("categorical", v, zero, HIGH if k == "h0" else CAT8) for k, v in cat.items()})
    return WindowSnapshot("1", np.empty(n, dtype=object), np.zeros(n), features, {})


def profile_columns(num: dict[str, np.ndarray], cat: dict[str, np.ndarray]) -> dict[str, object]:
    """The columns as ``build_profile`` takes them (categories as their names)."""
    names = {k: np.asarray(HIGH if k == "h0" else CAT8, dtype=object) for k in cat}
    return {**num, **{k: list(names[k][v]) for k, v in cat.items()}}


def real_datasets() -> dict[str, np.ndarray]:
    """Datasets that ship inside scikit-learn (no download): name -> rows x numeric features."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

    return {"diabetes (442 x 10)": load_diabetes().data, "wine (178 x 13)": load_wine().data,
            "breast cancer (569 x 30)": load_breast_cancer().data}


def bootstrap(data: np.ndarray, n: int, rng: np.random.Generator, *, shift: float = 0.0,
              tilt: float = 0.0) -> dict[str, np.ndarray]:
    """n rows drawn with replacement. ``shift``: feature 0 moved by that many of its std;
    ``tilt``: a covariate shift, rows drawn with weight exp(tilt * z) of feature 0's z-score, so
    every feature correlated with it moves too."""
    if tilt:
        z = (data[:, 0] - data[:, 0].mean()) / data[:, 0].std()
        w = np.exp(tilt * z)
        rows = rng.choice(len(data), n, p=w / w.sum())
    else:
        rows = rng.integers(len(data), size=n)
    x = data[rows].copy()
    x[:, 0] += shift * data[:, 0].std()
    return {f"f{j}": x[:, j] for j in range(x.shape[1])}
