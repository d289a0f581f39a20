"""Seldon Core v1 messages (``SeldonMessage`` as JSON) to columns, for requests, responses and feedback.

A message carries its payload in one of (``prediction.proto``'s ``oneof data_oneof``):

* ``{"data": {"names": [...], "ndarray": [[...], ...]}}``: rows, positional, named by ``names``;
* ``{"data": {"names": [...], "tensor": {"shape": [N, F], "values": [...]}}}``: row-major values;
* ``{"jsonData": ...}``: any JSON; decoded like records when it is an object or a list of objects;
* ``{"strData": "..."}``, ``{"binData": "<base64>"}`` and ``data.tftensor``: no tabular features,
  so a ``PayloadError`` (counted), never one silent feature.

``meta`` (puid, tags, routing, metrics) and ``status`` sit beside the payload. A response whose
``status.status`` is ``FAILURE`` is an error, not predictions. A feedback message
(``{"request", "response", "truth", "reward"}``) names its prediction by ``response.meta.puid``.
"""

from __future__ import annotations

from math import prod
from typing import Any

from .columns import decode_rows
from .events import PayloadError

__all__ = ["is_seldon_message", "message_columns", "feedback_puid", "MESSAGE_KEYS"]

# The top-level fields of SeldonMessage's JSON mapping (protobuf's camelCase names).
MESSAGE_KEYS = frozenset({"status", "meta", "data", "binData", "strData", "jsonData", "customData"})
_PAYLOAD_KEYS = ("data", "jsonData", "strData", "binData", "customData")
_DATA_KINDS = frozenset({"ndarray", "tensor", "tftensor"})


def is_seldon_message(obj: Any) -> bool:
    """A SeldonMessage: only its own fields, with ``data`` holding ndarray/tensor or a
    ``jsonData``/``strData``/``binData`` payload (what auto-detection keys on)."""
    if type(obj) is not dict or not obj or not set(obj) <= MESSAGE_KEYS:
        return False
    data = obj.get("data")
    if type(data) is dict:
        return bool(set(data) & _DATA_KINDS)
    return "data" not in obj and any(key in obj for key in ("jsonData", "strData", "binData"))


def _names(data: dict[str, Any], fallback: list[str] | None) -> list[str] | None:
    names = data.get("names")
    if names is None or names == []:
        return fallback
    if type(names) is not list:
        raise PayloadError("unknown_format", "Seldon 'data.names' must be a list of strings")
    return [str(name) for name in names]


def _tensor(tensor: Any, names: list[str] | None, prefix: str) -> tuple[int, dict[str, list[Any]]]:
    if type(tensor) is not dict:
        raise PayloadError("unknown_format", "Seldon 'data.tensor' must be an object with shape and values")
    shape, values = tensor.get("shape"), tensor.get("values")
    if type(shape) is not list or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise PayloadError("shape_mismatch", f"Seldon 'data.tensor.shape' is invalid: {shape!r}")
    if type(values) is not list:
        raise PayloadError("missing_field", "Seldon 'data.tensor' has no 'values' list")
    rows, width = shape[0], prod(shape[1:])
    if len(values) != rows * width:
        raise PayloadError("shape_mismatch", f"Seldon tensor has {len(values)} values for shape {shape}")
    given = list(names or [])[:width]
    col_names = given + [f"{prefix}{j}" for j in range(len(given), width)]
    if width == 1 and not given:
        col_names = [prefix.rstrip("_")]
    # Row-major: column j is every width-th value from j (a C-level slice, like a reshape).
    return rows, {name: values[j::width] for j, name in enumerate(col_names)}


def message_columns(obj: Any, names: list[str] | None, *, prefix: str = "f") -> tuple[int, dict[str, list[Any]]]:
    """A SeldonMessage to ``(rows, columns)``; ``names`` (``payload.feature_names``) are used when
    the message has no ``data.names``. ``prefix`` names unnamed columns (``f`` for features,
    ``prediction_`` for outputs). Raises ``PayloadError`` for what carries no tabular payload."""
    if type(obj) is not dict:
        raise PayloadError("unknown_format", "a Seldon message must be an object")
    status = obj.get("status")
    if type(status) is dict and str(status.get("status", "")).upper() == "FAILURE":
        raise PayloadError("unknown_format", f"a Seldon failure: {status.get('info') or status.get('reason') or ''}")
    data = obj.get("data")
    if type(data) is dict:
        names = _names(data, names)
        if "ndarray" in data:
            ndarray = data["ndarray"]
            if type(ndarray) is not list:
                raise PayloadError("unknown_format", "Seldon 'data.ndarray' must be a list of rows")
            if prefix != "f" and names is None and ndarray and not isinstance(ndarray[0], (list, dict)):
                return len(ndarray), {"prediction": list(ndarray)}  # one prediction per row
            return decode_rows(ndarray, names, flat_list_is_row=False, prefix=prefix)
        if "tensor" in data:
            return _tensor(data["tensor"], names, prefix)
        if "tftensor" in data:
            raise PayloadError("unknown_format", "Seldon 'data.tftensor' (a TensorProto) is not decoded; "
                                                 "send ndarray or tensor")
        raise PayloadError("missing_field", "Seldon 'data' has no ndarray or tensor")
    if "jsonData" in obj:
        value = obj["jsonData"]
        if type(value) is dict or (type(value) is list and value and all(type(v) is dict for v in value)):
            return decode_rows(value, names, flat_list_is_row=True, prefix=prefix)
        raise PayloadError("unknown_format", "Seldon 'jsonData' is not an object or a list of objects")
    for key in ("strData", "binData", "customData"):
        if key in obj:
            raise PayloadError("unknown_format", f"Seldon '{key}' carries no tabular features")
    raise PayloadError("missing_field", f"a Seldon message needs one of {', '.join(_PAYLOAD_KEYS)}")


def feedback_puid(feedback: dict[str, Any]) -> str | None:
    """The prediction a Seldon ``Feedback`` answers: ``response.meta.puid``, when the client kept it."""
    response = feedback.get("response")
    meta = response.get("meta") if type(response) is dict else None
    puid = meta.get("puid") if type(meta) is dict else None
    return str(puid) if puid not in (None, "") else None
