"""The Git source against real repositories: branches, sub-paths, commits, caching, remotes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from git import GitCommandError

from reconciler.errors import GitError, UnknownRevision
from reconciler.source.gitsource import GitSource
from reconciler.source.gitwords import clean_stderr, redact_text, redact_url
from reconciler.views.plan import Action, Change, plan_change
from tests.conftest import CATALOG, WorkRepo, execution_yaml, git

STATUS_COMPLETED = """\
apiVersion: kubernaut.ai/v1alpha1
kind: WorkflowExecutionStatus
metadata: {name: first}
status: {phase: Completed, reason: Succeeded, executionRef: {kind: PipelineRun, name: wfe-x}}
"""


def seeded(make_repo: Callable[[str], WorkRepo], prefix: str = "") -> WorkRepo:
    repo = make_repo("repo")
    repo.commit("catalog and first execution", **{
        f"{prefix}workflows/w.yaml": CATALOG,
        f"{prefix}executions/first.yaml": execution_yaml("first"),
    })
    return repo


def names(source: GitSource, commit: str) -> list[str]:
    return [e.name for e in source.load(commit).executions]


def test_tracked_branch_only(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> None:
    repo = seeded(make_repo)
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit("feature work", **{"executions/second.yaml": execution_yaml("second", target="a/Deployment/b")})
    main = GitSource(str(repo.path), branch="main", cache_dir=cache_dir)
    assert names(main, main.fetch()) == ["first"]
    feature = GitSource(str(repo.path), branch="feature", cache_dir=cache_dir)
    assert sorted(names(feature, feature.fetch())) == ["first", "second"]


def test_sub_path_selection(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> None:
    repo = seeded(make_repo, prefix="team-a/")
    repo.commit("team b", **{"team-b/workflows/w.yaml": CATALOG,
                             "team-b/executions/b.yaml": execution_yaml("b-exec")})
    a = GitSource(str(repo.path), path="team-a", cache_dir=cache_dir)
    b = GitSource(str(repo.path), path="./team-b/", cache_dir=cache_dir)
    assert names(a, a.fetch()) == ["first"]
    assert names(b, b.fetch()) == ["b-exec"]
    decl = b.load(b.fetch())
    assert decl.executions[0].file == "team-b/executions/b.yaml"


def test_reads_the_commit_not_the_dirty_work_tree(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> None:
    repo = seeded(make_repo)
    repo.write("executions/first.yaml", "garbage: [")
    repo.write("executions/uncommitted.yaml", execution_yaml("uncommitted"))
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    decl = source.load(source.fetch())
    assert [e.name for e in decl.executions] == ["first"] and decl.problems == []


def test_reads_the_tracked_branch_while_work_tree_is_on_another(
    make_repo: Callable[[str], WorkRepo], cache_dir: Path
) -> None:
    repo = seeded(make_repo)
    repo.git("checkout", "-q", "-b", "other")
    repo.remove("executions/first.yaml")
    repo.commit("remove on other branch")
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    assert names(source, source.fetch()) == ["first"]


def test_origins_name_the_commits(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> None:
    repo = seeded(make_repo)
    introduced = repo.git("rev-parse", "HEAD")
    repo.commit("unrelated", **{"README.md": "hello"})
    edited = repo.commit("edit first", **{"executions/first.yaml": execution_yaml("first", extra="  suspend: true\n")})
    repo.commit("add second", **{"executions/second.yaml": execution_yaml("second", target="x/Deployment/y")})
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    decl = source.load(source.fetch())
    first = decl.find("first")
    assert first is not None and first.origin is not None
    assert (first.origin.last_commit, first.origin.introduced_commit) == (edited, introduced)


def test_same_commit_is_not_parsed_twice(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> None:
    repo = seeded(make_repo)
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    first = source.load(source.fetch())
    again = source.load(source.fetch())
    assert again.executions is first.executions and source.parse_count == 1
    repo.commit("second", **{"executions/second.yaml": execution_yaml("second", target="x/Deployment/y")})
    assert names(source, source.fetch()) == ["first", "second"]
    assert source.parse_count == 2


def test_fetch_from_a_remote_url(make_repo: Callable[[str], WorkRepo], tmp_path: Path, cache_dir: Path) -> None:
    repo = seeded(make_repo)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    repo.git("push", "-q", str(remote), "main")
    source = GitSource(f"file://{remote}", cache_dir=cache_dir)
    before = source.fetch()
    repo.commit("more", **{"executions/second.yaml": execution_yaml("second", target="x/Deployment/y")})
    repo.git("push", "-q", str(remote), "main")
    after = source.fetch()
    assert before != after and names(source, after) == ["first", "second"]
    assert (cache_dir).exists() and not (remote / "executions").exists()


def test_unknown_branch_and_revision(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> None:
    repo = seeded(make_repo)
    with pytest.raises(GitError, match="nope"):
        GitSource(str(repo.path), branch="nope", cache_dir=cache_dir).fetch()
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    with pytest.raises(UnknownRevision, match="deadbeef"):
        source.resolve("deadbeef")
    with pytest.raises(UnknownRevision):
        source.resolve("--upload-pack=touch /tmp/pwned")


def test_revisions_resolve_like_git(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> None:
    repo = seeded(make_repo)
    first = repo.git("rev-parse", "HEAD")
    second = repo.commit("two", **{"README.md": "x"})
    repo.git("tag", "v1", first)
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    assert source.resolve("HEAD") == second
    assert source.resolve("HEAD~1") == first
    assert source.resolve("v1") == first
    assert source.resolve("main") == second
    assert source.resolve(first[:10]) == first


@pytest.mark.parametrize("url", [
    "https://robot:s3cr3t-token@127.0.0.1:9/acme/remediations.git",
    "https://127.0.0.1:9/acme/remediations.git?private_token=s3cr3t-token",
    "http://127.0.0.1:9/acme/remediations.git?x=1&access_token=s3cr3t-token",
    "https://oauth2:s3cr3t-token@127.0.0.1:9/acme/remediations.git?token=s3cr3t-token",
])
def test_unreachable_remote_errors_without_credentials(url: str, cache_dir: Path) -> None:
    """git echoes the URL it could not reach; the error we raise must not."""
    source = GitSource(url, cache_dir=cache_dir)
    with pytest.raises(GitError) as caught:
        source.fetch()
    assert "s3cr3t-token" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert "s3cr3t" not in source.display_url


@pytest.mark.parametrize(("url", "expected"), [
    ("https://user:pw@github.com/a/b.git", "https://***@github.com/a/b.git"),
    ("https://x-access-token:ghp_abc@github.com/a/b", "https://***@github.com/a/b"),
    ("https://oauth2:glpat-TOKEN@gitlab.com/g/r.git", "https://***@gitlab.com/g/r.git"),
    ("https://ghp_tokenonly@github.com/a/b", "https://***@github.com/a/b"),
    ("https://user:pa/ss?w#rd@host/x.git", "https://***@host/x.git"),  # unencoded / ? # in a password
    ("https://user:p@ss@host/x.git", "https://***@host/x.git"),
    ("https://gitlab.com/g/r.git?private_token=glpat-abc", "https://gitlab.com/g/r.git?private_token=***"),
    ("https://h/r.git?access_token=a1&token=b2", "https://h/r.git?access_token=***&token=***"),
    ("https://h/r.git?password=p&client_secret=s&api_key=k", "https://h/r.git?password=***&client_secret=***&api_key=***"),
    ("https://h/r.git?sv=2020&sig=AbC%2Bd", "https://h/r.git?sv=***&sig=***"),  # every value: names vary
    ("https://u:t@h/r.git?token=x#frag", "https://***@h/r.git?token=***#frag"),
    ("ssh://git@host:2222/r.git", "ssh://***@host:2222/r.git"),
    ("oauth2:glpat-TOKEN@gitlab.com:g/r.git", "***@gitlab.com:g/r.git"),
    ("https://github.com/a/b.git", "https://github.com/a/b.git"),
    ("https://host:8443/a/b.git", "https://host:8443/a/b.git"),
    ("git@github.com:a/b.git", "git@github.com:a/b.git"),
    ("/local/path", "/local/path"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(("text", "secret", "kept"), [
    ("fatal: unable to access 'https://robot:s3cr3t@127.0.0.1:9/r.git/': Failed to connect", "s3cr3t",
     "https://***@127.0.0.1:9/r.git/"),
    ("fatal: unable to access 'https://h/r.git/?private_token=glpat-XYZ': The requested URL returned error: 403",
     "glpat-XYZ", "?private_token=***'"),
    ('fatal: repository "https://h/r.git?access_token=tok123" not found', "tok123", 'access_token=***"'),
    ("remote: Invalid username or password.\nfatal: Authentication failed for https://bot:pw-999@h/r",
     "pw-999", "Authentication failed for https://***@h/r"),
    ("From https://oauth2:glpat-ABC@gitlab.com/g/r\n * branch main -> FETCH_HEAD", "glpat-ABC", "gitlab.com/g/r"),
    ("> Authorization: Basic eC1hY2Nlc3MtdG9rZW46c2VjcmV0\n< HTTP/1.1 401", "eC1hY2Nlc3MtdG9rZW46c2VjcmV0",
     "Authorization: ***"),
    ("> Authorization: Bearer ya29.secret-bearer", "ya29.secret-bearer", "Authorization: ***"),
    ("error: cannot use token=abc123def in this context", "abc123def", "token=***"),
    ("fatal: bad config: http.password: hunter22", "hunter22", "password: ***"),
    ("fatal: 'https://h/a?sig=Zm9v%2Bbar&se=2030' does not appear to be a git repository", "Zm9v%2Bbar",
     "does not appear to be a git repository"),
])
def test_redact_text_in_longer_messages(text: str, secret: str, kept: str) -> None:
    cleaned = redact_text(text)
    assert secret not in cleaned and kept in cleaned


def test_literal_secrets_are_redacted_from_git_errors() -> None:
    error = GitCommandError(["git", "fetch"], 128, stderr="fatal: header 'x: myrawsecretvalue' rejected")
    assert "myrawsecretvalue" not in clean_stderr(error, "https://h/r.git", ["myrawsecretvalue"])
    assert clean_stderr(error, "https://h/r.git").endswith("rejected")


def test_large_files_are_reported_not_read(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> None:
    repo = seeded(make_repo)
    repo.commit("big", **{"executions/big.yaml": "# " + "x" * 4096 + "\n"})
    source = GitSource(str(repo.path), cache_dir=cache_dir, max_file_bytes=1024)
    decl = source.load(source.fetch())
    assert [(p.file, p.rule) for p in decl.problems] == [("executions/big.yaml", "file-too-large")]
    assert [e.name for e in decl.executions] == ["first"]


def test_symlinks_are_not_followed(make_repo: Callable[[str], WorkRepo], cache_dir: Path) -> None:
    repo = seeded(make_repo)
    os.symlink("/etc/passwd", repo.path / "executions" / "link.yaml")
    repo.commit("symlink")
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    decl = source.load(source.fetch())
    assert decl.problems == [] and names(source, source.fetch()) == ["first"]


def test_plan_base_head_flags_edit_of_started_execution(
    make_repo: Callable[[str], WorkRepo], cache_dir: Path
) -> None:
    repo = seeded(make_repo)
    repo.commit("status recorded by the reconciler", **{"status/first.yaml": STATUS_COMPLETED})
    repo.git("checkout", "-q", "-b", "pr")
    repo.commit("add one, edit another", **{
        "executions/second.yaml": execution_yaml("second", target="search/Deployment/api"),
        "executions/first.yaml": execution_yaml("first", params="{NAMESPACE: payments, MEMORY_LIMIT: 2Gi}"),
    })
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    base, head = source.resolve("main"), source.resolve("pr")
    plan = plan_change(source.load(base), source.load(head), base_revision=base, revision=head)
    by_name = {e.name: e for e in plan.entries}
    assert set(by_name) == {"first", "second"}
    assert (by_name["second"].change, by_name["second"].action) == (Change.ADDED, Action.CREATE)
    assert by_name["second"].run_name.startswith("wfe-")
    assert by_name["first"].change == Change.EDITED
    assert by_name["first"].violations and "SpecChangedAfterStart" in by_name["first"].violations[0]
    assert plan.failed


def test_plan_base_head_allows_releasing_a_held_execution(
    make_repo: Callable[[str], WorkRepo], cache_dir: Path
) -> None:
    repo = make_repo("repo")
    repo.commit("held", **{"workflows/w.yaml": CATALOG,
                           "executions/first.yaml": execution_yaml("first", extra="  suspend: true\n")})
    base = repo.git("rev-parse", "HEAD")
    head = repo.commit("release", **{"executions/first.yaml": execution_yaml("first", extra="  suspend: false\n")})
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    plan = plan_change(source.load(base), source.load(head))
    (entry,) = plan.entries
    assert (entry.change, entry.action, entry.violations) == (Change.SUSPEND, Action.CREATE, ())
    assert not plan.failed


def test_status_commits_do_not_count_as_declared_changes(make_repo: Callable[[str], WorkRepo],
                                                         cache_dir: Path) -> None:
    repo = seeded(make_repo)
    declared = repo.git("rev-parse", "HEAD")
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    source.load(source.fetch())
    status_commit = repo.commit("status", **{"status/first.yaml": STATUS_COMPLETED})
    assert source.fetch() == status_commit
    assert source.declared_revision(status_commit) == declared
    decl = source.load(status_commit)
    assert source.parse_count == 1  # executions not parsed again
    assert decl.revision == declared and decl.statuses["first"].phase == "Completed"


def test_branch_names_resolve_fresh_not_from_a_stale_cache(make_repo: Callable[[str], WorkRepo],
                                                          cache_dir: Path) -> None:
    repo = seeded(make_repo)
    repo.git("checkout", "-q", "-b", "pr")
    first = repo.commit("pr 1", **{"README.md": "1"})
    assert GitSource(str(repo.path), cache_dir=cache_dir).resolve("pr") == first
    second = repo.commit("pr 2", **{"README.md": "2"})
    assert GitSource(str(repo.path), cache_dir=cache_dir).resolve("pr") == second  # same cache, new process
