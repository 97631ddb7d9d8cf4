"""Hostile batches through the manager's whole ingest path (decoders, enrollment, SQL): valid
messages with one field replaced, arbitrary bytes, on every device topic. Ingest never raises,
every message is either applied or dropped with a reason, and the database holds only values
that fit the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.protocol.link import Message
from edge_runtime.protocol.memory import InMemoryBroker, InMemoryLink
from edge_runtime.protocol.schema import MAX_INT, MAX_TS
from edge_runtime.protocol.topics import TopicScheme
from fleet.core import Fleet
from fleet.manager import FleetManager
from fleet.settings import ManagerSettings
from tests.conftest import Keys
from tests.edge_runtime.protocol.test_decoders_fuzz import NASTY, VALID, _doc, _paths, _replace

T = TopicScheme("default")
TOPIC_OF = {"status": "status", "heartbeat": "heartbeat", "reported": "reported",
            "event": "events", "metrics": "telemetry", "feedback": "telemetry",
            "drift": "telemetry", "artifact_req": "artifact/req"}


@st.composite
def messages(draw: st.DrawFn) -> Message:
    name = draw(st.sampled_from(sorted(TOPIC_OF)))
    device = draw(st.sampled_from(["dev", "dev", "stranger"]))
    topic = T.device(device, TOPIC_OF[name])
    how = draw(st.sampled_from(["valid", "mutated", "mutated", "bytes"]))
    if how == "bytes":
        return Message(topic, draw(st.binary(max_size=200)))
    doc = dict(VALID[name], msg_id=f"id-{draw(st.integers(0, 50))}") \
        if "msg_id" in VALID[name] else VALID[name]
    if how == "mutated":
        doc = _replace(doc, draw(st.sampled_from(_paths(doc))), draw(NASTY))
    return Message(topic, _doc(**doc), retain=draw(st.booleans()))


def test_hostile_batches(tmp_path: Path, keys: Keys, fleet_pkgs: dict[str, Path]) -> None:
    fleet = Fleet(ManagerSettings(db=tmp_path / "fleet.db", artifacts=tmp_path / "art",
                                  trusted_keys=(keys.public,)))
    fleet.registry.publish(fleet_pkgs["2"])
    fleet.inventory.register("dev")
    manager = FleetManager(fleet, lambda **kw: InMemoryLink(InMemoryBroker(), **kw))
    seen = {"n": 0}

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(batch=st.lists(messages(), min_size=1, max_size=12))
    def ingest(batch: list[Message]) -> None:
        before = manager.stats["messages"]
        manager.ingest(batch)
        seen["n"] += len(batch)
        assert manager.stats["messages"] == before + len(batch)

    ingest()
    counts = manager.ingestor.counts
    assert counts.messages == seen["n"] and 0 < counts.dropped < counts.messages
    assert all(reason != "error" for _kind, reason in counts.drops), counts.drops
    assert [d.id for d in fleet.inventory.devices()] == ["dev"]  # the stranger never joined
    _check_database(fleet)


def _check_database(fleet: Fleet) -> None:
    """Every number stored fits SQLite's INTEGER or is a finite time; JSON columns parse."""
    db = fleet.db
    for row in db.query("SELECT session, reported_generation, last_seen, reported FROM devices"):
        assert 0 <= row[0] <= MAX_INT and 0 <= row[1] <= MAX_INT and 0 <= row[2] <= MAX_TS
        assert row[3] is None or isinstance(json.loads(row[3]), dict)
    for row in db.query("SELECT requests, errors, start, end, latency FROM metrics"):
        assert 0 <= row[0] <= MAX_INT and 0 <= row[1] <= MAX_INT
        assert 0 <= row[2] <= MAX_TS and 0 <= row[3] <= MAX_TS
        assert isinstance(json.loads(row[4]), dict)
    for n, correct in db.query("SELECT n, correct FROM feedback"):
        assert 0 <= correct <= n <= MAX_INT
    for row in db.query("SELECT ts FROM events UNION ALL SELECT ts FROM device_state"):
        assert 0 <= row[0] <= MAX_TS
    types: set[Any] = {r[0] for r in db.query(
        "SELECT typeof(session) FROM devices UNION SELECT typeof(requests) FROM metrics")}
    assert types <= {"integer"}
