"""The deployment (deploy/, Dockerfile): schema-valid manifests, least-privilege RBAC, safe pods.

Every YAML document under deploy/ is loaded; standard Kubernetes objects are validated
offline against the schemas bundled with ``kubernetes-validate`` (strict: unknown fields
fail), and the Prometheus Operator objects, which it does not know, are checked for the
structure the alerts rely on.  The kustomizations are checked file by file, and built with
``kubectl kustomize`` when kubectl is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from reconciler.service.config import load_config
from reconciler.service.config_model import Config

PROJECT = Path(__file__).resolve().parents[1]
DEPLOY = PROJECT / "deploy"
BASE = DEPLOY / "base"
DOCKERFILE = PROJECT / "Dockerfile"
K8S_VERSION = "1.32.0"

RECONCILER_SA = ("kubernaut-system", "kubernaut-gitops-reconciler")
RUNNER_SA = ("kubernaut-workflows", "kubernaut-workflow-runner")
LEASE = "kubernaut-gitops-reconciler"
KUSTOMIZE_KINDS = {"Kustomization", "Component"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
COMMON_LABELS = {"app.kubernetes.io/name": "kubernaut-gitops-reconciler", "app.kubernetes.io/part-of": "kubernaut"}
RBAC_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}

# (namespace, apiGroup, resource, verbs, resourceNames or None) — exactly what the reconciler calls.
RECONCILER_RULES = [
    ("kubernaut-workflows", "tekton.dev", "pipelineruns", "get list watch create patch delete", None),
    ("kubernaut-workflows", "tekton.dev", "taskruns", "get list watch", None),
    ("kubernaut-workflows", "batch", "jobs", "get list watch create patch delete", None),
    ("kubernaut-workflows", "", "pods", "get list watch", None),
    ("kubernaut-workflows", "", "pods/log", "get", None),
    # list: one LIST of Warning Events per cycle (why a run's pods never start) and the count
    # of an Event being repeated (aggregation); nothing watches Events
    ("kubernaut-workflows", "", "events", "create patch list watch", None),
    ("kubernaut-system", "coordination.k8s.io", "leases", "get update", LEASE),
    ("kubernaut-system", "coordination.k8s.io", "leases", "create", None),  # create cannot be name-restricted
    ("kubernaut-system", "", "events", "create patch", None),
]

# The seed's workflow-runner ClusterRole, with real verbs and without secrets.
RUNNER_RULES = [
    ("apps", "deployments", "get list patch update"),
    ("apps", "statefulsets", "get list patch update"),
    ("apps", "daemonsets", "get list patch update"),
    ("", "pods", "get list delete"),
    ("", "pods/eviction", "create"),
    ("", "nodes", "get list patch"),
    ("", "configmaps", "get list"),
]

NODE_SA = ("kubernaut-workflows", "kubernaut-node-maintenance")
# What the node workflows (cleanup-node-disk, cordon-drain-node) call, cluster-wide ...
NODE_RULES = [
    ("", "nodes", "get list watch patch"),
    ("", "pods", "get list delete"),
    ("", "pods/eviction", "create"),
    ("apps", "daemonsets", "get"),
]
# ... and in the privileged namespace of cleanup-node-disk's image-prune Pod only
PRUNE_RULES = [("kubernaut-node-maintenance", "", "pods", "create get delete"),
               ("kubernaut-node-maintenance", "", "pods/log", "get")]
EXAMPLES = PROJECT / "examples-repo"

ALERTS = {"ReconcileFailing", "WriteBackFailing", "ExecutionsFailing", "NoLeader", "GitUnreachable"}
ALERT_METRICS = {
    "workflowexecution_total",
    "kubernaut_reconciler_cycle_errors_total",
    "kubernaut_reconciler_last_successful_sync_timestamp_seconds",
    "kubernaut_reconciler_writeback_failures_total",
    "kubernaut_reconciler_leader",
    "kubernaut_reconciler_git_reachable",
}


# -- loading -------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def is_object(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def manifests(path: Path) -> list[dict[str, Any]]:
    """The Kubernetes objects of one file (not kustomizations, not the service's config.yaml)."""
    return [d for d in load_docs(path) if is_object(d) and d["kind"] not in KUSTOMIZE_KINDS]


def all_objects() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, obj) for path in yaml_files() for obj in manifests(path)]


def object_id(item: tuple[Path, dict[str, Any]]) -> str:
    path, obj = item
    return f"{path.relative_to(DEPLOY)}:{obj['kind']}/{obj['metadata']['name']}"


OBJECTS = all_objects()
STANDARD = [item for item in OBJECTS if item[1]["kind"] not in CRD_KINDS]


def kustomizations() -> list[Path]:
    return sorted(DEPLOY.rglob("kustomization.yaml"))


def kustomization(directory: Path) -> dict[str, Any]:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


def find(kind: str, name: str | None = None, objects: list[tuple[Path, dict[str, Any]]] = OBJECTS,
         ) -> list[dict[str, Any]]:
    return [o for _, o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(kind: str, name: str) -> dict[str, Any]:
    found = find(kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def deployment() -> dict[str, Any]:
    return one("Deployment", "kubernaut-gitops-reconciler")


def container() -> dict[str, Any]:
    containers = deployment()["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["reconciler"]
    return containers[0]


def generator_files(directory: Path, config_map: str) -> Iterator[Path]:
    for gen in kustomization(directory).get("configMapGenerator") or []:
        if gen["name"] == config_map:
            for entry in gen.get("files") or []:
                yield directory / entry.split("=", 1)[-1]


CONFIG_FILES = [path for d in (BASE, DEPLOY / "overlays" / "production")
                for path in generator_files(d, "kubernaut-gitops-reconciler-config")]


# -- every file parses, every standard object is schema-valid ----------------------------------


def test_deploy_tree_is_complete() -> None:
    for name in ("base/kustomization.yaml", "base/secrets.example.yaml", "components/monitoring/kustomization.yaml",
                 "overlays/production/kustomization.yaml", "README.md"):
        assert (DEPLOY / name).is_file(), name
    assert len(STANDARD) >= 15
    assert {o["kind"] for _, o in OBJECTS} >= {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Deployment",
        "PodDisruptionBudget", "Service", "NetworkPolicy", "Secret", "ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_documents_are_mappings(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        if is_object(doc) and doc["kind"] not in KUSTOMIZE_KINDS:
            assert doc["metadata"]["name"]


@pytest.mark.parametrize("item", STANDARD, ids=object_id)
def test_standard_objects_are_schema_valid(item: tuple[Path, dict[str, Any]]) -> None:
    _, obj = item
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        pytest.fail(f"{object_id(item)} is invalid at {where or '(root)'}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:  # a kind this test does not expect
        pytest.fail(e.message)


def test_validator_rejects_a_broken_object() -> None:
    """Guard against a validator that silently accepts everything."""
    broken = {**deployment(), "spec": {**deployment()["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_namespaced_objects_name_their_namespace() -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    shipped = {o["metadata"]["name"] for o in find("Namespace")}
    assert shipped == {"kubernaut-system", "kubernaut-workflows", "kubernaut-node-maintenance"}
    for path, obj in OBJECTS:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert ns is None, object_id((path, obj))
        else:
            assert ns in shipped, object_id((path, obj))


# -- kustomizations ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.parent.relative_to(DEPLOY)))
def test_kustomization_references_exist(path: Path) -> None:
    directory = path.parent
    data = kustomization(directory)
    assert "namespace" not in data, "objects span two namespaces: no global namespace"
    for key in ("resources", "components"):
        for entry in data.get(key) or []:
            target = directory / entry
            assert target.exists(), f"{path}: {key} entry {entry} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), f"{entry} is not a kustomization"
    for patch in data.get("patches") or []:
        if "path" in patch:
            assert (directory / patch["path"]).is_file()
    for gen in (data.get("configMapGenerator") or []) + (data.get("secretGenerator") or []):
        for entry in gen.get("files") or []:
            assert (directory / entry.split("=", 1)[-1]).is_file(), f"{path}: generator file {entry}"


@pytest.mark.parametrize("directory", [BASE, DEPLOY / "components" / "monitoring"], ids=["base", "monitoring"])
def test_every_manifest_file_is_listed(directory: Path) -> None:
    listed = set(kustomization(directory).get("resources") or [])
    manifest_files = {p.name for p in directory.glob("*.yaml") if manifests(p)}
    expected = manifest_files - {"secrets.example.yaml"}
    assert listed == expected
    assert "secrets.example.yaml" not in listed  # placeholders are never applied by accident


def test_kustomizations_set_common_labels() -> None:
    for directory in (BASE, DEPLOY / "components" / "monitoring"):
        labels = kustomization(directory)["labels"]
        assert any(entry["pairs"] == COMMON_LABELS for entry in labels), directory


def test_production_overlay_uses_base_monitoring_and_pins_the_image() -> None:
    data = kustomization(DEPLOY / "overlays" / "production")
    assert data["resources"] == ["../../base"]
    assert data["components"] == ["../../components/monitoring"]
    assert kustomization(DEPLOY / "components" / "monitoring")["kind"] == "Component"
    (image,) = data["images"]
    assert image["name"] == "ghcr.io/kubernaut/gitops-reconciler"
    assert image.get("newTag") == "0.1.0" or str(image.get("digest", "")).startswith("sha256:")
    (gen,) = data["configMapGenerator"]
    assert gen["behavior"] == "replace" and gen["name"] == "kubernaut-gitops-reconciler-config"


# -- RBAC ----------------------------------------------------------------------------------------


def rule_set(rules: list[dict[str, Any]], namespace: str | None = None) -> set[tuple[Any, ...]]:
    """Rules flattened to (namespace, group, resource, verb, resourceName|None)."""
    out: set[tuple[Any, ...]] = set()
    for rule in rules:
        names = rule.get("resourceNames") or [None]
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule["verbs"]:
                    for name in names:
                        out.add((namespace, group, resource, verb, name))
    return out


def bound_to(sa: tuple[str, str], binding_kind: str) -> list[dict[str, Any]]:
    ns, name = sa
    return [b for b in find(binding_kind)
            if any(s["kind"] == "ServiceAccount" and s["name"] == name and s.get("namespace") == ns
                   for s in b["subjects"])]


def granted(sa: tuple[str, str]) -> set[tuple[Any, ...]]:
    out: set[tuple[Any, ...]] = set()
    for binding in bound_to(sa, "RoleBinding"):
        ns = binding["metadata"]["namespace"]
        ref = binding["roleRef"]
        assert ref["kind"] == "Role", "the reconciler gets namespaced Roles only"
        role = [r for r in find("Role", ref["name"]) if r["metadata"]["namespace"] == ns]
        assert len(role) == 1, f"RoleBinding {ns}/{binding['metadata']['name']} refers to a missing Role"
        out |= rule_set(role[0]["rules"], ns)
    return out


def test_reconciler_rbac_is_exactly_least_privilege() -> None:
    expected = set()
    for ns, group, resource, verbs, name in RECONCILER_RULES:
        expected |= {(ns, group, resource, verb, name) for verb in verbs.split()}
    actual = granted(RECONCILER_SA)
    assert actual - expected == set(), "more than the reconciler needs"
    assert expected - actual == set(), "less than the reconciler needs"


def test_reconciler_has_no_cluster_wide_or_secret_access() -> None:
    assert bound_to(RECONCILER_SA, "ClusterRoleBinding") == []
    assert not [g for g in granted(RECONCILER_SA) if g[2].startswith("secrets")]


def test_workflow_runner_clusterrole() -> None:
    role = one("ClusterRole", "kubernaut-workflow-runner")
    expected = {(None, g, r, v, None) for g, r, verbs in RUNNER_RULES for v in verbs.split()}
    assert rule_set(role["rules"]) == expected
    (binding,) = bound_to(RUNNER_SA, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "kubernaut-workflow-runner"}
    sa = [s for s in find("ServiceAccount", RUNNER_SA[1]) if s["metadata"]["namespace"] == RUNNER_SA[0]]
    assert len(sa) == 1


def test_node_maintenance_service_account_is_least_privilege() -> None:
    (binding,) = bound_to(NODE_SA, "ClusterRoleBinding")
    role = one("ClusterRole", binding["roleRef"]["name"])
    assert rule_set(role["rules"]) == {(None, g, r, v, None) for g, r, verbs in NODE_RULES for v in verbs.split()}
    namespaced = set()
    for rb in bound_to(NODE_SA, "RoleBinding"):
        ns = rb["metadata"]["namespace"]
        (local,) = [r for r in find("Role", rb["roleRef"]["name"]) if r["metadata"]["namespace"] == ns]
        namespaced |= rule_set(local["rules"], ns)
    assert namespaced == {(ns, g, r, v, None) for ns, g, r, verbs in PRUNE_RULES for v in verbs.split()}
    prune_ns = one("Namespace", "kubernaut-node-maintenance")["metadata"]["labels"]
    assert prune_ns["pod-security.kubernetes.io/enforce"] == "privileged"  # hostPath, for crictl
    # it cannot touch workloads, and the workload runner cannot create pods
    assert not any(r[1] == "apps" and r[3] != "get" for r in rule_set(role["rules"]))
    runner = rule_set(one("ClusterRole", "kubernaut-workflow-runner")["rules"])
    assert not any(r[2] == "pods" and r[3] == "create" for r in runner)


def _service_accounts_named_in(tree: Path) -> dict[str, str]:
    """serviceAccountName of every execution under tree → the file naming it (default: 'default')."""
    out: dict[str, str] = {}
    for path in sorted((tree / "executions").rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        config = ((doc or {}).get("spec") or {}).get("executionConfig") or {}
        out.setdefault(str(config.get("serviceAccountName") or "default"), str(path.relative_to(tree)))
    return out


def test_every_service_account_the_examples_name_is_shipped() -> None:
    """A run names its ServiceAccount; the Job controller (and Tekton) cannot create its pod
    when it does not exist, so each one the example executions use must come with deploy/."""
    shipped = {s["metadata"]["name"] for s in find("ServiceAccount") if s["metadata"]["namespace"] == RUNNER_SA[0]}
    named = _service_accounts_named_in(EXAMPLES)
    assert {"kubernaut-workflow-runner", "kubernaut-node-maintenance"} <= set(named)
    missing = {sa: where for sa, where in named.items() if sa not in shipped}
    assert missing == {}, f"ServiceAccounts named in examples-repo/ but not created by deploy/: {missing}"


def test_no_wildcards_no_fake_verbs_no_secrets_in_any_role() -> None:
    for kind in ("Role", "ClusterRole"):
        for role in find(kind):
            for rule in role["rules"]:
                for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert not any("*" in value for value in rule.get(key) or []), (role["metadata"]["name"], key)
                assert set(rule["verbs"]) <= RBAC_VERBS, f"not RBAC verbs: {set(rule['verbs']) - RBAC_VERBS}"
                assert "secrets" not in rule["resources"], role["metadata"]["name"]
                if "create" in rule["verbs"]:
                    assert not rule.get("resourceNames"), "create cannot be restricted by resourceNames"


def test_rbac_matches_the_configuration() -> None:
    config = load_config(BASE / "config.yaml", environ={})
    actual = granted(RECONCILER_SA)
    lease = config.leader_election
    assert (lease.lease_namespace, "coordination.k8s.io", "leases", "update", lease.lease_name) in actual
    assert (config.execution.namespace, "tekton.dev", "pipelineruns", "create", None) in actual


def test_service_account_tokens_only_where_needed() -> None:
    sa = [s for s in find("ServiceAccount", RECONCILER_SA[1]) if s["metadata"]["namespace"] == RECONCILER_SA[0]]
    assert len(sa) == 1 and sa[0]["automountServiceAccountToken"] is False
    assert deployment()["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert deployment()["spec"]["template"]["spec"]["serviceAccountName"] == RECONCILER_SA[1]


# -- namespaces ------------------------------------------------------------------------------------


def test_namespaces_have_pod_security_labels() -> None:
    system = one("Namespace", "kubernaut-system")["metadata"]["labels"]
    workflows = one("Namespace", "kubernaut-workflows")["metadata"]["labels"]
    assert system["pod-security.kubernetes.io/enforce"] == "restricted"
    assert workflows["pod-security.kubernetes.io/enforce"] == "baseline"
    assert workflows["pod-security.kubernetes.io/warn"] == "restricted"
    assert workflows["pod-security.kubernetes.io/audit"] == "restricted"


# -- the Deployment ---------------------------------------------------------------------------


def test_deployment_is_hardened() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    pod_sc, sc = spec["securityContext"], container()["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 10001 and pod_sc["runAsUser"] != 0
    assert pod_sc["fsGroup"] == 10001
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("privileged", False) is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")


def test_deployment_replicas_and_rollout() -> None:
    spec = deployment()["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod.get("topologySpreadConstraints") or pod.get("affinity", {}).get("podAntiAffinity")
    selector = spec["selector"]["matchLabels"]
    labels = spec["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == selector


def test_deployment_image_args_and_env() -> None:
    c = container()
    assert c["image"] == "ghcr.io/kubernaut/gitops-reconciler:0.1.0"
    assert c["args"] == ["run", "--config", "/etc/reconciler/config.yaml"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    images = kustomization(BASE)["images"]
    assert images == [{"name": "ghcr.io/kubernaut/gitops-reconciler", "newTag": "0.1.0"}]


def test_probes_ports_and_resources() -> None:
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"webhook": 8080, "health": 8081, "metrics": 9090}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == 8081, probe
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"cpu": "1", "memory": "512Mi"}}


def mounts() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mountPath → (volumeMount, volume)."""
    volumes = {v["name"]: v for v in deployment()["spec"]["template"]["spec"]["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in container()["volumeMounts"]}


def test_secret_and_config_volumes_are_read_only() -> None:
    secret_volumes = 0
    for path, (mount, volume) in mounts().items():
        if "secret" in volume or "configMap" in volume:
            assert mount.get("readOnly") is True, path
            source = volume.get("secret") or volume["configMap"]
            mode = source["defaultMode"]
            assert mode & 0o007 == 0 or "configMap" in volume, f"{path}: secrets must not be world-readable"
            assert mode & 0o040, f"{path}: group 10001 (fsGroup) must be able to read it"
            secret_volumes += "secret" in volume
    assert secret_volumes == 3
    assert mounts()["/etc/reconciler"][1]["configMap"]["name"] == "kubernaut-gitops-reconciler-config"


def test_writable_paths_are_emptydirs() -> None:
    for path in ("/var/cache/reconciler", "/tmp"):
        mount, volume = mounts()[path]
        assert "emptyDir" in volume and not mount.get("readOnly")


# -- configuration ------------------------------------------------------------------------------


def mounted_volume(path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The deepest mount containing ``path``: (mountPath, volumeMount, volume)."""
    best = None
    for mount_path, (mount, volume) in mounts().items():
        if PurePosixPath(path).is_relative_to(mount_path) and (best is None or len(mount_path) > len(best[0])):
            best = (mount_path, mount, volume)
    assert best is not None, f"{path} is on no mounted volume"
    return best


def secret_keys() -> dict[str, set[str]]:
    """Secret name → keys, from the templates (including the commented SSH alternative)."""
    example = BASE / "secrets.example.yaml"
    keys = {s["metadata"]["name"]: set(s.get("stringData") or {}) for s in manifests(example)}
    keys["kubernaut-gitops-reconciler-git"] |= {"ssh-privatekey", "known_hosts"}
    assert re.search(r"^\s*#\s*ssh-privatekey:", example.read_text(), re.M)
    assert re.search(r"^\s*#\s*known_hosts:", example.read_text(), re.M)
    return keys


def test_config_files_are_generated_into_the_configmap() -> None:
    assert [p.relative_to(DEPLOY).as_posix() for p in CONFIG_FILES] == [
        "base/config.yaml", "overlays/production/config.yaml"]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_config_yaml_loads_and_matches_the_deployment(path: Path) -> None:
    config: Config = load_config(path, environ={})
    assert "#" in path.read_text(), "config.yaml is meant to be commented"
    repo = config.repository
    # The cache lives on a writable emptyDir (the root filesystem is read-only).
    assert repo.cache_dir is not None
    _, mount, volume = mounted_volume(repo.cache_dir)
    assert "emptyDir" in volume and not mount.get("readOnly")
    # HTTPS token by default; every secret file is a key of a mounted Secret.
    assert repo.auth.token_file is not None and repo.auth.ssh_key_file is None
    keys = secret_keys()
    for file in (repo.auth.token_file, config.server.metrics_token_file, config.server.webhook.secret_file):
        assert file is not None
        mount_path, _, volume = mounted_volume(file)
        assert "secret" in volume, f"{file} is not on a Secret volume"
        assert str(PurePosixPath(file).relative_to(mount_path)) in keys[volume["secret"]["secretName"]]
    # The commented SSH alternative also points at keys of the git Secret.
    ssh = yaml.safe_load(re.sub(r"^(\s*)# (sshKeyFile|knownHostsFile):", r"\1\2:", path.read_text(), flags=re.M))
    auth = ssh["repository"]["auth"]
    for key in ("sshKeyFile", "knownHostsFile"):
        mount_path, _, volume = mounted_volume(Path(auth[key]))
        assert PurePosixPath(auth[key]).name in keys[volume["secret"]["secretName"]]
    del auth["tokenFile"]
    ssh_config = load_config(None, overrides=_snake(ssh), environ={})
    assert ssh_config.repository.auth.ssh_key_file is not None
    # Ports, namespaces and the Lease agree with the manifests.
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    server = config.server
    assert [int(a.rpartition(":")[2]) for a in (server.webhook_address, server.health_address, server.metrics_address)
            ] == [ports["webhook"], ports["health"], ports["metrics"]]
    assert config.execution.namespace == "kubernaut-workflows"
    assert config.leader_election.enabled is True
    assert (config.leader_election.lease_namespace, config.leader_election.lease_name) == ("kubernaut-system", LEASE)


def _snake(data: Any) -> Any:
    if isinstance(data, dict):
        return {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): _snake(v) for k, v in data.items()}
    return data


def test_secret_templates_hold_placeholders_only() -> None:
    secrets = manifests(BASE / "secrets.example.yaml")
    assert {s["metadata"]["name"] for s in secrets} == {
        "kubernaut-gitops-reconciler-git", "kubernaut-gitops-reconciler-webhook",
        "kubernaut-gitops-reconciler-metrics-token"}
    volumes = {m[1]["secret"]["secretName"] for m in mounts().values() if "secret" in m[1]}
    assert volumes == {s["metadata"]["name"] for s in secrets}
    for secret in secrets:
        assert secret["metadata"]["namespace"] == "kubernaut-system"
        assert "data" not in secret
        assert set(secret["stringData"].values()) == {"REPLACE_ME"}


# -- services, PDB, NetworkPolicy -------------------------------------------------------------


def test_services_select_the_pods() -> None:
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in container()["ports"]}
    webhook = one("Service", "kubernaut-gitops-reconciler-webhook")["spec"]
    metrics = one("Service", "kubernaut-gitops-reconciler-metrics")["spec"]
    for spec in (webhook, metrics):
        assert spec["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in spec["ports"]} <= port_names
    assert [(p["port"], p["targetPort"]) for p in webhook["ports"]] == [(80, "webhook")]
    assert [(p["name"], p["port"], p["targetPort"]) for p in metrics["ports"]] == [("metrics", 9090, "metrics")]


def test_pdb() -> None:
    pdb = one("PodDisruptionBudget", "kubernaut-gitops-reconciler")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"]["matchLabels"] == deployment()["spec"]["selector"]["matchLabels"]


def test_network_policy() -> None:
    policy = one("NetworkPolicy", "kubernaut-gitops-reconciler")["spec"]
    assert policy["podSelector"]["matchLabels"] == deployment()["spec"]["selector"]["matchLabels"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    ingress = {(p["port"], p["protocol"]): rule.get("from") for rule in policy["ingress"] for p in rule["ports"]}
    assert set(ingress) == {(8080, "TCP"), (8081, "TCP"), (9090, "TCP")}
    assert ingress[(9090, "TCP")] == monitoring
    assert ingress[(8081, "TCP")] == monitoring
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP"), (22, "TCP")}
    dns = [rule for rule in policy["egress"] if any(p["port"] == 53 for p in rule["ports"])]
    assert dns[0]["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


# -- monitoring (CRDs the validator does not know) ---------------------------------------------


def alerts() -> list[dict[str, Any]]:
    rule = one("PrometheusRule", "kubernaut-gitops-reconciler")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "kubernaut-system"
    groups = rule["spec"]["groups"]
    assert groups and all(g["name"] and g["rules"] for g in groups)
    return [r for g in groups for r in g["rules"]]


PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, labels, keywords and ranges removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[m.end():].lstrip().startswith("(") or m.group().lower() in PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (a, b) (rate(x_total{y="z"}[5m])) > 0 or time() - max(g) > 600') == {"x_total", "g"}


def test_prometheus_rule_alerts() -> None:
    rules = alerts()
    assert {r["alert"] for r in rules} == ALERTS
    readme = (DEPLOY / "README.md").read_text()
    used: set[str] = set()
    for rule in rules:
        name = rule["alert"]
        assert rule["expr"].strip() and re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"].startswith("https://"), name
        anchor = annotations["runbook_url"].rpartition("#")[2]
        assert re.search(rf"^#+ {name}$", readme, re.M) and anchor == name.lower(), f"{name}: no runbook section"
        used |= metric_names(rule["expr"])
    assert used == ALERT_METRICS
    by_name = {r["alert"]: r for r in rules}
    assert by_name["ExecutionsFailing"]["labels"]["severity"] == "warning"
    assert "workflow_id" in by_name["ExecutionsFailing"]["annotations"]["summary"]
    assert 'outcome="Failed"' in by_name["ExecutionsFailing"]["expr"]
    assert by_name["NoLeader"]["for"] == "5m" and by_name["GitUnreachable"]["for"] == "10m"
    assert by_name["ReconcileFailing"]["for"] == "15m"


def test_service_monitor() -> None:
    monitor = one("ServiceMonitor", "kubernaut-gitops-reconciler")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    service = one("Service", "kubernaut-gitops-reconciler-metrics")
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items() | COMMON_LABELS.items()
    assert spec["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    token = endpoint["bearerTokenSecret"]
    assert token == {"name": "kubernaut-gitops-reconciler-metrics-token", "key": "token"}
    assert token["key"] in secret_keys()[token["name"]]


# -- the image ------------------------------------------------------------------------------------


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    instructions = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    froms = [line for line in instructions if line.upper().startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage build"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    users = [line.split()[1] for line in instructions if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the image must end as a non-root user"
    assert users[-1].split(":")[0] == "10001"
    install = [line for line in instructions if "apt-get install" in line]
    assert install and re.search(r"\bgit\b", install[0]) and "openssh-client" in install[0]
    assert any("pip install --no-cache-dir ." in line for line in instructions)
    assert any(line.startswith("COPY --from=builder /opt/venv") for line in instructions)
    assert 'ENTRYPOINT ["reconciler"]' in instructions
    assert 'CMD ["run", "--config", "/etc/reconciler/config.yaml"]' in instructions
    assert "HEALTHCHECK NONE" in instructions
    assert "org.opencontainers.image.source" in text
    ignored = (PROJECT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)
    assert "README.md" not in ignored and "reconciler" not in ignored and "templates" not in ignored


# -- kustomize build (when kubectl is installed) ------------------------------------------------


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize("directory", ["base", "overlays/production"])
def test_kustomize_build(directory: str) -> None:
    built = kustomize_build(DEPLOY / directory)
    kinds = {o["kind"] for o in built}
    assert ("ServiceMonitor" in kinds) == (directory != "base")
    assert "Secret" not in kinds
    for obj in built:
        labels = obj["metadata"].get("labels") or {}
        assert COMMON_LABELS.items() <= labels.items(), f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    (config_map,) = [o for o in built if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["name"].startswith("kubernaut-gitops-reconciler-config-")
    (dep,) = [o for o in built if o["kind"] == "Deployment"]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/kubernaut/gitops-reconciler:0.1.0"
    source = DEPLOY / directory / "config.yaml" if directory != "base" else BASE / "config.yaml"
    assert config_map["data"]["config.yaml"] == source.read_text()
