"""A background thread's lifecycle, shared by the engines that compute off the request path."""

from __future__ import annotations

import threading


class BackgroundWorker:
    """``start()`` runs ``self._run`` in a daemon thread; ``_run`` loops until ``self._stop`` is set."""

    thread_name = "inferwatch-background"
    _stop: threading.Event
    _thread: threading.Thread | None

    def _run(self) -> None:
        raise NotImplementedError

    def start(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class EngineCollector:
    """A custom collector over an engine's last results: ``collect()`` only reads them."""

    def __init__(self, engine):
        self.engine = engine

    def describe(self):
        return []  # collect() is cheap and its series vary: no describe-time registration checks
