"""The fake API server fails where kube-apiserver fails (issue 10).

Each test says what the real server (1.28, the real Tekton v1 CRDs, the real Job controller)
does, and pins the fake to it: unknown-field pruning and strict field validation against the
Tekton schemas, type errors, ``pods/log`` content negotiation, Job pods that are never
created or never scheduled, and no Tekton defaulting unless a test asks for it.  Watches
ending by timeout and 410 Gone are pinned in test_fakekube.py
(test_watch_replays_from_resource_version_and_ends_by_timeout,
test_watch_expired_resource_version_gives_410) and test_follow.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from reconciler.simulator import FakeKubeServer, JobSimulator, TektonSimulator
from reconciler.simulator.schema import tekton_schema
from tests.fakekube_client import new_api_client

NS = "kubernaut-workflows"
G, V, PRS = "tekton.dev", "v1", "pipelineruns"
needs_schema = pytest.mark.skipif(tekton_schema("pipelineruns") is None,
                                  reason="../shared/tekton is absent: no Tekton CRD schema")


@pytest.fixture
def server() -> Iterator[FakeKubeServer]:
    with FakeKubeServer() as fake:
        yield fake


@pytest.fixture
def api(server: FakeKubeServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    api_client = new_api_client(server, tmp_path)
    yield api_client
    api_client.close()  # type: ignore[no-untyped-call]


def pipelinerun(name: str = "wfe-0123456789abcdef", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": name, "namespace": NS},
            "spec": {"pipelineRef": {"name": "workflow"}, "timeouts": {"pipeline": "30m"}, **spec}}


def raw(server: FakeKubeServer, path: str, accept: str | None = None) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {server.token}",
                                                                 **({"Accept": accept} if accept else {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


# -- unknown fields and types (the Tekton v1 CRD schema) -----------------------------------------

@needs_schema
def test_unknown_fields_are_pruned_with_a_warning_header(api: client.ApiClient) -> None:
    # Real server, fieldValidation unset (Warn): 201, the field is dropped, and the answer has
    # `Warning: 299 - "unknown field \"spec.timeout\""`.
    co = client.CustomObjectsApi(api)
    body, status, headers = co.create_namespaced_custom_object_with_http_info(
        G, V, NS, PRS, pipelinerun(timeout="1h", params=[{"name": "A", "value": "x", "typo": 1}]))
    assert status == 201
    assert "timeout" not in body["spec"] and body["spec"]["params"] == [{"name": "A", "value": "x"}]
    warnings = headers.getlist("Warning")
    assert sorted(warnings) == ['299 - "unknown field \\"spec.params[0].typo\\""',
                                '299 - "unknown field \\"spec.timeout\\""']
    _, _, quiet = co.create_namespaced_custom_object_with_http_info(
        G, V, NS, PRS, pipelinerun("wfe-1", timeout="1h"), field_validation="Ignore")
    assert quiet.getlist("Warning") == []


@needs_schema
def test_strict_field_validation_refuses_naming_the_field(api: client.ApiClient, server: FakeKubeServer) -> None:
    # Real server with fieldValidation=Strict (KEP-2885): 400 BadRequest, "strict decoding
    # error: unknown field ..."; nothing is stored. (The issue says 422; kube-apiserver
    # answers a strict decoding error with 400, the reconciler treats both as Invalid.)
    co = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as exc:
        co.create_namespaced_custom_object(G, V, NS, PRS, pipelinerun(timeout="1h"), field_validation="Strict")
    status = json.loads(exc.value.body)
    assert exc.value.status == 400 and status["reason"] == "BadRequest"
    assert status["message"] == ('PipelineRun in version "v1" cannot be handled as a PipelineRun: strict decoding '
                                 'error: unknown field "spec.timeout"')
    assert server.list_objects(G, V, PRS, NS) == []
    co.create_namespaced_custom_object(G, V, NS, PRS, pipelinerun(), field_validation="Strict")  # a clean one passes


@needs_schema
def test_values_of_the_wrong_type_are_refused(api: client.ApiClient) -> None:
    # Real server: 422 Invalid, 'spec.timeouts.pipeline: Invalid value: "integer":
    # spec.timeouts.pipeline in body must be of type string: "integer"', whatever fieldValidation says.
    co = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as exc:
        co.create_namespaced_custom_object(G, V, NS, PRS, pipelinerun(timeouts={"pipeline": 1800}))
    status = json.loads(exc.value.body)
    assert exc.value.status == 422 and status["reason"] == "Invalid"
    assert ('spec.timeouts.pipeline: Invalid value: "integer": spec.timeouts.pipeline in body must be of type '
            'string: "integer"') in status["message"]
    assert status["details"]["causes"][0]["field"] == "spec.timeouts.pipeline"


# -- pods/log ---------------------------------------------------------------------------------------

def test_pod_log_errors_need_an_accept_that_allows_json(server: FakeKubeServer) -> None:
    # Real server: a log request that accepts only text/plain and fails gets 406 NotAcceptable
    # (the error Status cannot be sent as text/plain); accepting JSON too brings the Status.
    path = f"/api/v1/namespaces/{NS}/pods/gone/log?container=step-apply"
    code, body, _ = raw(server, path, "text/plain")
    assert (code, body["reason"]) == (406, "NotAcceptable")
    code, body, _ = raw(server, path, "text/plain, application/json")
    assert (code, body["reason"]) == (404, "NotFound")
    server.put_object("", "v1", "pods", {
        "metadata": {"name": "starting", "namespace": NS}, "spec": {"containers": [{"name": "step-apply"}]},
        "status": {"phase": "Pending", "containerStatuses": [
            {"name": "step-apply", "state": {"waiting": {"reason": "ContainerCreating"}}}]}})
    waiting = f"/api/v1/namespaces/{NS}/pods/starting/log?container=step-apply"
    code, body, _ = raw(server, waiting, "text/plain, application/json")  # 400 while the container waits
    assert code == 400 and body["message"] == ('container "step-apply" in pod "starting" is waiting to start: '
                                               "ContainerCreating")
    assert raw(server, waiting, "text/plain")[0] == 406
    server.set_pod_log(NS, "starting", "hello\n", "step-apply")
    server.modify_object("", "v1", "pods", NS, "starting", lambda p: p["status"].update(containerStatuses=[
        {"name": "step-apply", "state": {"running": {"startedAt": "2026-11-21T09:00:00Z"}}}]))
    assert raw(server, waiting, "text/plain")[:2] == (200, "hello\n")  # success is text/plain either way


# -- Jobs whose pods never run ----------------------------------------------------------------------

def _job(batch: client.BatchV1Api, sa: str = "kubernaut-node-maintenance") -> str:
    batch.create_namespaced_job(NS, client.V1Job(metadata=client.V1ObjectMeta(name="wfe-job"), spec=client.V1JobSpec(
        backoff_limit=0, active_deadline_seconds=1200, template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
            restart_policy="Never", service_account_name=sa,
            containers=[client.V1Container(name="workflow", image="ghcr.io/acme/wf@sha256:" + "b" * 64)])))))
    return "wfe-job"


def test_job_controller_cannot_create_the_pod(server: FakeKubeServer, api: client.ApiClient) -> None:
    # Real Job controller, ServiceAccount missing: no pod; Warning FailedCreate Events on the
    # Job ('Error creating: pods "wfe-job-" is forbidden: error looking up service account
    # …: serviceaccount "…" not found'), counted on repeats; the Job stays active until its
    # activeDeadlineSeconds fails it with DeadlineExceeded.
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    jobs = JobSimulator(server)
    name = _job(batch)
    jobs.fail_pod_creation(NS, name)
    jobs.fail_pod_creation(NS, name)
    assert core.list_namespaced_pod(NS).items == []
    (event,) = core.list_namespaced_event(NS, field_selector="type=Warning,involvedObject.kind=Job").items
    assert (event.reason, event.count, event.involved_object.name) == ("FailedCreate", 2, name)
    assert event.message == (f'Error creating: pods "{name}-" is forbidden: error looking up service account '
                             f'{NS}/kubernaut-node-maintenance: serviceaccount "kubernaut-node-maintenance" not found')
    done = jobs.fail(NS, name, "deadline")
    assert [c["reason"] for c in done["status"]["conditions"]] == ["DeadlineExceeded", "DeadlineExceeded"]
    assert core.list_namespaced_pod(NS).items == []


def test_scheduler_leaves_the_pod_pending(server: FakeKubeServer, api: client.ApiClient) -> None:
    # Real scheduler: the pod stays Pending with PodScheduled=False (Unschedulable) and no
    # container statuses; a Warning FailedScheduling Event on the pod says why.
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    jobs = JobSimulator(server, outcome="unschedulable")
    name = _job(batch, sa="default")
    assert server.flush_hooks()
    (pod,) = core.list_namespaced_pod(NS).items
    assert pod.status.phase == "Pending" and not pod.status.container_statuses
    assert [(c.type, c.status, c.reason) for c in pod.status.conditions] == [("PodScheduled", "False", "Unschedulable")]
    (event,) = core.list_namespaced_event(NS, field_selector=f"reason=FailedScheduling,involvedObject.name={pod.metadata.name}").items
    assert event.type == "Warning" and event.message.startswith("0/3 nodes are available: 3 Insufficient memory")
    assert batch.read_namespaced_job(name, NS).status.active == 1
    jobs.close()


# -- Tekton's webhooks --------------------------------------------------------------------------------

def test_no_tekton_defaulting_unless_asked(server: FakeKubeServer, api: client.ApiClient) -> None:
    # A cluster may have no Tekton mutating webhook in front of the API server: what was sent
    # is stored ("30m" stays "30m", no serviceAccountName is added). With the webhook,
    # timeouts are Go-formatted and the ServiceAccount defaulted.
    co = client.CustomObjectsApi(api)
    plain = TektonSimulator(server)
    made = co.create_namespaced_custom_object(G, V, NS, PRS, pipelinerun("plain"))
    assert made["spec"]["timeouts"] == {"pipeline": "30m"} and "taskRunTemplate" not in made["spec"]
    plain.close()
    webhook = TektonSimulator(server, defaulting=True)
    made = co.create_namespaced_custom_object(G, V, NS, PRS, pipelinerun("defaulted"))
    assert made["spec"]["timeouts"] == {"pipeline": "30m0s"}
    assert made["spec"]["taskRunTemplate"] == {"serviceAccountName": "default"}
    webhook.close()
