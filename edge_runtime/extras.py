"""Optional dependencies, checked up front and named by the extra that installs them."""

from __future__ import annotations

import importlib.util

from edge_runtime.errors import ExtraMissing


def require(module: str, *, feature: str, extra: str) -> None:
    """Raise ``ExtraMissing`` unless ``module`` can be imported (it is not imported here)."""
    if importlib.util.find_spec(module) is None:
        raise ExtraMissing(feature, extra)
