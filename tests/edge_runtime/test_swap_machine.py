"""The swap state machine as a pure function: the table, RECOVER, terminal states, history."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge_runtime.swap.machine import (
    ENTRY_ACTIONS,
    MAX_LOAD_ATTEMPTS,
    TERMINAL,
    TRANSITIONS,
    Action,
    Event,
    InvalidTransition,
    State,
    SwapRecord,
    step,
)

# Where each command starts its record (install: VERIFYING; activate: INSTALLED + ACTIVATE;
# rollback: ROLLING_BACK). DOWNLOADING is where the fleet agent would start.
START_STATES = (State.DOWNLOADING, State.VERIFYING, State.INSTALLED, State.ROLLING_BACK)
NON_TERMINAL = tuple(s for s in State if s not in TERMINAL)
INVALID = [(s, e) for s in State for e in Event
           if e is not Event.RECOVER and (s, e) not in TRANSITIONS]


def record(state: State, **changes: object) -> SwapRecord:
    base = SwapRecord("activate", "gemm", "2", state, previous="1", history=(state.value,), id=7)
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("src", "event"), list(TRANSITIONS), ids=str)
def test_each_transition_enters_its_state_with_its_entry_actions(src: State, event: Event
                                                                  ) -> None:
    before = record(src, reason="earlier")
    after, actions = step(before, event)
    dst = TRANSITIONS[(src, event)]
    assert after.state is dst
    assert actions == ENTRY_ACTIONS.get(dst, ())
    assert after.history == (src.value, dst.value)
    assert after.reason == "earlier"  # kept when the event gives none
    assert (after.kind, after.name, after.version, after.previous, after.id) == (
        "activate", "gemm", "2", "1", 7)
    assert before.state is src  # step is pure: the input record is untouched


def test_every_transition_is_reachable_from_a_start_state() -> None:
    seen, frontier = set(START_STATES), list(START_STATES)
    while frontier:
        state = frontier.pop()
        for (src, _event), dst in TRANSITIONS.items():
            if src is state and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(State)
    assert {src for src, _ in TRANSITIONS} <= seen


@pytest.mark.parametrize(("src", "event"), INVALID, ids=str)
def test_invalid_transitions_raise(src: State, event: Event) -> None:
    with pytest.raises(InvalidTransition) as info:
        step(record(src), event)
    assert (info.value.state, info.value.event) == (src, event)
    assert str(src) in str(info.value) and str(event) in str(info.value)


def test_abort_only_before_the_new_version_serves() -> None:
    abortable = {s for s in State if (s, Event.ABORT) in TRANSITIONS}
    assert abortable == {State.DOWNLOADING, State.VERIFYING, State.INSTALLING, State.LOADING}
    for state in (State.SWITCHING, State.PROBATION, State.ROLLING_BACK):
        with pytest.raises(InvalidTransition):
            step(record(state), Event.ABORT)
    failed, actions = step(record(State.LOADING), Event.ABORT, "operator")
    assert (failed.state, failed.reason, actions) == (State.FAILED, "operator",
                                                      (Action.DISCARD_NEW,))


@pytest.mark.parametrize("state", [s for s in NON_TERMINAL if s is not State.LOADING])
def test_recover_reenters_the_saved_state_with_its_entry_actions(state: State) -> None:
    before = record(state, attempts=1, reason="why")
    after, actions = step(before, Event.RECOVER)
    assert after == before  # same state, same history, attempts untouched
    assert actions == ENTRY_ACTIONS[state]
    assert actions  # every non-terminal state has something to redo


def test_recover_in_loading_counts_attempts_then_fails() -> None:
    rec = record(State.LOADING)
    for attempt in range(1, MAX_LOAD_ATTEMPTS):
        rec, actions = step(rec, Event.RECOVER)
        assert (rec.state, rec.attempts, actions) == (State.LOADING, attempt, (Action.LOAD,))
        assert rec.history == ("loading",)  # re-entering is not a new state
    rec, actions = step(rec, Event.RECOVER)
    assert rec.state is State.FAILED
    assert rec.attempts == MAX_LOAD_ATTEMPTS
    assert actions == (Action.DISCARD_NEW,)
    assert rec.history == ("loading", "failed")
    assert f"interrupted {MAX_LOAD_ATTEMPTS} times" in rec.reason
    assert step(rec, Event.RECOVER) == (rec, ())  # and it stays failed


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_stay_put(state: State) -> None:
    rec = record(state)
    assert rec.terminal
    assert step(rec, Event.RECOVER) == (rec, ())
    for event in (Event.OK, Event.FAIL, Event.ABORT):
        with pytest.raises(InvalidTransition):
            step(rec, event)


def test_only_installed_accepts_activate() -> None:
    assert [s for s, e in TRANSITIONS if e is Event.ACTIVATE] == [State.INSTALLED]


TRACES = [
    ("install", State.VERIFYING, [Event.OK, Event.OK],
     ["verifying", "installing", "installed"]),
    ("deploy", State.DOWNLOADING, [Event.OK, Event.OK, Event.OK, Event.ACTIVATE, Event.OK,
                                   Event.OK, Event.OK],
     ["downloading", "verifying", "installing", "installed", "loading", "switching",
      "probation", "committed"]),
    ("activate", State.INSTALLED, [Event.ACTIVATE, Event.OK, Event.OK, Event.OK],
     ["installed", "loading", "switching", "probation", "committed"]),
    ("activate", State.INSTALLED, [Event.ACTIVATE, Event.FAIL],
     ["installed", "loading", "failed"]),
    ("activate", State.INSTALLED, [Event.ACTIVATE, Event.OK, Event.OK, Event.FAIL, Event.OK],
     ["installed", "loading", "switching", "probation", "rolling_back", "rolled_back"]),
    ("activate", State.INSTALLED, [Event.ACTIVATE, Event.OK, Event.FAIL, Event.FAIL],
     ["installed", "loading", "switching", "rolling_back", "failed"]),
    ("rollback", State.ROLLING_BACK, [Event.OK], ["rolling_back", "rolled_back"]),
]


@pytest.mark.parametrize(("kind", "start", "events", "history"), TRACES,
                         ids=[f"{t[0]}-{t[3][-1]}-{i}" for i, t in enumerate(TRACES)])
def test_history_accumulates_along_a_trace(kind: str, start: State, events: list[Event],
                                           history: list[str]) -> None:
    rec = SwapRecord(kind, "gemm", "2", start, history=(start.value,))
    for i, event in enumerate(events):
        rec, _ = step(rec, event, reason=f"event {i}" if event is Event.FAIL else "")
        if rec.state is not State.LOADING:
            rec, _ = step(rec, Event.RECOVER)  # a crash anywhere adds nothing to the history
    assert list(rec.history) == history
    assert rec.terminal
    if Event.FAIL in events:
        last_fail = len(events) - 1 - events[::-1].index(Event.FAIL)
        assert rec.reason == f"event {last_fail}"
