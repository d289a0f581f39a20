"""A small OpenAI-compatible model server for the generative demo and the tests.

It answers ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` (also under a
prefix such as KServe's ``/openai``), streaming (server-sent events: one ``data:`` chunk per token
at a realistic pace, the usage chunk when ``stream_options.include_usage`` asks for it, then
``data: [DONE]``) and not (one JSON body with ``usage``), with made-up text. What it answers is
set by a :class:`Behaviour`, which can be swapped while it runs (``stub.behaviour = DEGRADED``,
or ``change_after`` seconds): longer completions, more ``finish_reason: length`` truncations, more
refusals, a slower first token, server errors and broken streams.

In-process (tests, the demo)::

    with OpenAIStub(port=0) as stub:       # an aiohttp server on its own thread and loop
        client = openai.OpenAI(base_url=stub.url + "/v1", api_key="x")

Standalone: ``python -m inferwatch.demo.openai_stub --port 8081 --change-after 30``.

``stub.served`` counts what it answered (requests, tokens, finish reasons, refusals, errors), so a
test can compare the sidecar's metrics with the truth. Tokens are counted by :func:`count_tokens`
(words and punctuation), the same rule for prompts and completions.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

STUB_MODEL = "stub-chat-1"
#: What a refusal says; the demo's ``refusal`` output matcher looks for it.
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
REFUSAL_PATTERN = r"(?i)\b(I'm sorry|I cannot|I can't help)\b"
EMBEDDING_DIMENSIONS = 16
_WORDS = ("the model answers with a short plain sentence about data drift latency tokens and "
          "monitoring so that every reply reads like text while staying cheap to make").split()
_TOKEN = re.compile(r"\w+|[^\w\s]")
_SPACED_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])")   # a token with the space before it: they join back to the text


def count_tokens(text: str) -> int:
    """The stub's tokenizer: one token per word and per punctuation mark."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class Behaviour:
    """How the stub answers. Times in seconds; shares between 0 and 1."""

    first_token_seconds: float = 0.15     # time to first token (jittered +-30%)
    token_seconds: float = 0.01           # between output tokens (jittered +-30%)
    completion_tokens: int = 40           # mean completion length when nothing stops it sooner
    truncation_share: float = 0.02        # answers that run into max_tokens (finish_reason: length)
    refusal_share: float = 0.01           # answers that are REFUSAL_TEXT
    error_share: float = 0.0              # requests answered 500
    stream_error_share: float = 0.0       # streams cut after a few chunks, without [DONE]
    embedding_shift: float = 0.0          # added to every embedding coordinate (a topic change)
    max_prompt_tokens: int = 4096         # longer prompts are answered 400 (context_length_exceeded)


HEALTHY = Behaviour()
#: After the change: slower first tokens, long answers cut at max_tokens, refusals, broken streams.
DEGRADED = Behaviour(first_token_seconds=1.6, completion_tokens=90, truncation_share=0.5, refusal_share=0.2,
                     error_share=0.08, stream_error_share=0.25, embedding_shift=0.6)


def _error(status: int, message: str, kind: str, param: str | None = None,
           code: str | None = None) -> web.Response:
    """An error body as OpenAI sends it."""
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}},
                             status=status)


def _jitter(rng: random.Random, seconds: float) -> float:
    return max(0.0, seconds * rng.uniform(0.7, 1.3))


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


def _prompt_text(operation: str, body: dict[str, Any]) -> str:
    """The prompt as one string (for its token count), checking the request's shape."""
    if operation == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("'messages' must be a non-empty array", "messages")
        parts = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise _BadRequest(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
            content = message.get("content")
            if isinstance(content, list):   # content parts: [{"type": "text", "text": ...}]
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts.append(str(content or ""))
        return "\n".join(parts)
    key = "prompt" if operation == "text_completion" else "input"
    value = body.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    raise _BadRequest(f"'{key}' must be a string or an array of strings", key)


class OpenAIStub:
    """The server. ``port=0`` takes a free port (``stub.port`` after ``start()``)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, behaviour: Behaviour = HEALTHY,
                 change_to: Behaviour | None = None, change_after: float | None = None, seed: int = 7,
                 model: str = STUB_MODEL):
        self.host, self.port = host, port
        self.behaviour = behaviour
        self.change_to, self.change_after = change_to, change_after
        self.model = model
        self.served: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def current(self) -> Behaviour:
        """The behaviour now: ``change_to`` once ``change_after`` seconds have passed."""
        if (self.change_to is not None and self.change_after is not None
                and time.monotonic() - self._started >= self.change_after):
            self.behaviour, self.change_to = self.change_to, None
        return self.behaviour

    # --- lifecycle ----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        for prefix in ("", "/openai"):
            app.router.add_post(prefix + "/v1/chat/completions", self._completions)
            app.router.add_post(prefix + "/v1/completions", self._completions)
            app.router.add_post(prefix + "/v1/embeddings", self._embeddings)
            app.router.add_get(prefix + "/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/", self._health)
        return app

    def start(self, timeout: float = 10.0) -> "OpenAIStub":
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, self.host, self.port)
                loop.run_until_complete(site.start())
                self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failed.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._started = time.monotonic()
        self._thread = threading.Thread(target=serve, name="openai-stub", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failed:
            raise RuntimeError(f"the OpenAI stub did not start on {self.host}:{self.port}: "
                               f"{failed[0] if failed else 'timeout'}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> "OpenAIStub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- handlers -----------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": self.model})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "inferwatch-demo"}]})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise _BadRequest(f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest("the body must be a JSON object")
        return body

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        operation = "chat" if request.path.endswith("/chat/completions") else "text_completion"
        b = self.current()
        try:
            body = await self._body(request)
            prompt_tokens = count_tokens(_prompt_text(operation, body))
            max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
            if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
                raise _BadRequest("'max_tokens' must be a positive integer", "max_tokens")
            if prompt_tokens > b.max_prompt_tokens:
                raise _BadRequest(f"the prompt has {prompt_tokens} tokens, over this model's context of "
                                  f"{b.max_prompt_tokens}", "messages", "context_length_exceeded")
        except _BadRequest as exc:
            self.served["http_400"] += 1
            return _error(400, str(exc), "invalid_request_error", exc.param, exc.code)
        self.served["requests"] += 1
        if self._rng.random() < b.error_share:
            self.served["http_500"] += 1
            return _error(500, "the stub failed on purpose (error_share)", "server_error")
        tokens, finish = self._answer(b, max_tokens)
        model = str(body.get("model") or self.model)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, b, operation, model, tokens, finish, prompt_tokens, include_usage)
        await asyncio.sleep(_jitter(self._rng, b.first_token_seconds) +
                            sum(_jitter(self._rng, b.token_seconds) for _ in tokens[1:]))
        self._count(prompt_tokens, tokens, finish)
        text = "".join(tokens)
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
        if operation == "chat":
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
        else:
            choice["text"] = text
        return web.json_response({
            "id": self._id(operation), "object": "chat.completion" if operation == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_stub", "choices": [choice],
            "usage": _usage(prompt_tokens, len(tokens))})

    def _answer(self, b: Behaviour, max_tokens: int | None) -> tuple[list[str], str]:
        """The completion's tokens (each with its leading space) and its finish reason."""
        if self._rng.random() < b.refusal_share:
            self.served["refusals"] += 1
            refusal = _SPACED_TOKEN.findall(REFUSAL_TEXT)
            if max_tokens is not None and len(refusal) > max_tokens:
                return refusal[:max_tokens], "length"
            return refusal, "stop"
        wanted = max(1, round(self._rng.expovariate(1 / b.completion_tokens))) if b.completion_tokens else 1
        if max_tokens is not None and self._rng.random() < b.truncation_share:
            wanted = max(wanted, max_tokens)   # an answer that would go on: cut at max_tokens
        n = min(wanted, max_tokens) if max_tokens is not None else wanted
        words = [" " + self._rng.choice(_WORDS) for _ in range(n)]
        words[0] = words[0].lstrip().capitalize()
        finish = "length" if max_tokens is not None and wanted >= max_tokens else "stop"
        if finish == "stop" and n > 1:
            words[-1] = "."   # a full stop ends a finished answer (one token, like the words)
        return words, finish

    async def _stream(self, request: web.Request, b: Behaviour, operation: str, model: str, tokens: list[str],
                      finish: str, prompt_tokens: int, include_usage: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        ident, created = self._id(operation), int(time.time())
        extra = {"usage": None} if include_usage else {}

        def chunk(choices: list[dict[str, Any]], **more: Any) -> bytes:
            body = {"id": ident, "object": "chat.completion.chunk" if operation == "chat" else "text_completion",
                    "created": created, "model": model, "system_fingerprint": "fp_stub", "choices": choices,
                    **extra, **more}
            return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

        def content(text: str | None, finish_reason: str | None) -> list[dict[str, Any]]:
            if operation == "chat":
                delta: dict[str, Any] = {} if text is None else {"content": text}
                return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
            return [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}]

        if operation == "chat":   # the role first, with no content: it carries no generated text
            await response.write(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]))
        cut_after = (self._rng.randint(1, max(1, len(tokens) - 1)) if self._rng.random() < b.stream_error_share
                     else None)
        await asyncio.sleep(_jitter(self._rng, b.first_token_seconds))
        for i, token in enumerate(tokens):
            if i:
                await asyncio.sleep(_jitter(self._rng, b.token_seconds))
            if cut_after is not None and i == cut_after:
                self.served["stream_errors"] += 1
                assert request.transport is not None
                request.transport.close()   # no final chunk, no [DONE]: the client sees a broken stream
                return response
            await response.write(chunk(content(token, None)))
        await response.write(chunk(content(None, finish)))
        if include_usage:
            await response.write(chunk([], usage=_usage(prompt_tokens, len(tokens))))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self._count(prompt_tokens, tokens, finish)
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        b = self.current()
        try:
            body = await self._body(request)
            text = _prompt_text("embeddings", body)
        except _BadRequest as exc:
            self.served["http_400"] += 1
            return _error(400, str(exc), "invalid_request_error", exc.param, exc.code)
        self.served["requests"] += 1
        inputs = [body["input"]] if isinstance(body["input"], str) else list(body["input"])
        await asyncio.sleep(_jitter(self._rng, b.token_seconds))
        prompt_tokens = count_tokens(text)
        self.served["prompt_tokens"] += prompt_tokens
        return web.json_response({
            "object": "list", "model": str(body.get("model") or self.model),
            "data": [{"object": "embedding", "index": i, "embedding": embedding(value, b.embedding_shift)}
                     for i, value in enumerate(inputs)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})

    # --- helpers ------------------------------------------------------------------------------------

    def _count(self, prompt_tokens: int, tokens: list[str], finish: str) -> None:
        self.served["prompt_tokens"] += prompt_tokens
        self.served["completion_tokens"] += len(tokens)
        self.served[f"finish_{finish}"] += 1

    def _id(self, operation: str) -> str:
        return ("chatcmpl-" if operation == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def embedding(text: str, shift: float = 0.0) -> list[float]:
    """A unit-ish vector that depends only on ``text`` (and ``shift``): the same input, the same vector."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    vector = [rng.gauss(0.0, 1.0) + shift for _ in range(EMBEDDING_DIMENSIONS)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="an OpenAI-compatible stub model server (inferwatch demo)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 takes a free port (printed first)")
    parser.add_argument("--change-after", type=float, default=None, metavar="S",
                        help="switch to the degraded behaviour after S seconds")
    args = parser.parse_args(argv)
    stub = OpenAIStub(host=args.host, port=args.port, change_to=DEGRADED, change_after=args.change_after)
    try:
        stub.start()
    except RuntimeError as exc:
        print(f"openai stub: {exc}", flush=True)
        return 1
    print(stub.port, flush=True)
    print(f"OpenAI-compatible stub on {stub.url}/v1 (model {STUB_MODEL}; "
          f"{dataclasses.asdict(stub.behaviour)})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
