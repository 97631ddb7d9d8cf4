"""`edge-runtime serve`: the Runtime behind uvicorn (uvloop + httptools), on TCP and optionally a
Unix socket, with a background task persisting telemetry every interval.

The daemon writes ``STORE/run/daemon.json`` (mode 0600: pid, address, admin token) so local
commands (`edge-runtime install/activate/...`) talk to it instead of the store underneath it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.api.app import App
from edge_runtime.api.limits import HttpLimits
from edge_runtime.api.server import HttpServer
from edge_runtime.backends import BackendOptions
from edge_runtime.codecs import HEADER_LENGTH
from edge_runtime.effective import effective_settings, settings_line
from edge_runtime.profiles import DeviceProfile, backend_options, detect_profile_name, load_profile
from edge_runtime.runtime import Runtime
from edge_runtime.sdnotify import Notifier
from edge_runtime.settings import ServeSettings, SystemdSettings
from edge_runtime.supervise import Supervisor

log = logging.getLogger("edge_runtime.daemon")
RUN_FILE = Path("run") / "daemon.json"
KEEP_ALIVE_S = 30.0


@dataclass(frozen=True)
class RunInfo:
    pid: int
    url: str
    uds: str | None
    admin_token: str

    @classmethod
    def read(cls, store: Path) -> RunInfo | None:
        """The running daemon of this store, or None (no file, or its process is gone)."""
        try:
            data = json.loads((store / RUN_FILE).read_text())
            info = cls(**data)
            os.kill(info.pid, 0)
        except (OSError, ValueError, TypeError):
            return None
        return info


def resolve_profile(settings: ServeSettings) -> DeviceProfile:
    return load_profile(settings.profile or detect_profile_name())


def _options(settings: ServeSettings, profile: DeviceProfile) -> BackendOptions:
    opts = backend_options(profile)
    if settings.intra_op_threads:
        opts = BackendOptions(settings.intra_op_threads, opts.inter_op_threads, opts.extra)
    return opts


def _tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _unix_socket(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o660)
    return sock


class Daemon:
    def __init__(self, settings: ServeSettings, profile: DeviceProfile, *,
                 systemd: SystemdSettings | None = None) -> None:
        self.settings = settings
        self.profile = profile
        self.runtime = Runtime(settings=settings, options=_options(settings, profile),
                               restore=False)
        self.admin_token = secrets.token_urlsafe(24)
        self.app = App(self.runtime, token=settings.token, admin_token=self.admin_token,
                       max_body_bytes=settings.max_body_bytes, on_shutdown=self.shutdown)
        self._closed = False
        self.supervisor = Supervisor(log)  # background tasks: logged, counted, restarted
        self.notifier = Notifier(systemd or SystemdSettings.from_env())  # Type=notify unit
        self.runtime.telemetry.health.watch(self.supervisor)

    def run(self) -> None:
        try:
            import uvloop

            uvloop.run(self.serve())
        except ImportError:
            asyncio.run(self.serve())

    async def serve(self) -> None:
        log.info("settings: %s", settings_line(effective_settings(self.settings)))
        problems = self.runtime.start()
        for problem in problems:
            log.error("start-up: %s", problem)
        s = self.settings
        sockets = [_tcp_socket(s.host, s.port)]
        if s.uds is not None:
            sockets.append(_unix_socket(s.uds))
        host, port = sockets[0].getsockname()[:2]
        self._write_run_file(f"http://{host}:{port}")
        self.supervisor.spawn("telemetry-flush", self._flush_loop)
        if self.notifier.watchdog_s is not None:
            self.supervisor.spawn("sd-watchdog", self.notifier.watchdog_loop)
        agent = await self._start_agent()
        if agent is not None:
            self.runtime.telemetry.health.attach("agent", agent.status)
        self.app.ready = True
        log.info("serving %d model(s) on http://%s:%d%s (%s server)",
                 len(self.runtime.registry.models()), host, port,
                 f" and {s.uds}" if s.uds else "", s.http_server)
        if self.notifier.enabled:
            status = f"serving {len(self.runtime.registry.models())} model(s) on port {port}"
            self.supervisor.spawn("sd-ready", lambda: self.notifier.ready_when_answering(
                host, port, status))
        try:
            if s.http_server == "uvicorn":
                await self._serve_uvicorn(sockets)
            else:
                await HttpServer(self.app, max_body_bytes=s.max_body_bytes,
                                 keep_alive_s=KEEP_ALIVE_S,
                                 align_header=HEADER_LENGTH.encode(),
                                 fast=self.app.fast, gate=self.app.gate,
                                 limits=HttpLimits.of(s)).serve(sockets)
        finally:
            self.supervisor.cancel()
            if agent is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(agent.stop(), 3.0)
            self.shutdown()

    async def _serve_uvicorn(self, sockets: list[socket.socket]) -> None:
        import uvicorn

        config = uvicorn.Config(self.app, http="httptools", lifespan="on", access_log=False,
                                log_level=self.settings.log_level,
                                timeout_keep_alive=int(KEEP_ALIVE_S), server_header=False,
                                date_header=False, proxy_headers=False)
        await uvicorn.Server(config).serve(sockets=sockets)

    async def _start_agent(self) -> Any:
        """The fleet link, when a broker is configured: desired state in, events out."""
        s = self.settings
        if not s.fleet_url:
            return None
        import socket as socket_mod

        from edge_runtime.agent import AgentSettings, DeviceAgent
        from edge_runtime.agent.probation import NoDataPolicy
        from edge_runtime.protocol.mqtt import MqttLink

        mqtt = s.fleet_mqtt()
        agent = DeviceAgent(
            self.runtime, lambda **kw: MqttLink(mqtt, **kw),
            AgentSettings(s.device_id or socket_mod.gethostname().split(".")[0], fleet=s.fleet,
                          tags=s.device_tags, group=s.device_group, profile=self.profile.name,
                          heartbeat_s=s.heartbeat_s, fleet_keys=s.desired_keys,
                          allow_unsigned_desired=s.allow_unsigned_desired,
                          probation_max_wait_s=s.probation_max_wait_s,
                          probation_no_data=NoDataPolicy(s.probation_no_data)))
        await agent.start()
        log.info("fleet agent %s on %s", agent.device, mqtt.url)
        return agent

    def shutdown(self) -> None:
        """Flush telemetry, free models, remove the run file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.notifier.stopping()
        self.app.ready = False
        self.runtime.close()
        (self.settings.store / RUN_FILE).unlink(missing_ok=True)
        if self.settings.uds is not None:
            self.settings.uds.unlink(missing_ok=True)

    async def _flush_loop(self) -> None:
        """Persist telemetry every interval. A flush that fails (disk full, database locked)
        is counted and retried next interval: the traceback is logged when a run of failures
        starts, one line per failure after it, and the recovery is logged too."""
        loop = asyncio.get_running_loop()
        failing = 0
        while True:
            await asyncio.sleep(self.settings.telemetry_interval_s)
            try:
                await loop.run_in_executor(None, self.runtime.flush)
            except Exception as exc:
                failing += 1
                self.runtime.telemetry.health.fault("telemetry_flush")
                if failing == 1:
                    log.exception("telemetry flush failed (retrying every %g s)",
                                  self.settings.telemetry_interval_s)
                else:
                    log.error("telemetry flush failed again (%d in a row): %s", failing, exc)
                continue
            if failing:
                log.info("telemetry flush works again after %d failure(s)", failing)
                failing = 0

    def _write_run_file(self, url: str) -> None:
        path = self.settings.store / RUN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "url": url,
                       "uds": str(self.settings.uds) if self.settings.uds else None,
                       "admin_token": self.admin_token}, fh)
        os.replace(tmp, path)
