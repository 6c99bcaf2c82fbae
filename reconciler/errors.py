"""The project's one exception tree.

Every error the reconciler raises on purpose derives from :class:`ReconcilerError`, so a
caller (the CLI, the service loop, a test) can catch one type and know it has seen every
expected failure. Adapters wrap third-party exceptions (GitPython, the kubernetes client,
Jinja) into these types with ``raise ... from e`` so that nothing above the adapter layer
imports or catches a library's exceptions.

Each error carries a ``reason`` (a stable CamelCase word used in status files, events and
metrics) and says whether retrying can help (``retryable``), which is the reporting policy
the reconcile loop applies.

    ReconcilerError
    ├── ValidationFailed        one or more Problems in declared documents
    ├── TemplateError           a template is missing, broken or renders invalid YAML
    ├── GitError                fetch/clone/read failures, unknown revisions
    ├── GitCommandFailed        one git command failed (the Git adapter's report, for its callers)
    ├── ConfigError             bad reconciler configuration or CLI usage
    └── KubeError               the Kubernetes API refused or failed a request
        ├── NotFound
        ├── AlreadyExists
        ├── Conflict
        ├── Forbidden
        ├── Invalid
        └── Unavailable         5xx, timeouts, dropped connections (retryable)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Problem:
    """One validation finding, always tied to a file and a field path.

    ``path`` is dotted (``spec.parameters.MEMORY_LIMIT``); ``rule`` is a short stable
    identifier (``unknown-field``) that tests and editor integrations can match on.
    """

    file: str
    line: int | None
    column: int | None
    path: str
    rule: str
    message: str = field(compare=False)

    def location(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def __str__(self) -> str:
        field_part = f" {self.path}:" if self.path else ""
        return f"{self.location()}:{field_part} {self.message} [{self.rule}]"


class ReconcilerError(Exception):
    """Base of every error the reconciler raises deliberately."""

    reason: str = "Unknown"
    retryable: bool = False


class ValidationFailed(ReconcilerError):
    reason = "ConfigurationError"

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid document")


class TemplateError(ReconcilerError):
    reason = "ConfigurationError"


class GitError(ReconcilerError):
    reason = "GitError"
    retryable = True


class UnknownRevision(GitError):
    retryable = False


class GitCommandFailed(ReconcilerError):
    """A git command that failed, as the Git adapter (``gitcmd``) reports it: git's own
    ``stderr``/``stdout``/exit ``status``, for the caller to judge (a rejected push, a
    missing object, a damaged cache) and to turn into a :class:`GitError` for people."""

    reason = "GitError"
    retryable = True

    def __init__(self, message: str, *, stderr: Any = "", stdout: Any = "", status: Any = None):
        super().__init__(message)
        self.stderr = stderr
        self.stdout = stdout
        self.status = status


class ConfigError(ReconcilerError):
    reason = "ConfigurationError"


class NotLeader(ReconcilerError):
    """This replica lost (or never had) the Lease: it must not write anything."""

    reason = "NotLeader"


class KubeError(ReconcilerError):
    """A Kubernetes API request failed. ``status`` is the HTTP status (0 when none)."""

    reason = "KubernetesError"

    def __init__(self, message: str, *, status: int = 0, api_reason: str = ""):
        super().__init__(message)
        self.status = status
        self.api_reason = api_reason


class NotFound(KubeError):
    reason = "NotFound"


class AlreadyExists(KubeError):
    reason = "AlreadyExists"


class Conflict(KubeError):
    reason = "Conflict"
    retryable = True


class Forbidden(KubeError):
    reason = "Forbidden"

    def __init__(self, message: str, *, verb: str = "", resource: str = "", **kw: object):
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.verb = verb
        self.resource = resource


class Invalid(KubeError):
    reason = "ConfigurationError"


class Unavailable(KubeError):
    reason = "Unavailable"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object):
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after
