"""What a cycle hands to the status store: the phase changes it made (:class:`Transition`)
and the store's interface (:class:`StatusStore`), with the in-memory store one process
keeps (``sync --once``, tests).

They sit in the record stage, below the cycle, because the Git write-back implements the
store and reports the transitions in its commit messages: the cycle depends on them, and
they on nothing but the status model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from reconciler.record.status import ExecutionState


@dataclass(frozen=True)
class Transition:
    name: str
    from_phase: str
    to_phase: str
    reason: str
    message: str
    target: str
    run: str


class StatusStore(Protocol):
    # True: load() is the whole truth (recovered from the bot's own commits); False: the
    # cycle adds what the history of status/ in Git recorded (statushistory)
    authoritative: bool

    def load(self) -> dict[str, ExecutionState]: ...
    def refresh(self) -> None: ...
    def durable(self, name: str, state: ExecutionState) -> bool: ...
    def save(self, states: dict[str, ExecutionState], transitions: list[Transition], revision: str) -> None: ...


class MemoryStatusStore:
    """Keeps states between cycles of one process (``sync --once``, tests); what it saved
    is as durable as it gets."""

    authoritative = False

    def __init__(self) -> None:
        self.states: dict[str, ExecutionState] = {}
        self.recorded: dict[str, ExecutionState] = {}  # what the Git history holds (set each cycle)
        self.saves = 0

    def load(self) -> dict[str, ExecutionState]:
        return dict(self.states)

    def refresh(self) -> None:
        return None

    def durable(self, name: str, state: ExecutionState) -> bool:
        return state in (self.states.get(name), self.recorded.get(name))

    def save(self, states: dict[str, ExecutionState], transitions: list[Transition], revision: str) -> None:
        self.states = dict(states)
        self.saves += 1
