"""What the Kubernetes API's resources, paths and error answers mean, without the client.

:mod:`reconciler.run.kube` is the only module that imports the ``kubernetes`` client; this one
holds the plain vocabulary it speaks and its callers name: the resources the reconciler
touches (group, version, plural, kind) and their REST paths, a watch event, the ``Warning``
headers of an answer, and how an API error status (404, 409, 403, 400/422, 410, 429/5xx)
becomes one of the project's own errors (``errors.KubeError`` and subclasses), with the
verb and resource a 403 refused. No I/O, no client.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from reconciler.errors import AlreadyExists, Conflict, Forbidden, Invalid, KubeError, NotFound, Unavailable

__all__ = [
    "CONFIGMAPS", "CRDS", "EVENTS", "JOBS", "LEASES", "NAMESPACES", "PIPELINERUNS", "PODS",
    "RUN_RESOURCES", "SERVICEACCOUNTS", "TASKRUNS", "Expired", "Resource", "WatchEvent",
    "api_warnings", "error_from_status",
]


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core API
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if sub:
                base += f"/{sub}"
        return base


PIPELINERUNS = Resource("tekton.dev", "v1", "pipelineruns", "PipelineRun")
TASKRUNS = Resource("tekton.dev", "v1", "taskruns", "TaskRun")
JOBS = Resource("batch", "v1", "jobs", "Job")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
RUN_RESOURCES = {"PipelineRun": PIPELINERUNS, "Job": JOBS}
# read by ``reconciler doctor`` only
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                namespaced=False)

_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]


class Expired(KubeError):
    """A watch's resourceVersion is too old (410 Gone): list again, then watch."""

    reason = "Expired"



_WARNING = re.compile(r'\s*([0-9]{3})\s+\S+\s+"((?:[^"\\]|\\.)*)"', re.ASCII)


def api_warnings(headers: Any) -> list[str]:
    """The texts of the ``Warning`` headers of an answer (RFC 7234: ``299 - "text"``)."""
    if not headers:
        return []
    getlist = getattr(headers, "getlist", None)
    values = getlist("Warning") if getlist else [headers.get("Warning")] if headers.get("Warning") else []
    out: list[str] = []
    for value in values:
        found = [re.sub(r"\\(.)", r"\1", m.group(2)) for m in _WARNING.finditer(str(value))]
        out.extend(found or [str(value)])
    return out


def error_from_status(method: str, path: str, status: int, raw: Any, headers: Any) -> KubeError:
    """The project's error for an API answer of HTTP ``status`` with Status body ``raw``."""
    try:
        body = json.loads(raw) if raw else {}
    except (ValueError, TypeError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("message") or f"HTTP {status}")
    api_reason = str(body.get("reason") or "")
    where = f"{method} {path}"
    if status == 404:
        return NotFound(f"{where}: {message}", status=status, api_reason=api_reason)
    if status == 409 and api_reason == "AlreadyExists":
        return AlreadyExists(f"{where}: {message}", status=status, api_reason=api_reason)
    if status == 409:
        return Conflict(f"{where}: {message}", status=status, api_reason=api_reason)
    if status == 403:
        verb = _VERBS.get(method, method.lower())
        parts = path.strip("/").split("/")
        resource = _resource_of(parts)
        return Forbidden(
            f"forbidden: the reconciler may not {verb} {resource}: {message} — grant this verb on "
            "this resource to the reconciler's ServiceAccount (see deploy/)",
            verb=verb, resource=resource, status=status, api_reason=api_reason)
    if status in (400, 422):
        return Invalid(f"{where}: {message}", status=status, api_reason=api_reason)
    if status == 410:
        return Expired(f"{where}: {message}", status=status, api_reason=api_reason)
    if status == 429 or status >= 500 or status == 0:
        retry_after = None
        try:
            value = headers.get("Retry-After") if headers else None
            retry_after = float(value) if value is not None else None
        except (TypeError, ValueError):
            retry_after = None
        return Unavailable(f"{where}: {message} (HTTP {status})", retry_after=retry_after, status=status,
                           api_reason=api_reason)
    return KubeError(f"{where}: {message}", status=status, api_reason=api_reason)


def _resource_of(parts: list[str]) -> str:
    """'pipelineruns.tekton.dev' from an API path."""
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1] if len(parts) > 1 else "", parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    plural = rest[0] if rest else "?"
    return f"{plural}.{group}" if group else plural
