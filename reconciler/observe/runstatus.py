"""What a run's status says right now: the phase of an execution, read from its run.

The reconciler never runs steps itself; it reads what Tekton or the Job controller wrote and
maps it onto the execution lifecycle (SPEC §4 step 7, BR-WF-003): the ``Succeeded`` condition
True → Completed, False → Failed (with :mod:`reconciler.observe.failures` explaining why), Unknown or
absent → Running; a Job's ``Complete``/``Failed`` conditions likewise. The status vocabulary
it shares with :mod:`reconciler.observe.failures` (RFC3339 times, Go-style durations, conditions) is
:mod:`reconciler.observe.vocabulary`'s.

Pure: no I/O, no clock, no kubernetes client. Payloads are plain mappings as the API returns
them. Task counts use Tekton's own condition message (pkg/reconciler/pipelinerun/resources/
pipelinerunstate.go): "Tasks Completed: N (Failed: F, Cancelled C), Incomplete: I, Skipped: S"
while running and the same without "Incomplete" when done; N counts finished tasks (succeeded,
failed or cancelled), as ``tkn`` shows it, and the total is N + I + S.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from reconciler.observe.failures import blocking_event, classify_job, classify_pipelinerun
from reconciler.observe.vocabulary import (
    FailureDetails,
    Obj,
    RunContext,
    camel_dict,
    dig,
    find_condition,
    format_duration,
    format_time,
    mappings,
    parse_time,
    text,
)

__all__ = [
    "ExecutionStatus", "Phase", "RunObservation", "observe_job", "observe_pipelinerun",
    "task_counts",
]


class Phase(str, Enum):
    Pending = "Pending"
    Running = "Running"
    Completed = "Completed"
    Failed = "Failed"
    Skipped = "Skipped"


# --- observations -----------------------------------------------------------------------

@dataclass(frozen=True)
class ExecutionStatus:
    """The engine's own verdict, kept next to ours (``status.executionStatus``)."""

    status: str  # "True" | "False" | "Unknown", as the engine's condition says
    reason: str
    message: str
    completed_tasks: int
    total_tasks: int | None

    def to_status_dict(self) -> dict[str, Any]:
        """``status``, ``reason``, ``message``, ``completedTasks``, ``totalTasks``."""
        return camel_dict(self)


@dataclass(frozen=True)
class RunObservation:
    phase: Phase  # Running | Completed | Failed
    reason: str
    message: str
    start_time: datetime | None
    completion_time: datetime | None
    execution_status: ExecutionStatus
    failure: FailureDetails | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in (Phase.Completed, Phase.Failed)

    @property
    def duration(self) -> timedelta | None:
        if self.start_time is None or self.completion_time is None:
            return None
        return max(self.completion_time - self.start_time, timedelta(0))

    def to_status_dict(self) -> dict[str, Any]:
        """The status-document fields this observation decides (camelCase, None left out)."""
        duration = self.duration
        values: dict[str, Any] = {
            "phase": self.phase.value, "reason": self.reason, "message": self.message,
            "startTime": format_time(self.start_time) if self.start_time else None,
            "completionTime": format_time(self.completion_time) if self.completion_time else None,
            "duration": format_duration(duration) if duration is not None else None,
            "executionStatus": self.execution_status.to_status_dict(),
            "failureDetails": self.failure.to_status_dict() if self.failure else None,
        }
        return {k: v for k, v in values.items() if v is not None}


_COUNTS = re.compile(r"Tasks Completed: (?P<done>\d+) \(Failed: \d+, Cancell?ed:? \d+\)"
                     r"(?:, Incomplete: (?P<incomplete>\d+))?, Skipped: (?P<skipped>\d+)")


def task_counts(pipelinerun: Obj, taskruns: Sequence[Obj]) -> tuple[int, int | None]:
    """(finished tasks, total tasks): from Tekton's condition message when it has the counts,
    else by counting the child TaskRuns (total: the resolved pipelineSpec's tasks + finally,
    else childReferences + skippedTasks; None when nothing is known yet)."""
    message = text(dig(find_condition(pipelinerun), "message"))
    if m := _COUNTS.search(message):
        done = int(m["done"])
        return done, done + int(m["incomplete"] or 0) + int(m["skipped"])
    status = dig(pipelinerun, "status") or {}
    refs = [r for r in dig(status, "childReferences") or [] if isinstance(r, Mapping)]
    names = {r.get("name") for r in refs}
    children = [tr for tr in taskruns if not refs or dig(tr, "metadata", "name") in names]
    done = sum(1 for tr in children
               if text(dig(find_condition(tr), "status")) in ("True", "False"))
    spec = dig(status, "pipelineSpec")
    if isinstance(spec, Mapping) and (spec.get("tasks") or spec.get("finally")):
        total = len(spec.get("tasks") or []) + len(spec.get("finally") or [])
    else:
        total = max(len(refs), len(children)) + len(dig(status, "skippedTasks") or [])
    return done, total or None


def _waiting_for(events: Sequence[Obj], running: bool) -> str:
    """'waiting: <cause>' when nothing runs yet and a Warning Event says why, else ''."""
    if running or not events:
        return ""
    found = blocking_event(events)
    return f"waiting: {found.cause}" if found else ""


def observe_pipelinerun(pipelinerun: Obj, taskruns: Sequence[Obj],
                        context: RunContext, *, events: Sequence[Obj] = ()) -> RunObservation:
    """Map a PipelineRun (and its child TaskRuns) onto the execution phase. ``events``: the
    Warning Events of the run, its TaskRuns and their pods (what keeps it from starting)."""
    cond = find_condition(pipelinerun) or {}
    state = text(cond.get("status"))
    state = state if state in ("True", "False") else "Unknown"
    reason, message = text(cond.get("reason")), text(cond.get("message"))
    done, total = task_counts(pipelinerun, taskruns)
    engine = ExecutionStatus(state, reason, message, done, total)
    start = parse_time(dig(pipelinerun, "status", "startTime"))
    end = parse_time(dig(pipelinerun, "status", "completionTime"))
    if state == "True":
        return RunObservation(Phase.Completed, reason or "Succeeded", message, start,
                              end or parse_time(cond.get("lastTransitionTime")), engine)
    if state == "False":
        failure = classify_pipelinerun(pipelinerun, taskruns, context, events=events)
        return RunObservation(Phase.Failed, failure.reason, failure.message, start,
                              end or failure.failed_at, engine, failure)
    running = any(dig(step, "running") is not None for tr in taskruns
                  for step in mappings(dig(tr, "status", "steps")))
    if waiting := _waiting_for(events, running):
        message = waiting
    elif not cond:
        message = "the PipelineRun exists; Tekton has not reported its status yet"
    return RunObservation(Phase.Running, reason or "Pending", message, start, None, engine)


def observe_job(job: Obj, pods: Sequence[Obj], context: RunContext, *,
                events: Sequence[Obj] = ()) -> RunObservation:
    """Map a batch/v1 Job (one container, ``workflow``) onto the execution phase."""
    complete, failed = find_condition(job, "Complete"), find_condition(job, "Failed")
    start = parse_time(dig(job, "status", "startTime"))
    if complete and complete.get("status") == "True":
        engine = ExecutionStatus("True", text(complete.get("reason")),
                                 text(complete.get("message")), 1, 1)
        end = parse_time(dig(job, "status", "completionTime")) or parse_time(
            complete.get("lastTransitionTime"))
        return RunObservation(Phase.Completed, text(complete.get("reason")) or "Completed",
                              engine.message, start, end, engine)
    if failed and failed.get("status") == "True":
        failure = classify_job(job, pods, context, events=events)
        engine = ExecutionStatus("False", text(failed.get("reason")),
                                 text(failed.get("message")), 1, 1)
        end = parse_time(failed.get("lastTransitionTime")) or failure.failed_at
        return RunObservation(Phase.Failed, failure.reason, failure.message, start, end,
                              engine, failure)
    suspended = find_condition(job, "Suspended")
    if suspended and suspended.get("status") == "True":
        reason, message = "Suspended", text(suspended.get("message")) or "Job is suspended"
    elif waiting := _waiting_for(events, any(
            dig(c, "state", "running") is not None for pod in pods
            for c in mappings(dig(pod, "status", "containerStatuses")))):
        reason, message = "Running" if start else "Pending", waiting
    elif start is None:
        reason, message = "Pending", "the Job exists; its pod has not started yet"
    else:
        reason, message = "Running", f"{dig(job, 'status', 'active') or 0} pod(s) active"
    return RunObservation(Phase.Running, reason, message, start, None,
                          ExecutionStatus("Unknown", reason, message, 0, 1))
