"""A port already taken: one clear line on stderr and a non-zero exit, nothing else (no
`Unclosed client session`, no `Task was destroyed`, no traceback). Real processes, real sockets."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest


@pytest.fixture()
def taken_port():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("which", ["proxy", "admin"])
def test_sidecar_on_a_taken_port_says_one_line_and_exits_non_zero(tmp_path, taken_port, which):
    config = tmp_path / "c.yaml"
    config.write_text("proxy: {listen_address: 127.0.0.1}\nadmin: {listen_address: 127.0.0.1}\n")
    ports = {"proxy": "0", "admin": "0", which: str(taken_port)}
    result = run("inferwatch", "run", "--config", str(config), "--proxy-port", ports["proxy"],
                 "--admin-port", ports["admin"])
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("inferwatch: cannot listen: ") and str(taken_port) in lines[0]
    assert "address already in use" in lines[0].lower()
    assert result.stdout == ""


def test_demo_model_server_on_a_taken_port_says_one_line_and_exits_non_zero(taken_port):
    result = run("inferwatch.demo.model_server", "--port", str(taken_port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(f"demo model server: cannot listen on 127.0.0.1:{taken_port}: ")
    assert "Traceback" not in result.stderr and result.stdout == ""
