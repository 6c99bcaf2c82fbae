"""What a delivery is about: one durable transition of one execution (:class:`Event`, with its
stable id), built from the state the cycle saved, and which sinks take it (:func:`matches`
against a sink's route rules).

Pure functions of the state and the configuration: the queue (:mod:`reconciler.service.delivery`)
builds and routes events with them; the sinks (:mod:`reconciler.service.forges`,
:mod:`reconciler.service.notify`) turn them into requests.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from reconciler.record.status import ExecutionState
from reconciler.service.config_model import RouteRule


def event_id(execution: str, phase: str, reason: str) -> str:
    """The delivery id of a transition: the same transition always has the same id."""
    return hashlib.sha256(f"{execution}\0{phase}\0{reason}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Event:
    """One durable transition of one execution, with what every sink needs (JSON-friendly)."""

    id: str
    execution: str
    from_phase: str
    phase: str
    reason: str
    message: str = ""
    run: str = ""
    target: str = ""
    namespace: str = ""
    workflow: str = ""  # id@version
    labels: dict[str, str] = field(default_factory=dict)
    file: str = ""
    commit: str = ""  # the commit that declared it
    revision: str = ""  # the tracked branch's tip when it was seen
    was_execution_failure: bool | None = None
    failed_task: str = ""
    failed_step: str = ""
    summary: str = ""  # the failure's natural-language summary
    conflicting: str = ""  # the execution holding the target (ResourceBusy)
    status: dict[str, Any] = field(default_factory=dict)  # the full status document's "status"

    @property
    def workflow_id(self) -> str:
        return self.workflow.partition("@")[0]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def make_event(name: str, state: ExecutionState, *, from_phase: str, labels: Mapping[str, str], file: str,
               commit: str, revision: str) -> Event:
    doc = state.to_document()["status"]
    failure = state.failure_details
    ran = failure.get("wasExecutionFailure")
    namespace = state.target.split("/")[0] if state.target.count("/") == 2 else ""
    return Event(
        id=event_id(name, state.phase, state.reason), execution=name, from_phase=from_phase, phase=state.phase,
        reason=state.reason, message=state.message, run=state.execution_ref.name if state.execution_ref else "",
        target=state.target, namespace=namespace, workflow=state.workflow, labels=dict(labels), file=file,
        commit=commit, revision=revision, was_execution_failure=ran if isinstance(ran, bool) else None,
        failed_task=str(failure.get("failedTaskName") or ""), failed_step=str(failure.get("failedStepName") or ""),
        summary=str(failure.get("naturalLanguageSummary") or ""),
        conflicting=str(state.skip_details.get("conflictingExecution") or ""), status=doc)


def changed_at(state: ExecutionState) -> datetime | None:
    """The latest time the state records (start, completion, condition transitions, failure):
    when it last changed, as far as the status can tell."""
    times = [t for t in (state.start_time, state.completion_time) if t is not None]
    times += [c.last_transition_time for c in state.conditions]
    return max(times) if times else None


def matches(rules: Sequence[RouteRule], event: Event) -> bool:
    """A sink takes the event when any rule matches (every transition when it has none)."""
    return not rules or any(_rule_matches(rule, event) for rule in rules)


def _rule_matches(rule: RouteRule, event: Event) -> bool:
    def globbed(patterns: list[str], value: str) -> bool:
        return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)

    return ((not rule.phases or event.phase in rule.phases) and globbed(rule.reasons, event.reason)
            and globbed(rule.workflows, event.workflow_id) and globbed(rule.namespaces, event.namespace)
            and all(event.labels.get(k) == v for k, v in rule.labels.items()))
