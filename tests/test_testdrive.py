"""`reconciler testdrive` end to end, as a user runs it: a child process, no cluster.

The walk-through must really happen (runs created, one failing with details, status
commits in the remote, a new execution held by the cooldown), everything printed must be
labelled simulated, the dashboard must serve the recorded status, and SIGINT must end it
with exit 0 and no process left behind.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest

from reconciler.tools import testdrive
from tests.conftest import PROJECT

DONE = "The loop is done"


def _reader(stream: object, lines: queue.Queue[str | None]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose environment carries ``marker`` (ours and any child's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_testdrive_walks_the_loop_serves_the_dashboard_and_stops_on_sigint(tmp_path: Path) -> None:
    marker = f"TESTDRIVE_MARKER={uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": str(PROJECT), marker.split("=")[0]: marker.split("=")[1]}
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "testdrive", "--no-pause",
                             "--fail", "increase-memory-limit:oom"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            line = lines.get(timeout=120)
            assert line is not None, "testdrive ended before the loop was done:\n" + "\n".join(seen)
            seen.append(line)
            if DONE in line:
                break
        text = "\n".join(seen)
        assert all(line.startswith("[simulated] ") for line in seen), text
        # step 1: runs created, one per target (the lock is explained)
        assert "created PipelineRun" in text and "created Job" in text
        assert "ResourceBusy: the lock" in text
        # step 2: the chosen workflow failed, with details; the others succeeded
        assert re.search(r"oom-payment-api-2026-11-14 +Failed +Degraded +\(OOMKilled\)", text), text
        assert re.search(r"crashloop-search-api-2026-11-20 +Completed +Healthy", text), text
        assert "failure details of oom-payment-api-2026-11-14" in text and "exitCode: 137" in text
        # step 4: a new execution on a just-remediated target is held by the cooldown
        assert re.search(r"-again +Skipped +Healthy +\(RecentlyRemediated\)", text), text

        remote = Path(re.search(r"Git remote: (\S+)", text).group(1))  # type: ignore[union-attr]
        log = subprocess.run(["git", "--git-dir", str(remote), "log", "--format=%an|%s", "main"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        status_commits = [entry for entry in log if entry.startswith("kubernaut-reconciler|status:")]
        assert any("Failed oom-payment-api-2026-11-14" in c or "executions changed" in c for c in status_commits)
        assert any(c.startswith("testdrive user|Add ") for c in log)
        shown = subprocess.run(["git", "--git-dir", str(remote), "show", "main:status/oom-payment-api-2026-11-14.yaml"],
                               capture_output=True, text=True, check=True).stdout
        assert "phase: Failed" in shown and "OOMKilled" in shown

        url = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+/)", text).group(1)  # type: ignore[union-attr]
        with urllib.request.urlopen(url + "api/executions", timeout=10) as response:
            rows = {r["name"]: r for r in json.load(response)}
        assert rows["oom-payment-api-2026-11-14"]["phase"] == "Failed"
        assert rows["crashloop-search-api-2026-11-20"]["phase"] == "Completed"
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode()
        assert "simulated" in page and "Simulated cluster" in page

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        rest = []
        while (line := lines.get(timeout=10)) is not None:
            rest.append(line)
        assert rest and all(line.startswith("[simulated] ") for line in rest), rest
        assert "nothing is left running" in rest[-1]
        assert proc.stderr is not None and proc.stderr.read() == ""
        assert _processes_with(marker) == []
        assert not remote.parent.exists()  # its temporary directory is gone too
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize(("specs", "expected"), [
    ((), {}),
    (("increase-memory-limit",), {"increase-memory-limit": "oom"}),
    (("scale-out-hpa:forbidden", "cleanup-node-disk:deadline"), {"scale-out-hpa": "forbidden",
                                                                 "cleanup-node-disk": "deadline"}),
])
def test_fail_flags_name_workflows_and_reasons(specs: tuple[str, ...], expected: dict[str, str]) -> None:
    assert testdrive.parse_failures(specs) == expected


@pytest.mark.parametrize("spec", [":oom", "scale-out-hpa:melted"])
def test_a_bad_fail_flag_is_refused(spec: str) -> None:
    with pytest.raises(testdrive.TestdriveError, match=re.escape(spec)):
        testdrive.parse_failures([spec])


def test_a_repo_without_executions_is_exit_2_and_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "reconciler", "testdrive", "--no-pause", "--repo", str(tmp_path)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(PROJECT)},
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("[simulated] error:") and "nothing to try" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_walkthrough_push_rebases_over_the_reconcilers_status_commits(tmp_path: Path) -> None:
    """The service pushes status commits to the same branch: testdrive's own push of a new
    execution must rebase over them, not fail the walk-through (exit 2)."""
    from reconciler.tools.testdrive import _git, push_rebasing

    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    for name in ("person", "bot"):
        _git(tmp_path, "clone", "-q", str(remote), str(tmp_path / name))
    (tmp_path / "person" / "a.txt").write_text("a\n")
    _git(tmp_path / "person", "add", "a.txt")
    _git(tmp_path / "person", "commit", "-q", "-m", "first")
    _git(tmp_path / "person", "push", "-q", "origin", "HEAD:main")
    _git(tmp_path / "bot", "pull", "-q", "origin", "main")
    (tmp_path / "bot" / "status.txt").write_text("s\n")
    _git(tmp_path / "bot", "add", "status.txt")
    _git(tmp_path / "bot", "commit", "-q", "-m", "status")
    _git(tmp_path / "bot", "push", "-q", "origin", "HEAD:main")  # the person's clone is now behind
    (tmp_path / "person" / "b.txt").write_text("b\n")
    _git(tmp_path / "person", "add", "b.txt")
    _git(tmp_path / "person", "commit", "-q", "-m", "second")
    push_rebasing(tmp_path / "person")
    subjects = _git(remote, "log", "--format=%s", "main").split()
    assert subjects == ["second", "status", "first"]
