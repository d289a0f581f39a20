"""Server-sent events (``text/event-stream``) split into events, for codecs to read.

Pure functions over bytes, run by the worker (never on the request path). The rules are the
WHATWG HTML standard's "event stream interpretation": lines end in CRLF, LF or CR; a blank line
dispatches the event; ``data:`` lines are joined with ``\\n``; a line starting with ``:`` is a
comment; one space after the colon is dropped; an event with no data is not dispatched, nor is
a last event the stream ended before its blank line (a truncated copy ends mid-event).
``[DONE]``, the data OpenAI-style servers send last, is an event with ``done`` set.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

DONE = "[DONE]"


@dataclass(frozen=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None

    @property
    def done(self) -> bool:
        return self.data == DONE


def is_event_stream(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().lower() == "text/event-stream"  # type: ignore[union-attr]


class SseDecoder:
    """Incremental: ``feed`` chunks as they came (an event, a line, even a CRLF may be split
    across two), get the events completed so far."""

    def __init__(self) -> None:
        self._pending = ""  # an unfinished line
        self._cr = False  # the last chunk ended in CR: a LF opening the next one belongs to it
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._first = True
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character split across chunks

    def feed(self, chunk: bytes) -> list[SseEvent]:
        text = self._utf8.decode(chunk)
        if self._first:
            self._first = False
            text = text.removeprefix("\ufeff")  # a leading byte order mark is ignored
        if self._cr and text.startswith("\n"):
            text = text[1:]
        self._cr = text.endswith("\r")
        lines = (self._pending + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._pending = lines.pop()
        events: list[SseEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None  # retry and unknown fields: nothing a codec needs

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(data="\n".join(data), event=event or "message", id=self._id)


def split_events(body: bytes) -> list[SseEvent]:
    """Every complete event of an event stream, in order."""
    return SseDecoder().feed(body)


def event_data(events: list[SseEvent]) -> list[str]:
    """The data of each event before ``[DONE]``: what a codec decodes (e.g. one JSON each)."""
    out = []
    for event in events:
        if event.done:
            break
        out.append(event.data)
    return out
