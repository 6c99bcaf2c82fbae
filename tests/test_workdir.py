"""Work-tree validation reads what Git mode reads: symbolic links are never followed.

Each case builds a real directory tree with real links, then checks three things: the
linked content is not read (no execution from it, no problem about it), the link is
reported as ignored, and the result matches what ``GitSource`` sees when the same tree
is committed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.errors import ConfigError
from reconciler.source.gitsource import GitSource
from reconciler.source.workdir import validate_paths
from tests.conftest import CATALOG, WorkRepo, execution_yaml

BROKEN = "apiVersion: [\n"  # would be a problem if it were read


def outside(tmp_path: Path) -> Path:
    """A directory outside the repository, holding documents that must never be read."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "executions").mkdir(parents=True)
    (elsewhere / "executions" / "stolen.yaml").write_text(execution_yaml("stolen", target="x/Deployment/y"))
    (elsewhere / "executions" / "broken.yaml").write_text(BROKEN)
    (elsewhere / "workflows").mkdir()
    (elsewhere / "workflows" / "w.yaml").write_text(BROKEN)
    (elsewhere / "secret.yaml").write_text(BROKEN)
    return elsewhere


def link_dir_outside(repo: Path, elsewhere: Path) -> list[str]:
    os.symlink(elsewhere / "executions", repo / "executions" / "linked")
    return ["executions/linked"]


def link_file_outside(repo: Path, elsewhere: Path) -> list[str]:
    os.symlink(elsewhere / "secret.yaml", repo / "executions" / "secret.yaml")
    return ["executions/secret.yaml"]


def link_to_filesystem_root(repo: Path, elsewhere: Path) -> list[str]:
    os.symlink("/", repo / "executions" / "root")
    return ["executions/root"]


def link_loop(repo: Path, elsewhere: Path) -> list[str]:
    os.symlink("loop", repo / "executions" / "loop")
    os.symlink(".", repo / "executions" / "dot")
    return ["executions/dot", "executions/loop"]


def link_inside_repo(repo: Path, elsewhere: Path) -> list[str]:
    """Points at a file of the repository itself: still ignored, like Git."""
    (repo / "executions" / "nested").mkdir()
    os.symlink("../main.yaml", repo / "executions" / "nested" / "again.yaml")
    os.symlink("nested", repo / "executions" / "samedir")
    return ["executions/nested/again.yaml", "executions/samedir"]


def broken_link(repo: Path, elsewhere: Path) -> list[str]:
    os.symlink(repo / "does-not-exist.yaml", repo / "executions" / "dangling.yaml")
    return ["executions/dangling.yaml"]


def linked_workflows_dir(repo: Path, elsewhere: Path) -> list[str]:
    (repo / "workflows" / "w.yaml").rename(repo / "w.yaml.real")
    (repo / "workflows").rmdir()
    os.symlink(elsewhere / "workflows", repo / "workflows")
    return ["workflows"]


CASES = [link_dir_outside, link_file_outside, link_to_filesystem_root, link_loop, link_inside_repo,
         broken_link, linked_workflows_dir]


@pytest.mark.parametrize("make_link", CASES, ids=lambda f: f.__name__)
def test_symlinks_are_not_followed_in_the_work_tree(
    make_link: Callable[[Path, Path], list[str]], make_repo: Callable[[str], WorkRepo], tmp_path: Path,
    cache_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_repo("repo")
    repo.write("workflows/w.yaml", CATALOG)
    repo.write("executions/main.yaml", execution_yaml("main"))
    links = make_link(repo.path, outside(tmp_path))
    monkeypatch.chdir(repo.path)  # validate's default: the current directory
    result = validate_paths([Path(".")])
    names = sorted(e.name for d in result.declarations for e in d.executions)
    assert names == (["main"] if make_link is not linked_workflows_dir else [])
    assert all("elsewhere" not in f and "stolen" not in f for f in result.files)
    assert sorted(result.ignored) == links
    logged = [r.__dict__.get("file") for r in caplog.records if r.name == "reconciler.workdir"]
    assert sorted(logged) == links
    # what Git mode sees when the very same tree is committed
    repo.commit("as is")
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    decl = source.load(source.fetch())
    assert sorted(e.name for e in decl.executions) == names
    git_problems = sorted((p.file, p.rule) for p in decl.problems)
    assert sorted((p.file, p.rule) for p in result.problems) == git_problems


def test_linked_executions_dir_to_root_is_not_walked(make_repo: Callable[[str], WorkRepo],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo("repo")
    repo.write("workflows/w.yaml", CATALOG)
    os.symlink("/", repo.path / "executions")
    monkeypatch.chdir(repo.path)
    result = validate_paths([Path(".")])
    assert result.ignored == ["executions"] and result.checked == 1
    assert all(not f.startswith("executions") for f in result.files)


def test_linked_sub_path_is_not_searched(make_repo: Callable[[str], WorkRepo], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A linked team directory (the repository sub-path) is neither found from above
    nor accepted when named on the command line."""
    repo = make_repo("repo")
    repo.write("team-a/workflows/w.yaml", CATALOG)
    os.symlink(outside(tmp_path), repo.path / "team-b")
    monkeypatch.chdir(repo.path)
    result = validate_paths([Path(".")])
    assert result.files == ["team-a/workflows/w.yaml"] and len(result.declarations) == 1
    for given in ("team-b", "team-b/executions", "team-b/executions/stolen.yaml"):
        with pytest.raises(ConfigError, match=r"team-b:? is a symbolic link"):
            validate_paths([Path(given)])


@pytest.mark.parametrize("given", ["executions/link.yaml", "executions/linked/stolen.yaml"])
def test_a_named_link_exits_2_from_validate(given: str, make_repo: Callable[[str], WorkRepo], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo("repo")
    repo.write("workflows/w.yaml", CATALOG)
    repo.write("executions/main.yaml", execution_yaml("main"))
    elsewhere = outside(tmp_path)
    os.symlink(elsewhere / "secret.yaml", repo.path / "executions" / "link.yaml")
    os.symlink(elsewhere / "executions", repo.path / "executions" / "linked")
    monkeypatch.chdir(repo.path)
    result = CliRunner().invoke(main, ["validate", given])
    assert result.exit_code == 2 and "is a symbolic link" in result.stderr
    assert "stolen" not in result.stdout


def test_ignored_links_are_named_on_stderr_and_do_not_change_the_verdict(
    make_repo: Callable[[str], WorkRepo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo("repo")
    repo.write("workflows/w.yaml", CATALOG)
    repo.write("executions/main.yaml", execution_yaml("main"))
    os.symlink(outside(tmp_path) / "secret.yaml", repo.path / "executions" / "secret.yaml")
    monkeypatch.chdir(repo.path)
    result = CliRunner().invoke(main, ["validate", "."])
    assert result.exit_code == 0, result.output
    assert "symbolic link ignored: executions/secret.yaml" in result.stderr
    assert "2 file(s) valid" in result.stdout
