"""Git's object formats written by hand (source.gitpack) agree with git itself.

Every expectation here comes from the real ``git``: the tree ids ``git mktree`` gives, the
pack ``git verify-pack`` and ``git fsck`` accept, the objects ``git cat-file`` reads back.
Then the status write-back that uses them: a commit whose status tree was put together in
place checks out like fast-import's, and one that does not check out is never pushed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.record.status import ExecutionState
from reconciler.record.writeback import GitStatusStore
from reconciler.source.gitpack import TreeEntries, object_id, pack_objects, write_pack
from reconciler.source.gitsource import GitSource
from tests.conftest import CATALOG, WorkRepo, execution_yaml, git


def _bare(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


def _hash(repo: Path, kind: str, data: bytes) -> str:
    return subprocess.run(["git", "hash-object", "-w", "-t", kind, "--stdin"], cwd=repo, input=data,
                          capture_output=True, check=True).stdout.decode().strip()


def _mktree(repo: Path, entries: dict[str, tuple[str, str]]) -> str:
    """git's own tree of ``entries`` (name → (mode, id)): mktree sorts them itself."""
    kinds = {"100644": "blob", "100755": "blob", "120000": "blob", "040000": "tree", "160000": "commit"}
    text = "".join(f"{mode} {kinds[mode]} {oid}\t{name}\n" for name, (mode, oid) in entries.items())
    return subprocess.run(["git", "mktree", "--missing"], cwd=repo, input=text.encode(), capture_output=True,
                          check=True).stdout.decode().strip()


def _raw_tree(repo: Path, tree: str) -> bytes:
    return subprocess.run(["git", "cat-file", "tree", tree], cwd=repo, capture_output=True, check=True).stdout


NAME = st.text(alphabet="ab-._0", min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.dictionaries(NAME, st.sampled_from(["100644", "040000", "120000"]), max_size=12),
       put=st.lists(NAME, min_size=1, max_size=5))
def test_a_tree_with_files_put_in_is_the_tree_git_makes(tmp_path_factory: pytest.TempPathFactory,
                                                        before: dict[str, str], put: list[str]) -> None:
    """Names that sort around each other ("a", "a-b", "a.b", "a/" as a directory), a file
    replacing a file, a symlink or a directory: the id and the bytes are git's."""
    repo = _bare(tmp_path_factory.mktemp("mk") / "r.git")
    blob, empty = _hash(repo, "blob", b"old\n"), _hash(repo, "tree", b"")
    entries = {n: (mode, empty if mode == "040000" else blob) for n, mode in before.items()}
    tree = _mktree(repo, entries)
    parsed = TreeEntries.parse(_raw_tree(repo, tree))
    assert parsed.raw() == _raw_tree(repo, tree) and len(parsed) == len(entries)
    for k, name in enumerate(put):
        new = object_id("blob", f"new {k}\n".encode())
        parsed.put_file(name.encode(), new)
        entries[name] = ("100644", new.hex())
    expected = _mktree(repo, entries)
    assert object_id("tree", parsed.raw()).hex() == expected
    assert parsed.raw() == _raw_tree(repo, expected)


@pytest.mark.parametrize("raw", [
    b"100644 a\0" + b"x" * 19,  # truncated id
    b"100644 b\0" + b"x" * 20 + b"100644 a\0" + b"y" * 20,  # out of order
    b"100644 a\0" + b"x" * 20 + b"100644 a\0" + b"y" * 20,  # twice
    b"10x644 a\0" + b"x" * 20,  # not a mode
    b"100644 \0" + b"x" * 20,  # no name
    b"100644a\0" + b"x" * 20,  # no space
])
def test_a_tree_that_is_not_well_formed_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        TreeEntries.parse(raw)


def test_a_pack_written_here_is_one_git_reads_and_checks(tmp_path: Path) -> None:
    repo = _bare(tmp_path / "r.git")
    blobs = [f"status {i}\n".encode() * (i + 1) for i in range(3)] + [b"x" * 70_000]  # multi-byte sizes
    tree = TreeEntries([])
    for i, data in enumerate(blobs):
        tree.put_file(f"e{i}.yaml".encode(), object_id("blob", data))
    objects = [("blob", data) for data in blobs] + [("tree", tree.raw())]
    name, pack, index = pack_objects(objects)
    write_pack(repo / "objects" / "pack", name, pack, index)
    verified = git(repo, "verify-pack", "-v", str(repo / "objects" / "pack" / f"pack-{name}.idx"))
    assert verified.splitlines()[-1].endswith(f"pack-{name}.pack: ok")  # index and pack agree, every id
    tree_id = object_id("tree", tree.raw()).hex()
    assert git(repo, "ls-tree", "--name-only", tree_id).split() == ["e0.yaml", "e1.yaml", "e2.yaml", "e3.yaml"]
    assert git(repo, "cat-file", "-p", object_id("blob", blobs[3]).hex()) == "x" * 70_000
    git(repo, "fsck", "--strict", "--no-dangling")  # raises on any bad object
    assert git(repo, "count-objects", "-v").splitlines()[0] == "count: 0"  # packed, nothing loose
    assert not list((repo / "objects" / "pack").glob("tmp_pack_*"))


def test_the_same_object_twice_is_refused() -> None:
    with pytest.raises(ValueError):
        pack_objects([("blob", b"a"), ("blob", b"a")])


# -- the write-back that uses them -------------------------------------------------------

def _state(name: str, phase: str = "Running") -> ExecutionState:
    return ExecutionState(name=name, phase=phase, reason=phase, message=f"{name} is {phase}",
                          workflow="increase-memory-limit@1.2.0", target="payments/Deployment/x")


@pytest.fixture
def store(make_repo, tmp_path: Path) -> GitStatusStore:  # type: ignore[no-untyped-def]
    seed: WorkRepo = make_repo("seed")
    seed.commit("declare", **{"workflows/w.yaml": CATALOG, "executions/oom.yaml": execution_yaml("oom"),
                              "status/README.md": "not a status file\n"})
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    seed.git("push", "-q", str(remote), "main")
    return GitStatusStore(GitSource(f"file://{remote}", cache_dir=tmp_path / "cache"), base_delay=0.001)


def _remote(store: GitStatusStore) -> Path:
    return Path(store.source.url.removeprefix("file://"))


def test_status_commits_put_their_files_into_the_kept_tree(store: GitStatusStore) -> None:
    """After the first, status commits name a tree put together in place; each changes exactly
    its files (the check), and the remote's tree is the one git would have made."""
    for k in range(4):
        store.save({f"e{i}": _state(f"e{i}", "Completed" if i < k else "Running") for i in range(5)}, [], f"r{k}")
    assert store.commits == 4 and store._trees.spliced >= 2
    remote = _remote(store)
    listed = git(remote, "ls-tree", "main", "status/")
    assert [line.split("\t")[1] for line in listed.splitlines()] == \
        ["status/README.md"] + [f"status/e{i}.yaml" for i in range(5)]
    rebuilt = _mktree(remote, {line.split("\t")[1].removeprefix("status/"): (line.split()[0], line.split()[2])
                               for line in listed.splitlines()})
    assert git(remote, "rev-parse", "main:status") == rebuilt
    assert "phase: Completed" in git(remote, "show", "main:status/e2.yaml")
    git(remote, "fsck", "--strict", "--no-dangling")


def test_a_tree_put_together_wrongly_is_never_pushed(store: GitStatusStore, caplog: pytest.LogCaptureFixture) -> None:
    """The last line of defence holds for the fast path too: a kept tree that is not what the
    branch holds (a bug, here a forged one) gives a commit that fails its check; it is not
    pushed, fast-import builds the commit instead, and the branch loses nothing."""
    store.save({"a": _state("a"), "b": _state("b")}, [], "r1")
    store.save({"a": _state("a", "Completed"), "b": _state("b")}, [], "r2")
    held = store._trees._held
    assert held is not None
    forged = TreeEntries.parse(held[1].raw())
    forged.put_file(b"b.yaml", object_id("blob", b"forged\n"))  # b's entry no longer what the branch has
    store._trees._held = (held[0], forged)
    with caplog.at_level("WARNING", logger="reconciler.writeback"):
        store.save({"a": _state("a", "Failed"), "b": _state("b")}, [], "r3")
    assert any("failed its check" in r.message for r in caplog.records)
    remote = _remote(store)
    assert "phase: Failed" in git(remote, "show", "main:status/a.yaml")
    assert "phase: Running" in git(remote, "show", "main:status/b.yaml")  # untouched, not "forged"
    assert git(remote, "diff", "--name-only", "main~1", "main") == "status/a.yaml"


def test_a_tree_fast_import_refuses_is_built_whole(store: GitStatusStore, caplog: pytest.LogCaptureFixture) -> None:
    """Should fast-import refuse the tree it is given (unreadable, not a tree), the commit is
    built the plain way at once: a fast path is never a reason to write nothing."""
    store.save({"a": _state("a")}, [], "r1")
    store._trees.splice = lambda *_: "0" * 40  # type: ignore[method-assign]  # no such tree
    with caplog.at_level("WARNING", logger="reconciler.writeback"):
        store.save({"a": _state("a", "Completed")}, [], "r2")
    assert any("refused the status tree" in r.message for r in caplog.records)
    assert store.commits == 2 and "phase: Completed" in git(_remote(store), "show", "main:status/a.yaml")
