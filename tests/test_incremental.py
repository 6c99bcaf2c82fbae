"""A cycle costs what changed: per-blob parse caching in GitSource (issue 11).

Real Git repositories; parses are counted (``GitSource.parsed.parses``), and every
incremental result is compared with the pure ``load_declaration`` of the same files, so a
cache can neither lose a problem nor invent one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.declare.assemble import load_declaration
from reconciler.declare.declared import Declaration
from reconciler.source.gitsource import GitSource
from tests.conftest import CATALOG, WorkRepo, execution_yaml

N = 12


def _files(n: int = N) -> dict[str, str]:
    files = {"workflows/w.yaml": CATALOG}
    for i in range(n):
        files[f"executions/e{i:02d}.yaml"] = execution_yaml(f"e{i:02d}", target=f"ns/Deployment/app-{i:02d}")
    return files


def _pure(repo: WorkRepo) -> Declaration:
    """What validate would say of the same commit (no cache involved)."""
    tracked = repo.git("ls-files").split()
    return load_declaration({p: (repo.path / p).read_bytes() for p in tracked
                             if not (repo.path / p).is_symlink()})  # never followed from Git


def _same_as_pure(decl: Declaration, repo: WorkRepo) -> None:
    pure = _pure(repo)
    assert decl.problems == pure.problems
    assert [(e.name, e.spec_hash) for e in decl.executions] == [(e.name, e.spec_hash) for e in pure.executions]
    assert [(i.file, i.problems) for i in decl.invalid] == [(i.file, i.problems) for i in pure.invalid]


def _hits(source: GitSource) -> int:
    store = source.parsed.store
    return store.hits if store is not None else 0


@pytest.fixture
def setup(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> tuple[WorkRepo, GitSource]:
    repo = make_repo("repo")
    repo.commit("seed", **_files())
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    source.load(source.fetch())
    return repo, source


def test_first_load_parses_every_file_once(setup: tuple[WorkRepo, GitSource]) -> None:
    _, source = setup
    assert source.parsed.parses == N + 1  # the executions and the catalog file


def test_unchanged_revision_parses_nothing(setup: tuple[WorkRepo, GitSource]) -> None:
    repo, source = setup
    before = source.parsed.parses
    for _ in range(3):
        source.load(source.fetch())
    assert source.parsed.parses == before
    # a commit that changes neither executions/ nor workflows/ parses nothing either
    repo.commit("docs", **{"README.md": "hello\n"})
    source.load(source.fetch())
    assert source.parsed.parses == before


@pytest.mark.parametrize("edit", ["edit", "add"])
def test_one_changed_blob_is_parsed_once_and_the_rest_not_at_all(
        setup: tuple[WorkRepo, GitSource], edit: str) -> None:
    repo, source = setup
    before = source.parsed.parses
    if edit == "edit":
        repo.commit("edit", **{"executions/e03.yaml": execution_yaml(
            "e03", target="ns/Deployment/app-03", params="{NAMESPACE: payments, MEMORY_LIMIT: 2Gi}")})
    else:
        repo.commit("add", **{"executions/new.yaml": execution_yaml("new", target="ns/Deployment/new")})
    decl = source.load(source.fetch())
    assert source.parsed.parses == before + 1
    source.load(source.fetch())
    assert source.parsed.parses == before + 1
    _same_as_pure(decl, repo)


def test_a_cached_invalid_file_stays_invalid_with_the_same_message(setup: tuple[WorkRepo, GitSource]) -> None:
    repo, source = setup
    repo.commit("bad", **{"executions/bad.yaml": execution_yaml(
        "bad", target="ns/Deployment/bad", params="{NAMESPACE: payments, BOGUS: x}")})
    first = source.load(source.fetch())
    bad_before = [i for i in first.invalid if i.file == "executions/bad.yaml"]
    assert bad_before and any("BOGUS" in p.message for p in bad_before[0].problems)
    parses = source.parsed.parses
    repo.commit("other", **{"executions/e01.yaml": execution_yaml("e01", target="ns/Deployment/app-01b")})
    second = source.load(source.fetch())
    assert source.parsed.parses == parses + 1  # only e01
    assert [i for i in second.invalid if i.file == "executions/bad.yaml"] == bad_before
    _same_as_pure(second, repo)


def test_duplicate_name_appears_and_clears_when_only_the_other_file_changes(
        setup: tuple[WorkRepo, GitSource]) -> None:
    repo, source = setup
    parses = source.parsed.parses
    repo.commit("dup", **{"executions/zz-copy.yaml": execution_yaml("e05", target="ns/Deployment/other")})
    decl = source.load(source.fetch())
    assert source.parsed.parses == parses + 1  # e05's own file is not parsed again
    dup = {i.file for i in decl.invalid if any(p.rule == "duplicate-name" for p in i.problems)}
    assert dup == {"executions/e05.yaml", "executions/zz-copy.yaml"}
    _same_as_pure(decl, repo)
    repo.remove("executions/zz-copy.yaml")
    repo.commit("undup")
    decl = source.load(source.fetch())
    assert source.parsed.parses == parses + 1 and decl.find("e05") is not None and not decl.problems


def test_catalog_errors_follow_a_change_of_the_catalog_alone(setup: tuple[WorkRepo, GitSource]) -> None:
    repo, source = setup
    repo.commit("bump", **{"workflows/w.yaml": CATALOG.replace('"1.2.0"', '"1.3.0"')})
    decl = source.load(source.fetch())
    assert {p.rule for p in decl.problems} == {"unknown-workflow"}
    assert len(decl.invalid) == N
    _same_as_pure(decl, repo)
    parses, hits = source.parsed.parses, _hits(source)
    repo.commit("back", **{"workflows/w.yaml": CATALOG})
    decl = source.load(source.fetch())
    assert not decl.problems and len(decl.executions) == N
    # the catalog, and each execution checked against it again — the persistent store
    # already holds each one's verdict against this very catalog (its blob ids)
    assert source.parsed.parses == parses + 1 and _hits(source) == hits + N


def test_an_unrelated_catalog_entry_does_not_reparse_executions(setup: tuple[WorkRepo, GitSource]) -> None:
    repo, source = setup
    parses = source.parsed.parses
    other = CATALOG.replace("increase-memory-limit", "restart-pods").replace("1-2-0", "r")
    repo.commit("another workflow", **{"workflows/other.yaml": other})
    decl = source.load(source.fetch())
    assert source.parsed.parses == parses + 2  # the two catalog files, no execution
    _same_as_pure(decl, repo)


def test_a_chain_reference_breaks_when_only_its_target_is_deleted(setup: tuple[WorkRepo, GitSource]) -> None:
    repo, source = setup
    repo.commit("chain", **{"executions/after.yaml": execution_yaml(
        "follower", target="ns/Deployment/follower", extra="  after: [e07]\n")})
    assert not source.load(source.fetch()).problems
    parses = source.parsed.parses
    repo.remove("executions/e07.yaml")
    repo.commit("drop e07")
    decl = source.load(source.fetch())
    assert source.parsed.parses == parses
    assert [p.rule for p in decl.problems] == ["dependency-missing"]
    _same_as_pure(decl, repo)


def test_only_changed_status_files_are_parsed(setup: tuple[WorkRepo, GitSource]) -> None:
    repo, source = setup
    doc = ("apiVersion: kubernaut.ai/v1alpha1\nkind: WorkflowExecutionStatus\nmetadata: {{name: {n}}}\n"
           "status: {{phase: Completed, observedRevision: abc}}\n")
    repo.commit("statuses", **{f"status/e{i:02d}.yaml": doc.format(n=f"e{i:02d}") for i in range(4)})
    decl = source.load(source.fetch())
    parses = source.parsed.parses
    assert parses > 0
    repo.commit("one status", **{"status/e02.yaml": doc.format(n="e02").replace("abc", "def"),
                                 "status/junk.yaml": "::: not yaml"})
    again = source.load(source.fetch())
    assert source.parsed.parses == parses + 2
    assert set(again.statuses) == set(decl.statuses)
    assert set(again.ignored_statuses) == set(decl.ignored_statuses) | {"status/junk.yaml"}


@pytest.mark.parametrize("change", ["edit", "add", "delete", "symlink", "big", "status", "both"])
def test_the_listing_brought_forward_equals_a_full_listing(
        setup: tuple[WorkRepo, GitSource], cache_dir: Path, change: str) -> None:
    repo, source = setup
    if change == "edit":
        repo.commit("edit", **{"executions/e02.yaml": execution_yaml("e02", target="ns/Deployment/other")})
    elif change == "add":
        repo.commit("add", **{"executions/deep/x.yaml": execution_yaml("x", target="ns/Deployment/x")})
    elif change == "delete":
        repo.remove("executions/e04.yaml")
        repo.commit("delete")
    elif change == "symlink":
        (repo.path / "executions" / "link.yaml").symlink_to("e01.yaml")
        repo.commit("symlink")
    elif change == "big":
        repo.commit("big", **{"executions/big.yaml": "# " + "x" * (source.max_file_bytes + 10) + "\n"})
    elif change == "both":  # one diff-tree brings the declared and the status listing forward
        repo.remove("executions/e05.yaml")
        repo.commit("both", **{"status/e01.yaml": "phase: nothing\n", "workflows/w.yaml": CATALOG + "\n",
                               "executions/e03.yaml": execution_yaml("e03", target="ns/Deployment/moved")})
    else:
        repo.commit("status", **{"status/e01.yaml": "phase: nothing\n"})
    commit = source.fetch()
    decl = source.load(commit)
    fresh = GitSource(str(repo.path), cache_dir=cache_dir.parent / "fresh-cache")
    tip = fresh.fetch()
    for roles in (frozenset({"execution", "workflow"}), frozenset({"status"})):
        assert source._listing(commit, roles) == fresh._listing(tip, roles)
        # the split by role the parse cache is given, brought forward with the same changes
        assert source._listing_by_role(commit, roles) == fresh._listing_by_role(tip, roles)
    _same_as_pure(decl, repo)


def test_origins_carried_forward_equal_those_read_from_the_whole_history(
        setup: tuple[WorkRepo, GitSource], cache_dir: Path) -> None:
    repo, source = setup

    def delete() -> None:
        repo.remove("executions/e02.yaml")
        repo.commit("delete")

    steps: list[Callable[[], object]] = [
        lambda: repo.commit("edit", **{"executions/e01.yaml": execution_yaml("e01", target="ns/Deployment/z")}),
        lambda: repo.commit("add", **{"executions/new.yaml": execution_yaml("new", target="ns/Deployment/new")}),
        delete,
        lambda: repo.commit("docs only", **{"README.md": "x\n"}),
        lambda: repo.commit("re-add", **{"executions/e02.yaml": execution_yaml("e02", target="ns/Deployment/b")}),
    ]
    for step in steps:
        step()
        commit = source.fetch()
        fresh = GitSource(str(repo.path), cache_dir=cache_dir.parent / f"fresh-{commit[:8]}")
        assert source._origins(commit, "") == fresh._origins(fresh.fetch(), "")
        assert [(e.name, e.origin) for e in source.load(commit).executions] == \
            [(e.name, e.origin) for e in fresh.load(commit).executions]


def test_a_merge_reads_the_whole_history_again(setup: tuple[WorkRepo, GitSource], cache_dir: Path) -> None:
    repo, source = setup
    repo.git("checkout", "-q", "-b", "side")
    repo.commit("side", **{"executions/side.yaml": execution_yaml("side", target="ns/Deployment/side")})
    repo.git("checkout", "-q", "main")
    repo.commit("main", **{"executions/main.yaml": execution_yaml("main-one", target="ns/Deployment/m")})
    source.load(source.fetch())
    repo.git("merge", "-q", "--no-edit", "side")
    commit = source.fetch()
    fresh = GitSource(str(repo.path), cache_dir=cache_dir.parent / "fresh-merge")
    assert source._origins(commit, "") == fresh._origins(fresh.fetch(), "")


# -- the incremental declaration equals a from-scratch one (property) -----------------------

_NAMES = ["a", "b", "c", "d", "e"]
_FAST: list[int] = []  # fast derivations per example (see the test after the property)
_PATHS = [f"executions/f{i}.yaml" for i in range(7)] + ["executions/sub/g.yaml"]


def _content(kind: str, name: str, other: str, k: int) -> str:
    if kind == "plain":
        return execution_yaml(name, target=f"ns/Deployment/{name}-{k}")
    if kind == "after":
        return execution_yaml(name, target=f"ns/Deployment/{name}-{k}", extra=f"  after: [{other}]\n")
    if kind == "on-failure":
        return execution_yaml(name, target=f"ns/Deployment/{name}-{k}", extra=f"  onFailureOf: {other}\n")
    if kind == "bad-param":
        return execution_yaml(name, target=f"ns/Deployment/{name}", params="{NAMESPACE: x, BOGUS: y}")
    if kind == "unknown-workflow":
        return execution_yaml(name, workflow='workflowId: nope, version: "1"')
    return "::: not yaml {"


def _blob(text: str) -> str:
    import hashlib
    data = text.encode()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


_KINDS = ["plain", "plain", "plain", "after", "on-failure", "bad-param", "unknown-workflow", "broken"]
_op = st.tuples(st.sampled_from(["put", "remove", "rename", "touch"]), st.sampled_from(_PATHS),
                st.sampled_from(_KINDS), st.sampled_from(_NAMES), st.sampled_from(_NAMES),
                st.sampled_from(_PATHS))


def _assert_same(got: Declaration, want: Declaration) -> None:
    assert got.executions == want.executions  # the order too
    assert [(e.name, e.origin, e.spec_hash) for e in got.executions] == \
        [(e.name, e.origin, e.spec_hash) for e in want.executions]
    assert [(i.file, i.name, i.problems, i.origin) for i in got.invalid] == \
        [(i.file, i.name, i.problems, i.origin) for i in want.invalid]
    assert [(p, p.message) for p in got.problems] == [(p, p.message) for p in want.problems]
    assert {n: e.file for n, e in got.index().items()} == {e.name: e.file for e in want.executions}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, min_size=1, max_size=25), st.booleans())
def test_an_incremental_declaration_equals_one_from_scratch(ops: list[tuple[str, str, str, str, str, str]],
                                                            seeded: bool) -> None:
    """Random edits, adds, removes, renames, duplicate names, chain edits and invalid files,
    one or a few per step: after each step the cache's declaration (derived from the last
    one where it can be) equals load_declaration of the same files."""
    from reconciler.declare.declared import FileOrigin
    from reconciler.source.parsecache import ParseCache

    files: dict[str, str] = {"workflows/w.yaml": CATALOG}
    origins: dict[str, FileOrigin] = {}
    if seeded:
        for i, path in enumerate(_PATHS[:5]):
            files[path] = _content("plain", _NAMES[i], "a", i)
            origins[path] = FileOrigin(f"c{i}", i, f"c{i}", i, i)
    cache = ParseCache()
    reads: list[str] = []

    def read(shas: Mapping[str, str]) -> dict[str, bytes | int]:
        reads.extend(shas)
        return {p: files[p].encode() for p in shas}

    def check() -> None:
        listing = {p: _blob(t) for p, t in files.items() if p.startswith("executions/")}
        catalog = {p: _blob(t) for p, t in files.items() if p.startswith("workflows/")}
        got = cache.declaration(listing, catalog, read, dict(origins), 4096)
        want = load_declaration({p: t.encode() for p, t in files.items()}, origins=origins, max_bytes=4096)
        _assert_same(got, want)

    check()
    for step, (op, path, kind, name, other, to) in enumerate(ops, start=10):
        stamp = FileOrigin(f"c{step}", step, f"c{step}", step, step)
        if op == "put":
            files[path] = _content(kind, name, other, step % 3)
            held = origins.get(path)
            origins[path] = stamp if held is None else FileOrigin(f"c{step}", step, held.introduced_commit,
                                                                  held.introduced_time, held.introduced_seq)
        elif op == "remove" and path in files:
            del files[path]
            origins.pop(path, None)
        elif op == "rename" and path in files and to not in files:
            files[to] = files.pop(path)
            origins.pop(path, None)
            origins[to] = stamp
        elif op == "touch" and path in files:  # the same content, a newer commit (a revert)
            held = origins[path]
            origins[path] = FileOrigin(f"c{step}", step, held.introduced_commit, held.introduced_time,
                                       held.introduced_seq)
        check()
    assert reads.count("workflows/w.yaml") == 1  # the catalog is read once, every file at most per blob
    _FAST.append(cache.fast_declarations)


def test_one_plain_edit_is_derived_not_assembled_again(setup: tuple[WorkRepo, GitSource]) -> None:
    """The fast path is taken for the common change (and then must equal the full step)."""
    repo, source = setup
    fast = source.parsed.fast_declarations
    repo.commit("edit", **{"executions/e03.yaml": execution_yaml("e03", target="ns/Deployment/moved")})
    decl = source.load(source.fetch())
    assert source.parsed.fast_declarations == fast + 1
    _same_as_pure(decl, repo)
    assert decl.find("e03") is not None and decl.find("e03").target == "ns/Deployment/moved"  # type: ignore[union-attr]


_STATUS = ("apiVersion: kubernaut.ai/v1alpha1\nkind: WorkflowExecutionStatus\nmetadata: {{name: {n}}}\n"
           "status: {{phase: {phase}}}\n")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "junk", "remove", "misnamed"]),
                          st.sampled_from(["a", "a-b", "b", "c", "d0", "zz"]),
                          st.sampled_from(["Completed", "Failed", "Running"])), min_size=1, max_size=25))
def test_incremental_status_records_equal_a_full_pass(ops: list[tuple[str, str, str]]) -> None:
    """Status files added, edited, removed, broken or misnamed: the records and the ignored
    files (and their order) equal those of a fresh cache."""
    from reconciler.source.parsecache import ParseCache

    files: dict[str, str] = {}
    cache = ParseCache()

    def read(shas: Mapping[str, str]) -> dict[str, bytes | int]:
        return {p: files[p].encode() for p in shas}

    for op, name, phase in ops:
        path = f"status/{name}.yaml"
        if op == "put":
            files[path] = _STATUS.format(n=name, phase=phase)
        elif op == "junk":
            files[path] = "::: {"
        elif op == "misnamed":
            files[path] = _STATUS.format(n="other", phase=phase)
        else:
            files.pop(path, None)
        listing = {p: _blob(t) for p, t in files.items()}
        records, ignored = cache.status_records(listing, read)
        want_records, want_ignored = ParseCache().status_records(listing, read)
        assert list(records.items()) == list(want_records.items())
        assert [(r.file, r.raw) for r in records.values()] == [(r.file, r.raw) for r in want_records.values()]
        assert list(ignored.items()) == list(want_ignored.items())


def test_the_property_above_took_the_fast_path_too() -> None:
    """Most of its steps must have been derived, or it proved nothing about the fast path."""
    if not _FAST:
        pytest.skip("run together with test_an_incremental_declaration_equals_one_from_scratch")
    assert sum(_FAST) > len(_FAST)


@pytest.mark.parametrize(("path", "root", "role"), [
    ("executions/a.yaml", "", "execution"), ("executions/deep/er/a.yml", "", "execution"),
    ("workflows/w.yaml", "", "workflow"), ("workflows/sub/w.yaml", "", None), ("status/a.yaml", "", "status"),
    ("status/x/a.yaml", "", None), ("executions/.yaml", "", None), ("executions/a.json", "", None),
    ("executions", "", None), ("team/executions/a.yaml", "team", "execution"),
    ("team-b/executions/a.yaml", "team", None), ("team", "team", None), ("executions/a.yaml", ".", "execution"),
    ("executions//a.yaml", "", "execution"), ("./status/a.yaml", "", "status"), ("executions/a.yaml/", "", "execution"),
    ("team/./executions/a.yaml", "team", "execution"), ("a/b/executions/x.yaml", "a/b", "execution"),
    ("executions/a.yaml.", "", None), ("README.md", "", None),
])
def test_classify_by_string_agrees_with_the_path_rules(path: str, root: str, role: str | None) -> None:
    from reconciler.declare.declared import _classify_path, classify

    assert classify(path, root) == _classify_path(path, root) == role


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["executions", "workflows", "status", "a.yaml", "b.yml", ".yaml", "", ".", "..",
                                 "team", "x.json", "c..yaml"]), min_size=1, max_size=4),
       st.sampled_from(["", ".", "team", "team/sub", "./team", "team/"]))
def test_classify_by_string_agrees_on_any_path(parts: list[str], root: str) -> None:
    from reconciler.declare.declared import _classify_path, classify

    path = "/".join(parts)
    assert classify(path, root) == _classify_path(path, root)


# -- a load steps from the commit loaded last (one git log instead of three) ------------------

def _declared_state(source: GitSource, commit: str) -> tuple[str, dict[str, object]]:
    declared = source.declared_revision(commit)
    return declared, dict(source._origins(declared, source.path))


def test_a_load_carries_revision_and_origins_across_a_push_as_the_full_reads_do(
        setup: tuple[WorkRepo, GitSource], cache_dir: Path) -> None:
    """Each kind of step a branch takes — a declared edit, a bot status commit on top, docs only,
    several commits in one push, a delete, a merge, a rewritten branch — gives the declared
    revision and file origins a fresh process reads from the whole history; the linear ones are
    carried forward by the step (counted), the others by the full reads."""
    repo, source = setup

    def several() -> None:
        repo.commit("one", **{"executions/e03.yaml": execution_yaml("e03", target="ns/Deployment/three")})
        repo.commit("status", **{"status/e03.yaml": "phase: x\n"})
        repo.commit("two", **{"executions/e05.yaml": execution_yaml("e05", target="ns/Deployment/five")})

    def delete() -> None:
        repo.remove("executions/e06.yaml")
        repo.commit("delete")

    def merge() -> None:
        repo.git("checkout", "-q", "-b", "side")
        repo.commit("side", **{"executions/side.yaml": execution_yaml("side", target="ns/Deployment/side")})
        repo.git("checkout", "-q", "main")
        repo.commit("main", **{"workflows/w.yaml": CATALOG + "\n"})
        repo.git("merge", "-q", "--no-edit", "side")

    def rewrite() -> None:
        repo.git("reset", "-q", "--hard", "HEAD~1")
        repo.commit("rewritten", **{"executions/e07.yaml": execution_yaml("e07", target="ns/Deployment/seven")})

    steps: list[tuple[Callable[[], object], bool]] = [
        (lambda: repo.commit("edit", **{"executions/e01.yaml": execution_yaml("e01", target="ns/Deployment/z")}),
         True),
        (lambda: repo.commit("bot", **{"status/e01.yaml": "phase: Completed\n"}), True),
        (lambda: repo.commit("docs", **{"README.md": "x\n"}), True),
        (several, True),
        (delete, True),
        (lambda: repo.commit("catalog", **{"workflows/w.yaml": CATALOG + "# note\n"}), True),
        (merge, False),
        (lambda: repo.commit("after the merge", **{"status/e02.yaml": "phase: y\n"}), True),
        (rewrite, False),
    ]
    for index, (step, linear) in enumerate(steps):
        step()
        commit = source.fetch()
        before = source.stepped
        decl = source.load(commit)
        assert source.stepped == before + (1 if linear else 0), index
        fresh = GitSource(str(repo.path), cache_dir=cache_dir.parent / f"fresh-step-{index}", parse_store=False)
        assert _declared_state(source, commit) == _declared_state(fresh, fresh.fetch()), index
        assert [(e.name, e.origin) for e in decl.executions] == \
            [(e.name, e.origin) for e in fresh.load(commit).executions], index


def test_a_repository_that_never_declared_anything_is_not_stepped(make_repo: Callable[[str], WorkRepo],
                                                                  cache_dir: Path) -> None:
    """With no commit touching executions/ or workflows/, a commit's declared revision is the
    commit itself (what the full read says), never the one loaded before it."""
    repo = make_repo("empty")
    repo.commit("docs", **{"README.md": "a\n"})
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    first = source.fetch()
    source.load(first)
    repo.commit("more docs", **{"README.md": "b\n"})
    second = source.fetch()
    source.load(second)
    assert source.declared_revision(first) == first
    assert source.declared_revision(second) == second
    assert source.stepped == 0
