"""Leader election against the fake API server: one leader at a time, prompt and safe handover.

Every candidate talks HTTP to the same FakeKubeServer through the official client, so
the Lease's resourceVersion conflicts are real.  Timings are short (lease 0.6 s, which the
Lease records as 1 whole second; renew deadline 0.4 s; retry 0.1 s).  Tests synchronise on
callbacks and store changes with timeouts; a sampler thread checks throughout every test
that two candidates never claim leadership at once.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from reconciler.run.kube import KubeClient, RetryPolicy
from reconciler.service.leader import LeaderElector, default_identity, micro_time
from reconciler.simulator import FakeKubeServer
from tests.fakekube_client import new_api_client

NS = "kubernaut-system"
LEASE = "reconciler-leader"
LEASE_PATH = rf"/namespaces/{NS}/leases/{LEASE}$"
TIMING = {"lease_duration": 0.6, "renew_deadline": 0.4, "retry_period": 0.1}
LEASE_SECONDS = 1  # ceil(0.6): what the Lease records and what standbys wait for
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class HookedKube(KubeClient):
    """A KubeClient whose next replace can first run a hook (a rival's write, a hang)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.before_replace: list[Callable[[], object]] = []

    def replace(self, res: Any, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.before_replace:
            self.before_replace.pop(0)()
        return super().replace(res, namespace, name, body)


class Recorder:
    """Counts a candidate's callbacks; waits on them; snapshots everyone's is_leader at each."""

    def __init__(self, cluster: Cluster, identity: str) -> None:
        self.cluster = cluster
        self.identity = identity
        self.cond = threading.Condition()
        self.started = 0
        self.stopped = 0
        self.self_leader_at_stop: list[bool] = []

    def on_started(self) -> None:
        others = [e.identity for e in self.cluster.electors if e.identity != self.identity and e.is_leader]
        with self.cond:
            self.cluster.violations.extend(f"{self.identity} started while {o} leads" for o in others)
            self.started += 1
            self.cond.notify_all()
        self.cluster.led.set()

    def on_stopped(self) -> None:
        me = next(e for e in self.cluster.electors if e.identity == self.identity)
        with self.cond:
            self.self_leader_at_stop.append(me.is_leader)
            self.stopped += 1
            self.cond.notify_all()

    def wait_started(self, n: int = 1, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.started >= n, timeout)

    def wait_stopped(self, n: int = 1, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.stopped >= n, timeout)


class Cluster:
    def __init__(self, server: FakeKubeServer, tmp: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.electors: list[LeaderElector] = []
        self.recorders: dict[str, Recorder] = {}
        self.kubes: dict[str, HookedKube] = {}
        self.violations: list[str] = []
        self.done = threading.Event()
        self.led = threading.Event()  # someone has started leading
        self.samples = 0
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def elect(self, identity: str, *, start: bool = True, **kw: Any) -> LeaderElector:
        api = new_api_client(self.server, self.tmp)
        kube = HookedKube(api, retry=RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.01))
        rec = Recorder(self, identity)
        elector = LeaderElector(kube, namespace=NS, name=LEASE, identity=identity,
                                on_started_leading=rec.on_started, on_stopped_leading=rec.on_stopped,
                                **{**TIMING, **kw})
        self.electors.append(elector)
        self.recorders[identity] = rec
        self.kubes[identity] = kube
        if start:
            elector.start()
        return elector

    def lease(self) -> dict[str, Any]:
        lease = self.server.get_object("coordination.k8s.io", "v1", "leases", NS, LEASE)
        assert lease is not None
        spec: dict[str, Any] = lease["spec"]
        return spec

    def wait_lease(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 3.0) -> dict[str, Any]:
        obj = self.server.wait_for_object("coordination.k8s.io", "v1", "leases", NS, LEASE,
                                          lambda o: o is not None and predicate(o.get("spec") or {}), timeout)
        assert obj is not None and predicate(obj["spec"]), f"lease never matched: {obj}"
        spec: dict[str, Any] = obj["spec"]
        return spec

    def _sample(self) -> None:
        """Never two leaders: A, then B, then A again, so a handover between reads is not a false alarm."""
        while not self.done.wait(0.002):
            electors = list(self.electors)
            for a in electors:
                for b in electors:
                    if a is not b and a.is_leader and b.is_leader and a.is_leader:
                        self.violations.append(f"{a.identity} and {b.identity} both lead")
            self.samples += 1


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with FakeKubeServer() as server:
        c = Cluster(server, tmp_path)
        yield c
        c.done.set()
        c.sampler.join(2)
        for elector in c.electors:
            assert elector.stop(timeout=3), f"{elector.identity} did not stop"
        for kube in c.kubes.values():
            kube.api.close()
        assert not c.violations, c.violations


def _parse(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def test_single_candidate_acquires_and_keeps_renewing(cluster: Cluster) -> None:
    a = cluster.elect("a")
    assert cluster.recorders["a"].wait_started()
    assert a.is_leader and a.holder == "a"
    spec = cluster.lease()
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == LEASE_SECONDS
    assert spec["leaseTransitions"] == 0
    assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])
    assert abs(_parse(spec["renewTime"]) - datetime.now(timezone.utc)) < timedelta(seconds=5)
    renewed = cluster.wait_lease(lambda s: s["renewTime"] != spec["renewTime"])
    assert renewed["acquireTime"] == spec["acquireTime"] and renewed["holderIdentity"] == "a"
    assert renewed["leaseTransitions"] == 0 and a.is_leader
    assert cluster.recorders["a"].stopped == 0


def test_two_candidates_never_lead_at_once(cluster: Cluster) -> None:
    a, b = cluster.elect("a"), cluster.elect("b")
    assert cluster.led.wait(5)
    pace, samples = threading.Event(), 0
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        la, lb, la2 = a.is_leader, b.is_leader, a.is_leader
        assert not (la and lb and la2), "both candidates lead"
        samples += 1
        pace.wait(0.002)
    assert samples > 100
    leader, standby = (a, b) if a.is_leader else (b, a)
    assert leader.is_leader and not standby.is_leader
    assert cluster.lease()["holderIdentity"] == leader.identity
    assert standby.holder == leader.identity and leader.holder == leader.identity
    assert cluster.recorders[leader.identity].started == 1 and cluster.recorders[leader.identity].stopped == 0
    assert cluster.recorders[standby.identity].started == 0


def test_standby_takes_over_after_the_leader_dies(cluster: Cluster) -> None:
    a = cluster.elect("a")
    assert cluster.recorders["a"].wait_started()
    b = cluster.elect("b")
    crashed = time.monotonic()
    assert a.stop(release=False)  # like SIGKILL for the Lease: nobody releases it
    assert not a.is_leader and cluster.lease()["holderIdentity"] == "a"
    assert cluster.recorders["b"].wait_started(timeout=LEASE_SECONDS + 1.0)
    elapsed = time.monotonic() - crashed
    assert 0.6 <= elapsed <= LEASE_SECONDS + 1.0, elapsed  # waited for expiry, then took over
    spec = cluster.lease()
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1 and b.is_leader
    assert cluster.recorders["a"].stopped == 1


def test_graceful_release_hands_over_promptly(cluster: Cluster) -> None:
    a = cluster.elect("a")
    assert cluster.recorders["a"].wait_started()
    b = cluster.elect("b")
    released = time.monotonic()
    assert a.stop(release=True)
    assert cluster.recorders["b"].wait_started(timeout=2)
    assert time.monotonic() - released < 0.8  # well before the 1 s expiry
    assert cluster.recorders["a"].stopped == 1 and cluster.recorders["a"].self_leader_at_stop == [False]
    release = [r.body["spec"] for r in cluster.server.requests
               if r.method == "PUT" and r.status == 200 and "holderIdentity" not in r.body["spec"]]
    assert release and release[0]["leaseDurationSeconds"] == 1 and MICRO_TIME.match(release[0]["renewTime"])
    spec = cluster.lease()
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1 and b.is_leader


def test_leader_steps_down_during_an_outage_and_comes_back(cluster: Cluster) -> None:
    a = cluster.elect("a")
    rec = cluster.recorders["a"]
    assert rec.wait_started()
    acquired = cluster.lease()["acquireTime"]
    fault = cluster.server.inject(path_regex=LEASE_PATH, status=503, times=None)
    broke = time.monotonic()
    assert rec.wait_stopped(timeout=2)
    assert time.monotonic() - broke >= 0.25  # tolerated until the renew deadline
    assert not a.is_leader and rec.self_leader_at_stop == [False] and fault.hits > 0
    fault.remove()
    assert rec.wait_started(2, timeout=3)
    assert a.is_leader and rec.stopped == 1
    spec = cluster.lease()  # still ours throughout: no transition, same acquireTime
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 0 and spec["acquireTime"] == acquired


def test_rival_write_between_read_and_write_takes_the_lease(cluster: Cluster) -> None:
    a = cluster.elect("a")
    rec = cluster.recorders["a"]
    assert rec.wait_started()

    def steal(obj: dict[str, Any]) -> None:
        now = micro_time(datetime.now(timezone.utc))
        obj["spec"].update(holderIdentity="intruder", leaseDurationSeconds=30, acquireTime=now, renewTime=now,
                           leaseTransitions=1)

    cluster.kubes["a"].before_replace.append(
        lambda: cluster.server.modify_object("coordination.k8s.io", "v1", "leases", NS, LEASE, steal))
    assert rec.wait_stopped(timeout=2)
    assert not a.is_leader and a.holder == "intruder"
    assert any(r.method == "PUT" and r.status == 409 for r in cluster.server.requests)
    assert cluster.lease()["holderIdentity"] == "intruder"  # a waits for the intruder's lease to expire


def test_harmless_concurrent_update_is_retried(cluster: Cluster) -> None:
    a = cluster.elect("a")
    rec = cluster.recorders["a"]
    assert rec.wait_started()

    def annotate(obj: dict[str, Any]) -> None:
        obj["metadata"].setdefault("annotations", {})["touched"] = "yes"

    cluster.kubes["a"].before_replace.append(
        lambda: cluster.server.modify_object("coordination.k8s.io", "v1", "leases", NS, LEASE, annotate))
    assert cluster.server.wait_for(lambda: any(r.method == "PUT" and r.status == 409
                                               for r in cluster.server.requests), 3)
    before = cluster.lease()["renewTime"]
    after = cluster.wait_lease(lambda s: s["renewTime"] != before)  # the next renewal succeeds
    assert after["holderIdentity"] == "a" and a.is_leader and rec.stopped == 0 and rec.started == 1


def test_fence_drops_while_the_leader_is_stuck_in_a_request(cluster: Cluster) -> None:
    a = cluster.elect("a")
    assert cluster.recorders["a"].wait_started()
    stuck, unblock = threading.Event(), threading.Event()

    def hang() -> None:
        stuck.set()
        unblock.wait(10)

    cluster.kubes["a"].before_replace.append(hang)
    b = cluster.elect("b")
    try:
        assert stuck.wait(2)
        assert cluster.recorders["b"].wait_started(timeout=LEASE_SECONDS + 1.5)
        # a's thread is still inside its renew: no callback yet, but the fence is already down
        assert not a.is_leader and b.is_leader and cluster.recorders["a"].stopped == 0
    finally:
        unblock.set()
    assert cluster.recorders["a"].wait_stopped(timeout=2)  # its stale write conflicts
    assert cluster.lease()["holderIdentity"] == "b" and not a.is_leader


def test_timings_are_validated_and_identities_unique() -> None:
    with pytest.raises(ValueError):
        LeaderElector(None, namespace=NS, name=LEASE, identity="x",  # type: ignore[arg-type]
                      lease_duration=1, renew_deadline=2, retry_period=0.1)
    with pytest.raises(ValueError):
        LeaderElector(None, namespace=NS, name=LEASE, identity="", **TIMING)  # type: ignore[arg-type]
    assert default_identity() != default_identity()


def test_default_identity_uses_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "reconciler-7d9f-abcde")
    assert re.fullmatch(r"reconciler-7d9f-abcde_[0-9a-f]{8}", default_identity())
