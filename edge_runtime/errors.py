"""Exception tree for edge-runtime. Imports no framework: transports map these to status codes.

    EdgeRuntimeError
    ├── ConfigError                      bad settings or command-line values
    │   └── ExtraMissing(feature, extra)  a setting needs an extra that is not installed
    ├── BackendUnavailable(backend, hint) an optional library is missing
    ├── UnsupportedPlatform(machine, pointer_bits)  32-bit ARM: no wheels for the runtime
    ├── PackageError(path)               anything wrong with a model package
    │   ├── PackageFormatError           not a package, missing member, bad manifest JSON
    │   ├── ManifestInvalid(field)       manifest fails schema validation
    │   ├── IntegrityError(member)       a file's sha256 does not match the manifest
    │   └── SignatureError               signature problems
    │       ├── UnsignedPackage          no signature and --allow-unsigned not given
    │       ├── UntrustedKey(key_id)     signed by a key that is not trusted
    │       └── BadSignature(key_id)     the signature does not verify (tampered manifest)
    ├── KeyFileError(path)               a key file cannot be read or written
    ├── ModelNotFound(name, version)     no such model/version installed or loaded
    ├── ModelNotReady(name, version)     installed but not loaded/active
    ├── PayloadInvalid(reason)           a request body that cannot be decoded (bad JSON, ...)
    │   └── InputInvalid(input, reason)  decoded, but does not fit the manifest (name/dtype/shape)
    ├── PayloadTooLarge(size, limit)     request body over the configured limit
    ├── Unauthorized                     missing or wrong bearer token
    ├── InferenceFailed(name, version)   the backend raised while running a valid request
    └── SwapError(name, version)         install/activate/rollback could not be done

Converter errors (``converters.errors``) derive from ``EdgeRuntimeError`` too, so every CLI catches
one base class at its edge.
"""

from __future__ import annotations

from pathlib import Path


class EdgeRuntimeError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(EdgeRuntimeError):
    """Settings or command-line values that cannot be used."""


class ExtraMissing(ConfigError):
    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} needs the {extra!r} extra: "
                         f"pip install 'edge-runtime[{extra}]'")
        self.feature = feature
        self.extra = extra


class BackendUnavailable(EdgeRuntimeError):
    def __init__(self, backend: str, *, hint: str) -> None:
        super().__init__(f"backend {backend!r} is not available: {hint}")
        self.backend = backend
        self.hint = hint


class UnsupportedPlatform(EdgeRuntimeError):
    MESSAGE = ("edge-runtime needs a 64-bit OS (aarch64/x86_64): onnxruntime, ai-edge-litert and "
               "numpy publish no wheels for 32-bit ARM")

    def __init__(self, machine: str, pointer_bits: int) -> None:
        super().__init__(self.MESSAGE)
        self.machine = machine
        self.pointer_bits = pointer_bits


class PackageError(EdgeRuntimeError):
    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class PackageFormatError(PackageError):
    """The file is not a readable model package."""


class ManifestInvalid(PackageError):
    def __init__(self, path: str | Path, field: str, reason: str) -> None:
        super().__init__(path, f"manifest field {field!r}: {reason}")
        self.field = field


class IntegrityError(PackageError):
    def __init__(self, path: str | Path, member: str, expected: str, actual: str) -> None:
        super().__init__(
            path, f"sha256 of {member!r} is {actual[:16]}..., manifest says {expected[:16]}..."
        )
        self.member = member
        self.expected = expected
        self.actual = actual


class SignatureError(PackageError):
    """The package signature is missing, untrusted or invalid."""


class UnsignedPackage(SignatureError):
    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "package is not signed (use --allow-unsigned only for development)")


class UntrustedKey(SignatureError):
    def __init__(self, path: str | Path, key_id: str) -> None:
        super().__init__(path, f"signed by key {key_id}, which is not in the trusted keys")
        self.key_id = key_id


class BadSignature(SignatureError):
    def __init__(self, path: str | Path, key_id: str) -> None:
        super().__init__(
            path, f"signature by key {key_id} does not match the manifest (tampered package?)"
        )
        self.key_id = key_id


class KeyFileError(EdgeRuntimeError):
    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ModelNotFound(EdgeRuntimeError):
    def __init__(self, name: str, version: str | None = None) -> None:
        what = name if version is None else f"{name} version {version}"
        super().__init__(f"model {what} not found")
        self.name = name
        self.version = version


class ModelNotReady(EdgeRuntimeError):
    def __init__(self, name: str, version: str | None = None) -> None:
        what = name if version is None else f"{name} version {version}"
        super().__init__(f"model {what} is not ready")
        self.name = name
        self.version = version


class PayloadInvalid(EdgeRuntimeError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InputInvalid(PayloadInvalid):
    def __init__(self, input_name: str, reason: str) -> None:
        super().__init__(f"input {input_name!r}: {reason}")
        self.input_name = input_name


class PayloadTooLarge(EdgeRuntimeError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"request body of {size} bytes is over the {limit} byte limit")
        self.size = size
        self.limit = limit


class Unauthorized(EdgeRuntimeError):
    def __init__(self, reason: str = "missing or wrong bearer token") -> None:
        super().__init__(reason)


class InferenceFailed(EdgeRuntimeError):
    def __init__(self, name: str, version: str, reason: str) -> None:
        super().__init__(f"model {name} version {version} failed: {reason}")
        self.name = name
        self.version = version
        self.reason = reason


class SwapError(EdgeRuntimeError):
    def __init__(self, name: str, version: str | None, reason: str) -> None:
        what = name if version is None else f"{name} {version}"
        super().__init__(f"{what}: {reason}")
        self.name = name
        self.version = version
        self.reason = reason
