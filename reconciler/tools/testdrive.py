"""``reconciler testdrive``: the whole loop on one machine, with no cluster and no network.

A newcomer cannot see the product do its job (execution → run → status committed back)
without a cluster.  This module wires the *real* service (:class:`reconciler.service.app.Service`)
to the simulated Kubernetes API of :mod:`reconciler.simulator` (the one the tests use, with
its Tekton and Job controllers) and to a local bare Git remote seeded from a copy of
``examples-repo/`` (or ``--repo PATH``; the user's directory is never modified), then walks
through the loop, each step real:

1. the first cycle creates runs (locks: one run per target; the rest wait);
2. the simulator finishes them: one succeeds, one fails (``--fail WORKFLOW[:REASON]``)
   and the failure details are shown;
3. the status commits appear in the remote (its ``git log`` is shown);
4. a new execution is merged into the remote and picked up; an execution on a target
   that just ran is held by the cooldown.

Everything it prints carries ``[simulated]`` and the dashboard shows a "simulated" banner:
nothing here touched a cluster.  Ctrl-C (SIGINT) or SIGTERM stops the service, the
simulator and the HTTP servers and exits 0; everything lives in threads of this process,
so nothing is left running.  What the simulated cluster holds and how a run is finished
are :mod:`reconciler.tools.testdrive_cluster`'s.
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.safetext import safe_line
from reconciler.service import logs
from reconciler.service.app import Service
from reconciler.service.config import load_config
from reconciler.simulator import FakeKubeServer, JobSimulator, TektonSimulator
from reconciler.simulator.schema import tekton_dir
from reconciler.source import gitcmd
from reconciler.tools.testdrive_cluster import (
    DEFAULT_REASON,
    EXECUTION_LABEL,
    JOB_REASONS,
    NAMESPACE,
    TEKTON_REASONS,
    WORKFLOW_LABEL,
    finish_run,
    list_runs,
    still_running,
    table_lines,
)

TAG = "[simulated]"
BANNER = "Simulated cluster: reconciler testdrive — no Kubernetes cluster is involved"
BOT = {"name": "kubernaut-reconciler", "email": "kubernaut-reconciler@users.noreply.invalid"}
USER = ("testdrive user", "testdrive@users.noreply.invalid")


class TestdriveError(Exception):
    """A bad flag or an unusable repository: one line for the user, exit 2."""


def parse_failures(specs: Sequence[str]) -> dict[str, str]:
    """``WORKFLOW[:REASON]`` flags → {workflowId: reason}; TestdriveError on an unknown reason."""
    out: dict[str, str] = {}
    for spec in specs:
        workflow, _, reason = spec.partition(":")
        workflow, reason = workflow.strip(), (reason.strip() or DEFAULT_REASON)
        if not workflow:
            raise TestdriveError(f"--fail {spec!r}: give a workflowId, e.g. --fail increase-memory-limit:oom")
        if reason not in TEKTON_REASONS and reason not in JOB_REASONS:
            known = ", ".join(sorted(set(TEKTON_REASONS) | set(JOB_REASONS)))
            raise TestdriveError(f"--fail {spec!r}: unknown reason {reason!r} (known: {known})")
        out[workflow] = reason
    return out


def packaged_examples() -> Path | None:
    """``examples-repo/`` of the checkout this package runs from, if there is one."""
    candidate = Path(__file__).resolve().parents[2] / "examples-repo"
    return candidate if (candidate / "executions").is_dir() else None


def _git(cwd: Path, *args: str) -> str:
    env_args = ["-c", f"user.name={USER[0]}", "-c", f"user.email={USER[1]}", "-c", "commit.gpgsign=false",
                "-c", "init.defaultBranch=main"]
    done = gitcmd.run([*env_args, *args], cwd=cwd, text=True, check=False)
    if done.returncode != 0:
        raise TestdriveError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def push_rebasing(tree: Path, attempts: int = 20) -> None:
    """Push as a person does: the reconciler pushes status commits to the same branch, so a
    push may be refused as non-fast-forward; rebase onto what is there and push again."""
    for attempt in range(attempts):
        try:
            _git(tree, "pull", "-q", "--rebase", "origin", "main")
            _git(tree, "push", "-q", "origin", "main")
            return
        except TestdriveError:
            if attempt == attempts - 1:
                raise


def seed_remote(source: Path, workdir: Path) -> tuple[Path, Path]:
    """Copy ``source`` (never modified) into a new repository, push it to a bare remote."""
    if not (source / "executions").is_dir() and not (source / "workflows").is_dir():
        raise TestdriveError(f"{source}: no executions/ or workflows/ directory: nothing to try")
    tree = workdir / "work"
    shutil.copytree(source, tree, ignore=shutil.ignore_patterns(".git"), symlinks=True)
    remote = workdir / "remote.git"
    _git(workdir, "init", "-q", "--bare", str(remote))
    _git(tree, "init", "-q")
    _git(tree, "checkout", "-q", "-b", "main")
    _git(tree, "add", "-A")
    _git(tree, "commit", "-q", "-m", "testdrive: the repository as it was given")
    _git(tree, "remote", "add", "origin", str(remote))
    _git(tree, "push", "-q", "origin", "main")
    return tree, remote


@dataclass
class Options:
    source: Path
    failures: dict[str, str] = field(default_factory=dict)
    pause: bool = True
    port: int = 0
    hold: bool = True  # after the walk-through, keep serving until Ctrl-C
    keep: bool = False


class Testdrive:
    """One testdrive: the simulator, the remote, the service; :meth:`close` undoes all of it."""

    def __init__(self, options: Options, out: Callable[[str], None]) -> None:
        self.options = options
        self.out = out
        self.stop = threading.Event()
        self.workdir = Path(tempfile.mkdtemp(prefix="reconciler-testdrive-"))
        self.server: FakeKubeServer | None = None
        self.tekton: TektonSimulator | None = None
        self.jobs: JobSimulator | None = None
        self.service: Service | None = None
        self.finished: set[str] = set()

    def say(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.out(f"{TAG} {safe_line(line)}")

    # -- setup -------------------------------------------------------------------------

    def start(self) -> None:
        # the service's own log goes to a file: every line on the terminal is the walk-through's
        handler = logging.FileHandler(self.workdir / "reconciler.log")
        handler.setFormatter(logs.TextFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self.tree, self.remote = seed_remote(self.options.source, self.workdir)
        self.server = FakeKubeServer().start()
        # auto_start: a created run starts at once; it finishes when the walk-through says so
        self.tekton = TektonSimulator(self.server, auto_start=True)
        self.jobs = JobSimulator(self.server, auto_start=True)
        kubeconfig = self.server.write_kubeconfig(self.workdir / "kubeconfig")
        config = {
            "repository": {"url": f"file://{self.remote}", "pollInterval": "2s",
                           "cacheDir": str(self.workdir / "cache"), "commitAuthor": BOT},
            "execution": {"namespace": NAMESPACE, "cooldown": "10m"},
            "kubernetes": {"kubeconfig": str(kubeconfig)},
            "leaderElection": {"enabled": False},
            "server": {"healthAddress": "127.0.0.1:0", "metricsAddress": "127.0.0.1:0",
                       "webhookAddress": f"127.0.0.1:{self.options.port}"},
        }
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        self.service = Service(load_config(path, environ={}), follow_interval=1.0)
        self.service.banner = BANNER  # type: ignore[attr-defined]  # read by the dashboard
        self.service.start()
        web = next(s for s in self.service.servers if s.name == "webhook")
        schemas = tekton_dir()
        self.say(f"Kubernetes API: {self.server.url} — a simulator in this process with Tekton and Job "
                 "controllers; no cluster is used")
        self.say("Tekton schemas: " + (f"{schemas} (unknown fields are pruned as a cluster would)" if schemas
                                       else "not found (set RECONCILER_TEKTON_CRDS to a directory of Tekton's "
                                            "300-*.yaml CRDs to prune unknown fields)"))
        self.say(f"Git remote: {self.remote} (a copy of {self.options.source})")
        self.say(f"Dashboard: http://127.0.0.1:{web.port}/ (labelled simulated)")
        self.say(f"Work files and the service's log: {self.workdir}")
        if any((self.tree / "status").glob("*.yaml")):
            self.say("status/ holds files the reconciler's identity did not commit: they are history only, "
                     "so those executions are reconciled afresh")

    def close(self) -> None:
        if self.service is not None:
            self.service.stop()
        for sim in (self.tekton, self.jobs):
            if sim is not None:
                sim.close()
        if self.server is not None:
            self.server.stop()
        if not self.options.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- what the service did ------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        assert self.service is not None
        return self.service.executions()

    def runs(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(kind, plural, object) of every run in the simulated namespace."""
        assert self.server is not None
        return list_runs(self.server)

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> bool:
        assert self.service is not None
        done = self.service.wait_for(lambda: predicate() or self.stop.is_set(), timeout)
        if self.stop.is_set():
            return False
        if not done:
            self.say(f"gave up waiting for {what} after {timeout:.0f}s (see the log in {self.workdir})")
        return done and not self.stop.is_set()

    def pause(self) -> bool:
        if not self.options.pause:
            return not self.stop.is_set()
        self.out(f"{TAG} press Enter to continue (Ctrl-C stops everything)")
        with suppress(EOFError):
            input()
        return not self.stop.is_set()

    def table(self) -> None:
        for line in table_lines(self.rows()):
            self.say(line)

    def git_log(self) -> None:
        self.say(f"$ git --git-dir {self.remote} log --oneline -5 main")
        for line in _git(self.remote, "log", "--oneline", "-5", "main").splitlines():
            self.say("  " + line)

    def phase_of(self, name: str) -> str:
        return next((str(r["phase"]) for r in self.rows() if r["name"] == name), "")

    # -- the walk-through ----------------------------------------------------------------

    def walk(self) -> bool:
        """The loop, step by step; False when interrupted or a step never happened."""
        self.say("Step 1: the reconciler reads the repository and creates runs (one per target: locks)")
        if not self.wait(lambda: bool(self.service and self.service.cycles >= 1) and bool(self.running()),
                         "the first runs"):
            return False
        for kind, _, obj in self.runs():
            labels = obj["metadata"].get("labels") or {}
            self.say(f"  created {kind} {obj['metadata']['name']} for {labels.get(EXECUTION_LABEL, '?')} "
                     f"({labels.get(WORKFLOW_LABEL, '?')})")
        self.table()
        if not self.pause():
            return False
        failures = dict(self.options.failures)
        running = self.running()
        if not failures and running:
            workflow = str(running[0][2]["metadata"]["labels"].get(WORKFLOW_LABEL, ""))
            failures[workflow] = DEFAULT_REASON
            self.say(f"no --fail given: runs of {workflow} fail ({DEFAULT_REASON}) to show failure details")
        self.say("Step 2: the simulated controllers finish the runs")
        if not self.finish_running(failures):
            return False
        self.table()
        for row in self.rows():
            if row["phase"] == "Failed" and row["declared"]:
                detail = self.service.execution(str(row["name"])) if self.service else None
                details = (detail or {}).get("failureDetails") or {}
                self.say(f"  failure details of {row['name']}:")
                for key, value in details.items():
                    self.say(f"    {key}: {value}")
        if not self.pause():
            return False
        self.say("Step 3: the status commits are in the remote")
        self.git_log()
        if not self.pause():
            return False
        return self.merge_new_execution()

    def running(self) -> list[tuple[str, str, dict[str, Any]]]:
        return still_running(self.runs(), self.finished)

    def finish_running(self, failures: dict[str, str]) -> bool:
        """Finish every running run (repeatedly: a run waiting on a lock starts when one ends)."""
        assert self.tekton is not None and self.jobs is not None
        for _ in range(20):
            batch = self.running()
            if not batch:
                break
            for kind, _, obj in batch:
                name = str(obj["metadata"]["name"])
                labels = obj["metadata"].get("labels") or {}
                workflow, execution = labels.get(WORKFLOW_LABEL, ""), labels.get(EXECUTION_LABEL, name)
                reason = failures.get(workflow)
                self.finished.add(name)
                finish_run(self.tekton, self.jobs, kind, name, reason)
                self.say(f"  {kind} {name} ({execution}): {'failed: ' + reason if reason else 'succeeded'}")
            names = {str(o[2]["metadata"]["labels"].get(EXECUTION_LABEL, "")) for o in batch}
            if not self.wait(lambda names=names: all(self.phase_of(n) in ("Completed", "Failed") for n in names)  # type: ignore[misc]
                             and self.store_clean(), "the status of the finished runs"):
                return False
            # a run that waited on a lock may start in the next cycle: give it one
            assert self.service is not None
            cycles = self.service.cycles
            self.service.trigger()
            if not self.wait(lambda cycles=cycles: self.service is not None and self.service.cycles > cycles,  # type: ignore[misc]
                             "a cycle"):
                return False
        return True

    def store_clean(self) -> bool:
        return self.service is not None and not self.service.store.pending

    def merge_new_execution(self) -> bool:
        assert self.service is not None
        done = [r for r in self.rows() if r["phase"] == "Completed" and r["declared"]]
        if not done:
            self.say("Step 4 skipped: no execution completed, so there is nothing to repeat")
            return True
        model = done[0]
        revision = self.service.reconciler.last_revision
        execution = self.service.source.load(revision).find(str(model["name"])) if revision else None
        if execution is None:
            return True
        source = self.tree / execution.file
        document = yaml.safe_load(source.read_text())
        again = f"{model['name'][:40]}-again"
        document["metadata"]["name"] = again
        new_file = source.with_name(f"{again}.yaml")
        new_file.write_text(yaml.safe_dump(document, sort_keys=False))
        self.say(f"Step 4: a new execution, {again} (same workflow and target as {model['name']}), is merged")
        _git(self.tree, "add", str(new_file.relative_to(self.tree)))
        _git(self.tree, "commit", "-q", "-m", f"Add {again}")
        push_rebasing(self.tree)
        self.service.trigger()
        if not self.wait(lambda: self.phase_of(again) not in ("", "Pending") or
                         any(r["name"] == again and r["reason"] not in ("", "NotYetReconciled") for r in self.rows()),
                         "the new execution to be picked up"):
            return False
        self.table()
        self.say("the cooldown holds it: the same target was remediated minutes ago (execution.cooldown)")
        self.git_log()
        return True


@contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(options: Options, out: Callable[[str], None] = print) -> int:
    """The testdrive; 0 when it ran (or was interrupted), 1 when a step never happened."""
    drive = Testdrive(options, out)
    ok = True
    try:
        with _signals(drive.stop):
            try:
                drive.start()
                ok = drive.walk()
                if options.hold and not drive.stop.is_set():
                    drive.say("The loop is done. The service keeps running: change files in "
                              f"{drive.tree}, commit and push to see them picked up. Ctrl-C stops everything.")
                    drive.stop.wait()
            except KeyboardInterrupt:
                drive.stop.set()
    finally:
        drive.say("stopping the service and the simulated cluster")
        drive.close()
    if drive.stop.is_set():
        drive.say("stopped; nothing is left running")
        return 0
    return 0 if ok else 1
