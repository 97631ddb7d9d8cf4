"""Drives swap records through the machine: save the record, then run the entry actions.

The runner is the only place with side effects (store, registry); ``machine.step`` decides.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from edge_runtime.errors import EdgeRuntimeError, SwapError
from edge_runtime.manifest import Manifest
from edge_runtime.package import Package, read_manifest
from edge_runtime.registry import Registry, ServedModel
from edge_runtime.store.models import ModelStore
from edge_runtime.swap import records
from edge_runtime.swap.machine import Action, Event, State, SwapRecord, step

log = logging.getLogger("edge_runtime.swap")

Hook = Callable[[SwapRecord], None]
# Decides the end of probation: Event.OK / Event.FAIL now, or None to wait for finish_probation.
Probation = Callable[[SwapRecord], Event | None]


def _no_hook(_record: SwapRecord) -> None:
    return None


def _pass_probation(_record: SwapRecord) -> Event | None:
    return Event.OK


def peek_manifest(path: str | Path) -> Manifest:
    """Name and version before verification, to key the swap record (verified right after)."""
    return read_manifest(path)


class SwapRunner:
    def __init__(self, store: ModelStore, registry: Registry, *, on_change: Hook = _no_hook,
                 after_save: Hook = _no_hook, probation: Probation = _pass_probation) -> None:
        self.store = store
        self.registry = registry
        self._listeners: list[Hook] = [on_change]
        self._after_save = after_save  # fault injection in tests (e.g. SIGKILL at a state)
        self.probation = probation  # the fleet agent replaces it to watch fleet deployments
        self._lock = threading.RLock()
        self._packages: dict[int, Package] = {}
        self._pending: dict[str, ServedModel] = {}  # loaded, not yet active
        self._replaced: dict[str, ServedModel] = {}  # was active, not yet unloaded
        self._seen: set[int] = set()  # records this runner saved (recovered or its own)

    def add_listener(self, hook: Hook) -> None:
        """Called (on the swapping thread) after every saved state change."""
        self._listeners.append(hook)

    # -- commands ---------------------------------------------------------------------------
    def install(self, package: str | Path, *, deployment: str | None = None) -> SwapRecord:
        m = peek_manifest(package)
        rec = SwapRecord("install", m.name, m.version, State.VERIFYING, package=str(package),
                         deployment=deployment, history=(State.VERIFYING.value,))
        return self._start(rec, (Action.VERIFY,))

    def activate(self, name: str, version: str, *, deployment: str | None = None) -> SwapRecord:
        self.recover(name)
        self.store.get(name, version)  # ModelNotFound before any record exists
        ref = self.store.active(name)
        if ref is not None and ref.version == version and self.registry.active(name):
            return SwapRecord("activate", name, version, State.COMMITTED, previous=ref.previous,
                              reason="already active")
        # Re-activating the stored active version (not loaded: a local command without the
        # daemon) keeps its rollback target instead of making it its own.
        previous = None if ref is None else ref.previous if ref.version == version else ref.version
        rec = SwapRecord("activate", name, version, State.INSTALLED, previous=previous,
                         deployment=deployment)
        with self._lock:
            rec, actions = step(rec, Event.ACTIVATE)
            return self._start(rec, actions)

    def rejudge(self, name: str, *, deployment: str | None) -> SwapRecord:
        """Put the active version back on probation under a new deployment; a failed verdict
        switches back to the version it replaced."""
        self.recover(name)
        ref = self.store.active(name)
        if ref is None:
            raise SwapError(name, None, "no active version to put on probation")
        rec = SwapRecord("deploy", name, ref.version, State.PROBATION, previous=ref.previous,
                         deployment=deployment, history=(State.PROBATION.value,))
        return self._start(rec, ())

    def rollback(self, name: str, *, to: str | None = None, reason: str = "requested"
                 ) -> SwapRecord:
        self.recover(name)
        ref = self.store.active(name)
        target = to or (ref.previous if ref else None)
        if ref is None or target is None:
            raise SwapError(name, None, "no previous version to roll back to")
        self.store.get(name, target)
        rec = SwapRecord("rollback", name, ref.version, State.ROLLING_BACK, previous=ref.version,
                         target=target, reason=reason, history=(State.ROLLING_BACK.value,))
        return self._start(rec, (Action.SWITCH_BACK,))

    def begin_deploy(self, name: str, version: str, package: str | Path, *,
                     deployment: str | None = None) -> SwapRecord:
        """A fleet deployment: saved in DOWNLOADING; the agent downloads, then calls
        ``downloaded`` (or ``fail``/``abort``). It continues through activation by itself."""
        ref = self.store.active(name)
        rec = SwapRecord("deploy", name, version, State.DOWNLOADING, package=str(package),
                         previous=ref.version if ref else None, deployment=deployment,
                         history=(State.DOWNLOADING.value,))
        with self._lock:
            return self._save(rec)

    def downloaded(self, record: SwapRecord) -> SwapRecord:
        with self._lock:
            return self._continue(self._drive(record, Event.OK))

    def fail(self, record: SwapRecord, reason: str) -> SwapRecord:
        with self._lock:
            return self._drive(record, Event.FAIL, reason)

    def abort(self, record: SwapRecord, reason: str) -> SwapRecord:
        with self._lock:
            return self._drive(record, Event.ABORT, reason)

    def _continue(self, rec: SwapRecord) -> SwapRecord:
        """A deploy goes on from INSTALLED to activation; an install stops there."""
        if rec.kind == "deploy" and rec.state is State.INSTALLED:
            return self._drive(rec, Event.ACTIVATE)
        return rec

    def finish_probation(self, record: SwapRecord, ok: bool, reason: str = "") -> SwapRecord:
        with self._lock:
            return self._drive(record, Event.OK if ok else Event.FAIL, reason)

    def recover(self, name: str | None = None) -> list[SwapRecord]:
        """Finish or undo the swaps a stopped process left under way: all of them at start-up,
        those of ``name`` before a new swap of it (resumed later, such a stale swap would undo
        the new one). Swaps this runner drives itself (waiting in a state) are left alone."""
        done = []
        with self._lock:
            for rec in records.unfinished(self.store.db):
                if rec.id in self._seen or name not in (None, rec.name):
                    continue
                log.warning("recovering swap %s %s %s from %s", rec.kind, rec.name, rec.version,
                            rec.state)
                done.append(self._continue(self._drive(rec, Event.RECOVER)))
        return done

    def restore_active(self) -> list[str]:
        """Load the active version of every model that is not loaded yet (daemon start-up)."""
        problems = []
        for ref in self.store.actives():
            if self.registry.active(ref.name) is not None:
                continue
            try:
                self._load_and_activate(ref.name, ref.version)
            except EdgeRuntimeError as exc:
                problems.append(f"{ref.name} {ref.version}: {exc}")
                if ref.previous:
                    log.error("active %s %s does not load (%s); rolling back", ref.name,
                              ref.version, exc)
                    self.rollback(ref.name, reason=f"active version does not load: {exc}")
        return problems

    # -- engine -----------------------------------------------------------------------------
    def _start(self, rec: SwapRecord, actions: tuple[Action, ...]) -> SwapRecord:
        with self._lock:
            rec = self._save(rec)
            return self._run(rec, actions)

    def _drive(self, rec: SwapRecord, event: Event, reason: str = "") -> SwapRecord:
        rec, actions = step(rec, event, reason)
        rec = self._save(rec)
        return self._run(rec, actions)

    def _run(self, rec: SwapRecord, actions: tuple[Action, ...]) -> SwapRecord:
        for action in actions:
            try:
                event = getattr(self, f"_do_{action.value}")(rec)
                reason = ""
            except EdgeRuntimeError as exc:
                event, reason = Event.FAIL, str(exc)
            if event is not None:
                return self._drive(rec, event, reason)
        return rec

    def _save(self, rec: SwapRecord) -> SwapRecord:
        rec = records.save(self.store.db, rec)
        assert rec.id is not None
        self._seen.add(rec.id)
        self._after_save(rec)
        for listener in self._listeners:
            listener(rec)
        return rec

    # -- entry actions: return the next event, or None when the state waits ------------------
    def _do_download(self, rec: SwapRecord) -> Event | None:
        return None  # the fleet agent downloads (and resumes after a restart), then calls back

    def _do_verify(self, rec: SwapRecord) -> Event:
        assert rec.package is not None and rec.id is not None
        pkg = self.store.verify(rec.package)
        if (pkg.manifest.name, pkg.manifest.version) != (rec.name, rec.version):
            raise SwapError(rec.name, rec.version, "package manifest changed during install")
        self._packages[rec.id] = pkg
        return Event.OK

    def _do_unpack(self, rec: SwapRecord) -> Event:
        assert rec.id is not None
        pkg = self._packages.pop(rec.id, None)
        if pkg is None:  # recovered after a restart: verify again
            assert rec.package is not None
            pkg = self.store.verify(rec.package)
        self.store.clean_staging(rec.name)
        self.store.register(pkg, self.store.unpack(pkg))
        return Event.OK

    def _do_load(self, rec: SwapRecord) -> Event:
        assert rec.version is not None
        self._pending[rec.name] = self._load(rec.name, rec.version)
        return Event.OK

    def _do_switch(self, rec: SwapRecord) -> Event:
        assert rec.version is not None
        served = self._pending.pop(rec.name, None)
        if served is None or served.version != rec.version:  # recovered: load it again
            served = self._load(rec.name, rec.version)
        self.store.set_active(rec.name, rec.version, rec.previous)
        old = self.registry.activate(served)
        if old is not None and old is not served:
            self._replaced[rec.name] = old
        return Event.OK

    def _do_probation(self, rec: SwapRecord) -> Event | None:
        return self.probation(rec)

    def _do_unload_old(self, rec: SwapRecord) -> None:
        old = self._replaced.pop(rec.name, None)
        if old is not None:
            old.unload()

    def _do_switch_back(self, rec: SwapRecord) -> Event:
        target = rec.target or rec.previous
        if target is None:
            self.store.clear_active(rec.name)
            dropped = self.registry.deactivate(rec.name)
            if dropped is not None:
                dropped.unload()
            return Event.OK
        kept = self._replaced.pop(rec.name, None)
        served = kept if kept is not None and kept.version == target else None
        if served is None:
            if kept is not None:
                kept.unload()
            served = self._load(rec.name, target)
        self.store.set_active(rec.name, target, rec.version)
        bad = self.registry.activate(served)
        if bad is not None and bad is not served:
            bad.unload()
        return Event.OK

    def _do_discard_new(self, rec: SwapRecord) -> None:
        pending = self._pending.pop(rec.name, None)
        if pending is not None:
            pending.unload()

    def _load(self, name: str, version: str) -> ServedModel:
        """Re-hash the unpacked files, then load: after a restart too, the disk may have changed."""
        installed = self.store.get(name, version)
        self.store.check_files(installed)
        return self.registry.load(installed)

    def _load_and_activate(self, name: str, version: str) -> None:
        self.registry.activate(self._load(name, version))
