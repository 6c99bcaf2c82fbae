"""`reconciler run` as a real child process, for the process-level tests.

Shared by test_process.py and test_guarantees_process.py: one place that writes the config
and kubeconfig, starts the service with its own log file, and kills or stops it the way
Kubernetes (or a crashing node) would.  Each process may get its own bearer token, so the
fake API server records which process made every request (`RecordedRequest.user`), and
its own ``POD_NAME``, which Git hooks of a file:// remote see in their environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from reconciler.simulator import FakeKubeServer
from tests.conftest import PROJECT

NS = "kubernaut-workflows"
TOKEN = "fake-bearer-token-DO-NOT-LOG"
BOT = {"name": "kubernaut-reconciler", "email": "kubernaut-reconciler@users.noreply.invalid"}


def eventually(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Bounded wait for something outside this process (a file, a git ref)."""
    tick = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        tick.wait(0.05)
    return predicate()


class Proc:
    """One `reconciler run` process.  Starting the same ``name`` again reuses its config and
    Git cache (a container restart keeps its emptyDir) and writes a new log file."""

    def __init__(self, tmp: Path, server: FakeKubeServer, remote: Path, name: str, *, leader: bool = False,
                 token: str = TOKEN, cooldown: str | None = None, poll: str = "1s",
                 extra: dict[str, Any] | None = None):
        self.name = name
        kubeconfig = server.write_kubeconfig(tmp / f"kubeconfig-{name}", token=token)
        config: dict[str, Any] = {
            "repository": {"url": f"file://{remote}", "pollInterval": poll, "cacheDir": str(tmp / f"cache-{name}"),
                           "commitAuthor": BOT},
            "execution": {"namespace": NS, **({"cooldown": cooldown} if cooldown else {})},
            "kubernetes": {"kubeconfig": str(kubeconfig)},
            "leaderElection": {"enabled": leader, "leaseDuration": "3s", "renewDeadline": "2s", "retryPeriod": "1s"},
            "server": {"healthAddress": "127.0.0.1:0", "metricsAddress": "127.0.0.1:0",
                       "webhookAddress": "127.0.0.1:0"},
            "logging": {"format": "json", "level": "info"},
            **(extra or {}),
        }
        path = tmp / f"config-{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        runs = 0
        while (tmp / f"{name}{f'.{runs}' if runs else ''}.log").exists():
            runs += 1
        self.log = tmp / f"{name}{f'.{runs}' if runs else ''}.log"
        env = {**os.environ, "POD_NAME": name, "PYTHONPATH": str(PROJECT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("w"), env=env, cwd=tmp)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGSTOP: the process freezes mid-whatever (a GC pause, a node under pressure)."""
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, as Kubernetes sends it (the Deployment grants 60 s before SIGKILL)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("no exit within the grace period:\n" + self.log.read_text()[-3000:]) from None

    def started(self) -> bool:
        return eventually(lambda: any(line.get("msg") == "reconciler started" for line in self.lines()), 30)

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:  # the last line of a killed process may be cut short
                    continue
        return out

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:]
