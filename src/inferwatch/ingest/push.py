"""Push mode: parse ``POST /v1/events`` bodies into one ``EventBatch`` per model version.

A body is ``{"events": [...]}``, a bare list of events, or JSON lines (one event per line).
Each event::

    {"prediction_id": "abc",            # optional; a UUID when absent
     "timestamp": 1700000000.5,          # optional; Unix seconds or RFC 3339; now when absent
     "model_version": "v2",              # optional; default_version when absent
     "features": {"age": 31, ...},       # required object
     "prediction": 0.93}                 # optional scalar | list | object

Invalid events are rejected one by one (``{"index": i, "reason": ...}``) so one bad event
does not cost a client its whole batch; ``PayloadError`` is raised only when the body as a
whole is unusable.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import Any

import numpy as np

from .bodies import body_text, media_type, parse_json
from .events import EventBatch, PayloadError, rows_to_columns

__all__ = ["parse_events", "parse_timestamp"]

_NDJSON = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines",
                     "application/jsonlines", "application/json-lines"})
# curl -d sends form-urlencoded unless told otherwise; text/plain is common from scripts.
_JSON = frozenset({"", "application/json", "text/json", "text/plain", "application/x-www-form-urlencoded"})
_MAX_ID_LENGTH = 256
# Unix seconds reach 1e11 only in the year 5138; above that the client almost surely sent ms.
_MAX_SECONDS = 1e11
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):?(\d{2}))"
)


def parse_timestamp(value: Any) -> float:
    """Unix seconds from a number or an RFC 3339 string; ``ValueError`` says what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"timestamp must be a number (Unix seconds) or an RFC 3339 string, not {type(value).__name__}")
    if isinstance(value, str):
        # Parsed by hand: datetime.fromisoformat only learned "Z" and 1-6 digit fractions in 3.11.
        match = _RFC3339.fullmatch(value.strip())
        if not match:
            raise ValueError(f"timestamp {value[:40]!r} is not RFC 3339 (e.g. 2024-05-01T12:00:00Z)")
        year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = match.groups()
        if zulu:
            tz = timezone.utc
        else:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        try:
            moment = datetime(int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59), tzinfo=tz)
        except ValueError as exc:
            raise ValueError(f"timestamp {value[:40]!r}: {exc}") from None
        return moment.timestamp() + (float("0." + frac) if frac else 0.0)
    try:
        seconds = float(value)
    except OverflowError:   # an integer beyond any float: not a time
        raise ValueError("timestamp is too large to be a Unix time") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"timestamp {value!r} is not a valid Unix time")
    if seconds >= _MAX_SECONDS:
        raise ValueError(f"timestamp {value!r} looks like milliseconds; send Unix seconds")
    return seconds


def _prediction_outputs(prediction: Any) -> dict[str, Any]:
    if isinstance(prediction, dict):
        return prediction
    if isinstance(prediction, list):
        return {f"prediction_{i}": value for i, value in enumerate(prediction)}
    return {"prediction": prediction}


def _check_event(event: Any, default_version: str | None, now: float) -> tuple[str | None, str, float, dict, dict]:
    """One event to (version, id, timestamp, features, outputs); ``ValueError`` names the bad field."""
    if not isinstance(event, dict):
        raise ValueError(f"an event must be a JSON object, not {_json_type(event)}")
    if "features" not in event:
        raise ValueError("features is required (an object of feature name to value)")
    features = event["features"]
    if not isinstance(features, dict):
        raise ValueError(f"features must be an object, not {_json_type(features)}")
    prediction_id = event.get("prediction_id")
    if prediction_id is None:
        prediction_id = uuid.uuid4().hex
    elif not isinstance(prediction_id, str) or not prediction_id:
        raise ValueError(f"prediction_id must be a non-empty string, not {_json_type(prediction_id)}")
    elif len(prediction_id) > _MAX_ID_LENGTH:
        raise ValueError(f"prediction_id is longer than {_MAX_ID_LENGTH} characters")
    timestamp = event.get("timestamp")
    if timestamp is None:
        timestamp = now
    elif not (type(timestamp) is float and 0.0 <= timestamp < _MAX_SECONDS):  # else already valid seconds
        timestamp = parse_timestamp(timestamp)
    version = event.get("model_version")
    if version is None or version == "":
        version = default_version
    elif not isinstance(version, str):
        raise ValueError(f"model_version must be a string, not {_json_type(version)}")
    outputs = _prediction_outputs(event["prediction"]) if event.get("prediction") is not None else {}
    return version, prediction_id, timestamp, features, outputs


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _json_lines(text: str) -> tuple[list[Any], list[dict[str, Any]], list[int]]:
    """Events, rejections and source line numbers from JSON lines; blank lines are skipped."""
    events: list[Any] = []
    rejections: list[dict[str, Any]] = []
    lines: list[int] = []
    index = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(parse_json(line))
            lines.append(number)
        except (ValueError, RecursionError) as exc:
            rejections.append({"index": index, "line": number, "reason": f"line {number}: invalid JSON ({exc})"})
            events.append(_INVALID)
            lines.append(number)
        index += 1
    return events, rejections, lines


_INVALID = object()  # a JSON line that did not parse; already rejected


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """``rows_to_columns`` when every row has the same keys (the usual body), transposed in C.

    Rows of one length that all hold the first row's keys have the same key set; a row that
    lacks one raises KeyError and the general version takes over.
    """
    if rows and len(set(map(len, rows))) == 1:
        names = list(rows[0])
        try:
            if len(names) == 1:
                return {names[0]: [row[names[0]] for row in rows]}
            if names:
                return dict(zip(names, map(list, zip(*map(itemgetter(*names), rows)))))
        except KeyError:
            pass
    return rows_to_columns(rows)


_EVENT_KEYS = frozenset({"prediction_id", "timestamp", "model_version", "features", "prediction"})
_SCALARS = frozenset({int, float, str, bool})
_NUMBERS = frozenset({int, float})


def _uniform_batch(events: list[Any], default_version: str | None, now: float) -> EventBatch | None:
    """The whole body at once when every event has the same, valid fields (the usual body).

    Checks run over columns (``set(map(type, ...))`` and numpy, in C) instead of event by
    event. Any doubt returns None and the per-event path decides, with exact rejections; both
    paths give the same batch for the same body (tests/test_ingest.py).
    """
    first = events[0] if events else None
    if type(first) is not dict or "features" not in first or not first.keys() <= _EVENT_KEYS:
        return None
    if set(map(type, events)) != _DICT or set(map(len, events)) != {len(first)}:
        return None
    try:  # one length and every key of the first event present: the same key set everywhere
        columns = dict(zip(first, map(list, zip(*map(itemgetter(*first), events))))) if len(first) > 1 \
            else {"features": [event["features"] for event in events]}
    except KeyError:
        return None
    n = len(events)
    features = columns["features"]
    if set(map(type, features)) != _DICT:
        return None
    ids = columns.get("prediction_id")
    if ids is None:
        ids = [uuid.uuid4().hex for _ in range(n)]
    elif set(map(type, ids)) != _STR or not 0 < min(map(len, ids)) <= max(map(len, ids)) <= _MAX_ID_LENGTH:
        return None
    stamps = columns.get("timestamp")
    if stamps is None:
        stamps = [now] * n
    else:
        if not set(map(type, stamps)) <= _NUMBERS:
            return None
        try:
            seconds = np.asarray(stamps, dtype=np.float64)
        except OverflowError:
            return None
        if not ((seconds >= 0).all() and (seconds < _MAX_SECONDS).all()):  # NaN fails both
            return None
        stamps = seconds.tolist()
    version = default_version
    if "model_version" in columns:
        try:
            distinct = set(columns["model_version"])
        except TypeError:  # an unhashable (array or object) version: rejected event by event
            return None
        if len(distinct) != 1:
            return None
        named = distinct.pop()
        if named is not None and named != "":
            if type(named) is not str:
                return None
            version = named
    outputs: dict[str, list[Any]] = {}
    if "prediction" in columns:
        predictions = columns["prediction"]
        if not set(map(type, predictions)) <= _SCALARS:
            return None
        outputs = {"prediction": predictions}
    return EventBatch(n=n, features=_columns(features), outputs=outputs, prediction_ids=ids, timestamps=stamps,
                      model_version=version, source="push")


_DICT = {dict}
_STR = {str}


def parse_events(
    body: bytes,
    content_type: str | None,
    *,
    max_bytes: int,
    default_version: str | None = None,
    content_encoding: str | None = None,
) -> tuple[list[EventBatch], list[dict[str, Any]]]:
    """Parse a push body into batches (one per model version) and per-event rejections."""
    if len(body) > max_bytes:
        raise PayloadError("too_large", f"{len(body)} bytes > {max_bytes}")
    mt = media_type(content_type)
    ndjson = mt in _NDJSON
    if not (ndjson or mt in _JSON or mt.endswith("+json")):
        raise PayloadError("unsupported_content_type", f"{mt} (send application/json or application/x-ndjson)")
    text = body_text(body, content_encoding, max_bytes)

    rejections: list[dict[str, Any]] = []
    lines: list[int] | None = None
    if ndjson:
        events, rejections, lines = _json_lines(text)
    else:
        try:
            parsed = parse_json(text)
        except json.JSONDecodeError as exc:
            # Several JSON values one per line, sent without the ndjson content type.
            if exc.msg == "Extra data" and "\n" in text.strip():
                events, rejections, lines = _json_lines(text)
            else:
                raise PayloadError("invalid_json", str(exc)) from None
        except (ValueError, RecursionError) as exc:
            raise PayloadError("invalid_json", str(exc)[:200]) from None
        else:
            if isinstance(parsed, list):
                events = parsed
            elif isinstance(parsed, dict) and "events" in parsed:
                events = parsed["events"]
                if not isinstance(events, list):
                    raise PayloadError("invalid_event", f"'events' must be an array, not {_json_type(events)}")
            elif isinstance(parsed, dict) and "features" in parsed:
                events = [parsed]  # a single event on its own
            else:
                raise PayloadError("invalid_event", 'expected {"events": [...]}, a list of events or JSON lines')

    now = time.time()
    uniform = _uniform_batch(events, default_version, now)
    if uniform is not None:
        return [uniform], []
    groups: dict[str | None, tuple[list[str], list[float], list[dict], list[dict]]] = {}
    for index, event in enumerate(events):
        if event is _INVALID:
            continue
        try:
            version, prediction_id, timestamp, features, outputs = _check_event(event, default_version, now)
        except ValueError as exc:
            rejection: dict[str, Any] = {"index": index, "reason": str(exc)}
            if lines is not None:
                rejection["line"] = lines[index]
            rejections.append(rejection)
            continue
        group = groups.get(version)
        if group is None:
            group = groups[version] = ([], [], [], [])
        ids, stamps, feature_rows, output_rows = group
        ids.append(prediction_id)
        stamps.append(timestamp)
        feature_rows.append(features)
        output_rows.append(outputs)

    batches = [
        EventBatch(
            n=len(ids),
            features=_columns(feature_rows),
            outputs=_columns(output_rows),
            prediction_ids=ids,
            timestamps=stamps,
            model_version=version,
            source="push",
        )
        for version, (ids, stamps, feature_rows, output_rows) in groups.items()
    ]
    rejections.sort(key=lambda r: r["index"])
    return batches, rejections
