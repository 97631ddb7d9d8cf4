"""validate_inputs: names, dtypes, shapes and batch against the manifest specs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_runtime.errors import InputInvalid
from edge_runtime.inputs import check_names, spec_dtype, validate_inputs
from edge_runtime.manifest import TensorSpec

X = TensorSpec("x", "float32", ("batch", 4))
IDS = TensorSpec("ids", "int64", ("batch", "seq"))
MASK = TensorSpec("mask", "int8", ("n", "seq"))
TEXT = TensorSpec("text", "string", ("batch",))
FIXED = TensorSpec("scale", "float32", (1,))
FLAG = TensorSpec("flag", "bool", ())


def f32(*shape: int) -> np.ndarray[Any, Any]:
    return np.zeros(shape, dtype=np.float32)


def test_correct_inputs_pass_through_without_copy() -> None:
    x, ids = f32(2, 4), np.zeros((2, 7), np.int64)
    out = validate_inputs((X, IDS), {"ids": ids, "x": x})
    assert list(out) == ["x", "ids"]
    assert out["x"] is x and out["ids"] is ids


def test_read_only_views_pass_through() -> None:
    x = np.frombuffer(f32(2, 4).tobytes(), dtype=np.float32).reshape(2, 4)
    assert validate_inputs((X,), {"x": x})["x"] is x


@pytest.mark.parametrize(
    ("spec", "arr", "dtype"),
    [
        (X, np.ones((1, 4), np.int64), np.float32),
        (X, np.ones((1, 4), np.float64), np.float32),
        (X, np.ones((1, 4), bool), np.float32),
        (X, np.ones((1, 4), ">f4"), np.float32),
        (IDS, np.ones((1, 2), np.int32), np.int64),
        (IDS, np.ones((1, 2), np.uint32), np.int64),
        (MASK, np.array([[1, -1]], np.int64), np.int8),
        (TEXT, np.array(["a", "bc"]), object),
        (TEXT, np.array([b"a", b"bc"]), object),
        (TEXT, np.array([b"a"], dtype=object), object),
    ],
)
def test_safe_casts(spec: TensorSpec, arr: np.ndarray[Any, Any], dtype: Any) -> None:
    out = validate_inputs((spec,), {spec.name: arr})[spec.name]
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.flags.c_contiguous
    assert out.tolist() == arr.tolist()


@pytest.mark.parametrize(
    ("specs", "inputs", "name", "phrase"),
    [
        ((X, IDS), {"x": f32(1, 4)}, "ids", "missing (the model takes 'x', 'ids')"),
        ((X,), {"x": f32(1, 4), "y": f32(1)}, "y", "not an input of this model"),
        ((X,), {"X": f32(1, 4)}, "x", "missing (missing: 'x'; unknown: 'X'; the model takes 'x')"),
        ((X, IDS), {}, "x", "missing: 'x', 'ids'"),
        ((X,), {"x": f32(1, 5)}, "x", "shape [1, 5] does not match [batch, 4]"),
        ((X,), {"x": f32(4)}, "x", "shape [4] does not match [batch, 4]"),
        ((X,), {"x": f32(1, 1, 4)}, "x", "shape [1, 1, 4] does not match [batch, 4]"),
        ((FIXED,), {"scale": f32(2)}, "scale", "shape [2] does not match [1]"),
        ((FLAG,), {"flag": np.ones(1, bool)}, "flag", "shape [1] does not match []"),
        ((X,), {"x": np.ones((1, 4), np.complex64)}, "x", "cannot be safely cast to float32"),
        ((IDS,), {"ids": np.ones((1, 2))}, "ids", "dtype float64 cannot be safely cast to int64"),
        ((X,), {"x": np.array([["1", "2", "3", "4"]])}, "x", "dtype <U1 cannot be safely cast"),
        ((X,), {"x": np.ones((1, 4), object)}, "x", "dtype object cannot be safely cast"),
        ((FLAG,), {"flag": np.array(1)}, "flag", "dtype int64 cannot be safely cast to bool"),
        ((TEXT,), {"text": np.ones(1)}, "text", "dtype float64 cannot be a string input"),
        ((MASK,), {"mask": np.array([[1, 200]])}, "mask", "value 200 is out of range for int8"),
        ((MASK,), {"mask": np.array([[1, -200]])}, "mask", "value -200 is out of range"),
        ((IDS,), {"ids": np.array([[2**63]], np.uint64)}, "ids", "out of range for int64"),
        ((X, IDS), {"x": f32(2, 4), "ids": np.zeros((3, 1), np.int64)}, "ids",
         "batch size 3 differs from 2 of input 'x'"),
        ((X,), {"x": f32(0, 4)}, "x", "batch size is 0"),
    ],
)
def test_invalid(specs: tuple[TensorSpec, ...], inputs: dict[str, Any], name: str,
                 phrase: str) -> None:
    with pytest.raises(InputInvalid) as info:
        validate_inputs(specs, inputs)
    assert info.value.input_name == name
    assert phrase in str(info.value)
    assert str(info.value).startswith(f"input {name!r}: ")


def test_exact_shape_message() -> None:
    with pytest.raises(InputInvalid) as info:
        validate_inputs((X,), {"x": f32(1, 5)})
    assert str(info.value) == "input 'x': shape [1, 5] does not match [batch, 4]"


def test_max_batch() -> None:
    assert validate_inputs((X,), {"x": f32(8, 4)}, max_batch=8)["x"].shape == (8, 4)
    with pytest.raises(InputInvalid, match="batch size 9 is over the limit of 8"):
        validate_inputs((X,), {"x": f32(9, 4)}, max_batch=8)


def test_batch_is_only_the_leading_dynamic_dim() -> None:
    # MASK leads with its own dim name, so it joins the batch check; FIXED and FLAG do not.
    inputs = {"x": f32(2, 4), "scale": f32(1), "flag": np.array(True)}
    assert set(validate_inputs((X, FIXED, FLAG), inputs)) == {"x", "scale", "flag"}
    with pytest.raises(InputInvalid, match="differs"):
        validate_inputs((X, MASK), {"x": f32(2, 4), "mask": np.zeros((1, 3), np.int8)})


@pytest.mark.parametrize(
    "arr",
    [
        f32(4, 2).T,
        np.asfortranarray(f32(2, 4)),
        f32(2, 8)[:, ::2],
        np.frombuffer(b"\0" + f32(2, 4).tobytes(), dtype=np.float32, offset=1).reshape(2, 4),
    ],
    ids=["transposed", "fortran", "strided", "unaligned"],
)
def test_layout_is_fixed_by_copying(arr: np.ndarray[Any, Any]) -> None:
    out = validate_inputs((X,), {"x": arr})["x"]
    assert out.flags.c_contiguous and out.flags.aligned
    np.testing.assert_array_equal(out, arr)


def test_spec_dtype() -> None:
    assert spec_dtype("float16") == np.float16
    assert spec_dtype("string") == np.dtype(object)


def test_check_names_where() -> None:
    check_names((X, IDS), ["ids", "x"])
    with pytest.raises(InputInvalid, match=r"input 'ids': missing in instances\[3\]"):
        check_names((X, IDS), ["x"], where=" in instances[3]")


def test_inputs_that_already_fit_pass_through_unchanged() -> None:
    specs = (TensorSpec("x", "float32", ("batch", 4)), TensorSpec("m", "int64", ("batch",)))
    x, m = np.zeros((3, 4), np.float32), np.arange(3)
    out = validate_inputs(specs, {"m": m, "x": x})
    assert list(out) == ["x", "m"] and out["x"] is x and out["m"] is m
    for bad in ({"x": x, "m": np.arange(2)}, {"x": np.zeros((3, 5), np.float32), "m": m},
                {"x": np.zeros((0, 4), np.float32), "m": m[:0]}):
        with pytest.raises(InputInvalid):
            validate_inputs(specs, bad)
    # a float64 x still goes through (cast by the general path), as a new array
    cast = validate_inputs(specs, {"x": x.astype(np.float64), "m": m})
    assert cast["x"].dtype == np.float32 and cast["x"] is not x
