"""Signed desired-state documents: the manager seals, the device opens and checks.

On the wire (the retained ``desired`` topic) a document travels in an envelope::

    {"schema_version": 1, "payload": "<base64 of the document's JSON bytes>",
     "signature": {"alg": "ed25519", "key_id": "<16 hex>", "sig": "<base64>"} | null}

The signature covers ``CONTEXT + payload`` (the exact bytes, no canonical form to disagree on);
the context keeps a desired-state signature from ever verifying as a package manifest's, so a
fleet may sign both with one key. The document names its fleet and device next to its
generation, so a signed document cannot be replayed to another device or fleet, and a device
that remembers its last accepted generation cannot be rolled back.

A refusal is a ``DesiredRefused`` (a ``MessageInvalid``) carrying a ``Refusal`` reason.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass
from typing import Any

import orjson

from edge_runtime.errors import PackageFormatError, SignatureError, UntrustedKey
from edge_runtime.protocol import messages as m
from edge_runtime.signing import Signer, TrustStore

__all__ = ["CONTEXT", "MAX_ENVELOPE_BYTES", "DesiredGate", "DesiredRefused", "Opened",
           "Refusal", "seal"]

CONTEXT = b"edge-runtime desired v1\n"
# A desired document lists a sha256 per 64 KiB chunk of every model: 8 MiB covers gigabytes.
MAX_ENVELOPE_BYTES = 8 * 2**20
KIND = "desired"


class Refusal(enum.Enum):
    MALFORMED = "malformed"  # not an envelope, or a document that fails its schema
    UNSIGNED = "unsigned"
    UNTRUSTED_KEY = "untrusted_key"
    BAD_SIGNATURE = "bad_signature"
    WRONG_DEVICE = "wrong_device"
    WRONG_FLEET = "wrong_fleet"
    ROLLED_BACK = "rolled_back"  # generation below the last accepted one
    REPLAYED = "replayed"  # the last accepted generation, with other content


class DesiredRefused(m.MessageInvalid):
    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(KIND, f"{refusal.value}: {detail}")
        self.refusal = refusal
        self.detail = detail


def seal(document: dict[str, Any], signer: Signer | None) -> bytes:
    """The envelope for one document (``signer`` None: unsigned, for development fleets)."""
    payload = orjson.dumps(document)
    signature = signer.sign(CONTEXT + payload) if signer is not None else None
    return orjson.dumps({"schema_version": m.SCHEMA_VERSION,
                         "payload": base64.b64encode(payload).decode(), "signature": signature})


def _unwrap(raw: bytes) -> tuple[bytes, dict[str, Any] | None]:
    """(document bytes, signature record or None) of an envelope."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise DesiredRefused(Refusal.MALFORMED, f"{len(raw)} bytes > {MAX_ENVELOPE_BYTES}")
    try:
        env = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DesiredRefused(Refusal.MALFORMED, f"not JSON ({exc})") from exc
    if not isinstance(env, dict) or env.get("schema_version") != m.SCHEMA_VERSION:
        raise DesiredRefused(Refusal.MALFORMED, "not a version 1 envelope")
    payload, sig = env.get("payload"), env.get("signature")
    if not isinstance(payload, str):
        if "generation" in env:  # what managers sent before documents were signed
            raise DesiredRefused(Refusal.UNSIGNED, "a bare document, not a signed envelope")
        raise DesiredRefused(Refusal.MALFORMED, "envelope without a payload")
    if sig is not None and not isinstance(sig, dict):
        raise DesiredRefused(Refusal.MALFORMED, "signature is not an object")
    try:
        return base64.b64decode(payload, validate=True), sig
    except (binascii.Error, ValueError) as exc:
        raise DesiredRefused(Refusal.MALFORMED, f"payload is not base64 ({exc})") from exc


@dataclass(frozen=True)
class Opened:
    """An accepted document: what it says, its exact bytes (kept by the device), its signer."""

    desired: m.Desired
    payload: bytes
    key_id: str | None


class DesiredGate:
    """A device's checks on every desired document before it may change anything.

    Trusts ``trust``'s keys; ``allow_unsigned`` (development) also takes documents that are
    unsigned or signed by an unknown key, as packages' ``--allow-unsigned`` does. A signature by a
    trusted key that does not verify is refused either way, and so are documents for another
    device or fleet, or not newer than the last accepted one.
    """

    def __init__(self, trust: TrustStore, *, device: str, fleet: str,
                 allow_unsigned: bool = False) -> None:
        self.trust = trust
        self.device = device
        self.fleet = fleet
        self.allow_unsigned = allow_unsigned

    def open(self, raw: bytes, last: m.Desired | None) -> Opened | None:
        """The accepted document; None for the last accepted one again (a retained redelivery,
        not news); raises DesiredRefused."""
        payload, sig = _unwrap(raw)
        key_id = self._check_signature(payload, sig)
        desired = self._decode(payload)
        if last is not None and desired.generation <= last.generation:
            if desired.generation == last.generation and desired.models == last.models:
                return None
            refusal = (Refusal.REPLAYED if desired.generation == last.generation
                       else Refusal.ROLLED_BACK)
            raise DesiredRefused(refusal, f"generation {desired.generation}, the last accepted "
                                          f"is {last.generation}")
        return Opened(desired, payload, key_id)

    def _check_signature(self, payload: bytes, sig: dict[str, Any] | None) -> str | None:
        if sig is None:
            if self.allow_unsigned:
                return None
            raise DesiredRefused(Refusal.UNSIGNED, "no signature (devices accept unsigned "
                                                   "desired states only with "
                                                   "--allow-unsigned-desired)")
        if self.allow_unsigned and sig.get("key_id") not in self.trust.key_ids:
            return None
        try:
            return self.trust.verify("desired state", CONTEXT + payload, sig)
        except UntrustedKey as exc:
            raise DesiredRefused(Refusal.UNTRUSTED_KEY, f"signed by key {exc.key_id}, which "
                                                        "is not a trusted fleet key") from exc
        except PackageFormatError as exc:
            raise DesiredRefused(Refusal.MALFORMED, "signature is not an ed25519 record") from exc
        except SignatureError as exc:
            raise DesiredRefused(Refusal.BAD_SIGNATURE, f"signature by key {sig.get('key_id')} "
                                                        "does not verify (forged or altered)"
                                 ) from exc

    def _decode(self, payload: bytes) -> m.Desired:
        try:
            desired = m.Desired.decode(payload)
            doc = orjson.loads(payload)
        except m.MessageInvalid as exc:
            raise DesiredRefused(Refusal.MALFORMED, exc.reason) from exc
        device, fleet = doc.get("device"), doc.get("fleet")
        if device != self.device:
            raise DesiredRefused(Refusal.WRONG_DEVICE, f"document for device {device!r}")
        if fleet != self.fleet:
            raise DesiredRefused(Refusal.WRONG_FLEET, f"document for fleet {fleet!r}")
        return desired
