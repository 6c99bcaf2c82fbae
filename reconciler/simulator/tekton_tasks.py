"""How a TaskRun ends and how a PipelineRun fails or is cancelled, per failure kind.

Kept apart from the simulator's lifecycle code; the reasons, messages, step states and pod
handling follow the Tekton controller (e.g. failTaskRun deletes the pod and turns running
or waiting steps into terminated ones carrying the TaskRun reason).
"""

from __future__ import annotations

from typing import Any

from reconciler.simulator import tekton_status as ts
from reconciler.simulator.tekton_admission import pipeline_timeout
from reconciler.simulator.tekton_plan import TektonRuns

_STOPPED = {"timeout": "TaskRunCancelled", "cancelled": "TaskRunCancelled",
            "task_timeout": "TaskRunTimeout", "image_pull": "TaskRunImagePullFailed"}


def finish_taskrun(sim: TektonRuns, tr: dict[str, Any], steps: list[str], image: str, kind: str, *,
                   step: str | None, exit_code: int | None, message: str | None,
                   message_in_status: bool) -> dict[str, Any]:
    meta, now = tr["metadata"], sim._now()
    ns, tr_name = meta["namespace"], meta["name"]
    status = tr.setdefault("status", {})
    started = {s["name"]: (s.get("running") or s.get("terminated") or {}).get("startedAt", now)
               for s in status.get("steps") or []}
    idx = steps.index(step) if step in steps else 0
    failing = steps[idx]
    pod_name = status.get("podName") or ""
    states: list[dict[str, Any]] = []
    log: str | None = None
    if kind == "succeed":
        states = [ts.step_terminated(s, image, started.get(s, now), now, 0, "Completed", "Completed") for s in steps]
        cond = ts.condition("True", "Succeeded", "All Steps have completed executing", now)
    elif kind in ("exit", "oom", "forbidden"):
        code = exit_code if exit_code is not None else (137 if kind == "oom" else 1)
        for i, s in enumerate(steps):
            if i < idx:
                states.append(ts.step_terminated(s, image, started.get(s, now), now, 0, "Completed", "Completed"))
            elif i == idx:
                states.append(ts.step_terminated(s, image, started.get(s, now), now, code,
                                                 "OOMKilled" if kind == "oom" else "Error", "Error"))
            else:
                states.append(ts.step_terminated(s, image, started.get(s, now), now, 1, "Error", "Skipped"))
        if kind == "forbidden":
            log = message or ts.FORBIDDEN_TEXT.format(target="payment-api", namespace=ns, target_ns="payments")
        else:
            log = message or ("Killed" if kind == "oom" else f"step {failing} failed with exit code {code}")
        if message_in_status:
            states[idx]["terminated"]["message"] = log
        cond = ts.condition("False", "Failed", f'"step-{failing}" exited with code {code}', now)
    else:
        reason = _STOPPED[kind]
        texts = {"timeout": f'TaskRun "{tr_name}" was cancelled. {ts.BY_PIPELINE_TIMEOUT}',
                 "cancelled": f'TaskRun "{tr_name}" was cancelled. {ts.BY_PIPELINE_CANCEL}',
                 "task_timeout": f'TaskRun "{tr_name}" failed to finish within "{pipeline_timeout_of(tr)}"',
                 "image_pull": ts.IMAGE_PULL_TEXT.format(step=failing, taskrun=tr_name, image=image)}
        cond = ts.condition("False", reason, message or texts[kind], now)
        if pod_name:
            for i, s in enumerate(steps):
                if kind != "image_pull" and i < idx:
                    states.append(ts.step_terminated(s, image, started.get(s, now), now, 0, "Completed", "Completed"))
                    continue
                state = ts.step_terminated(s, image, started.get(s, now), now, 1, reason, "")
                del state["terminationReason"]
                if kind == "image_pull" and s == failing:
                    state["imageID"] = ""
                    del state["terminated"]["startedAt"]
                del state["terminated"]["containerID"]
                states.append(state)
        if kind in ("timeout", "cancelled"):
            tr["spec"]["status"] = "TaskRunCancelled"
            tr["spec"]["statusMessage"] = ts.BY_PIPELINE_TIMEOUT if kind == "timeout" else ts.BY_PIPELINE_CANCEL
    status["conditions"] = [cond]
    status["completionTime"] = now
    if states:
        status["steps"] = states
    tr = sim._put("taskruns", tr)
    if pod_name and sim.server.get_object("", "v1", "pods", ns, pod_name) is not None:
        if kind in _STOPPED:
            sim.server.delete_object("", "v1", "pods", ns, pod_name)
        else:
            if log is not None:
                sim.server.set_pod_log(ns, pod_name, log + "\n", f"step-{failing}")

            def finish(pod: dict[str, Any]) -> None:
                pod["status"]["phase"] = "Succeeded" if kind == "succeed" else "Failed"
                pod["status"]["containerStatuses"] = [ts.pod_container_status(st, image) for st in states]
            sim.server.modify_object("", "v1", "pods", ns, pod_name, finish)
    if cond["status"] == "True":
        sim._event(tr, "Normal", "Succeeded", cond["message"])
    else:
        sim._event(tr, "Warning", "Failed", cond["message"])
    return tr


def pipeline_timeout_of(tr: dict[str, Any]) -> str:
    return str((tr.get("spec") or {}).get("timeout") or "1h0m0s")


def _config_failure(sim: TektonRuns, ns: str, name: str, kind: str, message: str | None,
                    config_reason: str | None) -> dict[str, Any]:
    pr = sim._get("pipelineruns", ns, name)
    if (pr.get("status") or {}).get("startTime"):
        raise ValueError(f"{ns}/{name} already started; a configuration failure happens before any task")
    reason = config_reason or ("ParameterMissing" if kind == "param_missing" else "CouldntGetPipeline")
    if message is None and reason == "ParameterMissing":
        message = (f"PipelineRun {ns} parameters is missing some parameters required by Pipeline {name}'s "
                   "parameters: pipelineRun missing parameters: [TARGET_RESOURCE]")
    elif message is None:
        bundle = sim._plan(pr).image
        message = (f"Error retrieving pipeline for pipelinerun {ns}/{name}: error requesting remote resource: "
                   f'error getting "bundleresolver" "{ns}/bundles-{name}": cannot retrieve the oci image: '
                   f"GET https://{bundle.split('/')[0]}/v2/: MANIFEST_UNKNOWN: manifest unknown")
    now = sim._now()
    pr["status"] = {"startTime": now, "completionTime": now,
                    "conditions": [ts.condition("False", reason, message, now)]}
    pr = sim._put("pipelineruns", pr)
    sim._event(pr, "Normal", "Started", "")
    sim._event(pr, "Warning", "Failed", message)
    return pr


def fail_run(sim: TektonRuns, ns: str, name: str, kind: str, task: str, step: str | None,
             exit_code: int | None, message: str | None, *, terminal: bool | None,
             message_in_status: bool, config_reason: str | None) -> dict[str, Any]:
    if kind in ("config", "param_missing"):
        return _config_failure(sim, ns, name, kind, message, config_reason)
    if kind == "cancelled":
        return cancel_run(sim, ns, name)
    plan = sim._ensure_started(ns, name)
    if task not in plan.tasks:
        raise ValueError(f"task {task!r} is not one of {plan.tasks}")
    if step is not None and step not in plan.steps[task]:
        raise ValueError(f"step {step!r} is not one of {plan.steps[task]}")
    idx = plan.tasks.index(task)
    for earlier in plan.tasks[:idx]:
        tr = sim._taskruns(ns, name).get(earlier)
        if tr is None or not ts.is_done(tr):
            sim._complete(ns, name, earlier, "succeed")
    trs = sim._taskruns(ns, name)
    if kind == "quota":
        tr = trs.get(task)
        if tr is not None and tr["status"].get("podName"):
            sim.server.delete_object("", "v1", "pods", ns, tr["status"]["podName"])
        if tr is None:
            tr = sim._start_task(sim._get("pipelineruns", ns, name), plan, task, with_pod=False)
        pod = ts.child_name(tr["metadata"]["name"], "-pod")
        text = message or ts.QUOTA_TEXT.format(pod=pod)
        cond = ts.condition("Unknown", "ExceededResourceQuota", text, sim._now())
        tr = sim.server.update_status(ts.GROUP, ts.VERSION, "taskruns", ns, tr["metadata"]["name"], {
            "podName": "", "conditions": [cond], "taskSpec": tr["status"].get("taskSpec", {})})
        sim._event(tr, "Normal", "ExceededResourceQuota", text)
        pr = sim._refresh(ns, name)
        if not terminal:
            return pr
        kind, message = "timeout", None
    elif kind == "unschedulable":
        return _unschedulable(sim, ns, name, plan, task, message, terminal)
    elif task not in trs:
        sim._start_task(sim._get("pipelineruns", ns, name), plan, task)
    later = [t for t in plan.tasks[idx + 1:] if t not in sim._taskruns(ns, name)]
    if kind == "timeout":
        for other, tr in sim._taskruns(ns, name).items():
            if not ts.is_done(tr):
                sim._complete(ns, name, other, "timeout", step=step if other == task else None)
        pr = sim._get("pipelineruns", ns, name)
        text = message or f'PipelineRun "{name}" failed to finish within "{pipeline_timeout(pr)}"'
        return sim._refresh(ns, name, ts.condition("False", "PipelineRunTimeout", text, sim._now()),
                            [(t, ts.SKIP_TIMEOUT) for t in later])
    sim._complete(ns, name, task, kind, step=step, exit_code=exit_code, message=message,
                  message_in_status=message_in_status)
    for other, tr in sim._taskruns(ns, name).items():
        if other != task and not ts.is_done(tr):
            sim._complete(ns, name, other, "succeed")
    ran = len(sim._taskruns(ns, name))
    return sim._refresh(ns, name, ts.condition("False", "Failed", ts.done_message(ran, 1, 0, len(later)),
                                               sim._now()), [(t, ts.SKIP_STOPPING) for t in later])


UNSCHEDULABLE = ("0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: "
                 "3 No preemption victims found for incoming pod.")


def _unschedulable(sim: TektonRuns, ns: str, name: str, plan: Any, task: str, message: str | None,
                   terminal: bool | None) -> dict[str, Any]:
    """The task's pod is never scheduled: Pending with `PodScheduled` False, the scheduler's
    `FailedScheduling` Warning Event on the pod, the TaskRun `Unknown`/`Pending` with Tekton's
    'pod status "PodScheduled":"False"' message and no step states. `terminal`: the
    PipelineRun then times out, its TaskRun cancelled with no step ever started."""
    text = message or UNSCHEDULABLE
    tr = sim._taskruns(ns, name).get(task) or sim._start_task(sim._get("pipelineruns", ns, name), plan, task)
    pod_name = tr["status"]["podName"]
    now = sim._now()

    def pending(pod: dict[str, Any]) -> None:
        pod["status"] = {"phase": "Pending", "qosClass": "BestEffort", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": text,
            "lastProbeTime": None, "lastTransitionTime": now}]}
    pod = sim.server.modify_object("", "v1", "pods", ns, pod_name, pending)
    cond = ts.condition("Unknown", "Pending", f'pod status "PodScheduled":"False"; message: "{text}"', now)
    status = {k: v for k, v in tr["status"].items() if k not in ("steps", "conditions")}
    tr = sim.server.update_status(ts.GROUP, ts.VERSION, "taskruns", ns, tr["metadata"]["name"],
                                  {**status, "conditions": [cond]})
    meta = pod["metadata"]
    sim._put("events", {
        "metadata": {"name": f"{meta['name']}.failedscheduling", "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "namespace": ns,
                           "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion", "")},
        "reason": "FailedScheduling", "message": text, "type": "Warning",
        "source": {"component": "default-scheduler"}, "firstTimestamp": now, "lastTimestamp": now,
        "count": 1, "reportingComponent": "default-scheduler", "reportingInstance": ""},
        group="", version="v1")
    pr = sim._refresh(ns, name)
    if not terminal:
        return pr
    cancelled = ts.condition("False", "TaskRunCancelled",
                             f'TaskRun "{tr["metadata"]["name"]}" was cancelled. {ts.BY_PIPELINE_TIMEOUT}', sim._now())
    tr["spec"]["status"], tr["spec"]["statusMessage"] = "TaskRunCancelled", ts.BY_PIPELINE_TIMEOUT
    tr["status"].update(conditions=[cancelled], completionTime=sim._now())
    sim._put("taskruns", tr)
    sim.server.delete_object("", "v1", "pods", ns, pod_name)
    later = [t for t in plan.tasks[plan.tasks.index(task) + 1:] if t not in sim._taskruns(ns, name)]
    text = f'PipelineRun "{name}" failed to finish within "{pipeline_timeout(sim._get("pipelineruns", ns, name))}"'
    return sim._refresh(ns, name, ts.condition("False", "PipelineRunTimeout", text, sim._now()),
                        [(t, ts.SKIP_TIMEOUT) for t in later])


def cancel_run(sim: TektonRuns, ns: str, name: str) -> dict[str, Any]:
    pr = sim._get("pipelineruns", ns, name)
    if ts.is_done(pr):
        return pr
    if (pr.get("spec") or {}).get("status") not in ts.CANCEL_STATES:
        def ask(obj: dict[str, Any]) -> None:
            obj["spec"]["status"] = "Cancelled"
        pr = sim.server.modify_object(ts.GROUP, ts.VERSION, "pipelineruns", ns, name, ask)
    if (ns, name) not in sim._plans:
        sim._plans[(ns, name)] = sim._plan(pr)
    for task, tr in sim._taskruns(ns, name).items():
        if not ts.is_done(tr):
            sim._complete(ns, name, task, "cancelled")
    pr = sim._get("pipelineruns", ns, name)
    if not (pr.get("status") or {}).get("startTime"):
        pr.setdefault("status", {})["startTime"] = sim._now()
        sim._put("pipelineruns", pr)
    text = f'PipelineRun "{name}" was cancelled'
    return sim._refresh(ns, name, ts.condition("False", "Cancelled", text, sim._now()))
