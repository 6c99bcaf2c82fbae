"""The vocabulary run status and failure explanations share, below both.

:mod:`reconciler.observe.runstatus` (what phase a run is in) and :mod:`reconciler.observe.failures` (why it
failed) read the same payloads and speak the same words; this module owns those words so
that neither has to import the other's internals: RFC3339 times and Go-style durations, the
plain-mapping payload access (``dig``, conditions, container and step states, child TaskRuns,
who cancelled), the closed set of failure reasons (SPEC §6), what the reconciler knows about
the execution behind a run (:class:`RunContext`) and the :class:`FailureDetails` record.

Pure: no I/O, no clock, no kubernetes client. Payloads are plain mappings as the API returns
them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Literal

Obj = Mapping[str, Any]

__all__ = [
    "CANCELLED_BY_ANNOTATION", "ChildRun", "FailureDetails", "FailureReason", "Obj", "RunContext",
    "camel_dict", "canceller", "child_runs", "container_started", "describe_container", "dig",
    "failing_step", "find_condition", "first_time", "format_duration", "format_time",
    "human_duration", "mappings", "parse_time", "squash", "termination_text", "text",
]


# --- outcomes ---------------------------------------------------------------------------

class FailureReason(str, Enum):
    OOMKilled = "OOMKilled"
    DeadlineExceeded = "DeadlineExceeded"
    Forbidden = "Forbidden"
    ResourceExhausted = "ResourceExhausted"
    ConfigurationError = "ConfigurationError"
    ImagePullBackOff = "ImagePullBackOff"
    TaskFailed = "TaskFailed"
    Cancelled = "Cancelled"
    ExternallyDeleted = "ExternallyDeleted"
    Unknown = "Unknown"


@dataclass(frozen=True)
class RunContext:
    """What the reconciler knows about the execution behind a run (for the summary)."""

    workflow_id: str
    workflow_version: str
    target_resource: str
    execution_name: str
    engine: Literal["tekton", "job"] = "tekton"


@dataclass(frozen=True)
class FailureDetails:
    failed_task_index: int | None
    failed_task_name: str | None
    failed_step_name: str | None
    reason: str
    message: str
    exit_code: int | None
    failed_at: datetime | None
    execution_time_before_failure: timedelta | None
    natural_language_summary: str
    was_execution_failure: bool

    def to_status_dict(self) -> dict[str, Any]:
        """``status.failureDetails``: failedTaskIndex, failedTaskName, failedStepName, reason,
        message, exitCode, failedAt (RFC3339), executionTimeBeforeFailure (Go duration),
        naturalLanguageSummary, wasExecutionFailure; None values left out."""
        return camel_dict(self)


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

