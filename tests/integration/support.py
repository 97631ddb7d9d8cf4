"""Models, packages, stores and wire helpers shared by the daemon integration tests."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray

from edge_runtime.runtime import Runtime
from edge_runtime.signing import Signer
from tests.conftest import Keys, run_cli

Array = NDArray[Any]


# -- models (onnx.helper, so the expected outputs are plain numpy) ----------------------------
def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], init: list[Any]) -> bytes:
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def image_model(seed: int = 0, classes: int = 10) -> bytes:
    """x float32 [batch, 3, 8, 8] -> Flatten -> Gemm -> y float32 [batch, classes]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3 * 8 * 8, classes)).astype(np.float32) / 8
    b = rng.standard_normal(classes).astype(np.float32)
    return _model(
        [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "w", "b"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])


def mixed_model() -> bytes:
    """Two inputs of different dtypes: y = a + float(ids), a float32 and ids int64 [batch, 4]."""
    from onnx import TensorProto, helper

    return _model(
        [helper.make_node("Cast", ["ids"], ["idf"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["a", "idf"], ["y"])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [])


def build_onnx_package(out_dir: Path, signer: Signer | None, model: bytes, *, name: str,
                       version: str = "1") -> Path:
    """A package of any ONNX model through the real converter (synthetic validation data)."""
    from converters import sources
    from converters.pipeline import ConvertRequest, convert

    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / f".src-{name}-{version}.onnx"
    src.write_bytes(model)
    req = ConvertRequest(name=name, version=version, precision="fp32", out_dir=out_dir,
                         signer=signer)
    try:
        return convert(sources.from_onnx_file(src), req, log=lambda _m: None).package
    finally:
        src.unlink()


def initializers(pkg: Path, keys: Keys) -> dict[str, Array]:
    """The weights inside a package's model.onnx, to compute expected outputs with numpy."""
    import onnx
    from onnx import numpy_helper

    from edge_runtime.package import open_package

    model = onnx.load_from_string(open_package(pkg, keys.trust).read("model.onnx"))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def affine(pkg: Path, keys: Keys, x: Array) -> Array:
    """y = flatten(x) @ w + b: the math of the gemm and image models."""
    init = initializers(pkg, keys)
    x = np.asarray(x, dtype=np.float32)
    return np.asarray(x.reshape(len(x), -1) @ init["w"] + init["b"])


# -- stores and the CLI ----------------------------------------------------------------------
def make_store(store: Path, keys: Keys, packages: list[Path],
               active: dict[str, str]) -> Path:
    """Install packages and activate versions with the in-process Runtime (no daemon)."""
    with Runtime(store, trusted_keys=(keys.public,), restore=False) as rt:
        for pkg in packages:
            rt.install(pkg)
        for name, version in active.items():
            rt.activate(name, version)
    return store


def edge(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`edge-runtime ARGS` in a fresh process."""
    return run_cli("edge_runtime.cli", *args)


def edge_here(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`edge-runtime ARGS` through the console script's entry point, in this process.

    Same code path as ``edge`` (click parsing, the one-line error edge, exit codes) without the
    start-up of a fresh interpreter; the tests that need a real process use ``edge``.
    """
    from edge_runtime.cli import main

    argv = ["edge-runtime", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    saved, sys.argv = sys.argv, argv
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (exit code 1, our error, no traceback)."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# -- wire helpers -----------------------------------------------------------------------------
def v2_json(name: str, x: Array, datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype,
                        "data": np.asarray(x).reshape(-1).tolist()}], **extra}


def v2_binary(inputs: dict[str, tuple[str, Array]], outputs: list[dict[str, Any]] | None = None
              ) -> tuple[bytes, dict[str, str]]:
    """A Triton binary-tensor request body and its headers; inputs: name -> (datatype, array)."""
    header: dict[str, Any] = {"inputs": [
        {"name": n, "shape": list(a.shape), "datatype": dt,
         "parameters": {"binary_data_size": a.nbytes}} for n, (dt, a) in inputs.items()]}
    if outputs is not None:
        header["outputs"] = outputs
    head = json.dumps(header).encode()
    body = head + b"".join(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
                           for _dt, a in inputs.values())
    return body, {"Inference-Header-Content-Length": str(len(head)),
                  "Content-Type": "application/octet-stream"}


def split_binary_response(body: bytes, header_length: int) -> tuple[dict[str, Any], bytes]:
    return json.loads(body[:header_length]), body[header_length:]


class Reply:
    """One HTTP response: status, lower-cased headers, body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self, status: int) -> str:
        """The message of an error response, after checking its status and JSON shape."""
        assert self.status == status, (self.status, self.body[:500])
        assert self.headers["content-type"] == "application/json"
        doc = self.json()
        assert set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"], doc
        return str(doc["error"])


def call(url: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, *, conn: HTTPConnection | None = None) -> Reply:
    """One request over a fresh connection to URL (or over ``conn``, kept open)."""
    own = conn is None
    if conn is None:
        parts = urlsplit(url)
        conn = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        if own:
            conn.close()


def post_json(url: str, path: str, doc: Any, headers: dict[str, str] | None = None) -> Reply:
    return call(url, "POST", path, json.dumps(doc).encode(),
                {"Content-Type": "application/json", **(headers or {})})
