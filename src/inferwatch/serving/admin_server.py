"""The admin port's server: an asyncio HTTP server on its own thread in front of the Flask app.

Slow or idle clients cost a coroutine and a socket here, never a thread (the threaded WSGI server
this replaces went deaf to ``/healthz`` under ten slow clients). Every request is answered by the
Flask app of ``admin.py`` through a small WSGI bridge, so responses have one source; where it runs
depends on what it is:

- probes (``/healthz``, ``/readyz``) on the event loop itself: they only read flags;
- scrapes (``/metrics``, ``/v1/status``, ``/v1/report``) on a small executor of their own;
- everything else (pushes, labels, alerts) on ``admin.threads`` threads, its body read whole on
  the loop first, within ``admin.max_body_bytes`` and ``admin.body_timeout_seconds``.

So a probe never waits behind a push or a scrape. Header and idle timeouts and the connection
limit are :class:`ConnectionGuard`'s.
"""

from __future__ import annotations

import asyncio
import io
import logging
import ssl
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

from aiohttp import web
from multidict import CIMultiDict

from inferwatch.config import AdminConfig

from .connections import ConnectionGuard, ConnectionStats, ProtocolLog, limited_exception_handler

log = logging.getLogger(__name__)

PROBES = frozenset({"/healthz", "/readyz"})
SCRAPES = frozenset({"/metrics", "/v1/status", "/v1/report"})
SCRAPE_THREADS = 2
# Recomputed by aiohttp for the body it sends.
_RESPONSE_HEADERS_DROPPED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})

WSGIApp = Callable[[dict, Callable[..., Any]], Any]


class _TooLarge(Exception):
    pass


def wsgi_environ(request: web.Request, body: bytes, *, scheme: str, content_length: int | None = None) -> dict:
    """PEP 3333 environ for ``request`` with ``body`` as its input (``content_length`` overrides
    the length, to hand Flask a body it must refuse as too large without reading it)."""
    path, _, query = request.raw_path.partition("?")
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": sockname[0] if sockname else "localhost",
        "SERVER_PORT": str(sockname[1]) if sockname else "0",
        "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
        "REMOTE_ADDR": request.remote or "",
        "CONTENT_LENGTH": str(len(body) if content_length is None else content_length),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.headers.items():
        if "_" in name:   # X_Auth and X-Auth would be one WSGI key: refuse the ambiguity, as nginx does
            continue
        key = name.upper().replace("-", "_")
        wsgi_value = value.encode("utf-8", "surrogateescape").decode("latin-1")
        if key == "CONTENT_TYPE":
            environ[key] = wsgi_value
        elif key != "CONTENT_LENGTH":
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{wsgi_value}" if key in environ else wsgi_value
    return environ


def call_wsgi(app: WSGIApp, environ: dict) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """Run ``app`` for one request: (status, reason, headers, body)."""
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started["status"], started["headers"] = status, headers
        return chunks.append

    chunks: list[bytes] = []
    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    code, _, reason = started["status"].partition(" ")
    return int(code), reason, started["headers"], b"".join(chunks)


def _to_response(answer: tuple[int, str, list[tuple[str, str]], bytes]) -> web.Response:
    status, reason, headers, body = answer
    kept = CIMultiDict((k, v) for k, v in headers if k.lower() not in _RESPONSE_HEADERS_DROPPED)
    kept["Server"] = "inferwatch"
    return web.Response(status=status, reason=reason, headers=kept, body=body)


def _problem(status: int, error: str, detail: str) -> web.Response:
    response = web.json_response({"error": error, "detail": detail}, status=status, headers={"Server": "inferwatch"})
    response.force_close()
    return response


class AdminServer:
    """The ``admin`` section's server for the WSGI ``app`` (the Flask app of ``create_admin_app``)."""

    def __init__(self, app: WSGIApp, cfg: AdminConfig, stats: ConnectionStats, count_malformed: Callable[[str], None]):
        self.app = app
        self.cfg = cfg
        self.stats = stats
        self.count_malformed = count_malformed
        self.guard = ConnectionGuard("admin", header_timeout=cfg.header_timeout_seconds,
                                     idle_timeout=cfg.idle_timeout_seconds, max_connections=cfg.max_connections,
                                     stats=stats)
        self.scheme = "https" if cfg.tls.enabled else "http"
        self.port: int | None = None
        self._scrapes = ThreadPoolExecutor(SCRAPE_THREADS, thread_name_prefix="inferwatch-admin-scrape")
        self._writes = ThreadPoolExecutor(cfg.threads, thread_name_prefix="inferwatch-admin-write")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._write_slots: asyncio.Semaphore | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> int:
        """Bind and serve on a thread of its own; returns the bound port (``admin.port`` 0: any free one)."""
        started = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(started, errors), name="inferwatch-admin",
                                        daemon=True)
        self._thread.start()
        started.wait(timeout)
        if errors:
            raise errors[0]
        assert self.port is not None
        return self.port

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, let requests in progress finish (their pushes are queued), close the rest."""
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)   # the loop's last act: runner.cleanup() waits for handlers
        self._scrapes.shutdown(wait=False)
        self._writes.shutdown(wait=False)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.cfg.tls.enabled:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cfg.tls.cert_file, self.cfg.tls.key_file or None)
        return context

    def _run(self, started: threading.Event, errors: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(limited_exception_handler("admin"))
        # The guard closes idle connections (and counts them); aiohttp's keep-alive is a backstop.
        backstop = self.cfg.idle_timeout_seconds + self.cfg.header_timeout_seconds + 1
        app = web.Application(middlewares=[self.guard.middleware],
                              handler_args={"auto_decompress": False, "lingering_time": 1.0,
                                            "keepalive_timeout": backstop})
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               logger=ProtocolLog("admin", self.count_malformed))
        try:
            self._write_slots = asyncio.Semaphore(self.cfg.threads)
            loop.run_until_complete(runner.setup())
            server, self.port = loop.run_until_complete(self.guard.serve(
                runner, self.cfg.listen_address, self.cfg.port, ssl_context=self._ssl_context()))
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            errors.append(exc)
            started.set()
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            self.guard.stop()
            server.close()   # no new connections; those open finish their request, idle ones close
            loop.run_until_complete(runner.cleanup())
            loop.close()

    # --- requests (on the loop) -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        if request.method in ("GET", "HEAD") and request.path in PROBES:
            return _to_response(call_wsgi(self.app, wsgi_environ(request, b"", scheme=self.scheme)))
        if request.method in ("GET", "HEAD") and request.path in SCRAPES:
            environ = wsgi_environ(request, b"", scheme=self.scheme)
            return _to_response(await loop.run_in_executor(self._scrapes, call_wsgi, self.app, environ))
        assert self._write_slots is not None
        async with self._write_slots:   # at most admin.threads bodies held at once
            try:
                body = await asyncio.wait_for(self._read_body(request), self.cfg.body_timeout_seconds)
                environ = wsgi_environ(request, body, scheme=self.scheme)
            except _TooLarge as exc:
                # Flask answers (413, JSON, counted) from the length alone; the rest is not read.
                environ = wsgi_environ(request, b"", scheme=self.scheme, content_length=int(str(exc)))
                response = _to_response(await loop.run_in_executor(self._writes, call_wsgi, self.app, environ))
                response.force_close()
                return response
            except asyncio.TimeoutError:
                self.guard.count("body_timeout")
                return _problem(408, "body_timeout", "the request body did not arrive within "
                                f"admin.body_timeout_seconds ({self.cfg.body_timeout_seconds:g} s)")
            except Exception as exc:  # noqa: BLE001 - a broken body (framing, a reset) is the client's
                return _problem(400, "unreadable_body", f"the request body could not be read ({type(exc).__name__})")
            return _to_response(await loop.run_in_executor(self._writes, call_wsgi, self.app, environ))

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.cfg.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _TooLarge(str(declared))
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise _TooLarge(str(size))
            chunks.append(chunk)
