"""Generative serving (OpenAI-compatible APIs): time to first token, time per output token,
request duration, tokens, finish reasons and output matchers, by the OTel GenAI conventions.

``evaluate`` is pure (a record to label values and numbers), ``monitor`` holds the counts the
worker adds to, ``collector`` publishes them at scrape time. The features (prompt and completion
lengths, finish reason, truncation ...) go to the windows like any model's: drift, data quality
and segments read them unchanged.
"""

from .collector import GenAICollector
from .monitor import GenAIMonitor

__all__ = ["GenAIMonitor", "GenAICollector"]
