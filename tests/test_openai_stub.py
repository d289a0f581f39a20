"""The OpenAI-compatible stub (inferwatch.demo.openai_stub), spoken to by the official `openai`
client and by plain HTTP for the wire format: streaming and not, usage, finish reasons, refusals,
broken streams, 400s that say where, and a behaviour that changes while it runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import openai
import pytest
import requests

from inferwatch.demo.openai_stub import (DEGRADED, EMBEDDING_DIMENSIONS, HEALTHY, REFUSAL_TEXT, Behaviour,
                                         OpenAIStub, count_tokens)

FAST = Behaviour(first_token_seconds=0.0, token_seconds=0.0, truncation_share=0.0, refusal_share=0.0)
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is drift, in short?"}]


@pytest.fixture
def stub():
    with OpenAIStub(port=0, behaviour=FAST) as server:
        yield server


def client(stub: OpenAIStub, prefix: str = "/v1"):
    return openai.OpenAI(base_url=stub.url + prefix, api_key="unused", max_retries=0, timeout=30)


def sse_events(response: requests.Response) -> list[str]:
    """The `data:` payloads of a server-sent event stream, in order."""
    return [line[len("data: "):] for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]


def test_chat_completion_reports_the_usage_it_answered(stub):
    answer = client(stub).chat.completions.create(model="my-llm", messages=MESSAGES, max_tokens=200)
    text = answer.choices[0].message.content
    assert answer.model == "my-llm" and answer.object == "chat.completion"
    assert answer.choices[0].finish_reason == "stop" and text.endswith(".")
    assert answer.usage.prompt_tokens == count_tokens("You are terse.\nWhat is drift, in short?") == 11
    assert answer.usage.completion_tokens == count_tokens(text)
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert stub.served["finish_stop"] == 1 and stub.served["completion_tokens"] == answer.usage.completion_tokens


def test_streamed_chat_sends_a_chunk_per_token_the_usage_chunk_and_done(stub):
    stub.behaviour = Behaviour(first_token_seconds=0.2, token_seconds=0.0, completion_tokens=30, refusal_share=0.0,
                               truncation_share=0.0)
    start = time.monotonic()
    response = requests.post(stub.url + "/v1/chat/completions", stream=True, timeout=30, json={
        "model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}})
    assert response.headers["Content-Type"].startswith("text/event-stream")
    first_content, events = None, []
    for event in sse_events(response):
        events.append(event)
        if first_content is None and event != "[DONE]" and any(
                c["delta"].get("content") for c in json.loads(event)["choices"]):
            first_content = time.monotonic() - start
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in chunks[:-1])
    usage_chunk, finish_chunk = chunks[-1], chunks[-2]
    assert usage_chunk["choices"] == [] and finish_chunk["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    content_chunks = [c for c in chunks[:-1] if c["choices"][0]["delta"].get("content")]
    assert usage_chunk["usage"]["completion_tokens"] == len(content_chunks) == count_tokens(text)
    assert first_content >= 0.2 * 0.7   # the configured first-token delay, jittered -30% at most


def test_without_include_usage_no_chunk_has_usage_and_the_openai_client_streams(stub):
    chunks = list(client(stub).chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    raw = requests.post(stub.url + "/v1/chat/completions", stream=True, timeout=30,
                        json={"model": "m", "messages": MESSAGES, "stream": True})
    assert all("usage" not in json.loads(e) for e in sse_events(raw) if e != "[DONE]")


def test_truncation_refusal_and_the_text_completion_route(stub):
    stub.behaviour = dataclass_replace(FAST, truncation_share=1.0)
    cut = client(stub).completions.create(model="m", prompt="Tell me everything.", max_tokens=5)
    assert cut.object == "text_completion" and cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 5 == count_tokens(cut.choices[0].text)
    stub.behaviour = dataclass_replace(FAST, refusal_share=1.0)
    refused = client(stub).chat.completions.create(model="m", messages=MESSAGES)
    assert refused.choices[0].message.content == REFUSAL_TEXT
    assert refused.usage.completion_tokens == count_tokens(REFUSAL_TEXT)
    streamed = client(stub).completions.create(model="m", prompt="go", max_tokens=50, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == REFUSAL_TEXT
    assert stub.served["refusals"] == 2 and stub.served["finish_length"] == 1


def dataclass_replace(behaviour: Behaviour, **changes) -> Behaviour:
    import dataclasses
    return dataclasses.replace(behaviour, **changes)


def test_embeddings_are_deterministic_and_shift_with_the_behaviour(stub):
    api = client(stub, "/openai/v1")   # KServe's prefix works too
    first = api.embeddings.create(model="e", input=["a cat", "a dog"])
    again = api.embeddings.create(model="e", input="a cat")
    assert len(first.data) == 2 and len(first.data[0].embedding) == EMBEDDING_DIMENSIONS
    assert again.data[0].embedding == first.data[0].embedding
    assert first.usage.prompt_tokens == 4
    stub.behaviour = dataclass_replace(FAST, embedding_shift=1.0)
    shifted = api.embeddings.create(model="e", input="a cat").data[0].embedding
    assert sum(shifted) > sum(first.data[0].embedding) + 0.5


def test_a_broken_stream_ends_without_done_and_errors_are_counted(stub):
    stub.behaviour = dataclass_replace(FAST, stream_error_share=1.0, completion_tokens=50)
    with pytest.raises((openai.APIConnectionError, openai.APIError)):
        for _ in client(stub).chat.completions.create(model="m", messages=MESSAGES, stream=True, max_tokens=200):
            pass
    stub.behaviour = dataclass_replace(FAST, error_share=1.0)
    with pytest.raises(openai.InternalServerError):
        client(stub).chat.completions.create(model="m", messages=MESSAGES)
    assert stub.served["stream_errors"] == 1 and stub.served["http_500"] == 1


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"content": "no role"}]}, "messages[0]"),
    ({"model": "m", "messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "word " * 5000}]}, "messages"),
])
def test_bad_requests_are_answered_400_saying_where(stub, body, param):
    answer = requests.post(stub.url + "/v1/chat/completions", json=body, timeout=10)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_not_json_is_a_400_too(stub):
    answer = requests.post(stub.url + "/v1/embeddings", data=b"{nope", timeout=10,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]["message"]


def test_the_behaviour_changes_after_change_after():
    with OpenAIStub(port=0, behaviour=FAST, change_to=dataclass_replace(DEGRADED, first_token_seconds=0.0,
                                                                        token_seconds=0.0, error_share=0.0,
                                                                        stream_error_share=0.0),
                    change_after=0.5) as stub:
        assert stub.current() == FAST
        time.sleep(0.6)
        answer = client(stub).chat.completions.create(model="m", messages=MESSAGES, max_tokens=3)
        assert stub.current().truncation_share == DEGRADED.truncation_share
        assert answer.usage.completion_tokens <= 3
    assert HEALTHY.first_token_seconds < DEGRADED.first_token_seconds   # the demo's change slows the first token


def test_standalone_on_port_zero_prints_its_port():
    process = subprocess.Popen([sys.executable, "-m", "inferwatch.demo.openai_stub", "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        assert requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"][0]["id"]
    finally:
        process.terminate()
        process.wait(10)
