"""`edge-runtime batch NAME INPUT OUTPUT` over a real store, every input and output format.

Outputs must equal the numpy math of the model, however the input is chunked; a bad input file
exits 1 with one line and leaves no output file (not even a partial one).
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import Keys, build_package
from tests.integration.support import (
    affine,
    build_onnx_package,
    edge,
    edge_here,
    make_store,
    mixed_model,
    one_line_error,
)

N = 53  # not a multiple of the chunk size
X = np.random.default_rng(7).standard_normal((N, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> tuple[Path, np.ndarray]:
    tmp = tmp_path_factory.mktemp("batch")
    gemm = build_package(tmp / "pkgs", keys.signer, seed=5)
    mixed = build_onnx_package(tmp / "pkgs", keys.signer, mixed_model(), name="mixed")
    store = make_store(tmp / "store", keys, [gemm, mixed], {"gemm": "1", "mixed": "1"})
    return store, affine(gemm, keys, X)


def write_input(path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, X)
    elif suffix == ".npz":
        np.savez(path, features=X)  # one array: fed to the single input whatever its name
    elif suffix == ".csv":
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["f0", "f1", "f2", "f3"])
            writer.writerows(X.astype(np.float64).tolist())
    elif suffix == ".parquet":
        pq.write_table(pa.table({f"f{i}": X[:, i] for i in range(4)}), path)
    return path


def read_output(path: Path) -> np.ndarray:
    suffix = path.suffix
    if suffix == ".npy":
        return np.asarray(np.load(path))
    if suffix == ".npz":
        with np.load(path) as z:
            assert list(z) == ["y"]
            return np.asarray(z["y"])
    if suffix == ".csv":
        with path.open() as fh:
            assert fh.readline().strip() == "y_0,y_1,y_2"
        return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    table = pq.read_table(path)
    assert table.column_names == ["y_0", "y_1", "y_2"]
    return np.column_stack([table.column(n).to_numpy() for n in table.column_names])


def batch(store: Path, *args: str | Path) -> str:
    proc = edge_here("batch", *args, "--store", store, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize(("src", "dst"), [
    (".npy", ".npz"), (".npy", ".npy"), (".npz", ".csv"), (".csv", ".parquet"),
    (".parquet", ".npz"), (".csv", ".csv"), (".parquet", ".parquet"), (".npz", ".npy")])
def test_formats(tmp_path: Path, setup: tuple[Path, np.ndarray], src: str, dst: str) -> None:
    store, expected = setup
    out = tmp_path / f"out{dst}"
    msg = batch(store, "gemm", write_input(tmp_path / f"in{src}"), out, "--chunk-rows", "10")
    assert msg == f"wrote {N} rows to {out}"
    y = read_output(out)
    assert y.shape == (N, 3)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"in{src}", f"out{dst}"])


def test_two_inputs_from_npz(tmp_path: Path, setup: tuple[Path, np.ndarray]) -> None:
    store, _ = setup
    ids = np.arange(N * 4, dtype=np.int64).reshape(N, 4)
    np.savez(tmp_path / "in.npz", a=X, ids=ids)
    batch(store, "mixed", tmp_path / "in.npz", tmp_path / "out.npz", "--chunk-rows", "16")
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_allclose(z["y"], X + ids, rtol=1e-6)


def test_runs_in_a_real_process(tmp_path: Path, setup: tuple[Path, np.ndarray]) -> None:
    store, expected = setup
    out = tmp_path / "out.npy"
    proc = edge("batch", "gemm", write_input(tmp_path / "in.npy"), out, "--store", store,
                "--no-progress")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-5)


def bad_csv(path: Path) -> Path:
    """Numeric for the first chunks, then a word: fails after output was already written."""
    rows = [",".join(map(str, r)) for r in X.tolist()]
    rows[40] = "1,2,oops,4"
    path.write_text("f0,f1,f2,f3\n" + "\n".join(rows) + "\n")
    return path


def truncated_npz(path: Path) -> Path:
    """A member whose .npy header promises N rows but holds 20: found after 2 chunks of 8."""
    full = path.with_suffix(".full.npz")
    np.savez(full, x=X)
    with zipfile.ZipFile(full) as z:
        data = z.read("x.npy")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", data[:-(N - 20) * 16])
    full.unlink()
    return path


@pytest.mark.parametrize("dst", [".npz", ".npy", ".csv", ".parquet"])
@pytest.mark.parametrize(("make", "message"), [
    (lambda p: bad_csv(p / "in.csv"), "CSV must be numeric with equal-length rows"),
    (lambda p: truncated_npz(p / "in.npz"), "npz member is truncated")], ids=["csv", "npz"])
def test_failure_midway_leaves_no_output(tmp_path: Path, setup: tuple[Path, np.ndarray],
                                         dst: str, make: Any, message: str) -> None:
    store, _ = setup
    src: Path = make(tmp_path)
    out = tmp_path / f"out{dst}"
    proc = edge_here("batch", "gemm", src, out, "--store", store, "--chunk-rows", "8",
                     "--no-progress")
    assert message in one_line_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


@pytest.mark.parametrize(("name", "make", "message"), [
    ("gemm", lambda p: np.save(p / "in.npy", np.ones((5, 5), np.float32)),
     "input 'x': shape [5, 5] does not match [batch, 4]"),
    ("gemm", lambda p: (p / "in.npy").write_bytes(b"\x93NUMPY garbage"),
     "in.npy: cannot read the file (we only support format version"),
    ("gemm", lambda p: (p / "in.npz").write_bytes(b"PK\x03\x04junk"),
     "in.npz: cannot read the file (File is not a zip file)"),
    ("gemm", lambda p: (p / "in.parquet").write_bytes(b"junk"), "in.parquet: cannot read"),
    ("gemm", lambda p: (p / "in.csv").write_bytes(b"1,2,3,\xff\n"), "in.csv: cannot read"),
    ("gemm", lambda p: None, "in.npy: no such file"),
    ("gemm", lambda p: (p / "in.txt").write_text("1,2,3,4\n"), "unsupported input format '.txt'"),
    ("mixed", lambda p: np.save(p / "in.npy", X), "the model has 2 inputs; use .npz"),
    ("mixed", lambda p: np.savez(p / "in.npz", a=X), "no arrays for inputs ['ids']"),
    ("nope", lambda p: np.save(p / "in.npy", X), "model nope not found"),
], ids=["wrong-shape", "corrupt-npy", "corrupt-npz", "corrupt-parquet", "not-utf8-csv",
        "missing", "unsupported", "npy-for-two-inputs", "npz-missing-input", "unknown-model"])
def test_bad_input_files(tmp_path: Path, setup: tuple[Path, np.ndarray], name: str,
                         make: Any, message: str) -> None:
    store, _ = setup
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    make(inputs)
    src = next(iter(inputs.iterdir()), inputs / "in.npy")
    out = tmp_path / "out.npz"
    proc = edge_here("batch", name, src, out, "--store", store, "--no-progress")
    assert message in one_line_error(proc)
    assert not out.exists() and not (tmp_path / "out.npz.partial").exists()


def test_unsupported_output_format(tmp_path: Path, setup: tuple[Path, np.ndarray]) -> None:
    store, _ = setup
    proc = edge_here("batch", "gemm", write_input(tmp_path / "in.npy"), tmp_path / "out.json",
                     "--store", store, "--no-progress")
    assert "unsupported output format '.json'" in one_line_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]
