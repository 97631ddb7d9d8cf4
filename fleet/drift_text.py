"""The text of `edgectl drift report`: a header that states the units, the fleet's entries
(drifted first), and the devices that drifted."""

from __future__ import annotations

import math
import textwrap
from typing import Any

from edge_runtime.textable import render
from fleet.stats.drift import MEAN_FLOOR, RANGE_FLOOR

UNITS = (f"units: mean shift and wasserstein in reference standard deviations (a constant "
         f"feature's sd is floored at {RANGE_FLOOR:g} x its reference 2-98% range or "
         f"{MEAN_FLOOR:g} x max(1, |mean|)); psi, ks, tv unitless (tv: share of values that "
         f"changed bin or class); q: BH-adjusted p-value")
COLUMNS = ["feature", "level", "n", "mean shift", "psi", "ks", "wasserstein", "tv", "q"]
_ORDER = {"alert": 0, "warn": 1, "ok": 2, "insufficient data": 3}
DEVICE_ROWS = 50


def render_report(doc: dict[str, Any], *, window: str, devices: bool) -> str:
    lines = [f"{doc['model']} {doc['version']} drift over the last {window} ({doc['scope']}, "
             f"{doc.get('devices_reporting', len(doc['devices']))} devices reporting): "
             f"{doc['level']}", *textwrap.wrap(UNITS, 100)]
    entries = sorted(doc["features"], key=lambda f: _ORDER.get(f["level"], 9))
    lines.append(render(COLUMNS, [_row(f) for f in entries]) if entries
                 else "no device reported drift counts for this version in the window")
    silent = [f["feature"] for f in doc["features"] if f["output"] and not f.get("n")]
    if silent and any(f.get("n") for f in doc["features"] if not f["output"]):
        lines.append(f"outputs {', '.join(silent)}: no counts reported (the devices counted "
                     f"inputs only, e.g. `edgectl sim` without --real-models)")
    if devices and doc["devices"]:
        lines += ["", _devices(doc["devices"])]
    return "\n".join(lines)


def _row(f: dict[str, Any]) -> list[Any]:
    return [f["feature"] + (" (output)" if f["output"] else ""), f["level"], f.get("n"),
            *(fmt(f.get(k)) for k in ("mean_shift", "psi", "ks", "wasserstein", "tv",
                                      "q_value"))]


def _devices(devices: dict[str, dict[str, Any]]) -> str:
    drifted = sorted(((d, v) for d, v in devices.items() if v["drifted"]),
                     key=lambda dv: (_ORDER.get(dv[1]["level"], 9), dv[0]))
    rest = len(devices) - len(drifted)
    if not drifted:
        return f"no device drifted ({rest} devices judged on their own)"
    rows = [[d, v["level"], len(v["drifted"]), _names(v["drifted"])]
            for d, v in drifted[:DEVICE_ROWS]]
    text = render(["device", "level", "drifted", "features"], rows)
    more = len(drifted) - DEVICE_ROWS
    if more > 0:
        text += f"\n... and {more} more drifted devices (--json lists them all)"
    return text + f"\n{len(drifted)} devices drifted; {rest} did not"


def _names(names: list[str], shown: int = 4) -> str:
    head = ", ".join(names[:shown])
    return head + (f" +{len(names) - shown} more" if len(names) > shown else "")


def fmt(x: Any) -> str:
    """3 significant digits; never 'inf' or 'nan' (no value: '-')."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.3g}" if isinstance(x, float) else str(x)
