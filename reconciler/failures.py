"""Why a workflow run failed, in words a person and the LLM planning the next attempt can act on.

A failed PipelineRun or Job spreads its cause over several objects: the PipelineRun's
``Succeeded`` condition, the child TaskRuns' conditions, each step's container state, the
Job's conditions, its pods and events. This module reads those payloads (plain mappings, as
the API returns them) and produces one :class:`FailureDetails` (SPEC §6): which task and
step failed, a reason from a closed vocabulary, the exit code, when, after how long, whether
the workflow had started changing the cluster, and a summary ending in a concrete next step.

Structured signals come first (condition reasons, ``terminated.reason``/``exitCode``,
``waiting.reason``); message text is only a fallback, matched on word boundaries so that
"room" is never "OOM". Pure: no I/O, no clock, no kubernetes client; same input, same output.

Reason strings are Tekton's own (tektoncd/pipeline, v1 API):
  pkg/apis/pipeline/v1/pipelinerun_types.go  PipelineRunReason* (PipelineRunTimeout, Cancelled,
      CouldntGetPipeline, ParameterMissing, ... ) and spec.status values
  pkg/apis/pipeline/v1/taskrun_types.go      TaskRunReason* (TaskRunTimeout, TaskRunCancelled,
      TaskRunImagePullFailed, ...), TaskRunCancelledByPipelineTimeoutMsg
  pkg/pod/status.go                          ExceededResourceQuota, ExceededNodeResources,
      PullImageFailed, CreateContainerConfigError, PodCreationFailed, PodAdmissionFailed,
      the '"step-x" exited with code N' message and the kubelet image-error reasons
  pkg/reconciler/taskrun/taskrun.go          failTaskRun: on cancel/timeout every unfinished step
      is marked terminated with exitCode 1 and reason = the TaskRun reason (synthetic, not a
      real exit), checkPodFailed's image-pull message
Job reasons are Kubernetes' (k8s.io/api/batch/v1 types.go: DeadlineExceeded,
BackoffLimitExceeded, PodFailurePolicy, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Literal

Obj = Mapping[str, Any]

#: Annotation the reconciler may set on a run before cancelling it, saying who or what asked.
CANCELLED_BY_ANNOTATION = "reconciler.kubernaut.ai/cancelled-by"


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


R = FailureReason


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
        """camelCase keys for ``status.failureDetails``; ``None`` values are left out."""
        values: dict[str, Any] = {
            "failedTaskIndex": self.failed_task_index,
            "failedTaskName": self.failed_task_name,
            "failedStepName": self.failed_step_name,
            "reason": self.reason,
            "message": self.message,
            "exitCode": self.exit_code,
            "failedAt": format_time(self.failed_at) if self.failed_at else None,
            "executionTimeBeforeFailure": format_duration(self.execution_time_before_failure)
            if self.execution_time_before_failure is not None else None,
            "naturalLanguageSummary": self.natural_language_summary,
            "wasExecutionFailure": self.was_execution_failure,
        }
        return {k: v for k, v in values.items() if v is not None}


# --- time -------------------------------------------------------------------------------

def parse_time(value: str | None) -> datetime | None:
    """RFC3339 (``2026-11-21T09:12:03Z``, fractions and offsets allowed) → aware UTC datetime."""
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
    """RFC3339 in UTC with a ``Z`` and whole seconds, as Kubernetes writes ``metav1.Time``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(value: timedelta) -> str:
    """Go's ``time.Duration.String()``: ``1h2m3s``, ``1h0m0s``, ``2m38s``, ``45s``, ``1.5s``, ``0s``."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if micros < 0:
        return "-" + format_duration(timedelta(microseconds=-micros))
    if micros == 0:
        return "0s"
    if micros < 1_000_000:
        return f"{micros}µs" if micros < 1000 else _strip_fraction(micros / 1000) + "ms"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = _strip_fraction(rest / 1_000_000) + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    return f"{minutes}m{seconds}" if minutes else seconds


def _strip_fraction(number: float) -> str:
    return f"{number:.6f}".rstrip("0").rstrip(".")


def human_duration(value: timedelta) -> str:
    """For sentences: ``2m 38s``, ``1h 5s``, ``45s``, ``0s`` (whole seconds)."""
    total = max(0, int(value.total_seconds()))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    return " ".join(parts) or "0s"


# --- payload access ---------------------------------------------------------------------

def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _items(value: Any) -> list[Obj]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, (list, tuple)) else []


def find_condition(obj: Obj, kind: str = "Succeeded") -> Obj | None:
    """The ``status.conditions`` entry of ``type == kind``, or None."""
    return next((c for c in _items(_get(obj, "status", "conditions")) if c.get("type") == kind),
                None)


def _started(state: Any) -> bool:
    """Did this container state ever run? (a container that failed to start has a 1970 time)."""
    if _get(state, "running") is not None:
        return True
    started = parse_time(_get(state, "terminated", "startedAt"))
    return started is not None and started.year > 1970


def _clean(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _termination_text(message: str) -> str:
    """A step's ``terminated.message``: Tekton writes a JSON list of results there; keep the
    values (dropping internal type-3 entries such as StartedAt); plain text passes through."""
    try:
        data = json.loads(message)
    except ValueError:
        return message.strip()
    if not isinstance(data, list):
        return message.strip()
    return "; ".join(str(r["value"]) for r in _items(data)
                     if r.get("type") != 3 and r.get("value") not in (None, ""))


# --- signal tables ----------------------------------------------------------------------

_PR_REASONS: dict[str, FailureReason] = {
    "PipelineRunTimeout": R.DeadlineExceeded,
    **dict.fromkeys(("Cancelled", "CancelledRunFinally", "StoppedRunFinally",
                     "CancelledRunningFinally", "StoppedRunningFinally",
                     "PipelineRunCouldntCancel"), R.Cancelled),
    **dict.fromkeys((
        "CouldntGetPipeline", "CouldntGetTask", "ParameterMissing", "ParameterTypeMismatch",
        "InvalidParamValue", "PipelineValidationFailed", "InvalidWorkspaceBindings",
        "ObjectParameterMissKeys", "ParamArrayIndexingInvalid", "InvalidTaskRunSpecs",
        "PipelineInvalidGraph", "InvalidMatrixParameterTypes", "InvalidTaskResultReference",
        "InvalidPipelineResultReference", "RequiredWorkspaceMarkedOptional",
        "InvalidPipelineResourceBindings", "ResourceVerificationFailed", "CELEvaluationFailed",
    ), R.ConfigurationError),
}
_TR_REASONS: dict[str, FailureReason] = {
    "TaskRunTimeout": R.DeadlineExceeded,
    "TaskRunCancelled": R.Cancelled,
    "TaskRunImagePullFailed": R.ImagePullBackOff,
    "PullImageFailed": R.ImagePullBackOff,
    "ExceededResourceQuota": R.ResourceExhausted,
    "ExceededNodeResources": R.ResourceExhausted,
    "TaskRunResultLargerThanAllowedLimit": R.TaskFailed,
    **dict.fromkeys((
        "CreateContainerConfigError", "TaskRunResolutionFailed", "TaskRunValidationFailed",
        "TaskValidationFailed", "InvalidParamValue", "ResourceVerificationFailed",
        "CouldntGetTask",
    ), R.ConfigurationError),
}
# Reasons whose message says more than the reason (quota, admission, RBAC): text decides.
_TEXT_FIRST = {"CreateRunFailed", "PodCreationFailed", "PodAdmissionFailed"}
# kubelet image errors (Tekton pkg/pod/status.go isImageErrorReason)
_IMAGE_WAITING = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ImageInspectError",
                  "ErrImageNeverPull", "RegistryUnavailable"}
_CONFIG_WAITING = {"CreateContainerConfigError", "CreateContainerError"}
_PIPELINE_TIMEOUT_MSG = "TaskRun cancelled as the PipelineRun it belongs to has timed out."
# Never-started reasons, and reasons a non-zero exit may be refined to from its message.
_BLOCKERS = {R.ImagePullBackOff, R.ResourceExhausted, R.ConfigurationError, R.Forbidden}
_REFINES_EXIT = {R.OOMKilled, R.Forbidden, R.ResourceExhausted}

# Ordered: quota before Forbidden ("pods ... is forbidden: exceeded quota"), image before
# Forbidden (a registry's "403 Forbidden" is a pull failure).
_TEXT_RULES: tuple[tuple[FailureReason, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE)) for reason, pattern in (
        (R.ResourceExhausted, r"\bexceeded quota\b|\bExceeded(?:ResourceQuota|NodeResources)\b"
                              r"|\bInsufficient (?:cpu|memory|ephemeral-storage|pods)\b"),
        (R.OOMKilled, r"\bOOMKilled\b|\bOOM[- ]kill(?:ed)?\b|\bout of memory\b"),
        (R.ImagePullBackOff, r"\bImagePullBackOff\b|\bErrImagePull\b|\bErrImageNeverPull\b"
                             r"|\bInvalidImageName\b|\bBack-off pulling image\b"
                             r"|\bfailed to pull (?:the )?image\b|\bpull access denied\b"),
        (R.Forbidden, r"\bforbidden\b|\bcannot (?:get|list|watch|patch|update|create|delete"
                      r"|deletecollection) resource\b"),
        (R.DeadlineExceeded, r"\bdeadline exceeded\b|\bDeadlineExceeded\b|\btimed out\b"
                             r"|\bfailed to finish within\b"
                             r"|\bactive longer than specified deadline\b"),
        (R.ConfigurationError, r"\bCreateContainerConfigError\b"
                               r"|\b(?:configmaps?|secrets?) \"[^\"]+\" not found\b"
                               r"|\bmissing (?:some )?parameters\b"),
    ))
_RBAC = re.compile(r'User "(?P<user>[^"]+)" cannot (?P<verb>[\w-]+) resource "(?P<res>[^"]+)"'
                   r'(?: in API group "(?P<group>[^"]*)")?(?: in the namespace "(?P<ns>[^"]+)")?')
_SA = re.compile(r"system:serviceaccount:(?P<ns>[^:\s\"]+):(?P<name>[^:\s\"]+)")
_QUOTA = re.compile(r"exceeded quota: (?P<quota>[\w.-]+)")
_IMAGE = re.compile(r'(?:pull(?:ing)? (?:the )?image) \\?"(?P<image>[^"\\]+)\\?"')
_PARAMS = re.compile(r"parameters?: \[(?P<names>[^\]]+)\]")
_WITHIN = re.compile(r'within "(?P<timeout>[^"]+)"')
_EXITED = re.compile(r'"(?P<container>[^"]+)" exited with code (?P<code>\d+)')


def classify_text(*texts: str) -> FailureReason | None:
    """Fallback: the first rule matching any of ``texts`` (word boundaries only)."""
    joined = "\n".join(t for t in texts if t)
    return next((reason for reason, rx in _TEXT_RULES if rx.search(joined)), None)


def _was_execution(reason: FailureReason, ran: bool | None) -> bool:
    if reason in (R.ConfigurationError, R.ImagePullBackOff, R.ResourceExhausted,
                  R.ExternallyDeleted):
        return False
    if reason in (R.TaskFailed, R.OOMKilled):
        return True
    return ran is not False  # unknown counts as "may have run": the cautious answer


def _waiting_reason(reason: str) -> FailureReason | None:
    if reason in _IMAGE_WAITING:
        return R.ImagePullBackOff
    return R.ConfigurationError if reason in _CONFIG_WAITING else None


def _container_signal(state: Obj, extra_text: str) -> tuple[FailureReason | None, int | None]:
    """Classify one container/step state: (reason, real exit code)."""
    term, wait = _get(state, "terminated"), _get(state, "waiting")
    if isinstance(wait, Mapping) and _waiting_reason(_s(wait.get("reason"))):
        return _waiting_reason(_s(wait.get("reason"))), None
    if not isinstance(term, Mapping):
        return None, None
    treason, code = _s(term.get("reason")), term.get("exitCode")
    if treason in _TR_REASONS:  # synthetic: written by failTaskRun, not by the container
        return _TR_REASONS[treason], None
    code = code if isinstance(code, int) else None
    if treason == "OOMKilled":
        return R.OOMKilled, code if code is not None else 137
    if code:
        refined = classify_text(_termination_text(_s(term.get("message"))), extra_text)
        return (refined if refined in _REFINES_EXIT else R.TaskFailed), code
    return None, code


# --- Tekton -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Child:
    index: int
    task: str
    taskrun: Obj | None


def _children(pipelinerun: Obj, taskruns: Sequence[Obj]) -> list[_Child]:
    by_name = {_s(_get(tr, "metadata", "name")): tr for tr in taskruns}
    refs = _items(_get(pipelinerun, "status", "childReferences"))
    out = [_Child(i, _s(r.get("pipelineTaskName")) or _s(r.get("name")),
                  by_name.pop(_s(r.get("name")), None)) for i, r in enumerate(refs)]
    for name in sorted(by_name):  # not referenced (older status): after, in name order
        task = _s(_get(by_name[name], "metadata", "labels", "tekton.dev/pipelineTask")) or name
        out.append(_Child(len(out), task, by_name[name]))
    return out


def _failing_child(children: list[_Child]) -> _Child | None:
    def state(c: _Child) -> tuple[str, str]:
        cond = find_condition(c.taskrun) if c.taskrun else None
        return _s(_get(cond, "status")) or "Unknown", _s(_get(cond, "reason"))

    failed = [c for c in children if c.taskrun and state(c) == ("False", state(c)[1])
              and state(c)[1] != "FailureIgnored"]
    stuck = [c for c in children if c.taskrun and state(c)[0] == "Unknown"]
    return (failed or stuck or [None])[0]


def _failing_step(taskrun: Obj) -> Obj | None:
    steps = _items(_get(taskrun, "status", "steps"))
    for step in steps:
        term = step.get("terminated")
        if isinstance(term, Mapping) and (term.get("exitCode") not in (0, None)
                                          or _s(term.get("reason")) not in ("", "Completed")):
            return step
    return next((s for s in steps if _s(_get(s, "waiting", "reason"))), None)


def _canceller(run: Obj) -> str:
    """Who or what cancelled: our annotation, else spec.status and the field manager that set it."""
    if annotation := _s(_get(run, "metadata", "annotations", CANCELLED_BY_ANNOTATION)):
        return annotation
    spec_status = _s(_get(run, "spec", "status"))
    managers = [_s(m.get("manager")) for m in _items(_get(run, "metadata", "managedFields"))
                if "f:status" in (_get(m, "fieldsV1", "f:spec") or {})]
    who = f'spec.status was set to "{spec_status}"' if spec_status else ""
    if managers and managers[-1]:
        who = (who or "it was cancelled") + f' by field manager "{managers[-1]}"'
    return who


def classify_pipelinerun(pipelinerun: Obj, taskruns: Sequence[Obj],
                         context: RunContext) -> FailureDetails:
    """FailureDetails for a PipelineRun whose ``Succeeded`` condition is False."""
    cond = find_condition(pipelinerun) or {}
    pr_reason, pr_msg = _s(cond.get("reason")), _s(cond.get("message"))
    children = _children(pipelinerun, taskruns)
    child = _failing_child(children)
    tr = child.taskrun if child else None
    step = _failing_step(tr) if tr else None
    tcond = (find_condition(tr) if tr else None) or {}
    tr_reason, tr_msg = _s(tcond.get("reason")), _s(tcond.get("message"))
    step_text = _termination_text(_s(_get(step, "terminated", "message")))
    ran: bool | None = False
    for c in children:
        if c.taskrun is None:
            ran = None if ran is False else ran
        elif any(_started(s) for s in _items(_get(c.taskrun, "status", "steps"))):
            ran = True
            break

    reason: FailureReason | None = None
    exit_code: int | None = None
    message = pr_msg
    step_reason, step_code = _container_signal(step, tr_msg) if step else (None, None)
    tr_mapped = _TR_REASONS.get(tr_reason)
    if tr_reason == "TaskRunCancelled" and (
            _s(_get(tr, "spec", "statusMessage")) == _PIPELINE_TIMEOUT_MSG
            or _PIPELINE_TIMEOUT_MSG in tr_msg):
        tr_mapped = R.DeadlineExceeded
    if tr_reason in _TEXT_FIRST:
        tr_mapped = classify_text(tr_msg) or R.ConfigurationError
    pr_mapped = _PR_REASONS.get(pr_reason)
    if pr_reason in _TEXT_FIRST:
        pr_mapped = classify_text(pr_msg) or R.ConfigurationError
    blocker = next((r for r in (tr_mapped, step_reason) if r in _BLOCKERS), None)

    if pr_mapped is R.DeadlineExceeded and not ran and blocker:
        # The timeout is the symptom; what kept the task from starting is the cause.
        reason, message = blocker, f"{tr_msg} (the PipelineRun then timed out: {pr_msg})"
    elif pr_mapped is not None:
        reason = pr_mapped
    elif tr_mapped is not None:
        reason, message = tr_mapped, tr_msg
    elif step_reason is not None:
        reason, exit_code = step_reason, step_code
        message = ": ".join(t for t in (tr_msg, step_text) if t)
    elif tr_reason == "Failed" and (m := _EXITED.search(tr_msg)):
        reason, exit_code, message = R.TaskFailed, int(m["code"]), tr_msg
    else:
        reason = classify_text(step_text, tr_msg, pr_msg)
        message = next((t for t in (step_text, tr_msg, pr_msg) if t), pr_msg)
        if reason is None:
            counts = re.search(r"\(Failed: (\d+)", pr_msg)
            reason = R.TaskFailed if counts and int(counts[1]) > 0 else R.Unknown
    if reason is R.OOMKilled and exit_code is None and step_code:
        exit_code = step_code

    start = parse_time(_get(pipelinerun, "status", "startTime"))
    failed_at = next((t for t in (
        parse_time(_get(step, "terminated", "finishedAt")),
        parse_time(_get(tr, "status", "completionTime")),
        parse_time(_get(pipelinerun, "status", "completionTime")),
        parse_time(cond.get("lastTransitionTime"))) if t), None)
    step_name = _s(_get(step, "name")) or None
    container = _s(_get(step, "container")) or (f"step-{step_name}" if step_name else "")
    namespace = (_s(_get(tr, "metadata", "namespace"))
                 or _s(_get(pipelinerun, "metadata", "namespace")) or "kubernaut-workflows")
    hints = _Hints(namespace=namespace, pod=_s(_get(tr, "status", "podName")),
                   container=container, kind="pipelinerun",
                   run=_s(_get(pipelinerun, "metadata", "name")),
                   cancelled_by=_canceller(pipelinerun) if reason is R.Cancelled else "")
    return _details(context, reason, message, hints, ran=ran, exit_code=exit_code,
                    index=child.index if child and reason not in _PR_ONLY(pr_mapped) else None,
                    task=child.task if child and reason not in _PR_ONLY(pr_mapped) else None,
                    step=step_name, failed_at=failed_at, start=start)


def _PR_ONLY(pr_mapped: FailureReason | None) -> set[FailureReason]:  # noqa: N802
    """A PipelineRun-level configuration error happened before any task: name none."""
    return {R.ConfigurationError} if pr_mapped is R.ConfigurationError else set()
