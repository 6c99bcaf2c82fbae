"""The delivery queue (reconciler.service.delivery): what is queued after a cycle, in which order it
leaves, what survives a restart — against the fake forge over real HTTP, with a real Git
repository for the declarations (their commits are where statuses go).

Pure rules (backoff, rate-limit headers, the bounded queue, ids, change times) are tables.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from reconciler.declare.declared import Declaration
from reconciler.record.status import Condition, ExecutionState, RunRef
from reconciler.record.transitions import CycleResult
from reconciler.service.delivery import Notifier
from reconciler.service.delivery_event import Event, changed_at, event_id
from reconciler.service.delivery_queue import admit
from reconciler.service.delivery_sink import backoff, classify_http, rate_limit_delay
from reconciler.service.forges import ForgeStatuses, ForgeTarget
from reconciler.service.metrics import Metrics
from reconciler.service.outbound import Response
from reconciler.source.gitsource import GitSource
from tests.conftest import CATALOG, WorkRepo, execution_yaml
from tests.fakeforge import FakeForge

TOKEN = "ghp_DeliveryTestToken0123456789abcdefXYZ"
SECRETS = (TOKEN,)
TARGET = "payments/Deployment/payment-api"
NS = "kubernaut-workflows"


@pytest.fixture(autouse=True)
def _no_delivery_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__}"
        for secret in SECRETS:
            assert secret not in text, f"a credential reached the log: {record.getMessage()[:200]}"


# -- helpers shared with test_forges / test_notify ------------------------------------------------

@dataclass
class Declared:
    decl: Declaration
    revision: str
    commits: dict[str, str]  # execution → the commit that declared it


def declare(tmp: Path, *names: str, labels: str = "") -> Declared:
    repo = WorkRepo(tmp / "repo")
    repo.commit("catalog", **{"workflows/w.yaml": CATALOG})
    commits = {}
    for index, name in enumerate(names):
        extra = f"  labels: {{{labels}}}\n" if labels else ""
        text = execution_yaml(name, target=f"ns{index}/Deployment/app" if index else TARGET)
        if extra:
            text = text.replace(f"  name: {name}\n", f"  name: {name}\n{extra}")
        commits[name] = repo.commit(f"declare {name}", **{f"executions/{name}.yaml": text})
    source = GitSource(str(repo.path), cache_dir=tmp / "cache")
    revision = source.fetch()
    return Declared(source.load(revision), revision, commits)


def state(name: str, phase: str, reason: str = "", *, at: datetime | None = None,
          failure: dict[str, Any] | None = None, target: str = TARGET) -> ExecutionState:
    at = (at or datetime.now(timezone.utc)).replace(microsecond=0)
    started = phase in ("Running", "Completed", "Failed") and reason != "ConfigurationError"
    return ExecutionState(
        name=name, phase=phase, reason=reason, message=f"{phase} at {at.isoformat()}", target=target,
        workflow="increase-memory-limit@1.2.0",
        execution_ref=RunRef("PipelineRun", NS, "wfe-0123456789abcdef") if started else None,
        start_time=at if started else None, completion_time=at if phase in ("Completed", "Failed", "Skipped") else None,
        failure_details=failure or {}, conditions=(Condition("Ready", "False", reason or phase, "", at),))


def result(declared: Declared, *states: ExecutionState) -> CycleResult:
    return CycleResult(declared.revision, {s.name: s for s in states}, [], [], declared.decl, False, 0.0)


class Durable:
    """The store's answer: which states the remote holds (all, unless told otherwise)."""

    def __init__(self) -> None:
        self.missing: set[str] = set()

    def __call__(self, name: str, state: ExecutionState) -> bool:
        return name not in self.missing


def github_sink(forge: FakeForge, name: str = "github") -> ForgeStatuses:
    return ForgeStatuses(name, ForgeTarget("github", forge.api_url, forge.repository), lambda: TOKEN)


def notifier(sinks: list[Any], tmp: Path, **kw: Any) -> Notifier:
    kw.setdefault("durable", Durable())
    kw.setdefault("base_delay", 0.05)
    kw.setdefault("max_delay", 0.2)
    kw.setdefault("timeout", 5.0)
    return Notifier(sinks, state_file=tmp / "deliveries.json", **kw)


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    with FakeForge("github", token=TOKEN) as f:
        yield f


# -- pure ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("attempt", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (50, 300.0)])
def test_backoff(attempt: int, expected: float) -> None:
    assert backoff(attempt, base=1.0, cap=300.0) == expected


NOW = 1_800_000_000.0


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "99999"}, 3600.0),  # capped at an hour
    ({"retry-after": "Fri, 15 Jan 2027 08:00:30 GMT"}, 30.0 + (datetime(2027, 1, 15, 8, 0, tzinfo=timezone.utc).timestamp() - NOW)),
    ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 20)}, 21.0),  # one second of slack
    ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) - 5)}, 1.0),  # already passed: soon
    ({"ratelimit-remaining": "0", "ratelimit-reset": str(int(NOW) + 2)}, 3.0),  # GitLab's names
    ({"x-ratelimit-remaining": "12", "x-ratelimit-reset": str(int(NOW) + 20)}, None),  # not exhausted
    ({"retry-after": "soon"}, None),
    ({}, None),
])
def test_rate_limit_delay(headers: dict[str, str], expected: float | None) -> None:
    delay = rate_limit_delay(headers, NOW)
    if expected is None or expected >= 3600:
        assert delay == expected or (expected is not None and delay == 3600.0)
    else:
        assert delay == pytest.approx(min(expected, 3600.0))


@pytest.mark.parametrize(("response", "kind", "delay"), [
    (Response(201), "delivered", 0.0),
    (Response(204), "delivered", 0.0),
    (Response(None, error="connection refused"), "retry", 4.0),
    (Response(503), "retry", 4.0),
    (Response(500, body=b'{"message":"boom"}'), "retry", 4.0),
    (Response(429, {"retry-after": "9"}), "retry", 9.0),
    (Response(429), "retry", 4.0),  # no header: our own backoff
    (Response(401, body=b'{"message":"Bad credentials"}'), "retry", 4.0),  # a rotated Secret heals it
    (Response(403), "retry", 4.0),
    (Response(404), "drop", 0.0),
    (Response(422, body=b'{"message":"No commit found for SHA"}'), "drop", 0.0),
    (Response(400), "drop", 0.0),
    (Response(302, {"location": "https://elsewhere.example/"}), "drop", 0.0),  # redirects are not followed
])
def test_classify_http(response: Response, kind: str, delay: float) -> None:
    outcome = classify_http(response, 3, NOW, base=1.0, cap=300.0)
    assert (outcome.kind, outcome.delay) == (kind, delay)
    if response.status == 422:
        assert "No commit found" in outcome.why


def _item(name: str, n: int) -> dict[str, Any]:
    return {"event": {"execution": name, "n": n}}


@pytest.mark.parametrize(("queued", "new", "limit", "kept", "dropped"), [
    ([("a", 1)], ("a", 2), 5, [("a", 1), ("a", 2)], []),
    ([("a", 1), ("b", 1)], ("c", 1), 2, [("b", 1), ("c", 1)], [("a", 1)]),  # nothing superseded: the oldest
    ([("a", 1), ("b", 1)], ("b", 2), 2, [("a", 1), ("b", 2)], [("b", 1)]),  # b's older item is superseded
    ([("a", 1), ("a", 2), ("b", 1)], ("c", 1), 3, [("a", 2), ("b", 1), ("c", 1)], [("a", 1)]),
    ([("a", 1)], ("a", 2), 1, [("a", 2)], [("a", 1)]),  # the newest is never the one dropped
])
def test_admit_bounds_the_queue(queued: list[tuple[str, int]], new: tuple[str, int], limit: int,
                                kept: list[tuple[str, int]], dropped: list[tuple[str, int]]) -> None:
    queue, lost = admit([_item(*q) for q in queued], _item(*new), limit)
    assert [(q["event"]["execution"], q["event"]["n"]) for q in queue] == kept
    assert [(q["event"]["execution"], q["event"]["n"]) for q in lost] == dropped


@pytest.mark.parametrize(("a", "b", "same"), [
    (("x", "Failed", "OOMKilled"), ("x", "Failed", "OOMKilled"), True),
    (("x", "Failed", "OOMKilled"), ("x", "Failed", "TaskFailed"), False),
    (("x", "Running", ""), ("y", "Running", ""), False),
    (("x", "Pending", ""), ("x", "Running", ""), False),
])
def test_event_id_depends_only_on_the_transition(a: tuple[str, str, str], b: tuple[str, str, str], same: bool) -> None:
    assert (event_id(*a) == event_id(*b)) is same


def test_changed_at_is_the_latest_recorded_time() -> None:
    t0 = datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc)
    s = ExecutionState(name="x", phase="Completed", start_time=t0, completion_time=t0 + timedelta(minutes=3),
                       conditions=(Condition("Ready", "True", "Completed", "", t0 + timedelta(minutes=4)),))
    assert changed_at(s) == t0 + timedelta(minutes=4)
    assert changed_at(ExecutionState(name="x")) is None


# -- the queue against the fake forge ---------------------------------------------------------------

def test_one_status_per_transition_none_on_an_unchanged_cycle(tmp_path: Path, forge: FakeForge) -> None:
    d = declare(tmp_path, "oom")
    n = notifier([github_sink(forge)], tmp_path)
    n.start()
    try:
        for s in (state("oom", "Pending"), state("oom", "Pending"), state("oom", "Running"),
                  state("oom", "Running"), state("oom", "Completed"), state("oom", "Completed")):
            n.observe(result(d, s))
        assert n.wait_empty(10)
        n.observe(result(d, state("oom", "Completed")))
    finally:
        n.stop()
    sha = d.commits["oom"]
    assert forge.seen("kubernaut/oom") == [(sha, "pending"), (sha, "pending"), (sha, "success")]
    descriptions = [s["description"] for s in forge.statuses]
    assert descriptions == ["merged; waiting to start", "running wfe-0123456789abcdef",
                            "completed: run wfe-0123456789abcdef"]
    assert forge.count() == 3  # nothing else was sent, not even a retry


def test_only_durable_states_are_announced(tmp_path: Path, forge: FakeForge) -> None:
    """A state whose push failed is not announced; the first cycle that finds it on the remote is."""
    d = declare(tmp_path, "oom")
    durable = Durable()
    n = notifier([github_sink(forge)], tmp_path, durable=durable)
    n.start()
    try:
        n.observe(result(d, state("oom", "Pending")))
        assert n.wait_empty(10) and len(forge.statuses) == 1
        durable.missing.add("oom")
        n.observe(result(d, state("oom", "Running")))  # the push failed: not on the remote
        n.observe(result(d, state("oom", "Failed", "OOMKilled")))  # still not
        assert n.depth("github") == 0 and len(forge.statuses) == 1
        durable.missing.clear()
        n.observe(result(d, state("oom", "Failed", "OOMKilled")))  # pushed at last
        assert forge.wait_for(lambda: len(forge.statuses) == 2)
    finally:
        n.stop()
    assert [s for _, s in forge.seen()] == ["pending", "failure"]  # Running never reached the remote


def test_forge_down_for_several_cycles_then_in_order_without_duplicates(tmp_path: Path, forge: FakeForge) -> None:
    d = declare(tmp_path, "oom", "disk")
    metrics = Metrics()
    n = notifier([github_sink(forge)], tmp_path, metrics=metrics)
    forge.down = True
    n.start()
    try:
        cycles = [(state("oom", "Pending"), state("disk", "Pending", target="ns1/Deployment/app")),
                  (state("oom", "Running"), state("disk", "Pending", target="ns1/Deployment/app")),
                  (state("oom", "Completed"), state("disk", "Running", target="ns1/Deployment/app")),
                  (state("oom", "Completed"), state("disk", "Failed", "OOMKilled", target="ns1/Deployment/app",
                                                    failure={"wasExecutionFailure": True,
                                                             "failedTaskName": "patch",
                                                             "failedStepName": "apply"}))]
        for states in cycles:
            n.observe(result(d, *states))  # returns at once: nothing waits for the forge
        assert forge.wait_for(lambda: forge.count(503) >= 3)
        assert forge.statuses == [] and n.depth("github") == 6
        forge.down = False
        assert n.wait_empty(10) and len(forge.statuses) == 6
    finally:
        n.stop()
    assert forge.seen("kubernaut/oom") == [(d.commits["oom"], s) for s in ("pending", "pending", "success")]
    assert forge.seen("kubernaut/disk") == [(d.commits["disk"], s) for s in ("pending", "pending", "failure")]
    assert forge.statuses[-1]["description"] == "failed: OOMKilled in patch / apply"
    exposition = metrics.exposition().decode()
    assert 'kubernaut_reconciler_deliveries_total{result="sent",sink="github"} 6.0' in exposition
    assert 'kubernaut_reconciler_delivery_queue_depth{sink="github"} 0.0' in exposition
    failed = next(line for line in exposition.splitlines()
                  if line.startswith('kubernaut_reconciler_deliveries_total{result="failed",sink="github"}'))
    assert float(failed.split()[-1]) >= 3


def test_restart_in_the_middle_of_a_backlog(tmp_path: Path, forge: FakeForge) -> None:
    """Delivered items are not resent; the undelivered ones and the transition that happened
    while the process was down are sent, in order."""
    d = declare(tmp_path, "oom")
    forge.down = True
    first = notifier([github_sink(forge)], tmp_path)
    for s in (state("oom", "Pending"), state("oom", "Running")):
        first.observe(result(d, s))
    first.start()
    forge.down = False
    assert forge.wait_for(lambda: len(forge.statuses) >= 1)
    forge.down = True  # down again, mid-backlog
    first.stop()
    delivered_before = len(forge.statuses)
    assert 1 <= delivered_before <= 2
    saved = json.loads((tmp_path / "deliveries.json").read_text())
    assert len(saved["queue"]["github"]) == 2 - delivered_before
    assert TOKEN not in (tmp_path / "deliveries.json").read_text()
    assert not (tmp_path / "deliveries.json.tmp").exists()

    forge.down = False
    second = notifier([github_sink(forge)], tmp_path)
    second.start()
    try:
        second.observe(result(d, state("oom", "Completed")))  # happened while we were down
        assert second.wait_empty(10)
        second.observe(result(d, state("oom", "Completed")))
    finally:
        second.stop()
    assert [s for _, s in forge.seen()] == ["pending", "pending", "success"]  # no repeat, none lost

    third = notifier([github_sink(forge)], tmp_path)  # and once more: all delivered, nothing resent
    third.start()
    try:
        third.observe(result(d, state("oom", "Completed")))
        assert third.depth("github") == 0
    finally:
        third.stop()
    assert len(forge.statuses) == 3


def test_first_pass_of_a_new_replica_does_not_replay_history(tmp_path: Path, forge: FakeForge) -> None:
    d = declare(tmp_path, "old", "fresh")
    long_ago = datetime.now(timezone.utc) - timedelta(hours=5)
    n = notifier([github_sink(forge)], tmp_path, replay_window=600.0)
    n.start()
    try:
        n.observe(result(d, state("old", "Completed", at=long_ago),
                         state("fresh", "Failed", "OOMKilled", target="ns1/Deployment/app")))
        assert n.wait_empty(10)
        n.observe(result(d, state("old", "Completed", at=long_ago),
                         state("fresh", "Failed", "OOMKilled", target="ns1/Deployment/app")))
        assert n.depth("github") == 0
    finally:
        n.stop()
    assert forge.seen() == [(d.commits["fresh"], "failure")]


def test_a_backlog_from_an_old_term_is_dropped(tmp_path: Path, forge: FakeForge) -> None:
    """A replica that stood by while another led must not send its stale queue."""
    d = declare(tmp_path, "oom")
    now = [datetime.now(timezone.utc).timestamp()]
    forge.down = True
    first = notifier([github_sink(forge)], tmp_path, clock=lambda: now[0])
    first.observe(result(d, state("oom", "Pending")))
    first.stop()
    now[0] += 3600  # an hour later this replica leads again
    forge.down = False
    second = notifier([github_sink(forge)], tmp_path, clock=lambda: now[0], replay_window=600.0)
    second.start()
    try:
        completed = state("oom", "Completed", at=datetime.fromtimestamp(now[0], timezone.utc))
        second.observe(result(d, completed))
        assert second.wait_empty(10)
    finally:
        second.stop()
    assert [s for _, s in forge.seen()] == ["success"]


def test_a_standby_never_sends(tmp_path: Path, forge: FakeForge) -> None:
    d = declare(tmp_path, "oom")
    leader = [False]
    n = notifier([github_sink(forge)], tmp_path, is_leader=lambda: leader[0])
    n.start()
    try:
        n.observe(result(d, state("oom", "Pending")))
        assert not forge.wait_for(lambda: forge.count() > 0, timeout=1.5)
        leader[0] = True
        assert n.wait_empty(10) and len(forge.statuses) == 1
    finally:
        n.stop()


def test_a_full_queue_drops_superseded_items_first(tmp_path: Path, forge: FakeForge) -> None:
    d = declare(tmp_path, "oom")
    metrics = Metrics()
    forge.down = True
    n = notifier([github_sink(forge)], tmp_path, queue_size=2, metrics=metrics)
    for s in (state("oom", "Pending"), state("oom", "Running"), state("oom", "Completed")):
        n.observe(result(d, s))
    assert n.depth("github") == 2
    forge.down = False
    n.start()
    try:
        assert n.wait_empty(10)
    finally:
        n.stop()
    assert [s for _, s in forge.seen()] == ["pending", "success"]  # the last transition is never the one lost
    assert 'kubernaut_reconciler_deliveries_total{result="dropped",sink="github"} 1.0' in metrics.exposition().decode()
    assert n.deliveries("oom")[0]["result"] == "delivered"


def test_a_refused_status_is_dropped_and_shown(tmp_path: Path) -> None:
    d = declare(tmp_path, "oom")
    with FakeForge("github", token=TOKEN, commits=[]) as forge:  # the forge does not have the commit
        n = notifier([github_sink(forge)], tmp_path)
        n.start()
        try:
            n.observe(result(d, state("oom", "Pending")))
            assert n.wait_empty(10) and forge.count(422) == 1
        finally:
            n.stop()
    shown = n.deliveries("oom")
    assert shown[0]["result"] == "dropped" and "422" in shown[0]["error"] and "No commit found" in shown[0]["error"]
    assert forge.count() == 1  # a permanent refusal is not retried


def test_events_survive_json() -> None:
    e = Event(event_id("x", "Failed", "OOMKilled"), "x", "Running", "Failed", "OOMKilled", labels={"team": "a"},
              was_execution_failure=True, status={"phase": "Failed"})
    assert Event.from_json(json.loads(json.dumps(e.to_json()))) == e
