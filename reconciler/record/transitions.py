"""What a cycle hands on: the phase changes it made (:class:`Transition`), the store's
interface (:class:`StatusStore`) with the in-memory store one process keeps (``sync
--once``, tests), and the summary of one pass (:class:`CycleResult`) that the service, its
metrics and deliveries and the CLI's reports read.

They sit in the record stage, below the cycle and the views, because the Git write-back
implements the store and reports the transitions in its commit messages, and the reports
format a result: the cycle depends on them, and they on nothing but the status model and
the declaration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from reconciler.record.status import ExecutionState

if TYPE_CHECKING:
    from reconciler.declare.declared import Declaration


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


@dataclass
class CycleResult:
    revision: str
    states: dict[str, ExecutionState]
    transitions: list[Transition]
    errors: list[str]
    declaration: Declaration | None
    cluster_unknown: bool
    seconds: float
    fetch_seconds: float | None = None
    locks_awaiting_writeback: int | None = None  # None: the pass did not judge locks (a follow-up)
    ignored_status_files: dict[str, str] = field(default_factory=dict)  # path → why (untrusted input)
    cache_rebuilds: int = 0  # how often the source rebuilt a damaged Git cache (running count)
    created: int = 0  # runs created by this cycle
    adopted: int = 0  # existing runs of ours taken over by this cycle
    # a predecessor of a waiting dependent ended in this pass: run a full cycle again at once
    # (it releases the lock once durable and starts the dependent) instead of at the next poll
    requeue: bool = False
    # nothing this cycle reads had changed since a pass that changed nothing: its result
    # stands (see QuietMark); only the fetch was done (with runs Running, one Event LIST, and a
    # children LIST for each run whose children the watch cache does not hold)
    skipped: bool = False
