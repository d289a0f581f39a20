"""`inferwatch batch`: a scored table through the sidecar's own monitors, pushed to a Pushgateway.

A nightly job scores a table; ``BatchRun`` reads it in chunks (``ingest.tables``: CSV, JSON
lines, Parquet; a path, a glob or an fsspec URL) and feeds each chunk to the pipeline a
``Sidecar`` builds from the same configuration and reference (not started: no ports, no
threads), exactly as pushed events (``POST /v1/events``) and labels (``POST /v1/labels``) would
be: the window, segments, the input guard, drift, outputs and, with a label column,
performance. Then it evaluates drift and performance once, over the window as the sidecar would.

What is pushed is the data's families (``PUSHED_FAMILIES``), not the process's (queue, ports,
evaluation timestamps: a batch's would go stale and fire the staleness alerts), with the
grouping key ``job`` (``inferwatch-batch``: the shipped rules select ``job=~".*inferwatch.*"``),
``instance`` (the batch id: the rules join on it, and name it in their descriptions), ``model``
and ``model_version``. The shipped alerts on gauges (drift, schema changes, performance) then
fire on a batch unchanged; those on rates of counters cannot (a pushed counter does not move
between scrapes), which ``--fail-on`` covers by reading the gauges instead.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import push_to_gateway

from inferwatch.alerting.thresholds import Thresholds
from inferwatch.config import Config
from inferwatch.ingest.events import EventBatch
from inferwatch.ingest.ground_truth import LabelBatch
from inferwatch.ingest.tables import TableChunk, detect_format, iter_table_chunks
from inferwatch.ingest.values import NUMBER_TYPES, Kind, infer_text_kind
from inferwatch.pipeline.items import PushedBatch
from inferwatch.sidecar import Sidecar

FAIL_ON = ("drift", "data-quality", "performance")
DEFAULT_JOB = "inferwatch-batch"
# The families that describe the scored rows. The rest describe a running process (its queue,
# ports, threads, the time of its last evaluation) and would mislead on a Pushgateway, where
# the last push stays: a timestamp of the batch's evaluation would fire the staleness alerts.
PUSHED_FAMILIES = frozenset({
    "inferwatch_model_info", "inferwatch_reference_info", "inferwatch_events", "inferwatch_predictions",
    "inferwatch_events_dropped", "inferwatch_payload_errors", "inferwatch_monitoring_errors",
    "inferwatch_window_events", "inferwatch_segment_events",
    # drift
    "inferwatch_feature_drift_score", "inferwatch_feature_drift_p_value", "inferwatch_feature_drifted",
    "inferwatch_dataset_drifted", "inferwatch_drifted_features_ratio", "inferwatch_drift_window_events",
    "inferwatch_correlation_drift_score", "inferwatch_multivariate_drift_score", "inferwatch_multivariate_drifted",
    "inferwatch_feature_drift_effect", "inferwatch_prediction_drift_effect", "inferwatch_feature_bin",
    "inferwatch_feature_statistic", "inferwatch_feature_reference_ratio", "inferwatch_reference_columns_unseen",
    "inferwatch_prediction_drift_score", "inferwatch_prediction_drift_p_value", "inferwatch_prediction_drifted",
    "inferwatch_segment_drift_window_events", "inferwatch_segment_drifted_features_ratio",
    "inferwatch_segment_feature_drift_score", "inferwatch_segment_feature_drifted",
    "inferwatch_segment_prediction_drift_score",
    # the input guard
    "inferwatch_data_quality_events", "inferwatch_data_quality_issues", "inferwatch_data_quality_failed_events_ratio",
    "inferwatch_feature_missing_ratio", "inferwatch_feature_out_of_range_ratio", "inferwatch_schema_changed",
    "inferwatch_outlier_ratio", "inferwatch_outlier_score", "inferwatch_outlier_threshold", "inferwatch_outliers",
    # outputs
    "inferwatch_predicted_class", "inferwatch_prediction_band", "inferwatch_prediction_band_expected_ratio",
    "inferwatch_prediction_score", "inferwatch_prediction_value", "inferwatch_unreasonable_predictions",
    # performance
    "inferwatch_model_performance", "inferwatch_confusion_matrix", "inferwatch_labelled_window_events",
    "inferwatch_label_drift_score", "inferwatch_label_drift_p_value", "inferwatch_estimated_performance",
    "inferwatch_estimated_performance_standard_error", "inferwatch_labels",
    "inferwatch_segment_model_performance", "inferwatch_segment_labelled_window_events",
})


class BatchError(Exception):
    """One clear error that stops the run before (or while, with ``strict``) reading: exit 2."""


@dataclass
class BatchOptions:
    source: str                                  # a path, a glob or an fsspec URL
    batch_id: str = ""                           # default: a new UUID's first 12 hex digits
    label_column: str | None = None
    prediction_columns: dict[str, str] = field(default_factory=dict)   # file column -> output name
    chunk_rows: int = 10_000
    fmt: str | None = None
    strict: bool = False
    engine: str = "auto"                         # the reader: arrow, python or auto

    def __post_init__(self) -> None:
        self.batch_id = self.batch_id or uuid.uuid4().hex[:12]
        if self.chunk_rows < 1:
            raise BatchError(f"--chunk-rows must be at least 1, got {self.chunk_rows}")


@dataclass
class BatchSummary:
    rows: int = 0
    chunks: int = 0
    labels: int = 0
    bad_chunks: list[str] = field(default_factory=list)   # "file rows a-b: error"
    bad_rows: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ColumnChoice:
    """What ``BatchRun.plan`` decided from the file's first rows: shipped to a distributed
    engine's workers so every partition reads and feeds its columns alike."""

    features: tuple[str, ...]
    outputs: tuple[tuple[str, str], ...]   # (file column, output name)
    kinds: tuple[tuple[str, Kind], ...]


class BatchRun:
    """One batch: the sidecar's pipeline built from ``cfg`` (never started), fed chunk by chunk."""

    def __init__(self, cfg: Config, options: BatchOptions, registry: CollectorRegistry | None = None):
        # No proxy (nothing to forward), and labels on when the table has them.
        cfg = dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, enabled=False))
        if options.label_column and not cfg.labels.enabled:
            cfg = dataclasses.replace(cfg, labels=dataclasses.replace(cfg.labels, enabled=True))
        self.cfg = cfg
        self.options = options
        self.sidecar = Sidecar(cfg, registry if registry is not None else CollectorRegistry())
        self.version = self.sidecar.metrics.version_label(cfg.model.version, cfg.model.version)
        self.summary = BatchSummary()
        self._row = 0
        self._features: list[str] = []
        self.outputs: dict[str, str] = {}      # file column -> output name
        self._kinds: dict[str, Kind] = {}

    # --- columns ------------------------------------------------------------------------------

    def plan(self, names: Sequence[str], head: dict[str, list[Any]], source_of_head: str = "") -> None:
        """Which columns are features and outputs, and their kinds; ``BatchError`` naming every
        column the configuration (or a flag) asks for that the file does not have."""
        cfg, options = self.cfg, self.options
        wanted: dict[str, str] = {}
        for name in cfg.payload.feature_names:
            wanted.setdefault(name, f"payload.features in {cfg.source}")
        for name in cfg.segments.features:
            wanted.setdefault(name, f"segments.features in {cfg.source}")
        for name in options.prediction_columns:
            wanted.setdefault(name, "--prediction-column")
        if options.label_column:
            wanted.setdefault(options.label_column, "--label-column")
        missing = [f"{name} ({where})" for name, where in wanted.items() if name not in names]
        if missing:
            shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
            raise BatchError(f"column(s) {', '.join(missing)} not in {options.source} (its columns: {shown})")
        profile = self.sidecar.reference.current() if self.sidecar.reference is not None else None
        outputs = dict(options.prediction_columns)
        if not outputs:   # without flags: the columns named as the configured or reference outputs
            known = set(cfg.predictions.outputs) | set(profile.outputs if profile is not None else ())
            outputs = {name: name for name in names if name in known}
        self.outputs = outputs
        taken = set(outputs) | ({options.label_column} if options.label_column else set())
        declared = cfg.payload.feature_names
        self._features = list(declared) if declared else [n for n in names if n not in taken]
        # Values as a client would push them: a CSV cell is a number when its column's cells read
        # as numbers (the text decides, as pandas would, not the reference's kind: a categorical
        # `0`/`1` column is pushed as numbers too); JSON and Parquet values keep their own types.
        text = (options.fmt or detect_format(source_of_head)) == "csv"
        used = [*self._features, *outputs, *([options.label_column] if options.label_column else [])]
        kinds: dict[str, Kind] = {name: infer_text_kind(head.get(name, [])) if text else _typed_kind(head.get(name, []))
                                  for name in used}
        self._kinds = kinds

    def numeric(self, name: str) -> bool:
        return self._kinds.get(name) == "numeric"

    def choice(self) -> ColumnChoice:
        return ColumnChoice(tuple(self._features), tuple(self.outputs.items()), tuple(self._kinds.items()))

    def choose(self, choice: ColumnChoice) -> None:
        """Take the columns another run planned (a distributed engine's driver)."""
        self._features, self.outputs, self._kinds = list(choice.features), dict(choice.outputs), dict(choice.kinds)

    def read_columns(self) -> list[str]:
        """The file columns read: features, outputs and the label."""
        label = self.options.label_column
        return [*self._features, *self.outputs, *([label] if label else [])]

    def plan_from_head(self) -> None:
        """``plan`` from the first parsable rows of the input (``BatchError`` without any)."""
        o = self.options
        head = next(iter(c for c in iter_table_chunks(o.source, fmt=o.fmt, chunk_rows=2000, engine=o.engine)
                         if c.error is None), None)
        if head is None:
            raise BatchError(f"{o.source}: no rows")
        self.plan(list(head.columns), {k: head.values(k) for k in head.columns}, head.source)

    # --- reading and feeding --------------------------------------------------------------------

    def chunks(self) -> Iterator[TableChunk]:
        o = self.options
        return iter_table_chunks(o.source, fmt=o.fmt, chunk_rows=o.chunk_rows, numeric=self.numeric,
                                 columns=self.read_columns(), engine=o.engine)

    def feed(self, chunk: TableChunk, rows: Sequence[int] | None = None) -> None:
        """One chunk as a pushed batch (and its labels as a labels post): the sidecar's own path.
        ``rows``: the rows' positions in the table (their ids), when not the rows after the last chunk's."""
        n = chunk.rows
        if rows is None:
            rows = range(self._row, self._row + n)
            self._row += n
        ids = [f"{self.options.batch_id}-{row}" for row in rows]
        features = {name: chunk.values(name) if name in chunk.columns else [None] * n for name in self._features}
        outputs = {out: chunk.values(column) for column, out in self.outputs.items() if column in chunk.columns}
        batch = EventBatch(n, features=features, outputs=outputs, prediction_ids=ids, source="batch")
        pipeline = self.sidecar.pipeline
        pipeline.process(PushedBatch(self.version, batch))
        label = self.options.label_column
        if label and label in chunk.columns:
            values = chunk.values(label)
            keep = [i for i, v in enumerate(values) if v is not None]
            if keep:
                pipeline.process(LabelBatch([ids[i] for i in keep], [values[i] for i in keep], [None] * len(keep)))
                self.summary.labels += len(keep)
        self.summary.rows += n
        self.summary.chunks += 1

    def bad_chunk(self, chunk: TableChunk) -> None:
        """Counted (``inferwatch_events_dropped_total{reason="unparsable"}``) and listed; fatal with --strict."""
        where = f"{chunk.where()}: {chunk.error}"
        if self.options.strict:
            raise BatchError(f"cannot parse {where}")
        self.summary.bad_chunks.append(where)
        self.summary.bad_rows += chunk.rows
        self.sidecar.metrics.events_dropped.labels(self.cfg.model.name, self.version, "unparsable").inc(chunk.rows)

    def run(self, on_bad_chunk: Callable[[str], None] | None = None) -> BatchSummary:
        start = time.monotonic()
        self.plan_from_head()
        for chunk in self.chunks():
            if chunk.error is not None:
                self.bad_chunk(chunk)
                if on_bad_chunk is not None:
                    on_bad_chunk(self.summary.bad_chunks[-1])
                continue
            self.feed(chunk)
        self.evaluate()
        self.summary.seconds = time.monotonic() - start
        return self.summary

    def evaluate(self) -> None:
        """Drift and performance once, over the window (the sidecar's background threads do it on a timer)."""
        if self.sidecar.drift is not None:
            self.sidecar.drift.evaluate_all()
        if self.sidecar.performance is not None:
            self.sidecar.performance.evaluate_all()

    # --- results -------------------------------------------------------------------------------

    def families(self) -> list[Metric]:
        """The pushed families (``PUSHED_FAMILIES``), as a scrape of the sidecar would show them."""
        return [family for family in self.sidecar.metrics.registry.collect() if family.name in PUSHED_FAMILIES]

    def push(self, url: str, job: str = DEFAULT_JOB, timeout: float = 10.0,
             families: list[Metric] | None = None) -> None:
        """Replace this batch's group on the Pushgateway (PUT): a re-run of the same batch id replaces it.
        ``families``: what to push instead of this run's own (a distributed run's merged families)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(self.families() if families is None else families))
        push_to_gateway(url, job=job, registry=registry, timeout=timeout,
                        grouping_key={"instance": self.options.batch_id, "model": self.cfg.model.name,
                                      "model_version": self.version})


def _typed_kind(values: list[Any]) -> Kind:
    """JSON or Parquet values: numeric when every value present is a number (booleans are not)."""
    present = [v for v in values if v is not None]
    numbers = all(isinstance(v, NUMBER_TYPES) and not isinstance(v, bool) for v in present)
    return "numeric" if present and numbers else "categorical"


class _Families:
    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def values(families: list[Metric], name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample named ``name``."""
    return [(dict(s.labels), s.value) for family in families for s in family.samples if s.name == name]


def failures(families: list[Metric], fail_on: Sequence[str], thresholds: Thresholds | None = None) -> list[str]:
    """Why the run fails for each condition of ``fail_on``, judged as the shipped alerts judge
    (their thresholds, from ``prometheus/thresholds.yaml``'s defaults or ``thresholds``)."""
    t = (thresholds or Thresholds()).alerts
    reasons: list[str] = []
    if "drift" in fail_on:
        for labels, value in values(families, "inferwatch_dataset_drifted"):
            if value == 1:
                ratio = [v for lb, v in values(families, "inferwatch_drifted_features_ratio") if lb == labels]
                drifted = sorted(lb["feature"] for lb, v in values(families, "inferwatch_feature_drifted")
                                 if v == 1 and lb.get("model_version") == labels.get("model_version"))
                reasons.append(f"drift: the dataset drifted ({_percent(ratio[0]) if ratio else '?'} of the features: "
                               f"{', '.join(drifted[:10])}{' ...' if len(drifted) > 10 else ''})")
        for labels, value in values(families, "inferwatch_prediction_drifted"):
            if value == 1:
                reasons.append(f"drift: output {labels.get('output', '?')} drifted")
    if "data-quality" in fail_on:
        limit = t.InferwatchDataQualityIssues.threshold
        for labels, value in values(families, "inferwatch_data_quality_failed_events_ratio"):
            if value > limit:
                reasons.append(f"data-quality: {_percent(value)} of the events failed a check (threshold "
                               f"{_percent(limit)})")
        for labels, value in values(families, "inferwatch_schema_changed"):
            if value == 1:
                reasons.append(f"data-quality: the schema changed ({labels.get('change', '')} "
                               f"{labels.get('feature', '')})".replace("( ", "(").replace(" )", ")"))
    if "performance" in fail_on:
        bounds = t.InferwatchModelPerformanceDegraded
        events = {lb.get("model_version"): v for lb, v in values(families, "inferwatch_labelled_window_events")
                  if not lb.get("challenger")}
        for labels, value in values(families, "inferwatch_model_performance"):
            if labels.get("challenger") or events.get(labels.get("model_version"), 0) < bounds.min_events:
                continue
            metric = labels.get("metric", "")
            floor, ceiling = bounds.floors.get(metric), bounds.ceilings.get(metric)
            if floor is not None and value < floor:
                reasons.append(f"performance: {metric} {value:.4g} < {floor:g}")
            if ceiling is not None and value > ceiling:
                reasons.append(f"performance: {metric} {value:.4g} > {ceiling:g}")
    return reasons


def _percent(x: float) -> str:
    return "?" if math.isnan(x) else f"{100 * x:.1f}%"


def summary_lines(run: BatchRun, families: list[Metric]) -> list[str]:
    """What a person reads after the run: rows, bad chunks, the drift verdict, quality, performance."""
    s = run.summary
    lines = [f"batch {run.options.batch_id}: {s.rows:,} rows in {s.chunks} chunks ({s.seconds:.1f}s, "
             f"{s.rows / max(s.seconds, 1e-9):,.0f} rows/s) of {run.options.source}; model {run.cfg.model.name} "
             f"version {run.version}"]
    if s.bad_chunks:
        lines.append(f"unparsable: {len(s.bad_chunks)} chunk(s), {s.bad_rows:,} rows (first: {s.bad_chunks[0]})")
    drifted = [v for _, v in values(families, "inferwatch_dataset_drifted")]
    if drifted:
        ratio = [v for _, v in values(families, "inferwatch_drifted_features_ratio")]
        features = sorted(lb["feature"] for lb, v in values(families, "inferwatch_feature_drifted") if v == 1)
        judged = [v for _, v in values(families, "inferwatch_drift_window_events")]
        over = f" over the last {judged[0]:,.0f} rows (window.max_events)" if judged and judged[0] < s.rows else ""
        lines.append(f"drift: {'DRIFTED' if drifted[0] == 1 else 'no dataset drift'} "
                     f"({_percent(ratio[0]) if ratio else '?'} of features drifted"
                     f"{': ' + ', '.join(features[:10]) if features else ''}){over}")
    elif run.sidecar.drift is None:
        lines.append("drift: off (no reference: --reference or reference.path)")
    for labels, value in values(families, "inferwatch_prediction_drifted"):
        lines.append(f"prediction drift ({labels.get('output', '?')}): {'DRIFTED' if value == 1 else 'none'}")
    quality = [v for _, v in values(families, "inferwatch_data_quality_failed_events_ratio")]
    if quality:
        changed = [lb for lb, v in values(families, "inferwatch_schema_changed") if v == 1]
        lines.append(f"data quality: {_percent(quality[0])} of events failed a check"
                     f"{'; schema changed' if changed else ''}")
    metrics = {lb.get("metric", ""): v for lb, v in values(families, "inferwatch_model_performance")
               if not lb.get("challenger")}
    if metrics:
        lines.append("performance: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())))
    elif run.options.label_column:
        lines.append(f"performance: {s.labels:,} labels, too few for metrics")
    return lines


def print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stdout)


def write_report(run: BatchRun, path: str) -> None:
    """The HTML report (``report.render_report``) of the rows drift was judged on: the window
    at the end of the run, with the results that were pushed. ``BatchError`` without a reference."""
    from inferwatch.monitors.performance import CHAMPION
    from inferwatch.report import render_report

    drift = run.sidecar.drift
    if drift is None or drift.reference is None:
        raise BatchError("--report needs a reference profile (--reference or reference.path)")
    window = run.sidecar.windows.windows().get(run.version)
    if window is None:
        raise BatchError("--report: no rows were read")
    performance = run.sidecar.performance
    current = window.snapshot(time.time())
    source = run.options.source
    if current.n < run.summary.rows:   # the window holds the last rows: say so beside the count
        source = f"the last rows of {source} ({run.summary.rows:,} read; window.max_events)"
    html = render_report(
        model=run.cfg.model.name, version=run.version, reference=drift.reference,
        current=current, drift=drift.results.get(run.version),
        performance=performance.results.get((run.version, CHAMPION)) if performance is not None else None,
        range_tolerance=run.cfg.guard.range_tolerance, source=source)
    with open(path, "w", encoding="utf-8") as f:
        f.write(html)
