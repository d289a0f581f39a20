"""The admin port: /metrics, health, status, and push-mode ingestion. A thin Flask layer.

Scrapes and writes can have separate credentials; bodies above ``admin.max_body_bytes`` get
413; every error is JSON saying what and where.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from flask import Flask, Response, jsonify, request
from prometheus_client.exposition import choose_encoder
from werkzeug.exceptions import HTTPException

from inferwatch.support.auth import THROTTLED_BODY, AuthDecision, authenticate
from inferwatch.ingest.cloudevents import CloudEventPairer, PairedExchange, parse_cloudevent
from inferwatch.config import AdminConfig, AuthConfig, LabelsConfig, ModelConfig
from inferwatch.ingest.events import PayloadError
from inferwatch.ingest.push import parse_events
from inferwatch.ingest.ground_truth import parse_feedback, parse_labels
from inferwatch.exposition.metrics import Metrics
from inferwatch.pipeline.items import Exchange
from inferwatch.pipeline.worker import Pipeline
from inferwatch.report.assets import CONTENT_SECURITY_POLICY
from inferwatch.report.live import ReportUnavailable

log = logging.getLogger(__name__)

# Endpoints that acknowledge data into the monitoring queue (503 once shutdown closed it).
PUSH_PATHS = frozenset({"/v1/events", "/v1/labels", "/v1/cloudevents"})
# Push bodies wait (up to PUSH_WAIT_SECONDS) while the monitoring queue is fuller than this.
PUSH_WAIT_ABOVE = 0.1
PUSH_WAIT_SECONDS = 0.5


def _problem(status: int, error: str, detail: str, **extra: Any) -> Response:
    response = jsonify({"error": error, "detail": detail, **extra})
    response.status_code = status
    return response


def cloudevent_exchange(paired: PairedExchange, version: str) -> Exchange:
    """A paired (or response-less, expired) CloudEvent as the worker's unit of work."""
    return Exchange(
        model_version=version,
        endpoint=paired.endpoint or "cloudevent",
        status=200,
        prediction_id=paired.event_id,
        timestamp=time.time(),
        latency_seconds=0.0,
        request_body=paired.request_body,
        response_body=paired.response_body,
        request_content_type=paired.content_type,
        response_content_type=paired.response_content_type,
        source="cloudevent",
    )


def create_admin_app(admin: AdminConfig, model_config: ModelConfig, labels: LabelsConfig, metrics: Metrics,
                     pipeline: Pipeline, *, status: Callable[[], dict], ready: Callable[[], tuple[bool, dict]],
                     pairer: CloudEventPairer | None = None,
                     report: Callable[[str | None], str] | None = None) -> Flask:
    """The admin port's Flask app: its ``admin`` section (limits, credentials), the model's name and
    version for push mode, and the ``labels`` section for ``/v1/labels``; ``report`` renders the
    drift report page of a model version (None: the default one) for ``/v1/report``."""
    app = Flask("inferwatch.admin")
    app.config["MAX_CONTENT_LENGTH"] = admin.max_body_bytes
    model = model_config.name
    default_version = model_config.version
    pairer = pairer if pairer is not None else CloudEventPairer()

    def authorized(auth: AuthConfig) -> Response | None:
        decision = authenticate(request.headers.get("Authorization"), auth, request.remote_addr)
        if decision is AuthDecision.OK:
            return None
        if decision is AuthDecision.THROTTLED:   # counted in inferwatch_auth_throttled_total
            response = _problem(429, THROTTLED_BODY["error"], THROTTLED_BODY["detail"])
            response.headers["Retry-After"] = "60"
            return response
        response = _problem(401, "unauthorized", "missing or invalid credentials in the Authorization header")
        response.headers["WWW-Authenticate"] = 'Bearer realm="inferwatch", Basic realm="inferwatch"'
        return response

    def reject(reason: str, detail: str, status: int = 400, **extra: Any) -> Response:
        metrics.payload_errors.labels(model, metrics.version_label(default_version, default_version), reason).inc()
        return _problem(status, reason, detail, **extra)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            return reject("too_large", f"request body exceeds admin.max_body_bytes ({admin.max_body_bytes} bytes)",
                          413)
        return _problem(exc.code or 500, exc.name.lower().replace(" ", "_"), exc.description or exc.name)

    # Any body is the client's to get wrong: JSON nested deeper than a parser's recursion (on any
    # route, /v1/alerts too) is a 400 like any other unusable body, never an uncaught 500.
    @app.errorhandler(RecursionError)
    def too_deep(exc: RecursionError):
        return reject("too_deep", "the body is nested too deeply to parse")

    @app.errorhandler(OverflowError)
    def out_of_range(exc: OverflowError):   # e.g. a 400-digit integer where a number is read as a float
        return reject("number_out_of_range", "a number in the body is beyond the range of a 64-bit float")

    @app.before_request
    def shutting_down():
        # Once shutdown closed the monitoring queue nothing more is acknowledged: the sender retries elsewhere.
        if request.method == "POST" and request.path in PUSH_PATHS and not pipeline.accepting:
            response = _problem(503, "shutting_down", "the sidecar is shutting down; retry on another instance")
            response.headers["Retry-After"] = "1"
            return response
        return None

    @app.get("/metrics")
    def scrape():
        denied = authorized(admin.metrics_auth)
        if denied is not None:
            return denied
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(metrics.registry), content_type=content_type)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        ok, checks = ready()
        response = jsonify({"status": "ready" if ok else "not_ready", "checks": checks})
        response.status_code = 200 if ok else 503
        return response

    @app.get("/v1/status")
    def status_view():
        denied = authorized(admin.metrics_auth)
        if denied is not None:
            return denied
        return jsonify(status())

    @app.get("/v1/report")
    def report_view():
        denied = authorized(admin.metrics_auth)
        if denied is not None:
            return denied
        if report is None:
            return _problem(503, "no_reference", "drift is off: there is no reference to compare the window with")
        try:
            page = report(request.args.get("version") or None)
        except ReportUnavailable as exc:
            return _problem(exc.status, exc.reason, exc.detail)
        except Exception:  # noqa: BLE001 - a failed page is reported and counted, never a bare 500
            log.exception("rendering the drift report failed")
            metrics.monitoring_errors.labels(model, "report").inc()
            return _problem(500, "report_failed", "rendering the report failed; the sidecar log has the cause")
        return Response(page, content_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": CONTENT_SECURITY_POLICY})

    # Parsing is CPU under the GIL: several admin threads parsing at once add no throughput but
    # take the GIL's turns from the monitoring worker, which then falls behind and fills the queue
    # (benchmarks/ingest.py: 108 requests refused with 429, RSS +22% from 100k to 1M events).
    # One body is parsed at a time; reading bodies and everything else stays concurrent.
    parse_lock = threading.Lock()

    def submit_batches(batches) -> tuple[int, int]:
        accepted = dropped = 0
        for batch in batches:
            version = metrics.version_label(batch.model_version, default_version)
            if pipeline.submit_batch(version, batch):
                accepted += batch.n
            else:
                dropped += batch.n
        return accepted, dropped

    @app.post("/v1/events")
    def push_events():
        denied = authorized(admin.write_auth)
        if denied is not None:
            return denied
        if "ce-type" in request.headers or (request.mimetype or "").startswith("application/cloudevents"):
            return receive_cloudevent()
        body = request.get_data()
        # Backpressure before refusal: while the worker is behind, a pusher waits a little
        # instead of filling the queue to 429s.
        pipeline.queue.wait_below(PUSH_WAIT_ABOVE, PUSH_WAIT_SECONDS)
        try:
            with parse_lock:
                batches, rejected = parse_events(body, request.headers.get("Content-Type"),
                                                 max_bytes=admin.max_body_bytes, default_version=default_version,
                                                 content_encoding=request.headers.get("Content-Encoding"))
        except PayloadError as exc:   # a body too large once decompressed: 413, like one too large as sent
            return reject(exc.reason, exc.detail or str(exc), 413 if exc.reason == "too_large" else 400)
        version = metrics.version_label(default_version, default_version)
        if rejected:
            metrics.events_dropped.labels(model, version, "invalid").inc(len(rejected))
        if rejected and not batches:   # nothing usable: a client error, not a success
            return _problem(400, "invalid_events", f"no valid event among {len(rejected)}: see rejected",
                            accepted=0, dropped=0, rejected=rejected)
        accepted, dropped = submit_batches(batches)
        counts = {"accepted": accepted, "dropped": dropped, "rejected": rejected}
        if dropped and not accepted:
            response = jsonify({**counts, "error": "queue_full", "detail": "monitoring queue is full; retry later"})
            response.status_code = 429
            response.headers["Retry-After"] = "1"
            return response
        return jsonify(counts)

    @app.post("/v1/labels")
    def push_labels():
        denied = authorized(admin.write_auth)
        if denied is not None:
            return denied
        if not labels.enabled:
            return _problem(404, "labels_disabled", "ground truth is not enabled: set labels.enabled: true")
        try:
            batch, rejected = parse_labels(request.get_data(), labels.max_batch)
        except PayloadError as exc:
            return reject(exc.reason, exc.detail or str(exc))
        version = metrics.version_label(default_version, default_version)
        if rejected:
            metrics.labels_received.labels(model, version, "invalid").inc(len(rejected))
        if not batch.n:
            return _problem(400, "invalid_labels", f"no valid label among {len(rejected)}: see rejected",
                            rejected=rejected)
        if not pipeline.submit_labels(batch):
            response = jsonify({"accepted": 0, "rejected": rejected, "error": "queue_full",
                                "detail": "monitoring queue is full; retry later"})
            response.status_code = 429
            response.headers["Retry-After"] = "1"
            return response
        return jsonify({"accepted": batch.n, "rejected": rejected}), 202

    @app.post("/v1/cloudevents")
    def push_cloudevent():
        denied = authorized(admin.write_auth)
        if denied is not None:
            return denied
        return receive_cloudevent()

    def receive_cloudevent():
        try:
            event = parse_cloudevent(dict(request.headers), request.get_data())
            if event.kind == "feedback":  # Seldon's feedback: the truth of a request, as labels
                return receive_feedback(event.body, event.event_id)
            paired = pairer.add_event(event)
        except PayloadError as exc:
            return reject(exc.reason, exc.detail or str(exc))
        if paired is None:
            return jsonify({"accepted": 0, "pending": True}), 202
        version = metrics.version_label(paired.model_version or default_version, default_version)
        ok = pipeline.submit_exchange(cloudevent_exchange(paired, version))
        return jsonify({"accepted": 1 if ok else 0, "pending": False}), 200 if ok else 429

    def receive_feedback(body: bytes, request_id: str):
        if not labels.enabled:
            return _problem(404, "labels_disabled", "Seldon feedback is ground truth: set labels.enabled: true")
        batch = parse_feedback(body, request_id, labels.max_batch)
        if not pipeline.submit_labels(batch):
            response = _problem(429, "queue_full", "monitoring queue is full; retry later")
            response.headers["Retry-After"] = "1"
            return response
        return jsonify({"accepted": batch.n, "rejected": []}), 202

    return app
