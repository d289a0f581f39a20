"""A real model server: MLServer serving a scikit-learn model on HTTP and gRPC, the sidecar in
front of both. Answers through the sidecar equal direct answers byte for byte, and the decoded
features and predictions reach /metrics. Skipped only when MLServer is not installed (the test
extra installs it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import requests

from conftest import sample, scrape, start_sidecar, wait_for
from inferwatch.ingest.grpc_v2 import MODEL_INFER, encode_infer

pytest.importorskip("mlserver", reason="MLServer is not installed (pip install -e '.[test]')")
pytest.importorskip("mlserver_sklearn", reason="mlserver-sklearn is not installed (pip install -e '.[test]')")

MODEL = "clf"
ROWS = [[1.0, 0.5, -0.2], [-1.5, 0.1, 0.3], [0.2, -0.7, 1.1]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory):
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("mlserver")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), root / "model.joblib")
    (root / "model-settings.json").write_text(json.dumps({
        "name": MODEL, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    # parallel_workers 0: the model runs in the server's own process (no worker pool to start)
    (root / "settings.json").write_text(json.dumps({**ports, "parallel_workers": 0, "host": "127.0.0.1"}))
    executable = Path(sys.executable).with_name("mlserver")
    log = open(root / "mlserver.log", "wb")
    process = subprocess.Popen([str(executable), "start", str(root)], cwd=root, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{ports['http_port']}"

    def ready() -> bool:
        try:
            return requests.get(f"{url}/v2/models/{MODEL}/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        if not wait_for(lambda: ready() or process.poll() is not None, 90) or process.poll() is not None:
            pytest.fail(f"MLServer did not start: {(root / 'mlserver.log').read_text()[-2000:]}")
        yield url, ports["grpc_port"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log.close()


def test_mlserver_behind_the_sidecar_on_http_and_grpc(mlserver):
    url, grpc_port = mlserver
    # a schema, so the input guard reports each decoded feature (its missing ratio) on /metrics
    sidecar = start_sidecar(url, **{"upstream.health_path": "/v2/health/ready", "proxy.grpc_port": free_port(),
                                    "proxy.grpc_upstream": f"127.0.0.1:{grpc_port}",
                                    "payload.features": ["x_0", "x_1", "x_2"]})
    try:
        assert wait_for(lambda: sidecar.proxy.up_value == 1.0, 10)
        # HTTP v2: a fixed id, or MLServer answers a fresh uuid each time
        body = json.dumps({"id": "http-1", "inputs": [
            {"name": "x", "shape": [3, 3], "datatype": "FP64", "data": sum(ROWS, [])}]}).encode()
        path = f"/v2/models/{MODEL}/infer"
        headers = {"Content-Type": "application/json"}
        direct = requests.post(url + path, data=body, headers=headers, timeout=30)
        through = requests.post(f"http://127.0.0.1:{sidecar.proxy_port}{path}", data=body, headers=headers, timeout=30)
        assert direct.status_code == through.status_code == 200
        assert through.content == direct.content
        # gRPC v2, typed and raw contents
        for raw in (False, True):
            request = encode_infer([("x", "FP64", [3, 3], sum(ROWS, []))], raw=raw, model_name=MODEL, id=f"grpc-{raw}")
            infer_direct = grpc.insecure_channel(f"127.0.0.1:{grpc_port}").unary_unary(MODEL_INFER)
            infer_through = grpc.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}").unary_unary(MODEL_INFER)
            assert infer_through(request, timeout=30) == infer_direct(request, timeout=30)
        sidecar.pipeline.drain()
        assert wait_for(lambda: 'feature="x_2"' in scrape(sidecar), 15)
        text = scrape(sidecar)
        assert sample(text, "inferwatch_events_total", source="grpc", model_version="v1") == 6
        assert sample(text, "inferwatch_events_total", source="proxy", model_version="v1") == 3
        assert sample(text, "inferwatch_requests_total", endpoint=MODEL_INFER, code="OK") == 2
        # the features and the prediction, by the names the tensors gave them
        for feature in ("x_0", "x_1", "x_2"):  # present in every event: 0, where undecoded would be 1
            assert f'feature="{feature}"' in text
            assert sample(text, "inferwatch_feature_missing_ratio", feature=feature) == 0
        assert 'output="predict"' in text
        assert sample(text, "inferwatch_payload_errors_total") == 0
    finally:
        sidecar.stop()
