"""The fleet agent inside the daemon: desired state in, swaps, events and telemetry out."""

from __future__ import annotations

from edge_runtime.agent.device import AgentSettings, DeviceAgent

__all__ = ["AgentSettings", "DeviceAgent"]
