"""Token and SSH credentials reach git only through the environment and never leak."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.errors import ConfigError, GitError
from reconciler.record.status import ExecutionState
from reconciler.record.writeback import GitStatusStore
from reconciler.source.gitauth import GitAuth, git_environment, secrets_of
from reconciler.source.gitsource import GitSource
from tests.conftest import CATALOG, WorkRepo, execution_yaml, git
from tests.githttp import GitHttpServer

TOKEN = "ghp_S3cretTokenValue0123456789abcdef"


@pytest.fixture
def served(make_repo: Callable[[str], WorkRepo], tmp_path: Path) -> tuple[GitHttpServer, str]:
    seed = make_repo("seed")
    seed.commit("declare", **{"workflows/w.yaml": CATALOG, "executions/oom.yaml": execution_yaml("oom")})
    root = tmp_path / "served"
    root.mkdir()
    git(root, "init", "-q", "--bare", "-b", "main", "ops.git")
    git(root / "ops.git", "config", "http.receivepack", "true")
    seed.git("push", "-q", str(root / "ops.git"), "main")
    return GitHttpServer(root, "x-access-token", TOKEN), "ops.git"


def test_token_auth_fetch_and_push_without_leaking(served: tuple[GitHttpServer, str], tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    server, repo = served
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = git_environment(GitAuth(token_file=token_file))
    caplog.set_level(logging.DEBUG)
    with server:
        source = GitSource(server.url(repo), cache_dir=tmp_path / "cache", env=env)
        decl = source.load(source.fetch())
        assert [e.name for e in decl.executions] == ["oom"]
        store = GitStatusStore(source, base_delay=0.001)
        store.save({"oom": ExecutionState("oom", phase="Running", reason="Running")}, [], "r")
        assert store.commits == 1
        status_text = git(server.root / repo, "show", "main:status/oom.yaml")
    secrets = secrets_of(env)
    assert TOKEN in secrets
    for secret in secrets:
        assert secret not in status_text
        assert secret not in caplog.text
        assert secret not in str(source.cache_path.joinpath("config").read_text())
        assert secret not in source.display_url


def test_wrong_token_is_refused_with_a_clean_error(served: tuple[GitHttpServer, str], tmp_path: Path) -> None:
    server, repo = served
    bad = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
           "GIT_CONFIG_VALUE_0": "Authorization: Basic eC1hY2Nlc3MtdG9rZW46d3Jvbmc="}
    with server:
        source = GitSource(server.url(repo), cache_dir=tmp_path / "cache", env=bad)
        with pytest.raises(GitError) as caught:
            source.fetch()
    assert server.denied >= 1
    assert "wrong" not in str(caught.value) and "eC1hY2Nlc3MtdG9rZW46d3Jvbmc" not in str(caught.value)


def test_token_from_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_TEST_TOKEN", TOKEN)
    env = git_environment(GitAuth(token_env="RECONCILER_TEST_TOKEN"))
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader" and TOKEN in secrets_of(env)
    monkeypatch.delenv("RECONCILER_TEST_TOKEN")
    with pytest.raises(ConfigError, match="RECONCILER_TEST_TOKEN is not set"):
        git_environment(GitAuth(token_env="RECONCILER_TEST_TOKEN"))


def test_ssh_uses_the_key_and_strict_host_checking(tmp_path: Path) -> None:
    key, hosts = tmp_path / "id_ed25519", tmp_path / "known_hosts"
    key.write_text("KEY")
    hosts.write_text("github.com ssh-ed25519 AAAA")
    env = git_environment(GitAuth(ssh_key_file=key, known_hosts_file=hosts))
    command = env["GIT_SSH_COMMAND"]
    assert f"-i {key}" in command and "StrictHostKeyChecking=yes" in command
    assert f"UserKnownHostsFile={hosts}" in command and "GIT_CONFIG_COUNT" not in env
    with pytest.raises(ConfigError, match="sshKeyFile"):
        git_environment(GitAuth(ssh_key_file=tmp_path / "missing", known_hosts_file=hosts))


def test_ssh_without_known_hosts_is_rejected() -> None:
    with pytest.raises(ValueError, match="knownHostsFile"):
        GitAuth(ssh_key_file=Path("/k"))


URL_TOKEN = "glpat-UrlCarriedToken-4242"


@pytest.mark.parametrize("make_url", [
    lambda base: base.replace("http://", f"http://oauth2:{URL_TOKEN}@"),
    lambda base: f"{base}?private_token={URL_TOKEN}",
    lambda base: f"{base}?access_token={URL_TOKEN}&x=1",
    lambda base: base.replace("http://", f"http://{URL_TOKEN}@"),
], ids=["user-info", "private_token", "access_token", "token-as-user"])
def test_token_in_the_url_never_reaches_errors_or_logs(
    make_url: Callable[[str], str], served: tuple[GitHttpServer, str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server refuses it (the token is wrong): git's error echoes the URL, ours must not."""
    server, repo = served
    with server:
        source = GitSource(make_url(server.url(repo)), cache_dir=tmp_path / "cache")
        with pytest.raises(GitError) as caught:
            source.fetch()
    assert server.denied >= 1
    assert URL_TOKEN not in str(caught.value) and "127.0.0.1" in str(caught.value)
    assert URL_TOKEN not in source.display_url
    ours = [r for r in caplog.records if r.name.startswith("reconciler")]
    assert all(URL_TOKEN not in f"{r.getMessage()} {r.__dict__}" for r in ours)
