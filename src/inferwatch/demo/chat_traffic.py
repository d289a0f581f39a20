"""Traffic for the generative demo: chat requests, mostly streamed, from the official ``openai``
client when it is installed (else plain HTTP, the same wire format), whose prompts grow longer
halfway through, when ``on_change`` is called (the demo makes the model server degrade then too)."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any, Callable

import requests

SYSTEM_PROMPTS = ("You are a concise assistant for a bank's customers.",
                  "You answer questions about loans in plain words.")
_WORDS = ("how do I change the rate of my loan and what does it cost to repay early if my income "
          "changed last year and I moved to another region").split()


def openai_client_available() -> bool:
    try:
        import openai  # noqa: F401
    except ImportError:
        return False
    return True


class ChatTraffic:
    """``workers`` threads, each sending at most ``rate_per_worker`` chat requests a second (a slower
    answer slows its worker: the load of users waiting for their answers). ``stream_share`` of
    them streamed with ``stream_options.include_usage``. After ``change_at`` of ``duration`` the
    prompts are several times longer and ``on_change`` is called once."""

    def __init__(self, base_url: str, *, duration: float, workers: int = 16, rate_per_worker: float = 1.0,
                 change_at: float = 0.5, stream_share: float = 0.8, max_tokens: int = 200, seed: int = 11,
                 on_change: Callable[[], None] | None = None, use_openai: bool | None = None,
                 model: str = "gpt-demo"):
        self.base_url = base_url.rstrip("/")
        self.duration, self.change_at = duration, change_at
        self.workers, self.interval = workers, 1.0 / rate_per_worker
        self.stream_share, self.max_tokens, self.seed, self.model = stream_share, max_tokens, seed, model
        self.on_change = on_change
        self.use_openai = openai_client_available() if use_openai is None else use_openai
        self.sent = self.failed = 0
        self.started = 0.0
        self.changed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def progress(self) -> float:
        return (time.monotonic() - self.started) / self.duration

    def phase(self) -> str:
        return "changed" if self.changed else "healthy"

    def messages(self, rng: random.Random) -> list[dict[str, str]]:
        words = rng.randint(60, 200) if self.changed else rng.randint(5, 30)
        question = " ".join(rng.choice(_WORDS) for _ in range(words)) + "?"
        return [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}, {"role": "user", "content": question}]

    def _maybe_change(self) -> None:
        with self._lock:
            if self.changed or self.progress() < self.change_at:
                return
            self.changed = True
        if self.on_change is not None:
            self.on_change()

    def _worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        client = self._openai_client() if self.use_openai else None
        session = requests.Session()
        while not self._stop.is_set() and self.progress() < 1.0:
            began = time.monotonic()
            self._maybe_change()
            body: dict[str, Any] = {"model": self.model, "messages": self.messages(rng), "max_tokens": self.max_tokens,
                                    "temperature": rng.choice((0.2, 0.7)), "top_p": 0.95}
            if rng.random() < self.stream_share:
                body.update(stream=True, stream_options={"include_usage": True})
            ok = self._send_openai(client, body) if client is not None else self._send_http(session, body)
            with self._lock:
                self.sent += 1
                self.failed += 0 if ok else 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _openai_client(self) -> Any:
        import openai

        return openai.OpenAI(base_url=self.base_url + "/v1", api_key="demo", max_retries=0, timeout=60)

    @staticmethod
    def _send_openai(client: Any, body: dict[str, Any]) -> bool:
        import openai

        try:
            answer = client.chat.completions.create(**body)
            if body.get("stream"):
                for _ in answer:
                    pass
            return True
        except (openai.APIError, openai.APIConnectionError):
            return False

    def _send_http(self, session: requests.Session, body: dict[str, Any]) -> bool:
        try:
            with session.post(f"{self.base_url}/v1/chat/completions", json=body, timeout=60,
                              stream=bool(body.get("stream"))) as answer:
                if answer.status_code != 200:
                    return False
                if not body.get("stream"):
                    return "choices" in answer.json()
                done = False
                for line in answer.iter_lines(decode_unicode=True):
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        json.loads(line[6:])
                return done   # a stream that ended without [DONE] broke
        except (requests.RequestException, ValueError):
            return False

    def start(self) -> "ChatTraffic":
        self.started = time.monotonic()
        self._threads = [threading.Thread(target=self._worker, args=(i,), name=f"chat-traffic-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(65)
