"""The model package manifest: what a package holds, validated on read, canonical for signing."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

from edge_runtime.errors import ManifestInvalid

SCHEMA_VERSION = 1
FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static", "int8-weight-only")
TASKS = ("classification", "regression", "other")
DTYPES = (
    "float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool", "string",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# The package's own members: never listed in ``files`` (one is the manifest, one signs it).
RESERVED_NAMES = ("manifest.json", "signature.json")
MAX_FILE_NAME_BYTES = 255
_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")

Dim = int | str
Format = Literal["onnx", "tflite"]


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output. A dynamic dimension is a string (its symbolic name)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Any, where: str, src: str = "manifest.json") -> TensorSpec:
        if not isinstance(data, dict):
            raise ManifestInvalid(src, where, "must be an object")
        name, dtype, shape = data.get("name"), data.get("dtype"), data.get("shape")
        if not isinstance(name, str) or not name:
            raise ManifestInvalid(src, f"{where}.name", "must be a non-empty string")
        if dtype not in DTYPES:
            raise ManifestInvalid(src, f"{where}.dtype", f"{dtype!r} not in {DTYPES}")
        if not isinstance(shape, list) or not all(_is_dim(d) for d in shape):
            raise ManifestInvalid(
                src, f"{where}.shape", "must be a list of ints >= 0 or dim names"
            )
        return cls(name=name, dtype=dtype, shape=tuple(shape))

    @property
    def is_dynamic(self) -> bool:
        return any(isinstance(d, str) for d in self.shape)


def _is_dim(d: Any) -> bool:
    if isinstance(d, bool):
        return False
    return (isinstance(d, int) and d >= 0) or (isinstance(d, str) and bool(d))


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    format: Format
    precision: str
    model_file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    files: dict[str, str]
    source: dict[str, Any]
    converter: dict[str, Any]
    created_at: str
    task: str = "other"
    options: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"] = [t.to_dict() for t in self.inputs]
        data["outputs"] = [t.to_dict() for t in self.outputs]
        return data

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed: sorted keys, no whitespace, UTF-8."""
        return canonical_json(self.to_dict())

    @property
    def package_name(self) -> str:
        return f"{self.name}-{self.version}.edgepkg"

    @classmethod
    def from_dict(cls, data: Any, src: str = "manifest.json") -> Manifest:
        if not isinstance(data, dict):
            raise ManifestInvalid(src, "<root>", "must be a JSON object")
        sv = data.get("schema_version")
        if sv != SCHEMA_VERSION:
            raise ManifestInvalid(
                src, "schema_version", f"{sv!r} is not supported (want {SCHEMA_VERSION})"
            )
        _check_choice(src, data, "format", FORMATS)
        _check_choice(src, data, "precision", PRECISIONS)
        _check_choice(src, data, "task", TASKS)
        for key in ("name", "version"):
            if not isinstance(data.get(key), str) or not _NAME_RE.match(data[key]):
                raise ManifestInvalid(src, key, f"{data.get(key)!r} is not a valid {key}")
        files = _files(src, data.get("files"))
        model_file = data.get("model_file")
        if not isinstance(model_file, str) or model_file not in files:
            raise ManifestInvalid(src, "model_file", f"{model_file!r} is not in files")
        for key in ("source", "converter", "options"):
            if not isinstance(data.get(key, {}), dict):
                raise ManifestInvalid(src, key, "must be an object")
        return cls(
            name=data["name"],
            version=data["version"],
            format=cast(Format, data["format"]),
            precision=data["precision"],
            model_file=model_file,
            inputs=_specs(src, data, "inputs"),
            outputs=_specs(src, data, "outputs"),
            files=files,
            source=dict(data.get("source", {})),
            converter=dict(data.get("converter", {})),
            created_at=str(data.get("created_at", "")),
            task=data.get("task", "other"),
            options=dict(data.get("options", {})),
        )

    @classmethod
    def from_bytes(cls, raw: bytes, src: str = "manifest.json") -> Manifest:
        return cls.from_dict(parse_json(raw, src), src)


def parse_json(raw: bytes, src: str) -> Any:
    try:
        data = json.loads(raw)
        canonical_json(data)  # "\ud800" escapes decode to text no file system or log can take
    except (ValueError, RecursionError) as exc:  # also: huge int literals, deep nesting
        raise ManifestInvalid(src, "<root>", f"not valid JSON ({exc})") from exc
    return data


def file_name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain file name a package may hold, or None when it is.

    Plain: one path component (no ``/`` or ``\\``), not ``.``/``..``/hidden, no NUL, control,
    format or line-separator characters, valid UTF-8 of at most 255 bytes (the usual NAME_MAX).
    """
    if not name:
        return "is empty"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if name.startswith(".") or ".." in name:
        return "starts with a dot or contains '..'"
    if any(unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")
           for c in name):
        return "contains NUL, control or invisible characters"
    if len(name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        return f"is longer than {MAX_FILE_NAME_BYTES} bytes"
    return None


def _files(src: str, files: Any) -> dict[str, str]:
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _SHA256_RE.match(v) for k, v in files.items()
    ):
        raise ManifestInvalid(src, "files", "must map member names to sha256 hex")
    for name in files:
        problem = "is reserved" if name in RESERVED_NAMES else file_name_problem(name)
        if problem is not None:
            raise ManifestInvalid(src, "files", f"member name {name!r} {problem}")
    return dict(files)


def _check_choice(src: str, data: dict[str, Any], key: str, choices: tuple[str, ...]) -> None:
    value = data.get(key, "other" if key == "task" else None)
    if value not in choices:
        raise ManifestInvalid(src, key, f"{value!r} is not one of {choices}")


def _specs(src: str, data: dict[str, Any], key: str) -> tuple[TensorSpec, ...]:
    items = data.get(key)
    if not isinstance(items, list) or not items:
        raise ManifestInvalid(src, key, "must be a non-empty list")
    return tuple(TensorSpec.from_dict(item, f"{key}[{i}]", src) for i, item in enumerate(items))


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def validate_name(kind: str, value: str) -> str:
    """Check a model name or version before it becomes a file name."""
    if not _NAME_RE.match(value):
        raise ManifestInvalid(
            "manifest.json", kind, f"{value!r} must match {_NAME_RE.pattern} (letters, digits, ._-)"
        )
    return value
