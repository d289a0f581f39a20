"""HTTP bodies to JSON values: size cap, media type, Content-Encoding, UTF-8 and JSON parsing.

Shared by the proxy's codecs (``codecs.decode_exchange``), push bodies (``push``) and
CloudEvents (``cloudevents``). Decompression is capped, so a small "zip bomb" cannot exhaust
memory; every failure is a ``PayloadError`` with a reason the metrics count.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import orjson

from .events import PayloadError

__all__ = ["load_json", "parse_json", "decompress", "media_type"]

# Media types decoded as JSON besides */json and */*+json. curl -d sends form-urlencoded by
# default and many clients send text/plain, so refusing them would lose real traffic.
_TEXTUAL = frozenset({"text/plain", "application/x-www-form-urlencoded"})


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json`` ('' when absent)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _is_json_type(mt: str) -> bool:
    return not mt or mt in _TEXTUAL or mt.endswith("/json") or mt.endswith("+json")


def _inflate(data: bytes, wbits: int, max_bytes: int, members: bool) -> bytes:
    """Decompress with an output cap, so a small "zip bomb" cannot exhaust memory."""
    out: list[bytes] = []
    total = 0
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            # max_length is never 0 here (0 would mean "no limit").
            chunk = inflater.decompress(data, max_bytes + 1 - total)
        except zlib.error as exc:
            raise PayloadError("decompression", str(exc)) from None
        total += len(chunk)
        out.append(chunk)
        if total > max_bytes:
            raise PayloadError("too_large", f"decompressed body exceeds {max_bytes} bytes")
        if not inflater.eof:
            raise PayloadError("decompression", "truncated compressed body")
        data = inflater.unused_data
        # gzip allows several concatenated members; anything else after the end is an error.
        if not data or not members:
            break
    if data and not members:
        raise PayloadError("decompression", "trailing bytes after compressed body")
    return b"".join(out)


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate, identity; a list is applied right to left)."""
    if not content_encoding:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    for coding in reversed(codings):
        if coding in ("", "identity"):
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, max_bytes, members=True)
        elif coding == "deflate":
            # HTTP "deflate" is meant to be zlib-wrapped, but some servers send raw deflate.
            try:
                body = _inflate(body, zlib.MAX_WBITS, max_bytes, members=False)
            except PayloadError as exc:
                if exc.reason != "decompression":
                    raise
                body = _inflate(body, -zlib.MAX_WBITS, max_bytes, members=False)
        else:
            raise PayloadError("decompression", f"unsupported Content-Encoding {coding!r}")
    return body


def body_text(body: bytes, content_encoding: str | None, max_bytes: int) -> str:
    """A body decompressed and decoded as UTF-8 (a byte order mark dropped); PayloadError if not."""
    body = decompress(body, content_encoding, max_bytes)
    try:
        text = str(body, "utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("not_utf8", str(exc)) from None
    return text[1:] if text.startswith("\ufeff") else text


def parse_json(text: str | bytes) -> Any:
    """One JSON document; orjson when it can, the standard library for what orjson refuses.

    orjson parses about three times faster (measured in benchmarks/ingest.py). It rejects the
    NaN / Infinity literals Python's json.dumps writes by default and integers beyond 64 bits;
    those bodies, and invalid ones, go to ``json.loads``, which accepts the former and words
    the error message for the latter. Raises ``ValueError`` or ``RecursionError``.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def load_json(
    body: bytes, content_type: str | None = None, content_encoding: str | None = None, max_bytes: int = 8 * 1024 * 1024
) -> Any:
    """Size check, content-type check, decompression, UTF-8 decoding and JSON parsing, in that order."""
    if len(body) > max_bytes:
        raise PayloadError("too_large", f"{len(body)} bytes > {max_bytes}")
    mt = media_type(content_type)
    if not _is_json_type(mt):
        raise PayloadError("unsupported_content_type", mt)
    text = body_text(body, content_encoding, max_bytes)
    try:
        # NaN / Infinity / -Infinity literals are accepted and become floats.
        return parse_json(text)
    except (ValueError, RecursionError) as exc:
        raise PayloadError("invalid_json", str(exc)[:200]) from None
