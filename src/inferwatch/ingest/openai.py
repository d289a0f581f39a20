"""The OpenAI-compatible API (vLLM, TGI, llama.cpp, Ollama, KServe's Hugging Face runtime, LiteLLM ...)
decoded into monitored features and one ``GenAIRecord`` per exchange, in the worker.

Recognised by route (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, also under
a one-segment prefix such as KServe's ``/openai/v1/...``) or, on other routes, by body (a ``model``
string with ``messages``, ``prompt`` or ``input``). Answers are JSON (``chat.completion``,
``text_completion``, an embeddings ``list``) or, with ``stream: true``, server-sent events whose
``data:`` is one chunk object each (``chat.completion.chunk``: ``choices[].delta`` with ``content``,
``tool_calls``, ``reasoning_content``; completions: ``choices[].text``), then ``[DONE]``; with
``stream_options.include_usage`` a last chunk carries ``usage`` and no choices.

Tokens come from the server's ``usage`` when it sent one (``source="usage"``); a stream without
it has its output tokens counted as the content-carrying chunk deltas (``source="counted"``: one
token per delta, as vLLM and OpenAI send them); input tokens are never guessed. Text never leaves
this module as a feature: lengths, counts and a hash of the system prompt do.

Embedding vectors become ``embedding_0 ... embedding_15``: each vector, scaled to unit length,
projected by a fixed seeded Gaussian matrix (Johnson-Lindenstrauss: distances kept up to a small
factor), so the multivariate drift engine (PCA) sees what users ask about without their text, and
a profile built from the prediction log is in the same coordinates.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .bodies import decompress, load_json, parse_json
from .events import EventBatch, PayloadError
from .sse import SseDecoder, is_event_stream

CHAT, TEXT_COMPLETION, EMBEDDINGS = "chat", "text_completion", "embeddings"  # OTel gen_ai.operation.name
OPENAI_ROUTES = tuple(f"{prefix}/v1/{path}" for prefix in ("", "/{prefix}")
                      for path in ("chat/completions", "completions", "embeddings"))
_SUFFIXES = (("/v1/chat/completions", CHAT), ("/v1/completions", TEXT_COMPLETION), ("/v1/embeddings", EMBEDDINGS))
PROJECTION_DIMENSIONS = 16
_PROJECTION_SEED = 15_2026
_CONTENT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")


def route_operation(endpoint: str) -> str | None:
    """The operation of a route template (or path), or None when it is not an OpenAI route."""
    endpoint = endpoint.rstrip("/")
    for suffix, operation in _SUFFIXES:
        if endpoint.endswith(suffix):
            return operation
    return None


def may_be_openai(body: bytes) -> bool:
    """A cheap look at a request body on another route: worth parsing as an OpenAI request?"""
    head = body[:4096]
    return b'"model"' in head and (b'"messages"' in body or b'"prompt"' in head or b'"input"' in head)


def body_operation(request: Any) -> str | None:
    """The operation a parsed request body asks for, or None when it is not an OpenAI request."""
    if type(request) is not dict or type(request.get("model")) is not str:
        return None
    if type(request.get("messages")) is list:
        return CHAT
    if "prompt" in request:
        return TEXT_COMPLETION
    if "input" in request:
        return EMBEDDINGS
    return None


@dataclass
class GenAIRecord:
    """What the genai monitor counts for one exchange (no text leaves it but through ``*_text``,
    which only matchers and, when opted in, the prediction log read)."""

    operation: str
    request_model: str
    streamed: bool
    status: int
    error_type: str = ""  # "" = success; http_4xx, http_5xx, timeout, stream_error, upstream_error
    duration_seconds: float = math.nan
    time_to_first_token: float | None = None  # seconds from the proxy's start to the first content chunk
    last_token: float | None = None  # ... to the last content chunk
    input_tokens: int | None = None  # from usage only
    output_tokens: int | None = None
    output_source: str = "usage"  # usage | counted
    finish_reasons: list[str | None] = field(default_factory=list)  # one per choice, as the server said
    responded: bool = False  # a chat or completion answer was decoded
    completion_text: str = ""
    prompt_text: str = ""


def error_type(status: int) -> str:
    if 200 <= status < 300:
        return ""
    if status in (408, 504):
        return "timeout"
    return "http_4xx" if 400 <= status < 500 else "http_5xx" if status >= 500 else "upstream_error"


def _number(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None


def _int(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _text(content: Any) -> str:
    """A message's content: a string, or the text parts of a list of parts."""
    if type(content) is str:
        return content
    if type(content) is list:
        return "\n".join(part["text"] for part in content
                         if type(part) is dict and type(part.get("text")) is str)
    return ""


def system_prompt_hash(text: str | None) -> str:
    return "none" if text is None else hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:12]


def _prompt_strings(prompt: Any) -> list[str] | None:
    """A completions prompt or embeddings input as its strings (None: token ids, no text)."""
    if type(prompt) is str:
        return [prompt]
    if type(prompt) is list and prompt and all(type(p) is str for p in prompt):
        return prompt
    return None


def _request_features(operation: str, request: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Features of one chat or completion request (one row) and its prompt text."""
    params = {"temperature": _number(request.get("temperature")),
              "max_tokens": _number(request.get("max_tokens", request.get("max_completion_tokens"))),
              "top_p": _number(request.get("top_p"))}
    if operation == CHAT:
        messages = [m for m in request["messages"] if type(m) is dict]
        texts = [_text(m.get("content")) for m in messages]
        system = next((t for m, t in zip(messages, texts) if m.get("role") in ("system", "developer")), None)
        prompt = "\n".join(texts)
        return {"prompt_tokens": None, "prompt_chars": len(prompt), "messages": len(request["messages"]),
                "system_prompt": system_prompt_hash(system), **params}, prompt
    strings = _prompt_strings(request.get("prompt"))
    prompt = "\n".join(strings) if strings is not None else ""
    return {"prompt_tokens": None, "prompt_chars": len(prompt) if strings is not None else None, **params}, prompt


@dataclass
class _Choices:
    """The generated text of each choice and its finish reason, gathered from a body or chunks."""

    texts: dict[int, list[str]] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)
    tool_chars: int = 0

    def add(self, choice: Any, message_key: str | None) -> bool:
        """One choice (or chunk choice); True when it carries generated content."""
        if type(choice) is not dict:
            return False
        index = choice.get("index", 0)
        index = index if type(index) is int else 0
        parts = self.texts.setdefault(index, [])
        self.finish.setdefault(index, None)
        if type(choice.get("finish_reason")) is str:
            self.finish[index] = choice["finish_reason"]
        carried = False
        if message_key is None:  # completions: the text itself
            if type(choice.get("text")) is str and choice["text"]:
                parts.append(choice["text"])
                carried = True
            return carried
        message = choice.get(message_key)
        if type(message) is not dict:
            return False
        for key in _CONTENT_KEYS:
            value = message.get(key)
            if type(value) is str and value:
                if key == "content":
                    parts.append(value)
                carried = True
        raw_calls = message.get("tool_calls")
        calls: list[Any] = list(raw_calls) if type(raw_calls) is list else []
        if type(message.get("function_call")) is dict:  # the legacy single call
            calls.append(message["function_call"])
        for call in calls:
            function = call.get("function", call) if type(call) is dict else None
            if type(function) is dict and (type(function.get("name")) is str or type(function.get("arguments")) is str):
                self.tool_chars += len(function.get("arguments") or "")  # the name delta is generated too
                carried = True
        return carried

    def text(self) -> str:
        return "\n".join("".join(self.texts[i]) for i in sorted(self.texts))


def _usage(record: GenAIRecord, usage: Any) -> None:
    if type(usage) is not dict:
        return
    record.input_tokens = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    if completion is not None:
        record.output_tokens, record.output_source = completion, "usage"


def _json_answer(record: GenAIRecord, choices: _Choices, body: bytes, content_type: str | None,
                 encoding: str | None, max_bytes: int) -> None:
    answer = load_json(body, content_type, encoding, max_bytes)
    if type(answer) is not dict:
        raise PayloadError("unknown_format", "an OpenAI answer is an object")
    if "error" in answer and "choices" not in answer:
        record.error_type = "upstream_error"
        return
    raw = answer.get("choices")
    if type(raw) is not list:
        raise PayloadError("missing_field", "expected 'choices'")
    for choice in raw:
        choices.add(choice, "message" if record.operation == CHAT else None)
    record.responded = True
    _usage(record, answer.get("usage"))


def _stream_answer(record: GenAIRecord, choices: _Choices, body: bytes, encoding: str | None,
                   timeline: list[tuple[int, float]] | None, max_bytes: int, errors: list[str]) -> None:
    """Chunks of an event stream, each stamped with its arrival (``timeline``: end byte of each
    kept chunk and its offset from the proxy's start); a compressed stream has no timeline."""
    if encoding and encoding.strip().lower() != "identity":
        body, timeline = decompress(body, encoding, max_bytes), None
    decoder = SseDecoder()
    pieces = [(body, None)] if not timeline else \
        [(body[start:end], t) for (start, _), (end, t) in zip([(0, 0.0), *timeline], timeline)]
    counted, done, ended = 0, False, False
    key = "delta" if record.operation == CHAT else None
    for piece, arrival in pieces:
        for event in decoder.feed(piece):
            if done:
                continue
            if event.done:
                done = True
                continue
            try:
                chunk = parse_json(event.data)
            except ValueError:  # PayloadError, or the standard library's JSONDecodeError
                errors.append("invalid_json")
                continue
            if type(chunk) is not dict:
                errors.append("unknown_format")
                continue
            if "error" in chunk and "choices" not in chunk:
                record.error_type = "stream_error"
                continue
            for choice in chunk.get("choices") or ():
                if choices.add(choice, key):
                    counted += 1
                    if arrival is not None:
                        if record.time_to_first_token is None:
                            record.time_to_first_token = arrival
                        record.last_token = arrival
                if type(choice) is dict and type(choice.get("finish_reason")) is str:
                    ended = True
            _usage(record, chunk.get("usage"))
    record.responded = True
    if record.output_tokens is None:
        record.output_tokens, record.output_source = counted, "counted"
    if not done and not ended and not record.error_type:
        record.error_type = "stream_error"  # cut before its end: no finish reason, no [DONE]


@lru_cache(maxsize=8)
def projection_matrix(dimensions: int) -> np.ndarray:
    """The fixed (dimensions x 16) projection: the same in every process and version."""
    rng = np.random.default_rng([_PROJECTION_SEED, dimensions])
    return rng.standard_normal((dimensions, PROJECTION_DIMENSIONS)) / math.sqrt(PROJECTION_DIMENSIONS)


def embedding_vectors(answer: Any) -> np.ndarray:
    """``data[].embedding`` (floats, or base64 little-endian float32 with ``encoding_format:
    base64``) as an (n, d) array in ``index`` order."""
    if type(answer) is not dict or type(answer.get("data")) is not list:
        raise PayloadError("missing_field", "expected 'data' embeddings")
    items = sorted((item for item in answer["data"] if type(item) is dict),
                   key=lambda item: item.get("index", 0) if type(item.get("index")) is int else 0)
    rows = []
    for item in items:
        vector = item.get("embedding")
        if type(vector) is str:
            try:
                rows.append(np.frombuffer(base64.b64decode(vector, validate=True), dtype="<f4").astype(float))
            except ValueError:
                raise PayloadError("unknown_format", "an embedding is not base64 float32") from None
        elif type(vector) is list:
            try:
                rows.append(np.asarray(vector, dtype=float))
            except (TypeError, ValueError):
                raise PayloadError("unknown_format", "an embedding is not a list of numbers") from None
        else:
            raise PayloadError("missing_field", "an item has no 'embedding'")
    if not rows or len({len(r) for r in rows}) != 1 or not len(rows[0]):
        raise PayloadError("shape_mismatch", "embeddings of different or zero lengths")
    return np.vstack(rows)


def project(vectors: np.ndarray) -> dict[str, list[float]]:
    """Unit-length vectors projected to ``PROJECTION_DIMENSIONS`` feature columns."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    projected = unit @ projection_matrix(vectors.shape[1])
    return {f"embedding_{j}": projected[:, j].tolist() for j in range(PROJECTION_DIMENSIONS)}


def _embeddings(record: GenAIRecord, request: dict[str, Any], response: bytes | None, content_type: str | None,
                encoding: str | None, max_bytes: int, errors: list[str]) -> EventBatch:
    """One row per input: its characters, the request's number of inputs, its projected vector."""
    raw = request.get("input")
    strings = _prompt_strings(raw)
    n = len(strings) if strings is not None else (len(raw) if type(raw) is list and raw
                                                   and type(raw[0]) is list else 1)
    features: dict[str, list[Any]] = {"input_chars": [len(s) for s in strings] if strings is not None
                                      else [None] * n, "inputs": [n] * n}
    record.prompt_text = "\n".join(strings or ())
    if response is not None:
        try:
            answer = load_json(response, content_type, encoding, max_bytes)
            if type(answer) is dict and "error" in answer and "data" not in answer:
                record.error_type = "upstream_error"
            else:
                _usage(record, answer.get("usage") if type(answer) is dict else None)
                vectors = embedding_vectors(answer)
                if len(vectors) != n:
                    raise PayloadError("row_count_mismatch", f"{len(vectors)} embeddings for {n} inputs")
                features.update(project(vectors))
        except PayloadError as exc:
            errors.append(exc.reason)
    return EventBatch(n=n, features=features, errors=errors)


def decode_openai(operation: str, request: Any, response: bytes | None, *, status: int,
                  response_content_type: str | None = None, response_content_encoding: str | None = None,
                  response_truncated: bool = False, upstream_failed: bool = False,
                  timeline: list[tuple[int, float]] | None = None,
                  max_bytes: int = 8 * 1024 * 1024) -> tuple[EventBatch, GenAIRecord]:
    """Features, outputs and the serving record of one exchange. ``response`` None: no answer to
    decode (not 2xx). ``upstream_failed``: the server broke the answer off (a reset, a read
    timeout): an error of the request whatever was relayed before. A request that is not an OpenAI
    request of ``operation`` raises ``PayloadError``; a bad answer leaves the request's features
    with its reason in ``batch.errors``."""
    if type(request) is not dict:
        raise PayloadError("unknown_format", "an OpenAI request is an object")
    if operation == CHAT and type(request.get("messages")) is not list:
        raise PayloadError("missing_field", "expected 'messages'")
    model = request.get("model")
    streamed = is_event_stream(response_content_type) if response is not None else request.get("stream") is True
    record = GenAIRecord(operation, model if type(model) is str else "", streamed, status, error_type(status))
    errors: list[str] = []
    if operation == EMBEDDINGS:
        batch = _embeddings(record, request, response, response_content_type, response_content_encoding,
                            max_bytes, errors)
        if upstream_failed and not record.error_type:
            record.error_type = "upstream_error"
        return batch, record
    features, record.prompt_text = _request_features(operation, request)
    choices = _Choices()
    if response is not None:
        try:
            if streamed:
                _stream_answer(record, choices, response, response_content_encoding, timeline, max_bytes, errors)
                if response_truncated and not upstream_failed and record.error_type == "stream_error":
                    record.error_type = ""  # the copy was cut at its cap, not the stream
            elif response_truncated:
                errors.append("response_truncated")
            else:
                _json_answer(record, choices, response, response_content_type, response_content_encoding, max_bytes)
        except PayloadError as exc:
            errors.append(exc.reason)
        if upstream_failed and not record.error_type:
            record.error_type = "stream_error" if streamed else "upstream_error"
    features["prompt_tokens"] = record.input_tokens
    batch = EventBatch(n=1, features={k: [v] for k, v in features.items()}, errors=errors)
    if record.responded:
        text = record.completion_text = choices.text()
        record.finish_reasons = [choices.finish[i] for i in sorted(choices.finish)] or [None]
        first = record.finish_reasons[0]
        batch.outputs = {"completion_tokens": [record.output_tokens], "completion_chars": [len(text)],
                         "finish_reason": [first or "none"],
                         "empty_completion": [int(not text and not choices.tool_chars)],
                         "truncated": [int(first == "length")]}
    return batch, record
