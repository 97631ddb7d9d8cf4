"""The telemetry store (one ``outbox`` table, ``telemetry`` a view of it): messages as the fleet
link sends them, acknowledgements of telemetry rows kept until the next flush, the in-memory
low-water mark of unsent rows checked against a model under random operations (hypothesis),
batched pruning, the migration of a version-1 store with nothing lost, and the pages a flush
writes (the SD-card wear budget)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.store.db import MIGRATIONS, Database
from edge_runtime.store.telemetry import Limits, OutboxMessage, TelemetryStore


def row(i: int, kind: str = "metrics", *, end: float | None = None) -> dict[str, Any]:
    end = time.time() if end is None else end
    return {"kind": kind, "model": "digits", "version": "1", "start": end - 10, "end": end,
            "payload": {"requests": i, "latency": {"bins": {str(b): b for b in range(20)}}}}


def unsent_in_table(db: Database) -> int:
    return int(db.query("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")[0][0])


def test_messages_as_sent(tmp_path: Path) -> None:
    db = Database(tmp_path / "store.db")
    store = TelemetryStore(db)
    store.append([row(1), row(2, "drift")])
    event_id = store.enqueue("event", {"kind": "swap", "model": "digits", "state": "committed"})
    batch = store.pending()
    assert [m.kind for m in batch] == ["metrics", "drift", "event"]
    first = batch[0].payload
    assert set(first) == {"msg_id", "kind", "model", "version", "start", "end", "payload"}
    assert first["msg_id"] == batch[0].msg_id and first["payload"]["requests"] == 1
    assert batch[2].payload == {"msg_id": event_id, "kind": "swap", "model": "digits",
                                "state": "committed"}
    assert [r["payload"]["requests"] for r in store.recent("metrics")] == [1]
    assert store.recent("event") == []  # the local history holds telemetry rows only
    assert len(db.query("SELECT * FROM telemetry")) == 2
    assert store.counts() == {"telemetry": 2, "outbox": 3, "outbox_unsent": 3, "dropped": 0}


def test_telemetry_acks_wait_for_the_next_flush(tmp_path: Path) -> None:
    db = Database(tmp_path / "store.db")
    store = TelemetryStore(db)
    store.append([row(1), row(2)])
    store.mark_sent([m.id for m in store.pending()])
    assert store.pending() == [] and store.counts()["outbox_unsent"] == 0
    assert unsent_in_table(db) == 2  # no transaction of their own
    store.append([row(3)])
    assert unsent_in_table(db) == 1 and [m.payload["payload"]["requests"]
                                         for m in store.pending()] == [3]


def test_event_acks_are_written_at_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "store.db")
    store = TelemetryStore(db)
    store.append([row(1)])
    store.enqueue("event", {"kind": "swap"})
    store.mark_sent([m.id for m in store.pending()])
    assert unsent_in_table(db) == 0  # the event's ack carried the telemetry row's along


def test_acks_lost_in_a_crash_mean_a_resend_with_the_same_ids(tmp_path: Path) -> None:
    db = Database(tmp_path / "store.db")
    store = TelemetryStore(db)
    store.append([row(1), row(2)])
    first = store.pending()
    store.mark_sent([m.id for m in first])
    db.close()  # the process dies before its next flush
    again = TelemetryStore(Database(tmp_path / "store.db")).pending()
    assert [m.msg_id for m in again] == [m.msg_id for m in first]


def test_pruning_in_batches(tmp_path: Path) -> None:
    db = Database(tmp_path / "store.db")
    store = TelemetryStore(db, Limits(max_rows=100))
    store.append([row(i) for i in range(100)])
    assert store.counts()["outbox"] == 100
    store.mark_sent([m.id for m in store.pending(limit=60)])
    store.append([row(100)])  # 101 rows: trimmed to 95, the 60 sent ones first
    counts = store.counts()
    assert counts["outbox"] == 95 and counts["dropped"] == 0
    for i in range(5):
        store.append([row(101 + i)])
        assert store.counts()["outbox"] == 96 + i  # no delete until the bound is passed again
    store.append([row(200 + i) for i in range(60)])  # 160 rows: the oldest 65 go,
    counts = store.counts()                            # 54 sent (7..60) and 11 unsent
    assert counts["outbox"] == 95 and counts["dropped"] == 11
    assert store.pending()[0].payload["payload"]["requests"] == 71  # row 72 on


def test_retention_deletes_ahead_and_keeps_unsent_events(tmp_path: Path) -> None:
    db = Database(tmp_path / "store.db")
    store = TelemetryStore(db, Limits(retention_s=100_000.0))  # ahead: 1,000 s
    now = time.time()
    store.enqueue("event", {"kind": "swap"})
    db.query("UPDATE outbox SET end = ?", (now - 200_000,))  # an old unsent event
    store.append([row(i, end=now - 100_450 + i * 100) for i in range(20)])
    # Deleted: rows older than the retention and those within 1,000 s of it (0..14); kept:
    # the unsent event (the fleet has not had it) and rows 15..19.
    ends = [r[0] for r in db.query("SELECT end FROM outbox ORDER BY id")]
    assert ends[0] == now - 200_000 and len(ends) == 1 + 5
    assert store.counts()["dropped"] == 15
    assert store.pending()[0].kind == "event"


class Model:
    """What the outbox must answer: unsent message ids in the order they were stored."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.sent: set[str] = set()

    def pending(self, limit: int) -> list[str]:
        return [m for m in self.order if m not in self.sent][:limit]


ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(1, 5)),
    st.tuples(st.just("event"), st.just(0)),
    st.tuples(st.just("send"), st.integers(1, 8)),  # pending(n), then ack a prefix of it
    st.tuples(st.just("restart"), st.just(0)),
), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, max_rows=st.sampled_from([3, 1000]))
def test_pending_matches_a_model(ops: list[tuple[str, int]], max_rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "store.db")
        store = TelemetryStore(db, Limits(max_rows=max_rows))
        model = Model()
        for op, n in ops:
            if op == "append":
                store.append([row(i) for i in range(n)])
            elif op == "event":
                store.enqueue("event", {"kind": "x"})
            elif op == "send":
                batch = store.pending(n)
                store.mark_sent([m.id for m in batch[: max(1, len(batch) // 2)]])
                model.sent |= {m.msg_id for m in batch[: max(1, len(batch) // 2)]}
            else:
                db.close()
                db = Database(Path(tmp) / "store.db")
                store = TelemetryStore(db, Limits(max_rows=max_rows))
                model.sent = {r[0] for r in db.query(
                    "SELECT msg_id FROM outbox WHERE sent_at IS NOT NULL")}  # unsaved acks
            stored = [r[0] for r in db.query("SELECT msg_id FROM outbox ORDER BY id")]
            model.order = [m for m in model.order if m in stored] + [
                m for m in stored if m not in model.order]
            assert [m.msg_id for m in store.pending(100)] == model.pending(100)
        db.close()


def test_a_version_1_store_migrates_without_loss(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    old = Database(path, migrations=MIGRATIONS[:1])
    now = time.time()
    with old.transaction() as cur:
        for i, (sent, in_outbox) in enumerate([(now, True), (None, True), (None, False)]):
            payload = {"requests": i}
            cur.execute("INSERT INTO telemetry (kind, model, version, start, end, payload, bytes)"
                        " VALUES ('metrics', 'digits', '1', ?, ?, ?, 10)",
                        (now - 20 + i, now - 10 + i, json.dumps(payload)))
            if in_outbox:
                msg = {"msg_id": f"m{i}", "kind": "metrics", "model": "digits", "version": "1",
                       "start": now - 20 + i, "end": now - 10 + i, "payload": payload}
                cur.execute("INSERT INTO outbox (msg_id, kind, payload, bytes, created_at, "
                            "sent_at) VALUES (?, 'metrics', ?, 10, ?, ?)",
                            (f"m{i}", json.dumps(msg), now, sent))
        cur.execute("INSERT INTO outbox (msg_id, kind, payload, bytes, created_at) VALUES "
                    "('e1', 'event', ?, 10, ?)", (json.dumps({"msg_id": "e1", "kind": "swap"}),
                                                  now - 5))
    old.close()

    store = TelemetryStore(Database(path))
    assert [r["payload"]["requests"] for r in store.recent("metrics")] == [0, 1, 2]
    pending = store.pending()
    assert [m.msg_id for m in pending] == ["m1", "e1"]
    assert pending[0] == OutboxMessage(pending[0].id, "m1", "metrics", {
        "msg_id": "m1", "kind": "metrics", "model": "digits", "version": "1",
        "start": now - 19, "end": now - 9, "payload": {"requests": 1}})
    assert pending[1].payload == {"msg_id": "e1", "kind": "swap"}
    assert store.counts() == {"telemetry": 3, "outbox": 4, "outbox_unsent": 2, "dropped": 0}


def wal_frames(db: Database) -> int:
    return int(db.query("PRAGMA wal_checkpoint(PASSIVE)")[0][1])


def test_a_flush_writes_few_pages(tmp_path: Path) -> None:
    """Pages per flush on a store with history, as WAL frames (4 KB each): the table's last
    leaf (and the one before, for acks), and when it fills, a new leaf, its parent and the
    header. 20 flushes, each acknowledged before the next. Version 1 wrote 9-11 a flush."""
    db = Database(tmp_path / "store.db")
    store = TelemetryStore(db)
    for i in range(1_100):
        store.append([row(i), row(i, "drift")])
    while batch := store.pending():  # the history was sent
        store.mark_sent([m.id for m in batch])
    store.append([row(0)])
    db.query("PRAGMA wal_checkpoint(TRUNCATE)")
    for i in range(20):
        store.append([row(i), row(i, "drift")])
        store.mark_sent([m.id for m in store.pending()])
    assert wal_frames(db) <= 20 * 3.5
