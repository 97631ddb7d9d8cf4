"""Error -> HTTP status, in one place. Every error body is ``{"error": "..."}``."""

from __future__ import annotations

from edge_runtime.errors import (
    ConfigError,
    EdgeRuntimeError,
    InferenceFailed,
    ModelNotFound,
    ModelNotReady,
    PackageError,
    PayloadInvalid,
    PayloadTooLarge,
    SwapError,
    Unauthorized,
)

STATUS: dict[type[EdgeRuntimeError], int] = {
    ModelNotFound: 404,
    ModelNotReady: 400,  # Triton answers 400 for a known model that is not ready
    PayloadInvalid: 400,
    PayloadTooLarge: 413,
    Unauthorized: 401,
    InferenceFailed: 500,
    SwapError: 409,
    PackageError: 422,
    ConfigError: 400,
}


def status_for(exc: EdgeRuntimeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500
