"""The Git cache heals itself, and Git failures say what is wrong and how to fix it.

All with real Git: the cache (a bare repository) is damaged the ways disks and people
damage it — a deleted pack, a truncated object, a ref to nothing, a missing blob — and
the next fetch + load must work without a restart, counted and logged; an unreachable
remote must *not* be taken for damage.  Shallow clones and sub-paths that leave the
repository are refused with a message that says what to do.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.errors import ConfigError, GitError
from reconciler.source.gitcache import MAINTENANCE_EVERY, CacheDamaged
from reconciler.source.gitsource import GitSource
from reconciler.source.gitwords import suspect
from tests.conftest import CATALOG, WorkRepo, execution_yaml, git
from tests.harness import Env, declare, state


def seeded(make_repo: Callable[[str], WorkRepo]) -> WorkRepo:
    repo = make_repo("repo")
    repo.commit("catalog and a", **{"workflows/w.yaml": CATALOG, "executions/a.yaml": execution_yaml("a")})
    return repo


def names(source: GitSource) -> list[str]:
    return [e.name for e in source.load(source.fetch()).executions]


def objects(cache: Path, pattern: str) -> list[Path]:
    return sorted((cache / "objects").glob(pattern))


def delete_packs(source: GitSource, repo: WorkRepo) -> None:
    """gc into one pack, then delete it. The cache also holds a ref the branch fetch does
    not refresh — as the write-back's status ref does when status goes to another branch —
    so git cannot heal it by re-fetching the branch alone."""
    status_commit = repo.git("commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "status")
    repo.git("branch", "-f", "status-branch", status_commit)
    source._fetch("+refs/heads/status-branch:refs/kgr/status/status-branch")
    git(source.cache_path, "gc", "-q")
    packs = objects(source.cache_path, "pack/*.pack")
    assert packs and not objects(source.cache_path, "??/*")
    for pack in packs:
        pack.unlink()


def truncate_loose_objects(source: GitSource, repo: WorkRepo) -> None:
    loose = objects(source.cache_path, "??/*")
    assert loose
    for path in loose:
        path.chmod(0o644)
        path.write_bytes(path.read_bytes()[:10])


def ref_to_missing_commit(source: GitSource, repo: WorkRepo) -> None:
    (source.cache_path / "refs" / "heads" / "main").write_text("1" * 40 + "\n")


def garbage_ref(source: GitSource, repo: WorkRepo) -> None:
    (source.cache_path / "refs" / "heads" / "main").write_text("not a commit id\n")


def missing_blob(source: GitSource, repo: WorkRepo) -> None:
    blob = repo.git("rev-parse", "HEAD:executions/a.yaml")
    (source.cache_path / "objects" / blob[:2] / blob[2:]).unlink()


def corrupt_pack_index(source: GitSource, repo: WorkRepo) -> None:
    delete_packs(source, repo)  # the same, but the pack stays and its index is garbage
    for index in objects(source.cache_path, "pack/*.idx"):
        index.chmod(0o644)
        index.write_bytes(b"junk")


DAMAGE = [delete_packs, truncate_loose_objects, ref_to_missing_commit, garbage_ref, missing_blob]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_damaged_cache_is_rebuilt_and_the_next_load_works(
    make_repo: Callable[[str], WorkRepo], cache_dir: Path, caplog: pytest.LogCaptureFixture,
    damage: Callable[[GitSource, WorkRepo], None],
) -> None:
    repo = seeded(make_repo)
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    assert names(source) == ["a"]
    damage(source, repo)
    repo.commit("b", **{"executions/b.yaml": execution_yaml("b", target="x/Deployment/y")})
    restarted = GitSource(str(repo.path), cache_dir=cache_dir)  # nothing parsed in memory
    assert names(restarted) == ["a", "b"]
    assert restarted.cache_rebuilds == 1
    (warning,) = [r for r in caplog.records if r.getMessage() == "git cache damaged; rebuilding it from the remote"]
    assert warning.levelno == logging.WARNING
    assert warning.__dict__["cache"] == str(cache_dir / restarted.cache_path.name) and warning.__dict__["cause"]
    # the same object keeps working, and the rebuilt cache needs no second rebuild
    assert names(source) == ["a", "b"] and source.cache_rebuilds == 0
    assert names(GitSource(str(repo.path), cache_dir=cache_dir)) == ["a", "b"]
    assert not list(cache_dir.glob("*.damaged-*"))  # the damaged copy is not left behind


def test_corrupt_pack_index_is_rebuilt(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> None:
    repo = seeded(make_repo)
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    names(source)
    corrupt_pack_index(source, repo)
    repo.commit("b", **{"executions/b.yaml": execution_yaml("b", target="x/Deployment/y")})
    assert names(source) == ["a", "b"] and source.cache_rebuilds == 1


def test_a_rebuild_resets_the_open_repository_of_the_same_object(
    make_repo: Callable[[str], WorkRepo], cache_dir: Path
) -> None:
    repo = seeded(make_repo)
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    first = source.fetch()
    source.load(first)
    truncate_loose_objects(source, repo)
    assert source.resolve("main") == first  # resolve fetches every ref: damage found, healed
    assert source.cache_rebuilds == 1
    assert source.snapshot(first).files["executions/a.yaml"] == execution_yaml("a").encode()


def test_an_object_reported_missing_by_cat_file_is_damage(make_repo: Callable[[str], WorkRepo],
                                                          cache_dir: Path) -> None:
    source = GitSource(str(seeded(make_repo).path), cache_dir=cache_dir)
    source.fetch()
    absent = "0123456789abcdef" * 2 + "01234567"
    with pytest.raises(CacheDamaged) as caught:
        source._read_blobs({"executions/a.yaml": absent})
    assert caught.value.certain and absent in caught.value.cause and "missing" in caught.value.cause


def test_unreachable_remote_is_not_taken_for_damage(make_repo: Callable[[str], WorkRepo], tmp_path: Path,
                                                    cache_dir: Path) -> None:
    repo = seeded(make_repo)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    repo.git("push", "-q", str(remote), "main")
    source = GitSource(f"file://{remote}", cache_dir=cache_dir)
    commit = source.fetch()
    before = sorted(p.name for p in source.cache_path.rglob("*"))
    shutil.move(remote, tmp_path / "gone.git")  # the outage
    for _ in range(2):
        with pytest.raises(GitError, match="fetch from file://"):
            source.fetch()
    assert source.cache_rebuilds == 0
    assert sorted(p.name for p in source.cache_path.rglob("*")) == before  # the cache is untouched
    assert [e.name for e in source.load(commit).executions] == ["a"]  # and still serves reads


def test_damaged_remote_is_not_cloned_again_and_again(make_repo: Callable[[str], WorkRepo], tmp_path: Path,
                                                      cache_dir: Path) -> None:
    """The remote's own objects are corrupt: git's words look like damage, but the cache
    checks out locally, so it is left alone and the error is reported."""
    repo = seeded(make_repo)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    repo.git("push", "-q", str(remote), "main")
    source = GitSource(f"file://{remote}", cache_dir=cache_dir)
    source.fetch()
    repo.commit("b", **{"executions/b.yaml": execution_yaml("b", target="x/Deployment/y")})
    repo.git("push", "-q", str(remote), "main")
    blob = repo.git("rev-parse", "HEAD:executions/b.yaml")
    loose = remote / "objects" / blob[:2] / blob[2:]
    loose.chmod(0o644)
    loose.write_bytes(b"xx")
    for _ in range(2):
        with pytest.raises(GitError):
            source.fetch()
    assert source.cache_rebuilds == 0


@pytest.mark.parametrize("damage", [delete_packs, garbage_ref], ids=lambda f: f.__name__)
def test_service_cycle_starts_new_work_after_cache_damage(
    env: Env, damage: Callable[[GitSource, WorkRepo], None]
) -> None:
    declare(env, "first", target="a/Deployment/one")
    assert state(env.cycle(), "first") == ("Running", "Running")
    damage(env.reconciler.source, env.repo)
    declare(env, "second", target="b/Deployment/two")
    started = False
    for _ in range(2):  # within two cycles, without a restart
        result = env.cycle()
        if "second" in result.states and result.states["second"].phase == "Running":
            started = True
            break
    assert started, result.errors
    assert env.reconciler.source.cache_rebuilds == 1
    assert sorted(r["metadata"]["labels"]["kubernaut.ai/workflow-execution"] for r in env.runs()) == \
        ["first", "second"]


@pytest.mark.parametrize(("stderr", "damage"), [
    ("error: packfile ./objects/pack/pack-1a2b.pack cannot be accessed", True),
    ("fatal: bad object refs/kgr/status/main\nerror: /src did not send all necessary objects", True),
    ("error: corrupt loose object '6523df20b6caf4cb1198f4984d3f975149d3996a'", True),
    ("fatal: loose object 6523df20b6caf4cb1198f4984d3f975149d3996a (stored in ./objects/65/23df) is corrupt", True),
    ("error: Could not read 6523df20b6caf4cb1198f4984d3f975149d3996a", True),
    ("fatal: unable to read tree 6523df20b6caf4cb1198f4984d3f975149d3996a", True),
    ("error: inflate: data stream error (incorrect header check)", True),
    ("error: refs/heads/main does not point to a valid object!", True),
    ("error: index file ./objects/pack/pack-1a2b.idx is too small", True),
    ("missing blob 6523df20b6caf4cb1198f4984d3f975149d3996a", True),
    # the network, the remote side, authentication: never the cache
    ("fatal: unable to access 'https://h/r.git/': Could not resolve host: h", False),
    ("fatal: unable to access 'https://h/r.git/': Failed to connect to h port 443: Connection refused", False),
    ("fatal: '/gone' does not appear to be a git repository\nfatal: Could not read from remote repository.", False),
    ("remote: fatal: bad object 6523df20b6caf4cb1198f4984d3f975149d3996a", False),
    ("fatal: Authentication failed for 'https://h/r.git/'", False),
    ("fatal: early EOF\nfatal: fetch-pack: invalid index-pack output", False),
    ("fatal: couldn't find remote ref refs/heads/nope", False),
    ("ssh: connect to host h port 22: Connection timed out", False),
])
def test_what_counts_as_cache_damage(stderr: str, damage: bool) -> None:
    assert bool(suspect(stderr)) is damage


# -- shallow clones ----------------------------------------------------------------------------

def shallow_clone(make_repo: Callable[[str], WorkRepo], tmp_path: Path) -> Path:
    repo = seeded(make_repo)
    repo.commit("b", **{"executions/b.yaml": execution_yaml("b", target="x/Deployment/y")})
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo.path}", str(clone))
    assert (clone / ".git" / "shallow").exists()
    return clone


def test_shallow_clone_is_refused_with_the_fix(make_repo: Callable[[str], WorkRepo], tmp_path: Path,
                                               cache_dir: Path) -> None:
    clone = shallow_clone(make_repo, tmp_path)
    with pytest.raises(GitError) as caught:
        GitSource(str(clone), cache_dir=cache_dir).fetch()
    message = str(caught.value)
    assert "shallow clone" in message and "git fetch --unshallow" in message
    assert "not found" not in message
    git(clone, "fetch", "-q", "--unshallow")
    assert names(GitSource(str(clone), cache_dir=cache_dir)) == ["a", "b"]


def test_shallow_clone_exits_2_from_the_cli(make_repo: Callable[[str], WorkRepo], tmp_path: Path,
                                            cache_dir: Path) -> None:
    clone = shallow_clone(make_repo, tmp_path)
    result = CliRunner().invoke(main, ["plan", "--repo", str(clone), "--cache-dir", str(cache_dir)])
    assert result.exit_code == 2 and "git fetch --unshallow" in result.stderr


# -- sub-paths -------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "expected"), [
    ("", ""), ("team-a", "team-a"), ("team-a/", "team-a"), ("./team-a", "team-a"), ("a/./b", "a/b"),
    ("a//b", "a/b"), ("...", "..."), ("a..b", "a..b"),
])
def test_sub_path_is_normalised(path: str, expected: str, cache_dir: Path) -> None:
    assert GitSource("https://example.invalid/r.git", path=path, cache_dir=cache_dir).path == expected


@pytest.mark.parametrize(("path", "says"), [
    ("../x", "'..'"), ("..", "'..'"), ("a/../../b", "'..'"), ("a/../b", "'..'"), ("team/..", "'..'"),
    ("/abs", "absolute"), ("/", "absolute"), ("//etc/passwd", "absolute"), ("a\\..\\b", "backslash"),
])
def test_sub_path_leaving_the_repository_is_refused(path: str, says: str, cache_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        GitSource("https://example.invalid/r.git", path=path, cache_dir=cache_dir)
    assert repr(path) in str(caught.value) and says in str(caught.value) and "--path" in str(caught.value)


CLI_COMMANDS = [["render", "a"], ["plan"], ["sync", "--once", "--dry-run"], ["status"], ["get", "a"],
                ["wait", "a", "--timeout", "1s"], ["diff"]]


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("path", ["../x", "/abs", "a/../../b"])
def test_every_cli_command_exits_2_on_an_escaping_path(
    command: list[str], path: str, make_repo: Callable[[str], WorkRepo], cache_dir: Path
) -> None:
    repo = seeded(make_repo)
    result = CliRunner().invoke(main, [*command, "--repo", str(repo.path), "--path", path,
                                       "--cache-dir", str(cache_dir)])
    assert result.exit_code == 2, result.output
    assert f"repository sub-path {path!r}" in result.stderr
    assert not cache_dir.exists()  # refused before anything was fetched


def test_two_sources_on_one_cache_rebuild_it_once(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> None:
    """Two sources share one cache (as the CLI and a test harness may): one rebuilds it,
    the other goes on with the rebuilt cache instead of rebuilding it again."""
    repo = seeded(make_repo)
    one = GitSource(str(repo.path), cache_dir=cache_dir)
    two = GitSource(str(repo.path), cache_dir=cache_dir)
    names(one)
    names(two)
    ref_to_missing_commit(one, repo)
    assert names(one) == ["a"] and one.cache_rebuilds == 1
    assert names(two) == ["a"] and two.cache_rebuilds == 0


def test_the_cache_folds_its_packs_itself_not_after_every_fetch(make_repo: Callable[[str], WorkRepo],
                                                                cache_dir: Path) -> None:
    """git runs ``maintenance run --auto`` after every fetch (one more process per cycle); the
    cache turns that off in its own config and asks for it itself, on the first fetch of a
    process and then every MAINTENANCE_EVERY fetches — so its packs are still folded."""
    repo = make_repo("repo")
    repo.commit("seed", **{"executions/a.yaml": execution_yaml("a")})
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    source.fetch()
    cache = source.cache_path
    assert git(cache, "config", "maintenance.auto") == "false"
    git(cache, "config", "gc.autoDetach", "false")  # the fold runs in the foreground: observable
    git(cache, "config", "gc.autoPackLimit", "4")
    git(cache, "config", "fetch.unpackLimit", "1")  # a pack per fetch (no unpacking of small fetches)

    def packs() -> int:
        return len(list((cache / "objects" / "pack").glob("*.pack")))

    for k in range(6):
        repo.commit(f"c{k}", **{f"executions/e{k}.yaml": execution_yaml(f"e{k}")})
        source.fetch()
    assert packs() > 4  # git's own fetch would have folded them by now
    for _ in range(MAINTENANCE_EVERY - 7):
        source.fetch()
    assert source.fetches_done == MAINTENANCE_EVERY and packs() > 4
    source.fetch()  # the first fetch of the next round: maintenance runs
    assert packs() == 1
    again = GitSource(str(repo.path), cache_dir=cache_dir)  # a new process asks on its first fetch
    for k in range(5):
        repo.commit(f"d{k}", **{f"executions/d{k}.yaml": execution_yaml(f"d{k}")})
        source.fetch()
    assert packs() > 4
    again.fetch()
    assert packs() == 1
