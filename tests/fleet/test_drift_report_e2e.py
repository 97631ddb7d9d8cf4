"""Issue 22 items 3 and 8 over a real mosquitto and the real manager: `edgectl drift report`
with no version reports what the devices run; outputs are counted as the device counts them
(real models: n > 0, not "insufficient data 0"); the drifted devices the simulator names are
the ones flagged; `edgectl alerts` wraps its messages."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleet.cli import cli as edgectl
from fleet.deploy import deploy
from fleet.inventory import Target
from fleet.sim import SimKnobs
from tests.broker import Broker
from tests.conftest import Keys, build_package
from tests.fleet.harness import FleetHarness

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


def _opts(h: FleetHarness) -> list[str]:
    s = h.settings()
    return ["--db", str(s.db), "--artifacts", str(s.artifacts), "--trusted-keys", str(h.trusted)]


def _cli(h: FleetHarness, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(edgectl, [*args, *_opts(h)])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def _edgectl(h: FleetHarness, *args: str) -> tuple[int, str]:
    """The installed command (its error handling: one `error:` line, exit 1)."""
    res = subprocess.run([str(Path(sys.executable).parent / "edgectl"), *args, *_opts(h)],
                         check=False, capture_output=True, text=True, timeout=60)
    return res.returncode, res.stdout + res.stderr


def test_report_defaults_to_running_version_and_flags_drifted_devices(
        tmp_path: Path, broker: Broker, keys: Keys) -> None:
    pkgs = [build_package(tmp_path / "pkgs", keys.signer, name="digits", version=v,
                          seed=int(v), calib_rows=2000) for v in ("1", "2")]

    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(*pkgs)
            code, text = _edgectl(h, "drift", "report", "digits")
            assert code == 1 and text.startswith("error: no device runs digits")
            assert "--version (1, 2)" in text
            sim = await h.start_sim(8, real_models=True,
                                    knobs=SimKnobs(drift_fraction=0.25, drift_sd=3.0))
            drifted = set(sim.drifted())
            assert len(drifted) == 2  # exactly round(0.25 x 8), and named
            await h.wait_inventory(8)
            deploy(h.f, "digits", "2", Target.parse("all"))  # no production alias set
            await h.until(lambda: [d.active("digits") for d in h.f.inventory.devices()]
                          == ["2"] * 8, what="v2 reported everywhere")

            def flagged() -> set[str]:
                doc = json.loads(_cli(h, "drift", "report", "digits", "--json")[1])
                return {d for d, v in doc["devices"].items() if v["level"] == "alert"}
            await h.until(lambda: flagged() == drifted, timeout=60, what="drifted flagged")

            code, text = _cli(h, "drift", "report", "digits")
            assert code == 0, text
            assert text.startswith("digits 2 drift over the last 1h (fleet, 8 devices")
            assert "in reference standard deviations" in text
            assert "inf" not in text and "nan" not in text
            doc = json.loads(_cli(h, "drift", "report", "digits", "--json")[1])
            outputs = [f for f in doc["features"] if f["output"]]
            assert outputs and all(f["n"] > 0 for f in outputs)
            assert all(f["level"] != "insufficient data" for f in outputs)
            assert all(f.get("tv") is not None for f in doc["features"])

            fired = await h.manager.alerter.check()  # type: ignore[union-attr]
            assert any(a.kind == "drift" and a.severity == "alert" for a in fired)
            code, text = _cli(h, "alerts", "--width", "80")
            assert code == 0 and "entries drifted" in text
            assert max(len(line) for line in text.splitlines()) <= 80
            stored = json.loads(_cli(h, "alerts", "--json")[1])
            message = next(a["message"] for a in stored if a["kind"] == "drift")
            words = "".join(text.split())
            assert "".join(message.split()) in words  # wrapped, not cut

    asyncio.run(main())


def test_several_running_versions_give_one_report_each(
        tmp_path: Path, broker: Broker, keys: Keys) -> None:
    pkgs = [build_package(tmp_path / "pkgs", keys.signer, name="digits", version=v,
                          seed=int(v), calib_rows=500) for v in ("1", "2")]

    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(*pkgs)
            await h.start_sim(4)
            await h.wait_inventory(4)
            deploy(h.f, "digits", "1", Target.parse("device:sim-00000"))
            deploy(h.f, "digits", "2", Target.parse("device:sim-00001"))
            await h.until(lambda: sorted(filter(None, (d.active("digits") for d in
                                                       h.f.inventory.devices()))) == ["1", "2"],
                          what="two versions reported")
            code, text = _cli(h, "drift", "report", "digits", "--no-devices")
            assert code == 0, text
            assert text.startswith("devices run 2 versions of digits (1, 2)")
            assert "\ndigits 1 drift over" in text and "\ndigits 2 drift over" in text
            docs = json.loads(_cli(h, "drift", "report", "digits", "--json")[1])
            assert [d["version"] for d in docs] == ["1", "2"]
            code, text = _cli(h, "drift", "report", "digits", "--version", "2", "--json")
            assert code == 0 and json.loads(text)["version"] == "2"
            code, text = _edgectl(h, "drift", "report", "digits", "--version", "production")
            assert code == 1 and text == "error: model digits production is not in the registry\n"

    asyncio.run(main())
