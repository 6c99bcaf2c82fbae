"""What a run's status says right now: the phase of an execution, read from its run.

The reconciler never runs steps itself; it reads what Tekton or the Job controller wrote and
maps it onto the execution lifecycle (SPEC §4 step 7, BR-WF-003): the ``Succeeded`` condition
True → Completed, False → Failed (with :mod:`reconciler.failures` explaining why), Unknown or
absent → Running; a Job's ``Complete``/``Failed`` conditions likewise. It also carries the
small status vocabulary both modules share: RFC3339 times, Go-style durations, conditions.

Pure: no I/O, no clock, no kubernetes client. Payloads are plain mappings as the API returns
them. Task counts use Tekton's own condition message (pkg/reconciler/pipelinerun/resources/
pipelinerunstate.go): "Tasks Completed: N (Failed: F, Cancelled C), Incomplete: I, Skipped: S"
while running and the same without "Incomplete" when done; N counts finished tasks (succeeded,
failed or cancelled), as ``tkn`` shows it, and the total is N + I + S.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.failures import FailureDetails, RunContext

Obj = Mapping[str, Any]

__all__ = [
    "CANCELLED_BY_ANNOTATION", "ChildRun", "ExecutionStatus", "Phase", "RunObservation",
    "camel_dict", "canceller", "child_runs", "container_started", "describe_container", "dig",
    "failing_step", "find_condition", "first_time", "format_duration", "format_time",
    "human_duration", "mappings", "observe_job", "observe_pipelinerun", "parse_time", "squash",
    "task_counts", "termination_text", "text",
]


class Phase(str, Enum):
    Pending = "Pending"
    Running = "Running"
    Completed = "Completed"
    Failed = "Failed"
    Skipped = "Skipped"


# --- time -------------------------------------------------------------------------------

def parse_time(value: str | None) -> datetime | None:
    """RFC3339 (``2026-11-21T09:12:03Z``; fractions, offsets allowed) → aware UTC datetime.
    Anything else (None, empty, malformed) → None."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def format_time(value: datetime) -> str:
    """RFC3339 in UTC with ``Z`` and whole seconds, as Kubernetes writes ``metav1.Time``.
    A naive datetime is taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(value: timedelta) -> str:
    """Go's ``time.Duration.String()``: ``1h2m3s``, ``1h0m0s``, ``2m38s``, ``45s``, ``1.5s``,
    ``250ms``, ``0s`` (so it round-trips with Tekton's and Kubernetes' own durations)."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if micros < 0:
        return "-" + format_duration(timedelta(microseconds=-micros))
    if micros == 0:
        return "0s"
    if micros < 1_000_000:
        return f"{micros}µs" if micros < 1000 else _decimal(micros / 1000) + "ms"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = _decimal(rest / 1_000_000) + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    return f"{minutes}m{seconds}" if minutes else seconds


def _decimal(number: float) -> str:
    return f"{number:.6f}".rstrip("0").rstrip(".")


def human_duration(value: timedelta) -> str:
    """For sentences: ``2m 38s``, ``1h 5s``, ``45s``, ``0s`` (whole seconds, zero parts left out)."""
    total = max(0, int(value.total_seconds()))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    return " ".join(parts) or "0s"


# --- payload access ---------------------------------------------------------------------

def dig(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...`` or None as soon as a level is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def text(value: Any) -> str:
    """``value`` if it is a string, else ``""``."""
    return value if isinstance(value, str) else ""


def mappings(value: Any) -> list[Obj]:
    """The mapping items of a list (anything else: empty)."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, (list, tuple)) else []


def find_condition(obj: Obj, kind: str = "Succeeded") -> Obj | None:
    """The ``status.conditions`` entry of ``type == kind``, or None."""
    return next((c for c in mappings(dig(obj, "status", "conditions")) if c.get("type") == kind),
                None)


def container_started(state: Any) -> bool:
    """Did this container state (or Tekton step state) ever run? A container that failed to
    start reports ``startedAt`` as the Unix epoch."""
    if dig(state, "running") is not None:
        return True
    started = parse_time(dig(state, "terminated", "startedAt"))
    return started is not None and started.year > 1970


def termination_text(message: str) -> str:
    """A step's ``terminated.message``: Tekton writes a JSON list of results there; keep the
    values (dropping internal type-3 entries such as StartedAt). Plain text passes through."""
    try:
        data = json.loads(message)
    except ValueError:
        return message.strip()
    if not isinstance(data, list):
        return message.strip()
    return "; ".join(str(r["value"]) for r in mappings(data)
                     if r.get("type") != 3 and r.get("value") not in (None, ""))


def camel_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a status mapping: camelCase keys, RFC3339 times, Go durations, enums as
    their values, nested ``to_status_dict()``; None values left out."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, datetime):
            value = format_time(value)
        elif isinstance(value, timedelta):
            value = format_duration(value)
        elif isinstance(value, Enum):
            value = value.value
        elif hasattr(value, "to_status_dict"):
            value = value.to_status_dict()
        if value is not None:
            head, *rest = f.name.split("_")
            out[head + "".join(w.capitalize() for w in rest)] = value
    return out


# --- reading runs ---------------------------------------------------------------------

#: Annotation the reconciler may set on a run before cancelling it: who or what asked.
CANCELLED_BY_ANNOTATION = "reconciler.kubernaut.ai/cancelled-by"


def squash(value: str, limit: int) -> str:
    """Whitespace collapsed, cut to ``limit`` characters with an ellipsis."""
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def describe_container(name: str, state: Any) -> str:
    """One line on a container state: '"workflow" exited with code 1: <its message>'."""
    if isinstance(wait := dig(state, "waiting"), Mapping):
        return f'"{name}" is waiting ({text(wait.get("reason"))}): {text(wait.get("message"))}'
    if not isinstance(term := dig(state, "terminated"), Mapping):
        return ""
    reason, detail = text(term.get("reason")), termination_text(text(term.get("message")))
    out = f'"{name}" exited with code {term.get("exitCode")}'
    out += f" ({reason})" if reason not in ("", "Error", "Completed") else ""
    return f"{out}: {detail}" if detail else out


def canceller(run: Obj) -> str:
    """Who or what cancelled: our annotation, else spec.status and the manager that set it."""
    if annotation := text(dig(run, "metadata", "annotations", CANCELLED_BY_ANNOTATION)):
        return annotation
    spec_status = text(dig(run, "spec", "status"))
    managers = [text(m.get("manager")) for m in mappings(dig(run, "metadata", "managedFields"))
                if "f:status" in (dig(m, "fieldsV1", "f:spec") or {})]
    who = f'spec.status was set to "{spec_status}"' if spec_status else ""
    if managers and managers[-1]:
        who = (who or "it was cancelled") + f' by field manager "{managers[-1]}"'
    return who


@dataclass(frozen=True)
class ChildRun:
    """A PipelineRun child: its position in childReferences, pipeline task, TaskRun (if shown)."""

    index: int
    task: str
    taskrun: Obj | None

    @property
    def state(self) -> tuple[str, str]:
        cond = find_condition(self.taskrun) if self.taskrun else None
        return text(dig(cond, "status")) or "Unknown", text(dig(cond, "reason"))


def child_runs(pipelinerun: Obj, taskruns: Sequence[Obj]) -> list[ChildRun]:
    """The children in ``status.childReferences`` order, joined to the TaskRuns by name."""
    by_name = {text(dig(tr, "metadata", "name")): tr for tr in taskruns}
    refs = mappings(dig(pipelinerun, "status", "childReferences"))
    out = [ChildRun(i, text(r.get("pipelineTaskName")) or text(r.get("name")),
                    by_name.pop(text(r.get("name")), None)) for i, r in enumerate(refs)]
    for name in sorted(by_name):  # not referenced (older status): after, in name order
        task = text(dig(by_name[name], "metadata", "labels", "tekton.dev/pipelineTask")) or name
        out.append(ChildRun(len(out), task, by_name[name]))
    return out


def failing_step(taskrun: Obj) -> Obj | None:
    """The first step with a non-zero exit or a terminated reason other than Completed, else
    the first step still waiting for a reason (image pull, config error)."""
    steps = mappings(dig(taskrun, "status", "steps"))
    for step in steps:
        term = step.get("terminated")
        if isinstance(term, Mapping) and (term.get("exitCode") not in (0, None)
                                          or text(term.get("reason")) not in ("", "Completed")):
            return step
    return next((s for s in steps if text(dig(s, "waiting", "reason"))), None)


def first_time(*values: Any) -> datetime | None:
    """The first of ``values`` that parses as an RFC3339 time."""
    return next((t for t in map(parse_time, values) if t), None)


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
    from reconciler.failures import blocking_event

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
        from reconciler.failures import classify_pipelinerun

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
        from reconciler.failures import classify_job

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
