"""An OpenAI-compatible model server for tests and benchmarks (aiohttp, its own thread or process).

Chat and text completions, streamed (SSE ``data:`` chunks as vLLM sends them: a role chunk, one
token per chunk, a finish chunk, the ``usage`` chunk of ``stream_options.include_usage``, then
``[DONE]``) or whole, and embeddings (floats or base64). ``prefill_seconds`` before the first
token and ``token_seconds`` between tokens give streams a realistic pace. Every answer records,
on ``perf_counter``, when the request arrived and when each content chunk was written, so a test
can hold the sidecar's measured times between its own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

MODEL = "stub-llm"


@dataclass
class Served:
    """What one request got, on ``time.perf_counter``."""

    received: float
    content_sent: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def prompt_tokens_of(request: dict) -> int:
    if "messages" in request:
        text = " ".join(str(m.get("content", "")) for m in request["messages"])
    else:
        text = str(request.get("prompt", request.get("input", "")))
    return max(1, len(text.split()))


def tokens_for(request: dict, default: int) -> list[str]:
    n = int(request.get("max_tokens") or default)
    return [f"w{i} " for i in range(n)]


class OpenAIUpstream:
    def __init__(self, *, prefill_seconds: float = 0.02, token_seconds: float = 0.005, tokens: int = 20,
                 finish_reason: str = "stop", hold_after_first: threading.Event | None = None):
        self.prefill_seconds = prefill_seconds
        # Set: a stream waits after its first content chunk until the event is set (at most 30 s),
        # so a test can see that chunk reach its client while the rest is not yet written.
        self.hold_after_first = hold_after_first
        self.token_seconds = token_seconds
        self.tokens = tokens
        self.finish_reason = finish_reason
        self.served: list[Served] = []
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # --- answers ---------------------------------------------------------------------------

    def _chunk(self, kind: str, choice: dict, usage: dict | None = None, choices: bool = True) -> bytes:
        body: dict = {"id": "cmpl-1", "object": kind, "created": 1700000000, "model": MODEL,
                      "choices": [choice] if choices else []}
        if usage is not None:
            body["usage"] = usage
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    async def completions(self, request: web.Request) -> web.StreamResponse:
        served = Served(received=time.perf_counter())
        self.served.append(served)
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        words = tokens_for(body, self.tokens)
        served.prompt_tokens = prompt_tokens_of(body)
        served.completion_tokens = len(words)
        usage = {"prompt_tokens": served.prompt_tokens, "completion_tokens": len(words),
                 "total_tokens": served.prompt_tokens + len(words)}
        finish = self.finish_reason
        if not body.get("stream"):
            await asyncio.sleep(self.prefill_seconds + self.token_seconds * len(words))
            text = "".join(words)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                       "finish_reason": finish} if chat else
                      {"index": 0, "text": text, "logprobs": None, "finish_reason": finish})
            return web.json_response({"id": "cmpl-1", "object": "chat.completion" if chat else "text_completion",
                                      "created": 1700000000, "model": MODEL, "choices": [choice], "usage": usage})
        kind = "chat.completion.chunk" if chat else "text_completion"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        if chat:
            await response.write(self._chunk(kind, {"index": 0, "delta": {"role": "assistant", "content": ""},
                                                    "logprobs": None, "finish_reason": None}))
        await asyncio.sleep(self.prefill_seconds)
        for i, word in enumerate(words):
            if i:
                await asyncio.sleep(self.token_seconds)
            choice = ({"index": 0, "delta": {"content": word}, "logprobs": None, "finish_reason": None} if chat
                      else {"index": 0, "text": word, "logprobs": None, "finish_reason": None})
            served.content_sent.append(time.perf_counter())
            await response.write(self._chunk(kind, choice))
            if i == 0 and self.hold_after_first is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.hold_after_first.wait, 30)
        end = ({"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish} if chat
               else {"index": 0, "text": "", "logprobs": None, "finish_reason": finish})
        await response.write(self._chunk(kind, end))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(self._chunk(kind, {}, usage, choices=False))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        self.served.append(Served(received=time.perf_counter()))
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for i, text in enumerate(inputs):
            vector = [((hash(text) >> k) % 7) / 7.0 + 0.01 * k for k in range(32)]
            encoded = (base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                       if body.get("encoding_format") == "base64" else vector)
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(len(str(t).split()) for t in inputs)
        return web.json_response({"object": "list", "data": data, "model": MODEL,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # --- lifecycle --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        for prefix in ("", "/openai"):
            app.router.add_post(f"{prefix}/v1/chat/completions", self.completions)
            app.router.add_post(f"{prefix}/v1/completions", self.completions)
            app.router.add_post(f"{prefix}/v1/embeddings", self.embeddings)
        return app

    def start(self, port: int = 0) -> "OpenAIUpstream":
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            runner = self._runner = web.AppRunner(self.app())
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", port)
            loop.run_until_complete(site.start())
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="openai-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> "OpenAIUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # a process of its own (the benchmark): port, prefill, token seconds, tokens
    import sys

    port, prefill, token, n = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    server = OpenAIUpstream(prefill_seconds=prefill, token_seconds=token, tokens=n).start(port)
    print(f"listening {server.url}", flush=True)
    threading.Event().wait()
