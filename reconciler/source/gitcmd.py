"""The Git adapter: the one module that imports GitPython or starts the ``git`` binary.

Everything else reaches Git through what is here, so the project's Git surface is one
file to read (and an import-linter contract, with ``tests/test_layers.py``, keeps it so):

* :func:`open_repository` / :class:`Repository` — a bare cache repository and its
  command object, :class:`Commands`, whose ``commands.ls_tree("-r", sha)`` runs
  ``git ls-tree -r <sha>`` as GitPython does, and raises :class:`GitCommandFailed` (the
  project's error tree) instead of GitPython's ``GitCommandError``: the same ``stderr``,
  ``stdout``, ``status`` and text, so callers judge it exactly as before;
* :func:`run` — one ``git`` process to completion, as ``subprocess.run`` with
  ``capture_output=True`` runs it (its errors are the standard library's);
* :func:`spawn` — a long-lived ``git`` process (the ``cat-file --batch-command`` reader).

Nothing here decides anything: it starts git and translates errors.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from reconciler.errors import GitCommandFailed

if TYPE_CHECKING:
    import git

__all__ = ["Commands", "GitCommandFailed", "Repository", "open_repository", "run", "spawn"]


def _gitpython() -> Any:
    """GitPython, imported on first use: the commands that only run ``git`` (and the CLI's
    start-up) never pay for it."""
    import git

    return git


def _failed(error: git.GitError) -> GitCommandFailed:
    if isinstance(error, _gitpython().GitCommandError):
        return GitCommandFailed(str(error), stderr=error.stderr, stdout=error.stdout, status=error.status)
    return GitCommandFailed(str(error))


class Commands:
    """GitPython's command object for one repository; every failure a GitCommandFailed."""

    __slots__ = ("_inner",)

    def __init__(self, inner: git.Git):
        self._inner = inner

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except _gitpython().GitError as e:
                raise _failed(e) from e

        return call


class Repository:
    """An open repository: its commands, and ``close`` to let its processes go."""

    __slots__ = ("_repo", "git")

    def __init__(self, repo: git.Repo):
        self._repo = repo
        self.git = Commands(repo.git)

    def close(self) -> None:
        self._repo.close()


def open_repository(path: Path, *, init_bare: bool = False) -> Repository:
    """The repository at ``path`` (created bare first when ``init_bare``); GitCommandFailed
    when git cannot open or create it."""
    git = _gitpython()
    try:
        return Repository(git.Repo.init(path, bare=True) if init_bare else git.Repo(path))
    except git.GitError as e:
        raise _failed(e) from e


@overload
def run(args: Sequence[str], *, cwd: Path | str | None = ..., input: str | None = ...,
        env: Mapping[str, str] | None = ..., check: bool = ..., text: Literal[True],
        timeout: float | None = ...) -> subprocess.CompletedProcess[str]: ...


@overload
def run(args: Sequence[str], *, cwd: Path | str | None = ..., input: bytes | None = ...,
        env: Mapping[str, str] | None = ..., check: bool = ..., text: Literal[False] = ...,
        timeout: float | None = ...) -> subprocess.CompletedProcess[bytes]: ...


def run(args: Sequence[str], *, cwd: Path | str | None = None, input: bytes | str | None = None,
        env: Mapping[str, str] | None = None, check: bool = False, text: bool = False,
        timeout: float | None = None) -> subprocess.CompletedProcess[Any]:
    """``git ARGS`` run to completion, its output captured: ``subprocess.run`` semantics
    (``CalledProcessError`` with ``check``, ``OSError`` when git cannot start)."""
    return subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, env=env, check=check,
                          text=text, timeout=timeout)


def spawn(args: Sequence[str], *, cwd: Path | str, env: Mapping[str, str] | None = None,
          stderr: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """A long-lived ``git ARGS`` with pipes on stdin and stdout (binary); ``stderr`` as given."""
    return subprocess.Popen(["git", *args], cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=stderr)
