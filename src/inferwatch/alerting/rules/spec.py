"""An alert declared as data, and the one function that renders it.

An entry names the alert and holds its texts as templates: ``${name}`` is a value of the
alert's thresholds as the file spells it (``${for}``, ``${threshold}``, ``${window}``),
``${selector}`` the sidecars' label matchers, or a value the entry computes (``params``);
``${name:format}`` shows a value another way (:data:`FORMATS`). Numbers are written as PromQL
reads them. Prometheus's own templates (``{{ $labels.model }}``, ``{{ $value }}``) pass through
untouched, so an expression or a description reads as it will in the rule file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from ..promql import duration_seconds, human_duration, human_ratio, human_seconds, promql_number
from ..thresholds import DEFAULTS, Thresholds

Params = dict[str, Any]


def _in_seconds(duration: str) -> str:
    seconds = duration_seconds(duration)
    assert seconds is not None, duration   # durations are checked when the thresholds load
    return promql_number(seconds)


#: ``${threshold:percent}`` 0.05 -> 5%; ``:seconds`` 0.5 -> 500ms; ``:duration`` 900 -> 15m;
#: ``:in_seconds`` 6h -> 21600.
FORMATS: dict[str, Callable[[Any], str]] = {
    "percent": human_ratio,
    "seconds": human_seconds,
    "duration": human_duration,
    "in_seconds": _in_seconds,
}
_PLACEHOLDER = re.compile(r"\$\{(\w+)(?::(\w+))?\}")


def fill(template: str, params: Params) -> str:
    """``template`` with its placeholders replaced; KeyError names one the entry does not define."""
    def one(match: re.Match[str]) -> str:
        value = params[match.group(1)]
        if match.group(2):
            return FORMATS[match.group(2)](value)
        if isinstance(value, float):
            return promql_number(value)
        return str(value)

    return _PLACEHOLDER.sub(one, template)


def _no_params(t: Thresholds) -> Params:
    return {}


@dataclass(frozen=True)
class AlertRule:
    """One alert. Its severity and ``for`` come from its thresholds (``alerts.<name>``)."""

    name: str
    summary: str
    expr: str
    description: str
    # Values the templates use beyond the alert's thresholds, computed from all of them.
    params: Callable[[Thresholds], Params] = _no_params
    # With `absent: true` in the alert's thresholds: appended to `expr`, and the description
    # used instead (`${description}` in it is the one above).
    if_absent_expr: str = ""
    if_absent_description: str = ""
    # One rule per item (burn-rate alerts, metric bounds): each item's own values, which may
    # set `severity` and `for` too.
    each: Callable[[Thresholds], list[Params]] | None = None
    # Item values that become labels of the rule, so rules of one name stay distinct (promtool's
    # lint fails on two rules with the same name and labels); the series carries the same value.
    item_labels: tuple[str, ...] = ()
    # A severity of its own, not from the thresholds (the watchdog's `none`).
    severity: str | None = None

    def render(self, t: Thresholds, team: str) -> list[dict[str, Any]]:
        base: Params = {"selector": t.selector}
        if self.name in DEFAULTS["alerts"]:
            base.update(t.alert(self.name))
        base.update(self.params(t))
        rules = []
        for item in self.each(t) if self.each else [{}]:
            params = {**base, **item}
            expr, description = fill(self.expr, params), fill(self.description, params)
            if params.get("absent"):
                expr += fill(self.if_absent_expr, params)
                description = fill(self.if_absent_description, {**params, "description": description})
            rules.append({
                "alert": self.name,
                "expr": expr,
                "for": params["for"],
                "labels": {"severity": self.severity or params["severity"], "team": team,
                           **{label: str(params[label]) for label in self.item_labels}},
                "annotations": {"summary": self.summary, "description": description,
                                "runbook_url": t.runbook_url(self.name)},
            })
        return rules


@dataclass(frozen=True)
class AlertGroup:
    """A rule group of one team's alerts; ``team`` labels each (a template: the jobs' own label)."""

    name: str
    team: str
    rules: tuple[AlertRule, ...]

    def render(self, t: Thresholds) -> dict[str, Any]:
        return {"name": self.name, "rules": [rule for entry in self.rules for rule in entry.render(t, self.team)]}


def burn_rate_params(t: Thresholds, objective: float, errors_record: Callable[[str], str]) -> list[Params]:
    """One alert per burn rate of ``slo.burn_rate_alerts`` (severity and ``for`` are the burn rate's
    own), against ``objective``'s error budget and the SLO error ratio ``errors_record(window)`` names."""
    budget = 1 - objective
    return [{"severity": burn.severity, "for": burn.for_, "factor": burn.factor, "limit": burn.factor * budget,
             "long_window": burn.long_window, "short_window": burn.short_window,
             "long_errors": errors_record(burn.long_window),
             "short_errors": errors_record(burn.short_window)}
            for burn in t.slo.burn_rate_alerts]
