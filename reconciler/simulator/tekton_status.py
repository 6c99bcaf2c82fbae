"""Tekton v1 status payloads with the controller's own reasons and messages (taken from
tektoncd/pipeline: pkg/pod/status.go, pkg/reconciler/taskrun, pkg/reconciler/pipelinerun),
so a reconciler classifying failures is tested against what Tekton really writes."""

from __future__ import annotations

import hashlib
from typing import Any

GROUP, VERSION = "tekton.dev", "v1"
API_VERSION = f"{GROUP}/{VERSION}"
CANCEL_STATES = ("Cancelled", "CancelledRunFinally", "StoppedRunFinally")
PENDING = "PipelineRunPending"
BY_PIPELINE_CANCEL = "TaskRun cancelled as the PipelineRun it belongs to has been cancelled."
BY_PIPELINE_TIMEOUT = "TaskRun cancelled as the PipelineRun it belongs to has timed out."
SKIP_STOPPING = "PipelineRun was stopping"
SKIP_TIMEOUT = "PipelineRun timeout has been reached"
FORBIDDEN_TEXT = ('Error from server (Forbidden): deployments.apps "{target}" is forbidden: User '
                  '"system:serviceaccount:{namespace}:kubernaut-workflow-runner" cannot patch resource '
                  '"deployments" in API group "apps" in the namespace "{target_ns}"')
QUOTA_TEXT = ('TaskRun Pod exceeded available resources: pods "{pod}" is forbidden: exceeded quota: '
              "compute-resources, requested: limits.memory=2Gi, used: limits.memory=3Gi, "
              "limited: limits.memory=4Gi")
IMAGE_PULL_TEXT = ('The step "{step}" in TaskRun "{taskrun}" failed to pull the image "". The pod '
                   'errored with the message: "Back-off pulling image "{image}"."')


def child_name(parent: str, suffix: str) -> str:
    """knative kmeta.ChildName: parent+suffix, hashed when longer than 63 characters."""
    if len(parent) + len(suffix) <= 63:
        return parent + suffix
    digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
    return parent[: max(0, 63 - len(suffix) - 32)] + digest + suffix


def condition(status: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {"type": "Succeeded", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": now}


def succeeded_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Succeeded":
            return dict(cond)
    return None


def is_done(obj: dict[str, Any]) -> bool:
    cond = succeeded_condition(obj)
    return cond is not None and cond.get("status") in ("True", "False")


def running_message(completed: int, failed: int, cancelled: int, incomplete: int, skipped: int) -> str:
    return (f"Tasks Completed: {completed} (Failed: {failed}, Cancelled {cancelled}), "
            f"Incomplete: {incomplete}, Skipped: {skipped}")


def done_message(completed: int, failed: int, cancelled: int, skipped: int) -> str:
    return f"Tasks Completed: {completed} (Failed: {failed}, Cancelled {cancelled}), Skipped: {skipped}"


def image_id(image: str) -> str:
    digest = hashlib.sha256(image.encode()).hexdigest()
    return image if "@sha256:" in image else f"{image.split(':')[0]}@sha256:{digest}"


def container_id(name: str) -> str:
    return "containerd://" + hashlib.sha256(name.encode()).hexdigest()


def step_running(step: str, image: str, now: str) -> dict[str, Any]:
    return {"name": step, "container": f"step-{step}", "imageID": image_id(image),
            "running": {"startedAt": now}}


def step_terminated(step: str, image: str, started: str, now: str, exit_code: int, reason: str,
                    termination_reason: str) -> dict[str, Any]:
    return {"name": step, "container": f"step-{step}", "imageID": image_id(image),
            "terminated": {"exitCode": exit_code, "reason": reason, "startedAt": started,
                           "finishedAt": now, "containerID": container_id(step + started)},
            "terminationReason": termination_reason}


def pod_container_status(state: dict[str, Any], image: str) -> dict[str, Any]:
    """A pod containerStatus (the fields the Kubernetes client model requires) from a step state."""
    inner = {k: v for k, v in state.items() if k in ("running", "terminated", "waiting")}
    if "terminated" in inner:
        inner = {"terminated": {k: v for k, v in inner["terminated"].items()}}
    return {"name": state["container"], "image": image, "imageID": state.get("imageID", ""),
            "ready": "running" in inner, "restartCount": 0, "started": "running" in inner,
            "state": inner}
