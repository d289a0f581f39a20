"""The drift report in a real browser: headless Chromium (Debian ``chromium``) loads ``GET /v1/report``
from a real sidecar's admin port.

Two ways in: the command line (``--screenshot``, with Chromium's log on stderr, where every console
message appears as a ``CONSOLE`` line), and the DevTools protocol over ``--remote-debugging-pipe``
(JSON messages on file descriptors 3 and 4, no websocket client needed) to read console messages,
uncaught exceptions and browser log entries (a CSP violation, a failed load) and to click the
table's headers. `make system-deps` installs Chromium.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from inferwatch.config import load_config
from inferwatch.sidecar import Sidecar

from conftest import wait_for
from test_report import EVIL, push, reference

# Quiet, offline, no first-run work: the page must load nothing from anywhere.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
TIMEOUT = 60.0   # generous: a loaded CI machine; never asserted as a bound


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:   # a fail, not a skip: `make test` installs it, so its absence is a broken setup
        pytest.fail("chromium is not installed: `make system-deps` installs the Debian chromium package")
    return path


class DevTools:
    """Chromium driven over ``--remote-debugging-pipe``: commands to its fd 3, answers and events
    from its fd 4, each message JSON ended by a NUL byte."""

    def __init__(self, binary: str, profile_dir: Path):
        commands_in, self._commands = os.pipe()
        self._answers, answers_out = os.pipe()
        # Above 4, so putting one on fd 3 cannot overwrite the other before it is moved to fd 4.
        commands_in, answers_out = (_above(fd, 10) for fd in (commands_in, answers_out))
        # bash (dash takes one-digit fds only) puts the two pipe ends on fds 3 and 4 for Chromium.
        self.process = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{commands_in} 4>&{answers_out}', binary, *CHROMIUM_FLAGS,
             f"--user-data-dir={profile_dir}", "--remote-debugging-pipe"],
            pass_fds=(commands_in, answers_out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands_in)
        os.close(answers_out)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def wait_event(self, method: str) -> dict[str, Any]:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read())
        return next(e for e in self.events if e.get("method") == method)

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in answer, answer
        return answer["result"].get("value")

    def problems(self) -> list[str]:
        """Console calls, uncaught exceptions and browser log entries seen so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                found.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Log.entryAdded":
                found.append(f"log {params['entry']['level']}: {params['entry']['text']}")
        return found

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._answers], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise TimeoutError("chromium did not answer over the DevTools pipe")
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, EOFError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        os.close(self._commands)
        os.close(self._answers)


def _above(fd: int, lowest: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, lowest)
    os.close(fd)
    return moved


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def report_sidecar(tmp_path):
    """A sidecar (push mode) with a reference file, a shifted window and labels joined to it."""
    path = tmp_path / "reference.json"
    reference().save(path)
    sidecar = Sidecar(load_config(None, {
        "proxy.enabled": False, "admin.port": 0, "admin.listen_address": "127.0.0.1", "model.name": "churn",
        "model.version": "1", "reference.path": str(path), "drift.interval_seconds": 3600,
        "labels.enabled": True, "performance.interval_seconds": 0.1})).start()
    try:
        base = f"http://127.0.0.1:{sidecar.admin_port}"
        push(base, 400, seed=7)
        sidecar.pipeline.drain()
        rng = np.random.default_rng(8)
        labels = [{"prediction_id": f"p7-{i}", "label": int(rng.random() < 0.3)} for i in range(400)]
        assert requests.post(base + "/v1/labels", json={"labels": labels}, timeout=10).status_code == 202
        sidecar.pipeline.drain()
        assert wait_for(lambda: sidecar.performance.results.get(("1", "")) is not None
                        and sidecar.performance.results[("1", "")].metrics, 20), "no performance evaluated"
        yield sidecar
    finally:
        sidecar.stop()


FEATURES = ["age", "income", "city", EVIL]
ROWS = "Array.from(document.querySelectorAll('#feature-table tbody tr')).map(r => r.dataset.feature)"
SCORES = ("Array.from(document.querySelectorAll('#feature-table tbody tr'))"
          ".map(r => r.cells[3].dataset.value === '' ? null : parseFloat(r.cells[3].dataset.value))")


def test_chromium_renders_the_report_with_no_console_errors_and_sorts_the_table(report_sidecar, tmp_path):
    binary = chromium()
    url = f"http://127.0.0.1:{report_sidecar.admin_port}/v1/report"
    # 1. The command line: a screenshot, and Chromium's log, where console messages are CONSOLE lines.
    shot = tmp_path / "report.png"
    run = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'cli'}", "--enable-logging=stderr",
                          "--v=0", f"--screenshot={shot}", "--window-size=1280,2000", url],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    data = shot.read_bytes()
    assert png_size(data) == (1280, 2000)
    # A blank page of this size is about 6 KB of PNG; the report's text and bars are far more.
    assert len(data) > 60_000, len(data)

    # 2. The DevTools protocol: the DOM after the script ran, console and exceptions, clicks.
    browser = DevTools(binary, tmp_path / "cdp")
    try:
        browser.open(url + "?sort=score&order=desc")
        assert browser.evaluate("document.documentElement.dataset.reportReady") == "1"
        assert sorted(browser.evaluate(ROWS)) == sorted(FEATURES)
        charts = browser.evaluate("Array.from(document.querySelectorAll('#distributions svg.chart'))"
                                  ".map(s => [s.dataset.feature, s.querySelectorAll('rect').length])")
        assert sorted(name for name, _ in charts) == sorted(FEATURES)
        assert all(bars >= 4 for _, bars in charts), charts
        # the feature named like a script is text on the page, and no script of it ran
        assert browser.evaluate(f"document.body.innerText.includes({json.dumps(EVIL)})")
        assert browser.evaluate("document.scripts.length") == 1
        scores = browser.evaluate(SCORES)                       # ?sort=score&order=desc
        assert scores == sorted(scores, reverse=True), scores
        browser.evaluate("document.querySelector('#feature-table th[data-key=name]').click()")
        assert browser.evaluate(ROWS) == sorted(FEATURES, key=str.lower)
        browser.evaluate("document.querySelector('#feature-table th[data-key=score]').click()")
        assert browser.evaluate(SCORES) == sorted(scores, reverse=True)   # a number: largest first
        browser.evaluate("document.querySelector('#feature-table th[data-key=score]').click()")
        assert browser.evaluate(SCORES) == sorted(scores)
        assert browser.evaluate("document.querySelector('#feature-table th[data-key=score]')"
                                ".getAttribute('aria-sort')") == "ascending"
        assert browser.evaluate("document.querySelectorAll('#performance-table tr[data-metric]').length") > 0
        assert browser.evaluate("document.querySelector('#predictions svg.chart').dataset.feature") == "prediction"
        assert browser.problems() == []
    finally:
        browser.close()
