"""The simulated cluster as the testdrive's walk-through sees it.

:mod:`reconciler.tools.testdrive` wires the service to the simulator and walks through the loop;
this module holds what that walk reads off the simulated cluster and does to it: where the
runs live (the namespace, the labels naming their workflow and execution), which runs are
still running, how one is finished (succeeded, or failed for one of the simulator's
reasons), and the table of executions with the lock, cooldown, chain and suspend reasons
explained in one line each.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from reconciler.simulator import FakeKubeServer, JobSimulator, TektonSimulator

__all__ = [
    "DEFAULT_REASON", "EXECUTION_LABEL", "EXPLAIN", "JOB_REASONS", "NAMESPACE", "TEKTON_REASONS", "WORKFLOW_LABEL",
    "finish_run", "list_runs", "still_running", "table_lines",
]

NAMESPACE = "kubernaut-workflows"
TEKTON_REASONS = ("exit", "oom", "forbidden", "task_timeout", "image_pull", "quota", "timeout", "config",
                  "param_missing")
JOB_REASONS = ("exit", "oom", "deadline", "image_pull")
DEFAULT_REASON = "oom"
WORKFLOW_LABEL = "kubernaut.ai/workflow-id"
EXECUTION_LABEL = "kubernaut.ai/workflow-execution"

EXPLAIN = {
    "ResourceBusy": "the lock: another execution's run held the same target when this one was due",
    "RecentlyRemediated": "the cooldown: the same workflow ran on this target less than execution.cooldown ago",
    "WaitingForDependency": "a chain: it waits for its predecessor's outcome",
    "DependencyNotMet": "a chain: its predecessor's outcome did not call for it",
    "Suspended": "spec.suspend: true in Git; declared intent, nothing runs",
}


def list_runs(server: FakeKubeServer) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, plural, object) of every run in the simulated namespace, by name."""
    out = [("PipelineRun", "pipelineruns", o)
           for o in server.list_objects("tekton.dev", "v1", "pipelineruns", NAMESPACE)]
    out += [("Job", "jobs", o) for o in server.list_objects("batch", "v1", "jobs", NAMESPACE)]
    return sorted(out, key=lambda r: str(r[2]["metadata"]["name"]))


def still_running(runs: Iterable[tuple[str, str, dict[str, Any]]],
                  finished: set[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """The runs not done by their status and not already finished by the walk-through."""
    def done(obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        if status.get("completionTime") or status.get("succeeded") or status.get("failed"):
            return True
        return any(c.get("type") in ("Succeeded", "Complete", "Failed") and c.get("status") in ("True", "False")
                   and c.get("reason") not in ("Running", "Started", "Pending")
                   for c in status.get("conditions") or [])
    return [r for r in runs if not done(r[2]) and r[2]["metadata"]["name"] not in finished]


def finish_run(tekton: TektonSimulator, jobs: JobSimulator, kind: str, name: str, reason: str | None) -> None:
    """Succeed the run, or fail it for ``reason`` (``exit`` when its engine has no such reason)."""
    if kind == "PipelineRun":
        if reason:
            tekton.fail(NAMESPACE, name, reason if reason in TEKTON_REASONS else "exit")
        else:
            tekton.succeed(NAMESPACE, name)
    elif reason:
        jobs.fail(NAMESPACE, name, reason if reason in JOB_REASONS else "exit")
    else:
        jobs.succeed(NAMESPACE, name)


def table_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """One line per execution (name, phase, health, reason), then what each reason shown means."""
    lines: list[str] = []
    seen: set[str] = set()
    for row in rows:
        reason = f" ({row['reason']})" if row["reason"] else ""
        lines.append(f"  {row['name']:<48} {row['phase']:<10} {row['health']:<11}{reason}")
        seen.add(str(row["reason"]))
    for reason, meaning in EXPLAIN.items():
        if reason in seen:
            lines.append(f"  {reason}: {meaning}")
    return lines
