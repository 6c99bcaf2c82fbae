"""A watch-fed cache of our runs and their children, so a cycle costs what changed.

Polling every run each cycle costs one TaskRun (or Pod) LIST per running run and a full
LIST of runs: 10 000 requests for 10 000 runs, every cycle, for nothing new.  An
informer — LIST once, then WATCH from the list's resourceVersion, as client-go does —
keeps every PipelineRun, TaskRun, Job and Pod labelled as ours in memory; the cycle reads
that, and the API server is asked only about what the watch has not told.

Correctness before speed:

* a watch ends (``timeoutSeconds``: resume from the last resourceVersion seen), expires
  (``410 Gone``: list again) or breaks (an outage: back off, list again).  While a resource
  is not *synced* — before its first LIST and from a broken watch until the next LIST — the
  cache says so and :class:`~reconciler.run.cluster.KubeCluster` falls back to its LISTs, so a
  cycle never decides from a view that may have missed events;
* what changed while nothing was watching is in the relist: a run the relist shows
  terminal (once per resourceVersion), or no longer shows at all, is reported to
  ``on_run`` — the follower's fast path loses no terminal transition;
* a run this process creates is written into the cache at once (the watch confirms it a
  moment later), so the next cycle cannot miss it; a deletion is left to the watch (the
  object may linger with a deletionTimestamp, as a LIST would show it);
* :attr:`RunCache.generation` moves on every change of a map (watch event applied, relist,
  this process's own create) and whenever ``synced`` changes — never on a BOOKMARK, a watch
  closed on time and resumed, or an event that brings a version the map already holds — so
  an unchanged generation proves that what the cycle read is still what the cache holds
  (the cycle's quiet mark, :mod:`reconciler.service.cycle`).

:attr:`RunCache.last_answer` is when the API server last answered one of these LISTs or
watches: the service's readiness counts those (a cache read by itself is no answer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.errors import KubeError
from reconciler.render.renderer import LABEL_MANAGED_BY, MANAGED_BY
from reconciler.run.kube import KubeClient
from reconciler.run.kube_api import EVENTS, JOBS, PIPELINERUNS, PODS, TASKRUNS, Expired, Resource

SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
# the label naming each child's parent run: what ``KubeCluster.children`` selects on
PARENT_LABELS: dict[str, tuple[str, ...]] = {
    TASKRUNS.plural: ("tekton.dev/pipelineRun",),
    PODS.plural: ("batch.kubernetes.io/job-name", "job-name"),
}


class Informer:
    """LIST+WATCH of one resource in one namespace into a name → object map."""

    def __init__(self, kube: KubeClient, res: Resource, namespace: str, *, selector: str = SELECTOR,
                 fields: str = "", watch_timeout: int = 60, max_backoff: float = 30.0,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 on_relist: Callable[[dict[str, dict[str, Any]], dict[str, dict[str, Any]]], None] | None = None,
                 on_answer: Callable[[], None] | None = None, notify: Callable[[], None] | None = None,
                 logger: logging.Logger | None = None):
        self.kube = kube
        self.res = res
        self.namespace = namespace
        self.selector = selector
        self.fields = fields  # a field selector as well (Events: only the Warnings)
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.on_event = on_event  # (type, object) of every watch event, after the cache took it
        self.on_relist = on_relist  # (before, after) of every LIST but the first
        self.on_answer = on_answer or (lambda: None)
        self.notify = notify or (lambda: None)  # after every change of the map or of ``synced``
        self.log = logger or logging.getLogger("reconciler.informer")
        self.synced = threading.Event()  # the map reflects every event since a LIST
        self.listed_once = threading.Event()
        self.relists = 0
        self._items: dict[str, dict[str, Any]] = {}
        self._index: dict[str, set[str]] = {}  # parent run name → names of its children
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading -------------------------------------------------------------------------

    def items(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: dict(obj) for name, obj in self._items.items()}

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._items.get(name)
            return dict(obj) if obj is not None else None

    def children_of(self, parent: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(self._items[n]) for n in sorted(self._index.get(parent, ())) if n in self._items]

    # -- writing (the watch thread, and this process's own creates and deletes) -----------

    def upsert(self, obj: Mapping[str, Any]) -> None:
        """Take ``obj`` unless the cache already holds a newer version of it."""
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name:
            return
        with self._lock:
            held = self._items.get(name)
            same_uid = held is not None and (held.get("metadata") or {}).get("uid") == meta.get("uid")
            if held is not None and same_uid and _rv(held) > _rv(obj):
                return
            if held is not None and same_uid and _rv(obj) >= 0 and _rv(held) == _rv(obj):
                return  # the version held already (our own create, then its ADDED event): no change
            self._unindex(name)
            self._items[name] = {**obj, "kind": obj.get("kind") or self.res.kind}
            self._reindex(name)
        self.notify()

    def remove(self, name: str) -> None:
        with self._lock:
            if name not in self._items:
                return  # nothing held by that name: the map did not change
            self._unindex(name)
            self._items.pop(name, None)
        self.notify()

    def _parents(self, obj: Mapping[str, Any]) -> set[str]:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return {str(labels[k]) for k in PARENT_LABELS.get(self.res.plural, ()) if labels.get(k)}

    def _unindex(self, name: str) -> None:
        held = self._items.get(name)
        for parent in self._parents(held) if held is not None else ():
            members = self._index.get(parent)
            if members is not None:
                members.discard(name)
                if not members:
                    del self._index[parent]

    def _reindex(self, name: str) -> None:
        for parent in self._parents(self._items[name]):
            self._index.setdefault(parent, set()).add(name)

    def _replace(self, items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        with self._lock:
            before = self._items
            self._items, self._index = {}, {}
            for item in items:
                name = str((item.get("metadata") or {}).get("name") or "")
                if name:
                    self._items[name] = {**item, "kind": item.get("kind") or self.res.kind}
                    self._reindex(name)
            return before

    # -- the loop ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"informer-{self.res.plural}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 0.5) -> None:
        """Stop. A thread blocked in a watch is a daemon and delivers nothing more."""
        self._stop.set()
        self.synced.clear()
        self.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        backoff = 0.5
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    items, version = self.kube.list(self.res, self.namespace, label_selector=self.selector or None,
                                                    field_selector=self.fields or None)
                    self.on_answer()
                    before = self._replace(items)
                    if self.listed_once.is_set():
                        self.relists += 1
                        if self.on_relist is not None:
                            self.on_relist(before, self.items())
                    self.listed_once.set()
                    self.synced.set()
                    self.notify()
                for event in self.kube.watch(self.res, self.namespace, label_selector=self.selector or None,
                                             field_selector=self.fields or None, resource_version=version,
                                             timeout_seconds=self.watch_timeout):
                    if self._stop.is_set():
                        return
                    self.on_answer()
                    version = str((event.object.get("metadata") or {}).get("resourceVersion") or version)
                    if event.type == "BOOKMARK":
                        continue
                    if event.type == "DELETED":
                        self.remove(str((event.object.get("metadata") or {}).get("name") or ""))
                    else:
                        self.upsert(event.object)
                    if self.on_event is not None:
                        self.on_event(event.type, {**event.object, "kind": event.object.get("kind") or self.res.kind})
                self.on_answer()  # the server closed the watch on time: an answer, still synced
                backoff = 0.5
            except Expired:
                version = ""  # too old (410 Gone): list again; the map stays as of the last event
            except KubeError as e:
                self.synced.clear()  # events may be missed from here on: readers fall back to LIST
                self.notify()
                self.log.warning("watch interrupted; polling continues", extra={"resource": self.res.qualified,
                                                                               "error": str(e)})
                if self._stop.wait(backoff):
                    return
                backoff = min(self.max_backoff, backoff * 2)
                version = ""


def _rv(obj: Mapping[str, Any]) -> int:
    value = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else -1


class RunCache:
    """Informers for our PipelineRuns, Jobs, TaskRuns and Pods in one namespace, and for its
    Warning Events.

    ``on_run(type, run)`` sees every watch event of a run (PipelineRun, Job) and, after a
    relist, ``("RELISTED", run)`` for each run the relist shows and ``("DELETED", run)`` for
    each run it no longer shows.
    """

    RUN_KINDS = (PIPELINERUNS, JOBS)
    CHILD_KINDS = (TASKRUNS, PODS)
    RUN_AND_CHILD_PLURALS = tuple(r.plural for r in (*RUN_KINDS, *CHILD_KINDS))

    def __init__(self, kube: KubeClient, namespace: str, *, watch_timeout: int = 60, max_backoff: float = 30.0,
                 on_run: Callable[[str, dict[str, Any]], None] | None = None,
                 logger: logging.Logger | None = None):
        self.namespace = namespace
        self.on_run = on_run
        self.last_answer = -float("inf")  # time.monotonic() of the last LIST or watch answer
        self.changed = threading.Condition()  # notified on every change (see wait_for)
        # moves on every change of a map and of ``synced`` (under ``changed``): equal
        # generations read before and after mean nothing in the cache changed in between
        self.generation = 0
        self.informers: dict[str, Informer] = {}
        for res in (*self.RUN_KINDS, *self.CHILD_KINDS):
            runs = res in self.RUN_KINDS
            self.informers[res.plural] = Informer(
                kube, res, namespace, watch_timeout=watch_timeout, max_backoff=max_backoff, logger=logger,
                on_event=self._run_event if runs else None, on_relist=self._relisted if runs else None,
                on_answer=self._answered, notify=self._notify)
        # the namespace's Warning Events (not labelled: selected by type), which say what keeps
        # a run's pods from being created, scheduled or pulled; a cycle with runs Running reads
        # them, and a LIST of them each cycle grows with everything else in the namespace
        self.informers[EVENTS.plural] = Informer(
            kube, EVENTS, namespace, selector="", fields="type=Warning", watch_timeout=watch_timeout,
            max_backoff=max_backoff, logger=logger, on_answer=self._answered, notify=self._notify)

    def _notify(self) -> None:
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds, re-checked on every change of the cache."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def _answered(self) -> None:
        self.last_answer = time.monotonic()

    def _run_event(self, kind: str, run: dict[str, Any]) -> None:
        if self.on_run is not None:
            self.on_run(kind, run)

    def _relisted(self, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> None:
        if self.on_run is None:
            return
        for name, run in before.items():
            if name not in after:
                self.on_run("DELETED", run)
        for run in after.values():
            self.on_run("RELISTED", run)

    def start(self) -> None:
        for informer in self.informers.values():
            informer.start()

    def stop(self, timeout: float = 0.5) -> None:
        for informer in self.informers.values():
            informer.stop(timeout)

    def wait_listed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(i.listed_once.wait(max(0.0, deadline - time.monotonic())) for i in self.informers.values())

    def synced(self, *plurals: str) -> bool:
        return all(self.informers[p].synced.is_set() for p in plurals or self.informers)

    def runs(self) -> dict[str, dict[str, Any]] | None:
        """Every run of ours (name → object), or None when not synced (ask the API)."""
        if not self.synced(PIPELINERUNS.plural, JOBS.plural):
            return None
        out: dict[str, dict[str, Any]] = {}
        for res in self.RUN_KINDS:
            out.update(self.informers[res.plural].items())
        return out

    def warning_events(self) -> list[dict[str, Any]] | None:
        """The namespace's Warning Events, or None when not synced (ask the API)."""
        if not self.synced(EVENTS.plural):
            return None
        return list(self.informers[EVENTS.plural].items().values())

    def run(self, kind: str, name: str) -> dict[str, Any] | None:
        """The run if the cache holds it (None: not held, or not synced — ask the API)."""
        res = JOBS if kind == "Job" else PIPELINERUNS
        if not self.synced(res.plural):
            return None
        return self.informers[res.plural].get(name)

    def children(self, run: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """The run's TaskRuns or Pods; None when not synced or none are held (ask the API:
        a custom template may leave our label off a Job's pods)."""
        res = PODS if run.get("kind") == "Job" else TASKRUNS
        if not self.synced(res.plural):
            return None
        found = self.informers[res.plural].children_of(str((run.get("metadata") or {}).get("name") or ""))
        return found or None

    def created(self, run: Mapping[str, Any]) -> None:
        res = JOBS if run.get("kind") == "Job" else PIPELINERUNS
        self.informers[res.plural].upsert(run)
