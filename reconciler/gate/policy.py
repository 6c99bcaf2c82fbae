"""Execution policy: what a merged execution may run, where, as whom, and when (pure).

Merging a pull request is the approval (SPEC §1), but who may approve what is the
operator's decision, not the repository's: the policy therefore lives in the reconciler's
own configuration and never in the watched repository, where a pull request could relax
it.  The same rules run in the service (gate, SPEC §4 step 2: a violation leaves the
execution unstarted with reason ``PolicyViolation``) and in ``validate --policy FILE`` in
PR CI, so a pull request learns about a violation before it is merged.

Matching rules (documented for the README):

* ``allowedImages``: fnmatch globs over the *full* image reference; ``*`` also matches
  ``/``, so end a registry prefix with ``/*`` (``ghcr.io/acme-sre/*``, not ``ghcr.io/acme*``).
  Empty = any image.
* ``allowedNamespaces`` / ``deniedNamespaces``: globs over the target's namespace.  A
  cluster-scoped target (``Kind/name``) has no namespace; it is matched by the literal
  entry ``""`` only, never by a glob, so a non-empty ``allowedNamespaces`` denies
  cluster-scoped targets unless it lists ``""``, and ``deniedNamespaces: [""]`` denies them.
* kinds and service accounts: exact names.  Empty allow lists allow everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from reconciler.declare import names
from reconciler.declare.declared import ResolvedExecution
from reconciler.errors import ConfigError
from reconciler.gate.windows import (
    SyncWindow,
    WindowDecision,
    check_namespace_patterns,
    evaluate_windows,
    match_namespace,
)

REASON = "PolicyViolation"
OVERRIDE_LABEL = "kubernaut.ai/sync-window-override"
DIGEST = re.compile(r"@sha256:[a-f0-9]{64}\Z", re.ASCII)  # a suffix: searched, anchored with \Z

RULES = ("image-not-allowed", "digest-required", "namespace-not-allowed", "namespace-denied",
         "kind-not-allowed", "kind-denied", "service-account-not-allowed")


class Policy(BaseModel):
    """The ``policy`` section of the reconciler's configuration (or a file for ``validate``)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    allowed_images: list[str] = Field(default_factory=list, description="Image globs; empty = any.")
    require_digest: bool = Field(False, description="Images must be pinned: image@sha256:<64 hex>.")
    allowed_namespaces: list[str] = Field(default_factory=list, description='Namespace globs; "" = cluster-scoped.')
    denied_namespaces: list[str] = Field(default_factory=list, description='Namespace globs; "" = cluster-scoped.')
    allowed_kinds: list[str] = Field(default_factory=list, description="Exact target Kinds; empty = any.")
    denied_kinds: list[str] = Field(default_factory=list, description="Exact target Kinds.")
    allowed_service_accounts: list[str] = Field(default_factory=list, description="Exact names; empty = any.")
    max_concurrent_runs: int | None = Field(None, gt=0, description="Runs in flight at once; unset = no limit.")
    allow_sync_window_override: bool = Field(False, description=f"Honour the {OVERRIDE_LABEL}=true label.")
    allow_breaker_override: bool = Field(False, description=(
        "Honour spec.overrideBreaker: true (start although the failure breaker is open)."))
    sync_windows: list[SyncWindow] = Field(default_factory=list, description="Argo CD style allow/deny windows.")

    @field_validator("allowed_images")
    @classmethod
    def _images(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern or any(c.isspace() for c in pattern):
                raise ValueError(f"{pattern!r} is not an image pattern (such as ghcr.io/acme-sre/*)")
        return value

    @field_validator("allowed_namespaces", "denied_namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        return check_namespace_patterns(value)

    @field_validator("allowed_kinds", "denied_kinds")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        # A lowercase "deployment" would never match: in deniedKinds that allows everything.
        for kind in value:
            if not names.KIND.fullmatch(kind):
                raise ValueError(f"{kind!r} is not a Kind (CamelCase, such as Deployment)")
        return value

    @field_validator("allowed_service_accounts")
    @classmethod
    def _accounts(cls, value: list[str]) -> list[str]:
        for account in value:
            if len(account) > 253 or not names.DNS1123_SUBDOMAIN.fullmatch(account):
                raise ValueError(f"{account!r} is not a ServiceAccount name")
        return value


@dataclass(frozen=True)
class Violation:
    """One broken rule; ``rule`` is a stable id from :data:`RULES`."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.message} [{self.rule}]"


def _listing(values: list[str]) -> str:
    return ", ".join(repr(v) if v == "" else v for v in values)


def _namespace_violations(target: names.TargetResource, policy: Policy) -> list[Violation]:
    out: list[Violation] = []
    where = f"namespace {target.namespace}" if target.namespace is not None else \
        f"cluster-scoped target {target} (matched only by \"\")"
    if policy.allowed_namespaces and match_namespace(policy.allowed_namespaces, target.namespace) is None:
        out.append(Violation("namespace-not-allowed",
                             f"{where} does not match allowedNamespaces ({_listing(policy.allowed_namespaces)})"))
    denied = match_namespace(policy.denied_namespaces, target.namespace)
    if denied is not None:
        out.append(Violation("namespace-denied", f"{where} matches deniedNamespaces entry {denied!r}"))
    return out


def evaluate(execution: ResolvedExecution, policy: Policy) -> list[Violation]:
    """Every rule ``execution`` breaks, in the order of :data:`RULES` (empty = allowed)."""
    out: list[Violation] = []
    image = execution.image
    if policy.allowed_images and not any(fnmatchcase(image, p) for p in policy.allowed_images):
        out.append(Violation("image-not-allowed",
                             f"image {image} does not match allowedImages ({_listing(policy.allowed_images)})"))
    if policy.require_digest and not DIGEST.search(image):
        out.append(Violation("digest-required",
                             f"image {image} is not pinned by digest (requireDigest: use image@sha256:<64 hex>)"))
    target = names.parse_target(execution.target)
    out.extend(_namespace_violations(target, policy))
    if policy.allowed_kinds and target.kind not in policy.allowed_kinds:
        out.append(Violation("kind-not-allowed",
                             f"kind {target.kind} is not in allowedKinds ({_listing(policy.allowed_kinds)})"))
    if target.kind in policy.denied_kinds:
        out.append(Violation("kind-denied", f"kind {target.kind} is in deniedKinds"))
    account = execution.service_account
    if policy.allowed_service_accounts and account not in policy.allowed_service_accounts:
        out.append(Violation("service-account-not-allowed",
                             f"service account {account} is not in allowedServiceAccounts "
                             f"({_listing(policy.allowed_service_accounts)})"))
    return out


def summary(violations: list[Violation]) -> str:
    """One status message for all violations: ``policy violation: a [rule]; b [rule]``."""
    return "policy violation: " + "; ".join(str(v) for v in violations)


def concurrency_allows(running: int, policy: Policy) -> bool:
    """May one more run start while ``running`` runs are in flight?"""
    return policy.max_concurrent_runs is None or running < policy.max_concurrent_runs


def override_requested(execution: ResolvedExecution) -> bool:
    """The execution carries ``kubernaut.ai/sync-window-override: "true"``."""
    return execution.labels.get(OVERRIDE_LABEL) == "true"


def sync_window_decision(execution: ResolvedExecution, policy: Policy, now: datetime) -> WindowDecision:
    """:func:`evaluate_windows` for one execution, honouring the override label only where
    the policy permits it (and saying so when it is set but not permitted)."""
    requested = override_requested(execution)
    decision = evaluate_windows(policy.sync_windows, now, execution.target,
                                override=requested and policy.allow_sync_window_override)
    if requested and not decision.open:
        return replace(decision, reason=f"{decision.reason}; label {OVERRIDE_LABEL} is ignored: the policy "
                                        "does not permit overrides (allowSyncWindowOverride: false)")
    return decision


def _location(loc: tuple[int | str, ...], prefix: str) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(policy)"


def parse_policy(data: Any, source: str = "policy", *, prefix: str = "") -> Policy:
    """Validate a loaded mapping; ConfigError naming every bad field (``syncWindows[0].timeZone``)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix or 'the policy'} must be a mapping")
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        lines = [f"{_location(tuple(err['loc']), prefix)}: {err['msg'].removeprefix('Value error, ')}"
                 for err in e.errors(include_url=False)]
        raise ConfigError(f"invalid policy in {source}:\n  " + "\n  ".join(lines)) from e
