"""The persistent parse store (issue 11): a fresh process parses only what no process has seen.

Real Git repositories and real SQLite files.  Every test compares the answer given with the
store against the answer without it (``parse_store=False``): a store may make a load
cheaper, never different — not when it is corrupt, truncated, unopenable, written by other
code, or tampered with.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.declare.declared import Declaration
from reconciler.source.gitsource import GitSource
from reconciler.source.parsecache import ParseCache
from reconciler.source.parsestore import PAGE_SIZE, ParseStore
from tests.conftest import CATALOG, WorkRepo, execution_yaml

STATUS = ("apiVersion: kubernaut.ai/v1alpha1\nkind: WorkflowExecutionStatus\nmetadata: {{name: {n}}}\n"
          "status: {{phase: Completed, observedRevision: abc, specHash: x}}\n")


@pytest.fixture
def repo(make_repo: Callable[[str], WorkRepo]) -> WorkRepo:
    repo = make_repo("repo")
    files = {"workflows/w.yaml": CATALOG,
             "executions/bad.yaml": execution_yaml("bad", params="{NAMESPACE: x, BOGUS: y}"),
             "executions/broken.yaml": "::: {",
             "executions/chain.yaml": execution_yaml("chain", target="ns/Deployment/c", extra="  after: [e1]\n"),
             "status/e1.yaml": STATUS.format(n="e1"), "status/junk.yaml": "kind: nothing\n"}
    for i in range(6):
        files[f"executions/e{i}.yaml"] = execution_yaml(f"e{i}", target=f"ns/Deployment/app-{i}")
    repo.commit("seed", **files)
    return repo


def _fingerprint(decl: Declaration) -> object:
    return (decl.revision, decl.executions, [(e.origin, e.spec_hash, e.document) for e in decl.executions],
            [(i.file, i.name, i.problems, [p.message for p in i.problems], i.origin) for i in decl.invalid],
            [(p, p.message) for p in decl.problems], list(decl.statuses.items()),
            [r.raw for r in decl.statuses.values()], list(decl.ignored_statuses.items()))


def _load(repo: WorkRepo, cache_dir: Path, **kw: object) -> tuple[GitSource, Declaration]:
    source = GitSource(str(repo.path), cache_dir=cache_dir, **kw)  # type: ignore[arg-type]
    return source, source.load(source.fetch())


def _store_file(source: GitSource) -> Path:
    assert source.parsed.store is not None
    return source.parsed.store.path


def test_a_second_process_parses_nothing_and_gets_the_same_answer(repo: WorkRepo, cache_dir: Path) -> None:
    first, decl = _load(repo, cache_dir)
    assert first.parsed.parses == 9 + 1 + 2  # the executions, the catalog, the status files
    second, again = _load(repo, cache_dir)
    assert second.parsed.parses == 1  # the catalog alone (one small file, read whole each time)
    assert second.parsed.store is not None and second.parsed.store.hits == 9 + 2
    _, plain = _load(repo, cache_dir.parent / "no-store", parse_store=False)
    assert _fingerprint(again) == _fingerprint(decl) == _fingerprint(plain)


def test_a_new_process_in_a_subprocess_parses_nothing(repo: WorkRepo, cache_dir: Path) -> None:
    """Another interpreter (the CLI beside the service) on the same cache directory."""
    _load(repo, cache_dir)
    code = ("import sys; from pathlib import Path; from reconciler.source.gitsource import GitSource\n"
            f"s = GitSource({str(repo.path)!r}, cache_dir=Path({str(cache_dir)!r}))\n"
            "d = s.load(s.fetch()); print(s.parsed.parses, len(d.executions), len(d.invalid))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == ["1", "7", "2"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "a-directory"])
def test_a_damaged_store_file_is_survived_with_the_same_answer(repo: WorkRepo, cache_dir: Path, damage: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    first, decl = _load(repo, cache_dir)
    path = _store_file(first)
    first.parsed.store.close()  # type: ignore[union-attr]
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if damage == "garbage":
        path.write_bytes(b"this is not a database at all" * 200)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1500])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        path.mkdir()
    with caplog.at_level(logging.WARNING, logger="reconciler.parsestore"):
        _, again = _load(repo, cache_dir)
        third, once_more = _load(repo, cache_dir)
    assert _fingerprint(again) == _fingerprint(decl) == _fingerprint(once_more)
    warnings = [r for r in caplog.records if r.name == "reconciler.parsestore"]
    assert len(warnings) <= 2  # once per process at most
    if damage in ("garbage", "truncated"):
        assert third.parsed.parses <= 1 + 11  # rebuilt: the third process finds the second's results again


def test_an_unusable_store_directory_is_survived(repo: WorkRepo, cache_dir: Path, tmp_path: Path) -> None:
    """The store cannot be created at all (its directory is a file): the same answer, parsed."""
    _, decl = _load(repo, cache_dir)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    source.parsed = ParseCache(ParseStore(blocker / "store.sqlite"))
    again = source.load(source.fetch())
    assert source.parsed.store is not None and source.parsed.store.disabled
    assert _fingerprint(again) == _fingerprint(decl)


def test_a_read_only_store_file_is_survived(repo: WorkRepo, cache_dir: Path) -> None:
    first, decl = _load(repo, cache_dir)
    path = _store_file(first)
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    store = ParseStore(path)
    store._connect = lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # type: ignore[method-assign]
    source.parsed = ParseCache(store)
    repo.commit("new", **{"executions/new.yaml": execution_yaml("new", target="ns/Deployment/new")})
    again = source.load(source.fetch())
    assert again.find("new") is not None and len(again.executions) == len(decl.executions) + 1


def test_a_changed_code_digest_ignores_old_entries(repo: WorkRepo, cache_dir: Path) -> None:
    first, decl = _load(repo, cache_dir)
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    source.parsed = ParseCache(ParseStore(_store_file(first), code="other rules"))
    again = source.load(source.fetch())
    assert source.parsed.parses == first.parsed.parses and source.parsed.store.hits == 0  # type: ignore[union-attr]
    assert _fingerprint(again) == _fingerprint(decl)


def _tampered_status_row(value: str, tamper: str) -> str | None:
    """A status row (name, phase, reason, spec hash, run name, checksum, text, NUL-separated)
    with one part changed; None for another kind of row."""
    if not value.startswith("S1\0"):
        return None
    parts = value.split("\0", 7)
    if tamper == "status-invalid":
        parts[2] = "Exploded"  # phase
    elif tamper == "status-name":
        parts[1] = "someone-else"  # not the file's name
    elif tamper == "status-text":
        parts[7] = parts[7].replace('"Completed"', '"Running"').replace('"Succeeded"', '"Exploded"')
        assert parts[7] != value.split("\0", 7)[7]
    elif tamper == "status-parts":
        parts = parts[:5]
    else:
        return None
    return "\0".join(parts)


@pytest.mark.parametrize("tamper", ["not-json", "wrong-shape", "status-invalid", "status-name", "status-text",
                                    "status-parts", "execution-invalid", "problem-shape"])
def test_a_tampered_row_is_a_miss_not_trusted(repo: WorkRepo, cache_dir: Path, tamper: str) -> None:
    first, decl = _load(repo, cache_dir)
    path = _store_file(first)
    first.parsed.store.close()  # type: ignore[union-attr]
    db = sqlite3.connect(path)
    rows = db.execute("SELECT key, value FROM parsed").fetchall()
    assert any(value.startswith("S1\0") for _, value in rows)  # the status rows are in their own text
    for key, value in rows:
        status_row = _tampered_status_row(value, tamper)
        data = json.loads(value) if not value.startswith("S1\0") else {}
        if tamper == "not-json":
            new = "{not json"
        elif tamper == "wrong-shape":
            new = json.dumps([1, 2, 3])
        elif status_row is not None:
            new = status_row
        elif tamper == "execution-invalid" and data.get("r"):
            data["r"]["doc"]["spec"]["targetResource"] = 42
            new = json.dumps(data)
        elif tamper == "problem-shape" and data.get("p"):
            data["p"][0][1] = "line one"
            new = json.dumps(data)
        else:
            continue
        db.execute("UPDATE parsed SET value = ? WHERE key = ?", (new, key))
    db.commit()
    db.close()
    second, again = _load(repo, cache_dir)
    assert _fingerprint(again) == _fingerprint(decl)
    assert second.parsed.parses > 1  # the tampered rows were parsed again, not believed


def test_a_store_locked_by_another_process_is_waited_for_briefly_then_skipped(repo: WorkRepo,
                                                                              cache_dir: Path) -> None:
    first, decl = _load(repo, cache_dir)
    path = _store_file(first)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    try:
        source = GitSource(str(repo.path), cache_dir=cache_dir)
        source.parsed = ParseCache(ParseStore(path, timeout=0.05))
        repo.commit("new", **{"executions/new.yaml": execution_yaml("new", target="ns/Deployment/new")})
        again = source.load(source.fetch())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert again.find("new") is not None and len(again.executions) == len(decl.executions) + 1
    assert source.parsed.store is not None and not source.parsed.store.disabled  # next time, again with it


def test_old_entries_are_pruned_and_the_table_is_bounded(tmp_path: Path) -> None:
    store = ParseStore(tmp_path / "s.sqlite", max_rows=10, keep_days=5)
    store.put({store.key("status", f"p{i}", "0" * 40): {"w": "x"} for i in range(30)})
    db = sqlite3.connect(tmp_path / "s.sqlite")
    db.execute("UPDATE parsed SET used = used - 100")
    db.commit()
    fresh = ParseStore(tmp_path / "s.sqlite", max_rows=10, keep_days=5)
    fresh.put({fresh.key("status", f"q{i}", "0" * 40): {"w": "y"} for i in range(25)})
    assert db.execute("SELECT count(*) FROM parsed").fetchone()[0] == 10
    assert len(fresh.get([fresh.key("status", f"q{i}", "0" * 40) for i in range(25)])) == 10
    assert fresh.get([fresh.key("status", "p0", "0" * 40)]) == {}


def test_over_the_bound_other_code_versions_go_first(tmp_path: Path) -> None:
    """Rows keyed by another code digest can never be read again: when the table is over its
    bound they are dropped before any row of the running code (four upgrades in a day used to
    evict the current version's rows at random)."""
    old = ParseStore(tmp_path / "s.sqlite", code="old-code", max_rows=10)
    old.put({old.key("status", f"p{i}", "0" * 40): {"w": "x"} for i in range(8)})
    new = ParseStore(tmp_path / "s.sqlite", code="new-code", max_rows=10)
    keys = [new.key("status", f"q{i}", "0" * 40) for i in range(9)]
    new.put({key: {"w": "y"} for key in keys})
    assert len(new.get(keys)) == 9  # every row of the running code kept
    db = sqlite3.connect(tmp_path / "s.sqlite")
    assert db.execute("SELECT count(*) FROM parsed WHERE code = 'old-code'").fetchone()[0] == 0


def test_a_store_from_before_the_code_column_is_upgraded(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.sqlite")
    db.execute("CREATE TABLE parsed (key BLOB PRIMARY KEY, value TEXT NOT NULL, used INTEGER NOT NULL) WITHOUT ROWID")
    db.execute("INSERT INTO parsed VALUES (x'00', '{}', 1)")
    db.commit()
    store = ParseStore(tmp_path / "s.sqlite", max_rows=1)
    key = store.key("status", "p", "0" * 40)
    store.put({key: {"w": "z"}})
    assert store.get([key]) == {key: {"w": "z"}}
    assert db.execute("SELECT count(*) FROM parsed").fetchone()[0] == 1  # the old row is gone


def test_a_new_store_has_large_pages_and_one_from_before_keeps_working_with_its_own(tmp_path: Path) -> None:
    """A row of about 1 KB overflows SQLite's default 4 KB page: a new store is made with
    larger pages; an existing file keeps the size it was made with (SQLite fixes it at
    creation in WAL mode) and is read and written as before."""
    rows = {bytes([i]) * 16: {"w": "x" * 900} for i in range(50)}
    new = ParseStore(tmp_path / "new.sqlite")
    new.put(rows)
    assert new.get(list(rows)) == rows
    new.close()
    old_db = sqlite3.connect(tmp_path / "old.sqlite")
    old_db.execute("PRAGMA journal_mode=WAL")
    old_db.execute("CREATE TABLE parsed (key BLOB PRIMARY KEY, value TEXT NOT NULL, used INTEGER NOT NULL, "
                   "code TEXT NOT NULL DEFAULT '') WITHOUT ROWID")
    old_db.close()
    old = ParseStore(tmp_path / "old.sqlite")
    old.put(rows)
    assert old.get(list(rows)) == rows and not old.disabled
    old.close()
    sizes = {name: sqlite3.connect(tmp_path / f"{name}.sqlite").execute("PRAGMA page_size").fetchone()[0]
             for name in ("new", "old")}
    assert sizes == {"new": PAGE_SIZE, "old": 4096} and PAGE_SIZE > 4096


def test_the_code_digest_covers_every_module_whose_code_decides_a_stored_result() -> None:
    # the digest reads the rule modules' source without importing them (the store sits below
    # them): a misspelt or forgotten name would silently stop a changed rule from retiring
    # old rows, so every declare module and every parse cache module must be listed, and found
    import importlib.util

    from reconciler.source import parsestore

    listed = set(parsestore._RULE_MODULES)
    assert [name for name in sorted(listed) if importlib.util.find_spec(name) is None] == []
    package = Path(parsestore.__file__).resolve().parents[1]
    rules = {f"reconciler.declare.{p.stem}" for p in (package / "declare").glob("*.py") if p.stem != "__init__"}
    rules |= {f"reconciler.source.{p.stem}" for p in (package / "source").glob("parsecache*.py")}
    assert rules - listed == set()
