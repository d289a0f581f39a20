"""Receive the payload loggers of KServe and Seldon Core: CloudEvents pairing requests with responses.

Both send each inference request and each response as a separate CloudEvent, by default in
binary mode: an HTTP POST whose ``ce-*`` headers carry the attributes and whose body is the raw
inference payload. Structured mode (``application/cloudevents+json`` with ``data`` or
``data_base64``) is accepted too.

* KServe (pkg/logger): ``ce-type`` ``org.kubeflow.serving.inference.request`` / ``.response``;
  both halves carry the same ``ce-id``; extensions ``ce-inferenceservicename``,
  ``ce-namespace``, ``ce-component`` (predictor/transformer), ``ce-endpoint`` (default/canary).
* Seldon Core (executor, v1 and v2): ``io.seldon.serving.inference.request`` / ``.response``;
  ``ce-requestid`` is shared by both halves (``ce-id`` may differ), ``ce-modelid`` names the
  graph node.

Halves are paired on (service, component or model id, request id), so a transformer and its
predictor logging the same request id do not steal each other's halves. Only the components in
``cloudevents.components`` (default ``predictor``) are monitored: a transformer's raw inputs are
not the predictor's features, so its events are counted (``ignored``) and dropped. An event of
a KServe endpoint other than ``default`` (``ce-endpoint: canary``) is its own model version,
named after the endpoint, while ``cloudevents.endpoint_versions`` is on.

Seldon's ``io.seldon.serving.feedback`` events are not halves: they carry the truth of a request
and become labels (``ground_truth.parse_feedback``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .bodies import media_type
from .events import PayloadError

__all__ = ["CloudEventPairer", "PairedExchange", "parse_cloudevent", "CloudEvent", "REQUEST_TYPES", "RESPONSE_TYPES",
           "FEEDBACK_TYPES"]

REQUEST_TYPES = frozenset({"org.kubeflow.serving.inference.request", "io.seldon.serving.inference.request"})
RESPONSE_TYPES = frozenset({"org.kubeflow.serving.inference.response", "io.seldon.serving.inference.response"})
# Forks and older releases keep the suffix but change the prefix (e.g. KFServing builds).
FEEDBACK_TYPES = frozenset({"io.seldon.serving.feedback", "org.kubeflow.serving.feedback"})
_REQUEST_SUFFIX = ".inference.request"
_RESPONSE_SUFFIX = ".inference.response"
_STRUCTURED = "application/cloudevents+json"


@dataclass
class CloudEvent:
    """One half of an exchange."""

    kind: str  # "request", "response" or "feedback"
    event_id: str  # the pairing id: ce-requestid when present, else ce-id
    type: str
    source: str
    body: bytes
    content_type: str | None
    model_name: str | None  # KServe InferenceService / Seldon deployment, else Seldon model id
    model_id: str | None  # Seldon ce-modelid (graph node)
    namespace: str | None
    component: str | None
    endpoint: str | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model_name or "", self.component or self.model_id or "", self.event_id)


@dataclass
class PairedExchange:
    """A request and its response, ready for ``codecs.decode_exchange``.

    ``response_body`` is None for a request whose response never came (see ``expire``).
    """

    event_id: str
    request_body: bytes
    response_body: bytes | None
    content_type: str | None  # the request's
    model_name: str | None
    response_content_type: str | None = None
    model_id: str | None = None
    namespace: str | None = None
    component: str | None = None
    endpoint: str | None = None
    source: str | None = None
    # The version its events are windowed under when it is not the model's own: a KServe
    # endpoint other than "default" (a canary), with cloudevents.endpoint_versions on.
    model_version: str | None = None


def _kind(ce_type: str) -> str:
    if ce_type in FEEDBACK_TYPES:
        return "feedback"
    if ce_type in REQUEST_TYPES or ce_type.endswith(_REQUEST_SUFFIX):
        return "request"
    if ce_type in RESPONSE_TYPES or ce_type.endswith(_RESPONSE_SUFFIX):
        return "response"
    raise PayloadError(
        "invalid_event",
        f"unknown CloudEvent type {ce_type!r} (expected an inference request or response, or Seldon feedback)"
    )


def _structured(body: bytes) -> tuple[dict[str, Any], bytes, str | None]:
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise PayloadError("invalid_event", f"structured CloudEvent is not JSON ({exc})") from None
    if not isinstance(envelope, dict):
        raise PayloadError("invalid_event", "structured CloudEvent must be a JSON object")
    content_type = envelope.get("datacontenttype")
    if "data_base64" in envelope:
        try:
            data = base64.b64decode(envelope["data_base64"] or "", validate=True)
        except (ValueError, TypeError) as exc:
            raise PayloadError("invalid_event", f"data_base64 is not base64 ({exc})") from None
    elif "data" in envelope:
        value = envelope["data"]
        # A JSON datacontenttype (or none) means data is the JSON value itself. A string is
        # taken as the payload text: producers often put an encoded JSON document there, and an
        # inference payload is never a bare JSON string.
        if isinstance(value, str):
            data = value.encode("utf-8")
        else:
            data = json.dumps(value).encode("utf-8")
            content_type = content_type or "application/json"
    else:
        data = b""
    attributes = {str(k).lower(): v for k, v in envelope.items() if k not in ("data", "data_base64")}
    return attributes, data, content_type


def parse_cloudevent(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """One HTTP POST (binary or structured mode) to a ``CloudEvent``; ``PayloadError`` if it is not one."""
    lowered = {str(k).lower(): v for k, v in headers.items()}
    mt = media_type(lowered.get("content-type"))
    if mt == _STRUCTURED:
        attributes, data, content_type = _structured(body)
    elif mt == "application/cloudevents-batch+json":
        raise PayloadError("invalid_event", "batched CloudEvents are not supported; use binary or structured mode")
    else:
        attributes = {k[3:]: v for k, v in lowered.items() if k.startswith("ce-")}
        data, content_type = body, lowered.get("content-type")
    ce_type = attributes.get("type")
    if not ce_type:
        raise PayloadError("invalid_event", "not a CloudEvent: no ce-type")
    kind = _kind(str(ce_type))
    event_id = attributes.get("requestid") or attributes.get("id")
    if not event_id:
        raise PayloadError("invalid_event", "CloudEvent without ce-id or ce-requestid")

    def attr(name: str) -> str | None:
        value = attributes.get(name)
        return None if value in (None, "") else str(value)

    model_id = attr("modelid")
    return CloudEvent(
        kind=kind,
        event_id=str(event_id),
        type=str(ce_type),
        source=str(attributes.get("source") or ""),
        body=bytes(data),
        content_type=content_type,
        model_name=attr("inferenceservicename") or model_id,
        model_id=model_id,
        namespace=attr("namespace"),
        component=attr("component"),
        endpoint=attr("endpoint"),
    )


class CloudEventPairer:
    """Holds the first half of each exchange until the other arrives (either order).

    Pending halves are bounded by ``max_pending`` and ``max_pending_bytes`` (the oldest is
    evicted, counted in ``evicted_full``) and by ``ttl_seconds`` (counted in ``expired``).
    Requests that expire are kept for ``expire()`` to return, so a logger in ``mode: request``
    still yields features. Thread-safe.
    """

    def __init__(
        self,
        max_pending: int = 10000,
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_pending_bytes: int = 256 * 1024 * 1024,
        components: tuple[str, ...] | list[str] | None = ("predictor",),
        endpoint_versions: bool = True,
    ):
        self.max_pending = max_pending
        # None: every component; an event without ce-component (Seldon) is always monitored.
        self.components = None if components is None else frozenset(components)
        self.endpoint_versions = endpoint_versions
        self.ttl_seconds = ttl_seconds
        self.max_pending_bytes = max_pending_bytes
        self._clock = clock
        self._lock = threading.Lock()
        # Insertion order is arrival order, so the oldest pending half is always first.
        self._pending: OrderedDict[tuple[str, str, str], tuple[float, CloudEvent]] = OrderedDict()
        self._pending_bytes = 0
        # Expired requests wait here for expire(); bounded too, in case nobody calls it.
        self._unanswered: deque[PairedExchange] = deque()
        self._unanswered_bytes = 0
        self.paired = 0
        self.evicted_full = 0
        self.expired = 0
        self.duplicates = 0  # a second half of the same kind replaced a pending one
        self.ignored = 0  # halves of a component that is not monitored (cloudevents.components)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def pending(self) -> int:
        """Halves waiting for their other half."""
        return len(self)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def add(self, headers: Mapping[str, str], body: bytes) -> PairedExchange | None:
        """Add one half; returns the exchange when this completes one, else None."""
        return self.add_event(parse_cloudevent(headers, body))

    def monitored(self, event: CloudEvent) -> bool:
        return self.components is None or event.component is None or event.component in self.components

    def add_event(self, event: CloudEvent) -> PairedExchange | None:
        """Add one parsed half (see ``add``); a feedback event is not a half (``PayloadError``)."""
        if event.kind == "feedback":
            raise PayloadError("invalid_event", "a feedback CloudEvent is a label, not a request or response half")
        if not self.monitored(event):
            with self._lock:
                self.ignored += 1
            return None
        key = event.key
        with self._lock:
            now = self._clock()
            self._expire_locked(now)
            waiting = self._pending.pop(key, None)
            if waiting is not None:
                self._pending_bytes -= len(waiting[1].body)
                other = waiting[1]
                if other.kind != event.kind:
                    self.paired += 1
                    request, response = (other, event) if other.kind == "request" else (event, other)
                    return self._versioned(_exchange(request, response))
                self.duplicates += 1
            self._pending[key] = (now, event)
            self._pending_bytes += len(event.body)
            while len(self._pending) > self.max_pending or (
                self._pending_bytes > self.max_pending_bytes and len(self._pending) > 1
            ):
                _, (_, dropped) = self._pending.popitem(last=False)
                self._pending_bytes -= len(dropped.body)
                self.evicted_full += 1
        return None

    def expire(self) -> list[PairedExchange]:
        """Drop halves older than the TTL; return expired requests (``response_body=None``)."""
        with self._lock:
            self._expire_locked(self._clock())
            unanswered = list(self._unanswered)
            self._unanswered.clear()
            self._unanswered_bytes = 0
        return unanswered

    def _expire_locked(self, now: float) -> None:
        cutoff = now - self.ttl_seconds
        while self._pending:
            key, (arrived, event) = next(iter(self._pending.items()))
            if arrived > cutoff:
                break
            del self._pending[key]
            self._pending_bytes -= len(event.body)
            self.expired += 1
            if event.kind == "request":
                self._unanswered.append(self._versioned(_exchange(event, None)))
                self._unanswered_bytes += len(event.body)
                while len(self._unanswered) > self.max_pending or self._unanswered_bytes > self.max_pending_bytes:
                    self._unanswered_bytes -= len(self._unanswered.popleft().request_body)


    def _versioned(self, exchange: PairedExchange) -> PairedExchange:
        endpoint = exchange.endpoint
        if self.endpoint_versions and endpoint and endpoint != "default":
            exchange.model_version = endpoint
        return exchange


def _exchange(request: CloudEvent, response: CloudEvent | None) -> PairedExchange:
    return PairedExchange(
        event_id=request.event_id,
        request_body=request.body,
        response_body=None if response is None else response.body,
        content_type=request.content_type,
        model_name=request.model_name or (response.model_name if response else None),
        response_content_type=None if response is None else response.content_type,
        model_id=request.model_id,
        namespace=request.namespace,
        component=request.component,
        endpoint=request.endpoint,
        source=request.source,
    )
