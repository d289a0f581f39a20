"""PromQL building blocks: durations, numbers as PromQL reads them, selectors, label sets, and
the fleet-wide PSI that mirrors the sidecar's own statistic.

Whenever a number exists twice (here in PromQL, in ``stats`` in Python), a test holds the two
equal on a real Prometheus (tests/test_drift_fleet.py).
"""

from __future__ import annotations

import re

from inferwatch.stats.numeric import DEFAULT_EPS

# --- durations and numbers ------------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def duration_seconds(text: str) -> float | None:
    """Seconds in a Prometheus duration (``90s``, ``1h30m``), or None when it is not one."""
    match = _DURATION.match(str(text))
    if not match or not text or text == "0":
        return None
    return sum(int(g) * unit for g, unit in zip(match.groups(), _DURATION_UNITS) if g)


def human_seconds(seconds: float) -> str:
    """0.5 -> 500ms, 2 -> 2s."""
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def human_duration(seconds: float) -> str:
    """900 -> 15m, 3600 -> 1h, 90 -> 90s: seconds as the largest whole Prometheus unit."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return human_seconds(seconds)


def human_ratio(ratio: float) -> str:
    """0.05 -> 5%."""
    return f"{round(ratio * 100, 6):g}%"


def promql_number(value: float) -> str:
    """A float as PromQL reads it, without binary noise (1 - 0.95 = 0.05)."""
    return f"{round(value, 9):g}"


# --- selectors ------------------------------------------------------------------------------

BY_MODEL = "model, model_version"
BY_OUTPUT = f"{BY_MODEL}, output"
BY_SIDECAR = "job, instance, model, model_version"


def select(selector: str, metric: str, *matchers: str) -> str:
    """``metric{selector, matchers...}``; ``selector`` is label matchers without braces."""
    return f"{metric}{{{', '.join([selector, *matchers])}}}"


def rate(selector: str, metric: str, window: str, *matchers: str) -> str:
    return f"rate({select(selector, metric, *matchers)}[{window}])"


def sum_rate(selector: str, metric: str, window: str, *matchers: str, by: str = BY_MODEL) -> str:
    return f"sum by ({by}) ({rate(selector, metric, window, *matchers)})"


def model_version_of_instance(selector: str) -> str:
    """The model and version each sidecar (job, instance) served last, within the last hour.

    Joined onto ``up`` and ``inferwatch_upstream_up`` so their alerts can name the version;
    ``topk`` keeps the newest version when a sidecar restarted with another one.
    """
    started = select(selector, "inferwatch_model_start_timestamp_seconds")
    return (f"group by (job, instance, model, model_version) (\n"
            f"    topk by (job, instance) (1, last_over_time({started}[1h]))\n"
            f"  )")


# --- fleet-wide drift -----------------------------------------------------------------------


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
