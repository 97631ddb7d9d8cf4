"""Wire codecs: request bodies to ``{name: array}`` and output arrays back to response bodies.

    v2          KServe V2 / Open Inference Protocol REST (JSON and Triton binary tensors)
    tfserving   TF-Serving REST predict (row "instances" and columnar "inputs")
    simple      the one-line ``POST /predict/{name}`` format

Decoders check the wire format only; ``edge_runtime.inputs.validate_inputs`` then checks the
arrays against the model's input specs. Errors are ``PayloadInvalid`` / ``InputInvalid``.
"""

from __future__ import annotations

from edge_runtime.codecs.datatypes import (
    datatype_of,
    datatype_of_manifest,
    dtype_of,
    manifest_dtype_of,
)
from edge_runtime.codecs.simple import decode_simple, encode_simple
from edge_runtime.codecs.tfserving import decode_predict, encode_predict
from edge_runtime.codecs.v2 import (
    HEADER_LENGTH,
    InferRequest,
    check_outputs,
    decode_plain,
    decode_request,
    encode_plain,
    encode_response,
    model_metadata,
)

__all__ = [
    "HEADER_LENGTH",
    "InferRequest",
    "check_outputs",
    "datatype_of",
    "datatype_of_manifest",
    "decode_plain",
    "decode_predict",
    "decode_request",
    "decode_simple",
    "dtype_of",
    "encode_plain",
    "encode_predict",
    "encode_response",
    "encode_simple",
    "manifest_dtype_of",
    "model_metadata",
]
