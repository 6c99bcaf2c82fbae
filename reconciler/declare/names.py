"""Naming rules shared by the schema, the renderer and the lock: pure functions, no I/O.

Kubernetes names, label values, target resources, durations and image references all
have precise formats; checking them in one place keeps the validator's messages and the
renderer's assumptions identical.  The run name and the target label are *derived* from
the target resource, which is what makes a target a cluster-wide lock (SPEC §4.6).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# Every pattern here is a *whole-value* format: use ``fullmatch`` (never ``match``: ``$``
# also matches before a final newline, so ``"payments\n"`` would pass and, in a target,
# make a second lock key for one object). No ``^``/``$`` anchors, ASCII classes only
# (``re.ASCII``: ``\d`` would accept Arabic-Indic or fullwidth digits). tests/test_regex_use.py
# scans the package and fails on any pattern used otherwise.
DNS1123_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?", re.ASCII)
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*", re.ASCII)
KIND = re.compile(r"[A-Z][A-Za-z0-9]*", re.ASCII)
PARAMETER_NAME = re.compile(r"[A-Z][A-Z0-9_]*", re.ASCII)
LABEL_VALUE = re.compile(r"(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", re.ASCII)
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}", re.ASCII)
DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?", re.ASCII)
# A pragmatic subset of the distribution reference grammar: [registry[:port]/]path[:tag][@digest]
IMAGE_REFERENCE = re.compile(
    r"(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?",
    re.ASCII,
)
# Digits of one duration component that can still be a sane duration: 10**7 s is ~116 days,
# more than any cap here, and int() of a few thousand digits raises instead of failing politely.
_MAX_DURATION_DIGITS = 7

RESERVED_PARAMETERS = frozenset({"TARGET_RESOURCE"})
# Where runs are created unless configured otherwise.  ``render.DEFAULT_NAMESPACE`` is the same
# value (tests/test_startup_cost.py); the CLI reads it here to show it in ``--help`` without
# importing Jinja.
DEFAULT_NAMESPACE = "kubernaut-workflows"
RUN_NAME_PREFIX = "wfe-"
MAX_TIMEOUT_SECONDS = 24 * 3600


@dataclass(frozen=True)
class TargetResource:
    """A parsed ``ns/Kind/name`` (namespaced) or ``Kind/name`` (cluster-scoped) target."""

    namespace: str | None
    kind: str
    name: str

    def __str__(self) -> str:
        if self.namespace is None:
            return f"{self.kind}/{self.name}"
        return f"{self.namespace}/{self.kind}/{self.name}"


def parse_target(raw: str) -> TargetResource:
    """Parse a target resource string or raise ValueError with a message for people."""
    parts = raw.split("/")
    if len(parts) == 3:
        namespace, kind, name = parts
        if not (len(namespace) <= 63 and DNS1123_LABEL.fullmatch(namespace)):
            raise ValueError(
                f"namespace {namespace!r} is not a valid Kubernetes namespace "
                "(lowercase letters, digits and '-', at most 63 characters)"
            )
    elif len(parts) == 2:
        namespace = None
        kind, name = parts
    else:
        raise ValueError(
            f"{raw!r} must be 'namespace/Kind/name' or 'Kind/name' (for cluster-scoped kinds)"
        )
    if not KIND.fullmatch(kind):
        raise ValueError(f"kind {kind!r} must be a Kubernetes Kind in CamelCase, such as Deployment")
    if not (len(name) <= 253 and DNS1123_SUBDOMAIN.fullmatch(name)):
        raise ValueError(
            f"name {name!r} is not a valid Kubernetes object name "
            "(lowercase letters, digits, '-' and '.', at most 253 characters)"
        )
    return TargetResource(namespace, kind, name)


def run_name(target: str) -> str:
    """Deterministic run name for a target: the same target always maps to the same name."""
    return RUN_NAME_PREFIX + hashlib.sha256(target.encode("utf-8")).hexdigest()[:16]


def label_value(raw: str) -> str:
    """A label-safe rendering of ``raw`` ("/" → "__"), at most 63 characters.

    Values that would be too long are shortened and given a hash suffix, so two different
    targets never share a label value.
    """
    value = raw.replace("/", "__")
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", value, flags=re.ASCII)
    if len(value) <= 63 and LABEL_VALUE.fullmatch(value):
        return value
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]
    head = value[:46].strip("-_.")
    return f"{head}-{digest}" if head else digest


class DurationTooLong(ValueError):
    """A well-formed duration with more digits than any sane duration has."""


def duration_seconds(raw: str) -> int:
    """Seconds in a Go-style duration (``30m``, ``1h30m``, ``90s``), uncapped; ValueError if bad.

    ASCII digits only, whole value only: ``"30m\n"`` and ``"３0m"`` are not durations.
    """
    match = DURATION.fullmatch(raw) if isinstance(raw, str) else None
    if not raw or match is None:
        raise ValueError(f"{_short(raw)!r} is not a duration such as 30m, 1h or 1h30m")
    groups = [g.lstrip("0") if g else "" for g in match.groups()]
    if any(len(g) > _MAX_DURATION_DIGITS for g in groups):
        raise DurationTooLong(f"{_short(raw)!r} is far too long a duration")
    hours, minutes, seconds = (int(g) if g else 0 for g in groups)
    return hours * 3600 + minutes * 60 + seconds


def parse_duration(raw: str) -> int:
    """Seconds in a run timeout such as ``30m``, ``1h30m`` or ``90s``; ValueError if bad."""
    try:
        total = duration_seconds(raw)
    except DurationTooLong:
        raise ValueError(f"timeout {_short(raw)!r} is longer than the 24h maximum") from None
    if total <= 0:
        raise ValueError("timeout must be longer than 0s (a run without a deadline holds its lock forever)")
    if total > MAX_TIMEOUT_SECONDS:
        raise ValueError(f"timeout {raw!r} is longer than the 24h maximum")
    return total


def _short(raw: object, limit: int = 40) -> str:
    text = raw if isinstance(raw, str) else str(type(raw).__name__)
    return text if len(text) <= limit else text[:limit] + "…"


def format_duration(seconds: int) -> str:
    """Canonical Go-style duration (``1h30m``, ``45s``), as Tekton expects for timeouts."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (
        f"{secs}s" if secs else ""
    )
    return out or "0s"
