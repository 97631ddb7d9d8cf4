"""Issue 22.1: a new deployment of the version already active (an experiment arm promoted) puts
it on probation again; a failed verdict switches back to the version it replaced, a passed one
commits, and both chains carry the new deployment id."""

from __future__ import annotations

from edge_runtime.store.models import ActiveRef
from edge_runtime.swap import records
from edge_runtime.swap.machine import State
from edge_runtime.swap.runner import SwapRunner
from tests.edge_runtime.test_swap_runner import (  # noqa: F401 (pytest fixtures)
    Device,
    booted,
    device,
    packages,
)


def _on_2(dev: Device) -> SwapRunner:
    assert dev.store is not None and dev.runner is not None
    dev.runner.activate("gemm", "2", deployment="ex-1")  # the experiment's own probation
    runner = SwapRunner(dev.store, dev.runner.registry, on_change=dev._report,
                        probation=lambda _r: None)
    dev.reports.clear()
    return runner


def test_rejudged_version_rolls_back(booted: Device) -> None:  # noqa: F811
    runner = _on_2(booted)
    rec = runner.rejudge("gemm", deployment="ex-1.stop")
    assert (rec.state, rec.version, rec.previous, rec.deployment) == (
        State.PROBATION, "2", "1", "ex-1.stop")
    assert runner.registry.get("gemm").version == "2"  # serving while on probation
    rec = runner.finish_probation(rec, ok=False, reason="error rate 0.200 > limit 0.050")
    assert rec.state is State.ROLLED_BACK
    assert runner.registry.get("gemm").version == "1"
    assert runner.store.active("gemm") == ActiveRef("gemm", "1", "2")
    assert booted.reports == ["probation", "rolling_back", "rolled_back"]
    (last,) = records.recent(runner.store.db, "gemm", 1)
    assert (last.deployment, last.state) == ("ex-1.stop", State.ROLLED_BACK)


def test_rejudged_version_commits(booted: Device) -> None:  # noqa: F811
    runner = _on_2(booted)
    rec = runner.finish_probation(runner.rejudge("gemm", deployment="ex-1.stop"), ok=True)
    assert rec.state is State.COMMITTED and runner.registry.get("gemm").version == "2"
    assert booted.reports == ["probation", "committed"]
    assert records.unfinished(runner.store.db) == []
