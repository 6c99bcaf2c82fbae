"""The service's jobs: the reconcile cycle, the follow-up of running executions, and what
every cycle's end feeds (metrics, notifications, waiters, the follower, the heap).

    APScheduler ── reconcile job (poll interval, jittered, never two at once, coalesced)
               └── follow job (every few seconds: observe running executions — the poll
                   fallback for the watch)
    RunFollower ── watch events → observe that execution now

:class:`ServiceJobs` is that part of :class:`reconciler.service.app.Service`; the service
assigns every attribute declared here when it is built and schedules the jobs when it
starts.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler

from reconciler.errors import GitError, ReconcilerError
from reconciler.record.transitions import CycleResult
from reconciler.run.follow import RunFollower
from reconciler.service.app_status import ServiceStatus


class HeapTrimmer:
    """Gives the C heap's free pages back to the system after the first cycle, then at most
    once per ``interval`` seconds of cycles.

    The first cycle reads and parses everything (every execution and status file): megabytes
    of short-lived buffers and objects that, once freed, glibc keeps mapped for reuse, so the
    process's resident size stays at that start-up peak forever.  ``malloc_trim(0)`` releases
    every free page of every malloc arena (what pymalloc and the data still hold is
    untouched): at 10 000 executions ~8 MB after start-up.  It frees only memory that is
    free, so nothing the process computes changes; where the C library has no
    ``malloc_trim`` (musl, macOS) this does nothing."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self.trims = 0
        self._last = -math.inf
        self._trim = _malloc_trim()

    def after_cycle(self) -> None:
        now = self.clock()
        if self._trim is None or now - self._last < self.interval:
            return
        self._last = now
        self._trim()
        self.trims += 1


def _malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


class ServiceJobs(ServiceStatus):
    """The reconcile and follow jobs of a running service (see the module docstring)."""

    scheduler: BackgroundScheduler
    follower: RunFollower
    heap: HeapTrimmer
    cycle_done: threading.Condition
    last_result: CycleResult | None
    last_error: str
    _again: threading.Event
    _stopping: threading.Event
    _follower_started: bool

    def reconcile_job(self) -> CycleResult | None:
        """One full cycle (then another at once if a push arrived meanwhile)."""
        result: CycleResult | None = None
        while not self._stopping.is_set() and self.is_leader():
            self._again.clear()
            result = self._cycle(self.reconciler.run_once)
            if not self._again.is_set():
                break
        return result

    def _cycle(self, run: Callable[[], CycleResult]) -> CycleResult:
        commits = self.store.commits
        failures = self.store.failures
        result = run()
        self.cycles += 1
        if result.fetch_seconds is not None:  # a real fetch (a follow-up pins the revision: none)
            fetched = bool(result.revision)  # the fetch step leaves it empty when the fetch failed
            self._git_result(fetched, "" if fetched else next(
                (e for e in result.errors if e.startswith("git:")), "; ".join(result.errors)))
            self.metrics.record_fetch(result.fetch_seconds, fetched)
        self.metrics.record_cycle(result)
        if self.store.failures > failures:
            self.metrics.record_writeback(False)
        elif self.store.commits > commits:
            self.metrics.record_writeback(True, self.store.commits - commits)
        self.last_error = "; ".join(result.errors)[:500]
        self.notifier.observe(result)  # only what the remote holds; never blocks, never raises
        self.heap.after_cycle()
        if result.requeue:  # a chain's predecessor ended: start its dependent now, not at the next poll
            self.trigger()
        self._ensure_follower()
        with self.cycle_done:
            self.last_result = result
            self.cycle_done.notify_all()
        return result

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds after some cycle or follow job (for operators'
        tools and tests)."""
        with self.cycle_done:
            return self.cycle_done.wait_for(predicate, timeout)

    def _notify(self) -> None:
        with self.cycle_done:
            self.cycle_done.notify_all()

    def follow_job(self) -> None:
        """Poll fallback for the watch: observe executions whose runs are in progress; then
        refresh a readiness check that has grown old.  Errors are logged, never raised."""
        if self._stopping.is_set() or not self.is_leader():
            return
        try:
            # before the first cycle has ended there is nothing to follow up that it will not
            # observe itself: loading every recorded state alongside its load (both at their
            # largest then) only raised the process's high-water mark, which it keeps
            running = {n for n, s in self.store.load().items() if s.phase == "Running"} if self.cycles else set()
            if running:
                self._cycle(lambda: self.reconciler.observe_now(running))
        except ReconcilerError as e:
            if isinstance(e, GitError):
                self._git_result(False, str(e))
            self.last_error = str(e)[:500]
            self._warn("follow", "follow-up failed; the next cycle retries", str(e))
        else:
            self._warned.pop("follow", None)
        self._probe()
        self._notify()

    def _followed(self, name: str) -> None:
        if not self._stopping.is_set() and self.is_leader():
            self._cycle(lambda: self.reconciler.observe_now({name}))

    def _ensure_follower(self) -> None:
        if not self._follower_started:
            self._follower_started = True
            self.follower.start()

    def trigger(self) -> None:
        """Run the reconcile job now (or right after the one in progress)."""
        self._again.set()
        if self.scheduler.running:
            self.scheduler.modify_job("reconcile", next_run_time=datetime.now(timezone.utc))
