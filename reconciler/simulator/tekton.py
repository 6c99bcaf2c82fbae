"""`TektonSimulator`: plays the Tekton controller (and its webhooks) against the fake server.

It writes through the store, so every change is a watch event: PipelineRuns start, create
TaskRuns (labels and annotations propagated, owned by the run) and their Pods, then succeed
or fail with the status payloads Tekton v1 really produces (see tekton_status.py). Tasks
run as a sequential chain by default, like a pipeline whose tasks `runAfter` each other.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconciler.simulator import tekton_status as ts
from reconciler.simulator.server import FakeKubeServer
from reconciler.simulator.store import timestamp
from reconciler.simulator.tekton_admission import pipeline_timeout, pipelinerun_defaulting, pipelinerun_validation
from reconciler.simulator.tekton_plan import RunPlan
from reconciler.simulator.tekton_tasks import cancel_run, fail_run, finish_taskrun
from reconciler.simulator.watch import WatchEvent

PR, TR = "pipelineruns", "taskruns"
DEFAULT_IMAGE = "registry.example.invalid/kubernaut/workflow-runner:1.0.0"
TASK_KINDS = ("exit", "oom", "forbidden", "task_timeout", "image_pull", "quota", "timeout", "unschedulable")
FAIL_KINDS = (*TASK_KINDS, "config", "param_missing", "cancelled")
Outcome = str | Callable[[dict[str, Any]], "str | None"] | None


class TektonSimulator:
    def __init__(self, server: FakeKubeServer, *, auto_start: bool = False, outcome: Outcome = None,
                 admission: bool = True, defaulting: bool = False, emit_events: bool = True,
                 tasks: Sequence[str] = ("validate", "apply", "verify"), image: str | None = None) -> None:
        self.server = server
        self.default_tasks = tuple(tasks)
        self.default_image = image
        self.outcome = outcome
        self.emit_events = emit_events
        self.auto_start = auto_start or outcome is not None
        self._plans: dict[tuple[str, str], RunPlan] = {}
        self._lock = threading.RLock()
        self._undo: list[Callable[[], None]] = []
        if defaulting:  # Tekton's mutating webhook: only when a test asks (it may be absent)
            self._undo.append(server.add_admission(ts.GROUP, ts.VERSION, PR, pipelinerun_defaulting))
        if admission:
            self._undo.append(server.add_admission(ts.GROUP, ts.VERSION, PR, pipelinerun_validation))
        if self.auto_start:
            self._undo.append(server.on_event(self._on_event))

    def close(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()

    # ------------------------------------------------------------------ helpers
    def _now(self) -> str:
        return timestamp(self.server.clock())

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.server.get_object(ts.GROUP, ts.VERSION, plural, namespace, name)
        if obj is None:
            raise LookupError(f"{plural} {namespace}/{name} not found")
        return obj

    def _put(self, plural: str, obj: dict[str, Any], group: str = ts.GROUP,
             version: str = ts.VERSION) -> dict[str, Any]:
        return self.server.put_object(group, version, plural, obj)

    @staticmethod
    def _owner(obj: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
                "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}

    def _event(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        if not self.emit_events:
            return
        meta, now = obj["metadata"], self._now()
        self._put("events", {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"],
                               "resourceVersion": meta.get("resourceVersion", "")},
            "reason": reason, "message": message, "type": kind, "source": {"component": obj["kind"]},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1, "reportingComponent": obj["kind"],
            "reportingInstance": ""}, group="", version="v1")

    @staticmethod
    def _pipeline_name(pr: dict[str, Any]) -> str:
        ref = (pr.get("spec") or {}).get("pipelineRef") or {}
        if ref.get("name"):
            return str(ref["name"])
        for param in ref.get("params") or []:
            if param.get("name") == "name":
                return str(param.get("value"))
        return str(pr["metadata"]["name"])

    def _plan(self, pr: dict[str, Any], tasks: Sequence[str] | None = None,
              steps: Mapping[str, Sequence[str]] | None = None, image: str | None = None,
              parallel: bool = False) -> RunPlan:
        names = list(tasks or self.default_tasks)
        bundle = next((p.get("value") for p in ((pr.get("spec") or {}).get("pipelineRef") or {})
                       .get("params") or [] if p.get("name") == "bundle"), None)
        return RunPlan(names, {t: list((steps or {}).get(t) or [t]) for t in names},
                     image or self.default_image or str(bundle or DEFAULT_IMAGE), parallel)

    def _taskruns(self, namespace: str, name: str) -> dict[str, dict[str, Any]]:
        items = self.server.list_objects(ts.GROUP, ts.VERSION, TR, namespace, f"tekton.dev/pipelineRun={name}")
        return {tr["metadata"]["labels"].get("tekton.dev/pipelineTask", ""): tr for tr in items}

    # ------------------------------------------------------------------ lifecycle
    def start(self, namespace: str, name: str, tasks: Sequence[str] | None = None, *,
              steps: Mapping[str, Sequence[str]] | None = None, image: str | None = None,
              parallel: bool = False) -> dict[str, Any]:
        """Start the run: status Running, label tekton.dev/pipeline, the first TaskRun (all of
        them with `parallel=True`) running in its Pod."""
        with self._lock:
            pr = self._get(PR, namespace, name)
            if (pr.get("status") or {}).get("startTime") and (namespace, name) in self._plans:
                return pr
            plan = self._plan(pr, tasks, steps, image, parallel)
            self._plans[(namespace, name)] = plan
            pr["metadata"].setdefault("labels", {})["tekton.dev/pipeline"] = self._pipeline_name(pr)
            now = self._now()
            pr["status"] = {
                "startTime": now,
                "conditions": [ts.condition("Unknown", "Running",
                                            ts.running_message(0, 0, 0, len(plan.tasks), 0), now)],
                "pipelineSpec": {"tasks": [
                    {"name": t, "taskSpec": {"steps": [{"name": s, "image": plan.image} for s in plan.steps[t]]},
                     **({"runAfter": [plan.tasks[i - 1]]} if i and not parallel else {})}
                    for i, t in enumerate(plan.tasks)]},
                "childReferences": [],
            }
            pr = self._put(PR, pr)
            self._event(pr, "Normal", "Started", "")
            for task in plan.tasks if parallel else plan.tasks[:1]:
                self._start_task(pr, plan, task)
            return self._refresh(namespace, name)

    def _ensure_started(self, namespace: str, name: str) -> RunPlan:
        plan = self._plans.get((namespace, name))
        if plan is None:
            pr = self._get(PR, namespace, name)
            if (pr.get("status") or {}).get("startTime"):
                plan = self._plans[(namespace, name)] = self._plan(pr)
            else:
                self.start(namespace, name)
                plan = self._plans[(namespace, name)]
        return plan

    def _start_task(self, pr: dict[str, Any], plan: RunPlan, task: str, with_pod: bool = True) -> dict[str, Any]:
        meta, now = pr["metadata"], self._now()
        spec = pr.get("spec") or {}
        template = spec.get("taskRunTemplate") or {}
        sa = template.get("serviceAccountName") or "default"
        labels = {**(meta.get("labels") or {}), "tekton.dev/pipelineRun": meta["name"],
                  "tekton.dev/pipelineRunUID": meta["uid"], "tekton.dev/pipelineTask": task,
                  "tekton.dev/memberOf": "tasks"}
        task_spec = {"steps": [{"name": s, "image": plan.image} for s in plan.steps[task]]}
        tr_spec: dict[str, Any] = {"serviceAccountName": sa, "timeout": pipeline_timeout(pr), "taskSpec": task_spec}
        if template.get("podTemplate"):
            tr_spec["podTemplate"] = template["podTemplate"]
        tr = self._put(TR, {"apiVersion": ts.API_VERSION, "kind": "TaskRun", "metadata": {
            "name": ts.child_name(meta["name"], f"-{task}"), "namespace": meta["namespace"], "labels": labels,
            "annotations": dict(meta.get("annotations") or {}), "ownerReferences": [self._owner(pr)]},
            "spec": tr_spec})
        status: dict[str, Any] = {"podName": "", "taskSpec": task_spec}
        if with_pod:
            pod_name = ts.child_name(tr["metadata"]["name"], "-pod")
            states = [ts.step_running(s, plan.image, now) for s in plan.steps[task]]
            self._put("pods", {"metadata": {
                "name": pod_name, "namespace": meta["namespace"],
                "labels": {**labels, "tekton.dev/taskRun": tr["metadata"]["name"],
                           "tekton.dev/taskRunUID": tr["metadata"]["uid"],
                           "app.kubernetes.io/managed-by": "tekton-pipelines"},
                "annotations": dict(meta.get("annotations") or {}), "ownerReferences": [self._owner(tr)]},
                "spec": {"serviceAccountName": sa, "restartPolicy": "Never", "containers": [
                    {"name": f"step-{s}", "image": plan.image} for s in plan.steps[task]]},
                "status": {"phase": "Running", "startTime": now, "containerStatuses": [
                    ts.pod_container_status(st, plan.image) for st in states]}}, group="", version="v1")
            status.update({"podName": pod_name, "startTime": now, "steps": states, "conditions": [
                ts.condition("Unknown", "Running", "Not all Steps in the Task have finished executing", now)]})
        tr = self.server.update_status(ts.GROUP, ts.VERSION, TR, meta["namespace"], tr["metadata"]["name"], status)
        self._event(tr, "Normal", "Started", "")
        return tr

    def _refresh(self, namespace: str, name: str, final: dict[str, Any] | None = None,
                 skipped: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        """Rewrite the run's childReferences and condition from its TaskRuns (or `final`)."""
        plan = self._plans[(namespace, name)]
        pr = self._get(PR, namespace, name)
        trs = self._taskruns(namespace, name)
        status = pr.setdefault("status", {})
        status["childReferences"] = [{"apiVersion": ts.API_VERSION, "kind": "TaskRun",
                                      "name": trs[t]["metadata"]["name"], "pipelineTaskName": t}
                                     for t in plan.tasks if t in trs]
        if final is None:
            conds = [ts.succeeded_condition(tr) or {} for tr in trs.values()]
            done = [c for c in conds if c.get("status") in ("True", "False")]
            failed = sum(1 for c in done if c["status"] == "False" and "Cancelled" not in c.get("reason", ""))
            cancelled = sum(1 for c in done if "Cancelled" in c.get("reason", ""))
            final = ts.condition("Unknown", "Running", ts.running_message(
                len(done), failed, cancelled, len(plan.tasks) - len(done), 0), self._now())
        else:
            status["completionTime"] = final["lastTransitionTime"]
            if skipped:
                status["skippedTasks"] = [{"name": t, "reason": r} for t, r in skipped]
        status["conditions"] = [final]
        pr = self._put(PR, pr)
        if final["status"] != "Unknown":
            self._event(pr, "Normal" if final["status"] == "True" else "Warning",
                        "Succeeded" if final["status"] == "True" else "Failed", final["message"])
        return pr

    def _complete(self, namespace: str, name: str, task: str, kind: str, *, step: str | None = None,
                  exit_code: int | None = None, message: str | None = None,
                  message_in_status: bool = False) -> dict[str, Any]:
        plan = self._plans[(namespace, name)]
        tr = self._taskruns(namespace, name).get(task)
        if tr is None:
            tr = self._start_task(self._get(PR, namespace, name), plan, task)
        return finish_taskrun(self, tr, plan.steps[task], plan.image, kind, step=step, exit_code=exit_code,
                              message=message, message_in_status=message_in_status)

    def advance(self, namespace: str, name: str) -> str | None:
        """Finish the running task successfully and start the next; the run succeeds after the
        last one. Returns the task that finished (None when the run was already done)."""
        with self._lock:
            plan = self._ensure_started(namespace, name)
            trs = self._taskruns(namespace, name)
            for i, task in enumerate(plan.tasks):
                if task in trs and ts.is_done(trs[task]):
                    continue
                self._complete(namespace, name, task, "succeed")
                if i + 1 == len(plan.tasks):
                    self._refresh(namespace, name, ts.condition(
                        "True", "Succeeded", ts.done_message(len(plan.tasks), 0, 0, 0), self._now()))
                else:
                    if plan.tasks[i + 1] not in trs:
                        self._start_task(self._get(PR, namespace, name), plan, plan.tasks[i + 1])
                    self._refresh(namespace, name)
                return task
            return None

    def succeed(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            plan = self._ensure_started(namespace, name)
            for task in plan.tasks:
                tr = self._taskruns(namespace, name).get(task)
                if tr is None or not ts.is_done(tr):
                    self._complete(namespace, name, task, "succeed")
            return self._refresh(namespace, name, ts.condition(
                "True", "Succeeded", ts.done_message(len(plan.tasks), 0, 0, 0), self._now()))

    def fail(self, namespace: str, name: str, kind: str = "exit", task: str = "apply", step: str | None = None,
             exit_code: int | None = None, message: str | None = None, *, terminal: bool | None = None,
             message_in_status: bool = False, config_reason: str | None = None) -> dict[str, Any]:
        """End the run the way Tekton does for `kind` (see FAIL_KINDS and the module docs)."""
        if kind not in FAIL_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; one of {FAIL_KINDS}")
        with self._lock:
            return fail_run(self, namespace, name, kind, task, step, exit_code, message,
                            terminal=terminal, message_in_status=message_in_status,
                            config_reason=config_reason)

    def cancel(self, namespace: str, name: str) -> dict[str, Any]:
        """What Tekton does once `spec.status: Cancelled` is set (sets it if needed)."""
        with self._lock:
            return cancel_run(self, namespace, name)

    def process_cancellations(self) -> list[str]:
        """Cancel every unfinished run whose spec.status asks for it; returns their names."""
        done = []
        with self._lock:
            for pr in self.server.list_objects(ts.GROUP, ts.VERSION, PR):
                if (pr.get("spec") or {}).get("status") in ts.CANCEL_STATES and not ts.is_done(pr):
                    self.cancel(pr["metadata"]["namespace"], pr["metadata"]["name"])
                    done.append(pr["metadata"]["name"])
        return done

    # ------------------------------------------------------------------ automatic mode
    def _on_event(self, event: WatchEvent) -> None:
        if event.resource.key != (ts.GROUP, PR) or event.type == "DELETED":
            return
        with self._lock:
            pr = self.server.get_object(ts.GROUP, ts.VERSION, PR, event.namespace, event.name)
            if pr is None or ts.is_done(pr):
                return
            ns, name = event.namespace, event.name
            spec_status = (pr.get("spec") or {}).get("status")
            status = pr.get("status") or {}
            if spec_status in ts.CANCEL_STATES:
                self.cancel(ns, name)
            elif spec_status == ts.PENDING:
                if not status.get("conditions"):
                    self.server.update_status(ts.GROUP, ts.VERSION, PR, ns, name, {"conditions": [ts.condition(
                        "Unknown", ts.PENDING, f'PipelineRun "{name}" is pending', self._now())]})
            elif not status.get("startTime"):
                self.start(ns, name)
                outcome = self.outcome(pr) if callable(self.outcome) else self.outcome
                if outcome == "succeed":
                    self.succeed(ns, name)
                elif outcome:
                    self.fail(ns, name, outcome)
