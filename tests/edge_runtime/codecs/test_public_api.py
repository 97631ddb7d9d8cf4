"""The public surface of edge_runtime.codecs is explicit and importable."""

from __future__ import annotations

from edge_runtime import codecs


def test_all_names_resolve() -> None:
    assert sorted(codecs.__all__) == codecs.__all__
    for name in codecs.__all__:
        assert getattr(codecs, name) is not None
