"""Codecs against real payload shapes from the KServe, TF Serving, OIP v2 and MLflow docs."""

from __future__ import annotations

import gzip
import json
import math
import zlib

import pytest
from conftest import python_lines

from inferwatch.ingest.bodies import decompress, load_json
from inferwatch.ingest.codecs import decode_exchange, detect_codec
from inferwatch.ingest.events import PayloadError


def j(obj) -> bytes:
    return json.dumps(obj).encode()


def reason(excinfo) -> str:
    return excinfo.value.reason


# --- KServe v1 / TF Serving ----------------------------------------------------------------


def test_kserve_v1_iris_positional_rows():
    req = j({"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]})
    batch = decode_exchange(req, j({"predictions": [1, 1]}))
    assert batch.n == 2
    assert batch.features == {"f0": [6.8, 6.0], "f1": [2.8, 3.4], "f2": [4.8, 4.5], "f3": [1.4, 1.6]}
    assert batch.outputs == {"prediction": [1, 1]}
    assert batch.errors == []
    assert batch.source == "proxy"


def test_kserve_v1_feature_names_and_probabilities():
    req = j({"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]})
    resp = j({"predictions": [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]})
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    batch = decode_exchange(req, resp, codec="kserve_v1", feature_names=names)
    assert list(batch.features) == names
    assert batch.features["petal_width"] == [1.4, 1.6]
    assert batch.outputs == {"prediction_0": [0.1, 0.6], "prediction_1": [0.2, 0.3], "prediction_2": [0.7, 0.1]}


def test_kserve_v1_short_feature_names_are_padded():
    batch = decode_exchange(j({"instances": [[1, 2, 3]]}), None, feature_names=["a"])
    assert batch.features == {"a": [1], "f1": [2], "f2": [3]}


def test_kserve_v1_object_rows_and_object_predictions():
    req = j({"instances": [{"age": 31, "city": "SF"}, {"age": 45, "city": None}]})
    resp = j({"predictions": [{"label": "yes", "score": 0.9}, {"label": "no", "score": 0.2}]})
    batch = decode_exchange(req, resp)
    assert batch.features == {"age": [31, 45], "city": ["SF", None]}
    assert batch.outputs == {"label": ["yes", "no"], "score": [0.9, 0.2]}


def test_kserve_v1_ragged_object_rows_fill_none():
    batch = decode_exchange(j({"instances": [{"a": 1}, {"b": 2}]}), j({"predictions": [0, 1]}))
    assert batch.features == {"a": [1, None], "b": [None, 2]}


def test_kserve_v1_scalar_instances_are_rows():
    batch = decode_exchange(j({"instances": [1.5, 2.5, 3.5]}), j({"predictions": [0, 1, 0]}))
    assert batch.n == 3
    assert batch.features == {"f0": [1.5, 2.5, 3.5]}


def test_tf_serving_row_format():
    # The TF Serving REST API's row ("instances") example, with the signature name.
    req = j(
        {
            "signature_name": "serving_default",
            "instances": [
                {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
                {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]},
            ],
        }
    )
    resp = j({"predictions": [{"scores": [0.1, 0.9], "classes": 1}, {"scores": [0.7, 0.3], "classes": 0}]})
    batch = decode_exchange(req, resp)
    assert batch.n == 2
    assert batch.features["tag"] == ["foo", "bar"]
    assert batch.features["signal_0"] == [1, 3]
    assert batch.features["signal_4"] == [5, 5]
    # Deeper tensors are kept as values, not expanded.
    assert batch.features["sensor"] == [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]
    assert batch.outputs == {"scores_0": [0.1, 0.7], "scores_1": [0.9, 0.3], "classes": [1, 0]}


def test_tf_serving_columnar_format():
    req = j(
        {
            "inputs": {
                "tag": ["foo", "bar"],
                "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
                "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]],
            }
        }
    )
    resp = j({"outputs": {"scores": [[0.1, 0.9], [0.7, 0.3]], "classes": [1, 0]}})
    assert detect_codec(json.loads(req)) == "kserve_v1"
    batch = decode_exchange(req, resp)
    assert batch.n == 2
    assert batch.features["tag"] == ["foo", "bar"]
    assert batch.features["signal_1"] == [2, 4]
    assert batch.outputs == {"scores_0": [0.1, 0.7], "scores_1": [0.9, 0.3], "classes": [1, 0]}


def test_tf_serving_columnar_single_input_list_and_outputs_list():
    batch = decode_exchange(j({"inputs": [[1.0, 2.0], [3.0, 4.0]]}), j({"outputs": [[0.5], [0.25]]}))
    assert batch.features == {"f0": [1.0, 3.0], "f1": [2.0, 4.0]}
    assert batch.outputs == {"prediction_0": [0.5, 0.25]}


def test_tf_serving_columnar_unequal_lengths_is_shape_mismatch():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(j({"inputs": {"a": [1, 2], "b": [1]}}), None)
    assert reason(exc) == "shape_mismatch"


def test_tf_columnar_response_with_wrong_count():
    batch = decode_exchange(j({"instances": [[1], [2]]}), j({"outputs": {"scores": [0.1, 0.2, 0.3]}}))
    assert batch.outputs == {}
    assert batch.errors == ["row_count_mismatch"]


# --- Open Inference Protocol v2 ------------------------------------------------------------


def test_v2_single_fp32_tensor_flat_data():
    req = j(
        {
            "id": "42",
            "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                        "data": [6.8, 2.8, 4.8, 1.4, 6.0, 3.4, 4.5, 1.6]}],
        }
    )
    resp = j(
        {
            "model_name": "sklearn-v2-iris",
            "model_version": "v3",
            "id": "42",
            "parameters": None,
            "outputs": [{"name": "output-0", "shape": [2], "datatype": "INT32", "parameters": None, "data": [1, 2]}],
        }
    )
    assert detect_codec(json.loads(req)) == "open_inference_v2"
    batch = decode_exchange(req, resp)
    assert batch.n == 2
    assert batch.features == {
        "input-0_0": [6.8, 6.0], "input-0_1": [2.8, 3.4], "input-0_2": [4.8, 4.5], "input-0_3": [1.4, 1.6],
    }
    assert batch.outputs == {"output-0": [1, 2]}
    assert batch.model_version == "v3"


def test_v2_nested_data_and_feature_names():
    req = j({"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                         "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]})
    resp = j({"model_name": "iris", "model_version": None,
              "outputs": [{"name": "probs", "shape": [2, 3], "datatype": "FP32",
                           "data": [[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]]}]})
    batch = decode_exchange(req, resp, codec="open_inference_v2", feature_names=["sl", "sw", "pl", "pw"])
    assert batch.features == {"sl": [6.8, 6.0], "sw": [2.8, 3.4], "pl": [4.8, 4.5], "pw": [1.4, 1.6]}
    assert batch.outputs == {"probs_0": [0.1, 0.5], "probs_1": [0.2, 0.4], "probs_2": [0.7, 0.1]}
    assert batch.model_version is None


def test_v2_several_named_tensors_with_bytes():
    # MLServer's pandas codec: one tensor per column, strings as BYTES.
    req = j(
        {
            "parameters": {"content_type": "pd"},
            "inputs": [
                {"name": "age", "shape": [3], "datatype": "INT32", "data": [25, 30, 41]},
                {"name": "income", "shape": [3, 1], "datatype": "FP64", "data": [[1.5], [2.5], [3.5]]},
                {"name": "city", "shape": [3, 1], "datatype": "BYTES", "data": ["SF", "NY", "LA"],
                 "parameters": {"content_type": "str"}},
            ],
        }
    )
    resp = j({"model_name": "m", "outputs": [{"name": "predict", "shape": [3, 1], "datatype": "INT64",
                                               "data": [0, 1, 1]}]})
    batch = decode_exchange(req, resp)
    assert batch.n == 3
    assert batch.features == {"age": [25, 30, 41], "income": [1.5, 2.5, 3.5], "city": ["SF", "NY", "LA"]}
    assert batch.outputs == {"predict": [0, 1, 1]}


def test_v2_three_dimensional_tensor_flattens_per_row():
    data = list(range(2 * 2 * 3))
    req = j({"inputs": [{"name": "img", "shape": [2, 2, 3], "datatype": "INT32", "data": data}]})
    batch = decode_exchange(req, None)
    assert batch.n == 2
    assert len(batch.features) == 6
    assert batch.features["img_0"] == [0, 6]
    assert batch.features["img_5"] == [5, 11]


def test_v2_shape_mismatch():
    req = j({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]})
    with pytest.raises(PayloadError) as exc:
        decode_exchange(req, None)
    assert reason(exc) == "shape_mismatch"


def test_v2_tensors_with_different_row_counts():
    req = j({"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]},
                        {"name": "b", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]})
    with pytest.raises(PayloadError) as exc:
        decode_exchange(req, None)
    assert reason(exc) == "shape_mismatch"


def test_v2_missing_data_is_missing_field():
    req = j({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32"}]})
    with pytest.raises(PayloadError) as exc:
        decode_exchange(req, None)
    assert reason(exc) == "missing_field"


def test_v2_codec_on_a_body_without_inputs():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(j({"instances": [[1]]}), None, codec="open_inference_v2")
    assert reason(exc) == "missing_field"


def test_v2_response_shape_mismatch_is_kept_as_error():
    req = j({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})
    resp = j({"outputs": [{"name": "y", "shape": [1, 2], "datatype": "FP32", "data": [1]}]})
    batch = decode_exchange(req, resp)
    assert batch.features == {"x_0": [1], "x_1": [2]}
    assert batch.outputs == {}
    assert batch.errors == ["shape_mismatch"]


def test_v2_response_row_count_mismatch():
    req = j({"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}]})
    resp = j({"outputs": [{"name": "y", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]})
    batch = decode_exchange(req, resp)
    assert batch.n == 2 and batch.features == {"x": [1, 2]}
    assert batch.outputs == {}
    assert batch.errors == ["row_count_mismatch"]


# --- MLflow --------------------------------------------------------------------------------


def test_mlflow_dataframe_split():
    req = j({"dataframe_split": {"index": [0, 1], "columns": ["a", "b", "c"], "data": [[1, 2, 3], [4, 5, 6]]}})
    batch = decode_exchange(req, j({"predictions": [0.1, 0.2]}))
    assert detect_codec(json.loads(req)) == "mlflow"
    assert batch.features == {"a": [1, 4], "b": [2, 5], "c": [3, 6]}
    assert batch.outputs == {"prediction": [0.1, 0.2]}


def test_mlflow_dataframe_records_and_bare_list_response():
    req = j({"dataframe_records": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}, {"a": 3, "b": "z"}]})
    batch = decode_exchange(req, j([0, 1, 1]), codec="mlflow")
    assert batch.features == {"a": [1, 2, 3], "b": ["x", "y", "z"]}
    assert batch.outputs == {"prediction": [0, 1, 1]}


def test_mlflow_instances_and_inputs():
    inst = decode_exchange(j({"instances": [{"a": "s1", "b": 1}, {"a": "s2", "b": 2}]}),
                           j({"predictions": [1, 0]}), codec="mlflow")
    assert inst.features == {"a": ["s1", "s2"], "b": [1, 2]}
    cols = decode_exchange(j({"inputs": {"a": ["s1", "s2"], "b": [1, 2]}}), j({"predictions": [1, 0]}), codec="mlflow")
    assert cols.features == inst.features
    assert cols.outputs == {"prediction": [1, 0]}


def test_mlflow_dataframe_records_response_objects():
    # A pyfunc returning a DataFrame answers with records.
    req = j({"dataframe_split": {"columns": ["x"], "data": [[1], [2]]}})
    resp = j({"predictions": [{"label": "a", "p": 0.9}, {"label": "b", "p": 0.6}]})
    batch = decode_exchange(req, resp)
    assert batch.features == {"x": [1, 2]}
    assert batch.outputs == {"label": ["a", "b"], "p": [0.9, 0.6]}


def test_mlflow_1x_pandas_split_without_wrapper():
    req = j({"columns": ["a", "b"], "data": [[1, 2], [3, 4]]})
    assert detect_codec(json.loads(req)) == "mlflow"
    assert decode_exchange(req, None).features == {"a": [1, 3], "b": [2, 4]}


def test_mlflow_codec_missing_field():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(j({"rows": [1]}), None, codec="mlflow")
    assert reason(exc) == "missing_field"


def test_mlflow_split_without_data():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(j({"dataframe_split": {"columns": ["a"]}}), None)
    assert reason(exc) == "missing_field"


# --- records -------------------------------------------------------------------------------


def test_records_single_object_and_scalar_response():
    batch = decode_exchange(j({"age": 31, "income": 52000.0}), b"0.93")
    assert detect_codec({"age": 31}) == "records"
    assert batch.n == 1
    assert batch.features == {"age": [31], "income": [52000.0]}
    assert batch.outputs == {"prediction": [0.93]}


def test_records_list_of_objects_with_predictions():
    req = j([{"age": 31}, {"age": 45}, {"age": 52}])
    batch = decode_exchange(req, j({"predictions": [0, 1, 1]}), codec="records")
    assert batch.n == 3
    assert batch.outputs == {"prediction": [0, 1, 1]}


def test_records_object_response_is_one_row():
    batch = decode_exchange(j({"age": 31}), j({"label": "approve", "probs": [0.2, 0.8]}), codec="records")
    assert batch.outputs == {"label": ["approve"], "probs_0": [0.2], "probs_1": [0.8]}


def test_records_object_response_columnar_for_many_rows():
    batch = decode_exchange(j([{"a": 1}, {"a": 2}]), j({"label": ["x", "y"], "score": [0.1, 0.2]}))
    assert batch.outputs == {"label": ["x", "y"], "score": [0.1, 0.2]}


def test_records_flat_list_is_one_row_and_its_vector_response():
    batch = decode_exchange(j([5.1, 3.5, 1.4, 0.2]), j([0.1, 0.9]), feature_names=["a", "b", "c", "d"])
    assert batch.n == 1
    assert batch.features == {"a": [5.1], "b": [3.5], "c": [1.4], "d": [0.2]}
    assert batch.outputs == {"prediction_0": [0.1], "prediction_1": [0.9]}


def test_records_list_of_lists():
    batch = decode_exchange(j([[1, 2], [3, 4]]), j([0, 1]))
    assert batch.features == {"f0": [1, 3], "f1": [2, 4]}
    assert batch.outputs == {"prediction": [0, 1]}


def test_records_ragged_positional_rows():
    batch = decode_exchange(j([[1, 2, 3], [4]]), None)
    assert batch.features == {"f0": [1, 4], "f1": [2, None], "f2": [3, None]}


def test_records_error_response_is_not_an_output():
    batch = decode_exchange(j({"age": 1}), j({"error": "model not loaded"}))
    assert batch.outputs == {}
    assert batch.errors == ["unknown_format"]


def test_records_mixed_rows_is_unknown_format():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(j([{"a": 1}, [1, 2]]), None)
    assert reason(exc) == "unknown_format"


def test_scalar_request_is_unknown_format():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(b"42", None)
    assert reason(exc) == "unknown_format"
    with pytest.raises(PayloadError):
        detect_codec("text")


# --- paths ---------------------------------------------------------------------------------


def test_input_and_output_paths():
    req = j({"meta": {"user": "u1"}, "data": {"rows": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}})
    resp = j({"result": {"scores": [0.4, 0.6]}, "took_ms": 3})
    batch = decode_exchange(req, resp, input_path="data.rows", output_path="result.scores")
    assert batch.features == {"a": [1, 3], "b": [2, 4]}
    assert batch.outputs == {"prediction": [0.4, 0.6]}


def test_paths_with_list_indexes_and_positional_rows():
    req = j({"batches": [{"x": [[1, 2], [3, 4]]}]})
    resp = j({"out": [{"labels": ["a", "b"]}]})
    batch = decode_exchange(req, resp, input_path="batches.0.x", output_path="out.0.labels", feature_names=["p", "q"])
    assert batch.features == {"p": [1, 3], "q": [2, 4]}
    assert batch.outputs == {"prediction": ["a", "b"]}


def test_paths_override_the_codec():
    req = j({"instances": [[1]], "payload": {"features": {"a": 1}}})
    batch = decode_exchange(req, None, codec="kserve_v1", input_path="payload.features")
    assert batch.features == {"a": [1]}


def test_missing_input_path_is_missing_field():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(j({"data": {}}), None, input_path="data.rows")
    assert reason(exc) == "missing_field"
    with pytest.raises(PayloadError) as exc:
        decode_exchange(j({"data": [1]}), None, input_path="data.5")
    assert reason(exc) == "missing_field"


def test_missing_output_path_is_a_response_error():
    batch = decode_exchange(j({"a": 1}), j({"x": 1}), output_path="result.scores")
    assert batch.features == {"a": [1]}
    assert batch.errors == ["missing_field"]


# --- counts, empties, special values -------------------------------------------------------


def test_row_count_mismatch_keeps_features():
    batch = decode_exchange(j({"instances": [[1], [2], [3]]}), j({"predictions": [1, 0]}))
    assert batch.n == 3
    assert batch.features == {"f0": [1, 2, 3]}
    assert batch.outputs == {}
    assert batch.errors == ["row_count_mismatch"]


def test_kserve_single_instance_flat_predictions_is_a_mismatch():
    # The protocol says one prediction per instance; only the records codec reads a vector.
    batch = decode_exchange(j({"instances": [[1, 2]]}), j({"predictions": [0.1, 0.9]}))
    assert batch.errors == ["row_count_mismatch"]


def test_empty_rows():
    for body in ({"instances": []}, [], {"dataframe_records": []}, {"inputs": []}):
        batch = decode_exchange(j(body), j({"predictions": []}))
        assert batch.n == 0
        assert batch.features == {} and batch.outputs == {} and batch.errors == []


def test_nan_and_infinity_literals_are_floats():
    req = b'{"instances": [[NaN, Infinity], [1.0, -Infinity]]}'
    batch = decode_exchange(req, b'{"predictions": [NaN, 0.5]}')
    assert math.isnan(batch.features["f0"][0])
    assert batch.features["f1"] == [math.inf, -math.inf]
    assert math.isnan(batch.outputs["prediction"][0])


def test_multi_row_counts_large_batch():
    rows = [[float(i), float(i * 2), i % 3] for i in range(1000)]
    batch = decode_exchange(j({"instances": rows}), j({"predictions": [i % 2 for i in range(1000)]}))
    assert batch.n == 1000
    assert batch.features["f1"][999] == 1998.0
    assert len(batch.outputs["prediction"]) == 1000


def test_no_response_is_not_an_error():
    batch = decode_exchange(j({"instances": [[1]]}), None)
    assert batch.outputs == {} and batch.errors == []


# --- body errors ---------------------------------------------------------------------------


def test_invalid_json_request_raises():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(b'{"instances": [1, 2', None)
    assert reason(exc) == "invalid_json"
    with pytest.raises(PayloadError) as exc:
        decode_exchange(b"", None)
    assert reason(exc) == "invalid_json"


def test_invalid_json_response_is_recorded():
    batch = decode_exchange(j({"instances": [[1]]}), b"<html>502 Bad Gateway</html>")
    assert batch.features == {"f0": [1]}
    assert batch.outputs == {}
    assert batch.errors == ["invalid_json"]


def test_not_utf8():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(b'{"a": "\xff\xfe caf\xe9"}', None)
    assert reason(exc) == "not_utf8"
    batch = decode_exchange(j({"a": 1}), b'{"p": "\xe9"}')
    assert batch.errors == ["not_utf8"]


def test_utf8_bom_is_accepted():
    assert decode_exchange(b"\xef\xbb\xbf" + j({"a": 1}), None).features == {"a": [1]}


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data; boundary=x", "application/x-protobuf", "application/grpc", "image/png",
     "application/octet-stream"],
)
def test_unsupported_content_type(content_type):
    with pytest.raises(PayloadError) as exc:
        decode_exchange(j({"a": 1}), None, request_content_type=content_type)
    assert reason(exc) == "unsupported_content_type"


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "application/json; charset=utf-8", "Application/JSON; charset=UTF-8",
     "application/vnd.api+json", "text/plain", "application/x-www-form-urlencoded"],
)
def test_json_content_types(content_type):
    batch = decode_exchange(j({"a": 1}), j(1), request_content_type=content_type,
                            response_content_type=content_type)
    assert batch.features == {"a": [1]} and batch.outputs == {"prediction": [1]}


def test_response_content_type_checked():
    batch = decode_exchange(j({"a": 1}), b"\x89PNG", response_content_type="image/png")
    assert batch.errors == ["unsupported_content_type"]


def test_too_large_checked_before_parsing():
    body = b"{" + b" " * (20 * 1024 * 1024)  # 20 MB and not even JSON
    with pytest.raises(PayloadError) as exc:
        decode_exchange(body, None)
    assert reason(exc) == "too_large"
    batch = decode_exchange(j({"a": 1}), body)
    assert batch.errors == ["too_large"]


def test_custom_max_bytes():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(j({"instances": [[1, 2, 3]]}), None, max_bytes=10)
    assert reason(exc) == "too_large"


def test_gzip_bodies():
    req = gzip.compress(j({"instances": [[1, 2], [3, 4]]}))
    resp = gzip.compress(j({"predictions": [0, 1]}))
    batch = decode_exchange(req, resp, request_content_encoding="gzip", response_content_encoding="GZIP")
    assert batch.features == {"f0": [1, 3], "f1": [2, 4]}
    assert batch.outputs == {"prediction": [0, 1]}


def test_deflate_bodies_zlib_and_raw():
    payload = j({"a": 1})
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_body = raw.compress(payload) + raw.flush()
    for body in (zlib.compress(payload), raw_body):
        assert decode_exchange(body, None, request_content_encoding="deflate").features == {"a": [1]}


def test_bad_gzip_is_decompression():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(b"definitely not gzip", None, request_content_encoding="gzip")
    assert reason(exc) == "decompression"
    truncated = gzip.compress(j({"a": list(range(100))}))[:-12]
    with pytest.raises(PayloadError) as exc:
        decode_exchange(truncated, None, request_content_encoding="gzip")
    assert reason(exc) == "decompression"
    batch = decode_exchange(j({"a": 1}), b"\x1f\x8bnope", response_content_encoding="gzip")
    assert batch.errors == ["decompression"]


def test_unknown_content_encoding_is_decompression():
    with pytest.raises(PayloadError) as exc:
        decode_exchange(b"xx", None, request_content_encoding="br")
    assert reason(exc) == "decompression"


def test_gzip_bomb_is_capped():
    bomb = gzip.compress(b"[" + b"0," * (5 * 1024 * 1024) + b"0]")
    assert len(bomb) < 100_000
    with pytest.raises(PayloadError) as exc:
        decode_exchange(bomb, None, request_content_encoding="gzip", max_bytes=1024 * 1024)
    assert reason(exc) == "too_large"


def test_decompress_identity_and_multi_member_gzip():
    assert decompress(b"abc", "identity", 10) == b"abc"
    assert decompress(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 10) == b"abcd"
    assert load_json(gzip.compress(b"[1]"), "application/json", "gzip") == [1]


def test_unknown_codec_name():
    with pytest.raises(ValueError):
        decode_exchange(j({"a": 1}), None, codec="pickle")


def test_every_error_reason_is_known():
    from inferwatch.ingest.events import PayloadError as PE

    for r in ("invalid_json", "not_utf8", "unsupported_content_type", "unknown_format", "missing_field",
              "shape_mismatch", "row_count_mismatch", "too_large", "decompression"):
        assert r in PE.REASONS



def test_a_large_positional_batch_is_transposed_in_c():
    # 10k rows x 32 features: columnar transposition must stay in C (zip, slicing), not a Python
    # loop per row or per value. Counting the Python lines run, not the seconds, keeps this
    # independent of the machine's speed; benchmarks/micro.py prints the timings.
    def exchange(n: int) -> tuple[bytes, bytes]:
        rows = [[float(i + k) for k in range(32)] for i in range(n)]
        return j({"instances": rows}), j({"predictions": [[0.1, 0.9]] * n})

    req, resp = exchange(10_000)
    batch = decode_exchange(req, resp)
    assert batch.n == 10_000 and len(batch.features) == 32
    assert batch.features["f31"][-1] == 10_030.0 and batch.outputs["prediction_1"] == [0.9] * 10_000
    small = exchange(1_000)
    lines_small = python_lines(lambda: decode_exchange(*small))
    lines_large = python_lines(lambda: decode_exchange(req, resp))
    # Both run the same lines; a loop over the rows would add 9,000, over the values 288,000.
    assert lines_small > 0
    assert lines_large - lines_small < 100, (lines_small, lines_large)
