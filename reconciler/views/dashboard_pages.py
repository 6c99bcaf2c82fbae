"""The dashboard's pages: what an execution row, its detail page and the summary show, and how.

:mod:`reconciler.service.dashboard` serves; this module builds what it serves from the plain dicts a
:class:`~reconciler.service.dashboard.DashboardSource` returns: every key the templates read filled
in (a provider may leave some out), the filters (phase, health, sync, free text incl.
``key=value`` labels: the same rules as ``matches()`` in ``static/dashboard.js``), and the
autoescaping Jinja environment with its presentation filters (short SHAs, UTC times,
``<wbr>`` after ``/`` and ``@``, JSON safe inside a ``<script>`` element). Everything in an
execution file is untrusted input: values only ever become escaped text, a CSS class is
only ever one of the known values, and only DNS-1123 names are looked up or linked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import jinja2
from markupsafe import Markup

from reconciler.declare.names import DNS1123_LABEL

__all__ = [
    "FAILURE_FIELDS", "HEALTHS", "PHASES", "SYNCS", "Filters", "execution_detail", "execution_row",
    "page_environment", "repository_summary", "script_json", "valid_name",
]

PHASES = ("Pending", "Running", "Completed", "Failed", "Skipped")
HEALTHS = ("Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown")
SYNCS = ("Synced", "OutOfSync", "Unknown")

# failureDetails keys (SPEC §6) in the order people read them; others follow alphabetically
FAILURE_FIELDS = ("reason", "message", "failedTaskName", "failedStepName", "failedTaskIndex", "exitCode",
                  "failedAt", "executionTimeBeforeFailure", "wasExecutionFailure")


def valid_name(name: object) -> bool:
    """A DNS-1123 label (what execution names are); anything else is never looked up or linked."""
    return isinstance(name, str) and 0 < len(name) <= 63 and DNS1123_LABEL.fullmatch(name) is not None


def script_json(data: Any) -> Markup:
    """JSON safe to place inside ``<script type="application/json">``: ``<``, ``>``, ``&`` and
    the line separators are escaped, so no value can close the element or open a comment."""
    text = json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return Markup(text)


# -- filters (the same rules as matches() in static/dashboard.js) --------------------------

@dataclass(frozen=True)
class Filters:
    phase: str = ""
    health: str = ""
    sync: str = ""
    q: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        """The filters a query string asks for (starlette's QueryParams is such a mapping)."""
        def pick(key: str, allowed: tuple[str, ...]) -> str:
            value = query.get(key) or ""
            return value if value in allowed else ""
        return cls(phase=pick("phase", PHASES), health=pick("health", HEALTHS), sync=pick("sync", SYNCS),
                   q=(query.get("q") or "")[:200])

    @property
    def active(self) -> bool:
        return bool(self.phase or self.health or self.sync or self.q.strip())

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Phase/health/sync exactly; each whitespace-separated search term (all must match)
        case-insensitively as a substring of name, target or workflow, or — a ``key=value``
        term — exactly as one of the labels."""
        if self.phase and row.get("phase") != self.phase:
            return False
        if self.health and row.get("health") != self.health:
            return False
        if self.sync and row.get("sync") != self.sync:
            return False
        haystack = [str(row.get(k) or "").lower() for k in ("name", "target", "workflow")]
        raw_labels = row.get("labels")
        labels: Mapping[Any, Any] = raw_labels if isinstance(raw_labels, Mapping) else {}
        pairs = {(str(k).lower(), str(v).lower()) for k, v in labels.items()}
        for term in self.q.lower().split():
            if any(term in h for h in haystack):
                continue
            key, eq, value = term.partition("=")
            if eq and (key, value) in pairs:
                continue
            if not eq and any(term in k or term in v for k, v in pairs):
                continue
            return False
        return True


# -- presentation helpers ------------------------------------------------------------------

def _known(value: object, allowed: Iterable[str], fallback: str = "Unknown") -> str:
    """A CSS class suffix: only ever one of the known values (data never names a class)."""
    return value if isinstance(value, str) and value in allowed else fallback


def _short(sha: object) -> str:
    s = str(sha or "")
    return s[:7] if len(s) >= 12 and all(c in "0123456789abcdef" for c in s.lower()) else s


def _breakable(value: object) -> Markup:
    """Escaped text with line-break opportunities (``<wbr>``) after ``/`` and ``@``, so
    ``ns/Kind/name`` and ``workflow@version`` wrap at their separators, not mid-word."""
    return Markup("<wbr>").join(part for part in re.split(r"(?<=[/@])", str(value or "")) if part)


def _scalar(value: object) -> str:
    """A failure/skip detail value for people: booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _when(value: object) -> str:
    """``2026-11-22T04:30:00Z`` → ``2026-11-22 04:30:00 UTC``; anything unparseable as given."""
    text = str(value or "")
    if not text:
        return ""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def execution_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A source row with every key the templates read (a provider may leave some out)."""
    out: dict[str, Any] = {k: ("" if raw.get(k) is None else raw.get(k)) for k in (
        "name", "target", "workflow", "engine", "phase", "reason", "message", "sync", "health", "run",
        "startTime", "completionTime", "duration", "age", "declaredIn")}
    labels = raw.get("labels")
    out["labels"] = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}
    out["linkable"] = valid_name(out["name"])
    return out


def execution_detail(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A source's execution with every key the detail page reads, and its failure fields in order."""
    out = {**raw, **execution_row(raw)}

    def mapping(key: str) -> dict[str, Any]:
        value = raw.get(key)
        return dict(value) if isinstance(value, Mapping) else {}

    def records(key: str) -> list[dict[str, Any]]:
        value = raw.get(key)
        return [dict(v) for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []

    for key in ("failureDetails", "skipDetails", "executionStatus", "declaredCommit", "lastChangedCommit"):
        out[key] = mapping(key)
    for key in ("conditions", "timeline", "statusCommits", "deliveries"):
        out[key] = records(key)
    problems = raw.get("problems")
    out["problems"] = [str(p) for p in problems] if isinstance(problems, list) else []
    for key in ("spec", "rendered", "file", "observedRevision"):
        out[key] = str(raw.get(key) or "")
    failure = out["failureDetails"]
    out["failureFields"] = [(k, failure[k]) for k in FAILURE_FIELDS if k in failure and failure[k] not in ("", None)]
    out["failureFields"] += [(k, v) for k, v in sorted(failure.items())
                             if k not in FAILURE_FIELDS and k != "naturalLanguageSummary" and v not in ("", None)]
    return out


def repository_summary(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The summary with every key the pages read: counts for every known phase and sync state."""
    def counts(key: str, names: tuple[str, ...]) -> dict[str, int]:
        found = raw.get(key)
        given: Mapping[Any, Any] = found if isinstance(found, Mapping) else {}
        out = {n: int(given.get(n) or 0) for n in names}
        out.update({str(k): int(v or 0) for k, v in given.items() if k not in out})
        return out
    return {
        "repository": str(raw.get("repository") or ""), "branch": str(raw.get("branch") or ""),
        "revision": str(raw.get("revision") or ""), "health": str(raw.get("health") or "Unknown"),
        "phases": counts("phases", PHASES), "sync": counts("sync", SYNCS),
        "generatedAt": str(raw.get("generatedAt") or ""), "leader": bool(raw.get("leader")),
    }


def page_environment() -> jinja2.Environment:
    """The templates of ``reconciler/web/templates``, autoescaped, with the presentation filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler", "web/templates"),
        autoescape=True,  # every template is HTML; every value from the repository is untrusted
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(short=_short, when=_when, script_json=script_json, breakable=_breakable,
                       scalar=_scalar)
    env.globals.update(PHASES=PHASES, HEALTHS=HEALTHS, SYNCS=SYNCS, known=_known, valid_name=valid_name)
    return env
