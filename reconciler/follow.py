"""Follow runs with watches so a finished run is recorded in about a second.

The reconcile cycle polls every run it started; that is the reliable path and it stays.
Watching is the fast path: one watch per run kind (PipelineRuns, Jobs) on our label, and
whenever a run reaches a terminal condition or disappears, the follower reports its
execution so the service can observe just that one right away.

Watches end (``timeoutSeconds``: resume from the last resourceVersion seen), expire (410 →
list again and resume from the list's resourceVersion) and break (API outage → back off,
list again). What changed while nothing was watching is in that list: every run it shows
terminal is reported (once per resourceVersion), so the fast path loses nothing either;
the next cycle polls anyway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .errors import KubeError
from .kube import JOBS, PIPELINERUNS, Expired, KubeClient, Resource
from .lifecycle import run_info
from .render import LABEL_MANAGED_BY, MANAGED_BY

SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


class RunFollower:
    def __init__(self, kube: KubeClient, namespace: str, on_change: Callable[[str], None], *,
                 watch_timeout: int = 60, max_backoff: float = 30.0, logger: logging.Logger | None = None):
        self.kube = kube
        self.namespace = namespace
        self.on_change = on_change
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.log = logger or logging.getLogger("reconciler.follow")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.ready = threading.Event()  # set once every watch has listed and started
        self._listed = 0
        self._listed_lock = threading.Lock()

    def start(self) -> None:
        for res in (PIPELINERUNS, JOBS):
            thread = threading.Thread(target=self._loop, args=(res,), name=f"follow-{res.plural}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 0.5) -> None:
        """Stop following. Threads blocked in a watch are daemons and end with it (they
        deliver nothing more once stopped); waiting for the server to close it is not needed."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _mark_listed(self) -> None:
        with self._listed_lock:
            self._listed += 1
            if self._listed >= 2:
                self.ready.set()

    def _loop(self, res: Resource) -> None:
        backoff = 0.5
        version = ""
        listed = False
        reported: dict[str, str] = {}  # run name → resourceVersion reported terminal from a relist
        while not self._stop.is_set():
            try:
                if not version:
                    items, version = self.kube.list(res, self.namespace, label_selector=SELECTOR)
                    if listed:  # a relist: report what finished while no watch was open
                        self._report_terminal(res, items, reported)
                    else:
                        listed = True
                        self._mark_listed()
                for event in self.kube.watch(res, self.namespace, label_selector=SELECTOR,
                                             resource_version=version, timeout_seconds=self.watch_timeout):
                    if self._stop.is_set():
                        return
                    version = str((event.object.get("metadata") or {}).get("resourceVersion") or version)
                    if event.type == "BOOKMARK":
                        continue
                    info = run_info({**event.object, "kind": event.object.get("kind") or res.kind})
                    if info.execution and (event.type == "DELETED" or info.terminal):
                        self.on_change(info.execution)
                backoff = 0.5
            except Expired:
                version = ""  # too old (410 Gone): list again and resume from there
            except KubeError as e:
                self.log.warning("watch interrupted; polling continues", extra={"resource": res.qualified,
                                                                               "error": str(e)})
                if self._stop.wait(backoff):
                    return
                backoff = min(self.max_backoff, backoff * 2)
                version = ""

    def _report_terminal(self, res: Resource, items: list[dict[str, Any]], reported: dict[str, str]) -> None:
        for item in items:
            info = run_info({**item, "kind": item.get("kind") or res.kind})
            rv = str((item.get("metadata") or {}).get("resourceVersion") or "")
            if info.execution and info.terminal and reported.get(info.name) != rv:
                reported[info.name] = rv
                self.on_change(info.execution)
