"""Phase mapping, task counts and status vocabulary (SPEC §4 step 7, BR-WF-003)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from reconciler.observe.runstatus import (
    ExecutionStatus,
    Phase,
    RunObservation,
    observe_job,
    observe_pipelinerun,
    task_counts,
)
from reconciler.observe.vocabulary import format_duration, format_time, human_duration, parse_time
from tests.tekton_payloads import CTX, JOB_CTX, PAYLOADS, load  # noqa: F401

UTC = timezone.utc


# --- phase mapping ----------------------------------------------------------------------

@pytest.mark.parametrize(("condition", "phase", "reason"), [
    ({"status": "True", "reason": "Succeeded"}, Phase.Completed, "Succeeded"),
    ({"status": "True", "reason": "Completed"}, Phase.Completed, "Completed"),
    ({"status": "False", "reason": "Failed"}, Phase.Failed, "OOMKilled"),
    ({"status": "Unknown", "reason": "Running"}, Phase.Running, "Running"),
    ({"status": "Unknown", "reason": "ResolvingPipelineRef"}, Phase.Running,
     "ResolvingPipelineRef"),
    ({"status": "Unknown", "reason": "PipelineRunPending"}, Phase.Running, "PipelineRunPending"),
    ({"status": "Unknown", "reason": "CancelledRunningFinally"}, Phase.Running,
     "CancelledRunningFinally"),
    (None, Phase.Running, "Pending"),
])
def test_pipelinerun_phase(condition: dict[str, Any] | None, phase: Phase, reason: str) -> None:
    objs = load("tekton_oomkilled.yaml")
    pr = objs["PipelineRun"][0]
    if condition is None:
        del pr["status"]["conditions"]
    else:
        pr["status"]["conditions"][0].update(condition)
    obs = observe_pipelinerun(pr, objs["TaskRun"], CTX)
    assert (obs.phase, obs.reason) == (phase, reason)
    assert obs.terminal is (phase is not Phase.Running)
    assert (obs.failure is not None) is (phase is Phase.Failed)
    assert obs.execution_status.status == (condition or {}).get("status", "Unknown")


def test_pipelinerun_without_status_is_running() -> None:
    pr = {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
          "metadata": {"name": "wfe-3f1c9a2b7d4e8f60", "namespace": "kubernaut-workflows"},
          "spec": {"timeouts": {"pipeline": "30m0s"}}}
    obs = observe_pipelinerun(pr, [], CTX)
    assert (obs.phase, obs.reason, obs.start_time, obs.failure) == (
        Phase.Running, "Pending", None, None)
    assert obs.execution_status == ExecutionStatus("Unknown", "", "", 0, None)
    assert obs.to_status_dict() == {
        "phase": "Running", "reason": "Pending", "message": obs.message,
        "executionStatus": {"status": "Unknown", "reason": "", "message": "",
                            "completedTasks": 0}}


def test_failed_observation_carries_failure_details() -> None:
    objs = load("tekton_oomkilled.yaml")
    obs = observe_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)
    assert obs.failure is not None
    assert (obs.phase, obs.reason, obs.message) == (Phase.Failed, "OOMKilled",
                                                    obs.failure.message)
    assert obs.start_time == datetime(2026, 11, 21, 9, 9, 25, tzinfo=UTC)
    assert obs.completion_time == datetime(2026, 11, 21, 9, 12, 4, tzinfo=UTC)
    out = obs.to_status_dict()
    assert list(out) == ["phase", "reason", "message", "startTime", "completionTime", "duration",
                         "executionStatus", "failureDetails"]
    assert (out["startTime"], out["completionTime"], out["duration"]) == (
        "2026-11-21T09:09:25Z", "2026-11-21T09:12:04Z", "2m39s")
    assert out["executionStatus"] == {
        "status": "False", "reason": "Failed",
        "message": "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 1",
        "completedTasks": 2, "totalTasks": 3}
    assert out["failureDetails"]["failedStepName"] == "patch-memory"


def test_completed_observation() -> None:
    obs = observe_pipelinerun(load("tekton_succeeded.yaml")["PipelineRun"][0], [], CTX)
    assert (obs.phase, obs.failure, obs.duration) == (Phase.Completed, None,
                                                      timedelta(minutes=1, seconds=48))
    assert obs.execution_status == ExecutionStatus(
        "True", "Succeeded", "Tasks Completed: 3 (Failed: 0, Cancelled 0), Skipped: 0", 3, 3)


def test_running_observation() -> None:
    objs = load("tekton_running.yaml")
    obs = observe_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)
    assert (obs.phase, obs.completion_time, obs.duration) == (Phase.Running, None, None)
    assert (obs.execution_status.completed_tasks, obs.execution_status.total_tasks) == (1, 3)
    assert "completionTime" not in obs.to_status_dict()


# --- task counts ------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "expected"), [
    ("Tasks Completed: 1 (Failed: 0, Cancelled 0), Incomplete: 2, Skipped: 0", (1, 3)),
    ("Tasks Completed: 0 (Failed: 0, Cancelled 0), Incomplete: 3, Skipped: 0", (0, 3)),
    ("Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 1", (2, 3)),
    ("Tasks Completed: 3 (Failed: 0, Cancelled 1), Skipped: 2", (3, 5)),
    ("Tasks Completed: 12 (Failed: 0, Cancelled 0), Incomplete: 30, Skipped: 4", (12, 46)),
    # no counts in the message: count the children (2 finished), total from pipelineSpec (3)
    ('PipelineRun "wfe-3f1c9a2b7d4e8f60" failed to finish within "30m0s"', (2, 3)),
    ('PipelineRun "wfe-3f1c9a2b7d4e8f60" was cancelled', (2, 3)),
    ("", (2, 3)),
])
def test_task_counts_from_condition_message(message: str, expected: tuple[int, int]) -> None:
    objs = load("tekton_oomkilled.yaml")
    pr = objs["PipelineRun"][0]
    pr["status"]["conditions"][0]["message"] = message
    assert task_counts(pr, objs["TaskRun"]) == expected


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda pr, trs: pr["status"].pop("pipelineSpec"), (2, 3)),  # childReferences + skippedTasks
    (lambda pr, trs: (pr["status"].pop("pipelineSpec"), pr["status"].pop("skippedTasks")), (2, 2)),
    (lambda pr, trs: trs.pop(), (1, 3)),  # a child we were not shown is not counted as done
    (lambda pr, trs: (pr.pop("status"), trs.clear()), (0, None)),
    # no childReferences (an older status): the TaskRuns we were given are the children
    (lambda pr, trs: [pr["status"].pop(k) for k in ("childReferences", "pipelineSpec")], (2, 3)),
])
def test_task_counts_fallback(mutate: Any, expected: tuple[int, int | None]) -> None:
    objs = load("tekton_oomkilled.yaml")
    pr, trs = objs["PipelineRun"][0], objs["TaskRun"]
    if "status" in pr:
        pr["status"]["conditions"][0]["message"] = "no counts here"
    mutate(pr, trs)
    assert task_counts(pr, trs) == expected


# --- Jobs -------------------------------------------------------------------------------

JOB = {"apiVersion": "batch/v1", "kind": "Job",
       "metadata": {"name": "wfe-3f1c9a2b7d4e8f60", "namespace": "kubernaut-workflows"},
       "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 1800}}


@pytest.mark.parametrize(("status", "phase", "reason", "engine_status"), [
    ({"startTime": "2026-11-21T09:09:25Z", "completionTime": "2026-11-21T09:11:00Z",
      "succeeded": 1, "conditions": [
          {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
          {"type": "Complete", "status": "True", "reason": "CompletionsReached",
           "message": "Reached expected number of succeeded pods"}]},
     Phase.Completed, "CompletionsReached", "True"),
    ({"startTime": "2026-11-21T09:09:25Z", "completionTime": "2026-11-21T09:11:00Z",
      "conditions": [{"type": "Complete", "status": "True"}]},
     Phase.Completed, "Completed", "True"),
    ({"startTime": "2026-11-21T09:09:25Z", "failed": 1, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit",
         "lastTransitionTime": "2026-11-21T09:10:02Z"}]},
     Phase.Failed, "TaskFailed", "False"),
    ({"startTime": "2026-11-21T09:09:25Z", "active": 1}, Phase.Running, "Running", "Unknown"),
    ({}, Phase.Running, "Pending", "Unknown"),
    ({"conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended",
                      "message": "Job suspended"}]}, Phase.Running, "Suspended", "Unknown"),
    ({"startTime": "2026-11-21T09:09:25Z", "conditions": [
        {"type": "Failed", "status": "False"}, {"type": "Complete", "status": "False"}]},
     Phase.Running, "Running", "Unknown"),
])
def test_job_phase(status: dict[str, Any], phase: Phase, reason: str, engine_status: str) -> None:
    job = {**copy.deepcopy(JOB), "status": status}
    obs = observe_job(job, [], JOB_CTX)
    assert (obs.phase, obs.reason, obs.execution_status.status) == (phase, reason, engine_status)
    assert obs.execution_status.total_tasks == 1
    assert obs.execution_status.completed_tasks == (1 if obs.terminal else 0)


def test_failed_job_observation() -> None:
    objs = load("job_oomkilled.yaml")
    obs = observe_job(objs["Job"][0], objs["Pod"], JOB_CTX)
    assert obs.failure is not None
    assert (obs.phase, obs.reason, obs.failure.exit_code) == (Phase.Failed, "OOMKilled", 137)
    assert obs.completion_time == datetime(2026, 11, 21, 9, 12, 5, tzinfo=UTC)
    assert obs.execution_status.to_status_dict() == {
        "status": "False", "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
        "completedTasks": 1, "totalTasks": 1}


def test_failed_job_events_are_used() -> None:
    objs = load("job_quota_events.yaml")
    with_events = observe_job(objs["Job"][0], objs["Pod"], JOB_CTX, events=objs["Event"])
    without = observe_job(objs["Job"][0], objs["Pod"], JOB_CTX)
    assert (with_events.reason, without.reason) == ("ResourceExhausted", "DeadlineExceeded")


# --- time and duration ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-21T09:12:03Z", datetime(2026, 11, 21, 9, 12, 3, tzinfo=UTC)),
    ("2026-11-21T09:12:03.250Z", datetime(2026, 11, 21, 9, 12, 3, 250000, tzinfo=UTC)),
    ("2026-11-21T11:12:03+02:00", datetime(2026, 11, 21, 9, 12, 3, tzinfo=UTC)),
    ("2026-11-21T09:12:03", datetime(2026, 11, 21, 9, 12, 3, tzinfo=UTC)),
    (None, None), ("", None), ("yesterday", None), ("2026-13-40T99:00:00Z", None),
])
def test_parse_time(text: str | None, expected: datetime | None) -> None:
    assert parse_time(text) == expected
    if expected is not None:
        assert parse_time(text).tzinfo == UTC  # type: ignore[union-attr]


@pytest.mark.parametrize(("value", "expected"), [
    (datetime(2026, 11, 21, 9, 12, 3, tzinfo=UTC), "2026-11-21T09:12:03Z"),
    (datetime(2026, 11, 21, 9, 12, 3, 999999, tzinfo=UTC), "2026-11-21T09:12:03Z"),
    (datetime(2026, 11, 21, 11, 12, 3, tzinfo=timezone(timedelta(hours=2))),
     "2026-11-21T09:12:03Z"),
    (datetime(2026, 11, 21, 9, 12, 3), "2026-11-21T09:12:03Z"),  # naive: taken as UTC
])
def test_format_time(value: datetime, expected: str) -> None:
    assert format_time(value) == expected
    assert parse_time(expected) == value.replace(microsecond=0, tzinfo=value.tzinfo or UTC)


@pytest.mark.parametrize(("seconds", "go", "human"), [
    (0, "0s", "0s"),
    (45, "45s", "45s"),
    (158, "2m38s", "2m 38s"),
    (60, "1m0s", "1m"),
    (3600, "1h0m0s", "1h"),
    (3723, "1h2m3s", "1h 2m 3s"),
    (3605, "1h0m5s", "1h 5s"),
    (90061, "25h1m1s", "25h 1m 1s"),
    (1.5, "1.5s", "1s"),
    (0.25, "250ms", "0s"),
    (0.000001, "1µs", "0s"),
    (-90, "-1m30s", "0s"),
])
def test_durations(seconds: float, go: str, human: str) -> None:
    value = timedelta(seconds=seconds)
    assert format_duration(value) == go
    assert human_duration(value) == human


def test_observation_is_deterministic() -> None:
    objs = load("tekton_forbidden.yaml")
    first = observe_pipelinerun(objs["PipelineRun"][0], objs["TaskRun"], CTX)
    second = observe_pipelinerun(copy.deepcopy(objs["PipelineRun"][0]),
                                 list(reversed(copy.deepcopy(objs["TaskRun"]))), CTX)
    assert first == second
    assert isinstance(first, RunObservation)
