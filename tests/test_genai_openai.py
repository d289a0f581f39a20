"""Generative serving through a real sidecar: the official `openai` client, streaming and not, to an
OpenAI-compatible server run here (tests/genai_upstream.py), on loopback.

Times are held between causal bounds the test measures itself, on the same clock (perf_counter)
in the same process, so no tolerance depends on the machine's speed:
- time to first token: at least the server's own (first content chunk written - request received),
  at most the client's (first content chunk read - request sent); 2 ms of slack for clock reads;
- time per output token x (tokens - 1): at least (server's last content chunk - client's first read),
  at most (client's last read - server's first write).
Tokens are compared exactly with what the server put in `usage`, or with the chunks the test counted.
"""

from __future__ import annotations

import json
import time

import openai
import pytest
import requests

from conftest import json_server, proxy_url, sample, scrape, wait_for
from genai_upstream import MODEL, OpenAIUpstream

SLACK = 0.002
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is drift, in short?"}]


@pytest.fixture
def upstream_llm():
    with OpenAIUpstream(prefill_seconds=0.05, token_seconds=0.005, tokens=12) as server:
        yield server


def client_for(base: str, prefix: str = "/v1") -> "openai.OpenAI":
    return openai.OpenAI(base_url=base + prefix, api_key="test", max_retries=0, timeout=30)


def settled(sidecar, exchanges: int) -> None:
    """Wait until the worker has counted ``exchanges`` OpenAI requests in all: the proxy queues an
    exchange once its answer is relayed, which may be just after the client has it, so a bare
    ``drain()`` right after the call can run before there is anything to drain."""
    assert wait_for(lambda: sidecar.pipeline.drain(10) and
                    sample(scrape(sidecar), "inferwatch_genai_requests_total") >= exchanges, timeout=20), \
        [line for line in scrape(sidecar).splitlines() if line.startswith(("inferwatch_client_disconnects_total",
                                                                            "inferwatch_genai_requests_total"))]
    assert sidecar.pipeline.drain(10)


def metrics(sidecar, exchanges: int = 1) -> str:
    settled(sidecar, exchanges)
    return scrape(sidecar)


def stream_chat(client, **kwargs):
    """Chunks as the client got them, the client's send time and each content chunk's read time."""
    sent = time.perf_counter()
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **kwargs)
    chunks, content_read = [], []
    for chunk in stream:
        chunks.append(chunk.model_dump())
        if chunk.choices and chunk.choices[0].delta.content:
            content_read.append(time.perf_counter())
    return chunks, sent, content_read


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_streamed_chat_metrics_equal_what_the_test_counted(upstream_llm, sidecar_factory, engine):
    sidecar = sidecar_factory(upstream_llm.url, **{"proxy.engine": engine})
    params = {"stream_options": {"include_usage": True}, "temperature": 0.7, "top_p": 0.9, "max_tokens": 12}
    direct, _, _ = stream_chat(client_for(upstream_llm.url), **params)
    upstream_llm.served.clear()
    chunks, sent, content_read = stream_chat(client_for(proxy_url(sidecar, "")), **params)
    assert chunks == direct  # the same chunks, in order, as without the sidecar
    served = upstream_llm.served[-1]
    assert chunks[-1]["usage"]["completion_tokens"] == served.completion_tokens == len(content_read)

    text = metrics(sidecar)
    chat = {"operation": "chat", "request_model": MODEL}
    assert sample(text, "inferwatch_genai_requests_total", streamed="true", error_type="", **chat) == 1
    assert sample(text, "inferwatch_genai_tokens_total", token_type="input", source="usage", **chat) == \
        served.prompt_tokens
    assert sample(text, "inferwatch_genai_tokens_total", token_type="output", source="usage", **chat) == \
        served.completion_tokens
    assert sample(text, "inferwatch_genai_tokens_total", source="counted") == 0  # never mixed
    assert sample(text, "inferwatch_genai_client_token_usage_tokens_sum", token_type="output", **chat) == \
        served.completion_tokens
    ttft = sample(text, "inferwatch_genai_server_time_to_first_token_seconds_sum", **chat)
    assert sample(text, "inferwatch_genai_server_time_to_first_token_seconds_count", **chat) == 1
    assert served.content_sent[0] - served.received - SLACK <= ttft <= content_read[0] - sent + SLACK
    assert ttft >= 0.05 - SLACK  # the server's prefill is inside it
    span = sample(text, "inferwatch_genai_server_time_per_output_token_seconds_sum", **chat) \
        * (served.completion_tokens - 1)
    assert served.content_sent[-1] - content_read[0] - SLACK <= span <= content_read[-1] - served.content_sent[0] + SLACK
    assert sample(text, "inferwatch_genai_finish_reasons_total", finish_reason="stop", request_model=MODEL) == 1
    assert sample(text, "inferwatch_genai_responses_total", request_model=MODEL) == 1
    assert sample(text, "inferwatch_genai_server_request_duration_seconds_count", streamed="true", **chat) == 1
    assert sample(text, "inferwatch_genai_output_tokens_per_second_count", **chat) == 1
    # The features went to the window like any model's.
    snapshot = sidecar.windows.get("1").snapshot()
    assert {"prompt_chars", "messages", "system_prompt", "temperature", "max_tokens", "top_p"} <= set(snapshot.features)
    assert {"completion_tokens", "completion_chars", "finish_reason", "empty_completion", "truncated"} <= \
        set(snapshot.outputs)


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_each_chunk_reaches_the_client_before_the_server_writes_the_next(sidecar_factory, engine):
    """The same pace as direct, shown without a clock: the server holds its stream after the first
    content chunk until the client, through the sidecar, has read that chunk. A proxy that buffered
    the answer would deliver nothing until the hold timed out (30 s) and the test would see every
    chunk already written."""
    import threading

    release = threading.Event()
    with OpenAIUpstream(prefill_seconds=0.0, token_seconds=0.0, tokens=5, hold_after_first=release) as server:
        sidecar = sidecar_factory(server.url, **{"proxy.engine": engine})
        written_at_first_read = None
        for chunk in client_for(proxy_url(sidecar, "")).chat.completions.create(model=MODEL, messages=MESSAGES,
                                                                                 stream=True):
            if written_at_first_read is None and chunk.choices and chunk.choices[0].delta.content:
                written_at_first_read = len(server.served[-1].content_sent)
                release.set()
        assert written_at_first_read == 1
        assert len(server.served[-1].content_sent) == 5
        assert sample(metrics(sidecar), "inferwatch_genai_tokens_total", token_type="output", source="counted") == 5


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_a_stream_the_server_breaks_off_is_an_error_not_a_success(sidecar_factory, engine):
    """The server closes the connection mid-stream (no finish chunk, no [DONE]): the client's stream
    breaks, and the request counts as a stream_error (the monitoring copy is cut too, but by the
    server, not by its cap)."""
    from inferwatch.demo.openai_stub import Behaviour, OpenAIStub

    broken = Behaviour(first_token_seconds=0.0, token_seconds=0.0, completion_tokens=20, truncation_share=0.0,
                       refusal_share=0.0, stream_error_share=1.0)
    with OpenAIStub(port=0, behaviour=broken) as stub:
        sidecar = sidecar_factory(stub.url, **{"proxy.engine": engine})
        with pytest.raises(openai.APIError):
            for _ in client_for(proxy_url(sidecar, "")).chat.completions.create(
                    model=MODEL, messages=MESSAGES, stream=True, max_tokens=20):
                pass
        assert stub.served["stream_errors"] == 1
        text = metrics(sidecar)
    assert sample(text, "inferwatch_genai_requests_total", streamed="true", error_type="stream_error") == 1
    assert sample(text, "inferwatch_genai_requests_total", error_type="") == 0
    assert sample(text, "inferwatch_upstream_errors_total") == 1  # reset (fast engine) or protocol (aiohttp)


def test_a_stream_without_usage_is_counted_from_its_chunks_and_labelled_so(upstream_llm, sidecar_factory):
    sidecar = sidecar_factory(upstream_llm.url)
    chunks, _, content_read = stream_chat(client_for(proxy_url(sidecar, "")), max_tokens=7)
    assert all(c.get("usage") is None for c in chunks)
    text = metrics(sidecar)
    chat = {"operation": "chat", "request_model": MODEL}
    assert sample(text, "inferwatch_genai_tokens_total", token_type="output", source="counted", **chat) == \
        len(content_read) == 7
    assert sample(text, "inferwatch_genai_tokens_total", source="usage") == 0
    assert sample(text, "inferwatch_genai_server_time_to_first_token_seconds_count", **chat) == 1


def test_non_streamed_chat_and_completions_under_a_prefix(upstream_llm, sidecar_factory):
    sidecar = sidecar_factory(upstream_llm.url)
    through, direct = client_for(proxy_url(sidecar, "")), client_for(upstream_llm.url)
    answer = through.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert answer.model_dump() == direct.chat.completions.create(model=MODEL, messages=MESSAGES,
                                                                 max_tokens=5).model_dump()
    prefixed = client_for(proxy_url(sidecar, ""), "/openai/v1")
    completion = prefixed.completions.create(model=MODEL, prompt="say hi", max_tokens=4)
    streamed = list(prefixed.completions.create(model=MODEL, prompt="say hi", max_tokens=3, stream=True))
    assert completion.usage.completion_tokens == 4
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "w0 w1 w2 "
    text = metrics(sidecar, 3)
    assert sample(text, "inferwatch_genai_requests_total", operation="chat", streamed="false", error_type="") == 1
    assert sample(text, "inferwatch_genai_tokens_total", operation="chat", token_type="output", source="usage") == 5
    assert sample(text, "inferwatch_genai_tokens_total", operation="chat", token_type="input", source="usage") == \
        answer.usage.prompt_tokens
    assert sample(text, "inferwatch_genai_server_time_to_first_token_seconds_count", operation="chat") == 0
    assert sample(text, "inferwatch_genai_requests_total", operation="text_completion", streamed="false") == 1
    assert sample(text, "inferwatch_genai_requests_total", operation="text_completion", streamed="true") == 1
    assert sample(text, "inferwatch_genai_tokens_total", operation="text_completion", source="counted") == 3
    assert sample(text, "inferwatch_requests_total", endpoint="/{prefix}/v1/completions") == 2


def test_embeddings_floats_and_base64_reach_the_window_as_a_projection(upstream_llm, sidecar_factory):
    sidecar = sidecar_factory(upstream_llm.url)
    client = client_for(proxy_url(sidecar, ""))
    floats = client.embeddings.create(model=MODEL, input=["a cat", "two dogs"], encoding_format="float")
    packed = client.embeddings.create(model=MODEL, input=["a cat", "two dogs"], encoding_format="base64")
    assert len(floats.data) == len(packed.data) == 2
    text = metrics(sidecar, 2)
    assert sample(text, "inferwatch_genai_requests_total", operation="embeddings", error_type="") == 2
    assert sample(text, "inferwatch_genai_tokens_total", operation="embeddings", token_type="input") == 2 * 4  # 2 words x 2 inputs
    assert sample(text, "inferwatch_payload_errors_total") == 0
    snapshot = sidecar.windows.get("1").snapshot()
    assert snapshot.n == 4 and {"input_chars", "inputs", "embedding_0", "embedding_15"} <= set(snapshot.features)
    values = snapshot.features["embedding_3"].values
    assert values[0] == pytest.approx(values[2], rel=1e-6)  # the same text, float or base64: the same point


def test_text_stays_out_of_the_prediction_log_unless_kept(upstream_llm, sidecar_factory, tmp_path):
    for keep in (False, True):
        path = tmp_path / f"log-{keep}.jsonl"
        sidecar = sidecar_factory(upstream_llm.url, **{"prediction_log.path": str(path),
                                                       "prediction_log.sample_rate": 1.0,
                                                       "genai.keep_text_in_prediction_log": keep})
        client_for(proxy_url(sidecar, "")).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
        settled(sidecar, 1)
        sidecar.predlog.close()
        line = json.loads(path.read_text().splitlines()[-1])
        assert line["inputs"]["system_prompt"] != "none" and len(line["inputs"]["system_prompt"]) == 12
        raw = path.read_text()
        assert ("What is drift" in raw) is keep and ("w0 w1 w2" in raw) is keep
        if keep:
            assert line["genai_text"] == {"prompt": "You are terse.\nWhat is drift, in short?", "completion": "w0 w1 w2 "}


def test_bad_bodies_are_counted_and_never_break_serving(sidecar_factory):
    answers = {"/v1/chat/completions": {"choices": "not a list"}, "/v1/embeddings": {"data": [{"embedding": "%%"}]}}
    with json_server(lambda path, request: answers[path]) as url:
        sidecar = sidecar_factory(url)
        bad = requests.post(proxy_url(sidecar, "/v1/chat/completions"), json={"model": "x", "messages": []}, timeout=10)
        assert bad.status_code == 200 and bad.json() == {"choices": "not a list"}
        emb = requests.post(proxy_url(sidecar, "/v1/embeddings"), json={"model": "x", "input": "hi"}, timeout=10)
        assert emb.json() == answers["/v1/embeddings"]
        not_a_request = requests.post(proxy_url(sidecar, "/v1/chat/completions"), json=[1, 2], timeout=10)
        assert not_a_request.json() == {"choices": "not a list"}  # whatever the server said, relayed
        text = metrics(sidecar, 3)
    assert sample(text, "inferwatch_payload_errors_total", reason="missing_field") == 1  # the chat answer
    assert sample(text, "inferwatch_payload_errors_total", reason="unknown_format") == 2  # base64, the request
    assert sample(text, "inferwatch_genai_requests_total", operation="chat") == 2
    assert sample(text, "inferwatch_monitoring_errors_total") == 0


def test_a_reference_profile_is_built_from_the_prediction_log(upstream_llm, sidecar_factory, tmp_path):
    """`inferwatch profile` reads the prediction log's own lines: the genai features and outputs
    (and the embeddings' projection, which the PCA of the multivariate drift engine is fitted on)."""
    import subprocess
    import sys

    from inferwatch.reference.format import ReferenceProfile

    log = tmp_path / "predictions.jsonl"
    sidecar = sidecar_factory(upstream_llm.url, **{"prediction_log.path": str(log), "prediction_log.sample_rate": 1.0})
    client = client_for(proxy_url(sidecar, ""))
    for i in range(30):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q " * (i + 1)}],
                                       max_tokens=2 + i % 5, temperature=0.1 * (i % 7))
        client.embeddings.create(model=MODEL, input=[f"text {i}", f"other {i * 7}"])
    settled(sidecar, 60)
    sidecar.predlog.close()
    out = tmp_path / "reference.json"
    done = subprocess.run([sys.executable, "-m", "inferwatch", "profile", "--input", str(log), "--output", str(out),
                           "--prediction-column", "completion_tokens", "--prediction-column", "finish_reason",
                           "--prediction-column", "completion_chars", "--prediction-column", "truncated",
                           "--prediction-column", "empty_completion"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    profile = ReferenceProfile.load(str(out))
    assert {"prompt_chars", "messages", "system_prompt", "temperature", "max_tokens", "input_chars",
            "embedding_0", "embedding_15"} <= set(profile.features)
    assert {"completion_tokens", "finish_reason", "truncated"} <= set(profile.outputs)
    assert {"prediction_id", "model", "endpoint", "genai_text"}.isdisjoint(profile.features)
    assert profile.pca is not None and "embedding_0" in profile.pca_features


def test_a_new_topic_of_embeddings_moves_the_multivariate_drift_score(sidecar_factory):
    """Embeddings of one topic (vectors in a 3-dimensional subspace of 64, as real embeddings of
    related texts are close to a low-dimensional set) are the warm-up reference; vectors of
    another topic, with inputs of the same lengths, lie off its principal directions: the PCA
    reconstruction score of the 16 projected columns rises, without any text read. (A warm-up
    reference has no calibrated multivariate thresholds: the score is published, not decided.)"""
    import numpy as np

    rng = np.random.default_rng(15)
    bases = {topic: np.linalg.qr(rng.standard_normal((64, 3)))[0] for topic in "AB"}

    def embed(path, request):
        vectors = []
        for text in request["input"]:
            topic, index = text.split()
            z = np.random.default_rng(int(index)).standard_normal(3)
            vectors.append((bases[topic] @ z + 0.01 * np.random.default_rng(10_000 + int(index)).standard_normal(64)).tolist())
        return {"object": "list", "model": MODEL, "usage": {"prompt_tokens": 2, "total_tokens": 2},
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]}

    with json_server(embed) as url:
        sidecar = sidecar_factory(url, **{"reference.warmup_events": 400, "window.max_events": 400,
                                          "drift.interval_seconds": 0.2})
        client = client_for(proxy_url(sidecar, ""))

        def send(topic: str, start: int) -> float:
            for i in range(start, start + 200, 2):
                client.embeddings.create(model=MODEL, input=[f"{topic} {i:04d}", f"{topic} {i + 1:04d}"])
            settled(sidecar, start // 2 + 100)
            if start < 400:  # still the warm-up: nothing to compare with yet
                return 0.0
            seen = sidecar.drift.evaluations
            assert wait_for(lambda: sidecar.drift.evaluations >= seen + 2)  # one on the whole new window
            return sample(scrape(sidecar), "inferwatch_multivariate_drift_score", method="pca_reconstruction")

        send("A", 0)
        send("A", 200)  # the reference: 400 events of topic A
        send("A", 400)
        same = send("A", 600)  # a window of 400 fresh topic-A events
        send("B", 800)
        moved = send("B", 1000)  # a window of topic B only
    # The score is the window's mean reconstruction error over the reference's own: about 1 for the
    # same topic, two orders of magnitude above it for the new one (measured: 1.08 and 110).
    assert same < 1.5 and moved > 20 * same, (same, moved)
