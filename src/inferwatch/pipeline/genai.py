"""Proxied exchanges with an OpenAI-compatible server: decoded by ``ingest.openai`` in the worker,
their serving record handed to the genai monitor, their features windowed like any model's."""

from __future__ import annotations

import logging
from typing import Callable

from inferwatch.config import GenAIConfig
from inferwatch.ingest.bodies import load_json
from inferwatch.ingest.events import EventBatch, PayloadError
from inferwatch.ingest.openai import (GenAIRecord, body_operation, decode_openai, error_type, may_be_openai,
                                      route_operation)
from .items import Exchange

log = logging.getLogger(__name__)

# Row fields of the prediction log this stage may add (predlog.ROW_FIELDS holds the name too).
TEXT_FIELD = "genai_text"


class GenAIDecoding:
    """``decode`` an exchange when it is an OpenAI-compatible one (None otherwise: the payload
    codecs take it). ``sink(version, record)`` gets every such exchange's record, answered or not."""

    def __init__(self, config: GenAIConfig, sink: Callable[[str, GenAIRecord], None], max_bytes: int):
        self.keep_text = config.keep_text_in_prediction_log
        self.sink = sink
        self.max_bytes = max_bytes

    def decode(self, item: Exchange, answered: bool) -> EventBatch | None:
        operation = route_operation(item.endpoint)
        request = None
        if operation is None:  # another route: the body decides (parsed twice when it is not OpenAI, rarely)
            if not may_be_openai(item.request_body):
                return None
            try:
                request = load_json(item.request_body, item.request_content_type, item.request_content_encoding,
                                    self.max_bytes)
            except PayloadError:
                return None
            operation = body_operation(request)
            if operation is None:
                return None
        problem: PayloadError | None = None
        try:
            if request is None:
                request = load_json(item.request_body, item.request_content_type, item.request_content_encoding,
                                    self.max_bytes)
            batch, record = decode_openai(
                operation, request, item.response_body if answered else None, status=item.status,
                response_content_type=item.response_content_type,
                response_content_encoding=item.response_content_encoding,
                response_truncated=item.response_truncated, upstream_failed=item.upstream_failed,
                timeline=item.response_timeline,
                max_bytes=self.max_bytes)
        except PayloadError as exc:  # the request itself: still a request the server was sent
            problem = exc
            record = GenAIRecord(operation, "", False, item.status, error_type(item.status))
        record.duration_seconds = item.latency_seconds
        self.sink(item.model_version, record)
        if problem is not None:
            raise problem
        if self.keep_text and (record.responded or record.prompt_text):
            batch.annotations = {0: {TEXT_FIELD: {"prompt": record.prompt_text,
                                                  "completion": record.completion_text}}}
        return batch
