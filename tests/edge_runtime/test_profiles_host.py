"""Honest defaults: a profile sets what the hardware implies (threads capped at the CPUs this
process may use, telemetry and storage bounds), never batching or the cache; the effective
settings are one dict and one line; an absent extra is one typed error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.effective import effective_settings, settings_line
from edge_runtime.errors import ConfigError, ExtraMissing
from edge_runtime.extras import require
from edge_runtime.host import cpu_quota, usable_cpus
from edge_runtime.profiles import DeviceProfile, available_profiles, load_profile, serve_defaults
from edge_runtime.settings import ServeSettings


@pytest.mark.parametrize(("threads", "cpus", "expected"), [
    (4, 2, 2), (4, 4, 4), (3, 8, 3), (1, 1, 1), (0, 6, 6), (0, 1, 1)])
def test_threads_are_capped_at_usable_cpus(threads: int, cpus: int, expected: int) -> None:
    defaults = serve_defaults(DeviceProfile(name="b", intra_op_threads=threads), cpus=cpus)
    assert defaults["intra_op_threads"] == expected


@pytest.mark.parametrize("name", available_profiles())
@pytest.mark.parametrize("cpus", [1, 2, 3, 64])
def test_no_shipped_profile_turns_on_batching_or_the_cache(name: str, cpus: int) -> None:
    profile = load_profile(name)
    s = ServeSettings.load(base=serve_defaults(profile, cpus=cpus), env={})
    assert not s.batching and s.max_batch_size == 0 and s.cache_entries == 0
    assert s.intra_op_threads is not None and 1 <= s.intra_op_threads <= cpus
    assert s.profile == name
    assert (s.telemetry_max_rows, s.telemetry_max_bytes) == (profile.max_telemetry_rows,
                                                             profile.max_storage_bytes)


def test_config_and_flags_still_turn_batching_and_threads_on(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text("[serve]\nmax_batch_size = 8\ncache_entries = 100\n")
    base = serve_defaults(load_profile("x86_64"), cpus=2)
    s = ServeSettings.load(config=config, overrides={"intra_op_threads": 6}, base=base, env={})
    assert (s.batching, s.max_batch_size, s.cache_entries, s.intra_op_threads) == (
        True, 8, 100, 6)


# -- CPUs: affinity and cgroup quota -----------------------------------------------------------
def _cgroup(tmp_path: Path, proc: str, files: dict[str, str]) -> dict[str, Path]:
    root = tmp_path / "sys"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    proc_file = tmp_path / "proc-cgroup"
    proc_file.write_text(proc)
    return {"cgroup_root": root, "proc_cgroup": proc_file}


V2 = "0::/system.slice/edge.service\n"


@pytest.mark.parametrize(("proc", "files", "expected"), [
    (V2, {}, 8),                                                         # no limit files
    (V2, {"system.slice/edge.service/cpu.max": "max 100000\n"}, 8),      # unlimited
    (V2, {"system.slice/edge.service/cpu.max": "200000 100000\n"}, 2),
    (V2, {"system.slice/edge.service/cpu.max": "150000 100000\n"}, 2),   # 1.5 CPUs: 2 threads
    (V2, {"system.slice/edge.service/cpu.max": "50000 100000\n"}, 1),    # half a CPU: 1
    (V2, {"system.slice/edge.service/cpu.max": "max 100000\n",           # a parent limits
          "system.slice/cpu.max": "300000 100000\n"}, 3),
    (V2, {"system.slice/edge.service/cpu.max": "400000 100000\n",        # the tightest wins
          "cpu.max": "100000 100000\n"}, 1),
    ("0::/\n", {"cpu.max": "300000 100000\n"}, 3),                       # container's own root
    (V2, {"system.slice/edge.service/cpu.max": "garbage\n"}, 8),
    (V2, {"system.slice/edge.service/cpu.max": "0 100000\n"}, 8),
    (V2, {"system.slice/edge.service/cpu.max": "100000 0\n"}, 8),
    ("4:cpu,cpuacct:/docker/abc\n", {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1\n",
                                     "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"}, 8),
    ("4:cpu,cpuacct:/docker/abc\n", {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000\n",
                                     "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"}, 3),
    # v1 inside a container: the mount is the container's cgroup, the host path is absent
    ("4:cpu,cpuacct:/docker/abc\n", {"cpu,cpuacct/cpu.cfs_quota_us": "100000\n",
                                     "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 1),
    ("4:cpu:/x\n", {"cpu/x/cpu.cfs_quota_us": "200000\n",
                    "cpu/x/cpu.cfs_period_us": "100000\n"}, 2),
    ("5:memory:/x\n", {"memory/x/cpu.cfs_quota_us": "100000\n",          # not the cpu controller
                       "memory/x/cpu.cfs_period_us": "100000\n"}, 8),
    ("not a cgroup line\n", {"cpu.max": "100000 100000\n"}, 8),
    ("0::/../../../etc\n", {"cpu.max": "100000 100000\n"}, 1),           # cannot escape root
])
def test_usable_cpus_from_affinity_and_cgroup_quota(tmp_path: Path, proc: str,
                                                    files: dict[str, str], expected: int) -> None:
    assert usable_cpus(affinity=8, **_cgroup(tmp_path, proc, files)) == expected


def test_usable_cpus_without_cgroup_files_is_the_affinity(tmp_path: Path) -> None:
    absent = {"cgroup_root": tmp_path / "no-sys", "proc_cgroup": tmp_path / "no-proc"}
    assert usable_cpus(affinity=3, **absent) == 3
    assert usable_cpus(affinity=0, **absent) == 1
    assert cpu_quota(**absent) is None


def test_usable_cpus_of_this_process() -> None:
    cpus = usable_cpus()
    assert 1 <= cpus <= len(os.sched_getaffinity(0))


_TEXT = st.text(alphabet=st.sampled_from("0123456789 max-:/,.\n\x00abc"), max_size=40)


@settings(max_examples=150, deadline=None)
@given(proc=_TEXT, cpu_max=_TEXT, quota=_TEXT, period=_TEXT)
def test_usable_cpus_survives_any_file_contents(tmp_path_factory: pytest.TempPathFactory,
                                                proc: str, cpu_max: str, quota: str,
                                                period: str) -> None:
    tmp = tmp_path_factory.mktemp("cg")
    paths = _cgroup(tmp, proc, {"cpu.max": cpu_max, "cpu/cpu.cfs_quota_us": quota,
                                "cpu/cpu.cfs_period_us": period})
    assert 1 <= usable_cpus(affinity=4, **paths) <= 4


# -- the effective settings -------------------------------------------------------------------
def test_effective_settings_dict_and_line() -> None:
    s = ServeSettings(profile="x86_64", intra_op_threads=2, telemetry_interval_s=15.0)
    doc = effective_settings(s, cpus=2)
    assert doc == {"profile": "x86_64", "cpus": 2, "threads": 2, "batching": False,
                   "max_batch_size": 0, "max_queue_delay_ms": 1.0, "cache_entries": 0,
                   "http_server": "builtin", "monitoring": True, "drift": True,
                   "telemetry_interval_s": 15.0}
    assert settings_line(doc) == ("profile=x86_64 cpus=2 threads=2 batching=off cache=off "
                                  "http=builtin monitoring=on drift=on telemetry=15s")
    on = effective_settings(s.with_(max_batch_size=32, max_queue_delay_ms=2.0,
                                    cache_entries=4096, drift=False), cpus=2)
    assert "batching=32x2ms cache=4096" in settings_line(on)
    assert "drift=off" in settings_line(on)
    assert "threads=backend-default" in settings_line(effective_settings(ServeSettings()))


# -- optional extras --------------------------------------------------------------------------
def test_a_missing_extra_is_a_config_error_naming_the_install() -> None:
    require("json", feature="anything", extra="none")  # importable: no error
    with pytest.raises(ExtraMissing) as info:
        require("edge_runtime_no_such_module", feature="--http-server uvicorn", extra="uvicorn")
    assert isinstance(info.value, ConfigError)
    assert (info.value.feature, info.value.extra) == ("--http-server uvicorn", "uvicorn")
    assert str(info.value) == ("--http-server uvicorn needs the 'uvicorn' extra: "
                               "pip install 'edge-runtime[uvicorn]'")
