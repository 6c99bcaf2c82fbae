"""Leader election over a ``coordination.k8s.io/v1`` Lease: one replica reconciles, the rest stand by.

Several replicas of the service run (SPEC §9, HA) but only one may create runs and push
to Git, or two replicas would race on the same runs and commits.  This module is the
Python counterpart of client-go's ``leaderelection`` package, speaking to the Lease
through our :class:`~reconciler.run.kube.KubeClient` (never the ``kubernetes`` package):

* The Lease spec carries ``holderIdentity``, ``leaseDurationSeconds`` (whole seconds,
  rounded up), ``acquireTime``/``renewTime`` (MicroTime) and ``leaseTransitions``.
* A candidate takes the Lease when it is absent (create; AlreadyExists → judge the
  rival's Lease), held by us, has no holder, or has expired.  Every update is a replace
  carrying the resourceVersion just read, so of two concurrent candidates one wins and
  the other sees Conflict and simply tries again next period.
* Expiry is judged like client-go, on the *local monotonic clock*: a Lease is expired
  when its record (holder, times, duration, transitions) has not changed for
  ``leaseDurationSeconds`` of our own monotonic time since we first observed it.  The
  wall-clock ``renewTime`` is written for humans and other tools but never compared, so
  clock skew between nodes cannot cause two leaders.  The price: a candidate that starts
  while a dead holder's Lease exists waits a full lease duration before taking it.
* The leader renews every ``retry_period``; with no successful renewal for
  ``renew_deadline`` it steps down (``on_stopped_leading``) and campaigns again.  A standby
  waits ``lease_duration`` after it saw our last write; we stop claiming leadership
  ``renew_deadline`` after we *sent* it: the difference is the safety margin.

:attr:`LeaderElector.is_leader` is the fence to check right before every write: it turns
False by itself once the last successful renewal is older than ``renew_deadline``, even
while the election thread is stuck in a hung request.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from reconciler.errors import AlreadyExists, Conflict, KubeError
from reconciler.run.kube import KubeClient
from reconciler.run.kube_api import LEASES

_RECORD_FIELDS = ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds (``2026-11-22T04:06:23.123456Z``)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """``$POD_NAME`` (or the hostname) plus a short random suffix, unique per process."""
    base = os.environ.get("POD_NAME") or socket.gethostname() or "reconciler"
    return f"{base}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    """Campaigns for, holds and releases one Lease from a daemon thread.

    Callbacks run on the election thread and must return promptly (renewals wait for
    them); exceptions from them are logged.  A replica may lead several times, so the
    callbacks alternate, each term ending with exactly one ``on_stopped_leading``.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election needs 0 < retry_period < renew_deadline < lease_duration")
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.clock = clock
        self.monotonic = monotonic
        self.log = logger or logging.getLogger("reconciler.leader")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._release_on_stop = True
        self._leading = False
        self._last_renew = -math.inf  # monotonic time our last successful write was *sent*
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._holder: str | None = None
        self._last_error = ""

    @property
    def is_leader(self) -> bool:
        """True only while we lead and our last successful renewal is younger than renew_deadline."""
        with self._lock:
            return (self._leading and not self._stop.is_set()
                    and self.monotonic() - self._last_renew < self.renew_deadline)

    @property
    def holder(self) -> str | None:
        """The holder identity last seen on the Lease (None: no holder, or not read yet)."""
        return self._holder

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("a LeaderElector runs once; create a new one to campaign again")
        self._thread = threading.Thread(target=self._run, name=f"leader-election-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True, timeout: float = 5.0) -> bool:
        """Stop campaigning; ``is_leader`` is False from this call on.

        The thread then calls ``on_stopped_leading`` (if leading) and, with ``release``,
        hands the Lease over (no holder, ``leaseDurationSeconds: 1``) so a standby takes
        over at its next retry instead of after a full lease duration.  ``release=False``
        leaves the Lease to expire, as a killed process would.  Returns False when the
        thread did not finish within ``timeout`` (e.g. stuck in a hung request).
        """
        self._release_on_stop = release
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._log(logging.WARNING, "leader election thread did not stop in time", timeout=timeout)
            return False
        return True

    # -- the election loop ---------------------------------------------------------------

    def _run(self) -> None:
        self._log(logging.INFO, "campaigning for leadership")
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # the election thread must survive anything
                self._log(logging.ERROR, "leader election round failed unexpectedly", exc_info=True)
            self._stop.wait(self._next_wait())
        try:
            self._finish()
        except Exception:
            self._log(logging.ERROR, "leader election shutdown failed", exc_info=True)

    def _tick(self) -> None:
        self._check_deadline()
        started = self.monotonic()
        renewed = self._try_acquire_or_renew()
        fresh = renewed and self.monotonic() - started < self.renew_deadline
        became = False
        with self._lock:
            if renewed:
                self._last_renew = started
            if fresh and not self._leading and not self._stop.is_set():
                self._leading = became = True
        if became:
            self._log(logging.INFO, "started leading", holder=self.identity)
            self._call(self.on_started_leading)
        elif self._leading and self._holder not in (None, self.identity):
            self._step_down("another replica holds the lease")
        self._check_deadline()

    def _next_wait(self) -> float:
        if self._leading:
            remaining = self.renew_deadline - (self.monotonic() - self._last_renew)
            return max(0.0, min(self.retry_period, remaining))
        return self.retry_period * (1.0 + 0.2 * random.random())  # spread rival candidates apart

    def _check_deadline(self) -> None:
        if self._leading and self.monotonic() - self._last_renew >= self.renew_deadline:
            self._step_down("renew deadline exceeded")

    def _step_down(self, reason: str) -> None:
        with self._lock:
            if not self._leading:
                return
            self._leading = False
        self._log(logging.WARNING, "stopped leading", reason=reason, holder=self._holder)
        self._call(self.on_stopped_leading)

    def _finish(self) -> None:
        self._step_down("stopping")
        if self._release_on_stop and self._holder == self.identity:
            self._release()
        self._log(logging.INFO, "leader election stopped")

    # -- the Lease -----------------------------------------------------------------------

    def _try_acquire_or_renew(self) -> bool:
        try:
            return self._acquire_or_renew()
        except Conflict:
            self._log(logging.DEBUG, "lease changed under us; trying again next period")
            return False
        except KubeError as e:
            message = str(e)
            level = logging.WARNING if message != self._last_error else logging.DEBUG
            self._last_error = message
            self._log(level, "could not acquire or renew the lease", error=message,
                      error_reason=e.reason)
            return False

    def _acquire_or_renew(self) -> bool:
        now = micro_time(self.clock())
        duration = max(1, math.ceil(self.lease_duration))
        lease = self.kube.get_or_none(LEASES, self.namespace, self.name)
        if lease is None:
            spec = {"holderIdentity": self.identity, "leaseDurationSeconds": duration,
                    "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
            try:
                self._observe(self.kube.create(LEASES, self.namespace, body))
                self._last_error = ""
                return True
            except AlreadyExists:  # a rival created it first: judge the rival's Lease
                lease = self.kube.get(LEASES, self.namespace, self.name)
        self._observe(lease)
        old = lease.get("spec") or {}
        holder = old.get("holderIdentity") or None
        if holder is not None and holder != self.identity and not self._expired(old):
            self._last_error = ""
            return False
        spec = {**old, "holderIdentity": self.identity, "leaseDurationSeconds": duration, "renewTime": now}
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + 1
        # replace with the resourceVersion we read: a rival's write in between makes this a Conflict
        self._observe(self.kube.replace(LEASES, self.namespace, self.name, {**lease, "spec": spec}))
        self._last_error = ""
        return True

    def _expired(self, spec: dict[str, Any]) -> bool:
        """Unchanged for leaseDurationSeconds of *our* monotonic time since we first saw it."""
        seconds = int(spec.get("leaseDurationSeconds") or 0)
        return self.monotonic() >= self._observed_at + seconds

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        record = tuple(spec.get(k) for k in _RECORD_FIELDS)
        holder = spec.get("holderIdentity") or None
        with self._lock:
            if record != self._observed:
                self._observed = record
                self._observed_at = self.monotonic()
            previous, self._holder = self._holder, holder
        if holder != previous:
            self._log(logging.INFO, "lease holder changed", holder=holder, previous_holder=previous,
                      transitions=spec.get("leaseTransitions"))

    def _release(self) -> None:
        try:
            lease = self.kube.get_or_none(LEASES, self.namespace, self.name)
            spec = dict((lease or {}).get("spec") or {})
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            now = micro_time(self.clock())
            spec.pop("holderIdentity", None)
            spec.update(leaseDurationSeconds=1, acquireTime=now, renewTime=now)
            self._observe(self.kube.replace(LEASES, self.namespace, self.name, {**lease, "spec": spec}))
            self._log(logging.INFO, "released the lease")
        except KubeError as e:
            self._log(logging.WARNING, "could not release the lease; a standby takes over when it expires",
                      error=str(e))

    def _call(self, callback: Callable[[], None] | None) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:
            self._log(logging.ERROR, "leader election callback failed", exc_info=True)

    def _log(self, level: int, message: str, *, exc_info: bool = False, **fields: Any) -> None:
        extra = {"lease": f"{self.namespace}/{self.name}", "identity": self.identity, **fields}
        self.log.log(level, message, extra=extra, exc_info=exc_info)
