"""TF-Serving predict codec: row and columnar round trips for single- and multi-input models."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from edge_runtime.codecs.tfserving import Format, decode_predict, encode_predict
from edge_runtime.errors import InputInvalid, PayloadInvalid
from edge_runtime.inputs import validate_inputs
from edge_runtime.manifest import TensorSpec

SINGLE = (TensorSpec("x", "float32", ("batch", 3)),)
MULTI = (
    TensorSpec("x", "float32", ("batch", 2)),
    TensorSpec("ids", "int64", ("batch",)),
    TensorSpec("text", "string", ("batch",)),
)


def decode(doc: Any, specs: tuple[TensorSpec, ...]) -> tuple[dict[str, Any], Format]:
    return decode_predict(orjson.dumps(doc), specs)


def model(inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    x = inputs["x"]
    return {"scores": x * 2, "label": x.sum(axis=1) > 1}


@pytest.mark.parametrize(
    "doc",
    [
        {"instances": [[1, 2, 3], [4.5, 5, 6]]},
        {"signature_name": "serving_default", "instances": [{"x": [1, 2, 3]}, {"x": [4.5, 5, 6]}]},
    ],
    ids=["plain", "named"],
)
def test_row_single_input(doc: dict[str, Any]) -> None:
    inputs, fmt = decode(doc, SINGLE)
    assert fmt == "row"
    assert inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(inputs["x"], [[1, 2, 3], [4.5, 5, 6]])
    scores = {"scores": inputs["x"] * 2}
    assert orjson.loads(encode_predict(scores, fmt)) == {
        "predictions": [[2.0, 4.0, 6.0], [9.0, 10.0, 12.0]]}


def test_row_multi_input_multi_output_round_trip() -> None:
    doc = {"instances": [{"x": [0.5, 0.25], "ids": 3, "text": "a"},
                         {"x": [1, 2], "ids": 4, "text": "b"}]}
    inputs, fmt = decode(doc, MULTI)
    checked = validate_inputs(MULTI, inputs)
    assert checked["ids"].dtype == np.int64 and checked["text"].tolist() == ["a", "b"]
    assert orjson.loads(encode_predict(model(checked), fmt)) == {"predictions": [
        {"scores": [1.0, 0.5], "label": False},
        {"scores": [2.0, 4.0], "label": True},
    ]}


def test_columnar_single_input() -> None:
    inputs, fmt = decode({"inputs": [[1, 2, 3]]}, SINGLE)
    assert fmt == "columnar" and inputs["x"].shape == (1, 3)
    assert orjson.loads(encode_predict({"y": inputs["x"][:, 0]}, fmt)) == {"outputs": [1.0]}


def test_columnar_multi_input_multi_output_round_trip() -> None:
    doc = {"inputs": {"x": [[0.5, 0.25], [1, 2]], "ids": [3, 4], "text": ["a", "b"]}}
    inputs, fmt = decode(doc, MULTI)
    out = model(validate_inputs(MULTI, inputs))
    out["words"] = np.array([b"hi", "there"], dtype=object)
    assert orjson.loads(encode_predict(out, fmt)) == {"outputs": {
        "scores": [[1.0, 0.5], [2.0, 4.0]], "label": [False, True], "words": ["hi", "there"]}}


def test_scalar_output_in_columnar_format() -> None:
    assert orjson.loads(encode_predict({"n": np.float32(2.5) * np.ones(())}, "columnar")) == {
        "outputs": 2.5}


BAD = [
    ("not_object", b"[1, 2]", SINGLE, PayloadInvalid, '"instances" or "inputs"'),
    ("bad_json", b"{", SINGLE, PayloadInvalid, "not valid JSON"),
    ("both_formats", {"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, SINGLE, PayloadInvalid,
     "not both"),
    ("neither_format", {"instance": [[1, 2, 3]]}, SINGLE, PayloadInvalid,
     "no \"instances\" or \"inputs\" (keys: 'instance')"),
    ("instances_empty", {"instances": []}, SINGLE, PayloadInvalid, "non-empty list"),
    ("instances_not_list", {"instances": {"x": 1}}, SINGLE, PayloadInvalid, "non-empty list"),
    ("instances_mixed", {"instances": [{"x": [1, 2, 3]}, [1, 2, 3]]}, SINGLE, PayloadInvalid,
     "mixes objects and plain values"),
    ("ragged_instances", {"instances": [[1, 2, 3], [1, 2]]}, SINGLE, InputInvalid,
     "ragged nested lists in instances"),
    ("plain_instances_multi_input", {"instances": [[1, 2]]}, MULTI, PayloadInvalid,
     "the model has 3 inputs ('x', 'ids', 'text'): each instance must be an object"),
    ("unknown_input_in_instance", {"instances": [{"x": [1, 2, 3], "y": 1}]}, SINGLE,
     InputInvalid, "input 'y': not an input of this model in instances[0]"),
    ("missing_input_in_instance", {"instances": [
        {"x": [1, 2], "ids": 1, "text": "a"}, {"x": [1, 2], "text": "b"}]}, MULTI,
     InputInvalid, "input 'ids': missing in instances[1]"),
    ("ragged_named_instances", {"instances": [
        {"x": [1, 2], "ids": 1, "text": "a"}, {"x": [1], "ids": 1, "text": "b"}]}, MULTI,
     InputInvalid, "input 'x': ragged nested lists in instances"),
    ("float_for_int_input", {"inputs": {"x": [[1, 2]], "ids": [1.5], "text": ["a"]}}, MULTI,
     InputInvalid, "input 'ids': floating-point values in data cannot be int64"),
    ("number_for_string_input", {"inputs": {"x": [[1, 2]], "ids": [1], "text": [1]}}, MULTI,
     InputInvalid, "input 'text': data must be strings"),
    ("string_for_float_input", {"inputs": [["a", "b", "c"]]}, SINGLE, InputInvalid,
     "string values in data cannot be float32"),
    ("columnar_missing", {"inputs": {"x": [[1, 2]]}}, MULTI, InputInvalid,
     "input 'ids': missing (missing: 'ids', 'text'; the model takes 'x', 'ids', 'text')"),
    ("columnar_unknown", {"inputs": {"X": [[1, 2, 3]]}}, SINGLE, InputInvalid,
     "input 'x': missing (missing: 'x'; unknown: 'X'; the model takes 'x')"),
    ("columnar_plain_multi_input", {"inputs": [[1, 2]]}, MULTI, PayloadInvalid,
     '"inputs" must be an object naming them'),
]


@pytest.mark.parametrize(("doc", "specs", "error", "phrase"), [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_requests(doc: Any, specs: tuple[TensorSpec, ...], error: type[Exception],
                      phrase: str) -> None:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    with pytest.raises(PayloadInvalid) as info:
        decode_predict(raw, specs)
    assert type(info.value) is error
    assert phrase in str(info.value)


@pytest.mark.parametrize(
    ("outputs", "phrase"),
    [
        ({"n": np.ones(())}, "output 'n' is a scalar with no instances"),
        ({"a": np.ones(2), "b": np.ones(3)}, "different batch sizes [2, 3]"),
        ({"b": np.array([b"\xff"], dtype=object)}, "not UTF-8"),
    ],
)
def test_row_encode_errors(outputs: dict[str, Any], phrase: str) -> None:
    with pytest.raises(PayloadInvalid) as info:
        encode_predict(outputs, "row")
    assert phrase in str(info.value)


def test_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown TF-Serving format"):
        encode_predict({"y": np.ones(1)}, "rows")  # type: ignore[arg-type]
