"""JSON lines on disk: a size-rotated file, strict JSON for numpy values and NaN, redaction.

Shared by the prediction log, the input guard's quarantine log and the actions' audit log.
Redaction matches names case-insensitively. JSON has no NaN or infinity: such values are written as ``null`` (as JavaScript's
``JSON.stringify`` does), so every line stays valid JSON for strict parsers.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import math
import os
from typing import Any

import numpy as np

REDACTED = "[REDACTED]"


def _default(value: Any) -> Any:
    """JSON for what ``json`` cannot encode: numpy values, bytes, sets; else ``str()``."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)


def finite(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return finite(value.tolist())
    return value


def dumps(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), default=_default)
    except ValueError:
        # Only non-finite numbers get here; the common case pays for no tree walk.
        return json.dumps(finite(value), allow_nan=False, separators=(",", ":"), default=_default)


# Redaction ignores case: `redact: [ssn]` hides SSN, Ssn and ssn alike. A field whose name
# differs from the configured one only in case is the same personal data, and clients do not
# agree on case; failing closed (hiding too much) is the safe side.


@functools.lru_cache(maxsize=64)
def _folded(keys: frozenset[str]) -> frozenset[str]:
    return frozenset(k.casefold() for k in keys)


def is_redacted(name: Any, keys: frozenset[str]) -> bool:
    """Whether a field called ``name`` is hidden by ``keys`` (case-insensitive)."""
    return bool(keys) and isinstance(name, str) and name.casefold() in _folded(keys)


def redact(value: Any, keys: frozenset[str]) -> Any:
    """Replace values under ``keys`` (any case) at any depth of nested objects."""
    if isinstance(value, dict):
        return {k: REDACTED if is_redacted(k, keys) else redact(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, keys) for v in value]
    return value


def redact_value(name: str, value: Any, keys: frozenset[str]) -> Any:
    """A field's value as logged: ``REDACTED`` when its name is in ``keys`` (any case), nested keys replaced."""
    if is_redacted(name, keys):
        return REDACTED
    if keys and isinstance(value, (dict, list)):
        return redact(value, keys)
    return value


class RotatingFile:
    """Appends whole lines to ``path``, rotating before a line would push it past ``max_bytes``.

    Not thread-safe by itself: the logger holds its lock around every call.
    """

    def __init__(self, path: str, max_bytes: int, backup_count: int):
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._fh: Any = None
        self._size = 0
        self.progress = 0  # lines of the current write() that reached the file

    def _open(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._fh = open(self.path, "ab")
        self._size = os.fstat(self._fh.fileno()).st_size

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass

    def _rotate(self) -> None:
        self.close()
        if self.backup_count > 0:
            for i in range(self.backup_count - 1, 0, -1):
                older = f"{self.path}.{i}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            # No backups: start the file over rather than grow without bound.
            os.remove(self.path)
        self._open()

    def write(self, lines: list[bytes]) -> None:
        """Write ``lines``, counting them in ``progress``; raises OSError (after a partial write)."""
        self.progress = 0
        if self._fh is None:
            self._open()
        chunk: list[bytes] = []
        chunk_size = 0
        for line in lines:
            if self._size + chunk_size + len(line) > self.max_bytes and self._size + chunk_size > 0:
                self._flush(chunk)
                chunk, chunk_size = [], 0
                self._rotate()
            chunk.append(line)
            chunk_size += len(line)
        self._flush(chunk)

    def _flush(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        data = b"".join(chunk)
        try:
            self._fh.write(data)
            self._fh.flush()
        except (OSError, ValueError):
            self.close()  # reopen on the next batch (the disk may have space again)
            raise
        self._size += len(data)
        self.progress += len(chunk)
