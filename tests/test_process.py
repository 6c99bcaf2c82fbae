"""`reconciler run` as a real process: SIGKILL mid-cycle and restart, SIGTERM shutdown.

The remote's pre-receive hook holds the status push until the test says so, which pins the
kill exactly between "run created" and "status written" (and, when the hook then accepts,
in the middle of the push).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from reconciler.declare.names import run_name
from reconciler.simulator import FakeKubeServer
from tests.conftest import CATALOG, WorkRepo, execution_yaml, git
from tests.procs import NS, TOKEN, Proc, eventually

TARGET = "payments/Deployment/payment-api"
HOOK = """#!/bin/sh
touch "$GIT_DIR/entered"
while [ ! -f "$GIT_DIR/release" ]; do sleep 0.02; done
cat > /dev/null
exec test -f "$GIT_DIR/accept"
"""


@pytest.fixture
def setup(make_repo: Callable[[str], WorkRepo], tmp_path: Path) -> Iterator[tuple[FakeKubeServer, Path, WorkRepo]]:
    seed = make_repo("seed")
    seed.commit("declare", **{"workflows/w.yaml": CATALOG, "executions/oom.yaml": execution_yaml("oom")})
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    seed.git("push", "-q", str(remote), "main")
    with FakeKubeServer() as server:
        yield server, remote, seed


def remote_phase(remote: Path) -> str | None:
    try:
        return str(yaml.safe_load(git(remote, "show", "main:status/oom.yaml"))["status"]["phase"])
    except Exception:
        return None


@pytest.mark.parametrize("push_lands", [False, True], ids=["killed-before-write-back", "killed-mid-push"])
def test_sigkill_mid_cycle_then_restart(setup: tuple[FakeKubeServer, Path, WorkRepo], tmp_path: Path,
                                        push_lands: bool) -> None:
    server, remote, _ = setup
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    if push_lands:
        (remote / "accept").touch()
    first = Proc(tmp_path, server, remote, "first")
    try:
        assert server.wait_for_object("tekton.dev", "v1", "pipelineruns", NS, run_name(TARGET), timeout=30)
        assert eventually(lambda: (remote / "entered").exists()), "the status push never started"
    finally:
        first.kill()
    (remote / "release").touch()  # the orphaned push now completes or is refused
    hook.unlink()
    second = Proc(tmp_path, server, remote, "second")
    try:
        assert second.started()
        assert eventually(lambda: remote_phase(remote) == "Running", 30), second.log.read_text()[-2000:]
    finally:
        assert second.terminate() == 0
    creates = [r for r in server.requests if r.method == "POST" and r.path.endswith("/pipelineruns")
               and r.status == 201]
    assert len(creates) == 1  # adopted after the restart, never created twice
    assert len(server.list_objects("tekton.dev", "v1", "pipelineruns", NS)) == 1
    for proc in (first, second):
        assert TOKEN not in proc.log.read_text()


def test_sigterm_finishes_and_releases_the_lease(setup: tuple[FakeKubeServer, Path, WorkRepo],
                                                 tmp_path: Path) -> None:
    server, remote, _ = setup
    proc = Proc(tmp_path, server, remote, "pod-a", leader=True)
    try:
        assert proc.started()
        assert eventually(lambda: remote_phase(remote) == "Running", 30), proc.log.read_text()[-2000:]
        lease = server.get_object("coordination.k8s.io", "v1", "leases", "kubernaut-system",
                                  "kubernaut-gitops-reconciler")
        assert lease is not None and str(lease["spec"]["holderIdentity"]).startswith("pod-a")
    finally:
        code = proc.terminate()
    assert code == 0
    lease = server.get_object("coordination.k8s.io", "v1", "leases", "kubernaut-system", "kubernaut-gitops-reconciler")
    assert lease is not None and not lease["spec"].get("holderIdentity")
    messages = [line.get("msg") for line in proc.lines()]
    assert "signal received; shutting down" in messages and "released the lease" in messages
    assert TOKEN not in proc.log.read_text()
