"""Status write-back to real bare remotes: one commit per cycle, never forced, nothing lost."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from reconciler.errors import GitError
from reconciler.record.status import ExecutionState
from reconciler.record.transitions import Transition
from reconciler.record.writeback import GitStatusStore, Identity
from reconciler.source.gitsource import GitSource
from tests.conftest import CATALOG, WorkRepo, execution_yaml, git


class Remote:
    """A bare repository that refuses non-fast-forward updates and logs every ref update."""

    def __init__(self, root: Path, seed: WorkRepo):
        self.path = root / "remote.git"
        git(root, "init", "-q", "--bare", "-b", "main", str(self.path))
        git(self.path, "config", "receive.denyNonFastForwards", "true")
        git(self.path, "config", "receive.denyDeletes", "true")
        hook = self.path / "hooks" / "post-receive"
        hook.write_text("#!/bin/sh\ncat >> \"$GIT_DIR/updates.log\"\n")
        hook.chmod(0o755)
        seed.git("push", "-q", str(self.path), "main")
        self.url = f"file://{self.path}"

    def updates(self) -> list[tuple[str, str]]:
        log = self.path / "updates.log"
        if not log.exists():
            return []
        return [(line.split()[0], line.split()[1]) for line in log.read_text().splitlines() if line.strip()]

    def log(self, *args: str) -> str:
        return git(self.path, "log", *args)

    def show(self, path: str, ref: str = "main") -> str:
        return git(self.path, "show", f"{ref}:{path}")


@pytest.fixture
def remote(make_repo: Callable[[str], WorkRepo], tmp_path: Path) -> Remote:
    seed = make_repo("seed")
    seed.commit("declare", **{"workflows/w.yaml": CATALOG, "executions/oom.yaml": execution_yaml("oom")})
    return Remote(tmp_path, seed)


@pytest.fixture
def store(remote: Remote, tmp_path: Path) -> Iterator[GitStatusStore]:
    source = GitSource(remote.url, cache_dir=tmp_path / "cache")
    yield GitStatusStore(source, identity=Identity("kubernaut-bot", "bot@example.invalid"),
                         base_delay=0.001, max_delay=0.01)


def state(name: str, phase: str = "Running", reason: str = "Running", **kw: object) -> ExecutionState:
    return ExecutionState(name=name, phase=phase, reason=reason, message=f"{name} is {phase}",
                          workflow="increase-memory-limit@1.2.0", target="payments/Deployment/x", **kw)  # type: ignore[arg-type]


def test_one_commit_per_save_with_message_and_trailers(store: GitStatusStore, remote: Remote) -> None:
    before = remote.log("-1", "--format=%H")
    transitions = [Transition("oom", "", "Running", "Running", "m", "payments/Deployment/x", "wfe-1"),
                   Transition("other", "", "Pending", "Suspended", "m", "t", "")]
    store.save({"oom": state("oom"), "other": state("other", "Pending", "Suspended")}, transitions, "abc123")
    assert remote.log("--format=%H", f"{before}..main").count("\n") == 0  # exactly one new commit
    message = remote.log("-1", "--format=%B")
    assert "status: 2 executions changed" in message
    assert "- oom: new → Running (Running, run wfe-1)" in message
    assert "- other: new → Pending (Suspended)" in message
    assert "Reconciled-Revision: abc123" in message and "Executions-Changed: 2" in message
    assert remote.log("-1", "--format=%an <%ae>|%cn") == "kubernaut-bot <bot@example.invalid>|kubernaut-bot"
    doc = yaml.safe_load(remote.show("status/oom.yaml"))
    assert doc["kind"] == "WorkflowExecutionStatus" and doc["status"]["phase"] == "Running"
    assert remote.show("executions/oom.yaml").startswith("apiVersion")  # foreign files untouched


def test_a_status_commit_stays_packed_in_the_cache(store: GitStatusStore) -> None:
    """The commit's objects stay in fast-import's pack: unpacked, each status commit left the
    whole status/ tree as a loose object in the cache (390 KB at 10 000 files)."""
    store.save({"oom": state("oom")}, [], "r")  # the cache exists from here on
    cache = store.source.cache_path

    def loose() -> int:
        return int(git(cache, "count-objects").split()[0])

    before = loose()
    store.save({"oom": state("oom", "Completed", "Succeeded")}, [], "r")
    assert store.source._git().log("-1", "--format=%s", "refs/kgr/status/main").startswith("status:")
    assert loose() == before


def test_what_was_pushed_is_not_parsed_again_by_the_next_process(store: GitStatusStore, remote: Remote,
                                                                  tmp_path: Path) -> None:
    """The verdicts on the files the bot just pushed reach the parse store beside the cache, so a
    restart on the same cache reads them from there instead of parsing every status file again."""
    store.save({"oom": state("oom"), "other": state("other", "Pending", "Suspended")}, [], "r")
    again = GitSource(remote.url, cache_dir=tmp_path / "cache")
    decl = again.load(again.fetch())
    assert sorted(decl.statuses) == ["oom", "other"]
    assert again.parsed.status_docs.parses == 0


def test_no_commit_when_nothing_changed(store: GitStatusStore, remote: Remote) -> None:
    store.save({"oom": state("oom")}, [], "r1")
    tip = remote.log("-1", "--format=%H")
    store.save({"oom": state("oom")}, [], "r2")
    assert remote.log("-1", "--format=%H") == tip and store.commits == 1
    store.save({"oom": state("oom", "Completed", "Succeeded")}, [], "r3")
    assert store.commits == 2 and "status: update oom" in remote.log("-1", "--format=%s")


def test_a_save_serialises_only_the_states_that_are_new_objects(store: GitStatusStore, remote: Remote,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A cycle hands the store the same state objects it was given last time, but for the few
    that changed: only those are checked and serialised again (10 000 otherwise, every cycle).
    A changed state under a kept name is still written; a bad name is refused every time."""
    states = {f"e{i}": state(f"e{i}") for i in range(5)}
    store.save(states, [], "r1")
    serialised = []
    real = store._serialise

    def counting(name: str, st: ExecutionState) -> tuple[bytes | None, str]:
        serialised.append(name)
        return real(name, st)

    store._serialise = counting  # type: ignore[method-assign]
    store.save(dict(states), [], "r2")  # the same objects: nothing checked or written again
    assert serialised == [] and store.commits == 1
    moved = {**states, "e3": state("e3", "Completed", "Succeeded"), "Bad_Name": state("Bad_Name")}
    with caplog.at_level("ERROR", logger="reconciler.writeback"):
        store.save(moved, [], "r3")
        store.save(dict(moved), [], "r4")
    assert serialised == ["e3"] and store.commits == 2
    assert yaml.safe_load(remote.show("status/e3.yaml"))["status"]["phase"] == "Completed"
    assert [r.message for r in caplog.records].count(
        "status not written: the name is not a valid execution name") == 2
    assert "Bad_Name" not in git(remote.path, "ls-tree", "--name-only", "main", "status/")


def test_sub_path_and_status_branch(remote: Remote, tmp_path: Path) -> None:
    source = GitSource(remote.url, path="team-a", cache_dir=tmp_path / "c2")
    store = GitStatusStore(source, branch="status", base_delay=0.001)
    store.save({"oom": state("oom")}, [], "r")
    assert yaml.safe_load(remote.show("team-a/status/oom.yaml", "status"))["metadata"]["name"] == "oom"
    assert "status" not in git(remote.path, "ls-tree", "--name-only", "main")  # main untouched


def test_states_are_read_back_after_a_restart(store: GitStatusStore, remote: Remote, tmp_path: Path) -> None:
    store.save({"oom": state("oom", "Completed", "Succeeded")}, [], "r")
    fresh = GitStatusStore(GitSource(remote.url, cache_dir=tmp_path / "other-cache"), identity=store.identity)
    loaded = fresh.load()
    assert loaded["oom"].phase == "Completed"
    fresh.save(loaded, [], "r")  # same content → no new commit
    assert fresh.commits == 0


def test_only_the_bots_own_commits_are_read_back(store: GitStatusStore, remote: Remote, tmp_path: Path) -> None:
    """A status file committed by anyone else is not evidence of anything (SPEC §10)."""
    store.save({"oom": state("oom", "Completed", "Succeeded")}, [], "r")
    stranger = GitStatusStore(GitSource(remote.url, cache_dir=tmp_path / "c4"),
                              identity=Identity("someone-else", "else@example.invalid"))
    assert stranger.load() == {}


def test_unreachable_remote_keeps_the_change_pending(remote: Remote, tmp_path: Path) -> None:
    source = GitSource(remote.url, cache_dir=tmp_path / "c3")
    store = GitStatusStore(source, attempts=2, base_delay=0.001)
    store.load()
    hidden = remote.path.with_name("hidden.git")
    remote.path.rename(hidden)
    with pytest.raises(GitError):
        store.save({"oom": state("oom")}, [], "r")
    assert store.pending and store.failures == 1
    hidden.rename(remote.path)
    store.save({"oom": state("oom")}, [], "r")  # repaired on the next cycle
    assert not store.pending and yaml.safe_load(remote.show("status/oom.yaml"))["status"]["phase"] == "Running"


def test_concurrent_foreign_pushes_lose_nothing(remote: Remote, tmp_path: Path) -> None:
    """20 foreign pushes race with write-backs: every status change lands exactly once,
    every foreign commit survives, and every update of main is a fast-forward."""
    # a human pushing as fast as git allows is far more contention than real life: give the
    # store the retries it would spread over seconds in production
    store = GitStatusStore(GitSource(remote.url, cache_dir=tmp_path / "cache"), attempts=60,
                           base_delay=0.005, max_delay=0.05)
    clone = tmp_path / "human"
    git(tmp_path, "clone", "-q", remote.url, str(clone))
    git(clone, "config", "user.email", "sre@example.invalid")
    git(clone, "config", "user.name", "SRE")
    errors: list[BaseException] = []
    started = threading.Event()

    def foreign() -> None:
        try:
            started.set()
            for i in range(20):
                (clone / "notes").mkdir(exist_ok=True)
                (clone / "notes" / f"n{i}.md").write_text(f"note {i}\n")
                git(clone, "add", "-A")
                git(clone, "commit", "-q", "-m", f"foreign {i}")
                for _ in range(50):  # a human's `git pull --rebase && git push` loop
                    try:
                        git(clone, "push", "-q", "origin", "HEAD:main")
                        break
                    except Exception:
                        git(clone, "pull", "-q", "--rebase", "origin", "main")
                else:
                    raise AssertionError("foreign push never landed")
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=foreign)
    thread.start()
    started.wait(5)
    phases = ["Pending", "Running", "Completed"]
    expected: dict[str, str] = {}
    for round_ in range(6):
        states = {f"e{i}": state(f"e{i}", phases[(round_ + i) % 3], "r") for i in range(5)}
        store.save(states, [], f"rev{round_}")
        expected = {n: s.phase for n, s in states.items()}
    thread.join(60)
    assert not errors, errors
    subjects = remote.log("--format=%s", "main").splitlines()
    assert sorted(s for s in subjects if s.startswith("foreign")) == sorted(f"foreign {i}" for i in range(20))
    assert sum(1 for s in subjects if s.startswith("status:")) == store.commits == 6
    for name, phase in expected.items():
        assert yaml.safe_load(remote.show(f"status/{name}.yaml"))["status"]["phase"] == phase
    for old, new in remote.updates():  # fast-forwards only: no force push ever happened
        if set(old) != {"0"}:
            git(remote.path, "merge-base", "--is-ancestor", old, new)


def test_changed_status_on_remote_is_rewritten_not_skipped(store: GitStatusStore, remote: Remote,
                                                           tmp_path: Path) -> None:
    """Someone edits a status file by hand: the next change to it restores the truth."""
    store.save({"oom": state("oom")}, [], "r")
    clone = tmp_path / "editor"
    git(tmp_path, "clone", "-q", remote.url, str(clone))
    (clone / "status" / "oom.yaml").write_text("hand edited\n")
    git(clone, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "hand edit")
    git(clone, "push", "-q", "origin", "HEAD:main")
    store.save({"oom": replace(state("oom"), message="still running")}, [], "r2")
    assert yaml.safe_load(remote.show("status/oom.yaml"))["status"]["message"] == "still running"


def test_files_just_pushed_are_not_read_back_and_checked_again(store: GitStatusStore, remote: Remote,
                                                                tmp_path: Path) -> None:
    """After a push of many status files, the next listing starts from our own commit: a human
    commit on top costs what it changed, not a re-read of every file the bot just wrote (after
    10 000 runs were created, that re-read made the next cycle take seconds)."""
    store.save({f"e{i}": state(f"e{i}") for i in range(30)}, [], "r1")
    docs = store.source.parsed.status_docs
    human = tmp_path / "human"
    git(tmp_path, "clone", "-q", remote.url, str(human))
    (human / "executions" / "oom.yaml").write_text(execution_yaml("oom", params="{NAMESPACE: other}"))
    git(human, "commit", "-qam", "edit oom")
    git(human, "push", "-q", "origin", "main")
    before = docs.parses
    store.refresh()
    assert docs.parses == before  # nothing under status/ changed since our push: nothing parsed
    assert store.durable("e7", state("e7")) and store.ignored == {}
    (human / "status" / "e3.yaml").write_text("not: a status\n")
    git(human, "commit", "-qam", "break e3")
    git(human, "push", "-q", "origin", "main")
    store.refresh()
    assert docs.parses == before + 1  # exactly the one file the human changed
    assert list(store.ignored) == ["status/e3.yaml"] and not store.durable("e3", state("e3"))


def test_the_listing_brought_forward_names_what_a_fresh_one_does(store: GitStatusStore, remote: Remote,
                                                                 tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Each refresh lists what changed since the last tip (and only judges those files); after
    every step — a file broken, another one added broken, the first mended, one deleted, a
    directory where a file was, our own push on top — what it holds and what it ignores are
    exactly what a store that lists the tip from scratch finds."""
    store.save({f"e{i}": state(f"e{i}") for i in range(6)}, [], "r1")
    human = tmp_path / "human"
    git(tmp_path, "clone", "-q", remote.url, str(human))

    def push(message: str) -> None:
        git(human, "add", "-A")
        git(human, "commit", "-qm", message)
        git(human, "push", "-q", "origin", "main")

    def same_as_fresh(k: int) -> None:
        store.refresh()
        fresh = GitStatusStore(GitSource(remote.url, cache_dir=tmp_path / f"fresh-{k}"))
        fresh.refresh()
        assert store.ignored == fresh.ignored
        assert store._tip_blobs == fresh._tip_blobs

    good = (human / "status" / "e1.yaml").read_text()
    steps = [
        lambda: (human / "status" / "e1.yaml").write_text("not: a status\n"),
        lambda: (human / "status" / "e9.yaml").write_text("::: broken\n"),
        lambda: (human / "status" / "e1.yaml").write_text(good),
        lambda: (human / "status" / "e2.yaml").unlink(),
        lambda: ((human / "status" / "e3.yaml").unlink(), (human / "status" / "e3.yaml").mkdir(),
                 (human / "status" / "e3.yaml" / "x").write_text("x\n")),
    ]
    for k, step in enumerate(steps):
        step()
        push(f"step {k}")
        same_as_fresh(k)
        assert ("status/e1.yaml" in store.ignored) == (k in (0, 1))
    assert set(store.ignored) == {"status/e9.yaml", "status/e3.yaml"}
    # our push on top: e2 restored, e4 written; e3's path holds a directory now, which a
    # status commit never replaces — that one file is not written, the rest are
    with caplog.at_level("ERROR", logger="reconciler.writeback"):
        store.save({**store.load(), "e4": state("e4", "Completed", "Succeeded")}, [], "r2")
    assert [getattr(r, "execution", "") for r in caplog.records if "regular file" in r.message] == ["e3"]
    assert git(remote.path, "diff", "--name-only", "main~1", "main").split() == ["status/e2.yaml", "status/e4.yaml"]
    assert not store.durable("e3", store.load()["e3"]) and store.durable("e2", store.load()["e2"])
    git(human, "pull", "-q", "--rebase")
    (human / "status" / "e9.yaml").unlink()
    push("mend e9")
    same_as_fresh(len(steps))
    assert list(store.ignored) == ["status/e3.yaml"]
