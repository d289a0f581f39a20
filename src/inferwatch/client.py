"""A fail-open client for push mode: ``log()`` queues, a daemon thread posts batches.

Monitoring must never slow down or break serving, so ``log()`` never blocks and never raises:
a full queue drops the event (counted in ``dropped``), and a batch that still fails after the
retries is counted in ``failed_events``.

    client = InferwatchClient("http://inferwatch:9180", token="...")
    prediction_id = client.log({"age": 31, "income": 52000}, prediction=0.93)
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import requests

__all__ = ["InferwatchClient"]

log = logging.getLogger("inferwatch.client")

# Statuses worth retrying: the server is overloaded or restarting. Other 4xx mean the batch
# itself is refused, and sending it again would be refused again.
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def _json_default(value: Any) -> Any:
    """Serialize numpy scalars/arrays and datetimes that users pass as features."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _close_at_exit(ref: weakref.ref[InferwatchClient]) -> None:
    client = ref()
    if client is not None:
        client.close(timeout=2.0)


class InferwatchClient:
    """Posts events to ``{url}/v1/events`` in batches from a background daemon thread.

    Counters (ints, read them any time): ``dropped`` (queue full, closed, or not loggable),
    ``failed_events`` (batches that failed after retries), ``sent_events``.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue: int = 100_000,
        timeout: float = 5.0,
        token: str | None = None,
        model_version: str | None = None,
        retries: int = 2,
        backoff: float = 0.5,
    ):
        self.endpoint = url.rstrip("/") + "/v1/events"
        self.batch_size = max(1, batch_size)
        self.flush_interval = max(0.01, flush_interval)  # 0 would spin
        self.max_queue = max_queue
        self.timeout = timeout
        self.model_version = model_version
        self.retries = retries
        self.backoff = backoff
        self.dropped = 0
        self.failed_events = 0
        self.sent_events = 0

        self._session = requests.Session()
        self._session.headers["Content-Type"] = "application/json"
        self._session.headers["User-Agent"] = "inferwatch-client"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._accepted = 0  # events queued so far
        self._finished = 0  # events sent or given up on so far
        self._flush_requested = False
        self._closing = False
        self._closed = False
        self._stop = threading.Event()  # interrupts retry backoff on close
        self._healthy = True  # log one warning per outage, not one per batch
        self._thread = threading.Thread(target=self._run, name="inferwatch-client", daemon=True)
        self._thread.start()
        # A daemon thread dies with the interpreter; flush what is queued on a normal exit.
        # A weak reference, so the registration does not keep a dropped client alive.
        self._atexit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._atexit)

    # --- caller side ---------------------------------------------------------------------

    def log(
        self,
        features: Mapping[str, Any],
        prediction: Any = None,
        *,
        prediction_id: str | None = None,
        timestamp: float | datetime | None = None,
        model_version: str | None = None,
    ) -> str:
        """Queue one event; returns its prediction id. Never blocks, never raises."""
        try:
            prediction_id = uuid.uuid4().hex if prediction_id is None else str(prediction_id)
            if isinstance(timestamp, datetime):
                timestamp = timestamp.timestamp()
            event: dict[str, Any] = {
                "prediction_id": prediction_id,
                "timestamp": time.time() if timestamp is None else float(timestamp),
                # A copy: callers often reuse and mutate one dict per request.
                "features": dict(features),
            }
            if prediction is not None:
                event["prediction"] = prediction
            version = model_version or self.model_version
            if version is not None:
                event["model_version"] = str(version)
            with self._cond:
                if self._closing or len(self._queue) >= self.max_queue:
                    self.dropped += 1
                    return prediction_id
                self._queue.append(event)
                self._accepted += 1
                if len(self._queue) >= self.batch_size:
                    self._cond.notify_all()
        except Exception:  # fail open: a monitoring bug must not break serving
            with self._cond:
                self.dropped += 1
            log.debug("inferwatch: event not logged", exc_info=True)
        return prediction_id if isinstance(prediction_id, str) else ""

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything logged so far; True when it was all sent or given up on in time."""
        with self._cond:
            target = self._accepted
            self._flush_requested = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._finished >= target or not self._thread.is_alive(), timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush (bounded by ``timeout``), stop the thread and release the connection pool."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._stop.set()
        self._thread.join(timeout)
        self._session.close()
        atexit.unregister(self._atexit)

    def __enter__(self) -> InferwatchClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --- background thread ---------------------------------------------------------------

    def _next_batch(self) -> list[dict[str, Any]] | None:
        """Wait for a full batch, the flush interval, a flush request or close; None = stop."""
        deadline = time.monotonic() + self.flush_interval
        with self._cond:
            while True:
                if self._closing and not self._queue:
                    return None
                if self._queue and (
                    len(self._queue) >= self.batch_size or self._flush_requested or self._closing
                ):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if self._queue:
                        break
                    deadline = time.monotonic() + self.flush_interval
                    remaining = self.flush_interval
                if not self._queue:
                    self._flush_requested = False
                self._cond.wait(remaining)
            count = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            if not self._queue:
                self._flush_requested = False
            return batch

    def _run(self) -> None:
        while True:
            batch = None
            try:
                batch = self._next_batch()
                if batch is None:
                    return
                sent = self._send(batch)
            except Exception:  # keep the thread alive whatever happens
                log.exception("inferwatch client: unexpected error")
                batch, sent = batch or [], False
            with self._cond:
                if sent:
                    self.sent_events += len(batch)
                else:
                    self.failed_events += len(batch)
                self._finished += len(batch)
                self._cond.notify_all()

    def _send(self, batch: list[dict[str, Any]]) -> bool:
        body = json.dumps({"events": batch}, default=_json_default, allow_nan=True).encode("utf-8")
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                # Backoff; close() sets _stop so the remaining tries go at once.
                self._stop.wait(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._session.post(self.endpoint, data=body, timeout=self.timeout)
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code < 300:
                if not self._healthy:
                    log.warning("inferwatch client: %s reachable again", self.endpoint)
                self._healthy = True
                return True
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code not in _RETRY_STATUSES:
                break
        if self._healthy:
            log.warning("inferwatch client: dropping %d events, %s: %s", len(batch), self.endpoint, problem)
        self._healthy = False
        return False

