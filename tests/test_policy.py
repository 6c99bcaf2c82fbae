"""Execution policy: each rule allowed/denied, globs, digests, cluster-scoped targets, loading."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from reconciler.declare.assemble import load_declaration
from reconciler.declare.declared import ResolvedExecution
from reconciler.errors import ConfigError
from reconciler.gate.policy import (
    OVERRIDE_LABEL,
    RULES,
    Policy,
    Violation,
    concurrency_allows,
    evaluate,
    override_requested,
    parse_policy,
    summary,
    sync_window_decision,
)
from reconciler.gate.policy_file import load_policy
from tests.conftest import CATALOG, IMAGE, execution_yaml

UNPINNED = "ghcr.io/acme-sre/wf/restart:1.0"


def execution(*, target: str = "payments/Deployment/payment-api", image: str | None = None,
              service_account: str | None = None, labels: str = "") -> ResolvedExecution:
    """A resolved execution from YAML: the catalog's image unless ``image`` is given."""
    files = {}
    workflow = 'workflowId: increase-memory-limit, version: "1.2.0"'
    if image is None:
        files["workflows/catalog.yaml"] = CATALOG.encode()
    else:
        workflow += f", containerImage: {image}"
    extra = f"  executionConfig: {{serviceAccountName: {service_account}}}\n" if service_account else ""
    text = execution_yaml(target=target, workflow=workflow, extra=extra)
    if labels:
        text = text.replace("metadata:\n", f"metadata:\n  labels: {labels}\n", 1)
    files["executions/e.yaml"] = text.encode()
    decl = load_declaration(files)
    assert not decl.problems, decl.problems
    (resolved,) = decl.executions
    return resolved


def policy(**fields: Any) -> Policy:
    return Policy.model_validate(fields)


def rules(violations: list[Violation]) -> list[str]:
    return [v.rule for v in violations]


def test_empty_policy_allows_everything() -> None:
    assert evaluate(execution(), Policy()) == []
    assert evaluate(execution(target="Node/worker-1", image=UNPINNED, service_account="admin"), Policy()) == []


@pytest.mark.parametrize(("fields", "kwargs", "expected"), [
    # allowedImages: globs over the full reference
    ({"allowedImages": ["ghcr.io/acme/wf/*"]}, {}, []),
    ({"allowedImages": ["ghcr.io/acme-sre/*"]}, {}, ["image-not-allowed"]),
    ({"allowedImages": ["ghcr.io/acme-sre/*", "ghcr.io/acme/*"]}, {}, []),
    ({"allowedImages": ["ghcr.io/acme-sre/*"]}, {"image": "ghcr.io/acme-sre-evil/x:1"}, ["image-not-allowed"]),
    ({"allowedImages": ["ghcr.io/acme-sre/*"]}, {"image": "ghcr.io/acme-sre/deep/path/x:1"}, []),
    ({"allowedImages": ["ghcr.io/acme/wf/increase-memory@sha256:*"]}, {}, []),
    # requireDigest
    ({"requireDigest": True}, {}, []),
    ({"requireDigest": True}, {"image": UNPINNED}, ["digest-required"]),
    ({"requireDigest": True}, {"image": UNPINNED + "@sha256:" + "b" * 64}, []),
    ({"requireDigest": False}, {"image": UNPINNED}, []),
    # namespaces
    ({"allowedNamespaces": ["payments"]}, {}, []),
    ({"allowedNamespaces": ["pay*"]}, {}, []),
    ({"allowedNamespaces": ["team-*"]}, {}, ["namespace-not-allowed"]),
    ({"deniedNamespaces": ["kube-*"]}, {"target": "kube-system/Deployment/coredns"}, ["namespace-denied"]),
    ({"deniedNamespaces": ["kube-*"]}, {}, []),
    ({"allowedNamespaces": ["*"], "deniedNamespaces": ["payments"]}, {}, ["namespace-denied"]),
    ({"allowedNamespaces": ["team-*"], "deniedNamespaces": ["pay*"]}, {}, ["namespace-not-allowed", "namespace-denied"]),
    # cluster-scoped targets match only the literal ""
    ({"allowedNamespaces": ["*"]}, {"target": "Node/worker-1"}, ["namespace-not-allowed"]),
    ({"allowedNamespaces": ["payments", ""]}, {"target": "Node/worker-1"}, []),
    ({"deniedNamespaces": ["*"]}, {"target": "Node/worker-1"}, []),
    ({"deniedNamespaces": [""]}, {"target": "Node/worker-1"}, ["namespace-denied"]),
    ({"deniedNamespaces": [""]}, {}, []),
    # kinds (exact)
    ({"allowedKinds": ["Deployment", "StatefulSet"]}, {}, []),
    ({"allowedKinds": ["StatefulSet"]}, {}, ["kind-not-allowed"]),
    ({"allowedKinds": ["Deploy"]}, {}, ["kind-not-allowed"]),
    ({"deniedKinds": ["Node", "ClusterRole"]}, {"target": "Node/worker-1"}, ["kind-denied"]),
    ({"deniedKinds": ["Node"]}, {}, []),
    # service accounts (exact; the default is "default")
    ({"allowedServiceAccounts": ["kubernaut-workflow-runner"]}, {"service_account": "kubernaut-workflow-runner"}, []),
    ({"allowedServiceAccounts": ["kubernaut-workflow-runner"]}, {"service_account": "admin"}, ["service-account-not-allowed"]),
    ({"allowedServiceAccounts": ["kubernaut-workflow-runner"]}, {}, ["service-account-not-allowed"]),
    ({"allowedServiceAccounts": ["default"]}, {}, []),
])
def test_rules(fields: dict[str, Any], kwargs: dict[str, Any], expected: list[str]) -> None:
    assert rules(evaluate(execution(**kwargs), policy(**fields))) == expected


def test_all_violations_in_rule_order_with_messages() -> None:
    strict = policy(allowedImages=["ghcr.io/acme-sre/*"], requireDigest=True, allowedNamespaces=["team-*"],
                    deniedNamespaces=["kube-*"], allowedKinds=["Deployment"], deniedKinds=["DaemonSet"],
                    allowedServiceAccounts=["kubernaut-workflow-runner"])
    found = evaluate(execution(target="kube-system/DaemonSet/kube-proxy", image="ghcr.io/evil/x:latest",
                               service_account="admin"), strict)
    assert rules(found) == list(RULES)
    messages = [v.message for v in found]
    assert messages == [
        "image ghcr.io/evil/x:latest does not match allowedImages (ghcr.io/acme-sre/*)",
        "image ghcr.io/evil/x:latest is not pinned by digest (requireDigest: use image@sha256:<64 hex>)",
        "namespace kube-system does not match allowedNamespaces (team-*)",
        "namespace kube-system matches deniedNamespaces entry 'kube-*'",
        "kind DaemonSet is not in allowedKinds (Deployment)",
        "kind DaemonSet is in deniedKinds",
        "service account admin is not in allowedServiceAccounts (kubernaut-workflow-runner)",
    ]
    assert str(found[0]).endswith("[image-not-allowed]")
    assert summary(found[:2]).startswith("policy violation: image ghcr.io/evil/x:latest does not match")
    assert evaluate(execution(target="kube-system/DaemonSet/kube-proxy", image="ghcr.io/evil/x:latest",
                              service_account="admin"), strict) == found  # deterministic


def test_cluster_scoped_message_explains_empty_entry() -> None:
    (found,) = evaluate(execution(target="Node/worker-1"), policy(allowedNamespaces=["*"]))
    assert found.message == "cluster-scoped target Node/worker-1 (matched only by \"\") does not match allowedNamespaces (*)"


@pytest.mark.parametrize(("limit", "running", "allowed"), [
    (None, 0, True), (None, 10_000, True), (1, 0, True), (1, 1, False), (3, 2, True), (3, 3, False), (3, 7, False),
])
def test_concurrency(limit: int | None, running: int, allowed: bool) -> None:
    assert concurrency_allows(running, policy(maxConcurrentRuns=limit)) is allowed


@pytest.mark.parametrize(("labels", "requested"), [
    ("", False),
    (f'{{{OVERRIDE_LABEL}: "true"}}', True),
    (f'{{{OVERRIDE_LABEL}: "false"}}', False),
    (f'{{{OVERRIDE_LABEL}: "yes"}}', False),
    ('{team: sre}', False),
])
def test_override_requested(labels: str, requested: bool) -> None:
    assert override_requested(execution(labels=labels)) is requested


FREEZE = {"kind": "deny", "schedule": "0 22 * * *", "duration": "2h", "timeZone": "Europe/Berlin"}
IN_FREEZE = datetime(2026, 11, 22, 21, 30, tzinfo=timezone.utc)  # 22:30 in Berlin


@pytest.mark.parametrize(("permitted", "label", "is_open", "reason_part"), [
    (False, False, False, "is active until 2026-11-23T00:00:00+01:00"),
    (False, True, False, f"label {OVERRIDE_LABEL} is ignored: the policy does not permit overrides"),
    (True, False, False, "is active until"),
    (True, True, True, "overridden"),
])
def test_sync_window_override_only_where_policy_permits(permitted: bool, label: bool, is_open: bool,
                                                        reason_part: str) -> None:
    p = policy(syncWindows=[FREEZE], allowSyncWindowOverride=permitted)
    labels = f'{{{OVERRIDE_LABEL}: "true"}}' if label else ""
    decision = sync_window_decision(execution(labels=labels), p, IN_FREEZE)
    assert decision.open is is_open
    assert reason_part in decision.reason


@pytest.mark.parametrize(("text", "expected"), [
    ("alowedImages: [x]\n", "alowedImages: Extra inputs are not permitted"),
    ("allowedImages: ghcr.io/x\n", "allowedImages: Input should be a valid list"),
    ("allowedImages: ['']\n", "allowedImages: '' is not an image pattern"),
    ("requireDigest: maybe\n", "requireDigest: Input should be a valid boolean"),
    ("maxConcurrentRuns: 0\n", "maxConcurrentRuns: Input should be greater than 0"),
    ("deniedKinds: [deployment]\n", "deniedKinds: 'deployment' is not a Kind"),
    ("deniedNamespaces: [Payments]\n", "deniedNamespaces: 'Payments' is not a namespace glob"),
    ("allowedServiceAccounts: [Admin]\n", "allowedServiceAccounts: 'Admin' is not a ServiceAccount name"),
    ("syncWindows: [{kind: deny, schedule: '0 22 * * *', duration: 2h, timeZone: Mars/Olympus}]\n",
     "syncWindows[0].timeZone: 'Mars/Olympus' is not a known IANA time zone"),
    ("syncWindows: [{kind: block, schedule: '0 22 * * *', duration: 2h}]\n", "syncWindows[0].kind: Input should be 'allow' or 'deny'"),
    ("syncWindows: [{kind: deny, schedule: '0 22 * *', duration: 2h}]\n", "syncWindows[0].schedule: '0 22 * *' must have 5 fields"),
    ("syncWindows: [{kind: deny, schedule: '0 22 * * *', duration: 2 hours}]\n", "syncWindows[0].duration: '2 hours' is not a duration"),
    ("syncWindows: [{kind: deny, schedule: '0 22 * * *'}]\n", "syncWindows[0].duration: Field required"),
    ("policy: {deniedKinds: [node]}\n", "policy.deniedKinds: 'node' is not a Kind"),
    ("- a\n- b\n", "the policy must be a mapping"),
    ("allowedImages: [\n", "while parsing"),
])
def test_load_errors_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_load_reports_every_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("maxConcurrentRuns: -1\ndeniedKinds: [x]\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert "maxConcurrentRuns:" in str(caught.value) and "deniedKinds:" in str(caught.value)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_policy(tmp_path / "absent.yaml")


def test_load_valid_policy_and_config_section(tmp_path: Path) -> None:
    body = """\
allowedImages: ["ghcr.io/acme/*"]
requireDigest: true
deniedNamespaces: [kube-system, ""]
deniedKinds: [Node]
maxConcurrentRuns: 3
allowSyncWindowOverride: true
syncWindows:
  - {kind: deny, schedule: "0 22 * * *", duration: 2h, timeZone: Europe/Berlin, description: nightly batch}
  - {kind: allow, schedule: "0 8 * * 1-5", duration: 10h, namespaces: [payments], targets: ["*/Deployment/*"]}
"""
    plain = tmp_path / "policy.yaml"
    plain.write_text(body)
    loaded = load_policy(plain)
    assert loaded.require_digest and loaded.max_concurrent_runs == 3 and loaded.allow_sync_window_override
    assert loaded.sync_windows[0].time_zone == "Europe/Berlin"
    assert loaded.sync_windows[1].time_zone == "UTC" and loaded.sync_windows[1].targets == ["*/Deployment/*"]
    assert evaluate(execution(), loaded) == []
    config = tmp_path / "config.yaml"
    config.write_text("repository: {url: https://example.invalid/r.git}\npolicy:\n"
                      + "".join(f"  {line}\n" for line in body.splitlines()))
    assert load_policy(config) == loaded
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_policy(empty) == Policy()


def test_parse_policy_accepts_snake_case_from_the_config_loader() -> None:
    assert parse_policy({"require_digest": True}).require_digest
    assert IMAGE.startswith("ghcr.io/acme/wf/")
