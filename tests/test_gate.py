"""The gate inside the reconcile cycle (SPEC §4.2) and in the PR tools: policy, windows,
concurrency and signatures decide whether a new run may start — injected clock, real
keys, real Git, the fake API server."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.declare.names import run_name
from reconciler.gate.checks import Gate
from reconciler.gate.policy import parse_policy
from reconciler.source.signatures import SignaturePolicy, SignatureVerifier
from tests.conftest import CATALOG, execution_yaml
from tests.harness import NS, TARGET, Env, declare, state
from tests.test_signatures import Keys, commit, keys  # noqa: F401  (module fixture)


def use(env: Env, **policy: object) -> None:
    env.reconciler = env.new_reconciler(gate=Gate(policy=parse_policy(policy)))


def test_policy_violation_blocks_and_names_the_rule(env: Env) -> None:
    use(env, deniedNamespaces=["payments"], allowedImages=["ghcr.io/acme/*"])
    declare(env, "oom")
    result = env.cycle()
    s = result.states["oom"]
    assert (s.phase, s.reason, s.health) == ("Pending", "PolicyViolation", "Degraded")
    assert "deniedNamespaces" in s.message and s.skip_details["rules"] == ["namespace-denied"]
    assert env.runs() == []


def test_deny_window_holds_until_it_closes(env: Env) -> None:
    # 09:00 UTC on the harness clock; a deny window 08:00–10:00 every day
    use(env, syncWindows=[{"kind": "deny", "schedule": "0 8 * * *", "duration": "2h"}])
    declare(env, "oom")
    held = env.cycle().states["oom"]
    assert (held.phase, held.reason) == ("Pending", "SyncWindowClosed")
    assert held.skip_details["opensAt"].startswith("2026-11-21T10:00:00")
    env.clock.advance(hours=1, seconds=1)
    assert state(env.cycle(), "oom") == ("Running", "Running")


@pytest.mark.parametrize(("permitted", "expected"), [(True, "Running"), (False, "Pending")])
def test_override_label_only_where_policy_permits(env: Env, permitted: bool, expected: str) -> None:
    use(env, allowSyncWindowOverride=permitted,
        syncWindows=[{"kind": "deny", "schedule": "0 8 * * *", "duration": "2h"}])
    text = execution_yaml("oom").replace("metadata:\n  name: oom\n",
                                         "metadata:\n  name: oom\n  labels: {kubernaut.ai/sync-window-override: \"true\"}\n")
    env.repo.commit("urgent", **{"executions/oom.yaml": text})
    assert env.cycle().states["oom"].phase == expected


def test_allow_window_only(env: Env) -> None:
    use(env, syncWindows=[{"kind": "allow", "schedule": "0 22 * * *", "duration": "4h", "timeZone": "Europe/Berlin"}])
    declare(env, "oom")
    assert state(env.cycle(), "oom") == ("Pending", "SyncWindowClosed")
    env.clock.now = env.clock.now.replace(hour=21, minute=30)  # 22:30 in Berlin
    assert state(env.cycle(), "oom") == ("Running", "Running")


def test_concurrency_limit(env: Env) -> None:
    use(env, maxConcurrentRuns=1)
    env.repo.commit("two", **{"executions/a.yaml": execution_yaml("a"),
                              "executions/b.yaml": execution_yaml("b", target="search/Deployment/api")})
    result = env.cycle()
    assert state(result, "a") == ("Running", "Running")
    assert state(result, "b") == ("Pending", "ConcurrencyLimit")
    env.tekton.start(NS, run_name(TARGET))
    env.tekton.succeed(NS, run_name(TARGET))
    env.clock.advance(minutes=1)
    later = env.cycle()
    assert state(later, "a")[0] == "Completed" and state(later, "b") == ("Running", "Running")


def test_existing_run_is_adopted_even_when_blocked_now(env: Env) -> None:
    declare(env, "oom")
    env.cycle()
    env.reconciler = env.new_reconciler(store=type(env.store)(), gate=Gate(policy=parse_policy(
        {"deniedNamespaces": ["payments"]})))  # a restart under a stricter policy
    assert env.cycle().states["oom"].phase == "Running"


def test_unsigned_declaration_is_not_started_signed_one_is(env: Env, keys: Keys) -> None:  # noqa: F811
    commit(env.repo, "catalog, signed", keys.alice, {"workflows/w.yaml": CATALOG + "\n"})
    commit(env.repo, "unsigned", None, {"executions/a.yaml": execution_yaml("a")})
    commit(env.repo, "signed", keys.alice, {"executions/b.yaml": execution_yaml("b", target="x/Deployment/y")})
    commit(env.repo, "by mallory", keys.mallory, {"executions/c.yaml": execution_yaml("c", target="x/Deployment/z")})
    env.reconciler = env.new_reconciler()
    # the verifier reads the same cache the reconciler fetches into, as the service wires it
    verifier = SignatureVerifier(env.reconciler.source, SignaturePolicy("files", allowed_signers_file=keys.allowed))
    env.reconciler.gate = Gate(verifier=verifier)
    result = env.cycle()
    assert state(result, "a") == ("Pending", "UnverifiedCommit") and "not signed" in result.states["a"].message
    assert state(result, "b") == ("Running", "Running")
    assert state(result, "c") == ("Pending", "UnverifiedCommit") and "unknown key" in result.states["c"].message
    assert result.states["a"].health == "Degraded"


def test_validate_with_policy_annotates_the_field(tmp_path: Path) -> None:
    root = tmp_path / "w"
    (root / "workflows").mkdir(parents=True)
    (root / "executions").mkdir()
    (root / "workflows" / "w.yaml").write_text(CATALOG)
    (root / "executions" / "a.yaml").write_text(execution_yaml("a", extra="  executionConfig: {serviceAccountName: root-sa}\n"))
    policy = tmp_path / "policy.yaml"
    policy.write_text("allowedServiceAccounts: [kubernaut-workflow-runner]\nrequireDigest: true\n")
    result = CliRunner().invoke(main, ["validate", str(root), "--policy", str(policy), "-o", "github"])
    assert result.exit_code == 1
    assert "title=policy%3Aservice-account-not-allowed" in result.stdout and ",line=9," in result.stdout


def test_pr_preview_markdown_with_cluster_and_policy(env: Env, tmp_path: Path) -> None:
    declare(env, "running-one")
    env.cycle()  # occupies payments/Deployment/payment-api
    base = env.repo.git("rev-parse", "HEAD")
    env.repo.commit("pr", **{
        "executions/busy.yaml": execution_yaml("busy", params="{NAMESPACE: payments, MEMORY_LIMIT: 2Gi}"),
        "executions/fresh.yaml": execution_yaml("fresh", target="search/Deployment/api"),
        "executions/frozen.yaml": execution_yaml("frozen", target="kube-system/Deployment/dns"),
    })
    policy = tmp_path / "p.yaml"
    policy.write_text("deniedNamespaces: [kube-system]\n")
    kubeconfig = str(env.server.write_kubeconfig(tmp_path / "kc"))
    result = CliRunner().invoke(main, [
        "plan", "--repo", str(env.repo.path), "--cache-dir", str(tmp_path / "c"), "--base", base, "--head", "HEAD",
        "--cluster", "--kubeconfig", kubeconfig, "--policy", str(policy), "-o", "markdown"])
    out = result.stdout
    assert result.exit_code == 1  # the policy violation fails the PR check
    assert "| ~ skip | `busy` | added |" in out and "running-one" in out
    assert "| + create | `fresh` | added |" in out
    assert "| ⛔ blocked | `frozen` | added |" in out and "deniedNamespaces" in out
    assert "running-one" not in out.split("| ~ skip |")[0]  # unchanged executions are not listed
    assert env.runs()[0]["metadata"]["labels"]["kubernaut.ai/workflow-execution"] == "running-one"
