"""Fleet drift: device histograms merged per model version x group x time window and compared
with the package's reference statistics (``fleet.stats``), per device and fleet-wide.

Devices send their counts in the compact wire form (``edge_runtime.monitor.wire``); merging is a
sum of vectors. Levels rest on effect size (PSI, KS, Wasserstein, mean shift, TV) with
Benjamini-Hochberg over every device x feature judged together.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from edge_runtime.monitor.wire import FlatSnapshot, SnapshotLayout, WireFormatError, decode_flat
from edge_runtime.package import REFERENCE_STATS, open_package
from edge_runtime.store.db import Database
from fleet.errors import NoVersionToReport
from fleet.inventory import Inventory
from fleet.registry import ModelRegistry
from fleet.stats.decisions import DriftThresholds, Level, judge_drift, worst_level
from fleet.stats.drift import DriftReport, compare_devices


@lru_cache(maxsize=64)
def _reference(path: str) -> tuple[SnapshotLayout, FlatSnapshot, dict[str, Any]]:
    pkg = open_package(Path(path), None, allow_unsigned=True)  # verified at publish time
    ref = pkg.read_json(REFERENCE_STATS)
    layout = SnapshotLayout(ref)
    return layout, layout.flatten_reference(ref), ref


@dataclass(frozen=True)
class DriftView:
    name: str
    version: str
    since: float
    devices: dict[str, FlatSnapshot]
    groups: dict[str, str | None]

    def merged(self, layout: SnapshotLayout, devices: list[str] | None = None) -> FlatSnapshot:
        total = layout.zeros()
        for device, flat in self.devices.items():
            if devices is None or device in devices:
                total = total + flat
        return total


class DriftService:
    def __init__(self, db: Database, registry: ModelRegistry, *,
                 thresholds: dict[str, DriftThresholds] | None = None) -> None:
        self.db = db
        self.registry = registry
        self.thresholds = thresholds or {}

    def layout(self, name: str, version: str) -> tuple[SnapshotLayout, FlatSnapshot]:
        layout, baseline, _ref = _reference(str(self.registry.get(name, version).path))
        return layout, baseline

    def view(self, name: str, version: str, *, since: float, group: str | None = None,
             devices: set[str] | None = None) -> DriftView:
        """Every device's counts since ``since``, summed per device."""
        layout, _ = self.layout(name, version)
        rows = self.db.query(
            "SELECT d.device, d.snapshot, v.grp FROM drift d LEFT JOIN devices v ON "
            "v.id = d.device WHERE d.name = ? AND d.version = ? AND d.end >= ?",
            (name, version, since))
        sums: dict[str, FlatSnapshot] = {}
        groups: dict[str, str | None] = {}
        for row in rows:
            if (group is not None and row["grp"] != group) or (
                    devices is not None and row["device"] not in devices):
                continue
            try:
                flat = decode_payload(layout, row["snapshot"])
            except (WireFormatError, ValueError, KeyError):
                continue  # a report of another package build: not comparable
            sums[row["device"]] = sums[row["device"]] + flat if row["device"] in sums else flat
            groups[row["device"]] = row["grp"]
        return DriftView(name, version, since, sums, groups)

    def report(self, name: str, version: str, *, since: float, group: str | None = None,
               devices: set[str] | None = None) -> dict[str, Any]:
        """Fleet-wide and per-device comparison with the package reference, judged."""
        layout, baseline = self.layout(name, version)
        view = self.view(name, version, since=since, group=group, devices=devices)
        t = self.thresholds.get(name, DriftThresholds())
        fleet_key = f"group:{group}" if group else "fleet"
        units: dict[str, FlatSnapshot] = {fleet_key: view.merged(layout)} if view.devices else {}
        units.update(view.devices)
        reports = compare_devices(layout, units, baseline) if units else {}
        verdicts = judge_drift(reports, t)
        return _summary(name, version, since, fleet_key, reports=reports, verdicts=verdicts)

    def merged_report(self, name: str, version: str, *, since: float,
                      devices: set[str] | None = None) -> DriftReport | None:
        """The devices' counts summed and compared with the package reference (None: no data)."""
        layout, baseline = self.layout(name, version)
        view = self.view(name, version, since=since, devices=devices)
        if not view.devices:
            return None
        return compare_devices(layout, {"all": view.merged(layout)}, baseline)["all"]

    def level_of(self, name: str, report: DriftReport | None) -> tuple[Level, list[str]]:
        """One level (and the reasons) for a merged report."""
        if report is None:
            return Level.INSUFFICIENT, []
        verdicts = judge_drift({"all": report}, self.thresholds.get(name, DriftThresholds()))
        reasons = [f"{v.name}: {', '.join(v.reasons)}" for v in verdicts
                   if v.level in (Level.WARN, Level.ALERT)]
        return worst_level([v.level for v in verdicts]), reasons

    def fleet_level(self, name: str, version: str, *, since: float,
                    devices: set[str] | None = None) -> tuple[Level, list[str]]:
        """One level for a set of devices merged (the rollout gate)."""
        return self.level_of(name, self.merged_report(name, version, since=since,
                                                      devices=devices))

    def versions_to_report(self, name: str, *, since: float,
                           group: str | None = None) -> list[str]:
        """The versions of ``name`` the devices (of ``group``) run now; if none runs it, those
        that reported drift since ``since``. Raises NoVersionToReport when neither has any."""
        running = {d.active(name) for d in Inventory(self.db).devices()
                   if group is None or d.group == group}
        versions = sorted(v for v in running if v)
        if not versions:
            versions = sorted(v for n, v in self.live_versions(since) if n == name)
        if not versions:
            raise NoVersionToReport(name, tuple(mv.version for mv in self.registry.versions(name)))
        return versions

    def live_versions(self, since: float) -> list[tuple[str, str]]:
        rows = self.db.query("SELECT DISTINCT name, version FROM drift WHERE end >= ?", (since,))
        return [(r["name"], r["version"]) for r in rows]


def decode_payload(layout: SnapshotLayout, text: str) -> FlatSnapshot:
    payload = orjson.loads(text)
    if payload.get("encoding") == "EDW1":
        return decode_flat(layout, base64.b64decode(payload["data"]))
    return layout.flatten(payload)  # a plain snapshot dict


def _summary(name: str, version: str, since: float, fleet_key: str, *,
             reports: dict[str, DriftReport], verdicts: list[Any]) -> dict[str, Any]:
    by_unit: dict[str, list[dict[str, Any]]] = {}
    for v in verdicts:
        report = reports[v.unit]
        entry = report.get(v.name, output=v.output)
        stats = {k: _num(getattr(entry, k, None)) for k in
                 ("n", "psi", "ks", "wasserstein", "mean_shift", "tv", "chi2_p", "ks_p")
                 if getattr(entry, k, None) is not None}
        by_unit.setdefault(v.unit, []).append(
            {"feature": v.name, "output": v.output, "level": v.level.value,
             "q_value": v.q_value, "reasons": list(v.reasons), **stats})
    fleet = by_unit.pop(fleet_key, [])
    devices = {unit: {"level": worst_level([Level(e["level"]) for e in entries]).value,
                      "drifted": [e["feature"] for e in entries
                                  if e["level"] in ("warn", "alert")]}
               for unit, entries in sorted(by_unit.items())}
    return {"model": name, "version": version, "since": since, "generated_at": time.time(),
            "scope": fleet_key, "devices_reporting": len(by_unit),
            "level": worst_level([Level(e["level"]) for e in fleet]).value if fleet
            else Level.INSUFFICIENT.value,
            "features": fleet, "devices": devices}


def _num(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):  # NaN and inf are not JSON
        return None
    return value
