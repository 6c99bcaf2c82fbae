"""The long-lived ``cat-file`` reader is a fast path only: it answers "found" or nothing.

Real Git repositories.  Every answer that is not plainly found (a missing or ambiguous name,
an object of another type, a process that died) is None, so the caller's one-shot command —
whose errors the Git adapter already handles — decides instead; and a reader that failed
starts a new process for the next question.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.source.gitbatch import MAX_BATCH, MAX_LIVE, BatchReader, live_readers
from tests.conftest import WorkRepo


@pytest.fixture
def repo(make_repo: Callable[[str], WorkRepo]) -> WorkRepo:
    repo = make_repo("objects")
    repo.commit("seed", **{"a.txt": "alpha\n", "b.txt": "", "dir/c.txt": "gamma\n" * 1000})
    return repo


def _blob(repo: WorkRepo, path: str) -> str:
    return repo.git("rev-parse", f"HEAD:{path}").strip()


def test_info_and_contents_of_objects_that_exist(repo: WorkRepo) -> None:
    reader = BatchReader(repo.path, {})
    head = repo.git("rev-parse", "HEAD").strip()
    a, b, c = (_blob(repo, p) for p in ("a.txt", "b.txt", "dir/c.txt"))
    assert reader.info([f"{head}^{{commit}}", a, b]) == {
        f"{head}^{{commit}}": (head, "commit", int(repo.git("cat-file", "-s", head))),
        a: (a, "blob", 6), b: (b, "blob", 0)}
    assert reader.contents([a, b, c]) == {a: b"alpha\n", b: b"", c: b"gamma\n" * 1000}
    assert reader.started == 1  # every question went to the one process
    reader.close()


@pytest.mark.parametrize("name", [
    "0" * 40,                      # absent: "<id> missing"
    "HEAD:nope.txt",               # a path that is not in the tree
    "a",                           # too short to be an id, and no such ref
    "two words",                   # cannot be asked on one line at all
    "",
])
def test_anything_not_plainly_found_is_none(repo: WorkRepo, name: str) -> None:
    reader = BatchReader(repo.path, {})
    a = _blob(repo, "a.txt")
    assert reader.info([a, name]) is None
    assert reader.info([a]) == {a: (a, "blob", 6)}  # the reply stream is still in step
    assert reader.contents([name]) is None
    assert reader.contents([a]) == {a: b"alpha\n"}
    reader.close()


def test_an_object_of_another_type_is_not_contents(repo: WorkRepo) -> None:
    reader = BatchReader(repo.path, {})
    tree = repo.git("rev-parse", "HEAD^{tree}").strip()
    a = _blob(repo, "a.txt")
    assert reader.contents([tree]) is None  # a tree asked for as a blob: its body is skipped
    assert reader.contents([a]) == {a: b"alpha\n"}
    reader.close()


def test_more_names_than_one_batch(repo: WorkRepo) -> None:
    files = {f"many/f{i}.txt": f"{i}\n" for i in range(MAX_BATCH + 10)}
    repo.commit("many", **files)
    ids = [_blob(repo, p) for p in files]
    reader = BatchReader(repo.path, {})
    found = reader.info(ids)
    assert found is not None and [found[i][2] for i in ids] == [len(t) for t in files.values()]
    reader.close()


def test_a_dead_process_is_replaced(repo: WorkRepo) -> None:
    reader = BatchReader(repo.path, {})
    a = _blob(repo, "a.txt")
    assert reader.info([a]) is not None
    assert reader._proc is not None
    os.kill(reader._proc.pid, signal.SIGKILL)
    reader._proc.wait()
    assert reader.info([a]) == {a: (a, "blob", 6)}  # a dead process is noticed before asking
    assert reader.started == 2
    reader.close()


def test_objects_written_after_the_process_started_are_seen(repo: WorkRepo) -> None:
    """git re-scans the object directory (and packs) when a name is not found."""
    reader = BatchReader(repo.path, {})
    assert reader.info([_blob(repo, "a.txt")]) is not None
    repo.commit("later", **{"late.txt": "late\n"})
    repo.git("repack", "-q", "-a", "-d")
    late = _blob(repo, "late.txt")
    assert reader.contents([late]) == {late: b"late\n"}
    reader.close()


def test_a_reader_on_a_directory_that_is_not_a_repository_finds_nothing(tmp_path: Path) -> None:
    reader = BatchReader(tmp_path, {})
    assert reader.info(["HEAD"]) is None
    assert reader.contents(["0" * 40]) is None
    reader.close()


def test_only_a_few_readers_keep_a_process(repo: WorkRepo) -> None:
    """A process makes thousands of readers in a test run (one per cache): only the most
    recently used MAX_LIVE keep a process and its pipes; a stopped one starts again."""
    a = _blob(repo, "a.txt")
    readers = [BatchReader(repo.path, {}) for _ in range(MAX_LIVE + 5)]
    for reader in readers:
        assert reader.info([a]) == {a: (a, "blob", 6)}
    assert live_readers() <= MAX_LIVE
    assert all(r._proc is None for r in readers[:5]) and all(r._proc is not None for r in readers[-MAX_LIVE:])
    assert readers[0].contents([a]) == {a: b"alpha\n"} and readers[0].started == 2
    for reader in readers:
        reader.close()
    assert live_readers() == 0


def test_a_reader_dropped_without_close_ends_its_process(repo: WorkRepo) -> None:
    """subprocess keeps a running child's Popen (and its pipes) alive after it is dropped, so
    without a finalizer every dropped reader left a cat-file waiting on its input for good."""
    reader = BatchReader(repo.path, {})
    a = _blob(repo, "a.txt")
    assert reader.info([a]) is not None
    proc = reader._proc
    assert proc is not None
    del reader
    gc.collect()
    assert proc.wait(timeout=10) == 0  # its input closed: cat-file ended on its own
