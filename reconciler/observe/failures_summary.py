"""The words of a failure: the summary and the next step a person or the LLM can act on.

:mod:`reconciler.observe.failures` decides *what* failed (task, step, reason, exit code, times, whether
the workflow had started); this module turns that into a :class:`FailureDetails` whose
``naturalLanguageSummary`` says it in one paragraph and ends with a concrete recommendation
(which limit to raise, which verb to grant on which resource, which quota, image, parameter or
field to fix), picked out of the failure message. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.observe.vocabulary import FailureDetails, FailureReason, RunContext, human_duration, squash

__all__ = ["SERVICE_ACCOUNT", "Hints", "failure_details"]

R = FailureReason

_RBAC = re.compile(r'cannot (?P<verb>[\w-]+) resource "(?P<res>[^"]+)"'
                   r'(?: in API group "(?P<group>[^"]*)")?(?: in the namespace "(?P<ns>[^"]+)")?')
_SA = re.compile(r"system:serviceaccount:(?P<ns>[^:\s\"]+):(?P<name>[^:\s\"]+)")
_QUOTA = re.compile(r"exceeded quota: (?P<quota>[\w.-]+)")
_IMAGE = re.compile(r'pull(?:ing)? (?:the )?image \\?"(?P<image>[^"\\]+)\\?"')
_PARAMS = re.compile(r"parameters?: \[(?P<names>[^\]]+)\]")
_ADMISSION = re.compile(r"\bviolates PodSecurity\b|\badmission webhook\b|\bdenied the request\b")
_WITHIN = re.compile(r'within "(?P<timeout>[^"]+)"')
_UNKNOWN_FIELD = re.compile(r'unknown field \\?"(?P<field>[^"\\]+)\\?"')
SERVICE_ACCOUNT = re.compile(r'\bserviceaccounts? \\?"(?P<name>[^"\\]+)\\?" not found')


@dataclass(frozen=True)
class Hints:
    """Where to look and what to name in the recommendation."""

    namespace: str
    pod: str
    container: str
    kind: str
    run: str
    cancelled_by: str = ""


def failure_details(ctx: RunContext, reason: FailureReason, message: str, *, ran: bool | None,
             exit_code: int | None, index: int | None, task: str | None, step: str | None,
             failed_at: datetime | None, start: datetime | None,
             hints: Hints) -> FailureDetails:
    elapsed = max(failed_at - start, timedelta(0)) if failed_at and start else None
    # Did the workflow run (so may have changed the cluster)? A step exited or started: yes.
    # Unknown (a child we were not shown): the pre-start reasons say no, the rest may have.
    # ExternallyDeleted is reported as not an execution failure (SPEC §4.8) whatever ran.
    was = reason is not R.ExternallyDeleted and (
        reason in (R.TaskFailed, R.OOMKilled) or bool(ran)
        or (ran is None and reason not in (R.ConfigurationError, R.ImagePullBackOff,
                                           R.ResourceExhausted)))
    where = [f'in task "{task}" (index {index})' if task else "",
             f'step "{step}"' if step and task else f'in step "{step}"' if step else "",
             f"after {human_duration(elapsed)}" if elapsed is not None else ""]
    clauses = ", ".join(w for w in where if w)
    code = f" (exit code {exit_code})" if exit_code is not None else ""
    detail = f": {squash(message, 300).rstrip('.')}" if message else ""
    detail += "" if detail.endswith("…") else "."
    target = ctx.target_resource
    if reason is R.ExternallyDeleted:
        change = (f"It had been running for {human_duration(elapsed)}, so it may have changed "
                  f"the cluster; check {target}." if elapsed is not None else
                  f"Whether it changed the cluster before deletion is unknown; check {target}.")
    elif was:
        change = ("The workflow had started executing, so it may have changed the cluster; "
                  f"check the current state of {target} before retrying.")
    else:
        change = "The workflow never started executing, so it did not change the cluster."
    summary = (f"Execution {ctx.execution_name} of workflow {ctx.workflow_id}@"
               f"{ctx.workflow_version} on {target} failed{f' {clauses},' if clauses else ''} with "
               f"{reason.value}{code}{detail} {change} Recommendation: "
               f"{_recommend(reason, ctx, message, hints, task, step)}")
    return FailureDetails(
        failed_task_index=index, failed_task_name=task, failed_step_name=step,
        reason=reason.value, message=squash(message, 1024), exit_code=exit_code,
        failed_at=failed_at, execution_time_before_failure=elapsed,
        natural_language_summary=summary, was_execution_failure=was)


def _recommend(reason: FailureReason, ctx: RunContext, msg: str, h: Hints,
               task: str | None, step: str | None) -> str:
    wf, again = f"{ctx.workflow_id}@{ctx.workflow_version}", "then declare a new execution."
    where = f'step "{step}"' if step else "the failing step"
    ns = f' in namespace "{h.namespace}"' if h.namespace else ""
    if reason is R.OOMKilled:
        return (f"raise the memory limit of {where} (computeResources.limits.memory) in the "
                f"workflow bundle of {wf}, or reduce its working set; {again}")
    if reason is R.DeadlineExceeded:
        now = f" (currently {m['timeout']})" if (m := _WITHIN.search(msg)) else ""
        limit = (f'the timeout of task "{task}" in the workflow bundle{now}' if
                 msg.startswith("TaskRun ") and task else f"spec.executionConfig.timeout{now}")
        if not (task or step):
            return (f"nothing had started when the time ran out: find what held the run back "
                    f"with `kubectl describe {h.kind} -n {h.namespace} {h.run}` (bundle "
                    f"resolution, scheduling, admission), or raise {limit}; {again}")
        return (f"raise {limit} or investigate why {where} was slow; changes made before the "
                f"timeout may already be applied to {ctx.target_resource}, so check it first; "
                f"{again}")
    if reason is R.Forbidden:
        who = (f'ServiceAccount "{m["ns"]}/{m["name"]}"' if (m := _SA.search(msg)) else
               "the runner ServiceAccount (spec.executionConfig.serviceAccountName)")
        if rbac := _RBAC.search(msg):
            scope = f' in namespace "{rbac["ns"]}"' if rbac["ns"] else " (cluster-wide)"
            return (f'grant verb "{rbac["verb"]}" on resource "{rbac["res"]}" (API group '
                    f'"{rbac["group"] or ""}"){scope} to {who} with a Role/ClusterRole and '
                    f"binding; {again}")
        if _ADMISSION.search(msg):
            return ("change the workflow bundle so its pods satisfy the admission policy the "
                    "message names (or have that policy changed for the execution namespace); "
                    f"{again}")
        return f"grant {who} the permission the message says is missing; {again}"
    if reason is R.ImagePullBackOff:
        image = f'"{m["image"]}"' if (m := _IMAGE.search(msg)) else "the workflow image"
        return (f"check that {image} exists with that reference/digest (workflowRef."
                "containerImage or the catalog entry) and that the runner ServiceAccount's "
                f"pull credentials (imagePullSecrets) can read it; {again}")
    if reason is R.ResourceExhausted:
        if m := _QUOTA.search(msg):
            return f'free quota or raise ResourceQuota "{m["quota"]}"{ns}; {again}'
        if "insufficient" in msg.lower():
            return f"free node capacity or lower the workflow's resource requests; {again}"
        return f"free quota or raise the ResourceQuota{ns}; {again}"
    if reason is R.ConfigurationError:
        if m := _UNKNOWN_FIELD.search(msg):
            return (f'remove or correct field "{m["field"]}" in the run template (--templates or '
                    "templates/): the API server's schema does not declare it, and a cluster "
                    f"without strict validation would silently drop it; {again}")
        if m := SERVICE_ACCOUNT.search(msg):
            return (f'create ServiceAccount "{m["name"]}"{ns} (with the RBAC its workflow needs) '
                    "or name an existing one in spec.executionConfig.serviceAccountName; "
                    f"{again}")
        if m := _PARAMS.search(msg):
            return (f"fix parameter(s) {m['names']} in the execution's spec.parameters (or the "
                    f"parameters the catalog declares for {wf}); {again}")
        return ("fix the reference or value the message names (spec.parameters, workflowRef."
                f"pipelineName/containerImage, or the catalog entry for {wf}); {again}")
    if reason is R.TaskFailed:
        label = "tekton.dev/pipelineRun" if h.kind == "pipelinerun" else "job-name"
        logs = (f"kubectl logs -n {h.namespace} {h.pod} -c {h.container or 'workflow'}" if h.pod
                else f"kubectl logs -n {h.namespace} -l {label}={h.run} --all-containers")
        return (f"inspect the step logs with `{logs}` and fix the underlying error before "
                "declaring a new execution.")
    if reason is R.Cancelled:
        who = (f"It was cancelled: {h.cancelled_by}." if h.cancelled_by else
               "The run does not record who cancelled it.")
        return f"{who} If that was not intended, declare a new execution to run it again."
    if reason is R.ExternallyDeleted:
        return ("the run was deleted outside the reconciler, which does not retry on its own; "
                "declare a new execution to retry.")
    return (f"inspect the run with `kubectl describe {h.kind} -n {h.namespace} {h.run}` and its "
            f"pod logs and fix the cause; {again}")
