"""Decode model-server request/response bodies into an ``EventBatch``.

This runs for every proxied request in the background worker, so values are moved between
lists by C-level operations (``zip``, slicing, ``chain``) wherever the layout allows, and
Python-level work is kept to one check per row rather than one per value. The bytes become
JSON in ``bodies.load_json`` (size cap, media type, decompression, UTF-8); this module maps
that JSON to columns.

Codec detection (``detect_codec``) looks at the request only, first match wins:

1. ``{"inputs": [{"name": ..., "shape"/"datatype"/"data": ...}, ...]}``  -> ``open_inference_v2``
   ``{"data": {"names"?, "ndarray"/"tensor"}, "meta"?}``, ``{"jsonData"|"strData"|"binData": ...}``
   (only SeldonMessage fields)                                           -> ``seldon_v1`` (``seldon``)
2. ``{"dataframe_split": ...}``, ``{"dataframe_records": ...}`` or the MLflow 1.x
   pandas-split object ``{"columns": [...], "data": [[...]]}``         -> ``mlflow``
3. ``{"instances": ...}`` or any other ``{"inputs": ...}``               -> ``kserve_v1``
   (MLflow's own ``instances``/``inputs`` decode identically, so that tie is harmless)
4. any other object or list                                             -> ``records``

Row conventions:

* ``instances`` / ``inputs`` / ``dataframe_*``: a list is a list of rows (KServe: ``[1, 2]`` is
  two instances). A row is an object (named features), a list (positional: ``feature_names``,
  else ``f0, f1, ...``) or a scalar (one positional feature).
* ``records`` and values located by ``input_path``: an object is one row; a list of objects or
  of lists is a list of rows; a flat list of scalars is *one* positional row (a feature vector).
* Columnar inputs (TF Serving ``{"inputs": {name: [...]}}``) have the batch dimension first.
* A column whose every value is a flat list of one length is expanded into ``<name>_<k>``
  (class probabilities, small vectors): drift metrics need scalars.

An OIP v2 output tensor's ``datatype`` is a hint for the output monitor (``batch.output_kinds``):
INT/UINT/BOOL/BYTES outputs are classes; ``predictions.outputs`` still decides when it names one.

Responses are decoded by shape: OIP v2 ``outputs`` tensors, ``predictions``, TF Serving
``outputs``, or a bare list/scalar (one prediction per row). A scalar prediction is the output
``prediction``, a list ``prediction_0, prediction_1, ...``, an object one output per key. With
``codec="auto"`` or ``"records"`` a bare object is one row of outputs (or columns of N values);
with the ``records`` codec a flat list of scalars answering one row is that row's vector.
"""

from __future__ import annotations

import re
from itertools import chain
from math import prod
from typing import Any

from inferwatch.config import CODECS
from .bodies import decompress, load_json, media_type, parse_json
from .columns import CONTAINER_TYPES as _CONTAINER_TYPES, CONTAINERS as _CONTAINERS, DICT_TYPES as _DICT
from .columns import LIST_TYPES as _LIST, columnar as _columnar, decode_rows as _rows, default_names as _names
from .columns import expand_vectors as _expand_vectors, positional as _positional
from .events import EventBatch, PayloadError, rows_to_columns
from . import seldon

# The body helpers live in ``bodies``; they stay importable from here.
__all__ = ["decode_exchange", "detect_codec", "v2_request_id", "load_json", "parse_json", "decompress", "media_type"]

# OIP v2 datatypes whose values are classes, not measurements (the rest: FP16/32/64, BF16).
CLASS_DATATYPES = frozenset({"BOOL", "BYTES", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                             "UINT64"})

# --- Open Inference Protocol v2 tensors ----------------------------------------------------


def _flatten(data: Any) -> list[Any]:
    """Nested (row-major) tensor data to a flat list; one ``chain`` pass per nesting level."""
    if type(data) is not list:
        return [data]
    while data and type(data[0]) is list:
        if set(map(type, data)) != _LIST:
            raise PayloadError("shape_mismatch", "ragged tensor data")
        data = list(chain.from_iterable(data))
    return data


def _looks_like_tensors(value: Any) -> bool:
    if type(value) is not list or not value:
        return False
    first = value[0]
    return type(first) is dict and "name" in first and ("datatype" in first or "shape" in first or "data" in first)


def _tensors(tensors: Any, names: list[str] | None,
             kinds: dict[str, str] | None = None) -> tuple[int, dict[str, list[Any]]]:
    """OIP v2 tensors to ``(n, columns)``: the first dimension is the row, the rest are flattened.

    A lone [N, F] tensor gives F columns named by ``names`` or ``<tensor>_<j>``; each [N] or
    [N, 1] tensor gives one column named after the tensor. Flat row-major data is split into
    columns by slicing (``flat[j::F]``), which copies in C like a numpy reshape would, and
    keeps the JSON values (ints stay ints, BYTES stay strings). ``kinds``, when given, gets
    ``"class"`` for each column of a class datatype (``CLASS_DATATYPES``).
    """
    if type(tensors) is not list:
        raise PayloadError("unknown_format", "tensors must be a list")
    n: int | None = None
    columns: dict[str, list[Any]] = {}
    single = len(tensors) == 1
    for tensor in tensors:
        if type(tensor) is not dict:
            raise PayloadError("unknown_format", "a tensor must be an object")
        for key in ("name", "shape", "data"):
            if key not in tensor:
                raise PayloadError("missing_field", f"tensor {tensor.get('name', '?')!r} has no {key!r}")
        name, shape = str(tensor["name"]), tensor["shape"]
        if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
            raise PayloadError("shape_mismatch", f"tensor {name!r} has an invalid shape {shape!r}")
        flat = _flatten(tensor["data"])
        rows = shape[0] if shape else 1
        width = prod(shape[1:])
        if len(flat) != rows * width:
            raise PayloadError(
                "shape_mismatch", f"tensor {name!r} has {len(flat)} values for shape {shape}"
            )
        if n is None:
            n = rows
        elif rows != n:
            raise PayloadError("shape_mismatch", f"tensor {name!r} has {rows} rows, others {n}")
        if single and names:
            col_names = _names(width, names, f"{name}_")
        elif width == 1:
            col_names = [name]
        else:
            col_names = [f"{name}_{j}" for j in range(width)]
        if width == 1:
            columns[col_names[0]] = flat
        else:
            for j, col_name in enumerate(col_names):
                columns[col_name] = flat[j::width]
        if kinds is not None and str(tensor.get("datatype", "")).upper() in CLASS_DATATYPES:
            kinds.update(dict.fromkeys(col_names, "class"))
    return (n or 0), columns


# --- requests ------------------------------------------------------------------------------


def detect_codec(request_obj: Any) -> str:
    """The codec for a parsed request body (order in the module docstring).

    Raises ``PayloadError("unknown_format")`` when the body is neither an object nor a list.
    """
    if isinstance(request_obj, dict):
        inputs = request_obj.get("inputs")
        if _looks_like_tensors(inputs):
            return "open_inference_v2"
        if seldon.is_seldon_message(request_obj):
            return "seldon_v1"
        if "dataframe_split" in request_obj or "dataframe_records" in request_obj:
            return "mlflow"
        if "columns" in request_obj and "data" in request_obj and set(request_obj) <= {"columns", "data", "index"}:
            return "mlflow"
        if "instances" in request_obj or "inputs" in request_obj:
            return "kserve_v1"
        return "records"
    if isinstance(request_obj, list):
        return "records"
    raise PayloadError(
        "unknown_format", f"a request body must be an object or a list, not {type(request_obj).__name__}"
    )


def _kserve_request(obj: Any, names: list[str] | None) -> tuple[int, dict[str, list[Any]]]:
    if type(obj) is not dict:
        raise PayloadError("unknown_format", "expected an object with 'instances' or 'inputs'")
    if "instances" in obj:
        instances = obj["instances"]
        if type(instances) is not list:
            raise PayloadError("unknown_format", "'instances' must be a list")
        return _rows(instances, names, flat_list_is_row=False)
    if "inputs" in obj:
        inputs = obj["inputs"]
        if type(inputs) is dict:
            return _columnar(inputs)
        if type(inputs) is list:
            return _rows(inputs, names, flat_list_is_row=False)
        return 1, {_names(1, names, "f")[0]: [inputs]}
    raise PayloadError("missing_field", "expected 'instances' or 'inputs'")


def _split(split: Any, names: list[str] | None) -> tuple[int, dict[str, list[Any]]]:
    if type(split) is not dict:
        raise PayloadError("unknown_format", "'dataframe_split' must be an object")
    if "data" not in split:
        raise PayloadError("missing_field", "'dataframe_split' has no 'data'")
    data = split["data"]
    if type(data) is not list:
        raise PayloadError("unknown_format", "'dataframe_split.data' must be a list of rows")
    if not data:
        return 0, {}
    columns = split.get("columns")
    if columns is not None:
        names = [str(c) for c in columns]
    return len(data), _expand_vectors(_positional(data, names))


def _mlflow_request(obj: Any, names: list[str] | None) -> tuple[int, dict[str, list[Any]]]:
    if type(obj) is not dict:
        raise PayloadError("unknown_format", "expected an MLflow scoring object")
    if "dataframe_split" in obj:
        return _split(obj["dataframe_split"], names)
    if "dataframe_records" in obj:
        records = obj["dataframe_records"]
        if type(records) is not list:
            raise PayloadError("unknown_format", "'dataframe_records' must be a list")
        return _rows(records, names, flat_list_is_row=False)
    if "columns" in obj and "data" in obj:
        return _split(obj, names)
    if "instances" in obj or "inputs" in obj:
        return _kserve_request(obj, names)
    raise PayloadError("missing_field", "expected dataframe_split, dataframe_records, instances or inputs")


def _locate(obj: Any, path: str) -> Any:
    """Follow a dotted path; integer segments index lists."""
    node = obj
    for segment in path.split("."):
        if type(node) is dict:
            if segment not in node:
                raise PayloadError("missing_field", f"{path!r}: no key {segment!r}")
            node = node[segment]
        elif type(node) is list:
            try:
                node = node[int(segment)]
            except (ValueError, IndexError):
                raise PayloadError("missing_field", f"{path!r}: no index {segment!r}") from None
        else:
            raise PayloadError("missing_field", f"{path!r}: cannot descend into {type(node).__name__}")
    return node


def _decode_request(
    obj: Any, codec: str, names: list[str] | None, input_path: str
) -> tuple[int, dict[str, list[Any]]]:
    if input_path:
        return _rows(_locate(obj, input_path), names, flat_list_is_row=True)
    if codec == "open_inference_v2":
        if type(obj) is not dict or "inputs" not in obj:
            raise PayloadError("missing_field", "expected 'inputs' tensors")
        return _tensors(obj["inputs"], names)
    if codec == "mlflow":
        return _mlflow_request(obj, names)
    if codec == "seldon_v1":
        return seldon.message_columns(obj, names)
    if codec == "kserve_v1":
        return _kserve_request(obj, names)
    if not isinstance(obj, _CONTAINERS):
        raise PayloadError("unknown_format", "a records body must be an object or a list")
    return _rows(obj, names, flat_list_is_row=True)


# --- responses -----------------------------------------------------------------------------


def _object_outputs(obj: dict[str, Any], n: int) -> dict[str, list[Any]]:
    """A bare object: one row of outputs when N is 1, else columns of N values."""
    if n == 1:
        return _expand_vectors({key: [value] for key, value in obj.items()})
    return _columnar(obj, n)[1]


def _predictions(preds: Any, n: int, *, lenient: bool, columnar: bool) -> dict[str, list[Any]]:
    """Per-row predictions (a list of N), a columnar object, or one scalar, to output columns."""
    if type(preds) is dict:
        return _columnar(preds, n)[1] if columnar else _object_outputs(preds, n)
    if type(preds) is not list:
        preds = [preds]
    elif lenient and n == 1 and len(preds) != 1 and not set(map(type, preds)) & _CONTAINER_TYPES:
        # One row answered by a flat list: that row's vector (e.g. class probabilities).
        preds = [preds]
    if len(preds) != n:
        raise PayloadError("row_count_mismatch", f"{len(preds)} predictions for {n} rows")
    if not preds:
        return {}
    types = set(map(type, preds))
    if dict in types:
        if types != _DICT:
            raise PayloadError("unknown_format", "predictions mix objects and non-objects")
        return _expand_vectors(rows_to_columns(preds))
    if list not in types:
        return {"prediction": preds}
    return _expand_vectors(_positional(preds, None, "prediction_"))


def _decode_response(
    obj: Any, n: int, codec: str, auto: bool, output_path: str, kinds: dict[str, str]
) -> tuple[dict[str, list[Any]], str | None]:
    """Output columns (N values each) and the model version the response names, if any; ``kinds``
    gets the class hints of OIP v2 output datatypes."""
    version = None
    if type(obj) is dict and obj.get("model_version") not in (None, ""):
        version = str(obj["model_version"])
    if output_path:
        return _predictions(_locate(obj, output_path), n, lenient=True, columnar=False), version
    if codec == "seldon_v1":
        rows, columns = seldon.message_columns(obj, None, prefix="prediction_")
        if rows != n:
            raise PayloadError("row_count_mismatch", f"{rows} Seldon output rows for {n} input rows")
        return columns, None
    if type(obj) is dict:
        outputs = obj.get("outputs")
        if codec == "open_inference_v2" or _looks_like_tensors(outputs):
            if "outputs" not in obj:
                raise PayloadError("missing_field", "expected 'outputs' tensors")
            rows, columns = _tensors(outputs, None, kinds)
            if rows != n:
                raise PayloadError("row_count_mismatch", f"{rows} output rows for {n} input rows")
            return columns, version
        if "predictions" in obj:
            return _predictions(obj["predictions"], n, lenient=False, columnar=True), version
        if "outputs" in obj:
            return _predictions(outputs, n, lenient=False, columnar=True), version
        if not (auto or codec == "records"):
            raise PayloadError("missing_field", "expected 'predictions' or 'outputs'")
        if len(obj) == 1 and "error" in obj:
            raise PayloadError("unknown_format", "an error response")
        # A plain object has no protocol version field: model_version is an output here.
        return _object_outputs(obj, n), None
    if codec == "open_inference_v2":
        raise PayloadError("unknown_format", "expected an object with 'outputs' tensors")
    return _predictions(obj, n, lenient=codec == "records", columnar=False), None


# --- entry point ---------------------------------------------------------------------------


def decode_exchange(
    request_body: bytes,
    response_body: bytes | None,
    *,
    request_content_type: str | None = None,
    response_content_type: str | None = None,
    request_content_encoding: str | None = None,
    response_content_encoding: str | None = None,
    codec: str = "auto",
    feature_names: list[str] | None = None,
    input_path: str = "",
    output_path: str = "",
    max_bytes: int = 8 * 1024 * 1024,
) -> EventBatch:
    """Decode one request (and its response) into N events.

    An undecodable request raises ``PayloadError``. An undecodable response, or one with a
    different row count, leaves the features in place with no outputs and its reason in
    ``batch.errors``. ``response_body=None`` means no response to decode (no error).
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r} (expected one of {', '.join(CODECS)})")
    request = load_json(request_body, request_content_type, request_content_encoding, max_bytes)
    resolved = codec
    if codec == "auto":
        resolved = detect_codec(request) if not input_path or isinstance(request, _CONTAINERS) else "records"
    names = feature_names or None
    n, features = _decode_request(request, resolved, names, input_path)
    batch = EventBatch(n=n, features=features)
    if response_body is None or n == 0:
        return batch
    try:
        response = load_json(response_body, response_content_type, response_content_encoding, max_bytes)
        kinds: dict[str, str] = {}
        outputs, version = _decode_response(response, n, resolved, codec == "auto", output_path, kinds)
        return EventBatch(n=n, features=features, outputs=outputs, model_version=version, output_kinds=kinds)
    except PayloadError as exc:
        batch.errors.append(exc.reason)
        return batch


# --- the OIP v2 request id, on the request path ---------------------------------------------

# A top-level "id" among the fields before the first nested value ('{' or '['), where the
# Open Inference clients write it (tritonclient, KServe's InferRequest, MLServer's
# InferenceRequest all put it first). Reading only that prefix keeps the request path
# O(prefix), never a parse of the tensors.
_ID_FIELD = re.compile(rb'[{,]\s*"id"\s*:\s*"((?:[^"\\\x00-\x1f]){1,256})"')
_ID_SCAN_BYTES = 4096


def v2_request_id(body: bytes | None) -> str | None:
    """The ``id`` of an Open Inference v2 JSON request, when it is a top-level field written
    before the tensors (``None`` otherwise: compressed, not JSON, no id, or after ``inputs``)."""
    if not body:
        return None
    head = body[:_ID_SCAN_BYTES].lstrip()
    if not head.startswith(b"{"):
        return None
    nested = [i for i in (head.find(b"{", 1), head.find(b"[", 1)) if i > 0]
    prefix = head[:min(nested)] if nested else head
    match = _ID_FIELD.search(prefix)
    if match is None:
        return None
    try:
        return match.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None
