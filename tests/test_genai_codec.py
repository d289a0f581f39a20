"""The OpenAI-compatible codec (ingest/openai.py) and the genai monitor's pure parts on the payload
shapes vLLM and OpenAI send: chat.completion(.chunk) with delta.content, tool_calls, reasoning,
finish_reason and the include_usage chunk; text_completion; embeddings as floats and base64."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from conftest import registry_samples
from inferwatch.config import ConfigError, GenAIConfig, OutputMatcherConfig, load_config
from inferwatch.ingest.events import PayloadError
from inferwatch.ingest.openai import (CHAT, EMBEDDINGS, TEXT_COMPLETION, body_operation, decode_openai, may_be_openai,
                                      route_operation, system_prompt_hash)
from inferwatch.monitors.genai import GenAICollector, GenAIMonitor
from inferwatch.monitors.genai.evaluate import finish_reason_label, time_per_output_token

SSE = "text/event-stream"
CHAT_REQUEST = {"model": "meta-llama/Llama-3.1-8B-Instruct", "stream": True,
                "stream_options": {"include_usage": True}, "temperature": 0.2, "max_completion_tokens": 64,
                "messages": [{"role": "system", "content": "You are a helpful assistant."},
                             {"role": "user", "content": [{"type": "text", "text": "Hello"},
                                                          {"type": "image_url", "image_url": {"url": "x"}}]}]}


def chunk(choices, usage=None, **extra) -> str:
    body = {"id": "chatcmpl-9f1", "object": "chat.completion.chunk", "created": 1733000000,
            "model": "meta-llama/Llama-3.1-8B-Instruct", "choices": choices, **extra}
    if usage is not None or "usage" in extra:
        body["usage"] = usage
    return "data: " + json.dumps(body) + "\n\n"


def delta(content=None, finish=None, **fields):
    d = dict(fields)
    if content is not None:
        d["content"] = content
    return {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}


def vllm_stream(words, usage=True, done=True) -> list[str]:
    events = [chunk([delta("", role="assistant")])]
    events += [chunk([delta(w)]) for w in words]
    events.append(chunk([delta(finish="stop")]))
    if usage:
        events.append(chunk([], {"prompt_tokens": 21, "completion_tokens": len(words), "total_tokens": 21 + len(words)}))
    if done:
        events.append("data: [DONE]\n\n")
    return events


def arrival(body: bytes, timeline, marker: bytes) -> float:
    """When the event holding ``marker`` was whole: the chunk with the blank line that ends it."""
    end = body.index(b"\n\n", body.index(marker)) + 2
    return next(t for stop, t in timeline if stop >= end)


def timed(events: list[str], every: float = 0.01, split_at: int = 7) -> tuple[bytes, list[tuple[int, float]]]:
    """The stream as the proxy kept it: chunks that cut events (and lines) anywhere, each stamped."""
    body = "".join(events).encode()
    ends, t, timeline = list(range(split_at, len(body), split_at)) + [len(body)], 0.0, []
    for end in ends:
        t += every
        timeline.append((end, round(t, 6)))
    return body, timeline


def test_routes_and_bodies_are_recognised():
    assert route_operation("/v1/chat/completions") == CHAT
    assert route_operation("/{prefix}/v1/completions") == TEXT_COMPLETION
    assert route_operation("/openai/v1/embeddings/") == EMBEDDINGS
    assert route_operation("/v1/models/{model}:predict") is None
    assert body_operation({"model": "m", "messages": []}) == CHAT
    assert body_operation({"model": "m", "prompt": "hi"}) == TEXT_COMPLETION
    assert body_operation({"model": "m", "input": ["a"]}) == EMBEDDINGS
    assert body_operation({"instances": [[1, 2]]}) is None and body_operation([1]) is None
    assert may_be_openai(json.dumps(CHAT_REQUEST).encode()) and not may_be_openai(b'{"instances": [[1]]}')


def test_a_vllm_stream_split_anywhere_gives_tokens_times_and_features():
    words = ["Hel", "lo", "!", " How", " can", " I", " help", "?"]
    body, timeline = timed(vllm_stream(words))
    batch, record = decode_openai(CHAT, CHAT_REQUEST, body, status=200, response_content_type=SSE, timeline=timeline)
    assert record.streamed and record.responded and record.error_type == ""
    assert (record.input_tokens, record.output_tokens, record.output_source) == (21, 8, "usage")
    # The role chunk carries no content: the first token is the event after it, once whole.
    assert record.time_to_first_token == arrival(body, timeline, b'"content": "Hel"')
    assert record.last_token == arrival(body, timeline, b'"content": "?"')
    assert batch.n == 1 and batch.errors == []
    assert batch.features["prompt_tokens"] == [21] and batch.features["messages"] == [2]
    assert batch.features["prompt_chars"] == [len("You are a helpful assistant.\nHello")]
    assert batch.features["system_prompt"] == [system_prompt_hash("You are a helpful assistant.")]
    assert batch.features["max_tokens"] == [64.0] and batch.features["top_p"] == [None]
    assert batch.outputs == {"completion_tokens": [8], "completion_chars": [len("".join(words))],
                             "finish_reason": ["stop"], "empty_completion": [0], "truncated": [0]}
    assert record.completion_text == "".join(words)


def test_without_usage_the_output_is_counted_and_input_tokens_are_not_guessed():
    body, timeline = timed(vllm_stream(["a", "b", "c"], usage=False))
    batch, record = decode_openai(CHAT, CHAT_REQUEST, body, status=200, response_content_type=SSE, timeline=timeline)
    assert (record.input_tokens, record.output_tokens, record.output_source) == (None, 3, "counted")
    assert batch.features["prompt_tokens"] == [None]


def test_streamed_tool_calls_and_reasoning_are_generated_content():
    events = [chunk([delta(None, role="assistant", reasoning_content="Thinking")]),
              chunk([delta(None, tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                                               "function": {"name": "get_weather", "arguments": ""}}])]),
              chunk([delta(None, tool_calls=[{"index": 0, "function": {"arguments": "{\"city\": "}}])]),
              chunk([delta(None, tool_calls=[{"index": 0, "function": {"arguments": "\"Paris\"}"}}])]),
              chunk([delta(finish="tool_calls")]), "data: [DONE]\n\n"]
    body, timeline = timed(events, split_at=50)
    batch, record = decode_openai(CHAT, CHAT_REQUEST, body, status=200, response_content_type=SSE, timeline=timeline)
    assert record.output_tokens == 4 and record.output_source == "counted"
    assert record.time_to_first_token == arrival(body, timeline, b'"reasoning_content"')
    assert batch.outputs["finish_reason"] == ["tool_calls"] and batch.outputs["empty_completion"] == [0]
    assert batch.outputs["completion_chars"] == [0] and record.completion_text == ""


def test_whole_chat_and_completion_answers():
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": None,
                                                   "tool_calls": [{"id": "call_1", "type": "function", "function": {
                                                       "name": "f", "arguments": "{\"x\": 1}"}}]},
                           "logprobs": None, "finish_reason": "tool_calls"}],
              "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99,
                        "prompt_tokens_details": {"cached_tokens": 0}}}
    request = {**CHAT_REQUEST, "stream": False}
    batch, record = decode_openai(CHAT, request, json.dumps(answer).encode(), status=200,
                                  response_content_type="application/json")
    assert not record.streamed and record.time_to_first_token is None
    assert (record.input_tokens, record.output_tokens, record.output_source) == (82, 17, "usage")
    assert batch.outputs["finish_reason"] == ["tool_calls"] and batch.outputs["empty_completion"] == [0]
    completion = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "length"},
                              {"index": 1, "text": " world", "logprobs": None, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 16, "total_tokens": 17}}
    batch, record = decode_openai(TEXT_COMPLETION, {"model": "m", "prompt": ["Hello", "Hi"], "max_tokens": 16},
                                  json.dumps(completion).encode(), status=200, response_content_type="application/json")
    assert record.finish_reasons == ["length", "stop"]
    assert batch.features["prompt_chars"] == [len("Hello\nHi")] and "messages" not in batch.features
    assert batch.outputs["truncated"] == [1] and batch.outputs["completion_chars"] == [len("\n world")]


def test_streamed_text_completion():
    events = ["data: " + json.dumps({"id": "cmpl-2", "object": "text_completion", "created": 1, "model": "m",
                                     "choices": [{"index": 0, "text": t, "logprobs": None, "finish_reason": f}]})
              + "\n\n" for t, f in (("Once", None), (" upon", None), ("", "length"))] + ["data: [DONE]\n\n"]
    body, timeline = timed(events, split_at=40)
    batch, record = decode_openai(TEXT_COMPLETION, {"model": "m", "prompt": "Tell", "stream": True}, body, status=200,
                                  response_content_type="text/event-stream; charset=utf-8", timeline=timeline)
    assert record.output_tokens == 2 and batch.outputs["finish_reason"] == ["length"]
    assert batch.outputs["truncated"] == [1]


def test_embeddings_as_floats_and_base64_project_to_the_same_point():
    vectors = np.random.default_rng(3).standard_normal((3, 384)).astype(np.float32)
    floats = {"object": "list", "model": "bge", "usage": {"prompt_tokens": 9, "total_tokens": 9},
              "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]}
    packed = {**floats, "data": [{"object": "embedding", "index": i,
                                  "embedding": base64.b64encode(struct.pack("<384f", *v)).decode()}
                                 for i, v in reversed(list(enumerate(vectors)))]}  # out of order: by index
    request = {"model": "bge", "input": ["a", "bb", "ccc"]}
    a, record = decode_openai(EMBEDDINGS, request, json.dumps(floats).encode(), status=200,
                              response_content_type="application/json")
    b, _ = decode_openai(EMBEDDINGS, request, json.dumps(packed).encode(), status=200,
                         response_content_type="application/json")
    assert a.n == 3 and a.features["input_chars"] == [1, 2, 3] and a.features["inputs"] == [3, 3, 3]
    assert record.input_tokens == 9 and not record.responded
    for j in range(16):
        assert a.features[f"embedding_{j}"] == pytest.approx(b.features[f"embedding_{j}"], rel=1e-5, abs=1e-6)
    assert a.features["embedding_0"][0] != a.features["embedding_0"][1]
    short = {**floats, "data": floats["data"][:2]}
    c, _ = decode_openai(EMBEDDINGS, request, json.dumps(short).encode(), status=200,
                         response_content_type="application/json")
    assert c.errors == ["row_count_mismatch"] and "embedding_0" not in c.features


def test_bad_answers_leave_the_features_and_say_why():
    request = {**CHAT_REQUEST}
    events = vllm_stream(["a", "b"])
    events.insert(2, "data: {not json\n\n")
    body, timeline = timed(events)
    batch, record = decode_openai(CHAT, request, body, status=200, response_content_type=SSE, timeline=timeline)
    assert batch.errors == ["invalid_json"] and record.output_tokens == 2 and record.error_type == ""
    cut, timeline = timed(vllm_stream(["a", "b"], usage=False, done=False)[:-1])  # no finish, no [DONE]
    _, record = decode_openai(CHAT, request, cut, status=200, response_content_type=SSE, timeline=timeline)
    assert record.error_type == "stream_error"
    _, record = decode_openai(CHAT, request, cut, status=200, response_content_type=SSE, timeline=timeline,
                              response_truncated=True)
    assert record.error_type == ""  # the monitoring copy was capped, the stream was not cut
    _, record = decode_openai(CHAT, request, cut, status=200, response_content_type=SSE, timeline=timeline,
                              response_truncated=True, upstream_failed=True)
    assert record.error_type == "stream_error"  # the server broke it off: cut by the server, not the cap
    whole = {**request, "stream": False}
    _, record = decode_openai(CHAT, whole, b'{"choi', status=200, response_content_type="application/json",
                              response_truncated=True, upstream_failed=True)
    assert record.error_type == "upstream_error"
    errored = "".join(vllm_stream(["a"], done=False)[:2]) + 'data: {"error": {"message": "overloaded"}}\n\n'
    _, record = decode_openai(CHAT, request, errored.encode(), status=200, response_content_type=SSE)
    assert record.error_type == "stream_error"
    batch, record = decode_openai(CHAT, {**request, "stream": False}, b'{"choices": 3}', status=200,
                                  response_content_type="application/json")
    assert batch.errors == ["missing_field"] and batch.outputs == {} and batch.features["messages"] == [2]
    _, record = decode_openai(CHAT, request, None, status=429)
    assert record.error_type == "http_4xx" and record.streamed
    _, record = decode_openai(CHAT, request, None, status=504)
    assert record.error_type == "timeout"
    with pytest.raises(PayloadError):
        decode_openai(CHAT, {"model": "m", "messages": "hi"}, None, status=200)


def test_finish_reasons_and_time_per_output_token():
    assert [finish_reason_label(r) for r in ("stop", "length", "content_filter", "tool_calls", "abort", None)] == \
        ["stop", "length", "content_filter", "tool_calls", "other", "none"]
    assert time_per_output_token(0.1, 0.5, 5) == pytest.approx(0.1)
    assert time_per_output_token(0.1, 0.1, 1) is None and time_per_output_token(None, 0.5, 5) is None


def test_the_monitor_caps_request_models_matches_outputs_and_always_exports_its_families():
    config = GenAIConfig(output_matchers=[OutputMatcherConfig("refusal", r"(?i)\bI can(?:no|')t help")],
                         max_request_models=2)
    monitor = GenAIMonitor("m", config)
    registry = CollectorRegistry()
    registry.register(GenAICollector(monitor))
    from prometheus_client import generate_latest

    empty = generate_latest(registry).decode()
    for name in ("inferwatch_genai_requests_total", "inferwatch_genai_server_time_to_first_token_seconds",
                 "inferwatch_genai_output_matches_total", "inferwatch_genai_client_token_usage_tokens"):
        assert f"# HELP {name} " in empty
    refusal = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Sorry, I can't help with that."},
         "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}}
    for model in ("a", "b", "c", "d"):
        _, record = decode_openai(CHAT, {"model": model, "messages": []}, json.dumps(refusal).encode(), status=200,
                                  response_content_type="application/json")
        record.duration_seconds = 0.5
        monitor.observe("1", record)
    samples = registry_samples(registry)
    models = {labels["request_model"] for labels, _ in samples["inferwatch_genai_requests_total"]}
    assert models == {"a", "b", "other"}
    assert sum(v for _, v in samples["inferwatch_genai_output_matches_total"]) == 4
    assert sum(v for _, v in samples["inferwatch_genai_output_tokens_per_second_count"]) == 4
    assert sum(v for _, v in samples["inferwatch_genai_output_tokens_per_second_sum"]) == pytest.approx(4 * 16)
    monitor.forget_version("1")
    assert "inferwatch_genai_requests_total" not in registry_samples(registry)


def test_the_genai_section_is_validated():
    with pytest.raises(ConfigError) as err:
        load_config(None, {"genai.max_request_models": 0,
                           "genai.output_matchers": [{"name": "ok", "pattern": "("}, {"name": "ok", "pattern": "x"},
                                                     {"name": "a b", "pattern": "y"}]})
    text = str(err.value)
    assert "genai.max_request_models" in text and "genai.output_matchers[0].pattern" in text
    assert "genai.output_matchers[1].name: duplicate" in text and "genai.output_matchers[2].name" in text
    assert load_config(None, {}).genai.keep_text_in_prediction_log is False
