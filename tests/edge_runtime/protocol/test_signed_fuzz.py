"""Property tests of the desired-state gate: whatever bytes arrive, it either refuses them with
a DesiredRefused or accepts exactly what the fleet key signed; a mutated envelope never gets
through with other content."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.protocol import messages as m
from edge_runtime.protocol.signed import CONTEXT, DesiredGate, DesiredRefused, Refusal, seal
from edge_runtime.signing import Signer, TrustStore, generate_keypair

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
SHA = "ab" * 32
DOC = {"schema_version": 1, "fleet": "default", "device": "dev-a", "generation": 7,
       "models": {"digits": {"version": "2", "deployment": "d-1", "artifact": {
           "sha256": SHA, "size": 10, "chunk_size": 8, "chunks": [SHA, SHA]}}}, "ts": 1.0}


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Path]:
    priv, pub = generate_keypair(tmp_path_factory.mktemp("k"), "fleet")
    return Signer.load(priv), pub


def _gate(pub: Path, *, allow_unsigned: bool = False) -> DesiredGate:
    return DesiredGate(TrustStore.load([pub]), device="dev-a", fleet="default",
                       allow_unsigned=allow_unsigned)


def test_a_signed_document_opens(signer: tuple[Signer, Path]) -> None:
    s, pub = signer
    opened = _gate(pub).open(seal(DOC, s), None)
    assert opened is not None and opened.desired.generation == 7
    assert opened.key_id == s.key_id and orjson.loads(opened.payload) == DOC


def test_the_context_prefix_is_signed(signer: tuple[Signer, Path]) -> None:
    """A signature over the bare document (as a manifest signature would be) does not verify."""
    s, pub = signer
    env = orjson.loads(seal(DOC, s))
    env["signature"] = s.sign(orjson.dumps(DOC))
    with pytest.raises(DesiredRefused) as err:
        _gate(pub).open(orjson.dumps(env), None)
    assert err.value.refusal is Refusal.BAD_SIGNATURE
    assert s.sign(CONTEXT + orjson.dumps(DOC)) == orjson.loads(seal(DOC, s))["signature"]


@FUZZ
@given(data=st.data())
def test_flipped_bytes_never_change_what_is_accepted(signer: tuple[Signer, Path],
                                                     data: st.DataObject) -> None:
    s, pub = signer
    raw = bytearray(seal(DOC, s))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    for allow_unsigned in (False, True):
        try:
            opened = _gate(pub, allow_unsigned=allow_unsigned).open(bytes(raw), None)
        except DesiredRefused:
            continue
        # only a change the signature does not cover (none of the document's bytes) gets by,
        # or, with allow_unsigned, a signature that now names an unknown key
        assert opened is not None
        assert orjson.loads(opened.payload) == DOC or (allow_unsigned and opened.key_id is None)


@FUZZ
@given(raw=st.binary(max_size=512) | st.builds(
    lambda d: json.dumps(d).encode(), st.dictionaries(st.sampled_from(
        ["schema_version", "payload", "signature", "generation"]),
        st.none() | st.integers() | st.text(max_size=20) | st.dictionaries(
            st.text(max_size=5), st.text(max_size=5), max_size=3), max_size=4)))
def test_arbitrary_bytes_are_refused_cleanly(signer: tuple[Signer, Path], raw: bytes) -> None:
    _s, pub = signer
    for allow_unsigned in (False, True):
        with pytest.raises(m.MessageInvalid):
            _gate(pub, allow_unsigned=allow_unsigned).open(raw, None)


@FUZZ
@given(generation=st.integers(0, 2**63 - 1), device=st.sampled_from(["dev-a", "dev-b"]),
       last=st.integers(0, 2**63 - 1))
def test_only_newer_documents_for_this_device(signer: tuple[Signer, Path], generation: int,
                                              device: str, last: int) -> None:
    s, pub = signer
    previous = m.Desired(last, {}, 0.0)
    raw = seal({**DOC, "generation": generation, "device": device}, s)
    try:
        opened = _gate(pub).open(raw, previous)
    except DesiredRefused as exc:
        assert device != "dev-a" or generation <= last, exc
        return
    assert opened is not None and device == "dev-a" and generation > last
