"""Shared fixtures: real Git repositories in temporary directories, example documents."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
EXAMPLES = PROJECT / "examples-repo"
SHARED = PROJECT.parent / "shared"
IMAGE = "ghcr.io/acme/wf/increase-memory@sha256:" + "a" * 64

CATALOG = f"""\
apiVersion: kubernaut.ai/v1alpha1
kind: WorkflowDefinition
metadata: {{name: increase-memory-limit-1-2-0}}
spec:
  workflowId: increase-memory-limit
  version: "1.2.0"
  containerImage: {IMAGE}
  parameters:
    - {{name: NAMESPACE, required: true}}
    - {{name: MEMORY_LIMIT, required: true, description: New memory limit}}
    - {{name: CONTAINER, required: false}}
"""


def execution_yaml(name: str = "oom-payment-api", *, target: str = "payments/Deployment/payment-api",
                   params: str = "{NAMESPACE: payments, MEMORY_LIMIT: 1Gi}", extra: str = "",
                   workflow: str = 'workflowId: increase-memory-limit, version: "1.2.0"') -> str:
    return f"""\
apiVersion: kubernaut.ai/v1alpha1
kind: WorkflowExecution
metadata:
  name: {name}
spec:
  workflowRef: {{{workflow}}}
  targetResource: {target}
  parameters: {params}
{extra}"""


def git(cwd: Path, *args: str) -> str:
    git_env = {**os.environ, "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.invalid",
               "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, env=git_env, check=True, capture_output=True,
                          text=True).stdout.strip()


class WorkRepo:
    """A real repository with helpers to write files and commit them."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "-q", "-b", "main")
        git(path, "config", "commit.gpgsign", "false")

    def write(self, rel: str, text: str) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def remove(self, rel: str) -> None:
        (self.path / rel).unlink()

    def commit(self, message: str = "change", **files: str) -> str:
        for rel, text in files.items():
            self.write(rel, text)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def git(self, *args: str) -> str:
        return git(self.path, *args)


# Credentials used across the suite. No log record of any test may contain them
# (the fake API server's bearer token, the Git token of test_gitauth, the webhook secret).
KNOWN_SECRETS = ("fake-bearer-token-DO-NOT-LOG", "ghp_S3cretTokenValue0123456789abcdef",
                 "webhook-secret-for-tests")


@pytest.fixture(autouse=True)
def _no_credentials_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__}"
        for secret in KNOWN_SECRETS:
            assert secret not in text, f"a credential reached the log: {record.name}: {record.getMessage()[:200]}"


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[[str], WorkRepo]:
    def factory(name: str = "repo") -> WorkRepo:
        return WorkRepo(tmp_path / name)

    return factory


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (outside CI): Tekton schemas unavailable")
    return SHARED


from tests.harness import env  # noqa: E402,F401  (the cycle fixture, shared by several modules)


def push_as_human(clone: Path, message: str, files: Mapping[str, str | None]) -> None:
    """A person's commit from their clone: rebase on main, write (None: delete) the files, push."""
    git(clone, "pull", "-q", "--rebase", "origin", "main")
    for rel, text in files.items():
        path = clone / rel
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", message)
    git(clone, "push", "-q", "origin", "HEAD:main")
