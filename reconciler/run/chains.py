"""Chains (SPEC §3a): whether an execution's ``after``/``onFailureOf`` predecessors let it start.

An execution may name executions it runs after (each must complete) or the one it is the
fallback of (it must fail, for one of ``onFailureReasons`` when given). This module reads
the recorded states of those predecessors and says where the chain stands — ready, waiting
(and on whom), or never (and why) — and whether a predecessor's lock on the same target no
longer blocks its dependent. :mod:`reconciler.run.lifecycle` asks it before starting a run;
the plan asks it to describe what would happen. Pure: data in, data out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.declare.declared import ResolvedExecution
from reconciler.record.status import ExecutionState

__all__ = ["NOT_MET", "WAITING", "DependencyVerdict", "chain_exempt", "dependency_verdict", "outcome"]

WAITING = "WaitingForDependency"
NOT_MET = "DependencyNotMet"


@dataclass(frozen=True)
class DependencyVerdict:
    """Where an execution's chain stands: ``ready``, or waiting on ``waiting``, or never
    (``not_met`` names the execution whose outcome rules it out, ``message`` says how)."""

    ready: bool
    waiting: tuple[str, ...] = ()
    not_met: str = ""
    message: str = ""


def outcome(state: ExecutionState) -> str:
    """``Failed (OOMKilled)``: the phase, and the reason when it says more."""
    reason = state.failure_details.get("reason") or state.reason
    return f"{state.phase} ({reason})" if reason and reason != state.phase else state.phase


def dependency_verdict(execution: ResolvedExecution, states: Mapping[str, ExecutionState]) -> DependencyVerdict:
    """SPEC §3a: ``after`` needs each named execution ``Completed``; ``onFailureOf`` needs
    it ``Failed`` (for one of ``onFailureReasons`` when given).  An outcome that rules the
    execution out wins over one still pending: it can then never start."""
    spec = execution.document.spec
    waiting: list[str] = []
    for name in spec.after:
        before = states.get(name)
        if before is None or not before.terminal:
            waiting.append(name)
        elif before.phase != "Completed":
            return DependencyVerdict(False, not_met=name, message=(
                f"{name} ended {outcome(before)}; this execution runs only after it completes (spec.after)"))
    primary = spec.on_failure_of
    if primary:
        before = states.get(primary)
        if before is None or not before.terminal:
            waiting.append(primary)
        elif before.phase != "Failed":
            return DependencyVerdict(False, not_met=primary, message=(
                f"{primary} ended {outcome(before)}; this fallback runs only if it fails (spec.onFailureOf)"))
        else:
            reason = str(before.failure_details.get("reason") or before.reason)
            if spec.on_failure_reasons and reason not in spec.on_failure_reasons:
                return DependencyVerdict(False, not_met=primary, message=(
                    f"{primary} failed with {reason}, not {' or '.join(spec.on_failure_reasons)}; this "
                    "fallback runs only for those (spec.onFailureReasons)"))
    if waiting:
        return DependencyVerdict(False, waiting=tuple(waiting), message=_waiting_message(execution, waiting))
    return DependencyVerdict(True)


def _waiting_message(execution: ResolvedExecution, waiting: list[str]) -> str:
    spec = execution.document.spec
    parts = []
    after = [n for n in waiting if n in spec.after]
    if after:
        parts.append(f"waiting for {', '.join(after)} to complete")
    if spec.on_failure_of in waiting:
        reasons = f" ({' or '.join(spec.on_failure_reasons)})" if spec.on_failure_reasons else ""
        parts.append(f"runs only if {spec.on_failure_of} fails{reasons}")
    return "; ".join(parts)



def chain_exempt(execution: ResolvedExecution, holder: str, states: Mapping[str, ExecutionState]) -> bool:
    """SPEC §3a: a predecessor's lock and cooldown do not block its dependent on the same
    target once the predecessor is terminal (the chain is one remediation)."""
    before = states.get(holder)
    return (holder in execution.document.spec.dependencies and before is not None and before.terminal
            and before.target == execution.target)

