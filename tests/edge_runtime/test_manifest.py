from __future__ import annotations

import pytest

from edge_runtime.errors import ManifestInvalid
from edge_runtime.manifest import Manifest, canonical_json, validate_name
from tests.edge_runtime.test_package import manifest


def test_round_trip_and_canonical() -> None:
    m = manifest()
    again = Manifest.from_bytes(m.canonical_bytes())
    assert again == m
    assert m.canonical_bytes() == canonical_json(again.to_dict())
    assert b" " not in m.canonical_bytes().replace(b"edge-runtime", b"")
    assert m.inputs[0].is_dynamic


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("schema_version", 99, "schema_version"),
        ("format", "pt", "format"),
        ("name", "../evil", "name"),
        ("model_file", "missing.onnx", "model_file"),
        ("files", {"model.onnx": "abc"}, "files"),
        ("inputs", [], "inputs"),
        ("inputs", [{"name": "x", "dtype": "complex", "shape": [1]}], "dtype"),
        ("inputs", [{"name": "x", "dtype": "float32", "shape": [-1]}], "shape"),
    ],
)
def test_invalid_fields(field: str, value: object, match: str) -> None:
    data = manifest().to_dict()
    data[field] = value
    with pytest.raises(ManifestInvalid, match=match) as info:
        Manifest.from_dict(data)
    assert info.value.field.startswith(field)


def test_validate_name() -> None:
    assert validate_name("version", "1.2.0-rc1") == "1.2.0-rc1"
    with pytest.raises(ManifestInvalid):
        validate_name("version", "1/2")
