"""`edgectl convert` and `edgectl keys` as a user runs them: one line and exit 1 on bad input,
never a traceback, never a partial package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.package import open_package
from tests.conftest import Keys, gemm_model, run_cli

pytestmark = pytest.mark.convert


def convert(*args: str | Path) -> tuple[int, str, str]:
    proc = run_cli("fleet.cli", "convert", *args)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 1, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert needle in lines[0], err
    assert "Traceback" not in err


def test_keys_generate_refuses_overwrite(tmp_path: Path) -> None:
    first = run_cli("fleet.cli", "keys", "generate", "--out", tmp_path, "--name", "k")
    assert first.returncode == 0 and (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    again = run_cli("fleet.cli", "keys", "generate", "--out", tmp_path, "--name", "k")
    assert_one_line_error(again.returncode, again.stderr, "already exists")


def test_convert_onnx_file_auto(tmp_path: Path, keys: Keys, gemm_onnx: Path) -> None:
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((64, 4)).astype(
        np.float32))
    code, out, err = convert(gemm_onnx, "--name", "gemm", "--version", "1", "--precision", "auto",
                             "--calibration-data", tmp_path / "calib.npy", "--key", keys.private,
                             "--out", tmp_path / "out", "--task", "regression")
    assert code == 0, err
    assert "<- chosen" in out and "chose " in out
    pkg = open_package(tmp_path / "out" / "gemm-1.edgepkg", keys.trust)
    assert pkg.manifest.task == "regression"


def test_sklearn_pickle_warns(tmp_path: Path, keys: Keys, mlp_joblib: Path,
                              digits_files: dict[str, Path]) -> None:
    code, _out, err = convert(mlp_joblib, "--name", "d", "--version", "1", "--key", keys.private,
                             "--validation-data", digits_files["valid"], "--out", tmp_path)
    assert code == 0, err
    assert "unpickling" in err and "build machine" in err
    assert (tmp_path / "d-1.edgepkg").exists()


def test_not_a_model(tmp_path: Path, keys: Keys) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("this is not a model")
    code, _, err = convert(bogus, "--name", "x", "--version", "1", "--key", keys.private,
                           "--out", tmp_path / "out")
    assert_one_line_error(code, err, "not an ONNX model")
    assert not (tmp_path / "out").exists()


def test_not_a_pickle(tmp_path: Path, keys: Keys) -> None:
    bogus = tmp_path / "m.joblib"
    bogus.write_bytes(b"\x00\x01garbage")
    code, _, err = convert(bogus, "--name", "x", "--version", "1", "--key", keys.private)
    assert_one_line_error(code, err, "not a joblib/pickle file")


def test_unsupported_op_named(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "custom.onnx"
    path.write_bytes(gemm_model(op="FancyGemm"))
    code, _, err = convert(path, "--name", "x", "--version", "1", "--key", keys.private,
                           "--out", tmp_path / "out")
    assert_one_line_error(code, err, "custom.ops.FancyGemm")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.zeros((50, 5), np.float32), "shape [50, 5], the model wants ['batch', 4]"),
        (np.zeros((50, 4, 1), np.float32), "rank 3"),
        (np.array([["a"] * 4] * 50), "data is <U1"),
        (np.zeros((3, 4), np.float32), "3 calibration samples"),
        (np.full((50, 4), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_calibration_data(tmp_path: Path, keys: Keys, gemm_onnx: Path, array: np.ndarray,
                              needle: str) -> None:
    np.save(tmp_path / "calib.npy", array)
    code, _, err = convert(gemm_onnx, "--name", "x", "--version", "1", "--precision",
                           "int8-static", "--calibration-data", tmp_path / "calib.npy", "--key",
                           keys.private, "--out", tmp_path / "out")
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_bad_data_files(tmp_path: Path, keys: Keys, gemm_onnx: Path) -> None:
    np.savez(tmp_path / "d.npz", a=np.zeros((20, 4), np.float32), b=np.zeros((20, 4), np.float32))
    code, _, err = convert(gemm_onnx, "--name", "x", "--version", "1", "--calibration-data",
                           tmp_path / "d.npz", "--precision", "int8-static", "--key",
                           keys.private)
    assert_one_line_error(code, err, "model inputs are ['x']")
    (tmp_path / "d.txt").write_text("1,2")
    code, _, err = convert(gemm_onnx, "--name", "x", "--version", "1", "--validation-data",
                           tmp_path / "d.txt", "--key", keys.private)
    assert_one_line_error(code, err, "unsupported data format")


def test_static_without_calibration(tmp_path: Path, keys: Keys, gemm_onnx: Path) -> None:
    code, _, err = convert(gemm_onnx, "--name", "x", "--version", "1", "--precision",
                           "int8-static", "--key", keys.private, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "needs calibration data")
    assert not (tmp_path / "out").exists()


def test_budget_met_by_no_candidate(tmp_path: Path, keys: Keys, gemm_onnx: Path) -> None:
    code, _, err = convert(gemm_onnx, "--name", "x", "--version", "1", "--precision", "auto",
                           "--candidates", "int8-dynamic,fp16", "--max-abs-error", "0",
                           "--task", "regression",
                           "--key", keys.private, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "no candidate meets the accuracy budget")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_key_and_bad_names(tmp_path: Path, keys: Keys, gemm_onnx: Path) -> None:
    code, _, err = convert(gemm_onnx, "--name", "x", "--version", "1")
    assert_one_line_error(code, err, "--key")
    code, _, err = convert(gemm_onnx, "--name", "../x", "--version", "1", "--unsigned")
    assert_one_line_error(code, err, "must match")
    code, _, err = convert(gemm_onnx, "--name", "x", "--version", "1", "--key",
                           tmp_path / "nokey")
    assert_one_line_error(code, err, "cannot read private key")
    code, _, err = convert("mypkg.nothere:build", "--name", "x", "--version", "1", "--unsigned",
                           "--input-shape", "1,4")
    assert_one_line_error(code, err, "cannot build the module")


def test_inspect_verifies(tmp_path: Path, keys: Keys, other_keys: Keys, gemm_onnx: Path) -> None:
    code, _, err = convert(gemm_onnx, "--name", "g", "--version", "2", "--key", keys.private,
                           "--out", tmp_path)
    assert code == 0, err
    ok = run_cli("edge_runtime.cli", "inspect", tmp_path / "g-2.edgepkg", "--trusted-keys",
                 keys.public)
    assert ok.returncode == 0 and f"signed_by={keys.signer.key_id}" in ok.stdout
    bad = run_cli("edge_runtime.cli", "inspect", tmp_path / "g-2.edgepkg", "--trusted-keys",
                  other_keys.public)
    assert_one_line_error(bad.returncode, bad.stderr, "not in the trusted keys")
