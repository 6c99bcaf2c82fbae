"""The reconciler against a fake that behaves like a real cluster (issue 10).

Each test pins one difference a run against kube-apiserver 1.28 with the real Tekton CRDs
and Job controller showed, and would fail on the code before the fix: strict field
validation, API warnings, ``pods/log`` errors, runs whose pods never start, adoption
start times and counters, ``sync --once`` and deleted executions, aggregated Events and
``diff --templates``.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.declare.names import run_name
from reconciler.errors import Invalid, NotFound
from reconciler.record.transitions import MemoryStatusStore
from reconciler.render.renderer import Renderer, builtin_templates_dir
from reconciler.run.cluster import KubeCluster
from reconciler.run.lifecycle import Settings
from reconciler.service.cycle import Reconciler
from reconciler.service.metrics import Metrics
from reconciler.simulator import FakeKubeServer
from reconciler.simulator.schema import tekton_schema
from reconciler.source.gitsource import GitSource
from tests.conftest import CATALOG, WorkRepo, execution_yaml
from tests.harness import NS, T0, TARGET, Env, declare, state

JOB_WORKFLOW = 'workflowId: cleanup-node-disk, version: "1.0.0"'
NODE = "Node/ip-10-0-5-142.eu-west-1.compute.internal"
needs_tekton_schema = pytest.mark.skipif(tekton_schema("pipelineruns") is None,
                                         reason="../shared/tekton is absent: no Tekton CRD schema to prune with")


def _reconciler(env: Env, renderer: Renderer | None = None, store: MemoryStatusStore | None = None) -> Reconciler:
    source = GitSource(str(env.repo.path), cache_dir=env.tmp / "cache")
    return Reconciler(source, KubeCluster(env.kube, NS, clock=env.clock), renderer=renderer,
                      settings=Settings(namespace=NS, cooldown=timedelta(minutes=5)),
                      store=store or env.store, clock=env.clock)


def _templates_with(tmp: Path, extra_spec_line: str) -> Path:
    """A user's templates directory: the built-in PipelineRun template plus one spec line."""
    out = tmp / "templates"
    out.mkdir()
    text = (builtin_templates_dir() / "pipelinerun.yaml.j2").read_text()
    (out / "pipelinerun.yaml.j2").write_text(text.replace("spec:\n", f"spec:\n{extra_spec_line}\n", 1))
    return out


# -- 1. unknown fields ------------------------------------------------------------------

@needs_tekton_schema
def test_a_typo_in_a_custom_template_is_refused_naming_the_field(env: Env) -> None:
    # A real API server prunes "spec.timeout" (not in the Tekton v1 schema) and answers 201;
    # with fieldValidation=Strict it refuses the create (400) naming the field.
    declare(env, "oom")
    reconciler = _reconciler(env, Renderer(_templates_with(env.tmp, "  timeout: 1h"), NS))
    result = reconciler.run_once()
    s = result.states["oom"]
    assert state(result, "oom") == ("Failed", "ConfigurationError")
    assert 'unknown field "spec.timeout"' in s.message
    assert s.failure_details["wasExecutionFailure"] is False
    assert 'field "spec.timeout"' in s.failure_details["naturalLanguageSummary"]
    assert env.runs() == []
    (post,) = [r for r in env.server.requests if r.method == "POST" and r.path.endswith("/pipelineruns")]
    assert post.query.get("fieldValidation") == "Strict"


def test_api_warnings_are_logged_with_the_execution(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    # Real servers send `Warning: 299 - "..."` headers (deprecations, PodSecurity in warn
    # mode, admission webhooks); each one is logged with the execution it concerns.
    env.server.warn_on("POST", r"/pipelineruns$", 'would violate PodSecurity "restricted:latest": runAsNonRoot')
    declare(env, "oom")
    with caplog.at_level(logging.WARNING, logger="reconciler.kube"):
        env.cycle()
    (record,) = [r for r in caplog.records if r.getMessage() == "API server warning"]
    assert record.__dict__["execution"] == "oom" and record.__dict__["run"] == run_name(TARGET)
    assert record.__dict__["warning"] == 'would violate PodSecurity "restricted:latest": runAsNonRoot'


# -- 2. pods/log errors -----------------------------------------------------------------

def test_pod_log_errors_arrive_as_status_not_406(env: Env) -> None:
    # The real server answers a failing text/plain-only log request with 406; asking for
    # JSON too brings the real Status: 404 for a pod that is gone, 400 while it waits.
    with pytest.raises(NotFound):
        env.kube.pod_log(NS, "gone-pod", "step-apply")
    env.server.put_object("", "v1", "pods", {
        "metadata": {"name": "waiting", "namespace": NS},
        "spec": {"containers": [{"name": "step-apply", "image": "x"}]},
        "status": {"phase": "Pending", "containerStatuses": [{"name": "step-apply", "image": "x", "imageID": "",
                                                              "ready": False, "restartCount": 0,
                                                              "state": {"waiting": {"reason": "PodInitializing"}}}]}})
    with pytest.raises(Invalid, match="is waiting to start"):
        env.kube.pod_log(NS, "waiting", "step-apply")
    assert KubeCluster(env.kube, NS).step_log("gone-pod", "step-apply") == ""


# -- 3. runs that never start -----------------------------------------------------------

def _declare_job(env: Env, name: str = "disk", sa: str = "kubernaut-node-maintenance") -> str:
    declare(env, name, target=NODE, params="{}", workflow=JOB_WORKFLOW,
            extra=f"  executionConfig: {{serviceAccountName: {sa}, timeout: 30m}}\n")
    return run_name(NODE)


def test_missing_service_account_is_shown_while_waiting_and_is_a_configuration_error(env: Env) -> None:
    # The Job controller cannot create the pod: only `FailedCreate` Warning Events say why,
    # the Job looks active until activeDeadlineSeconds fails it with DeadlineExceeded.
    job = _declare_job(env)
    env.cycle()
    env.jobs.fail_pod_creation(NS, job)
    waiting = env.cycle().states["disk"]
    assert (waiting.phase, waiting.message) == ("Running", "waiting: serviceaccount kubernaut-node-maintenance not found")
    env.jobs.fail(NS, job, "deadline")
    s = env.cycle().states["disk"]
    assert (s.phase, s.reason) == ("Failed", "ConfigurationError")
    assert s.failure_details["wasExecutionFailure"] is False
    summary = s.failure_details["naturalLanguageSummary"]
    assert "never started executing" in summary and "raise spec.executionConfig.timeout" not in summary
    assert 'create ServiceAccount "kubernaut-node-maintenance"' in summary


def test_unscheduled_pods_are_resource_exhausted_for_jobs_and_pipelineruns(env: Env) -> None:
    # The scheduler's FailedScheduling (a Warning Event on the pod) is the only trace of a
    # pod no node can take; the engine then times out.
    job = _declare_job(env)
    declare(env, "oom")
    env.cycle()
    env.jobs.unschedulable(NS, job)
    env.tekton.start(NS, run_name(TARGET))
    env.tekton.fail(NS, run_name(TARGET), "unschedulable", task="validate")
    env.server.clear_requests()
    result = env.cycle()
    for name in ("disk", "oom"):
        assert result.states[name].message.startswith("waiting: 0/3 nodes are available: 3 Insufficient memory"), name
    event_lists = [r for r in env.server.requests if r.method == "GET" and r.path.endswith("/events")]
    assert [r.query.get("fieldSelector") for r in event_lists] == ["type=Warning"]  # one LIST for all runs
    env.jobs.fail(NS, job, "deadline")
    env.tekton.fail(NS, run_name(TARGET), "unschedulable", task="validate", terminal=True)
    result = env.cycle()
    for name in ("disk", "oom"):
        s = result.states[name]
        assert (s.phase, s.reason) == ("Failed", "ResourceExhausted"), (name, s.message)
        assert s.failure_details["wasExecutionFailure"] is False


def test_missing_events_permission_only_loses_precision(env: Env) -> None:
    env.server.forbid("list", "events", namespace=NS)
    job = _declare_job(env)
    env.cycle()
    env.jobs.fail_pod_creation(NS, job)
    result = env.cycle()
    assert result.errors == [] and result.states["disk"].phase == "Running"


# -- 4. adoption ------------------------------------------------------------------------

def test_an_adopted_run_keeps_its_own_start_and_is_not_counted_as_created(env: Env) -> None:
    declare(env, "oom")
    declare(env, "other", target="search/Deployment/api")
    metrics = Metrics()
    metrics.record_cycle(env.cycle())  # two real creates
    env.clock.advance(minutes=10)
    for _ in range(3):  # three restarts: a new process adopts both runs each time
        metrics.record_cycle(_reconciler(env, store=MemoryStatusStore()).run_once())
    adopted = _reconciler(env, store=MemoryStatusStore()).run_once()
    assert adopted.states["oom"].start_time == T0  # the run's creationTimestamp, not the adoption
    env.tekton.start(NS, run_name(TARGET))
    later = _reconciler(env, store=MemoryStatusStore()).run_once()
    assert later.states["oom"].start_time == T0 + timedelta(minutes=10)  # status.startTime once Tekton set it
    text = metrics.exposition().decode()
    assert "workflowexecution_pipelinerun_creation_total 2.0" in text
    assert "kubernaut_reconciler_runs_adopted_total 6.0" in text


# -- 5. sync --once and a deleted execution ---------------------------------------------

def _sync_once(repo: WorkRepo, kubeconfig: Path, cache: Path) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["sync", "--once", "--repo", str(repo.path), "--kubeconfig", str(kubeconfig),
                                       "--cache-dir", str(cache), "-o", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_sync_once_cancels_the_run_of_a_deleted_execution(tmp_path: Path) -> None:
    # `reconciler run` remembers it started the execution; `sync --once` is a new process
    # each time and must find out from the run's own labels.
    repo = WorkRepo(tmp_path / "repo")
    repo.commit("declare", **{"workflows/w.yaml": CATALOG, "executions/a.yaml": execution_yaml("a")})
    with FakeKubeServer() as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        _sync_once(repo, kubeconfig, tmp_path / "c")
        repo.remove("executions/a.yaml")
        repo.commit("delete a")
        out = _sync_once(repo, kubeconfig, tmp_path / "c")
        (pr,) = server.list_objects("tekton.dev", "v1", "pipelineruns", NS)
        assert pr["spec"].get("status") == "Cancelled"
        (a,) = [d for d in out["executions"] if d["metadata"]["name"] == "a"]
        assert (a["status"]["phase"], a["status"]["reason"]) == ("Failed", "Cancelled")
        again = _sync_once(repo, kubeconfig, tmp_path / "c")
        assert [d["metadata"]["name"] for d in again["executions"]] == ["a"]
        cancels = [r for r in server.requests if r.method == "PATCH" and "/pipelineruns/" in r.path]
        assert len(cancels) == 1  # cancelled once, not on every sync


# -- 6. Events are aggregated ------------------------------------------------------------

def test_repeated_skips_make_one_event_with_a_count(env: Env) -> None:
    # client-go's recorder: the same involvedObject, reason and message → the existing
    # Event's count and lastTimestamp are patched, no new object.
    declare(env, "oom")
    env.cycle()
    declare(env, "second", target=TARGET)
    for _ in range(3):  # `sync --once` three times: three new processes
        env.clock.advance(seconds=30)
        _reconciler(env, store=MemoryStatusStore()).run_once()
    skipped = [e for e in env.server.list_objects("", "v1", "events", NS) if e["reason"] == "ExecutionSkipped"]
    assert len(skipped) == 1
    assert skipped[0]["count"] == 3
    assert skipped[0]["firstTimestamp"] < skipped[0]["lastTimestamp"]


# -- 7. diff --templates ----------------------------------------------------------------

def test_diff_takes_templates_like_sync_and_render(env: Env) -> None:
    templates = _templates_with(env.tmp, "  managedBy: acme.example/custom-template")
    declare(env, "oom")
    env.cycle()
    declare(env, "oom", params="{NAMESPACE: payments, MEMORY_LIMIT: 2Gi}")  # edited after start
    kubeconfig = env.server.write_kubeconfig(env.tmp / "kubeconfig")
    args = ["diff", "--repo", str(env.repo.path), "--kubeconfig", str(kubeconfig), "--cache-dir", str(env.tmp / "d")]
    plain = CliRunner().invoke(main, args, catch_exceptions=False)
    custom = CliRunner().invoke(main, [*args, "--templates", str(templates)], catch_exceptions=False)
    assert plain.exit_code == custom.exit_code == 1, custom.output
    assert "managedBy: acme.example/custom-template" in custom.stdout
    assert "custom-template" not in plain.stdout
    shutil.rmtree(templates)
