"""The two baselines of the serving benchmark, each serving one ONNX model on one port.

    python bench/serve_baselines.py flask MODEL.onnx PORT   # the seed's pattern, werkzeug server
    python bench/serve_baselines.py asgi MODEL.onnx PORT    # minimal raw ASGI on uvicorn

Both take the same V2 JSON request body as the daemon (``{"inputs": [{"name", "shape",
"datatype", "data"}]}``) and run onnxruntime with one intra-op thread. Neither validates,
monitors, batches or caches: they are the floor (ASGI) and the common practice (Flask).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
V2_NAMES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64",
            "tensor(int32)": "INT32"}


def session(path: str) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def flask_app(path: str) -> Any:
    """The seed's Flask pattern: request.json -> numpy -> session.run -> jsonify."""
    from flask import Flask, jsonify, request

    app = Flask(__name__)
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]

    @app.route("/predict", methods=["POST"])
    def predict() -> Any:
        data = request.json
        feed = {i["name"]: np.asarray(i["data"], dtype=DTYPES[i["datatype"]]).reshape(i["shape"])
                for i in data["inputs"]}
        results = sess.run(None, feed)
        return jsonify({"outputs": [{"name": n, "shape": list(r.shape), "data": r.ravel().tolist()}
                                    for n, r in zip(names, results, strict=True)]})

    return app


def asgi_app(path: str) -> Any:
    """Decode a V2 JSON body, run the session, encode a V2 JSON response. Nothing else."""
    import orjson

    sess = session(path)
    outs = [(o.name, V2_NAMES[o.type]) for o in sess.get_outputs()]
    headers = [(b"content-type", b"application/json")]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        doc = orjson.loads(b"".join(chunks))
        feed = {i["name"]: np.asarray(i["data"], dtype=DTYPES[i["datatype"]]).reshape(i["shape"])
                for i in doc["inputs"]}
        results = sess.run(None, feed)
        body = orjson.dumps(
            {"model_name": "m", "model_version": "1", "outputs": [
                {"name": n, "datatype": t, "shape": list(r.shape), "data": r.reshape(-1)}
                for (n, t), r in zip(outs, results, strict=True)]},
            option=orjson.OPT_SERIALIZE_NUMPY)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    kind, path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "flask":
        # What the seed's `app.run()` does: werkzeug's development server, one thread per request.
        flask_app(path).run(host="127.0.0.1", port=port, threaded=True)
    elif kind == "asgi":
        import uvicorn

        uvicorn.run(asgi_app(path), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                    lifespan="off", access_log=False, log_level="warning")
    else:
        sys.exit(f"unknown baseline {kind!r}: flask or asgi")


if __name__ == "__main__":
    main()
