"""Failure classification against realistic Tekton v1 and batch/v1 payloads (tests/payloads/).

Each payload is what ``kubectl get ... -o yaml|json`` prints (a v1 List); the tables below say
what an SRE should read in ``status.failureDetails`` for it.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import yaml

from reconciler.observe.failures import classify_job, classify_pipelinerun, classify_text, externally_deleted
from reconciler.observe.vocabulary import CANCELLED_BY_ANNOTATION, FailureDetails, FailureReason
from tests.tekton_payloads import CTX, JOB_CTX, PAYLOADS, load  # noqa: F401

UTC = timezone.utc


def tekton(name: str) -> FailureDetails:
    objs = load(name)
    return classify_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)


def job(name: str) -> FailureDetails:
    objs = load(name)
    return classify_job(objs["Job"][0], objs["Pod"], JOB_CTX, events=objs["Event"])


def classify(name: str) -> FailureDetails:
    return job(name) if name.startswith("job_") else tekton(name)


def at(hh: int, mm: int, ss: int) -> datetime:
    return datetime(2026, 11, 21, hh, mm, ss, tzinfo=UTC)


# payload, reason, index, task, step, exit code, wasExecutionFailure, failedAt, elapsed
CASES = [
    ("tekton_oomkilled.yaml", "OOMKilled", 1, "increase-limit", "patch-memory", 137, True,
     at(9, 12, 3), "2m38s"),
    ("tekton_pipelinerun_timeout.json", "DeadlineExceeded", 1, "increase-limit", "wait-rollout",
     None, True, at(9, 39, 26), "30m1s"),
    ("tekton_taskrun_timeout.yaml", "DeadlineExceeded", 1, "increase-limit", "wait-rollout",
     None, True, at(9, 19, 39), "10m14s"),
    ("tekton_forbidden.yaml", "Forbidden", 1, "increase-limit", "patch-memory", 1, True,
     at(9, 9, 51), "26s"),
    ("tekton_pod_admission_forbidden.yaml", "Forbidden", 0, "snapshot", None, None, False,
     at(9, 9, 27), "2s"),
    ("tekton_imagepull.yaml", "ImagePullBackOff", 0, "snapshot", "capture", None, False,
     at(9, 9, 57), "32s"),
    ("tekton_taskfailed.yaml", "TaskFailed", 1, "increase-limit", "patch-memory", 2, True,
     at(9, 10, 10), "45s"),
    ("tekton_room_not_oom.yaml", "TaskFailed", 0, "drain", "evict", 1, True,
     at(9, 9, 59), "34s"),
    ("tekton_cancelled.yaml", "Cancelled", 1, "increase-limit", "wait-rollout", None, True,
     at(9, 11, 3), "1m38s"),
    ("tekton_resource_quota.yaml", "ResourceExhausted", 0, "snapshot", None, None, False,
     at(9, 39, 26), "30m1s"),
    ("tekton_config_error.yaml", "ConfigurationError", None, None, None, None, False,
     at(9, 9, 28), "3s"),
    ("tekton_couldnt_get_pipeline.json", "ConfigurationError", None, None, None, None, False,
     at(9, 9, 27), "2s"),
    ("job_exit_code.yaml", "TaskFailed", 0, "workflow", "workflow", 3, True,
     at(9, 10, 0), "35s"),
    ("job_oomkilled.yaml", "OOMKilled", 0, "workflow", "workflow", 137, True,
     at(9, 12, 3), "2m38s"),
    ("job_deadline.yaml", "DeadlineExceeded", 0, "workflow", "workflow", None, True,
     at(9, 39, 26), "30m1s"),
    ("job_imagepull.yaml", "ImagePullBackOff", 0, "workflow", "workflow", None, False,
     at(9, 39, 25), "30m0s"),
    ("job_quota_events.yaml", "ResourceExhausted", 0, "workflow", None, None, False,
     at(9, 39, 25), "30m0s"),
]


@pytest.mark.parametrize(("payload", "reason", "index", "task", "step", "exit_code", "was",
                          "failed_at", "elapsed"), CASES, ids=[c[0] for c in CASES])
def test_classification(payload: str, reason: str, index: int | None, task: str | None,
                        step: str | None, exit_code: int | None, was: bool, failed_at: datetime,
                        elapsed: str) -> None:
    d = classify(payload)
    assert (d.reason, d.failed_task_index, d.failed_task_name, d.failed_step_name) == (
        reason, index, task, step)
    assert d.exit_code == exit_code
    assert d.was_execution_failure is was
    assert d.failed_at == failed_at
    assert d.to_status_dict()["executionTimeBeforeFailure"] == elapsed


SUMMARY = [
    ("tekton_oomkilled.yaml", ['task "increase-limit" (index 1)', 'step "patch-memory"',
                               "after 2m 38s", "OOMKilled (exit code 137)",
                               "may have changed the cluster",
                               'raise the memory limit of step "patch-memory"',
                               "computeResources.limits.memory", "reduce its working set"]),
    ("tekton_pipelinerun_timeout.json", ["DeadlineExceeded", "after 30m 1s",
                                         "raise spec.executionConfig.timeout (currently 30m0s)",
                                         'investigate why step "wait-rollout" was slow',
                                         "may already be applied"]),
    ("tekton_taskrun_timeout.yaml", ['raise the timeout of task "increase-limit" in the '
                                     "workflow bundle (currently 10m0s)"]),
    ("tekton_forbidden.yaml", ["Forbidden (exit code 1)", 'cannot patch resource "deployments"',
                               'grant verb "patch" on resource "deployments" (API group "apps")'
                               ' in namespace "payments" to ServiceAccount '
                               '"kubernaut-workflows/kubernaut-workflow-runner"']),
    ("tekton_pod_admission_forbidden.yaml", ["never started executing",
                                             "satisfy the admission policy"]),
    ("tekton_imagepull.yaml", ["ImagePullBackOff", "never started executing",
                               '"ghcr.io/acme/wf/kubectl@sha256:' + "2" * 64 + '" exists',
                               "imagePullSecrets"]),
    ("tekton_taskfailed.yaml", ["TaskFailed (exit code 2)",
                                "`kubectl logs -n kubernaut-workflows "
                                "wfe-3f1c9a2b7d4e8f60-increase-limit-pod -c step-patch-memory`",
                                "fix the underlying error before declaring a new execution"]),
    ("tekton_cancelled.yaml", ['spec.status was set to "Cancelled" by field manager '
                               '"kubectl-patch"', "declare a new execution to run it again"]),
    ("tekton_resource_quota.yaml", ["exceeded quota", "never started executing",
                                    'raise ResourceQuota "kubernaut-workflows-quota" in '
                                    'namespace "kubernaut-workflows"']),
    ("tekton_config_error.yaml", ["ConfigurationError", "fix parameter(s) MEMORY_LIMIT",
                                  "spec.parameters"]),
    ("tekton_couldnt_get_pipeline.json", ["name: workflw", "workflowRef.pipelineName"]),
    ("job_exit_code.yaml", ["TaskFailed (exit code 3)", "`kubectl logs -n kubernaut-workflows "
                            "wfe-3f1c9a2b7d4e8f60-x7k2p -c workflow`"]),
    ("job_quota_events.yaml", ["the Job then hit its deadline",
                               'raise ResourceQuota "kubernaut-workflows-quota"']),
]


@pytest.mark.parametrize(("payload", "phrases"), SUMMARY, ids=[s[0] for s in SUMMARY])
def test_summary_names_workflow_target_and_recommendation(payload: str,
                                                          phrases: list[str]) -> None:
    summary = classify(payload).natural_language_summary
    assert summary.startswith("Execution oom-payment-api-2026-11-21 of workflow "
                              "increase-memory-limit@1.2.0 on payments/Deployment/payment-api "
                              "failed")
    assert "Recommendation: " in summary
    assert "\n" not in summary
    for phrase in phrases:
        assert phrase in summary


def test_summary_trims_the_key_message() -> None:
    objs = load("tekton_taskfailed.yaml")
    step = objs["TaskRun"][1]["status"]["steps"][0]["terminated"]
    step["message"] = json.dumps([{"key": "error", "value": "x" * 5000, "type": 1}])
    d = classify_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)
    assert len(d.natural_language_summary) < 1200
    assert "x" * 250 in d.natural_language_summary and "x" * 300 not in d.natural_language_summary
    assert len(d.message) <= 1024


@pytest.mark.parametrize(("text", "expected"), [
    ("container step-patch was OOMKilled", FailureReason.OOMKilled),
    ("fatal error: runtime: out of memory", FailureReason.OOMKilled),
    ("Memory cgroup out of memory: Killed process 4242 (kubectl)", FailureReason.OOMKilled),
    ("no room left; the broom closet is full; zoom call at 10", None),
    ("bedroom zoomkilled broomOOM", None),
    ("policy unforbiddenness check bypassed", None),
    ("an unforbidden change", None),
    ('Error from server (Forbidden): deployments.apps "api" is forbidden', FailureReason.Forbidden),
    ('User "u" cannot delete resource "pods" in API group ""', FailureReason.Forbidden),
    ('pods "p" is forbidden: exceeded quota: q, requested: cpu=2', FailureReason.ResourceExhausted),
    ("0/3 nodes are available: 3 Insufficient memory.", FailureReason.ResourceExhausted),
    ('Back-off pulling image "ghcr.io/a/b:1"', FailureReason.ImagePullBackOff),
    ("failed to pull image: 403 Forbidden", FailureReason.ImagePullBackOff),
    ("Get https://api: context deadline exceeded", FailureReason.DeadlineExceeded),
    ("error: timed out waiting for the condition", FailureReason.DeadlineExceeded),
    ('configmaps "wf-config" not found', FailureReason.ConfigurationError),
    ("the deadlines are tight; timedout-ish; outofmemory", None),
    ("", None),
])
def test_text_fallback_matches_on_word_boundaries(text: str,
                                                  expected: FailureReason | None) -> None:
    assert classify_text(text) is expected


def test_structured_reason_beats_message_text() -> None:
    objs = load("tekton_oomkilled.yaml")
    tr = objs["TaskRun"][1]
    tr["status"]["conditions"][0]["message"] = "user is forbidden; deadline exceeded"
    d = classify_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)
    assert d.reason == "OOMKilled"
    objs = load("tekton_pipelinerun_timeout.json")
    objs["TaskRun"][1]["status"]["steps"][1]["terminated"]["message"] = "OOMKilled"
    assert classify_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"],
                                CTX).reason == "DeadlineExceeded"


@pytest.mark.parametrize(("step_message", "reason"), [
    ("runtime: out of memory", "OOMKilled"),
    ('pods "x" is forbidden: exceeded quota: small-quota', "ResourceExhausted"),
    ("error: timed out waiting for the rollout", "TaskFailed"),  # a step's own wait: still its error
    ("", "TaskFailed"),
])
def test_nonzero_exit_is_refined_only_by_specific_text(step_message: str, reason: str) -> None:
    objs = load("tekton_taskfailed.yaml")
    objs["TaskRun"][1]["status"]["steps"][0]["terminated"]["message"] = step_message
    d = classify_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)
    assert (d.reason, d.exit_code, d.was_execution_failure) == (reason, 2, True)


def test_first_failed_child_in_child_reference_order() -> None:
    objs = load("tekton_taskfailed.yaml")
    pr, trs = objs["PipelineRun"][0], objs["TaskRun"]
    # snapshot fails too (parallel): it comes first in childReferences, whatever the list order
    trs[0]["status"]["conditions"][0].update(status="False", reason="Failed",
                                             message='"step-capture" exited with code 4')
    trs[0]["status"]["steps"][0]["terminated"].update(exitCode=4, reason="Error")
    d = classify_pipelinerun(pr, list(reversed(trs)), CTX)
    assert (d.failed_task_index, d.failed_task_name, d.failed_step_name, d.exit_code) == (
        0, "snapshot", "capture", 4)


def test_failure_ignored_taskrun_is_not_the_failing_task() -> None:
    objs = load("tekton_taskfailed.yaml")
    objs["TaskRun"][0]["status"]["conditions"][0].update(status="False", reason="FailureIgnored")
    d = classify_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)
    assert d.failed_task_name == "increase-limit"


def test_exit_code_from_taskrun_message_when_steps_are_missing() -> None:
    objs = load("tekton_taskfailed.yaml")
    del objs["TaskRun"][1]["status"]["steps"]
    d = classify_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)
    assert (d.reason, d.exit_code, d.failed_step_name) == ("TaskFailed", 2, None)
    assert d.failed_at == at(9, 10, 11)  # the TaskRun's completionTime


@pytest.mark.parametrize(("message", "reason", "was"), [
    ("Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 1", "TaskFailed", True),
    ("something odd happened", "Unknown", True),  # unknown whether it ran: assume it may have
])
def test_pipelinerun_without_taskruns(message: str, reason: str, was: bool) -> None:
    pr = load("tekton_taskfailed.yaml")["PipelineRun"][0]
    pr["status"]["conditions"][0]["message"] = message
    d = classify_pipelinerun(pr, [], CTX)
    assert (d.reason, d.was_execution_failure, d.failed_task_name) == (reason, was, None)


def test_cancelled_before_any_step_ran_did_not_change_the_cluster() -> None:
    objs = load("tekton_cancelled.yaml")
    objs["TaskRun"] = objs["TaskRun"][1:]
    objs["PipelineRun"][0]["status"]["childReferences"].pop(0)
    objs["TaskRun"][0]["status"]["steps"] = [
        {"name": "patch-memory", "container": "step-patch-memory",
         "terminated": {"exitCode": 1, "reason": "TaskRunCancelled", "startedAt": None,
                        "finishedAt": "2026-11-21T09:11:03Z"}}]
    d = classify_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)
    assert (d.reason, d.was_execution_failure) == ("Cancelled", False)
    assert "never started executing" in d.natural_language_summary


@pytest.mark.parametrize(("annotation", "phrase"), [
    ("the reconciler: execution file executions/oom.yaml was deleted in 4e5f6a7",
     "It was cancelled: the reconciler: execution file executions/oom.yaml was deleted"),
    (None, "The run does not record who cancelled it."),
])
def test_who_cancelled(annotation: str | None, phrase: str) -> None:
    objs = load("tekton_cancelled.yaml")
    pr = objs["PipelineRun"][0]
    del pr["metadata"]["managedFields"]
    del pr["spec"]["status"]
    if annotation:
        pr["metadata"]["annotations"] = {CANCELLED_BY_ANNOTATION: annotation}
    assert phrase in classify_pipelinerun(pr, objs["TaskRun"], CTX).natural_language_summary


def test_deadline_before_start_without_a_blocker_did_not_run() -> None:
    objs = load("tekton_resource_quota.yaml")
    objs["TaskRun"][0]["status"]["conditions"][0].update(reason="Pending", message="Pending")
    d = classify_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)
    assert (d.reason, d.was_execution_failure) == ("DeadlineExceeded", False)


def test_deadline_while_resolving_the_bundle() -> None:
    pr = load("tekton_resource_quota.yaml")["PipelineRun"][0]
    del pr["status"]["childReferences"]
    d = classify_pipelinerun(pr, [], CTX)
    assert (d.reason, d.was_execution_failure, d.failed_task_name) == (
        "DeadlineExceeded", False, None)
    assert ("nothing had started when the time ran out: find what held the run back with "
            "`kubectl describe pipelinerun -n kubernaut-workflows wfe-3f1c9a2b7d4e8f60`"
            ) in d.natural_language_summary
    assert "raise spec.executionConfig.timeout (currently 30m0s)" in d.natural_language_summary


def test_taskrun_cancelled_on_its_own() -> None:
    objs = load("tekton_cancelled.yaml")
    pr, tr = objs["PipelineRun"][0], objs["TaskRun"][1]
    del pr["metadata"]["managedFields"], pr["spec"]["status"]
    # Tekton: a cancelled child and no failure → PipelineRun reason Cancelled with counts
    pr["status"]["conditions"][0]["message"] = (
        "Tasks Completed: 2 (Failed: 0, Cancelled 1), Skipped: 0")
    tr["spec"]["statusMessage"] = "stuck rollout, cancelled by hand"
    tr["metadata"]["managedFields"] = [{"manager": "tkn", "operation": "Update",
                                        "fieldsV1": {"f:spec": {"f:status": {},
                                                                "f:statusMessage": {}}}}]
    d = classify_pipelinerun(pr, objs["TaskRun"], CTX)
    assert ('It was cancelled: spec.status was set to "TaskRunCancelled" by field manager '
            '"tkn".') in d.natural_language_summary
    tr["metadata"]["annotations"] = {CANCELLED_BY_ANNOTATION: "on-call SRE (INC-4211)"}
    d = classify_pipelinerun(pr, objs["TaskRun"], CTX)
    assert "It was cancelled: on-call SRE (INC-4211)." in d.natural_language_summary


@pytest.mark.parametrize(("reason", "message", "expected"), [
    ("PipelineRunTimeout", 'PipelineRun "x" failed to finish within "1h0m0s"', "DeadlineExceeded"),
    ("Cancelled", 'PipelineRun "x" was cancelled', "Cancelled"),
    ("CancelledRunFinally", 'PipelineRun "x" was cancelled', "Cancelled"),
    ("StoppedRunFinally", 'PipelineRun "x" was cancelled', "Cancelled"),
    ("CouldntGetTask", "Pipeline x/y can't be Run; it contains Tasks that don't exist",
     "ConfigurationError"),
    ("ParameterTypeMismatch", "parameters have mismatching types", "ConfigurationError"),
    ("InvalidParamValue", "PipelineRun x/y parameters have invalid value", "ConfigurationError"),
    ("PipelineValidationFailed", "[User error] Validation failed", "ConfigurationError"),
    ("InvalidWorkspaceBindings", "doesn't bind Pipeline's Workspaces", "ConfigurationError"),
    ("ObjectParameterMissKeys", "missing object keys", "ConfigurationError"),
    ("CreateRunFailed", 'taskruns is forbidden: exceeded quota: count-quota', "ResourceExhausted"),
    ("CreateRunFailed", "admission webhook denied the request: no", "Forbidden"),
])
def test_pipelinerun_condition_reasons(reason: str, message: str, expected: str) -> None:
    pr = {"metadata": {"name": "x", "namespace": "kubernaut-workflows"},
          "status": {"startTime": "2026-11-21T09:00:00Z", "conditions": [
              {"type": "Succeeded", "status": "False", "reason": reason, "message": message}]}}
    assert classify_pipelinerun(pr, [], CTX).reason == expected


@pytest.mark.parametrize(("tr_reason", "expected", "was_if_nothing_ran"), [
    ("TaskRunTimeout", "DeadlineExceeded", False),
    ("TaskRunImagePullFailed", "ImagePullBackOff", False),
    ("ExceededResourceQuota", "ResourceExhausted", False),
    ("ExceededNodeResources", "ResourceExhausted", False),
    ("TaskRunCancelled", "Cancelled", False),
    ("CreateContainerConfigError", "ConfigurationError", False),
    ("TaskRunValidationFailed", "ConfigurationError", False),
    ("TaskRunResolutionFailed", "ConfigurationError", False),
    ("TaskRunResultLargerThanAllowedLimit", "TaskFailed", True),
])
def test_taskrun_condition_reasons(tr_reason: str, expected: str,
                                   was_if_nothing_ran: bool) -> None:
    objs = load("tekton_taskfailed.yaml")
    objs["TaskRun"][1]["status"]["conditions"][0].update(reason=tr_reason, message="see reason")
    d = classify_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)
    assert (d.reason, d.failed_task_name) == (expected, "increase-limit")
    assert d.was_execution_failure is True  # task "snapshot" had run: the workflow started
    objs["PipelineRun"][0]["status"]["childReferences"].pop(0)
    objs["TaskRun"][1]["status"]["steps"] = []
    d = classify_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"][1:], CTX)
    assert (d.reason, d.failed_task_index, d.was_execution_failure) == (
        expected, 0, was_if_nothing_ran)


@pytest.mark.parametrize(("payload", "reason", "was", "index"), [
    # a child TaskRun we were not given may have run: unknown → the cautious answer per reason
    ("tekton_imagepull.yaml", "ImagePullBackOff", False, 1),
    ("tekton_resource_quota.yaml", "ResourceExhausted", False, 1),
    ("tekton_taskfailed.yaml", "TaskFailed", True, 2),
])
def test_unknown_children(payload: str, reason: str, was: bool, index: int) -> None:
    objs = load(payload)
    pr = objs["PipelineRun"][0]
    pr["status"]["childReferences"].insert(0, {"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
                                               "name": "not-shown", "pipelineTaskName": "other"})
    d = classify_pipelinerun(pr, objs["TaskRun"], CTX)
    assert (d.reason, d.was_execution_failure, d.failed_task_index) == (reason, was, index)


@pytest.mark.parametrize(("waiting", "expected"), [
    ("ImagePullBackOff", "ImagePullBackOff"), ("ErrImagePull", "ImagePullBackOff"),
    ("InvalidImageName", "ImagePullBackOff"), ("CreateContainerConfigError", "ConfigurationError"),
])
def test_step_waiting_reasons(waiting: str, expected: str) -> None:
    objs = load("tekton_taskfailed.yaml")
    tr = objs["TaskRun"][1]
    tr["status"]["conditions"][0].update(status="Unknown", reason="Pending", message="Pending")
    tr["status"]["steps"] = [{"name": "patch-memory", "container": "step-patch-memory",
                              "waiting": {"reason": waiting, "message": "waiting"}}]
    objs["PipelineRun"][0]["status"]["childReferences"].pop(0)  # nothing else ran
    d = classify_pipelinerun(objs["PipelineRun"][0], [tr], CTX)
    assert (d.reason, d.failed_step_name, d.was_execution_failure) == (
        expected, "patch-memory", False)


@pytest.mark.parametrize(("state", "conditions", "expected", "exit_code"), [
    ({"waiting": {"reason": "CreateContainerConfigError",
                  "message": 'secret "wf-token" not found'}}, [], "ConfigurationError", None),
    ({"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}}, [],
     "ImagePullBackOff", None),
    ({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-11-21T09:09:27Z",
                     "message": 'User "system:serviceaccount:kubernaut-workflows:runner" cannot '
                                'patch resource "deployments" in API group "apps"'}},
     [], "Forbidden", 1),
    (None, [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient memory."}],
     "ResourceExhausted", None),
])
def test_job_pod_signals(state: dict[str, Any] | None, conditions: list[dict[str, Any]],
                         expected: str, exit_code: int | None) -> None:
    objs = load("job_exit_code.yaml")
    pod = objs["Pod"][0]
    pod["status"]["conditions"] = conditions
    if state is None:
        del pod["status"]["containerStatuses"]
    else:
        pod["status"]["containerStatuses"][0]["state"] = state
    d = classify_job(objs["Job"][0], objs["Pod"], JOB_CTX)
    assert (d.reason, d.exit_code) == (expected, exit_code)


def test_job_forbidden_recommends_the_serviceaccount_in_the_message() -> None:
    objs = load("job_exit_code.yaml")
    objs["Pod"][0]["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = (
        'User "system:serviceaccount:kubernaut-workflows:runner" cannot patch resource '
        '"deployments" in API group "apps" in the namespace "payments"')
    d = classify_job(objs["Job"][0], objs["Pod"], JOB_CTX)
    assert 'to ServiceAccount "kubernaut-workflows/runner"' in d.natural_language_summary
    assert d.was_execution_failure is True


def test_externally_deleted() -> None:
    d = externally_deleted(CTX, at(9, 9, 25), at(9, 11, 3))
    assert (d.reason, d.was_execution_failure, d.exit_code, d.failed_task_name) == (
        "ExternallyDeleted", False, None, None)
    assert d.execution_time_before_failure == timedelta(minutes=1, seconds=38)
    assert "PipelineRun of execution oom-payment-api-2026-11-21 was deleted outside" in d.message
    assert "had been running for 1m 38s, so it may have changed the cluster" in (
        d.natural_language_summary)
    assert "declare a new execution to retry" in d.natural_language_summary
    unknown = externally_deleted(JOB_CTX, None, at(9, 11, 3))
    assert unknown.execution_time_before_failure is None
    assert "Job of execution" in unknown.message
    assert "unknown" in unknown.natural_language_summary


@pytest.mark.parametrize("payload", [c[0] for c in CASES])
def test_deterministic(payload: str) -> None:
    first = classify(payload)
    objs = load(payload)
    again = (classify_job(copy.deepcopy(objs["Job"][0]), list(reversed(objs["Pod"])), JOB_CTX,
                          events=objs["Event"]) if payload.startswith("job_") else
             classify_pipelinerun(copy.deepcopy(objs["PipelineRun"][0]),
                                  list(reversed(objs["TaskRun"])), CTX))
    assert again == first
    assert json.dumps(again.to_status_dict(), sort_keys=True) == json.dumps(
        first.to_status_dict(), sort_keys=True)


def test_to_status_dict_keys_and_formats() -> None:
    out = tekton("tekton_oomkilled.yaml").to_status_dict()
    assert list(out) == ["failedTaskIndex", "failedTaskName", "failedStepName", "reason",
                         "message", "exitCode", "failedAt", "executionTimeBeforeFailure",
                         "naturalLanguageSummary", "wasExecutionFailure"]
    assert out["failedAt"] == "2026-11-21T09:12:03Z"
    assert out["executionTimeBeforeFailure"] == "2m38s"
    assert (out["failedTaskIndex"], out["exitCode"], out["wasExecutionFailure"]) == (1, 137, True)
    assert yaml.safe_load(yaml.safe_dump(out)) == out  # plain data, safe for the status file


def test_to_status_dict_omits_none() -> None:
    out = tekton("tekton_config_error.yaml").to_status_dict()
    assert set(out) == {"reason", "message", "failedAt", "executionTimeBeforeFailure",
                        "naturalLanguageSummary", "wasExecutionFailure"}
    assert out["wasExecutionFailure"] is False


def test_reason_vocabulary() -> None:
    assert [r.value for r in FailureReason] == [
        "OOMKilled", "DeadlineExceeded", "Forbidden", "ResourceExhausted", "ConfigurationError",
        "ImagePullBackOff", "TaskFailed", "Cancelled", "ExternallyDeleted", "Unknown"]
    assert FailureReason("OOMKilled") == "OOMKilled"


# Warning Events that keep a run's pods from running (issue 10): the Job controller's
# FailedCreate, the scheduler's FailedScheduling, the kubelet's image errors.
EVENT_CASES = [
    ("FailedCreate", 'Error creating: pods "wfe-1-" is forbidden: error looking up service account '
                     'kubernaut-workflows/kubernaut-node-maintenance: serviceaccount "kubernaut-node-maintenance" not found',
     "ConfigurationError", "serviceaccount kubernaut-node-maintenance not found"),
    ("FailedCreate", 'Error creating: pods "wfe-1-x" is forbidden: exceeded quota: compute-resources, requested: '
                     "limits.memory=2Gi, used: limits.memory=3Gi, limited: limits.memory=4Gi",
     "ResourceExhausted", "exceeded quota: compute-resources, requested: limits.memory=2Gi, used: "
                          "limits.memory=3Gi, limited: limits.memory=4Gi"),
    ("FailedCreate", 'Error creating: pods "wfe-1-x" is forbidden: violates PodSecurity "baseline:latest": '
                     'hostPath volumes (volume "host")', "ConfigurationError", None),
    ("FailedCreate", 'Error creating: Pod "wfe-1-x" is invalid: spec.containers[0].image: Required value',
     "ConfigurationError", None),
    ("FailedScheduling", "0/3 nodes are available: 3 Insufficient memory.", "ResourceExhausted",
     "0/3 nodes are available: 3 Insufficient memory."),
    ("Failed", 'Failed to pull image "ghcr.io/acme/wf@sha256:abc": not found', "ImagePullBackOff", None),
    ("BackOff", 'Back-off pulling image "ghcr.io/acme/wf@sha256:abc"', "ImagePullBackOff", None),
    ("Failed", 'Error: secret "db" not found', "ConfigurationError", None),
    ("BackOff", "Back-off restarting failed container workflow in pod wfe-1-x", None, None),
    ("Unhealthy", "Readiness probe failed", None, None),
]


@pytest.mark.parametrize(("reason", "message", "expected", "cause"), EVENT_CASES)
def test_warning_events_name_what_blocks_a_run(reason: str, message: str, expected: str | None,
                                               cause: str | None) -> None:
    from reconciler.observe.failures import event_blocker

    found = event_blocker({"type": "Warning", "reason": reason, "message": message})
    assert (found.reason.value if found else None) == expected
    if found is not None:
        assert found.message == message
        assert found.cause == (cause or message)
    assert event_blocker({"type": "Normal", "reason": reason, "message": message}) is None
