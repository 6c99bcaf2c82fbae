"""The status document (``status/<name>.yaml``, SPEC §7): what the reconciler recorded.

Status files are written only by the reconciler, but they live in a repository anyone
who can push may edit, so they are **untrusted input** (SPEC §10): every file goes
through the same strict loader as executions (size, node and alias limits, YAML 1.2
scalars, duplicate keys rejected) and then through :func:`check_status_document`, which
checks every field's type and that ``metadata.name`` is a DNS-1123 label equal to the
file's name.  A file that fails is reported and treated as absent; its name is never used
to build a path.  What a status file says is never taken as permission to touch the
cluster either: the cycle cancels, deletes or adopts a run only when the run's own labels
say it is ours (see ``reconciler.service.cycle_context.owned_by``).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from reconciler.declare.yamldoc import DEFAULT_MAX_BYTES, load_documents

STATUS_KIND = "WorkflowExecutionStatus"
STATUS_API_VERSION = "kubernaut.ai/v1alpha1"
STARTED_PHASES = frozenset({"Running", "Completed", "Failed"})
TERMINAL_PHASES = frozenset({"Completed", "Failed", "Skipped"})
PHASES = frozenset({"Pending", *STARTED_PHASES, *TERMINAL_PHASES})
# the one pattern a name must pass before it goes into a path or a Git import stream
_EXECUTION_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)

_STRING_FIELDS = ("phase", "reason", "message", "sync", "health", "observedRevision", "specHash", "workflow",
                  "targetResource", "startTime", "completionTime", "duration")
_MAPPING_FIELDS = ("executionRef", "executionStatus", "skipDetails", "failureDetails")
_CONDITION_FIELDS = ("type", "status", "reason", "message", "lastTransitionTime")
_REF_FIELDS = ("kind", "namespace", "name", "uid")
_TOP_FIELDS = frozenset({"apiVersion", "kind", "metadata", "status"})


def valid_execution_name(name: object) -> bool:
    """A DNS-1123 label (what ``metadata.name`` of an execution must be): safe in a path."""
    return isinstance(name, str) and _EXECUTION_NAME.fullmatch(name) is not None


def status_path(prefix: str, name: str) -> str:
    """``<prefix>status/<name>.yaml`` for a validated name; anything else is refused."""
    if not valid_execution_name(name):
        raise ValueError(f"refusing to build a status path from the name {name!r}: not a DNS-1123 label")
    return f"{prefix}status/{name}.yaml"


def check_status_document(data: Any, file: str) -> str | None:
    """None when ``data`` is a well-formed status document for ``file``; else what is wrong
    (naming the field)."""
    if not isinstance(data, dict):
        return "not a mapping"
    if data.get("kind") != STATUS_KIND:
        return f"kind: expected {STATUS_KIND}"
    if data.get("apiVersion") not in (None, STATUS_API_VERSION):
        return f"apiVersion: expected {STATUS_API_VERSION}"
    unknown = data.keys() - _TOP_FIELDS
    if unknown:
        return f"{sorted(unknown)[0]}: unknown field"
    meta, status = data.get("metadata"), data.get("status")
    if not isinstance(meta, dict) or not isinstance(status, dict):
        return "metadata and status must be mappings"
    name = meta.get("name")
    if not valid_execution_name(name):
        return "metadata.name: must be a DNS-1123 label (lower-case letters, digits and '-', at most 63)"
    stem = file_stem(file)
    if stem != f"{name}.yaml":
        return f"metadata.name: {name!r} does not match the file name {stem!r}"
    if status.get("phase") not in PHASES:
        return f"status.phase: must be one of {', '.join(sorted(PHASES))}"
    for key in _STRING_FIELDS:
        if key in status and not isinstance(status[key], str):
            return f"status.{key}: must be a string"
    for key in _MAPPING_FIELDS:
        if key in status and not isinstance(status[key], dict):
            return f"status.{key}: must be a mapping"
    ref = status.get("executionRef")
    if isinstance(ref, dict) and not _all_strings(ref, _REF_FIELDS):
        return "status.executionRef: kind, namespace, name and uid must be strings"
    conditions = status.get("conditions", [])
    if not isinstance(conditions, list):
        return "status.conditions: must be a list"
    for index, condition in enumerate(conditions):
        if not isinstance(condition, dict) or not _all_strings(condition, _CONDITION_FIELDS):
            return f"status.conditions[{index}]: must be a mapping of strings"
    return None


def file_stem(file: str) -> str:
    """The last part of a path from Git (what ``PurePosixPath(file).name`` gives, faster)."""
    stem = file[file.rfind("/") + 1:]
    if stem in ("", ".") or "/./" in file or file.startswith("./"):
        stem = PurePosixPath(file).name
    return stem


def _all_strings(mapping: dict[Any, Any], keys: tuple[str, ...]) -> bool:
    """Whether each of ``keys`` that ``mapping`` holds is a string (a loop, not a generator:
    this runs for every status file of every load that is not in memory)."""
    for key in keys:
        value = mapping.get(key, "")
        if not isinstance(value, str):
            return False
    return True


def read_status_document(raw: bytes | int, file: str, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[
        dict[str, Any] | None, str | None]:
    """(document, None) for a valid status file; (None, why) for anything else."""
    if isinstance(raw, int):
        return None, f"{file}: {raw} bytes is larger than the limit"
    docs, problems = load_documents(raw, file, max_bytes=max_bytes)
    if problems:
        first = problems[0]
        return None, f"{file}:{first.line or '?'}: {first.message}"
    if len(docs) != 1:
        return None, f"{file}: expected exactly one YAML document"
    why = check_status_document(docs[0].data, file)
    if why is not None:
        return None, f"{file}: {why}"
    data: dict[str, Any] = docs[0].data
    return data, None


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """The fields of a recorded status that planning needs; :attr:`raw` gives the whole
    document.

    One is kept per status file (50 000 of them in a large repository) and planning never
    reads the rest, so the document is kept as its compact JSON text — a fifth of the
    memory of the decoded dicts and strings — and decoded again when asked for (the views
    build each state once: :func:`documents`).  A document JSON cannot hold exactly is kept
    as it is."""

    name: str
    file: str
    phase: str
    reason: str = ""
    spec_hash: str = ""
    run_name: str = ""
    document: str | dict[str, Any] = field(default="", compare=False, repr=False)  # JSON text, or the dict

    @property
    def raw(self) -> dict[str, Any]:
        """The status document (a new dict each time: the record never changes)."""
        kept = self.document
        if isinstance(kept, str):
            data: dict[str, Any] = json.loads(kept) if kept else {}
            return data
        return kept

    @property
    def started(self) -> bool:
        """True once a run was created for it (or it failed/ended): its spec is frozen."""
        return self.phase in STARTED_PHASES or bool(self.run_name)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


def document_text(data: dict[str, Any]) -> str | dict[str, Any]:
    """The compact JSON text a :class:`StatusRecord` keeps of ``data``; ``data`` itself when
    JSON would not give it back equal (a key that is not a string, NaN, a YAML oddity)."""
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return data
    try:
        same = json.loads(text) == data
    except (ValueError, RecursionError):
        same = False
    return text if same else data


def documents(records: Iterable[StatusRecord], chunk: int = 1000) -> Iterator[tuple[StatusRecord, dict[str, Any]]]:
    """(record, its document) for each record, the JSON texts of a chunk decoded by one
    ``json.loads`` (faster, and keys shared) and no more than a chunk held at once."""
    batch: list[StatusRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= chunk:
            yield from _decoded(batch)
            batch = []
    if batch:
        yield from _decoded(batch)


def _decoded(batch: list[StatusRecord]) -> Iterator[tuple[StatusRecord, dict[str, Any]]]:
    texts = [r.document for r in batch if isinstance(r.document, str) and r.document]
    decoded: list[Any] = []
    if len(texts) == len(batch):
        try:
            decoded = json.loads("[" + ",".join(texts) + "]")
        except (ValueError, RecursionError):
            decoded = []
    if len(decoded) != len(batch):
        decoded = [r.raw for r in batch]
    yield from zip(batch, decoded, strict=True)


def parse_status(raw: bytes | int, file: str) -> StatusRecord | None:
    return parse_status_reporting(raw, file)[0]


def parse_status_reporting(raw: bytes | int, file: str) -> tuple[StatusRecord | None, str | None]:
    """The record, or None and why the file is ignored."""
    data, why = read_status_document(raw, file)
    if data is None:
        return None, why
    return record_of(data, file), None


def record_of(data: dict[str, Any], file: str, text: str | None = None) -> StatusRecord:
    """The record of a document :func:`read_status_document` accepted (``text``: its compact
    JSON text when it was decoded from that, so it need not be encoded again)."""
    meta, status = data["metadata"], data["status"]
    ref = status.get("executionRef")
    return StatusRecord(
        name=meta["name"],
        file=file,
        phase=sys.intern(status["phase"]),  # a few values, 50 000 records
        reason=sys.intern(str(status.get("reason") or "")),
        spec_hash=str(status.get("specHash") or ""),
        run_name=str(ref.get("name") or "") if isinstance(ref, dict) else "",
        document=text if text is not None else document_text(data),
    )
