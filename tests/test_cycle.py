"""The reconcile cycle end to end: real Git, the fake API server over HTTP, the official client.

Every lifecycle branch of SPEC §4 is driven here with the Tekton/Job simulators playing the
controllers and an injected clock (no sleeps). The harness is in tests/harness.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from reconciler.declare.names import run_name
from reconciler.observe.vocabulary import format_time
from reconciler.record.transitions import MemoryStatusStore
from tests.conftest import execution_yaml
from tests.harness import NS, TARGET, Env, declare, state


def test_create_observe_complete_and_release(env: Env) -> None:
    declare(env, "oom")
    first = env.cycle()
    assert first.errors == []
    assert state(first, "oom") == ("Running", "Running")
    (run,) = env.runs()
    assert run["metadata"]["name"] == run_name(TARGET)
    assert run["metadata"]["labels"]["kubernaut.ai/workflow-execution"] == "oom"
    assert first.states["oom"].execution_ref is not None
    assert first.states["oom"].execution_ref.uid == run["metadata"]["uid"]
    assert "Created" in env.events()

    env.tekton.start(NS, run["metadata"]["name"])
    env.clock.advance(minutes=1)
    assert state(env.cycle(), "oom") == ("Running", "Running")
    env.tekton.succeed(NS, run["metadata"]["name"])
    env.clock.advance(minutes=1)
    done = env.cycle()
    s = done.states["oom"]
    assert (s.phase, s.health, s.sync) == ("Completed", "Healthy", "Synced")
    assert s.execution_status["completedTasks"] == 3 and s.completion_time is not None
    assert "Completed" in env.events()

    env.clock.advance(minutes=2)  # within the cooldown: the lock is kept
    env.cycle()
    assert len(env.runs()) == 1
    env.clock.now = s.completion_time + timedelta(minutes=5, seconds=1)
    released = env.cycle()
    assert env.runs() == [] and "LockReleased" in env.events()
    assert state(released, "oom") == ("Completed", "Succeeded")
    env.cycle()
    assert env.posts("pipelineruns") == 1  # never re-created


def test_two_executions_on_one_target_in_one_cycle(env: Env) -> None:
    env.repo.commit("two at once", **{"executions/a-first.yaml": execution_yaml("a-first"),
                                      "executions/b-second.yaml": execution_yaml("b-second")})
    result = env.cycle()
    assert len(env.runs()) == 1 and env.posts("pipelineruns") == 1
    assert state(result, "a-first") == ("Running", "Running")
    assert state(result, "b-second") == ("Skipped", "ResourceBusy")
    assert result.states["b-second"].skip_details["conflictingExecution"] == "a-first"
    assert "a-first" in result.states["b-second"].message


def test_busy_target_while_running_is_skipped(env: Env) -> None:
    declare(env, "first")
    env.cycle()
    declare(env, "second", params="{NAMESPACE: payments, MEMORY_LIMIT: 2Gi}")
    result = env.cycle()
    assert state(result, "second") == ("Skipped", "ResourceBusy")
    assert "ExecutionSkipped" in env.events()


def complete(env: Env, name: str) -> None:
    env.tekton.start(NS, run_name(TARGET))
    env.tekton.succeed(NS, run_name(TARGET))
    assert state(env.cycle(), name)[0] == "Completed"


def test_same_workflow_within_cooldown_is_recently_remediated(env: Env) -> None:
    declare(env, "first")
    env.cycle()
    complete(env, "first")
    env.clock.advance(minutes=2)
    declare(env, "again", params="{NAMESPACE: payments, MEMORY_LIMIT: 2Gi}")
    result = env.cycle()
    assert state(result, "again") == ("Skipped", "RecentlyRemediated")
    assert result.states["again"].skip_details["conflictingExecution"] == "first"
    assert env.posts("pipelineruns") == 1


def test_different_workflow_waits_for_cooldown_then_runs(env: Env) -> None:
    declare(env, "first")
    env.cycle()
    complete(env, "first")
    finished = env.clock.now
    env.clock.advance(minutes=1)
    declare(env, "rollback", workflow='workflowId: rollback-deployment, version: "1.2.0"')
    waiting = env.cycle()
    assert state(waiting, "rollback") == ("Pending", "CooldownActive")
    # an absolute end, never a countdown: the status bytes do not change with the clock
    assert waiting.states["rollback"].skip_details["cooldownUntil"] == format_time(finished + timedelta(minutes=5))
    assert waiting.states["rollback"].health == "Progressing"
    env.clock.advance(minutes=3)
    assert state(env.cycle(), "rollback") == ("Pending", "CooldownActive")
    env.clock.now = finished + timedelta(minutes=5, seconds=1)
    started = env.cycle()
    assert state(started, "rollback") == ("Running", "Running")
    (run,) = env.runs()
    assert run["metadata"]["labels"]["kubernaut.ai/workflow-execution"] == "rollback"
    assert env.posts("pipelineruns") == 2


def test_restart_adopts_the_run_and_never_duplicates(env: Env) -> None:
    declare(env, "oom")
    env.cycle()
    restarted = env.new_reconciler(store=MemoryStatusStore())  # new process, no memory
    env.reconciler = restarted
    result = env.cycle()
    assert result.states["oom"].phase == "Running"  # reason: Tekton has not reported yet
    assert env.posts("pipelineruns") == 1 and len(env.runs()) == 1


def test_run_deleted_by_someone_else_fails_once_without_retry(env: Env) -> None:
    declare(env, "oom")
    env.cycle()
    env.server.delete_object("tekton.dev", "v1", "pipelineruns", NS, run_name(TARGET))
    result = env.cycle()
    s = result.states["oom"]
    assert (s.phase, s.reason) == ("Failed", "ExternallyDeleted")
    assert s.failure_details["wasExecutionFailure"] is False
    for _ in range(3):
        env.clock.advance(minutes=10)
        assert state(env.cycle(), "oom") == ("Failed", "ExternallyDeleted")
    assert env.posts("pipelineruns") == 1 and env.runs() == []


def test_transient_api_errors_are_retried_without_duplicates(env: Env) -> None:
    declare(env, "oom")
    env.repo.commit("other", **{"executions/other.yaml": execution_yaml("other", target="search/Deployment/api")})
    env.server.inject(method="POST", path_regex="pipelineruns$", status=503, times=2, retry_after=0.001)
    result = env.cycle()
    assert result.errors == []
    assert {state(result, n) for n in ("oom", "other")} == {("Running", "Running")}
    assert len(env.runs()) == 2


def test_create_whose_response_was_lost_is_adopted(env: Env) -> None:
    declare(env, "oom")
    fault = env.server.inject(method="POST", path_regex="pipelineruns$", drop=True, after_apply=True)
    result = env.cycle()
    assert fault.hits == 1
    assert result.states["oom"].phase == "Running" and result.errors == []
    assert len(env.runs()) == 1


def test_persistent_outage_leaves_execution_pending_and_cycle_goes_on(env: Env) -> None:
    env.repo.commit("two", **{"executions/oom.yaml": execution_yaml("oom"),
                              "executions/disk.yaml": execution_yaml(
                                  "disk", target="Node/worker-1", params="{}",
                                  workflow='workflowId: cleanup-node-disk, version: "1.0.0"')})
    env.server.inject(method="POST", path_regex="pipelineruns$", status=500, times=None)
    result = env.cycle()
    assert any(e.startswith("oom:") and "500" in e for e in result.errors)
    assert state(result, "oom") == ("Pending", "Unavailable")
    assert "could not create the run" in result.states["oom"].message
    assert state(result, "disk") == ("Running", "Running")
    assert len(env.jobs_()) == 1


def test_forbidden_names_the_missing_permission(env: Env) -> None:
    declare(env, "oom")
    env.server.forbid("create", "pipelineruns", namespace=NS, group="tekton.dev")
    result = env.cycle()
    (error,) = result.errors
    assert "may not create pipelineruns.tekton.dev" in error and "ServiceAccount" in error
    assert env.runs() == []
    assert state(result, "oom") == ("Pending", "Forbidden")


def test_api_server_down_marks_sync_unknown(env: Env) -> None:
    declare(env, "oom")
    env.cycle()
    env.server.inject(method="GET", path_regex="pipelineruns", status=503, times=None)
    result = env.cycle()
    assert result.cluster_unknown
    s = result.states["oom"]
    assert (s.phase, s.sync, s.health) == ("Running", "Unknown", "Unknown")


@pytest.mark.parametrize(("kind", "task", "reason", "was"), [
    ("oom", "apply", "OOMKilled", True),
    ("exit", "apply", "TaskFailed", True),
    ("forbidden", "apply", "Forbidden", True),  # the reason is only in the step's log
    ("timeout", "apply", "DeadlineExceeded", True),
    ("image_pull", "validate", "ImagePullBackOff", False),  # nothing ran yet
    ("image_pull", "apply", "ImagePullBackOff", True),  # "validate" ran before
    ("config", "apply", "ConfigurationError", False),
])
def test_failures_are_classified(env: Env, kind: str, task: str, reason: str, was: bool) -> None:
    declare(env, "oom")
    env.cycle()
    if kind != "config":
        env.tekton.start(NS, run_name(TARGET))
    env.tekton.fail(NS, run_name(TARGET), kind=kind, task=task)
    result = env.cycle()
    s = result.states["oom"]
    assert (s.phase, s.reason, s.health) == ("Failed", reason, "Degraded")
    details = s.failure_details
    assert details["reason"] == reason and details["wasExecutionFailure"] is was
    assert "increase-memory-limit@1.2.0" in details["naturalLanguageSummary"]
    assert TARGET in details["naturalLanguageSummary"]
    assert "Failed" in env.events()


def test_deleting_the_file_cancels_the_running_run(env: Env) -> None:
    declare(env, "oom")
    env.cycle()
    env.tekton.start(NS, run_name(TARGET))
    env.repo.remove("executions/oom.yaml")
    env.repo.commit("withdraw")
    result = env.cycle()
    assert state(result, "oom") == ("Failed", "Cancelled")
    (run,) = env.runs()
    assert run["spec"]["status"] == "Cancelled"
    assert "deleted" in result.states["oom"].message


def test_engine_ignoring_the_deadline_is_cancelled_by_us(env: Env) -> None:
    declare(env, "oom", extra="  executionConfig: {timeout: 10m}\n")
    env.cycle()
    env.tekton.start(NS, run_name(TARGET))
    env.clock.advance(minutes=16)
    result = env.cycle()
    assert state(result, "oom") == ("Failed", "DeadlineExceeded")
    assert env.runs()[0]["spec"]["status"] == "Cancelled"


def test_job_engine_lifecycle(env: Env) -> None:
    declare(env, "disk", target="Node/worker-1", params="{}",
            workflow='workflowId: cleanup-node-disk, version: "1.0.0"')
    assert state(env.cycle(), "disk") == ("Running", "Running")
    (job,) = env.jobs_()
    assert job["spec"]["backoffLimit"] == 0
    env.jobs.start(NS, job["metadata"]["name"])
    env.jobs.fail(NS, job["metadata"]["name"], kind="oom")
    result = env.cycle()
    s = result.states["disk"]
    assert (s.phase, s.reason) == ("Failed", "OOMKilled")
    assert s.failure_details["failedStepName"] == "workflow"


def test_suspend_holds_then_release_starts(env: Env) -> None:
    declare(env, "oom", extra="  suspend: true\n")
    held = env.cycle()
    s = held.states["oom"]
    assert (s.phase, s.reason, s.health) == ("Pending", "Suspended", "Suspended")
    assert env.runs() == []
    declare(env, "oom", extra="  suspend: false\n")
    assert state(env.cycle(), "oom") == ("Running", "Running")


def test_invalid_execution_fails_and_others_run(env: Env) -> None:
    env.repo.commit("mixed", **{"executions/bad.yaml": execution_yaml("bad", extra="  suspnd: true\n"),
                                "executions/good.yaml": execution_yaml("good")})
    result = env.cycle()
    bad = result.states["bad"]
    assert (bad.phase, bad.reason) == ("Failed", "ConfigurationError")
    assert "suspnd" in bad.message and "executions/bad.yaml" in bad.message
    assert state(result, "good") == ("Running", "Running")


def test_edit_after_start_is_reported_not_applied(env: Env) -> None:
    declare(env, "oom")
    env.cycle()
    declare(env, "oom", params="{NAMESPACE: payments, MEMORY_LIMIT: 4Gi}")
    result = env.cycle()
    s = result.states["oom"]
    assert s.sync == "OutOfSync" and s.condition("SpecChangedAfterStart") is not None
    assert env.posts("pipelineruns") == 1
    assert env.runs()[0]["spec"]["params"][0]["value"] == "1Gi"


def test_dry_run_changes_nothing(env: Env) -> None:
    declare(env, "oom")
    env.reconciler = env.new_reconciler(dry_run=True)
    env.server.clear_requests()
    result = env.cycle()
    assert env.runs() == []
    assert all(r.method == "GET" for r in env.server.requests)
    assert result.states["oom"].message.startswith("would create PipelineRun wfe-")
    assert env.store.saves == 0


def test_order_is_first_merged_first_served(env: Env) -> None:
    env.repo.commit("z first", **{"executions/z-early.yaml": execution_yaml("z-early")})
    env.repo.commit("a later", **{"executions/a-late.yaml": execution_yaml("a-late")})
    result = env.cycle()
    assert state(result, "z-early") == ("Running", "Running")
    assert state(result, "a-late") == ("Skipped", "ResourceBusy")


def test_create_that_times_out_is_retried_and_adopted(env: Env) -> None:
    """The API server answers too late: the client gives up, retries, and the run that the
    slow request did create is adopted — never a second one."""
    env.kube.request_timeout = 0.5
    declare(env, "oom")
    fault = env.server.inject(method="POST", path_regex="pipelineruns$", delay=1.0, times=1)
    result = env.cycle()
    assert fault.hits == 1
    assert result.states["oom"].phase == "Running" and result.errors == []
    assert len(env.runs()) == 1
