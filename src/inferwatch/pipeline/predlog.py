"""The prediction log: one JSON line per prediction, for audits and for building training sets.

Metadata is written for every prediction; inputs and outputs only for a share (``sample_rate``)
chosen by a keyed hash of the prediction id, with the fields named in ``redact`` (in any case:
``ssn`` hides ``SSN``, at any depth) replaced by ``"[REDACTED]"``. Keying the choice on the id (not on a fresh random draw per line) means a
shadow challenger's line for a prediction is sampled exactly when the champion's line is, so
every sampled answer of one model has the other's beside it to compare. The file
rotates by size like ``logging.handlers.RotatingFileHandler`` (``path.1`` is the newest
backup), so the log never holds more than about ``(backup_count + 1) * max_bytes``.

JSON has no NaN or infinity: such values are written as ``null`` (as JavaScript's
``JSON.stringify`` does), so every line stays valid JSON for strict parsers. A failing disk
never raises: the lines are counted in ``errors`` and monitoring carries on.

A line::

    {"prediction_id": "ab12-0", "timestamp": "2024-05-01T12:00:00.123456Z",
     "timestamp_unix": 1714564800.123456, "model": "churn", "model_version": "v3",
     "endpoint": "/v1/models/{model}:predict", "status": 200, "latency_seconds": 0.012,
     "sampled": true, "inputs": {"age": 41, "email": "[REDACTED]"}, "outputs": {"score": 0.93}}
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import numbers
import threading
from typing import Any

import numpy as np

from inferwatch.config import PredictionLogConfig
from inferwatch.support.jsonlines import REDACTED, RotatingFile, dumps, redact_value

log = logging.getLogger(__name__)

# Fields of every line; keys of ``extra`` with these names are ignored.
RESERVED = frozenset({
    "prediction_id", "timestamp", "timestamp_unix", "model", "model_version", "endpoint", "status",
    "latency_seconds", "sampled", "inputs", "outputs",
})
ROW_FIELDS = frozenset({"outlier", "genai_text"})  # per-row fields monitoring stages may add (``row_extra``)


class PredictionLogger:
    """Writes the prediction log described in the module docstring. Thread-safe.

    ``written`` and ``errors`` count lines written and lines lost (unwritable file,
    unencodable row); their sum is every line asked for. ``rng`` is a numpy Generator that
    draws the sampling hash's key (tests pass a seeded one).
    """

    def __init__(self, config: PredictionLogConfig, *, rng: np.random.Generator | None = None):
        self.config = config
        self.enabled = bool(config.path)
        self.sample_rate = min(max(float(config.sample_rate), 0.0), 1.0)
        self.written = 0
        self.errors = 0
        self._redact_keys = frozenset(config.redact)
        self._rng = rng if rng is not None else np.random.default_rng()
        # per process: which ids are sampled is not guessable; each id hashes from a copy of the keyed state
        self._sample_hash = hashlib.blake2b(digest_size=8, key=self._rng.bytes(16))
        self._lock = threading.Lock()
        self._file = RotatingFile(config.path, config.max_bytes, config.backup_count) if self.enabled else None
        self._failing = False

    def _sample(self, prediction_ids: list[Any]) -> np.ndarray:
        """Whether each row's inputs and outputs are written: a keyed hash of its prediction id,
        as a fraction of 2**64, below ``sample_rate`` (the same id: the same answer)."""
        n = len(prediction_ids)
        if self.sample_rate <= 0.0:
            return np.zeros(n, dtype=bool)
        if self.sample_rate >= 1.0:
            return np.ones(n, dtype=bool)
        base = self._sample_hash
        digests = bytearray()
        for pid in prediction_ids:
            h = base.copy()
            h.update(str(pid).encode("utf-8", "surrogatepass"))
            digests += h.digest()
        threshold = np.uint64(min(int(self.sample_rate * 2**64), 2**64 - 1))
        return np.frombuffer(digests, dtype="<u8") < threshold

    def _columns(self, columns: dict[str, list[Any]], n: int, kind: str) -> dict[str, list[Any]]:
        good = {}
        for name, column in columns.items():
            if len(column) == n:
                good[str(name)] = column
            else:
                log.warning("prediction log: %s %r has %d values for %d rows; left out", kind, name, len(column), n)
        return good

    def _value(self, name: str, value: Any) -> Any:
        return redact_value(name, value, self._redact_keys)

    def log_batch(self, *, model: str, model_version: str, endpoint: str, status: Any, latency_seconds: float | None,
                  prediction_ids: list[str], timestamps: list[float], features: dict[str, list],
                  outputs: dict[str, list], extra: dict | None = None,
                  row_extra: dict[int, dict[str, Any]] | None = None) -> None:
        """Write one line per row. Columns are lists of JSON values, one per row; ``row_extra``
        adds fields (of ``ROW_FIELDS``) to the lines of some rows, e.g. an outlier's explanation."""
        if not self.enabled or self._file is None:
            return
        n = len(prediction_ids)
        if n == 0:
            return
        try:
            lines = self._format(model, model_version, endpoint, status, latency_seconds, prediction_ids,
                                 timestamps, features, outputs, extra, row_extra)
        except Exception:
            log.warning("prediction log: could not format a batch", exc_info=True)
            with self._lock:
                self.errors += n
            return
        lost = n - len(lines)
        with self._lock:
            if self._file is None:  # closed meanwhile (a shutdown whose drain timed out): counted, not silent
                self.errors += n
                return
            try:
                self._file.write(lines)
                if self._failing:
                    log.warning("prediction log: writing to %s again", self.config.path)
                    self._failing = False
            except Exception as exc:
                if not self._failing:  # one warning per outage, not one per batch
                    log.warning("prediction log: cannot write %s: %s", self.config.path, exc)
                    self._failing = True
            written = self._file.progress
            self.written += written
            self.errors += lost + len(lines) - written

    def _format(self, model: str, model_version: str, endpoint: str, status: Any, latency_seconds: float | None,
                prediction_ids: list[str], timestamps: list[float], features: dict[str, list],
                outputs: dict[str, list], extra: dict | None,
                row_extra: dict[int, dict[str, Any]] | None = None) -> list[bytes]:
        n = len(prediction_ids)
        if timestamps is not None and len(timestamps) == n:
            try:
                stamps = np.asarray(timestamps, dtype=float)
            except (TypeError, ValueError):  # e.g. a None among them
                stamps = np.array([t if isinstance(t, numbers.Real) else math.nan for t in timestamps], dtype=float)
        else:
            stamps = np.full(n, datetime.datetime.now(datetime.timezone.utc).timestamp())
        # Beyond year 9999 is not RFC 3339 (and would overflow the conversion): treat as invalid.
        finite = np.isfinite(stamps) & (np.abs(stamps) < 253402300800.0)
        micros = np.where(finite, np.round(stamps * 1e6), 0).astype(np.int64).astype("datetime64[us]")
        rfc3339 = np.datetime_as_string(micros, unit="us", timezone="UTC")
        sampled = self._sample(prediction_ids)
        features = self._columns(features, n, "feature") if sampled.any() else {}
        outputs = self._columns(outputs, n, "output") if sampled.any() else {}

        # Fields shared by the batch are encoded once; each line splices them in.
        head: dict[str, Any] = {k: v for k, v in (extra or {}).items() if k not in RESERVED}
        head = {"model": model, "model_version": model_version, "endpoint": endpoint, "status": status,
                "latency_seconds": latency_seconds, **head}
        common = dumps(head)[1:-1]
        lines: list[bytes] = []
        for i in range(n):
            try:
                stamp = f'"{rfc3339[i]}",' if finite[i] else "null,"
                unix = repr(float(stamps[i])) if finite[i] else "null"
                line = (f'{{"prediction_id":{dumps(str(prediction_ids[i]))},"timestamp":{stamp}'
                        f'"timestamp_unix":{unix},{common}')
                if row_extra and i in row_extra:
                    for key, value in row_extra[i].items():
                        if key in ROW_FIELDS and (key != "genai_text" or sampled[i]):  # text follows the sample
                            line += f',{dumps(key)}:{dumps(value)}'
                if sampled[i]:
                    inputs = {name: self._value(name, column[i]) for name, column in features.items()}
                    preds = {name: self._value(name, column[i]) for name, column in outputs.items()}
                    line += f',"sampled":true,"inputs":{dumps(inputs)},"outputs":{dumps(preds)}}}\n'
                else:
                    line += ',"sampled":false}\n'
                lines.append(line.encode("utf-8"))
            except Exception:
                log.debug("prediction log: could not encode row %d", i, exc_info=True)
        return lines

    def close(self) -> None:
        """Close the file. Every batch is flushed to the OS as it is written, so what was logged
        survives the process; a batch arriving later is counted in ``errors``."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


__all__ = ["PredictionLogger", "REDACTED"]
