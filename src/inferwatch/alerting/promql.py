"""PromQL that mirrors the sidecar's own statistics, so Prometheus can compute them fleet-wide.

Whenever a number exists twice (here in PromQL, in ``stats`` in Python), a test holds the two
equal on a real Prometheus (tests/test_drift_fleet.py).
"""

from __future__ import annotations

from inferwatch.stats.numeric import DEFAULT_EPS


def fleet_psi_rules(range_: str = "1h", eps: float = DEFAULT_EPS, selector: str = "") -> dict[str, str]:
    """Recording rules (record name -> PromQL) for PSI per feature across every replica.

    Current proportions are the bins' summed ``increase`` over ``range_`` divided by their total
    (a feature with no events in the range has no series: no division by zero); reference and
    current proportions are smoothed as ``(p + eps) / (1 + k * eps)`` with k bins, exactly as
    ``inferwatch.stats.psi`` does, so the result equals the sidecar's PSI on the same events.
    Rules of one group run in order, so each may use the ones before it. ``selector``: label
    matchers (no braces) for the sidecars' series, e.g. ``job=~".*inferwatch.*"``.
    """
    r = range_
    sel = f"{{{selector}}}" if selector else ""
    bins = f"model_version_feature_bin:inferwatch_feature_bin:increase{r}"
    total = f"model_version_feature:inferwatch_feature_bin:increase{r}"
    cur = f"model_version_feature_bin:inferwatch_feature_bin_ratio:smoothed{r}"
    ref = "model_feature_bin:inferwatch_feature_reference_ratio:smoothed"
    psi = f"model_version_feature:inferwatch_feature_psi:{r}"
    reference = f"max by (model, feature, bin) (inferwatch_feature_reference_ratio{sel})"
    k_eps = f"(1 + {eps!r} * count by (model, feature) ({reference}))"
    return {
        bins: f"sum by (model, model_version, feature, bin) (increase(inferwatch_feature_bin_total{sel}[{r}]))",
        total: f"sum by (model, model_version, feature) ({bins})",
        cur: f"({bins} / on (model, model_version, feature) group_left () ({total} > 0) + {eps!r})"
             f" / on (model, feature) group_left () {k_eps}",
        ref: f"({reference} + {eps!r}) / on (model, feature) group_left () {k_eps}",
        psi: f"sum by (model, model_version, feature) (({cur} - on (model, feature, bin) group_left () {ref})"
             f" * ln({cur} / on (model, feature, bin) group_left () {ref}))",
    }


def fleet_psi_expr(range_: str = "1h", eps: float = DEFAULT_EPS, selector: str = "") -> str:
    """The PSI rule as one self-contained expression (the earlier records inlined)."""
    rules = fleet_psi_rules(range_, eps, selector)
    names = list(rules)
    expr = rules[names[-1]]
    for name in reversed(names[:-1]):  # the latest first: its expression names earlier records
        expr = expr.replace(name, f"({rules[name]})")
    return expr


#: For the owner of prometheus/rules/: ``record: expr`` pairs of the fleet-wide PSI group.
FLEET_PSI_RULES = fleet_psi_rules("1h")
