"""What of the host this process may use: CPUs, from its affinity mask and cgroup CPU quota.

``os.cpu_count()`` counts the machine; a container limited to 2 CPUs on a 64-core host, or a
service pinned to 2 cores with ``taskset``/``CPUAffinity=``, may use 2. Both cgroup versions are
read: v2 ``cpu.max`` ("max 100000" or "150000 100000") on the process's cgroup and each ancestor,
v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` on the ``cpu`` controller's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(*, affinity: int | None = None, cgroup_root: Path = CGROUP_ROOT,
                proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may run on at once: its affinity, lowered by the cgroup quota rounded
    up (a quota of 1.5 CPUs still lets 2 threads make progress); at least 1."""
    cpus = _affinity() if affinity is None else affinity
    quota = cpu_quota(cgroup_root=cgroup_root, proc_cgroup=proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cpu_quota(*, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP
              ) -> float | None:
    """The tightest CPU quota, in CPUs, on this process's cgroups (None: no quota)."""
    quotas = [q for d in _cgroup_dirs(cgroup_root, proc_cgroup)
              if (q := _quota(d)) is not None]
    return min(quotas) if quotas else None


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _cgroup_dirs(root: Path, proc_cgroup: Path) -> Iterator[Path]:
    """The directories holding this process's CPU limits: its cgroup and every ancestor."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one unified hierarchy
            yield from _up(root, path)
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own mount
            yield from _up(root / controllers, path)
            yield from _up(root / "cpu", path)


def _up(mount: Path, path: str) -> Iterator[Path]:
    """``mount/path`` and its ancestors up to ``mount``; in a container the mount often is the
    container's own cgroup and the host path does not exist under it, so ``mount`` counts too."""
    parts = [p for p in path.split("/") if p not in ("", ".", "..")]  # never above the mount
    for depth in range(len(parts), -1, -1):
        yield mount.joinpath(*parts[:depth])


def _quota(d: Path) -> float | None:
    try:
        fields = (d / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return _ratio(fields[0], fields[1])
    except OSError:
        pass
    try:
        return _ratio((d / "cpu.cfs_quota_us").read_text(), (d / "cpu.cfs_period_us").read_text())
    except OSError:
        return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None  # v1 says -1 for "no quota"
