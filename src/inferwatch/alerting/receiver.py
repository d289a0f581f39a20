"""The Alertmanager webhook receiver: ``POST /v1/alerts`` in front of an :class:`ActionRunner`.

``add_receiver_route`` mounts it on a Flask app (the sidecar's admin port); ``ActionsServer``
is ``inferwatch actions``: the receiver on its own port, with ``/metrics`` and ``/healthz``.
Refused requests are counted in ``inferwatch_actions_webhook_errors_total{reason}`` (``throttled``:
429 for an address past its failed basic-auth budget, see ``support.auth``); a
notification whose actions did not all fit on the queue is answered 503, so Alertmanager
sends it again.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from werkzeug.exceptions import HTTPException

from inferwatch.config import ActionsConfig
from inferwatch.support.auth import THROTTLED_BODY, AuthCollector, AuthDecision, authenticate

from .actions import ActionRunner
from .notifications import NotificationError, parse_notification


def _problem(status: int, error: str, detail: str) -> Response:
    response = jsonify({"error": error, "detail": detail})
    response.status_code = status
    return response


def add_receiver_route(app: Flask, runner: ActionRunner, cfg: ActionsConfig, path: str = "/v1/alerts") -> None:
    """POST ``path``: an Alertmanager webhook notification (bearer token / basic auth from ``cfg.auth``)."""
    metrics = runner.metrics

    @app.post(path, endpoint="alertmanager_webhook")
    def receive_alerts() -> Response:
        decision = authenticate(request.headers.get("Authorization"), cfg.auth, request.remote_addr)
        if decision is AuthDecision.THROTTLED:   # too many failed basic-auth checks from this address
            metrics.webhook_errors.labels("throttled").inc()
            response = _problem(429, THROTTLED_BODY["error"], THROTTLED_BODY["detail"])
            response.headers["Retry-After"] = "60"
            return response
        if decision is not AuthDecision.OK:
            metrics.webhook_errors.labels("unauthorized").inc()
            response = _problem(401, "unauthorized", "missing or invalid credentials in the Authorization header")
            response.headers["WWW-Authenticate"] = 'Bearer realm="inferwatch-actions"'
            return response
        if (request.content_length or 0) > cfg.max_body_bytes:
            metrics.webhook_errors.labels("too_large").inc()
            return _problem(413, "too_large", f"body exceeds max_body_bytes ({cfg.max_body_bytes} bytes)")
        try:
            alerts = parse_notification(request.get_data())
        except NotificationError as exc:
            metrics.webhook_errors.labels(exc.reason).inc()
            return _problem(400, exc.reason, exc.detail)
        summary = runner.handle(alerts)
        response = jsonify({"alerts": len(alerts), **summary})
        if summary["dropped"]:   # Alertmanager retries on 5xx; what was taken is then a duplicate
            response.status_code = 503
            response.headers["Retry-After"] = "10"
        return response


def create_actions_app(cfg: ActionsConfig, runner: ActionRunner, registry: CollectorRegistry) -> Flask:
    """The standalone receiver: /v1/alerts, /metrics (no auth: scrape it like the sidecar), /healthz."""
    app = Flask("inferwatch.actions")
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            runner.metrics.webhook_errors.labels("too_large").inc()
            return _problem(413, "too_large", f"body exceeds max_body_bytes ({cfg.max_body_bytes} bytes)")
        return _problem(exc.code or 500, exc.name.lower().replace(" ", "_"), exc.description or exc.name)

    @app.get("/metrics")
    def scrape() -> Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(registry), content_type=content_type)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok", "actions": [a.name for a in runner.actions]})

    add_receiver_route(app, runner, cfg)
    return app


class ActionsServer:
    """``inferwatch actions``: the receiver on its own port (cheroot, TLS when configured)."""

    def __init__(self, cfg: ActionsConfig, registry: CollectorRegistry | None = None, **runner_kwargs: Any):
        from cheroot import wsgi

        self.cfg = cfg
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.runner = ActionRunner(cfg, self.registry, **runner_kwargs)
        self.registry.register(AuthCollector())
        self.server = wsgi.Server((cfg.listen_address, cfg.port), create_actions_app(cfg, self.runner, self.registry),
                                  numthreads=4, server_name="inferwatch-actions")
        if cfg.tls.cert_file:
            from cheroot.ssl.builtin import BuiltinSSLAdapter

            self.server.ssl_adapter = BuiltinSSLAdapter(cfg.tls.cert_file, cfg.tls.key_file)
        self.port = cfg.port
        self._thread: threading.Thread | None = None

    def start(self) -> "ActionsServer":
        self.runner.start()
        self.server.prepare()
        self.port = self.server.bind_addr[1]
        self._thread = threading.Thread(target=self.server.serve, name="inferwatch-actions-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        self.runner.stop()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "ActionsServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
