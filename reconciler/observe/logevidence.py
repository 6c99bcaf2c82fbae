"""The one log line that explains a failed step — found, redacted, and nothing more.

Tekton's status says only ``"step-apply" exited with code 1``; the reason (``Error from
server (Forbidden): … cannot patch resource "deployments"``) is in the step's log.  The
reconciler reads the tail of the failing step's log and keeps *only* the last line that
classifies the failure (forbidden, out of memory, quota, …), with anything that looks
like a credential masked.  Status files are committed to Git, so whole logs never go
there.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.observe.failures import classify_text

MAX_LINE = 400
_SECRETS = [
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1***"),
    (re.compile(r"(?i)\b((?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key)\s*[=:]\s*)\S+"),
     r"\1***"),
    (re.compile(r"(?i)(://[^/\s:@]+:)[^@\s]+@"), r"\1***@"),
    (re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|glpat-[A-Za-z0-9_-]{20,}|xox[baprs]-[A-Za-z0-9-]{10,})\b"), "***"),
]


def redact(line: str) -> str:
    for pattern, replacement in _SECRETS:
        line = pattern.sub(replacement, line)
    return line


def explaining_line(log: str) -> str | None:
    """The last log line that the failure rules recognise, redacted and trimmed."""
    for line in reversed(log.splitlines()):
        stripped = line.strip()
        if stripped and classify_text(stripped) is not None:
            text = redact(stripped)
            return text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"
    return None


def with_step_message(children: Sequence[Mapping[str, Any]], task: str | None, step: str,
                      line: str) -> list[dict[str, Any]]:
    """Copies of the TaskRuns (or Pods) with ``line`` as the failing step's termination
    message — exactly where Tekton puts a step's termination log — for reclassification."""
    out = [copy.deepcopy(dict(c)) for c in children]
    for child in out:
        labels = (child.get("metadata") or {}).get("labels") or {}
        status = child.get("status") or {}
        if "steps" in status and (task is None or labels.get("tekton.dev/pipelineTask") == task):
            for s in status["steps"]:
                if s.get("name") == step and isinstance(s.get("terminated"), dict):
                    s["terminated"]["message"] = line
        for c in status.get("containerStatuses") or []:
            if c.get("name") == step and isinstance((c.get("state") or {}).get("terminated"), dict):
                c["state"]["terminated"]["message"] = line
    return out
