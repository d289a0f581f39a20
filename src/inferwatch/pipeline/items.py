"""What travels on the monitoring queue: a proxied exchange, a pushed batch, and what each
costs against the queue's byte bound."""

from __future__ import annotations

from dataclasses import dataclass

from inferwatch.ingest.events import EventBatch
from inferwatch.ingest.sse import SseEvent


@dataclass
class Exchange:
    """A request/response pair seen by the proxy (or paired from CloudEvents)."""

    model_version: str  # already capped label value
    endpoint: str
    status: int
    prediction_id: str
    timestamp: float
    latency_seconds: float
    request_body: bytes
    response_body: bytes | None
    request_content_type: str | None = None
    response_content_type: str | None = None
    request_content_encoding: str | None = None
    response_content_encoding: str | None = None
    # The proxy kept only the first proxy.max_monitored_body_bytes of the response (or the stream
    # was cut): what was kept is here, never decoded as a whole body.
    response_truncated: bool = False
    # The upstream failed while the answer was relayed (reset, read timeout): the answer is cut
    # by the server's side, not by the monitoring cap (response_truncated is set too).
    upstream_failed: bool = False
    source: str = "proxy"
    challenger: str = ""  # set: a shadow challenger's answer to the champion's request (inferwatch.shadow)
    # A text/event-stream response split into its events by the worker (ingest/sse.py).
    response_events: list[SseEvent] | None = None
    # (end byte in response_body, seconds after the proxy's start) of each chunk of a streamed
    # answer as it arrived (serving/streaming.py MonitorCopy.timeline): tokens' timing.
    response_timeline: list[tuple[int, float]] | None = None


@dataclass
class PushedBatch:
    model_version: str  # already capped label value
    batch: EventBatch


# What a queued item holds, for the queue's byte bound: an exchange its two bodies; a decoded
# batch about one Python object (a float, a short string, its list slot) per cell; a label its
# id, value and timestamp.
CELL_BYTES = 64
LABEL_BYTES = 160


def exchange_bytes(exchange: Exchange) -> int:
    return len(exchange.request_body) + len(exchange.response_body or b"") + 64 * len(exchange.response_timeline or ())
