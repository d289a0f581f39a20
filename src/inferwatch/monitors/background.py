"""A background thread's lifecycle, shared by the engines that compute off the request path."""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

W = TypeVar("W", bound="BackgroundWorker")
E = TypeVar("E")


class BackgroundWorker:
    """``start()`` runs ``self._run`` in a daemon thread; ``_run`` loops until ``self._stop`` is set.

    Subclasses create ``self._stop = threading.Event()`` and ``self._thread = None`` in their
    ``__init__``.
    """

    thread_name = "inferwatch-background"
    _stop: threading.Event
    _thread: threading.Thread | None
    # Failures the engine survived (it fails open); on_error also counts them in the sidecar's
    # inferwatch_monitoring_errors_total{stage=...}.
    errors: int = 0
    on_error: Callable[[], None] | None = None

    def count_error(self) -> None:
        self.errors += 1
        if self.on_error is not None:
            try:
                self.on_error()
            except Exception:  # noqa: BLE001 - counting must never raise into the caller
                pass

    def _run(self) -> None:
        raise NotImplementedError

    def start(self: W) -> W:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class EngineCollector(Generic[E]):
    """A custom collector over an engine's last results: ``collect()`` only reads them.

    ``EngineCollector[SomeEngine]`` types ``self.engine`` for the subclass.
    """

    def __init__(self, engine: E):
        self.engine = engine

    def describe(self) -> list:
        return []  # collect() is cheap and its series vary: no describe-time registration checks
