"""What the proxy says when a request fails: to the client, to the metrics, to the log.

Two kinds. An upstream failure (no answer from the model server) answers 502 or 504 with a
short fixed detail that names the limit hit and never echoes the upstream's address or bytes;
the exception, bounded, goes to the log instead, at most one line per reason per
``LOG_INTERVAL_SECONDS``. A malformed client request (aiohttp's parser refuses it with 400
before any handler runs) gets its ``reason`` here; ``connections.ProtocolLog`` counts and logs it
without its bytes on both ports.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import aiohttp
from aiohttp import http_exceptions

from inferwatch.config import UpstreamConfig

LOG_INTERVAL_SECONDS = 10.0
LOGGED_EXCEPTION_CHARS = 300  # an upstream's garbage can be megabytes; the log gets this much

# Parser exception -> the `reason` of inferwatch_malformed_requests_total, most specific first.
# aiohttp's C parser raises the plain BadHttpMessage for most header faults: "malformed".
MALFORMED_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "too_long"),
    (http_exceptions.BadHttpMethod, "method"),
    (http_exceptions.BadStatusLine, "request_line"),
    (http_exceptions.InvalidURLError, "url"),
    (http_exceptions.InvalidHeader, "header"),
    (http_exceptions.PayloadEncodingError, "body"),
)


class Throttle:
    """At most one log line per key every ``interval`` seconds; the next one allowed says how
    many were held back. Keys are a fixed set of reasons, so the dicts stay small."""

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None: hold this line back; else log it, with this many held back since the last."""
        now = self._clock()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval
        return self._held.pop(key, 0)


def held_note(held: int) -> str:
    return f" ({held} more since the last such line)" if held else ""


# --- upstream failures ---------------------------------------------------------------------

def upstream_failure(exc: BaseException) -> tuple[int, str]:
    """(status, reason) of an exception from the upstream request; the reasons are the
    ``reason`` label of inferwatch_upstream_errors_total (pool_timeout is decided by the proxy)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # before TimeoutError: it is one
        return 504, "connect_timeout"
    if isinstance(exc, asyncio.TimeoutError):
        return 504, "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):  # before ClientOSError: it is one
        return 502, "connection"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError)):
        return 502, "reset"
    return 502, "protocol"


def failure_detail(reason: str, upstream: UpstreamConfig) -> str:
    """The client's ``detail``: which limit or fault, in words, and nothing from the upstream."""
    if reason == "timeout":
        return f"model server did not answer within {upstream.timeout_seconds:g}s (upstream.timeout_seconds)"
    if reason == "connect_timeout":
        return (f"could not connect to the model server within {upstream.connect_timeout_seconds:g}s "
                "(upstream.connect_timeout_seconds)")
    if reason == "pool_timeout":
        return (f"all {upstream.max_connections} connections to the model server stayed busy for "
                f"{min(upstream.pool_timeout_seconds, upstream.timeout_seconds):g}s "
                "(upstream.max_connections, upstream.pool_timeout_seconds)")
    if reason == "connection":
        return "could not connect to the model server"
    if reason == "reset":
        return "model server closed the connection before a complete answer"
    return "model server's answer was not valid HTTP"


def exception_text(exc: BaseException) -> str:
    """One bounded, escaped line for the log: upstream bytes can be anything, and long."""
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > LOGGED_EXCEPTION_CHARS:
        text = text[:LOGGED_EXCEPTION_CHARS] + f"... ({len(text)} chars)"
    return repr(text)


# --- malformed client requests --------------------------------------------------------------

def malformed_reason(exc: BaseException) -> str:
    for cls, reason in MALFORMED_REASONS:
        if isinstance(exc, cls):
            return reason
    return "malformed"
