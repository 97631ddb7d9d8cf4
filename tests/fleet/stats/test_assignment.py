from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fleet.stats import InvalidConfig, assign, bucket

ROOT = Path(__file__).resolve().parents[3]
UNITS = [f"device-{i}" for i in range(200)] + ["req-42", "", "ünïcode-✓"]


def test_pinned_values_never_change() -> None:
    # The scheme is a contract with devices and stored experiments: SHA-256 of
    # "experiment NUL unit", first 8 bytes big-endian, scaled to [0, 100).
    assert bucket("exp-1", "device-1") == 32.05459605592287
    assert [assign("exp-1", u) for u in ("device-1", "device-2")] == ["b", "b"]
    digest = hashlib.sha256(b"checkout\0req-42").digest()
    assert bucket("checkout", "req-42") == int.from_bytes(digest[:8], "big") * 100 / 2**64


@pytest.mark.parametrize("hash_seed", ["0", "1", "random"])
def test_the_same_in_every_process(hash_seed: str) -> None:
    code = ("import json, sys; from fleet.stats import assign; "
            "print(json.dumps([assign('exp-9', u, split=30) for u in json.load(sys.stdin)]))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(UNITS), text=True,
                         capture_output=True, check=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "PYTHONHASHSEED": hash_seed})
    assert json.loads(out.stdout) == [assign("exp-9", u, split=30) for u in UNITS]


def test_split_is_honoured_and_buckets_are_uniform() -> None:
    units = [f"u{i}" for i in range(20_000)]
    arms = [assign("exp-split", u, split=20) for u in units]
    assert arms.count("b") / len(units) == pytest.approx(0.2, abs=0.01)
    buckets = np.array([bucket("exp-split", u) for u in units])
    assert stats.kstest(buckets / 100, "uniform").pvalue > 0.01


def test_ramping_the_split_only_moves_units_into_b() -> None:
    small = {u for u in UNITS if assign("ramp", u, split=5) == "b"}
    large = {u for u in UNITS if assign("ramp", u, split=50) == "b"}
    assert small <= large
    assert all(assign("ramp", u, split=0) == "a" for u in UNITS)
    assert all(assign("ramp", u, split=100) == "b" for u in UNITS)


def test_experiments_are_independent() -> None:
    units = [f"u{i}" for i in range(10_000)]
    first = np.array([assign("exp-a", u) == "b" for u in units])
    second = np.array([assign("exp-b", u) == "b" for u in units])
    table = [[(first & second).sum(), (first & ~second).sum()],
             [(~first & second).sum(), (~first & ~second).sum()]]
    assert stats.chi2_contingency(table).pvalue > 0.01


def test_bad_input() -> None:
    for split in (-1.0, 100.5):
        with pytest.raises(InvalidConfig, match="split"):
            assign("e", "u", split=split)
    with pytest.raises(InvalidConfig):
        bucket("a\0b", "c")
