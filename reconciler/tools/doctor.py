"""``reconciler doctor``: is this cluster and repository ready for the reconciler?

A platform engineer installing the reconciler learns about a missing CRD, a forbidden verb
or a wrong Git token only from a crash loop.  Like ``flux check --pre``, this runs every
check against the configured cluster and repository and prints one line per check: pass,
warn or fail, and for each failure the fix.

Checks: the API server answers and is at least Kubernetes 1.27; Tekton's v1 PipelineRun CRD
is served; the bundles resolver is enabled; the execution namespace exists; every verb the
reconciler needs is allowed (one SelfSubjectAccessReview per verb and resource, no more);
every ServiceAccount the declared executions name exists; Git is reachable with the
configured credentials and the branch exists; a webhook secret is set; and each
notification sink's credentials (:func:`reconciler.service.notify.check_sinks`).

Exit codes (:func:`exit_code`): 0 every check passed (warnings allowed), 1 a check failed,
2 the checks could not run (the configuration is unreadable or invalid).
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.errors import ConfigError, KubeError, NotFound, ReconcilerError
from reconciler.run.kube import KubeClient
from reconciler.run.kube_api import (
    CONFIGMAPS,
    CRDS,
    EVENTS,
    JOBS,
    LEASES,
    NAMESPACES,
    PIPELINERUNS,
    PODS,
    SERVICEACCOUNTS,
    TASKRUNS,
    Resource,
)
from reconciler.service.config_model import Config
from reconciler.service.notify import check_sinks
from reconciler.source.gitauth import git_environment, read_secret
from reconciler.source.gitsource import GitSource
from reconciler.source.gitwords import redact_url

MIN_MINOR = 27
RESOLVERS_NAMESPACE = "tekton-pipelines-resolvers"
RESOLVERS_FLAGS = "resolvers-feature-flags"
PASS, WARN, FAIL = "pass", "warn", "fail"

# (resource, subresource, verbs) in the execution namespace: deploy/base/rbac-reconciler.yaml
NEEDED: tuple[tuple[Resource, str, tuple[str, ...]], ...] = (
    (PIPELINERUNS, "", ("get", "list", "watch", "create", "patch", "delete")),
    (TASKRUNS, "", ("get", "list", "watch")),
    (JOBS, "", ("get", "list", "watch", "create", "patch", "delete")),
    (PODS, "", ("get", "list", "watch")),
    (PODS, "log", ("get",)),
    (EVENTS, "", ("create", "patch", "list")),
)
LEASE_VERBS = ("get", "update", "create")
RBAC_FIX = "grant it in the reconciler's Role (deploy/base/rbac-reconciler.yaml) and bind it to its ServiceAccount"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass / warn / fail
    detail: str
    fix: str = ""


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == FAIL for c in checks) else 0


def _version(kube: KubeClient) -> tuple[Check, bool]:
    try:
        version = kube.server_version()
    except KubeError as e:
        return Check("API server", FAIL, f"unreachable: {e}",
                     "check kubernetes.kubeconfig / kubernetes.context (or the in-cluster ServiceAccount) and "
                     "that the API server is reachable from here"), False
    text = str(version.get("gitVersion") or f"v{version.get('major')}.{version.get('minor')}")
    try:
        major, minor = int(str(version.get("major", "0"))), int(str(version.get("minor", "0")).rstrip("+"))
    except ValueError:
        return Check("API server", WARN, f"reachable, version {text} not understood"), True
    if (major, minor) < (1, MIN_MINOR):
        return Check("API server", FAIL, f"Kubernetes {text}; at least 1.{MIN_MINOR} is needed",
                     f"upgrade the cluster to Kubernetes 1.{MIN_MINOR} or newer"), True
    return Check("API server", PASS, f"reachable, Kubernetes {text} (>= 1.{MIN_MINOR})"), True


def _tekton(kube: KubeClient) -> list[Check]:
    fix = ("install Tekton Pipelines v0.59 or newer (it serves tekton.dev/v1): kubectl apply -f "
           "https://storage.googleapis.com/tekton-releases/pipeline/latest/release.yaml")
    out: list[Check] = []
    try:
        crd = kube.get(CRDS, "", "pipelineruns.tekton.dev")
    except NotFound:
        out.append(Check("Tekton PipelineRun CRD", FAIL, "pipelineruns.tekton.dev is not installed", fix))
    except KubeError as e:
        out.append(Check("Tekton PipelineRun CRD", WARN, f"cannot read customresourcedefinitions: {e}",
                         "run doctor with an identity that may get customresourcedefinitions, or check by hand: "
                         "kubectl get crd pipelineruns.tekton.dev"))
    else:
        served = [v.get("name") for v in (crd.get("spec") or {}).get("versions") or [] if v.get("served")]
        if "v1" in served:
            out.append(Check("Tekton PipelineRun CRD", PASS, "pipelineruns.tekton.dev serves v1"))
        else:
            out.append(Check("Tekton PipelineRun CRD", FAIL,
                             f"pipelineruns.tekton.dev serves {', '.join(map(str, served)) or 'nothing'}, not v1", fix))
    try:
        flags = kube.get(CONFIGMAPS, RESOLVERS_NAMESPACE, RESOLVERS_FLAGS)
    except NotFound:
        out.append(Check("Tekton bundles resolver", FAIL,
                         f"{RESOLVERS_NAMESPACE}/{RESOLVERS_FLAGS} not found: Tekton's resolvers are not installed",
                         "install Tekton Pipelines v0.59 or newer (the resolvers ship with it)"))
        return out
    except KubeError as e:
        out.append(Check("Tekton bundles resolver", WARN, f"cannot read {RESOLVERS_NAMESPACE}/{RESOLVERS_FLAGS}: {e}",
                         f"check by hand: kubectl get cm -n {RESOLVERS_NAMESPACE} {RESOLVERS_FLAGS} "
                         "-o jsonpath='{.data.enable-bundles-resolver}'"))
        return out
    value = str((flags.get("data") or {}).get("enable-bundles-resolver", "true")).strip().lower()
    if value == "true":
        out.append(Check("Tekton bundles resolver", PASS, "enable-bundles-resolver is true"))
    else:
        out.append(Check("Tekton bundles resolver", FAIL, f"enable-bundles-resolver is {value!r}",
                         f"kubectl patch cm -n {RESOLVERS_NAMESPACE} {RESOLVERS_FLAGS} --type merge "
                         "-p '{\"data\":{\"enable-bundles-resolver\":\"true\"}}'"))
    return out


def _namespace(kube: KubeClient, namespace: str) -> Check:
    try:
        kube.get(NAMESPACES, "", namespace)
    except NotFound:
        return Check("execution namespace", FAIL, f"namespace {namespace} does not exist",
                     f"kubectl create namespace {namespace} (deploy/base/namespaces.yaml creates it)")
    except KubeError as e:
        return Check("execution namespace", WARN, f"cannot read namespace {namespace}: {e}",
                     f"check by hand: kubectl get namespace {namespace}")
    return Check("execution namespace", PASS, f"namespace {namespace} exists")


def _permissions(kube: KubeClient, config: Config) -> list[Check]:
    wanted: list[tuple[Resource, str, str, str]] = [
        (res, sub, verb, config.execution.namespace) for res, sub, verbs in NEEDED for verb in verbs]
    if config.leader_election.enabled:
        wanted += [(LEASES, "", verb, config.leader_election.lease_namespace) for verb in LEASE_VERBS]
    out: list[Check] = []
    for res, sub, verb, namespace in wanted:
        what = f"{verb} {res.qualified}{'/' + sub if sub else ''} in {namespace}"
        try:
            allowed, reason = kube.access_review(verb, res, namespace, sub)
        except KubeError as e:
            out.append(Check(f"RBAC: {what}", FAIL, f"SelfSubjectAccessReview failed: {e}", RBAC_FIX))
            continue
        if allowed:
            out.append(Check(f"RBAC: {what}", PASS, "allowed"))
        else:
            out.append(Check(f"RBAC: {what}", FAIL, f"forbidden{': ' + reason if reason else ''}", RBAC_FIX))
    return out


def _repository(config: Config) -> tuple[list[Check], set[str]]:
    """Git reachable with the configured credentials, the branch exists; the ServiceAccounts
    the declared executions name."""
    repo = config.repository
    where = f"{redact_url(repo.url)} branch {repo.branch}"
    try:
        source = GitSource(repo.url, branch=repo.branch, path=repo.path, cache_dir=repo.cache_dir,
                           env=git_environment(repo.auth))
        revision = source.fetch()
    except ConfigError as e:
        return [Check("Git", FAIL, str(e), "fix repository.auth in the configuration")], set()
    except ReconcilerError as e:
        return [Check("Git", FAIL, f"{where}: {e}",
                      "check repository.url, repository.branch and the credentials in repository.auth "
                      "(a token needs read and write access to contents)")], set()
    checks = [Check("Git", PASS, f"{where} reachable at {revision[:12]}")]
    try:
        declaration = source.load(revision)
    except ReconcilerError as e:
        return [*checks, Check("declared executions", WARN, f"cannot be read: {e}")], set()
    return checks, {e.service_account for e in declaration.executions}


def _service_accounts(kube: KubeClient, namespace: str, names: set[str]) -> list[Check]:
    out: list[Check] = []
    for name in sorted(names):
        try:
            kube.get(SERVICEACCOUNTS, namespace, name)
        except NotFound:
            out.append(Check(f"ServiceAccount {name}", FAIL, f"named by declared executions; absent from {namespace}",
                             f"kubectl create serviceaccount -n {namespace} {name} (with the Role its "
                             "workflows need; see deploy/base/rbac-workflow-runner.yaml)"))
        except KubeError as e:
            out.append(Check(f"ServiceAccount {name}", WARN, f"cannot be read in {namespace}: {e}"))
        else:
            out.append(Check(f"ServiceAccount {name}", PASS, f"exists in {namespace}"))
    return out


def _webhook(config: Config) -> Check:
    webhook = config.server.webhook
    try:
        secret = read_secret(webhook.secret_file, webhook.secret_env, "server.webhook secret")
    except ConfigError as e:
        return Check("webhook secret", FAIL, str(e), "mount the Secret at server.webhook.secretFile")
    if not secret:
        return Check("webhook secret", FAIL,
                     "no secret configured: every webhook will be refused (polling still works)",
                     "set server.webhook.secretFile (or secretEnv) and the same secret on the forge's webhook")
    return Check("webhook secret", PASS, "set")


def run_checks(config: Config, kube: KubeClient) -> list[Check]:
    """Every check, in the order a platform engineer fixes them."""
    version, reachable = _version(kube)
    checks = [version]
    namespace_ok = False
    if reachable:
        checks += _tekton(kube)
        namespace = _namespace(kube, config.execution.namespace)
        namespace_ok = namespace.status != FAIL
        checks.append(namespace)
        checks += _permissions(kube, config)
    git_checks, accounts = _repository(config)
    checks += git_checks
    if namespace_ok:  # ServiceAccounts are created with (and deleted with) their namespace
        checks += _service_accounts(kube, config.execution.namespace, accounts)
    checks.append(_webhook(config))
    if config.notifications.sinks():
        for result in check_sinks(config):
            status = PASS if result.ok else WARN if result.ok is None else FAIL
            checks.append(Check(f"notifications: {result.sink} ({result.kind})", status, result.message))
    return checks


def format_check(check: Check) -> list[str]:
    mark = {PASS: "✔", WARN: "!", FAIL: "✗"}[check.status]
    lines = [f"{mark} {check.status:<4}  {check.name}: {check.detail}"]
    if check.fix and check.status != PASS:
        lines.append(f"        fix: {check.fix}")
    return lines
