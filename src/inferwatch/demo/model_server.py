"""The demo model server: the loan model behind KServe v1 and Open Inference Protocol v2 routes.

Run: ``python -m inferwatch.demo.model_server --port 8081``; ``--variant challenger`` serves a
challenger instead (version v2: trained on other data for fewer steps, approving from 0.5), for the
sidecar's shadow traffic.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from flask import Flask, jsonify, request

from .model import FEATURES, LoanModel, typical_values

MODEL_NAME = "loan"


APPROVE_FROM = {"champion": 0.6, "challenger": 0.5}


def variant_model(variant: str) -> LoanModel:
    return LoanModel.train() if variant == "champion" else LoanModel.train(seed=23, epochs=40)


def create_app(model: LoanModel, *, delay_seconds: float = 0.0, version: str = "v1",
               approve_from: float = APPROVE_FROM["champion"]) -> Flask:
    app = Flask("inferwatch.demo.model_server")
    # Like many real servers, a missing or null feature is silently filled with a typical value:
    # a renamed column upstream keeps "working", which is why the sidecar's guard must notice it.
    typical = typical_values()

    def predict_rows(rows: list[dict]) -> list[dict]:
        columns = {name: np.array([typical[name] if row.get(name) is None else row[name] for row in rows])
                   for name in FEATURES}
        proba = model.predict_proba(columns)
        return [{"approval_probability": round(float(p), 6), "decision": "approve" if p >= approve_from else "refer"}
                for p in proba]

    @app.get("/")
    def root():
        return jsonify({"name": MODEL_NAME, "version": version, "ready": True})

    @app.get(f"/v1/models/{MODEL_NAME}")
    def metadata():
        return jsonify({"name": MODEL_NAME, "versions": [version], "inputs": list(FEATURES)})

    @app.post(f"/v1/models/{MODEL_NAME}:predict")
    def predict_v1():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("instances"), list) or not body["instances"]:
            return jsonify({"error": "expected a JSON object with a non-empty 'instances' list"}), 400
        rows = body["instances"]
        if not all(isinstance(r, dict) for r in rows):
            return jsonify({"error": "each instance must be an object of features"}), 400
        if delay_seconds:
            time.sleep(delay_seconds)
        try:
            return jsonify({"predictions": predict_rows(rows)})
        except (TypeError, ValueError) as exc:
            return jsonify({"error": f"cannot score: {exc}"}), 400

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="inferwatch demo model server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--delay", type=float, default=0.0, help="extra seconds per prediction")
    parser.add_argument("--variant", choices=sorted(APPROVE_FROM), default="champion",
                        help="champion (v1) or a challenger (v2) for shadow traffic")
    args = parser.parse_args(argv)
    from cheroot import wsgi

    app = create_app(variant_model(args.variant), delay_seconds=args.delay,
                     version="v1" if args.variant == "champion" else "v2", approve_from=APPROVE_FROM[args.variant])
    server = wsgi.Server((args.host, args.port), app, numthreads=16, server_name=f"loan-model-{args.variant}")
    try:
        server.prepare()   # binds: a taken port is one line and exit 1, not a traceback
    except OSError as exc:
        print(f"demo model server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"demo model server on http://{args.host}:{args.port}/v1/models/{MODEL_NAME}:predict", flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
