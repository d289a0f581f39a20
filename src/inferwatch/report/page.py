"""The report page: drift results, the reference and the current data in, one HTML string out.

Pure (no I/O, no clock unless ``generated_at`` is left out): sections are the dataset verdict, the
sortable feature table, a card per feature (its test, the two distributions, missing and
out-of-range shares), the model's outputs the same way, and performance. Every string from data
goes through ``html.escape``; the script and styles are constants (``assets``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from html import escape
from typing import Iterable

import numpy as np

from inferwatch import __version__
from inferwatch.monitors.drift.results import ColumnResult, VersionResult
from inferwatch.monitors.performance.evaluate import PerformanceResult
from inferwatch.pipeline.window import WindowSnapshot
from inferwatch.reference.format import ColumnProfile, NumericProfile, ReferenceProfile
from inferwatch.stats.registry import DRIFT_TESTS, P_VALUE_METHODS

from .assets import CONTENT_SECURITY_POLICY, CSS, SCRIPT
from .charts import bars_svg, compact_number, shares
from .counts import ColumnCounts, CurrentCounts, count_snapshot, numeric_bin_labels


@dataclass(frozen=True)
class _Column:
    """One table column: its key (``?sort=``), header, whether it sorts as a number, its tooltip."""

    key: str
    header: str
    number: bool
    tip: str = ""


TABLE_COLUMNS = (
    _Column("name", "Feature", False),
    _Column("kind", "Type", False),
    _Column("statistic", "Statistic", False, "the method that decides this column's drift"),
    _Column("score", "Score", True, "the deciding statistic's value (a test's statistic, or the distance)"),
    _Column("p_value", "p-value", True, "the test's p-value (tests only), compared with the threshold after "
                                        "correction for multiple testing"),
    _Column("threshold", "Threshold", True, "alpha for a test; the distance at or above which a column drifts"),
    _Column("decision", "Decision", True, "drift, no drift, or not evaluated"),
    _Column("missing", "Missing", True, "share of rows without a usable value (absent, null, wrong type, NaN)"),
    _Column("out_of_range", "Out of range", True, "share of values outside the reference range (widened)"),
    _Column("values", "Values", True, "values compared"),
)


def render_report(*, model: str, version: str, reference: ReferenceProfile, current: WindowSnapshot | CurrentCounts,
                  drift: VersionResult | None = None, performance: PerformanceResult | None = None,
                  range_tolerance: float = 0.1, source: str = "", generated_at: float | None = None) -> str:
    """The whole page as one HTML string (see the package docstring for the arguments)."""
    counts = current if isinstance(current, CurrentCounts) else \
        count_snapshot(reference, current, range_tolerance=range_tolerance)
    results = {c.name: c for c in drift.features} if drift is not None else {}
    output_results = {c.name: c for c in drift.outputs} if drift is not None else {}
    features = list(dict.fromkeys([*reference.features, *counts.features]))
    outputs = list(dict.fromkeys([*reference.outputs, *counts.outputs]))
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() if generated_at is None else generated_at))
    title = f"Drift report: {model} {version}"
    body = [
        f"<header><h1>{escape(title)}</h1>",
        f'<p class="meta">{counts.rows:,} rows{escape(f" from {source}" if source else "")} against a reference of '
        f"{reference.rows:,} rows{escape(f' ({reference.source})' if reference.source else '')}, "
        f"profile {escape(reference.hash[:19] or 'unsaved')}. Generated {escape(when)}.</p></header>",
        _verdict(drift, len(features)),
        '<section id="features"><h2>Features</h2>',
        _table("feature-table", features, results, reference.features, counts.features),
        "</section>",
        '<section id="distributions"><h2>Distributions</h2>', _legend(),
        _cards("feature", features, results, reference.features, counts.features), "</section>",
        '<section id="predictions"><h2>Predictions</h2>',
        _outputs(outputs, output_results, reference.outputs, counts.outputs), "</section>",
        '<section id="performance"><h2>Performance</h2>', _performance(performance), "</section>",
        f"<footer>inferwatch {escape(__version__)}. Bars are shares of each bin's values: the reference's "
        "numeric bins are its quantiles, drawn at equal widths, so its bars stand about level and drift shows "
        "as the current bars leaving them.</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
            + "\n".join(body) + f"\n</main><script>{SCRIPT}</script></body></html>\n")


# --- the verdict ----------------------------------------------------------------------------------

def _verdict(drift: VersionResult | None, n_features: int) -> str:
    if drift is None or not drift.features:
        why = "no drift evaluation yet" if drift is None else \
            f"too few rows to evaluate ({drift.events:,} in the window)"
        return f'<section class="verdict na" id="verdict"><strong>Not evaluated</strong>{escape(why)}</section>'
    decided = [c for c in drift.features if c.method]
    flagged = sorted(c.name for c in decided if c.drifted)
    css, headline = ("drift", "Dataset drift detected") if drift.dataset_drifted else ("ok", "No dataset drift")
    lines = [f"{len(flagged)} of {len(decided)} evaluated features drifted"
             + (f" ({_share(drift.drifted_ratio)})" if math.isfinite(drift.drifted_ratio) else "")
             + (f"; {n_features - len(drift.features)} not evaluated" if n_features > len(drift.features) else "")]
    if flagged:
        shown = ", ".join(flagged[:10]) + (f" and {len(flagged) - 10} more" if len(flagged) > 10 else "")
        lines.append(f"drifted: {shown}")
    extras = [f"{label} {_number(value)}" for label, value in
              (("multivariate (PCA reconstruction) score", drift.multivariate),
               ("correlation drift", drift.correlation)) if math.isfinite(value)]
    if extras:
        lines.append("; ".join(extras))
    return (f'<section class="verdict {css}" id="verdict" data-dataset-drift="{int(drift.dataset_drifted)}">'
            f"<strong>{headline}</strong>" + "<br>".join(escape(line) for line in lines) + "</section>")


# --- the table --------------------------------------------------------------------------------------

def _table(table_id: str, names: list[str], results: dict[str, ColumnResult], profiles: dict[str, ColumnProfile],
           counts: dict[str, ColumnCounts], first_header: str = "Feature") -> str:
    head = "".join(
        f'<th data-key="{c.key}" data-type="{"number" if c.number else "text"}"'
        f'{" class=text" if not c.number else ""}{f" title={_attr(c.tip)}" if c.tip else ""}>'
        f"{escape(first_header if c.key == 'name' else c.header)}</th>" for c in TABLE_COLUMNS)
    rows = [_row(i, name, results.get(name), profiles.get(name), counts.get(name), table_id)
            for i, name in enumerate(names)]
    if not rows:
        return '<p class="empty">No columns.</p>'
    return (f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _row(index: int, name: str, result: ColumnResult | None, profile: ColumnProfile | None,
         counts: ColumnCounts | None, table_id: str) -> str:
    kind = profile.kind if profile is not None else counts.kind if counts is not None else ""
    method = result.method if result is not None else ""
    score = result.scores.get(method, math.nan) if result is not None and method else math.nan
    p_value = result.p_values.get(method, math.nan) if result is not None and method in P_VALUE_METHODS else math.nan
    threshold = result.threshold if result is not None and method else math.nan
    label, rank = _decision(result, profile)
    missing = counts.missing_share if counts is not None else math.nan
    oor = counts.out_of_range_share if counts is not None and isinstance(profile, NumericProfile) else math.nan
    described = DRIFT_TESTS[method].description if method in DRIFT_TESTS else ""
    anchor = f"{table_id.split('-')[0]}-{index}"
    cells = [
        f'<td data-value="{_attr_text(name)}"><a href="#{anchor}">{escape(name)}</a></td>',
        f'<td class="text">{escape(kind)}</td>',
        f'<td class="text" title="{escape(described)}">{escape(method or "—")}</td>',
        _num_cell(score, _number(score)), _num_cell(p_value, _p_value(p_value)),
        _num_cell(threshold, _number(threshold)),
        f'<td data-value="{rank}"><span class="badge {_badge(result)}">{escape(label)}</span></td>',
        _num_cell(missing, _share(missing)), _num_cell(oor, _share(oor)),
        _num_cell(float(result.n) if result is not None else math.nan, f"{result.n:,}" if result is not None else "—"),
    ]
    return f'<tr data-feature="{_attr_text(name)}">' + "".join(cells) + "</tr>"


def _decision(result: ColumnResult | None, profile: ColumnProfile | None) -> tuple[str, str]:
    """(the label, its sort rank: drift 2, no drift 1, nothing decided empty so it sorts last)."""
    if profile is None:
        return "not in the reference", ""
    if result is None:
        return "not evaluated", ""
    if not result.method:
        return "disabled", ""
    return ("drift", "2") if result.drifted else ("no drift", "1")


def _badge(result: ColumnResult | None) -> str:
    if result is None or not result.method:
        return "na"
    return "drift" if result.drifted else "ok"


def _num_cell(value: float, text: str) -> str:
    return f'<td data-value="{repr(float(value)) if math.isfinite(value) else ""}">{escape(text)}</td>'


# --- the cards ---------------------------------------------------------------------------------------

def _legend() -> str:
    return ('<p class="legend">Share of values per bin:<span class="swatch ref"></span>reference'
            '<span class="swatch cur"></span>current</p>')


def _cards(prefix: str, names: Iterable[str], results: dict[str, ColumnResult],
           profiles: dict[str, ColumnProfile], counts: dict[str, ColumnCounts]) -> str:
    cards = [_card(f"{prefix}-{i}", name, results.get(name), profiles.get(name), counts.get(name))
             for i, name in enumerate(names)]
    return '<div class="cards">' + "".join(cards) + "</div>"


def _card(anchor: str, name: str, result: ColumnResult | None, profile: ColumnProfile | None,
          counts: ColumnCounts | None) -> str:
    label, _ = _decision(result, profile)
    css = _badge(result)
    parts = [f'<article class="card {css}" id="{anchor}" data-feature="{_attr_text(name)}">',
             f'<h3>{escape(name)} <span class="badge {css}">{escape(label)}</span></h3>',
             f'<p class="test">{escape(_test_sentence(result))}</p>']
    evidence = _evidence(result)
    if evidence:
        parts.append('<ul class="evidence">' + "".join(f"<li>{escape(line)}</li>" for line in evidence) + "</ul>")
    if counts is not None and counts.counts.size and counts.present:
        reference = shares(profile.bin_counts) if profile is not None and counts.referenced else None
        labels, current = counts.labels, shares(counts.counts)
        if counts.kind == "categorical" and reference is not None:   # a category neither side has: no bar
            kept = np.flatnonzero((reference > 0) | (current > 0))
            labels, reference, current = [labels[i] for i in kept], reference[kept], current[kept]
        parts.append(bars_svg(labels, reference, current, name=name,
                              edges=counts.edges if counts.kind == "numeric" else None))
    elif profile is not None:
        parts.append(bars_svg(profile.bin_labels() if not isinstance(profile, NumericProfile) else
                              numeric_bin_labels(profile.edges), shares(profile.bin_counts),
                              np.zeros(profile.n_bins), name=name,
                              edges=profile.edges if isinstance(profile, NumericProfile) else None))
        parts.append('<p class="empty">No current values.</p>')
    else:
        parts.append('<p class="empty">No values.</p>')
    parts.append("<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>"
                                  for k, v in _facts(result, profile, counts)) + "</dl></article>")
    return "".join(parts)


def _test_sentence(result: ColumnResult | None) -> str:
    if result is None:
        return "Not compared: fewer values than drift.min_events, or not in both the reference and the data."
    if not result.method:
        return "Drift decision disabled for this column (drift.features)."
    score = result.scores.get(result.method, math.nan)
    if result.method in P_VALUE_METHODS:
        p = result.p_values.get(result.method, math.nan)
        return (f"{result.method} statistic {_number(score)}, p-value {_p_value(p)} against alpha "
                f"{_number(result.threshold)} (corrected for multiple testing) over {result.n:,} values")
    relation = "≥" if result.drifted else "<"
    return f"{result.method} {_number(score)} {relation} threshold {_number(result.threshold)} over {result.n:,} values"


def _evidence(result: ColumnResult | None) -> list[str]:
    """What a test decision also weighed (each view of the window: its p-value and effect), when
    the evaluator records it."""
    lines = []
    for ev in getattr(result, "evidence", None) or []:
        verdict = "drift" if ev.drifted else "no drift"
        lines.append(f"{ev.view}: {ev.method} p-value {_p_value(ev.p_value)} (alpha {_number(ev.alpha)}), "
                     f"effect {_number(ev.effect)} (needs {_number(ev.min_effect)}): {verdict}")
    return lines


def _facts(result: ColumnResult | None, profile: ColumnProfile | None,
           counts: ColumnCounts | None) -> list[tuple[str, str]]:
    facts = []
    ref_missing = profile.missing / (profile.count + profile.missing) if profile is not None and \
        profile.count + profile.missing else math.nan
    cur_missing = counts.missing_share if counts is not None else math.nan
    facts.append(("Missing", f"reference {_share(ref_missing)} · current {_share(cur_missing)}"))
    if isinstance(profile, NumericProfile) and counts is not None:
        facts.append(("Out of range", f"{_share(counts.out_of_range_share)} of current values outside "
                                      f"[{_compact(profile.statistics.get('min', math.nan))}, "
                                      f"{_compact(profile.statistics.get('max', math.nan))}] (widened)"))
    stats = result.statistics if result is not None else {}
    if isinstance(profile, NumericProfile):
        for key, label in (("mean", "Mean"), ("std", "Std")):
            facts.append((label, f"reference {_compact(profile.statistics.get(key, math.nan))} · "
                                 f"current {_compact(stats.get(key, math.nan))}"))
    elif profile is not None:
        facts.append(("Categories", f"reference {profile.cardinality:,} · current "
                                    f"{_number(stats.get('cardinality', math.nan))}"))
        if "unseen_ratio" in stats:
            facts.append(("Unseen", f"{_share(stats['unseen_ratio'])} of current values in no reference category"))
    return facts


# --- outputs and performance ----------------------------------------------------------------------

def _outputs(names: list[str], results: dict[str, ColumnResult], profiles: dict[str, ColumnProfile],
             counts: dict[str, ColumnCounts]) -> str:
    if not names:
        return '<p class="empty">No model outputs in the reference or the data.</p>'
    return (_table("output-table", names, results, profiles, counts, first_header="Output")
            + _legend() + _cards("output", names, results, profiles, counts))


def _label_drift(value: float, p_value: float | None) -> str:
    return _number(value) + (f" (p-value {_p_value(p_value)})" if p_value is not None else "")


def _performance(performance: PerformanceResult | None) -> str:
    if performance is None or not performance.metrics:
        events = f" ({performance.events:,} labelled, fewer than performance.min_events)" \
            if performance is not None and performance.events else ""
        return f'<p class="empty" id="no-performance">No labelled predictions{escape(events)}.</p>'
    rows = "".join(f'<tr data-metric="{_attr_text(name)}"><td>{escape(name)}</td><td>{escape(_number(value))}</td></tr>'
                   for name, value in sorted(performance.metrics.items()))
    drift = "".join(f"<tr><td>label drift: {escape(method)}</td>"
                    f"<td>{escape(_label_drift(value, performance.label_drift_p.get(method)))}</td></tr>"
                    for method, value in sorted(performance.label_drift.items()))
    return (f'<p class="meta">Over {performance.events:,} labelled predictions.</p>'
            f'<table id="performance-table" class="sortable"><thead><tr><th data-key="metric" data-type="text">Metric</th>'
            f'<th data-key="value" data-type="number">Value</th></tr></thead><tbody>{rows}{drift}</tbody></table>')


# --- formatting ----------------------------------------------------------------------------------------

def _number(x: float) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def _compact(x: float) -> str:
    return compact_number(x) if math.isfinite(x) else "—"


def _p_value(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return "< 1e-12" if p < 1e-12 else f"{p:.3g}"


def _share(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "—"


def _attr(text: str) -> str:
    return '"' + escape(text) + '"'


def _attr_text(text: str) -> str:
    return escape(text, quote=True)
