"""Why a workflow run failed, in words a person and the LLM planning the next attempt can act on.

A failed PipelineRun or Job spreads its cause over several objects: the PipelineRun's
``Succeeded`` condition, the child TaskRuns' conditions, each step's container state, the
Job's conditions, its pods and events. This module reads those payloads (plain mappings, as
the API returns them) into one :class:`FailureDetails` (SPEC §6): which task and step failed,
a reason from a closed vocabulary, exit code, when and after how long, whether the workflow
had started (so may have changed the cluster), and a summary ending in a concrete next step.

Structured signals come first (condition reasons, ``terminated.reason``/``exitCode``,
``waiting.reason``); message text is only a fallback, matched on word boundaries so that
"room" is never "OOM". Pure: no I/O, no clock, no kubernetes client; same input, same output.
The summary's words and recommendation are :mod:`reconciler.observe.failures_summary`'s; the reason
vocabulary and payload access are :mod:`reconciler.observe.vocabulary`'s.

Reason strings are Tekton's own (tektoncd/pipeline, v1 API):
  pkg/apis/pipeline/v1/pipelinerun_types.go  PipelineRunReason* (PipelineRunTimeout, Cancelled,
      CouldntGetPipeline, ParameterMissing, ...), spec.status values (CancelledRunFinally, ...)
  pkg/apis/pipeline/v1/taskrun_types.go      TaskRunReason* (TaskRunTimeout, TaskRunCancelled,
      TaskRunImagePullFailed, ...), TaskRunCancelledByPipelineTimeoutMsg
  pkg/pod/status.go                          ExceededResourceQuota, ExceededNodeResources,
      PullImageFailed, CreateContainerConfigError, PodCreationFailed, PodAdmissionFailed, the
      '"step-x" exited with code N' message, the kubelet image-error reasons
  pkg/reconciler/taskrun/taskrun.go          failTaskRun: on cancel, timeout or image-pull failure
      every unfinished step is marked terminated, exitCode 1, reason = the TaskRun reason
      (synthetic, not a real exit); checkPodFailed's image-pull message
  pkg/reconciler/pipelinerun/pipelinerun.go  validation reasons and their messages
Job reasons are Kubernetes' (k8s.io/api batch/v1 types.go: DeadlineExceeded,
BackoffLimitExceeded, PodFailurePolicy; "Job was active longer than specified deadline").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.observe.failures_summary import SERVICE_ACCOUNT, Hints, failure_details
from reconciler.observe.vocabulary import (
    FailureDetails,
    FailureReason,
    Obj,
    RunContext,
    canceller,
    child_runs,
    container_started,
    describe_container,
    dig,
    failing_step,
    find_condition,
    first_time,
    mappings,
    parse_time,
    squash,
    termination_text,
    text,
)

__all__ = [
    "Blocker",
    "blocking_event",
    "classify_job",
    "classify_pipelinerun",
    "classify_text",
    "event_blocker",
    "externally_deleted",
    "rejected_by_api",
]

R = FailureReason


# --- signals ----------------------------------------------------------------------------

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
    "TaskRunTimeout": R.DeadlineExceeded, "TaskRunCancelled": R.Cancelled,
    "TaskRunImagePullFailed": R.ImagePullBackOff, "PullImageFailed": R.ImagePullBackOff,
    "ExceededResourceQuota": R.ResourceExhausted, "ExceededNodeResources": R.ResourceExhausted,
    "TaskRunResultLargerThanAllowedLimit": R.TaskFailed,
    **dict.fromkeys(("CreateContainerConfigError", "TaskRunResolutionFailed",
                     "TaskRunValidationFailed", "TaskValidationFailed", "InvalidParamValue",
                     "ResourceVerificationFailed", "CouldntGetTask"), R.ConfigurationError),
}
# Reasons whose message says more than the reason (quota, admission, RBAC): text decides.
_TEXT_FIRST = {"CreateRunFailed", "PodCreationFailed", "PodAdmissionFailed"}
# kubelet image errors (Tekton pkg/pod/status.go isImageErrorReason), container config errors
_WAITING = {**dict.fromkeys(("ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                             "ImageInspectError", "ErrImageNeverPull", "RegistryUnavailable"),
                            R.ImagePullBackOff),
            "CreateContainerConfigError": R.ConfigurationError,
            "CreateContainerError": R.ConfigurationError}
_PIPELINE_TIMEOUT_MSG = "TaskRun cancelled as the PipelineRun it belongs to has timed out."
# What can keep a run from ever starting; what a non-zero exit may be refined to by its text.
_BLOCKERS = (R.ImagePullBackOff, R.ResourceExhausted, R.ConfigurationError, R.Forbidden)
_REFINES_EXIT = (R.OOMKilled, R.Forbidden, R.ResourceExhausted)

# Ordered: quota before Forbidden ("pods ... is forbidden: exceeded quota"), image before
# Forbidden (a registry's "403 Forbidden" is a pull failure).
_TEXT_RULES: tuple[tuple[FailureReason, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE)) for reason, pattern in (
        # before Forbidden: 'pods "x" is forbidden: error looking up service account …'
        (R.ConfigurationError, r'\bserviceaccounts? \\?"[^"\\]+\\?" not found\b'),
        (R.ResourceExhausted, r"\bexceeded quota\b|\bExceeded(?:ResourceQuota|NodeResources)\b"
                              r"|\bInsufficient (?:cpu|memory|ephemeral-storage|pods)\b"),
        (R.OOMKilled, r"\bOOMKilled\b|\bOOM[- ]kill(?:ed)?\b|\bout of memory\b"),
        (R.ImagePullBackOff, r"\bImagePullBackOff\b|\bErrImagePull\b|\bErrImageNeverPull\b"
                             r"|\bInvalidImageName\b|\bBack-off pulling image\b"
                             r"|\bfailed to pull (?:the )?image\b|\bpull access denied\b"),
        (R.Forbidden, r"\bforbidden\b|\bcannot (?:get|list|watch|patch|update|create|delete"
                      r"|deletecollection) resource\b|\bdenied the request\b"),
        (R.DeadlineExceeded, r"\bdeadline exceeded\b|\bDeadlineExceeded\b|\btimed out\b"
                             r"|\bfailed to finish within\b"
                             r"|\bactive longer than specified deadline\b"),
        (R.ConfigurationError, r"\bCreateContainerConfigError\b|\bmissing (?:some )?parameters\b"
                               r"|\b(?:configmaps?|secrets?) \"[^\"]+\" not found\b"),
    ))
_EXITED = re.compile(r'"(?P<container>[^"]+)" exited with code (?P<code>\d+)')


def classify_text(*texts: str) -> FailureReason | None:
    """Fallback: the first rule matching any of ``texts`` (word boundaries only)."""
    joined = "\n".join(t for t in texts if t)
    return next((reason for reason, rx in _TEXT_RULES if rx.search(joined)), None)


def _container_signal(state: Any, extra: str) -> tuple[FailureReason | None, int | None]:
    """Classify one container (or Tekton step) state: (reason, real exit code)."""
    if waiting := _WAITING.get(text(dig(state, "waiting", "reason"))):
        return waiting, None
    term = dig(state, "terminated")
    if not isinstance(term, Mapping):
        return None, None
    reason, code = text(term.get("reason")), term.get("exitCode")
    if reason in _TR_REASONS:  # synthetic: written by Tekton's failTaskRun, not a real exit
        return _TR_REASONS[reason], None
    code = code if isinstance(code, int) else None
    if reason == "OOMKilled":
        return R.OOMKilled, 137 if code is None else code
    if not code:
        return None, None
    refined = classify_text(termination_text(text(term.get("message"))), extra)
    return (refined if refined in _REFINES_EXIT else R.TaskFailed), code


# --- Warning Events ---------------------------------------------------------------------

# Why a run never got going is often only in Warning Events: the Job controller's
# FailedCreate (missing ServiceAccount, quota, PodSecurity/webhook admission, an invalid pod
# spec), the scheduler's FailedScheduling, the kubelet's image errors (Failed/BackOff).
_IMAGE_EVENT = re.compile(r"\b(?:ErrImagePull|ImagePullBackOff|InvalidImageName|ErrImageNeverPull"
                          r"|Back-off pulling image|Failed to pull image|failed to resolve reference)\b",
                          re.IGNORECASE)


@dataclass(frozen=True)
class Blocker:
    """What keeps a run from starting, read off a Warning Event."""

    reason: FailureReason
    message: str  # the event's own message
    cause: str  # short, for "waiting: <cause>"


def event_blocker(event: Obj) -> Blocker | None:
    """The cause a Warning Event names, when it is one that keeps a pod from running."""
    if text(event.get("type")) != "Warning":
        return None
    reason, message = text(event.get("reason")), text(event.get("message"))
    if reason == "FailedScheduling":
        return Blocker(R.ResourceExhausted, message, squash(message, 200))
    if reason in ("FailedCreate", "FailedCreatePodSandBox"):
        if m := SERVICE_ACCOUNT.search(message):
            return Blocker(R.ConfigurationError, message, f"serviceaccount {m['name']} not found")
        if m := re.search(r"exceeded quota:.*", message):
            return Blocker(R.ResourceExhausted, message, squash(m.group(0), 200))
        # forbidden by admission (PodSecurity, a webhook) or an invalid pod spec: the
        # workflow's pod template or the namespace's policy must change, nothing ran
        return Blocker(R.ConfigurationError, message, squash(message, 200))
    if _IMAGE_EVENT.search(message) or reason in ("ErrImagePull", "ErrImageNeverPull", "InspectFailed"):
        return Blocker(R.ImagePullBackOff, message, squash(message, 200))
    if reason == "FailedMount" or (reason == "Failed" and classify_text(message) is R.ConfigurationError):
        return Blocker(R.ConfigurationError, message, squash(message, 200))
    return None


def blocking_event(events: Sequence[Obj]) -> Blocker | None:
    """The newest Warning Event that names a cause keeping the run from starting."""
    def when(event: Obj) -> str:
        return (text(event.get("lastTimestamp")) or text(event.get("eventTime"))
                or text(dig(event, "metadata", "creationTimestamp")))
    for event in sorted(events, key=when, reverse=True):
        if found := event_blocker(event):
            return found
    return None


# --- Tekton -----------------------------------------------------------------------------

def classify_pipelinerun(pipelinerun: Obj, taskruns: Sequence[Obj],
                         context: RunContext, *, events: Sequence[Obj] = ()) -> FailureDetails:
    """FailureDetails for a PipelineRun whose ``Succeeded`` condition is False. ``events``
    (optional): Warning Events of the run, its TaskRuns and their pods — an unscheduled pod
    or one its ServiceAccount keeps from being created is only visible there."""
    cond = find_condition(pipelinerun) or {}
    pr_reason, pr_msg = text(cond.get("reason")), text(cond.get("message"))
    children = child_runs(pipelinerun, taskruns)
    # The failing task: first failed child in childReferences order (not onError: continue),
    # else the first still unfinished (stuck on quota or an image when the run was stopped).
    child = next(iter([c for c in children if c.taskrun and c.state[0] == "False"
                       and c.state[1] != "FailureIgnored"]
                      or [c for c in children if c.taskrun and c.state[0] == "Unknown"]), None)
    tr = child.taskrun if child else None
    step = failing_step(tr) if tr else None
    tr_reason = child.state[1] if child else ""
    tr_msg = text(dig(find_condition(tr) if tr else None, "message"))
    step_text = termination_text(text(dig(step, "terminated", "message")))
    ran: bool | None = False  # did any step start? None: a child we were not shown may have
    for c in children:
        if any(container_started(s) for s in mappings(dig(c.taskrun, "status", "steps"))):
            ran = True
            break
        ran = None if c.taskrun is None else ran

    tr_mapped = _TR_REASONS.get(tr_reason)
    if tr_reason == "TaskRunCancelled" and _PIPELINE_TIMEOUT_MSG in (
            text(dig(tr, "spec", "statusMessage")) + tr_msg):
        tr_mapped = R.DeadlineExceeded
    if tr_reason in _TEXT_FIRST:
        tr_mapped = classify_text(tr_msg) or R.ConfigurationError
    pr_mapped = _PR_REASONS.get(pr_reason)
    if pr_reason in _TEXT_FIRST:
        pr_mapped = classify_text(pr_msg) or R.ConfigurationError
    step_reason, step_code = _container_signal(step, tr_msg) if step else (None, None)
    blocker = next((r for r in (tr_mapped, step_reason) if r in _BLOCKERS), None)
    blocker_msg = tr_msg
    if blocker is None and not ran and (found := blocking_event(events)):
        blocker, blocker_msg = found.reason, found.message

    exit_code: int | None = None
    message = pr_msg
    if pr_mapped in (R.DeadlineExceeded, R.Cancelled) and not ran and blocker:
        # The timeout (or a cancel) is the symptom; what kept the task from starting is the cause.
        verb = "timed out" if pr_mapped is R.DeadlineExceeded else "was cancelled"
        reason, message = blocker, f"{blocker_msg} (the PipelineRun then {verb}: {pr_msg})"
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
        message = next((t for t in (step_text, tr_msg) if t), pr_msg)
        counts = re.search(r"\(Failed: (\d+)", pr_msg)
        reason = classify_text(step_text, tr_msg, pr_msg) or (
            R.TaskFailed if counts and int(counts[1]) > 0 else R.Unknown)

    cancelled_by = canceller(pipelinerun) if reason is R.Cancelled else ""
    if reason is R.Cancelled and not cancelled_by and tr and "PipelineRun it belongs to" not in (
            text(dig(tr, "spec", "statusMessage"))):  # the TaskRun itself was cancelled
        cancelled_by = canceller(tr)
    whole_run = pr_mapped is R.ConfigurationError and reason is R.ConfigurationError
    step_name = None if whole_run else text(dig(step, "name")) or None
    namespace = (text(dig(tr, "metadata", "namespace"))
                 or text(dig(pipelinerun, "metadata", "namespace")) or "kubernaut-workflows")
    return failure_details(
        context, reason, message, ran=ran, exit_code=exit_code,
        index=None if whole_run or not child else child.index,
        task=None if whole_run or not child else child.task, step=step_name,
        failed_at=first_time(dig(step, "terminated", "finishedAt"),
                             dig(tr, "status", "completionTime"),
                             dig(pipelinerun, "status", "completionTime"),
                             cond.get("lastTransitionTime")),
        start=parse_time(dig(pipelinerun, "status", "startTime")),
        hints=Hints(namespace, text(dig(tr, "status", "podName")),
                     text(dig(step, "container")) or (f"step-{step_name}" if step_name else ""),
                     "pipelinerun", text(dig(pipelinerun, "metadata", "name")),
                     cancelled_by))


# --- Job --------------------------------------------------------------------------------

def classify_job(job: Obj, pods: Sequence[Obj], context: RunContext, *,
                 events: Sequence[Obj] = ()) -> FailureDetails:
    """FailureDetails for a batch/v1 Job with a ``Failed`` condition. ``events`` (optional):
    the Job's and its pods' events; a pod the Job could not create (quota, admission) is
    only visible there."""
    cond = find_condition(job, "Failed") or find_condition(job, "FailureTarget") or {}
    j_reason, j_msg = text(cond.get("reason")), text(cond.get("message"))
    pod = min(pods, default=None, key=lambda p: (
        dig(p, "status", "phase") != "Failed", text(dig(p, "metadata", "creationTimestamp")),
        text(dig(p, "metadata", "name"))))
    statuses = mappings(dig(pod, "status", "containerStatuses"))
    cstat = next((c for c in statuses if c.get("name") == "workflow"), None) or next(
        iter(statuses), None)
    name, state = text(dig(cstat, "name")) or "workflow", dig(cstat, "state") or {}
    pod_texts = [text(dig(pod, "status", "message"))] + [
        text(c.get("message")) for c in mappings(dig(pod, "status", "conditions"))
        if c.get("status") != "True"]
    texts = [t for t in (*pod_texts, *(text(e.get("message")) for e in events
                                       if e.get("type") != "Normal")) if t]
    ran: bool | None = None if pod is None and not texts else False
    if cstat is not None:
        ran = container_started(state) or container_started(dig(cstat, "lastState"))

    c_reason, c_code = _container_signal(state, " ".join(pod_texts))
    c_msg = describe_container(name, state)
    blocker, b_msg = (c_reason, c_msg) if c_reason in _BLOCKERS else (None, "")
    if blocker is None and not ran and (found := blocking_event(events)):
        blocker, b_msg = found.reason, found.message
    if blocker is None and (t_reason := classify_text(*texts)) in _BLOCKERS:
        blocker, b_msg = t_reason, next(t for t in texts if classify_text(t))
    exit_code: int | None = None
    if j_reason == "DeadlineExceeded":
        reason, message = R.DeadlineExceeded, j_msg
        if not ran and blocker:  # the deadline is the symptom of what kept it from starting
            reason, message = blocker, f"{b_msg} (the Job then hit its deadline: {j_msg})"
    elif c_reason is not None:
        reason, message, exit_code = c_reason, c_msg, c_code
    elif blocker is not None:
        reason, message = blocker, b_msg
    else:
        reason = classify_text(*texts, j_msg) or (
            R.TaskFailed if dig(job, "status", "failed") else R.Unknown)
        message = next(iter(texts), j_msg)
    return failure_details(
        context, reason, message or j_msg, ran=ran, exit_code=exit_code, index=0,
        task="workflow", step=name if cstat else None,
        failed_at=first_time(dig(state, "terminated", "finishedAt"),
                             cond.get("lastTransitionTime"),
                             dig(job, "status", "completionTime")),
        start=parse_time(dig(job, "status", "startTime")),
        hints=Hints(text(dig(job, "metadata", "namespace")) or "kubernaut-workflows",
                     text(dig(pod, "metadata", "name")), name, "job",
                     text(dig(job, "metadata", "name")),
                     canceller(job) if reason is R.Cancelled else ""))


def rejected_by_api(context: RunContext, message: str, now: datetime) -> FailureDetails:
    """The API server refused to create the run (422 Invalid, or 400 from strict field
    validation: an unknown field in a custom template): nothing ran."""
    kind = "PipelineRun" if context.engine == "tekton" else "Job"
    return failure_details(context, R.ConfigurationError, f"the API server rejected the {kind}: {message}",
                    ran=False, exit_code=None, index=None, task=None, step=None, failed_at=now,
                    start=None, hints=Hints("", "", "", kind.lower(), ""))


def externally_deleted(context: RunContext, started_at: datetime | None,
                       now: datetime) -> FailureDetails:
    """The run vanished while Running and the reconciler did not delete it (BR-WF-007)."""
    kind = "PipelineRun" if context.engine == "tekton" else "Job"
    message = (f"the {kind} of execution {context.execution_name} was deleted outside the "
               "reconciler while it was running")
    return failure_details(context, R.ExternallyDeleted, message, ran=started_at is not None,
                    exit_code=None, index=None, task=None, step=None, failed_at=now,
                    start=started_at, hints=Hints("", "", "", kind.lower(), ""))
