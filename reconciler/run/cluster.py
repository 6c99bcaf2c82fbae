"""Runs as the reconcile loop sees them: one interface, three implementations.

The loop needs a handful of operations on runs — list ours, get one, its children,
create, cancel, delete, record an event.  :class:`Cluster` is that boundary.

* :class:`KubeCluster` performs them through :mod:`reconciler.run.kube`;
* :class:`DryRunCluster` reads through another cluster but turns every write into a
  recorded intention (``--dry-run``: compute everything, change nothing);
* :class:`OfflineCluster` is an empty cluster for planning without any API server.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

from reconciler.errors import Invalid, KubeError, NotFound
from reconciler.observe.vocabulary import format_time
from reconciler.render.renderer import LABEL_MANAGED_BY, MANAGED_BY, RenderedRun
from reconciler.run.informer import RunCache
from reconciler.run.kube import KubeClient
from reconciler.run.kube_api import EVENTS, JOBS, PIPELINERUNS, PODS, RUN_RESOURCES, TASKRUNS

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


class Cluster(Protocol):
    namespace: str

    def list_runs(self) -> dict[str, dict[str, Any]]: ...
    def get_run(self, kind: str, name: str) -> dict[str, Any] | None: ...
    def children(self, run: Mapping[str, Any]) -> list[dict[str, Any]]: ...
    def create_run(self, rendered: RenderedRun) -> dict[str, Any]: ...
    def cancel_run(self, kind: str, name: str) -> None: ...
    def delete_run(self, kind: str, name: str, uid: str) -> None: ...
    def record_event(self, run: Mapping[str, Any] | None, reason: str, message: str,
                     warning: bool = False) -> None: ...
    def step_log(self, pod: str, container: str) -> str: ...
    def warning_events(self) -> list[dict[str, Any]]: ...


class KubeCluster:
    """The cluster through the API — read from ``cache`` (a watch-fed :class:`RunCache`)
    whenever it is synced, so a cycle with nothing new asks the API server nothing per run;
    through LISTs and GETs otherwise.  :attr:`api_reads` counts the reads that went to the
    API server (readiness counts those, not cache reads)."""

    def __init__(self, kube: KubeClient, namespace: str, *, component: str = "kubernaut-gitops-reconciler",
                 clock: Any = None, logger: logging.Logger | None = None, cache: RunCache | None = None):
        self.kube = kube
        self.namespace = namespace
        self.component = component
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.log = logger or logging.getLogger("reconciler.cluster")
        self.cache = cache
        self.api_reads = 0

    def generation(self) -> int | None:
        """The watch cache's generation while every resource of it is synced, else None (no
        cache, or reads go to the API server: nothing here can prove that they are unchanged).
        Equal values read before two cycles mean the runs and children they read are the
        same; :attr:`api_reads` says whether a cycle read anything besides the cache."""
        cache = self.cache
        if cache is None:
            return None
        generation = cache.generation  # read before ``synced``: a change in between moves it
        # the Warning Events need not be synced: listed instead, a quiet mark keeps their versions
        return generation if cache.synced(*cache.RUN_AND_CHILD_PLURALS) else None

    def list_runs(self) -> dict[str, dict[str, Any]]:
        cached = self.cache.runs() if self.cache is not None else None
        return cached if cached is not None else self.list_runs_live()

    def list_runs_live(self) -> dict[str, dict[str, Any]]:
        """Every run of ours, as the API server lists it now (never from the cache)."""
        self.api_reads += 1
        runs: dict[str, dict[str, Any]] = {}
        for res in (PIPELINERUNS, JOBS):
            items, _ = self.kube.list(res, self.namespace, label_selector=MANAGED_SELECTOR)
            for item in items:
                item.setdefault("kind", res.kind)
                runs[item["metadata"]["name"]] = item
        return runs

    def get_run(self, kind: str, name: str) -> dict[str, Any] | None:
        cached = self.cache.run(kind, name) if self.cache is not None else None
        if cached is not None:
            return cached
        self.api_reads += 1
        run = self.kube.get_or_none(RUN_RESOURCES[kind], self.namespace, name)
        if run is not None:
            run.setdefault("kind", kind)
        return run

    def children(self, run: Mapping[str, Any]) -> list[dict[str, Any]]:
        cached = self.cache.children(run) if self.cache is not None else None
        if cached is not None:
            return cached
        self.api_reads += 1
        name = run["metadata"]["name"]
        if run.get("kind") == "Job":
            items, _ = self.kube.list(PODS, self.namespace, label_selector=f"batch.kubernetes.io/job-name={name}")
            if not items:
                items, _ = self.kube.list(PODS, self.namespace, label_selector=f"job-name={name}")
            return items
        items, _ = self.kube.list(TASKRUNS, self.namespace, label_selector=f"tekton.dev/pipelineRun={name}")
        return items

    def create_run(self, rendered: RenderedRun) -> dict[str, Any]:
        created = self.kube.create(RUN_RESOURCES[rendered.kind], self.namespace, rendered.manifest,
                                   context={"execution": rendered.execution_name, "run": rendered.name})
        created.setdefault("kind", rendered.kind)
        if self.cache is not None:
            self.cache.created(created)  # the next cycle sees it even before the watch does
        return created

    def cancel_run(self, kind: str, name: str) -> None:
        if kind == "PipelineRun":
            self.kube.patch(PIPELINERUNS, self.namespace, name, {"spec": {"status": "Cancelled"}})
        else:  # a suspended Job stops its pod but keeps the object (the lock and the record)
            self.kube.patch(JOBS, self.namespace, name, {"spec": {"suspend": True}})

    def delete_run(self, kind: str, name: str, uid: str) -> None:
        with contextlib.suppress(NotFound):
            self.kube.delete(RUN_RESOURCES[kind], self.namespace, name, uid=uid or None)

    def warning_events(self) -> list[dict[str, Any]]:
        """Every Warning Event in the namespace, shared by all runs (what keeps a run's pods
        from being created, scheduled or pulled is only said there): from the watch cache
        when it is synced, else one LIST."""
        cached = self.cache.warning_events() if self.cache is not None else None
        if cached is not None:
            return cached
        # not counted in api_reads: a quiet mark keeps these versions and lists them again
        items, _ = self.kube.list(EVENTS, self.namespace, field_selector="type=Warning")
        return items

    def step_log(self, pod: str, container: str) -> str:
        """The tail of one container's log; empty when it cannot be read (best effort): the pod
        is gone (404: Tekton deletes it on timeouts and cancels), the container never started
        or is not in the pod (400), or anything else the API says."""
        try:
            return self.kube.pod_log(self.namespace, pod, container)
        except KubeError as e:
            if isinstance(e, NotFound):
                why = "the pod is gone, and its log with it"
            elif isinstance(e, Invalid):
                why = "the container has not started (or is not in the pod)"
            else:
                why = "the API server did not return it"
            self.log.info("step log unavailable", extra={"pod": pod, "container": container, "why": why,
                                                         "error": str(e)})
            return ""

    def record_event(self, run: Mapping[str, Any] | None, reason: str, message: str,
                     warning: bool = False) -> None:
        if run is None:
            return
        meta = run.get("metadata") or {}
        now = format_time(self.clock())
        api_version = "batch/v1" if run.get("kind") == "Job" else "tekton.dev/v1"
        message = message[:1024]
        # the aggregation key, stable across processes (every `sync --once` is a new one):
        # the same run, reason and message is the same Event, counted (see KubeClient.create_event)
        key = hashlib.sha256("\0".join((str(meta.get("uid") or meta.get("name")), reason, message))
                             .encode()).hexdigest()[:16]
        self.kube.create_event(self.namespace, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{key}", "namespace": self.namespace},
            "involvedObject": {"apiVersion": api_version, "kind": run.get("kind"),
                               "name": meta.get("name"), "namespace": self.namespace,
                               "uid": meta.get("uid")},
            "reason": reason, "message": message, "type": "Warning" if warning else "Normal",
            "source": {"component": self.component}, "reportingComponent": self.component,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        })


class OfflineCluster:
    """No API server: nothing is running, nothing can be written."""

    def __init__(self, namespace: str):
        self.namespace = namespace

    def generation(self) -> int | None:
        return None  # nothing is watched: a cycle never proves the cluster unchanged

    def list_runs(self) -> dict[str, dict[str, Any]]:
        return {}

    def get_run(self, kind: str, name: str) -> dict[str, Any] | None:
        return None

    def children(self, run: Mapping[str, Any]) -> list[dict[str, Any]]:
        return []

    def create_run(self, rendered: RenderedRun) -> dict[str, Any]:
        raise NotImplementedError("offline")

    def cancel_run(self, kind: str, name: str) -> None:
        raise NotImplementedError("offline")

    def delete_run(self, kind: str, name: str, uid: str) -> None:
        raise NotImplementedError("offline")

    def record_event(self, run: Mapping[str, Any] | None, reason: str, message: str,
                     warning: bool = False) -> None:
        return None

    def step_log(self, pod: str, container: str) -> str:
        return ""

    def warning_events(self) -> list[dict[str, Any]]:
        return []


class DryRunCluster:
    """Reads through ``inner``; every write becomes an entry in ``intentions``."""

    def __init__(self, inner: Cluster):
        self.inner = inner
        self.namespace = inner.namespace
        self.intentions: list[str] = []

    def generation(self) -> int | None:
        return None  # a dry run records nothing: never skipped

    def list_runs(self) -> dict[str, dict[str, Any]]:
        return self.inner.list_runs()

    def get_run(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.inner.get_run(kind, name)

    def children(self, run: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self.inner.children(run)

    def create_run(self, rendered: RenderedRun) -> dict[str, Any]:
        self.intentions.append(f"create {rendered.kind} {self.namespace}/{rendered.name}")
        manifest = dict(rendered.manifest)
        manifest["metadata"] = {**manifest["metadata"], "uid": ""}
        return manifest

    def cancel_run(self, kind: str, name: str) -> None:
        self.intentions.append(f"cancel {kind} {self.namespace}/{name}")

    def delete_run(self, kind: str, name: str, uid: str) -> None:
        self.intentions.append(f"delete {kind} {self.namespace}/{name}")

    def record_event(self, run: Mapping[str, Any] | None, reason: str, message: str,
                     warning: bool = False) -> None:
        return None

    def step_log(self, pod: str, container: str) -> str:
        return self.inner.step_log(pod, container)

    def warning_events(self) -> list[dict[str, Any]]:
        return self.inner.warning_events()
