"""The Grafana dashboards' copies of the thresholds, rendered from ``prometheus/thresholds.yaml``.

The dashboards are hand-made JSON (``grafana/dashboards/*.json``), but a few of their numbers are
facts the thresholds file owns: the SLO's latency and objective, the cost prices and currency, the
colour step where an alert fires. ``inferwatch rules render`` writes those numbers into the
dashboards and ``inferwatch rules check`` fails when a dashboard still holds an old one, so one
edit of the thresholds file reaches the alerts, the recording rules and the dashboards together.
Everything else in a dashboard is left exactly as written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

from .thresholds import Thresholds

Getter = Callable[[Thresholds], float]

#: Constant variables (``$name`` in the queries) and the threshold each one holds.
CONSTANTS: dict[str, Getter] = {
    "slo_latency_le": lambda t: t.slo.latency_seconds,
    "slo_objective": lambda t: t.slo.objective,
    "cpu_hour_price": lambda t: t.cost.cpu_hour_price,
    "gpu_hour_price": lambda t: t.cost.gpu_hour_price,
    "ttft_slo_le": lambda t: t.genai_slo.time_to_first_token_seconds,
    "ttft_slo_objective": lambda t: t.genai_slo.objective,
}

#: Panels whose last colour step is where an alert fires (or the SLO's objective): (file, title).
LAST_STEPS: dict[tuple[str, str], Getter] = {
    ("inferwatch-overview.json", "Within latency SLO"): lambda t: t.slo.objective,
    ("inferwatch-overview.json", "Server errors"): lambda t: t.alerts.InferwatchHighErrorRate.threshold,
    ("inferwatch-data.json", "Payload errors"): lambda t: t.alerts.InferwatchPayloadErrors.threshold,
    ("inferwatch-model.json", "Largest prediction drift"):
        lambda t: t.alerts.InferwatchPredictionDrift.threshold_score,
    ("inferwatch-model.json", "Current prediction drift by output"):
        lambda t: t.alerts.InferwatchPredictionDrift.threshold_score,
    ("inferwatch-genai.json", "First tokens within the SLO"): lambda t: t.genai_slo.objective,
    ("inferwatch-genai.json", "Slow first tokens (TTFT SLO error ratio)"):
        lambda t: round(1 - t.genai_slo.objective, 9),   # the error budget
    ("inferwatch-genai.json", "Failed requests"): lambda t: t.alerts.InferwatchGenerativeErrorRate.threshold,
    ("inferwatch-genai.json", "Truncated answers"): lambda t: t.alerts.InferwatchGenerativeTruncationSpike.threshold,
    ("inferwatch-genai.json", "Refusal rate"): lambda t: t.alerts.InferwatchGenerativeOutputMatchSpike.threshold,
}


def constant_text(value: float) -> str:
    """A number as a constant variable spells it: 0.95, 0.1, 100 (no float noise, no trailing .0)."""
    return f"{value:.15g}"


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])   # collapsed rows hold their panels


def apply_thresholds(t: Thresholds, filename: str, dashboard: dict[str, Any]) -> dict[str, Any]:
    """The dashboard with every number the thresholds file owns set from ``t`` (in place, returned)."""
    for variable in dashboard.get("templating", {}).get("list", []):
        getter = CONSTANTS.get(variable.get("name", ""))
        if variable.get("type") == "constant" and getter is not None:
            text = constant_text(getter(t))
            variable["query"] = text
            variable["current"] = {"text": text, "value": text}
    for panel in _panels(dashboard):
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        unit = defaults.get("unit")
        if isinstance(unit, str) and unit.startswith("currency"):
            defaults["unit"] = f"currency{t.cost.currency}"
        getter = LAST_STEPS.get((filename, panel.get("title", "")))
        steps = defaults.get("thresholds", {}).get("steps", [])
        if getter is not None and steps:
            steps[-1]["value"] = getter(t)
    return dashboard


def dump_dashboard(dashboard: dict[str, Any]) -> str:
    """JSON as the dashboards are committed: two-space indent, keys in their order, a final newline."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def render_dashboards(t: Thresholds, directory: Path) -> dict[Path, str]:
    """Every dashboard in ``directory`` as it should read for ``t``."""
    files: dict[Path, str] = {}
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        files[path] = dump_dashboard(apply_thresholds(t, path.name, dashboard))
    return files
