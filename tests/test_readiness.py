"""Readiness tells the truth while executions run (issue 8).

Follow-ups observe running executions at a pinned revision: they fetch nothing, so they
prove nothing about Git, and a failed API call in one of them is not a successful read.
These tests run the whole service (real Git remote, real HTTP, the fake API server through
the official client) with a short grace period and a fast follow job, keep an execution
Running, and cut Git or the API server off.  Every wait is woken by the service's own
cycle and follow-job notifications (``Service.wait_for``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from reconciler.errors import Conflict, Forbidden, Invalid, KubeError, NotFound, Unavailable
from reconciler.service.app import Service
from reconciler.service.app_status import ApiWitness
from tests.conftest import WorkRepo, execution_yaml

from .test_service import World, service_world

GRACE = 3.0
OPTIONS = {"readiness_grace": GRACE, "follow_interval": 0.2}
WAIT = 60.0


@pytest.fixture
def world(make_repo: Callable[[str], WorkRepo], tmp_path: Path) -> Iterator[World]:
    with service_world(make_repo("seed"), tmp_path) as w:
        yield w


def running(world: World) -> Service:
    """A service whose one execution is Running (Tekton never finishes it)."""
    svc = world.service("solo", options=OPTIONS)
    world.push(**{"executions/oom.yaml": execution_yaml("oom")})
    svc.trigger()
    assert svc.wait_for(lambda: (world.remote_status("oom") or {}).get("status", {}).get("phase") == "Running",
                        WAIT)
    return svc


def readyz(svc: Service) -> httpx.Response:
    return httpx.get(f"{svc.servers[0].url}/readyz", timeout=10)


def gauges(svc: Service) -> tuple[str, str]:
    text = httpx.get(f"{svc.servers[1].url}/metrics", timeout=10).text
    line = {name: next(ln.split()[1] for ln in text.splitlines() if ln.startswith(f"kubernaut_reconciler_{name} "))
            for name in ("git_reachable", "kube_reachable")}
    return line["git_reachable"], line["kube_reachable"]


def stays_ready(svc: Service, span: float) -> list[bool]:
    """svc.ready() after every cycle and follow job for ``span`` seconds of follow-ups only."""
    seen: list[bool] = []
    start = time.monotonic()

    def observe() -> bool:
        seen.append(svc.ready()[0])
        return time.monotonic() - start > span

    assert svc.wait_for(observe, WAIT)
    return seen


def test_an_api_outage_turns_readiness_503_while_an_execution_runs(world: World) -> None:
    svc = running(world)
    # the interval job does not run (1h): only follow-ups and their checks keep readiness
    seen = stays_ready(svc, 2 * GRACE)
    assert len(seen) > 3 and all(seen)  # no flapping while everything is reachable
    assert readyz(svc).status_code == 200 and gauges(svc) == ("1.0", "1.0")
    fault = world.server.inject(path_regex=r"/(pipelineruns|jobs)(/|$|\?)", status=503, times=None)
    assert svc.wait_for(lambda: not svc.ready()[0], WAIT)
    r = readyz(svc)
    assert r.status_code == 503 and r.json()["reason"].startswith("kubernetes API unreachable")
    assert gauges(svc) == ("1.0", "0.0")  # Git is still fine, and said so
    assert httpx.get(f"{svc.servers[0].url}/healthz", timeout=10).status_code == 200
    fault.remove()
    assert svc.wait_for(lambda: svc.ready()[0], WAIT)
    assert readyz(svc).status_code == 200 and gauges(svc) == ("1.0", "1.0")


def test_a_git_outage_turns_readiness_503_while_an_execution_runs(world: World) -> None:
    svc = running(world)
    seen = stays_ready(svc, 2 * GRACE)
    assert len(seen) > 3 and all(seen)
    hidden = world.remote.with_name("hidden.git")
    world.remote.rename(hidden)
    try:
        assert svc.wait_for(lambda: not svc.ready()[0], WAIT)
        r = readyz(svc)
        assert r.status_code == 503
        assert r.json()["reason"].startswith("git unreachable: fetch from")
        assert gauges(svc) == ("0.0", "1.0")  # the API server is still fine
    finally:
        hidden.rename(world.remote)
    assert svc.wait_for(lambda: svc.ready()[0], WAIT)
    assert readyz(svc).status_code == 200 and gauges(svc) == ("1.0", "1.0")


def test_a_quiet_service_stays_ready_between_long_polls(world: World) -> None:
    """Nothing runs and the poll interval (1h) dwarfs the grace: the follow job's checks
    keep readiness true while Git and the API server answer."""
    svc = world.service("solo", options=OPTIONS)
    assert svc.wait_for(lambda: svc.cycles >= 1, WAIT)
    seen = stays_ready(svc, 2 * GRACE)
    assert len(seen) > 3 and all(seen) and svc.cycles == 1
    assert readyz(svc).status_code == 200


def test_a_follow_job_that_cannot_read_the_status_branch_logs_a_warning(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hidden = world.remote.with_name("hidden.git")
    world.remote.rename(hidden)  # from the start: the status branch was never read
    svc = world.service("solo", options=OPTIONS)

    def warned() -> bool:
        return any(r.getMessage() == "follow-up failed; the next cycle retries" for r in caplog.records)

    try:
        assert svc.wait_for(warned, WAIT)
        warnings = [r for r in caplog.records if r.getMessage() == "follow-up failed; the next cycle retries"
                    and r.levelno == logging.WARNING]
        assert warnings and all("fetch from" in w.__dict__["error"] for w in warnings)
        assert len({w.__dict__["error"] for w in warnings}) == len(warnings)  # a repeat is not re-warned
        # no traceback, and the scheduler saw the job return normally
        assert not [r for r in caplog.records
                    if r.exc_info or (r.name.startswith("apscheduler") and r.levelno >= logging.ERROR)]
        r = readyz(svc)
        assert r.status_code == 503 and r.json()["reason"].startswith("git unreachable")
    finally:
        hidden.rename(world.remote)
    svc.trigger()
    assert svc.wait_for(lambda: svc.ready()[0], WAIT)
    assert readyz(svc).status_code == 200


class _Answers:
    """A cluster whose list_runs answers or raises ``error``."""

    namespace = "ns"

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def list_runs(self) -> dict[str, dict[str, object]]:
        if self.error is not None:
            raise self.error
        return {}


@pytest.mark.parametrize(("error", "answered"), [
    (None, True),
    (NotFound("GET x: not found", status=404), True),  # an answer about an object is an answer
    (Conflict("PUT x: conflict", status=409), True),
    (Invalid("POST x: invalid", status=422), True),
    (Unavailable("GET x: API server unreachable: ConnectionRefusedError"), False),
    (Unavailable("GET x: HTTP 503", status=503), False),
    (Forbidden("forbidden: the reconciler may not list pipelineruns", status=403), False),
    (KubeError("GET x: Unauthorized", status=401), False),
])
def test_the_api_witness_counts_answers_not_attempts(error: Exception | None, answered: bool) -> None:
    witness = ApiWitness(_Answers(error))  # type: ignore[arg-type]
    before = witness.last_ok
    if error is None:
        assert witness.list_runs() == {}
    else:
        with pytest.raises(type(error)):
            witness.list_runs()
    assert (witness.last_ok > before) is answered
    assert (witness.last_error == "") is answered
