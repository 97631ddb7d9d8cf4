"""The device update state machine: a transition table and a pure step function.

    DOWNLOADING -> VERIFYING -> INSTALLING -> INSTALLED            (kind "install" stops here)
    INSTALLED --ACTIVATE--> LOADING -> SWITCHING -> PROBATION -> COMMITTED
    LOADING/VERIFYING/INSTALLING/DOWNLOADING --FAIL--> FAILED      (the old version keeps serving)
    PROBATION --FAIL--> ROLLING_BACK -> ROLLED_BACK
    ROLLBACK (kind "rollback") starts at ROLLING_BACK.

The runner saves the record *before* running the entry action of the state it enters, so after a
power cut it knows where it was. RECOVER re-enters the saved state (every entry action is
idempotent); LOADING counts attempts so a model that crashes the process cannot boot-loop it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class State(StrEnum):
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    INSTALLED = "installed"
    LOADING = "loading"
    SWITCHING = "switching"
    PROBATION = "probation"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class Event(StrEnum):
    OK = "ok"
    FAIL = "fail"
    ACTIVATE = "activate"
    RECOVER = "recover"
    ABORT = "abort"


class Action(StrEnum):
    DOWNLOAD = "download"
    VERIFY = "verify"
    UNPACK = "unpack"
    LOAD = "load"  # load the new version and run the smoke inference
    SWITCH = "switch"  # persist the active pointer, flip the in-memory reference
    PROBATION = "probation"  # watch the new version (ends with OK or FAIL)
    UNLOAD_OLD = "unload_old"
    SWITCH_BACK = "switch_back"
    DISCARD_NEW = "discard_new"  # unload a loaded-but-not-switched new version


TERMINAL = frozenset({State.INSTALLED, State.COMMITTED, State.ROLLED_BACK, State.FAILED})
MAX_LOAD_ATTEMPTS = 3

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.DOWNLOADING, Event.OK): State.VERIFYING,
    (State.DOWNLOADING, Event.FAIL): State.FAILED,
    (State.VERIFYING, Event.OK): State.INSTALLING,
    (State.VERIFYING, Event.FAIL): State.FAILED,
    (State.INSTALLING, Event.OK): State.INSTALLED,
    (State.INSTALLING, Event.FAIL): State.FAILED,
    (State.INSTALLED, Event.ACTIVATE): State.LOADING,
    (State.LOADING, Event.OK): State.SWITCHING,
    (State.LOADING, Event.FAIL): State.FAILED,
    (State.SWITCHING, Event.OK): State.PROBATION,
    (State.SWITCHING, Event.FAIL): State.ROLLING_BACK,
    (State.PROBATION, Event.OK): State.COMMITTED,
    (State.PROBATION, Event.FAIL): State.ROLLING_BACK,
    (State.ROLLING_BACK, Event.OK): State.ROLLED_BACK,
    (State.ROLLING_BACK, Event.FAIL): State.FAILED,
}
# Aborting is allowed until the new version serves traffic.
for _s in (State.DOWNLOADING, State.VERIFYING, State.INSTALLING, State.LOADING):
    TRANSITIONS[(_s, Event.ABORT)] = State.FAILED

ENTRY_ACTIONS: dict[State, tuple[Action, ...]] = {
    State.DOWNLOADING: (Action.DOWNLOAD,),
    State.VERIFYING: (Action.VERIFY,),
    State.INSTALLING: (Action.UNPACK,),
    State.LOADING: (Action.LOAD,),
    State.SWITCHING: (Action.SWITCH,),
    State.PROBATION: (Action.PROBATION,),
    State.COMMITTED: (Action.UNLOAD_OLD,),
    State.ROLLING_BACK: (Action.SWITCH_BACK,),
    State.FAILED: (Action.DISCARD_NEW,),
}


@dataclass(frozen=True)
class SwapRecord:
    kind: str  # install | activate | deploy | rollback
    name: str
    version: str | None
    state: State
    previous: str | None = None  # the version active before this swap
    target: str | None = None  # rollback: the version to go back to
    reason: str = ""
    attempts: int = 0
    package: str | None = None
    deployment: str | None = None
    history: tuple[str, ...] = ()
    id: int | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


class InvalidTransition(Exception):
    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"no transition from {state} on {event}")
        self.state = state
        self.event = event


def step(record: SwapRecord, event: Event, reason: str = ""
         ) -> tuple[SwapRecord, tuple[Action, ...]]:
    """Pure: the next record and the actions to run once it is saved."""
    if event is Event.RECOVER:
        return _recover(record)
    nxt = TRANSITIONS.get((record.state, event))
    if nxt is None:
        raise InvalidTransition(record.state, event)
    new = replace(record, state=nxt, reason=reason or record.reason,
                  history=(*record.history, nxt.value))
    return new, ENTRY_ACTIONS.get(nxt, ())


def _recover(record: SwapRecord) -> tuple[SwapRecord, tuple[Action, ...]]:
    if record.terminal:
        return record, ()
    if record.state is State.LOADING:
        attempts = record.attempts + 1
        if attempts >= MAX_LOAD_ATTEMPTS:
            failed = replace(record, state=State.FAILED, attempts=attempts,
                             reason=f"loading was interrupted {attempts} times",
                             history=(*record.history, State.FAILED.value))
            return failed, ENTRY_ACTIONS[State.FAILED]
        record = replace(record, attempts=attempts)
    return record, ENTRY_ACTIONS.get(record.state, ())
