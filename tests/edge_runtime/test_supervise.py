"""Supervised tasks restart after an exception, stop on return, and pass cancellation through."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from edge_runtime.supervise import Supervisor


def test_a_raising_task_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError(f"boom {len(runs)}")
        await asyncio.sleep(10)

    async def main() -> Supervisor:
        sup = Supervisor(logging.getLogger("test.sup"), base_s=0.01)
        sup.spawn("flaky", flaky)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(runs) == 3:
                break
        await sup.stop()
        return sup

    with caplog.at_level(logging.ERROR, "test.sup"):
        sup = asyncio.run(main())
    assert len(runs) == 3
    health = sup.snapshot()["flaky"]
    assert health["restarts"] == 2
    assert health["last_error"] == "RuntimeError: boom 2"
    assert health["running"] is False
    assert sup.restarts == 2
    failures = [r for r in caplog.records if "task flaky failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)


def test_a_task_that_returns_is_done() -> None:
    async def main() -> Supervisor:
        sup = Supervisor(logging.getLogger("test.sup"))
        task = sup.spawn("once", lambda: asyncio.sleep(0))
        await task
        return sup

    sup = asyncio.run(main())
    assert sup.snapshot()["once"]["restarts"] == 0


def test_backoff_doubles_up_to_the_cap() -> None:
    starts: list[float] = []

    async def always_fails() -> None:
        starts.append(asyncio.get_running_loop().time())
        raise ValueError("no")

    async def main() -> None:
        sup = Supervisor(logging.getLogger("test.sup"), base_s=0.02, max_s=0.08)
        sup.spawn("bad", always_fails)
        await asyncio.sleep(0.5)
        await sup.stop()

    asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Sleeps are never shorter than asked; a loaded machine may make them longer.
    assert gaps[0] >= 0.019 and gaps[1] >= 0.039
    assert len(gaps) >= 4 and all(g >= 0.079 for g in gaps[3:])


def test_spawning_a_running_name_twice_is_refused() -> None:
    async def main() -> None:
        sup = Supervisor(logging.getLogger("test.sup"))
        sup.spawn("x", lambda: asyncio.sleep(1))
        with pytest.raises(RuntimeError):
            sup.spawn("x", lambda: asyncio.sleep(1))
        await sup.stop()

    asyncio.run(main())


def test_stop_cancels_again_a_task_that_swallowed_one_cancellation() -> None:
    swallowed: list[int] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(1)  # what wait_for may do on 3.11: the loop goes on

    async def main() -> None:
        sup = Supervisor(logging.getLogger("test.sup"))
        task = sup.spawn("stubborn", stubborn)
        await asyncio.sleep(0)
        await asyncio.wait_for(sup.stop(), 5)
        assert task.done()

    asyncio.run(main())
    assert swallowed == [1]
