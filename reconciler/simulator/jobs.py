"""`JobSimulator`: plays the Job controller and the kubelet for batch/v1 Jobs.

It creates the Job's Pod (labels and owner reference as the controller sets them), then
ends it with the conditions Kubernetes >= 1.31 writes: the interim `SuccessCriteriaMet` /
`FailureTarget` condition, then `Complete` / `Failed` with the controller's reasons and
messages. A reconciler must therefore look for the terminal condition by type.

It can also be told that the pod never runs, as on a real cluster: `fail_pod_creation`
(the Job controller's `FailedCreate` Warning Events, e.g. a missing ServiceAccount, and no
pod at all) and `unschedulable` (a Pending pod and the scheduler's `FailedScheduling`).
Either way the Job looks active until its `activeDeadlineSeconds` fails it
(`fail(..., "deadline")`).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from reconciler.simulator.server import FakeKubeServer
from reconciler.simulator.store import timestamp
from reconciler.simulator.validation import JOB_NAME_LABELS, JOB_UID_LABELS
from reconciler.simulator.watch import WatchEvent

KINDS = ("exit", "oom", "deadline", "image_pull")
# outcomes where the pod never runs: the Job controller cannot create it, the scheduler cannot place it
STUCK = ("no_service_account", "unschedulable")
UNSCHEDULABLE = ("0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: "
                 "3 No preemption victims found for incoming pod.")
BACKOFF = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE = ("DeadlineExceeded", "Job was active longer than specified deadline")
COMPLETE = ("CompletionsReached", "Reached expected number of succeeded pods")
Outcome = str | Callable[[dict[str, Any]], "str | None"] | None
_CHARS = "bcdfghjklmnpqrstvwxz2456789"


class JobSimulator:
    def __init__(self, server: FakeKubeServer, *, auto_start: bool = False, outcome: Outcome = None) -> None:
        self.server = server
        self.outcome = outcome
        self._pods: dict[tuple[str, str], str] = {}
        self._no_pods: set[tuple[str, str]] = set()  # the controller cannot create their pod
        self._lock = threading.RLock()
        self._random = random.Random()
        self._undo: list[Callable[[], None]] = []
        if auto_start or outcome is not None:
            self._undo.append(server.on_event(self._on_event))

    def close(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()

    def _now(self) -> str:
        return timestamp(self.server.clock())

    def _job(self, ns: str, name: str) -> dict[str, Any]:
        job = self.server.get_object("batch", "v1", "jobs", ns, name)
        if job is None:
            raise LookupError(f"jobs {ns}/{name} not found")
        return job

    def pod_name(self, ns: str, name: str) -> str | None:
        """The name of the Pod `start` created for the Job."""
        return self._pods.get((ns, name))

    def _set_job_status(self, ns: str, name: str, change: dict[str, Any]) -> dict[str, Any]:
        def apply(job: dict[str, Any]) -> None:
            job.setdefault("status", {}).update(change)
        return self.server.modify_object("batch", "v1", "jobs", ns, name, apply)

    def _pod(self, ns: str, name: str, fn: Callable[[dict[str, Any]], None]) -> None:
        pod = self._pods.get((ns, name))
        if pod and self.server.get_object("", "v1", "pods", ns, pod) is not None:
            self.server.modify_object("", "v1", "pods", ns, pod, fn)

    def _event(self, obj: dict[str, Any], reason: str, message: str, component: str) -> None:
        """A Warning Event as the controllers record them (repeats raise `count`)."""
        meta, now = obj["metadata"], self._now()
        name = f"{meta['name']}.{reason.lower()}"
        old = self.server.get_object("", "v1", "events", meta["namespace"], name)
        self.server.put_object("", "v1", "events", {
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", ""),
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                               "resourceVersion": meta.get("resourceVersion", "")},
            "reason": reason, "message": message, "type": "Warning", "source": {"component": component},
            "firstTimestamp": (old or {}).get("firstTimestamp", now), "lastTimestamp": now,
            "count": int((old or {}).get("count", 0)) + 1, "reportingComponent": component,
            "reportingInstance": ""})

    def fail_pod_creation(self, ns: str, name: str, message: str | None = None) -> dict[str, Any]:
        """The Job controller cannot create the pod: no pod, a `FailedCreate` Warning Event on
        the Job (by default: its ServiceAccount does not exist), the Job active with 0 pods."""
        with self._lock:
            job = self._job(ns, name)
            self._no_pods.add((ns, name))
            pod_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
            sa = pod_spec.get("serviceAccountName") or "default"
            self._event(job, "FailedCreate", message or (
                f'Error creating: pods "{name}-" is forbidden: error looking up service account {ns}/{sa}: '
                f'serviceaccount "{sa}" not found'), "job-controller")
            now = self._now()
            return self._set_job_status(ns, name, {"startTime": (job.get("status") or {}).get("startTime") or now,
                                                   "active": 0, "ready": 0, "terminating": 0,
                                                   "uncountedTerminatedPods": {}})

    def unschedulable(self, ns: str, name: str, message: str = UNSCHEDULABLE) -> dict[str, Any]:
        """The pod exists but no node can take it: Pending, `PodScheduled` False, no container
        statuses, the scheduler's `FailedScheduling` Warning Event on the pod."""
        with self._lock:
            self.start(ns, name)
            pod_name = self._pods[(ns, name)]

            def pending(pod: dict[str, Any]) -> None:
                pod["status"] = {"phase": "Pending", "qosClass": "BestEffort", "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                    "lastProbeTime": None, "lastTransitionTime": self._now()}]}
            self._pod(ns, name, pending)
            pod = self.server.get_object("", "v1", "pods", ns, pod_name)
            assert pod is not None
            self._event(pod, "FailedScheduling", message, "default-scheduler")
            return self._set_job_status(ns, name, {"ready": 0})

    def start(self, ns: str, name: str) -> dict[str, Any]:
        """Create the running Pod and mark the Job active."""
        with self._lock:
            job = self._job(ns, name)
            if (ns, name) in self._pods or (ns, name) in self._no_pods:
                return job
            meta, now = job["metadata"], self._now()
            template = (job.get("spec") or {}).get("template") or {}
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            for key in JOB_NAME_LABELS:
                labels[key] = meta["name"]
            for key in JOB_UID_LABELS:
                labels[key] = meta["uid"]
            pod_name = f"{meta['name']}-" + "".join(self._random.choice(_CHARS) for _ in range(5))
            spec = dict(template.get("spec") or {})
            containers = spec.get("containers") or []
            self.server.put_object("", "v1", "pods", {
                "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
                             "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                             "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                  "uid": meta["uid"], "controller": True,
                                                  "blockOwnerDeletion": True}]},
                "spec": spec,
                "status": {"phase": "Running", "startTime": now, "qosClass": "BestEffort",
                           "hostIP": "10.0.0.10", "podIP": "10.244.0.17",
                           "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                                          for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
                           "containerStatuses": [_status(c, {"running": {"startedAt": now}}) for c in containers]},
            })
            self._pods[(ns, name)] = pod_name
            return self._set_job_status(ns, name, {"startTime": now, "active": 1, "ready": 1, "terminating": 0,
                                                   "uncountedTerminatedPods": {}})

    def succeed(self, ns: str, name: str) -> dict[str, Any]:
        with self._lock:
            self.start(ns, name)
            now = self._now()
            self._finish_pod(ns, name, "Succeeded", 0, "Completed")
            return self._set_job_status(ns, name, {
                "active": 0, "ready": 0, "succeeded": 1, "completionTime": now,
                "conditions": [_cond("SuccessCriteriaMet", *COMPLETE, now), _cond("Complete", *COMPLETE, now)]})

    def fail(self, ns: str, name: str, kind: str = "exit", exit_code: int | None = None,
             message: str | None = None, *, terminal: bool | None = None) -> dict[str, Any]:
        """End the Job like Kubernetes does for `kind` ("exit", "oom", "deadline", "image_pull").
        "image_pull" leaves the Job active (the kubelet keeps backing off) unless `terminal`,
        which then applies the activeDeadlineSeconds failure."""
        if kind not in KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; one of {KINDS}")
        with self._lock:
            self.start(ns, name)
            now = self._now()
            if kind == "image_pull":
                image = _image(self._job(ns, name))

                def waiting(pod: dict[str, Any]) -> None:
                    pod["status"]["phase"] = "Pending"
                    for cond in pod["status"]["conditions"]:
                        if cond["type"] in ("Ready", "ContainersReady"):
                            cond.update(status="False", reason="ContainersNotReady")
                    pod["status"]["containerStatuses"] = [
                        {**cs, "ready": False, "started": False, "imageID": "", "state": {"waiting": {
                            "reason": "ImagePullBackOff",
                            "message": message or f'Back-off pulling image "{image}"'}}}
                        for cs in pod["status"]["containerStatuses"]]
                self._pod(ns, name, waiting)
                job = self._set_job_status(ns, name, {"ready": 0})
                if not terminal:
                    return job
                kind = "deadline"
            if kind == "deadline":
                pod = self._pods.get((ns, name))
                if pod:
                    self.server.delete_object("", "v1", "pods", ns, pod, propagation="Background")
                why = DEADLINE
            else:
                code = exit_code if exit_code is not None else (137 if kind == "oom" else 2)
                self._finish_pod(ns, name, "Failed", code, "OOMKilled" if kind == "oom" else "Error")
                pod = self._pods[(ns, name)]
                self.server.set_pod_log(ns, pod, (message or ("Killed" if kind == "oom" else
                                                              f"error: exit status {code}")) + "\n")
                why = BACKOFF
            return self._set_job_status(ns, name, {
                "active": 0, "ready": 0, "failed": 1, "terminating": 0,
                "conditions": [_cond("FailureTarget", *why, now), _cond("Failed", *why, now)]})

    def _finish_pod(self, ns: str, name: str, phase: str, code: int, reason: str) -> None:
        now = self._now()

        def finish(pod: dict[str, Any]) -> None:
            pod["status"]["phase"] = phase
            for cond in pod["status"]["conditions"]:
                if cond["type"] in ("Ready", "ContainersReady"):
                    cond.update(status="False", reason="PodCompleted" if code == 0 else "PodFailed")
            pod["status"]["containerStatuses"] = [
                {**cs, "ready": False, "started": False, "state": {"terminated": {
                    "exitCode": code, "reason": reason, "startedAt": (cs["state"].get("running") or {})
                    .get("startedAt", now), "finishedAt": now, "containerID": cs.get("containerID", "")}}}
                for cs in pod["status"]["containerStatuses"]]
        self._pod(ns, name, finish)

    def _on_event(self, event: WatchEvent) -> None:
        if event.resource.key != ("batch", "jobs") or event.type != "ADDED":
            return
        job = self.server.get_object("batch", "v1", "jobs", event.namespace, event.name)
        if job is None or (job.get("spec") or {}).get("suspend"):
            return
        outcome = self.outcome(job) if callable(self.outcome) else self.outcome
        if outcome == "no_service_account":
            self.fail_pod_creation(event.namespace, event.name)
            return
        if outcome == "unschedulable":
            self.unschedulable(event.namespace, event.name)
            return
        self.start(event.namespace, event.name)
        if outcome == "succeed":
            self.succeed(event.namespace, event.name)
        elif outcome:
            self.fail(event.namespace, event.name, outcome)


def _cond(kind: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


def _image(job: dict[str, Any]) -> str:
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return str(containers[0].get("image", ""))


def _status(container: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    image = str(container.get("image", ""))
    return {"name": container.get("name", ""), "image": image, "imageID": f"{image.split('@')[0]}@sha256:"
            + "0" * 64 if "@" not in image else image, "ready": True, "restartCount": 0, "started": True,
            "containerID": "containerd://" + "1" * 64, "state": state}
