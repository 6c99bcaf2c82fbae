"""The status document (``status/<name>.yaml``, SPEC §7): what the reconciler recorded.

Status files are written only by the reconciler, but they live in a repository people
can edit, so reading them is lenient: a damaged file is reported and treated as absent
(the next cycle recomputes it from the cluster) rather than stopping anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .yamldoc import load_documents

STATUS_KIND = "WorkflowExecutionStatus"
STARTED_PHASES = frozenset({"Running", "Completed", "Failed"})
TERMINAL_PHASES = frozenset({"Completed", "Failed", "Skipped"})


@dataclass(frozen=True)
class StatusRecord:
    """The fields of a recorded status that planning needs; ``raw`` keeps the rest."""

    name: str
    file: str
    phase: str
    reason: str = ""
    spec_hash: str = ""
    run_name: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def started(self) -> bool:
        """True once a run was created for it (or it failed/ended): its spec is frozen."""
        return self.phase in STARTED_PHASES or bool(self.run_name)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


def parse_status(raw: bytes | int, file: str) -> StatusRecord | None:
    docs, problems = load_documents(raw, file)
    if problems or len(docs) != 1 or not isinstance(docs[0].data, dict):
        return None
    data = docs[0].data
    meta = data.get("metadata")
    status = data.get("status")
    if data.get("kind") != STATUS_KIND or not isinstance(meta, dict) or not isinstance(status, dict):
        return None
    name = meta.get("name")
    phase = status.get("phase")
    if not isinstance(name, str) or not isinstance(phase, str):
        return None
    ref = status.get("executionRef")
    return StatusRecord(
        name=name,
        file=file,
        phase=phase,
        reason=str(status.get("reason") or ""),
        spec_hash=str(status.get("specHash") or ""),
        run_name=str(ref.get("name") or "") if isinstance(ref, dict) else "",
        raw=data,
    )
