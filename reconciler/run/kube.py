"""The Kubernetes adapter: the only module that imports the ``kubernetes`` client.

It speaks to the API server through the official client's ``ApiClient`` (its
configuration loading, authentication, TLS and HTTP pool), using one generic REST path for
every resource the reconciler touches — PipelineRuns, TaskRuns, Jobs, Pods, Events,
Leases — with plain dicts in and out.  Every failure leaves this module as one of the
project's own errors (``errors.KubeError`` and subclasses), with the HTTP status, the
API's reason, and for 403 the verb and resource that was refused, so callers never catch
``ApiException`` or urllib3's exceptions.

Writes are sent with ``fieldValidation=Strict``: a field the server's schema does not know
(a typo in a custom template) refuses the request, naming the field, instead of being
dropped with a 201.  Every ``Warning`` header the server sends (deprecations, dropped
fields on reads through older servers) is logged with the request and the execution it
concerns.  The resources, their paths and how an error status becomes one of the project's
errors are :mod:`reconciler.run.kube_api`'s (no client there).

``pods/log`` is asked for as ``text/plain`` *or* JSON: an error then arrives as a Status
(404 pod gone, 400 container not started), not as 406 NotAcceptable.

Transient failures (5xx, 429, dropped connections, timeouts) are retried here with
exponential backoff, honouring ``Retry-After``.  Retrying a create is safe because run
names are deterministic: a create whose response was lost comes back as AlreadyExists
and the caller adopts the run by its labels.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

from reconciler.errors import AlreadyExists, ConfigError, KubeError, NotFound, NotLeader, Unavailable
from reconciler.run.kube_api import EVENTS, PODS, Expired, Resource, WatchEvent, api_warnings, error_from_status

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_STRICT = frozenset({"POST", "PUT", "PATCH"})  # sent with fieldValidation=Strict
_PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0


def load_api_client(context: str | None = None, kubeconfig: str | None = None) -> k8s.ApiClient:
    """In-cluster config, then ``KUBECONFIG``, then ``~/.kube/config`` (SPEC §9)."""
    configuration = k8s.Configuration()
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(
                Path.home() / ".kube" / "config"
            )
            k8s_config.load_kube_config(config_file=path, context=context,
                                        client_configuration=configuration)
    except (ConfigException, OSError, ValueError) as e:
        raise ConfigError(f"cannot load Kubernetes configuration: {e}") from e
    configuration.retries = 0  # retries are decided here, per request kind
    return k8s.ApiClient(configuration)


class KubeClient:
    """Dict-in, dict-out access to the resources the reconciler uses."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        retry: RetryPolicy | None = None,
        request_timeout: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger | None = None,
        fence: Callable[[], bool] | None = None,
    ):
        self.api = api_client
        # leadership, asked right before every write request is sent (each retry included):
        # a replica that lost the Lease sends nothing more (SPEC §10)
        self.fence: Callable[[], bool] = fence or (lambda: True)
        self.retry = retry or RetryPolicy()
        self.request_timeout = request_timeout
        self.sleep = sleep
        self.log = logger or logging.getLogger("reconciler.kube")

    # -- transport -------------------------------------------------------------------

    def _send(self, method: str, path: str, *, query: list[tuple[str, Any]] | None = None,
              body: Any = None, content_type: str | None = None, timeout: float | None = None,
              stream: bool = False, text: bool = False, context: Mapping[str, str] | None = None) -> Any:
        if method in _WRITES and not self.fence():
            raise NotLeader(f"{method} {path}: not sent, leadership lost")
        if method in _STRICT:
            query = [*(query or []), ("fieldValidation", "Strict")]
        # text/plain alone makes the server answer any error with 406 NotAcceptable
        headers = {"Accept": "text/plain, application/json" if text else "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        try:
            method_, url, header_params, body_, post_params = self.api.param_serialize(
                method=method, resource_path=path, query_params=query or [],
                header_params=headers, body=body, auth_settings=["BearerToken"],
            )
            response = self.api.call_api(method_, url, header_params=header_params, body=body_,
                                         post_params=post_params,
                                         _request_timeout=timeout or self.request_timeout)
        except ApiException as e:
            self._log_warnings(method, path, e.headers, context)
            raise error_from_status(method, path, e.status or 0, e.body, e.headers) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise Unavailable(f"{method} {path}: API server unreachable: {type(e).__name__}") from e
        self._log_warnings(method, path, response.headers, context)
        if response.status >= 400:
            raw = response.read()
            raise error_from_status(method, path, response.status, raw, response.headers)
        if stream:
            return response.response
        raw = response.read()
        if text:
            return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw or "")
        try:
            return json.loads(raw) if raw else {}
        except ValueError as e:
            raise Unavailable(f"{method} {path}: API server sent a non-JSON response") from e

    def _log_warnings(self, method: str, path: str, headers: Any,
                      context: Mapping[str, str] | None) -> None:
        for warning in api_warnings(headers):
            self.log.warning("API server warning", extra={"warning": warning, "request": f"{method} {path}",
                                                          **(context or {})})

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        policy = self.retry
        for attempt in range(1, policy.attempts + 1):
            try:
                return self._send(method, path, **kw)
            except Unavailable as e:
                if attempt == policy.attempts:
                    raise
                delay = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
                delay = e.retry_after if e.retry_after is not None else delay * (0.5 + random.random())
                self.log.warning("retrying after transient API error",
                                 extra={"attempt": attempt, "error": str(e), "delay": round(delay, 3)})
                self.sleep(min(delay, policy.max_delay))
        raise AssertionError("unreachable")

    # -- resources ---------------------------------------------------------------------

    def get(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", res.path(namespace, name))
        return result

    def get_or_none(self, res: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(res, namespace, name)
        except NotFound:
            return None

    def list(self, res: Resource, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        query: list[tuple[str, Any]] = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        data = self._request("GET", res.path(namespace), query=query)
        return list(data.get("items") or []), str((data.get("metadata") or {}).get("resourceVersion", ""))

    def create(self, res: Resource, namespace: str, body: Mapping[str, Any], *,
               context: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Create with strict field validation; ``context`` (execution, run) goes into the
        log line of every warning the server sends about it."""
        result: dict[str, Any] = self._request("POST", res.path(namespace), body=dict(body), context=context)
        return result

    def patch(self, res: Resource, namespace: str, name: str, body: Any, *, patch_type: str = "merge",
              subresource: str | None = None, context: Mapping[str, str] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "PATCH", res.path(namespace, name, subresource), body=body,
            content_type=_PATCH_TYPES[patch_type], context=context)
        return result

    def replace(self, res: Resource, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._request("PUT", res.path(namespace, name), body=dict(body))
        return result

    def delete(self, res: Resource, namespace: str, name: str, *, uid: str | None = None,
               propagation: str = "Background") -> None:
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                                "propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}
        self._request("DELETE", res.path(namespace, name), body=body)

    def watch(self, res: Resource, namespace: str | None = None, *, label_selector: str | None = None,
              resource_version: str | None = None, timeout_seconds: int = 60,
              field_selector: str | None = None) -> Iterator[WatchEvent]:
        """Events until the server closes the watch after ``timeout_seconds``."""
        query: list[tuple[str, Any]] = [("watch", "true"), ("timeoutSeconds", timeout_seconds),
                                        ("allowWatchBookmarks", "true")]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if resource_version:
            query.append(("resourceVersion", resource_version))
        response = self._send("GET", res.path(namespace), query=query, stream=True,
                              timeout=timeout_seconds + 10)
        try:
            for line in iter_resp_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == 410:
                        raise Expired(status.get("message", "resourceVersion too old"), status=410)
                    raise error_from_status("GET", res.path(namespace), int(status.get("code") or 500),
                                       json.dumps(status).encode(), {})
                yield WatchEvent(event.get("type", ""), event.get("object") or {})
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            raise Unavailable(f"watch {res.qualified}: stream broke: {type(e).__name__}") from e
        finally:
            response.release_conn()

    def pod_log(self, namespace: str, pod: str, container: str, *, tail_lines: int = 200,
                limit_bytes: int = 65536) -> str:
        text: str = self._request("GET", PODS.path(namespace, pod, "log"), text=True,
                                  query=[("container", container), ("tailLines", tail_lines),
                                         ("limitBytes", limit_bytes)])
        return text

    def server_version(self) -> dict[str, Any]:
        """``GET /version`` (major, minor, gitVersion)."""
        result: dict[str, Any] = self._request("GET", "/version")
        return result

    def access_review(self, verb: str, res: Resource, namespace: str | None,
                      subresource: str = "", name: str = "") -> tuple[bool, str]:
        """One SelfSubjectAccessReview: may the client's identity do ``verb`` on ``res``?
        (allowed, the authorizer's reason)."""
        attributes: dict[str, str] = {"verb": verb, "group": res.group, "version": res.version,
                                      "resource": res.plural}
        if namespace:
            attributes["namespace"] = namespace
        if subresource:
            attributes["subresource"] = subresource
        if name:
            attributes["name"] = name
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes}}
        result = self._request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=body)
        status = result.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or status.get("evaluationError") or "")

    def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Record an Event, aggregated like client-go's recorder: the name is the caller's
        deterministic key, so a repeat answers 409 AlreadyExists and the existing Event's
        ``count`` and ``lastTimestamp`` are patched instead (guarded by its resourceVersion).
        Best effort: a failure is logged, never raised (no run depends on it)."""
        name = str((body.get("metadata") or {}).get("name") or "")
        try:
            try:
                self._send("POST", EVENTS.path(namespace), body=dict(body))
                return
            except AlreadyExists:
                pass
            items, _ = self.list(EVENTS, namespace, field_selector=f"metadata.name={name}")
            if not items:
                return
            meta = items[0].get("metadata") or {}
            self._send("PATCH", EVENTS.path(namespace, name), content_type=_PATCH_TYPES["merge"], body={
                "metadata": {"resourceVersion": meta.get("resourceVersion")},
                "count": int(items[0].get("count") or 1) + 1,
                "lastTimestamp": body.get("lastTimestamp"), "message": body.get("message")})
        except KubeError as e:  # a Conflict: another replica counted the same repeat meanwhile
            self.log.warning("could not record event", extra={"error": str(e), "event": name})
