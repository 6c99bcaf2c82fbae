"""A PipelineRun's plan in the simulated Tekton controller (:class:`RunPlan`), and what the
task-level moves (``tekton_tasks``: finish, fail, cancel) need of the controller
(:class:`TektonRuns`).

``tekton_tasks`` is typed against the protocol, not against ``TektonSimulator``, so the
controller can import its task moves without the two modules importing each other;
``TektonSimulator`` matches it structurally (mypy checks it where the controller hands
itself to them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.simulator.server import FakeKubeServer


@dataclass
class RunPlan:
    tasks: list[str]
    steps: dict[str, list[str]]
    image: str
    parallel: bool


class TektonRuns(Protocol):
    server: FakeKubeServer
    _plans: dict[tuple[str, str], RunPlan]

    def _now(self) -> str: ...
    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any]: ...
    def _put(self, plural: str, obj: dict[str, Any], group: str = ..., version: str = ...) -> dict[str, Any]: ...
    def _event(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None: ...
    def _plan(self, pr: dict[str, Any], tasks: Sequence[str] | None = None,
              steps: Mapping[str, Sequence[str]] | None = None, image: str | None = None,
              parallel: bool = False) -> RunPlan: ...
    def _taskruns(self, namespace: str, name: str) -> dict[str, dict[str, Any]]: ...
    def _ensure_started(self, namespace: str, name: str) -> RunPlan: ...
    def _start_task(self, pr: dict[str, Any], plan: RunPlan, task: str, with_pod: bool = True) -> dict[str, Any]: ...
    def _refresh(self, namespace: str, name: str, final: dict[str, Any] | None = None,
                 skipped: Sequence[tuple[str, str]] = ()) -> dict[str, Any]: ...
    def _complete(self, namespace: str, name: str, task: str, kind: str, *, step: str | None = None,
                  exit_code: int | None = None, message: str | None = None,
                  message_in_status: bool = False) -> dict[str, Any]: ...
