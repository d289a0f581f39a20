"""The registry of drift tests: one entry per method, read by everything that names one.

Configuration validation (which methods exist, for which column kinds), the drift evaluator
(what it computes and how it decides), the alert thresholds (which method names a rule may use)
and docs/drift.md all read this table, so a method is added or changed in one place.

``function`` is the pure reference implementation on one pair of count vectors (binned methods)
or samples (``ks``, ``wasserstein``); the evaluator computes the same numbers vectorised over many
features at once, and tests hold the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from .categorical import chi_squared_homogeneity, linf_distance, total_variation
from .numeric import hellinger, js_distance, kl_divergence, ks_2samp, psi, wasserstein_normalized
from .seen import unseen_test

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class DriftTest:
    name: str
    kinds: frozenset[str]         # column kinds it applies to
    decides_by: Literal["p_value", "distance"]
    # The distance at or above which a column drifts (docs/drift.md says why these values);
    # None for tests, which decide by a p-value against ``drift.alpha``.
    default_threshold: float | None
    description: str
    function: Callable[..., object]
    # Tests: the method whose score is the decision's effect size, compared with drift.min_effect
    # (docs/drift.md#one-rule-at-every-window-size); "" for distances.
    effect: str = ""

    @property
    def is_test(self) -> bool:
        return self.decides_by == "p_value"


_BOTH = frozenset({"numeric", "categorical"})
_NUMERIC = frozenset({"numeric"})
_CATEGORICAL = frozenset({"categorical"})

DRIFT_TESTS: dict[str, DriftTest] = {t.name: t for t in (
    DriftTest("ks", _NUMERIC, "p_value", None, "two-sample Kolmogorov-Smirnov test", ks_2samp, effect="ks"),
    DriftTest("psi", _BOTH, "distance", 0.2, "Population Stability Index over reference bins", psi),
    DriftTest("js", _BOTH, "distance", 0.1, "Jensen-Shannon distance (base 2) over reference bins", js_distance),
    DriftTest("hellinger", _NUMERIC, "distance", 0.1, "Hellinger distance over reference bins", hellinger),
    DriftTest("kl", _NUMERIC, "distance", 0.1, "Kullback-Leibler divergence over reference bins", kl_divergence),
    DriftTest("wasserstein", _NUMERIC, "distance", 0.1, "Wasserstein-1 distance over the reference's std",
              wasserstein_normalized),
    DriftTest("chi2", _CATEGORICAL, "p_value", None, "chi-squared test of homogeneity", chi_squared_homogeneity,
              effect="tv"),
    DriftTest("linf", _CATEGORICAL, "distance", 0.1, "largest change of a category's share (L-infinity)",
              linf_distance),
    DriftTest("tv", _CATEGORICAL, "distance", 0.1, "total variation distance: the share of mass that moved",
              total_variation),
    # Beside a categorical column's decision, not instead of it: the share of values the reference
    # never held (its seen-value set, format 4), tested against the rate of new values the
    # reference itself predicts (docs/drift.md#new-categories).
    DriftTest("unseen", _CATEGORICAL, "p_value", None, "share of values never seen in the reference "
              "(one-sided binomial test against the reference's expected rate of new values)", unseen_test,
              effect="unseen"),
)}

#: Every method name, in the registry's order.
DRIFT_METHODS: tuple[str, ...] = tuple(DRIFT_TESTS)
#: Methods that decide by a p-value (corrected across features together).
P_VALUE_METHODS: frozenset[str] = frozenset(t.name for t in DRIFT_TESTS.values() if t.is_test)
#: A test's effect-size method (the share of probability mass that moved: KS D for numbers, total
#: variation for categories), which its decision also requires to reach ``drift.min_effect``.
EFFECT_METHODS: dict[str, str] = {t.name: t.effect for t in DRIFT_TESTS.values() if t.effect}
#: Distance thresholds by method.
DEFAULT_THRESHOLDS: dict[str, float] = {t.name: t.default_threshold for t in DRIFT_TESTS.values()
                                        if t.default_threshold is not None}


def methods_for(kind: str) -> tuple[str, ...]:
    """The methods that apply to a column of ``kind`` ("numeric" or "categorical")."""
    return tuple(t.name for t in DRIFT_TESTS.values() if kind in t.kinds)


NUMERIC_METHODS = methods_for("numeric")
CATEGORICAL_METHODS = methods_for("categorical")
