"""The daemon's telemetry flush under a store that refuses writes (read-only, as after a
filesystem remount): each failure is counted, the first one logged with its traceback and the
rest one line each; the rows wait in memory and are all stored once the store takes writes
again; the counts show in /metrics and in the status document."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_runtime.daemon import Daemon
from edge_runtime.monitor.prometheus import render
from edge_runtime.profiles import load_profile
from edge_runtime.settings import ServeSettings
from edge_runtime.status import status_doc


@contextmanager
def captured(name: str) -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_flush_failures_are_counted_logged_and_retried(tmp_path: Path) -> None:
    daemon = Daemon(ServeSettings(store=tmp_path / "store", telemetry_interval_s=0.01),
                    load_profile("x86_64"))
    rt = daemon.runtime
    health = rt.telemetry.health

    def faults() -> int:
        return health.faults().get("telemetry_flush", 0)

    def stored() -> int:
        return int(rt.store.db.query("SELECT COUNT(*) FROM telemetry")[0][0])

    async def main() -> None:
        rt.store.db.query("PRAGMA query_only = ON")
        daemon.supervisor.spawn("telemetry-flush", daemon._flush_loop)
        for i in range(3):  # one interval of requests, then a flush that fails
            rt.telemetry.metrics.record("digits", "1", 0.01)
            await _until(lambda i=i: faults() > i)  # type: ignore[misc]
        assert stored() == 0
        rt.store.db.query("PRAGMA query_only = OFF")
        await _until(lambda: stored() == 3)
        await daemon.supervisor.stop()

    with captured("edge_runtime.daemon") as logs:
        asyncio.run(main())
    failures = [r for r in logs if "flush failed" in r.getMessage()]
    assert len(failures) == faults() >= 3
    assert failures[0].exc_info is not None and "readonly" in str(failures[0].exc_info[1])
    assert all(r.exc_info is None for r in failures[1:])
    assert any("works again" in r.getMessage() for r in logs)
    rows = rt.store.db.query("SELECT payload FROM telemetry WHERE kind = 'metrics'")
    assert len(rows) == 3  # nothing recorded while the store refused writes was lost

    snap = health.snapshot()
    assert snap["tasks"]["telemetry-flush"]["restarts"] == 0
    assert snap["faults"]["telemetry_flush"] == faults()
    assert status_doc(rt)["health"]["faults"] == snap["faults"]
    text = render({}, extra_gauges=health.gauges())
    assert f'edge_faults_total{{kind="telemetry_flush"}} {faults()}' in text
    assert "# TYPE edge_faults_total counter" in text
    assert 'edge_task_restarts_total{task="telemetry-flush"} 0' in text
    assert 'edge_task_running{task="telemetry-flush"} 0' in text  # stopped above
    rt.close()
