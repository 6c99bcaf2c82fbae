"""The resource types the fake serves, and how to add one in a line.

A `ResourceType` carries everything the generic handler needs to behave like the real
server for that type: URL coordinates, scope, status subresource, CRD-or-built-in quirks
(delete answer, strategic merge support, default propagation), selectable fields and
type-specific validation/defaulting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.simulator import validation as v
from reconciler.simulator.schema import tekton_schema

Defaulter = Callable[[dict[str, Any], bool], None]

METADATA_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    custom: bool = False  # CRD semantics: no strategic merge, Status on delete, kind required
    return_deleted_object: bool = False
    default_propagation: str = "Background"
    name_rule: str = "subdomain"
    initial_status: dict[str, Any] | None = None
    selectable_fields: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    validate: v.Validator | None = field(default=None, compare=False)
    defaults: Defaulter | None = field(default=None, compare=False)
    singular: str = ""
    short_names: tuple[str, ...] = ()
    # a CRD's openAPIV3Schema: unknown fields pruned (Warning header, or 400 under
    # fieldValidation=Strict), wrong types refused with 422 (see schema.py)
    schema: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def all_selectable_fields(self) -> tuple[str, ...]:
        return (*METADATA_FIELDS, *self.selectable_fields)

    def all_subresources(self) -> tuple[str, ...]:
        return (("status",) if self.status_subresource else ()) + self.subresources


def crd(group: str, version: str, plural: str, kind: str, *, namespaced: bool = True,
        status: bool = True, **extra: Any) -> ResourceType:
    """A CustomResourceDefinition-backed type: `server.register(crd("x.io", "v1", "foos", "Foo"))`."""
    return ResourceType(group, version, plural, kind, namespaced=namespaced,
                        status_subresource=status, custom=True, **extra)


def _pod_defaults(obj: dict[str, Any], create: bool) -> None:
    v.default_pod(obj)


_POD_FIELDS = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
               "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
               "status.nominatedNodeName")
_EVENT_FIELDS = ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                 "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                 "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type")
_NEW_EVENT_FIELDS = ("regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
                     "reason", "reportingController", "type")


def default_resources() -> list[ResourceType]:
    return [
        crd("tekton.dev", "v1", "pipelineruns", "PipelineRun", singular="pipelinerun",
            short_names=("pr", "prs"), schema=tekton_schema("pipelineruns")),
        crd("tekton.dev", "v1", "taskruns", "TaskRun", singular="taskrun", short_names=("tr", "trs"),
            schema=tekton_schema("taskruns")),
        crd("tekton.dev", "v1", "pipelines", "Pipeline", status=False, singular="pipeline",
            schema=tekton_schema("pipelines")),
        crd("tekton.dev", "v1", "tasks", "Task", status=False, singular="task", schema=tekton_schema("tasks")),
        ResourceType("batch", "v1", "jobs", "Job", status_subresource=True, initial_status={},
                     default_propagation="Orphan", selectable_fields=("status.successful",),
                     validate=v.validate_job, defaults=v.default_job, singular="job"),
        ResourceType("", "v1", "pods", "Pod", status_subresource=True, return_deleted_object=True,
                     initial_status={"phase": "Pending", "qosClass": "BestEffort"},
                     selectable_fields=_POD_FIELDS, subresources=("log",), validate=v.validate_pod,
                     defaults=_pod_defaults, singular="pod", short_names=("po",)),
        ResourceType("", "v1", "events", "Event", selectable_fields=_EVENT_FIELDS, singular="event",
                     short_names=("ev",)),
        ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, status_subresource=True,
                     return_deleted_object=True, name_rule="label", initial_status={"phase": "Active"},
                     selectable_fields=("status.phase",), singular="namespace", short_names=("ns",)),
        ResourceType("", "v1", "secrets", "Secret", selectable_fields=("type",), singular="secret"),
        ResourceType("", "v1", "configmaps", "ConfigMap", singular="configmap", short_names=("cm",)),
        ResourceType("", "v1", "serviceaccounts", "ServiceAccount", singular="serviceaccount", short_names=("sa",)),
        ResourceType("coordination.k8s.io", "v1", "leases", "Lease", singular="lease"),
        ResourceType("events.k8s.io", "v1", "events", "Event", selectable_fields=_NEW_EVENT_FIELDS,
                     singular="event", short_names=("ev",)),
    ]


class Registry:
    """Resource types by (group, plural); one served version per type."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str], ResourceType] = {}

    def register(self, rt: ResourceType) -> ResourceType:
        self._types[rt.key] = rt
        return rt

    def unregister(self, group: str, plural: str) -> ResourceType | None:
        """Stop serving a type (a CRD that is not installed); its objects stay in the store."""
        return self._types.pop((_core(group), plural), None)

    def get(self, group: str, plural: str, version: str | None = None) -> ResourceType | None:
        rt = self._types.get((_core(group), plural))
        if rt is None or (version is not None and rt.version != version):
            return None
        return rt

    def require(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.get(group, plural, version)
        if rt is None:
            raise KeyError(f"resource {plural!r} in {group or 'core'}/{version} is not registered")
        return rt

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> dict[str, list[ResourceType]]:
        out: dict[str, list[ResourceType]] = {}
        for rt in self._types.values():
            out.setdefault(rt.group, []).append(rt)
        return out


def _core(group: str) -> str:
    return "" if group in ("core", "") else group
