"""Bad input for the TFLite export: one clear error (exit 1 from the CLI), never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from converters.errors import DynamicShape, UnsupportedOps
from converters.tflite.export import to_tflite
from tests.conftest import Keys
from tests.converters.test_cli import assert_one_line_error, convert
from tests.converters.tflite.helpers import graph, rand

pytestmark = [pytest.mark.tflite, pytest.mark.convert]


def unsupported_model() -> object:
    return graph([helper.make_node("Erf", ["x"], ["e"]), helper.make_node("Relu", ["e"], ["r"]),
                  helper.make_node("Cos", ["r"], ["c"]), helper.make_node("Erf", ["c"], ["y"])],
                 {"x": ("N", 4)}, ["y"])


def dynamic_model() -> object:
    return graph([helper.make_node("Conv", ["x", "w"], ["y"])], {"x": ("N", 4, "H", "W")}, ["y"],
                 inits={"w": rand(2, 4, 1, 1)})


def test_every_unsupported_op_in_one_error() -> None:
    with pytest.raises(UnsupportedOps) as info:
        to_tflite(unsupported_model())
    assert info.value.ops == ["Cos", "Erf"] and info.value.target == "tflite"


def test_unsupported_variant_named() -> None:
    model = graph([helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")], {"x": (1, 4)},
                  ["y"], inits={"p": np.array([0, 1, 0, 1], np.int64)})
    with pytest.raises(UnsupportedOps, match=r"Pad\(mode=reflect\)"):
        to_tflite(model)


def test_dynamic_dimension_other_than_batch() -> None:
    with pytest.raises(DynamicShape, match="'H' at axis 2"):
        to_tflite(dynamic_model())


def test_cli_unsupported_ops(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(unsupported_model().SerializeToString())  # type: ignore[attr-defined]
    code, _, err = convert(path, "--name", "m", "--version", "1", "--to", "tflite",
                           "--key", keys.private, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "tflite cannot run these ops: Cos, Erf")
    assert not (tmp_path / "out").exists()


def test_cli_dynamic_shape(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(dynamic_model().SerializeToString())  # type: ignore[attr-defined]
    np.save(tmp_path / "c.npy", rand(20, 4, 5, 5))
    code, _, err = convert(path, "--name", "m", "--version", "1", "--to", "tflite",
                           "--validation-data", tmp_path / "c.npy",
                           "--key", keys.private, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "dynamic dimension 'H' at axis 2")


def test_cli_sklearn_refused(tmp_path: Path, keys: Keys, mlp_joblib: Path) -> None:
    code, _, err = convert(mlp_joblib, "--name", "m", "--version", "1", "--to", "tflite",
                           "--key", keys.private, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "TFLite has no such ops and cannot hold the model")
    assert "ai.onnx.ml." in err


@pytest.mark.parametrize(
    ("array", "needle"),
    [(np.full((50, 4), np.nan, np.float32), "NaN"),
     (np.zeros((50, 5), np.float32), "shape [50, 5], the model wants ['batch', 4]")],
)
def test_cli_bad_calibration_data(tmp_path: Path, keys: Keys, gemm_onnx: Path,
                                  array: np.ndarray, needle: str) -> None:
    np.save(tmp_path / "calib.npy", array)
    code, _, err = convert(gemm_onnx, "--name", "x", "--version", "1", "--to", "tflite",
                           "--precision", "int8-static", "--calibration-data",
                           tmp_path / "calib.npy", "--key", keys.private,
                           "--out", tmp_path / "out")
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_cli_precision_of_the_other_target(tmp_path: Path, keys: Keys, gemm_onnx: Path) -> None:
    code, _, err = convert(gemm_onnx, "--name", "x", "--version", "1", "--to", "tflite",
                           "--precision", "fp16", "--key", keys.private)
    assert_one_line_error(code, err, "--to tflite has no precision fp16")
