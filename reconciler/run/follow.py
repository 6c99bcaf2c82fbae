"""Follow runs with watches so a finished run is recorded in about a second.

The reconcile cycle observes every run it started; that is the reliable path and it stays.
Watching is the fast path: the follower owns the :class:`~reconciler.run.informer.RunCache`
(LIST+WATCH of our PipelineRuns, Jobs, TaskRuns and Pods), and whenever a run reaches a
terminal condition or disappears, it reports its execution so the service can observe
just that one right away.  The cycle reads the same cache instead of listing.

Watches end (``timeoutSeconds``: resume from the last resourceVersion seen), expire (410 →
list again and resume from the list's resourceVersion) and break (API outage → back off,
list again). What changed while nothing was watching is in that list: every run it shows
terminal is reported (once per resourceVersion), and every run it no longer shows, so the
fast path loses nothing either; the next cycle observes anyway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from reconciler.run.informer import RunCache
from reconciler.run.kube import KubeClient
from reconciler.run.lifecycle import run_info


class RunFollower:
    """Reports the execution of every run that ends or disappears, fed by a :class:`RunCache`
    (its LIST+WATCH of PipelineRuns, Jobs, TaskRuns and Pods), which ``cache`` exposes for
    the cycle to read (:class:`~reconciler.run.cluster.KubeCluster` ``cache=``)."""

    def __init__(self, kube: KubeClient, namespace: str, on_change: Callable[[str], None], *,
                 watch_timeout: int = 60, max_backoff: float = 30.0, logger: logging.Logger | None = None):
        self.namespace = namespace
        self.on_change = on_change
        self.log = logger or logging.getLogger("reconciler.follow")
        self.cache = RunCache(kube, namespace, watch_timeout=watch_timeout, max_backoff=max_backoff,
                              on_run=self._run, logger=self.log)
        self.ready = threading.Event()  # set once every watch has listed and started
        self._stop = threading.Event()
        self._reported: dict[str, str] = {}  # run name → resourceVersion reported terminal from a relist
        self._waiter: threading.Thread | None = None

    def start(self) -> None:
        self.cache.start()
        self._waiter = threading.Thread(target=self._await_listed, name="follow-ready", daemon=True)
        self._waiter.start()

    def _await_listed(self) -> None:
        while not self._stop.is_set():
            if self.cache.wait_listed(0.5):
                self.ready.set()
                return

    def stop(self, timeout: float = 0.5) -> None:
        """Stop following. Threads blocked in a watch are daemons and end with it (they
        deliver nothing more once stopped); waiting for the server to close it is not needed."""
        self._stop.set()
        self.cache.stop(timeout)

    def _run(self, kind: str, run: dict[str, Any]) -> None:
        if self._stop.is_set():
            return
        info = run_info(run)
        if not info.execution:
            return
        if kind == "RELISTED":  # what finished while no watch was open: once per resourceVersion
            rv = str((run.get("metadata") or {}).get("resourceVersion") or "")
            if info.terminal and self._reported.get(info.name) != rv:
                self._reported[info.name] = rv
                self.on_change(info.execution)
        elif kind == "DELETED" or info.terminal:
            self.on_change(info.execution)
