"""The read-side answers that are more than a store lookup: selectors from the query string,
list paging with continue tokens, pod logs (container choice, waiting/previous errors, tail and
byte limits), SelfSubjectAccessReview from the RBAC switch and the CRD objects of custom types."""

from __future__ import annotations

import base64
import json
from typing import Any

from reconciler.simulator import errors as e
from reconciler.simulator.handler_routing import Response, Route
from reconciler.simulator.resources import ResourceType
from reconciler.simulator.selectors import SelectorError, parse_field_selector, parse_label_selector
from reconciler.simulator.serving import ServedApi


def selectors(rt: ResourceType, query: dict[str, str]) -> tuple[Any, Any]:
    try:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), rt.all_selectable_fields)
    except SelectorError as exc:
        raise e.bad_request(str(exc)) from exc
    return labels, fields


def list_page(fake: ServedApi, r: Route, query: dict[str, str]) -> dict[str, Any]:
    items, rv = fake.store.list(r.rt, r.namespace, *selectors(r.rt, query))
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    token = query.get("continue")
    if token:
        try:
            state = json.loads(base64.urlsafe_b64decode(token.encode()))
            start = tuple(state["start"])
        except (ValueError, KeyError, TypeError) as exc:
            raise e.bad_request("continue key is not valid: illegal base64 data") from exc
        items = [i for i in items if (i["metadata"].get("namespace", ""), i["metadata"]["name"]) > start]
    limit = int(query.get("limit") or 0)
    if limit and len(items) > limit:
        last = items[limit - 1]["metadata"]
        state = {"rv": rv, "start": [last.get("namespace", ""), last["name"]]}
        meta["continue"] = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
        meta["remainingItemCount"] = len(items) - limit
        items = items[:limit]
    return {"kind": r.rt.list_kind, "apiVersion": r.rt.api_version, "metadata": meta, "items": items}


def pod_log(fake: ServedApi, r: Route, query: dict[str, str]) -> Response:
    pod = fake.store.get(r.rt, r.namespace, r.name or "")
    spec = pod.get("spec") or {}
    names = [c["name"] for c in spec.get("containers", [])]
    all_names = names + [c["name"] for c in spec.get("initContainers", [])]
    container = query.get("container")
    if not container:
        if len(names) != 1:
            raise e.bad_request(f"a container name must be specified for pod {r.name}, "
                                f"choose one of: [{' '.join(names)}]")
        container = names[0]
    if container not in all_names:
        raise e.bad_request(f"container {container} is not valid for pod {r.name}")
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    state = next((s.get("state") or {} for s in statuses if s.get("name") == container), {})
    if "waiting" in state:
        reason = state["waiting"].get("reason", "ContainerCreating")
        if reason in ("ImagePullBackOff", "ErrImagePull"):
            reason = "trying and failing to pull image"
        raise e.bad_request(f'container "{container}" in pod "{r.name}" is waiting to start: {reason}')
    if query.get("previous") in ("true", "1"):
        raise e.bad_request(f'previous terminated container "{container}" in pod "{r.name}" not found')
    text = fake.pod_log(r.namespace or "", r.name or "", container)
    if query.get("tailLines"):
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-int(query["tailLines"]):]) if int(query["tailLines"]) else ""
    if query.get("limitBytes"):
        text = text.encode()[: int(query["limitBytes"])].decode(errors="ignore")
    return Response(200, text, "text/plain")


def accepts_json(accept: str | None) -> bool:
    if not accept:
        return True
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(types & {"application/json", "application/*", "*/*"})


def authorization_or_crd(fake: ServedApi, method: str, parts: list[str], body: Any) -> Response | None:
    """SelfSubjectAccessReview (answered from the RBAC switch, ``server.forbid``) and GET of
    a CRD by name (every registered custom type; ``server.unregister`` removes one)."""
    if parts == ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] and method == "POST":
        spec = (body.get("spec") if isinstance(body, dict) else None) or {}
        attrs = spec.get("resourceAttributes") or {}
        resource = str(attrs.get("resource", ""))
        if attrs.get("subresource"):
            resource += f"/{attrs['subresource']}"
        denied = fake.denials.would_deny(str(attrs.get("verb", "")), str(attrs.get("group", "")),
                                         resource, attrs.get("namespace") or None)
        status: dict[str, Any] = {"allowed": not denied}
        if denied:
            status["denied"] = True
            status["reason"] = "no RBAC policy matched"
        return Response(201, {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                              "metadata": {"creationTimestamp": None}, "spec": spec, "status": status})
    if parts[:4] == ["apis", "apiextensions.k8s.io", "v1", "customresourcedefinitions"] and method == "GET":
        found = [rt for rt in fake.registry.all() if rt.custom]
        if len(parts) == 4:
            return Response(200, {"kind": "CustomResourceDefinitionList", "apiVersion": "apiextensions.k8s.io/v1",
                                  "metadata": {}, "items": [_crd_object(rt) for rt in found]})
        name = parts[4] if len(parts) == 5 else ""
        for rt in found:
            if f"{rt.plural}.{rt.group}" == name:
                return Response(200, _crd_object(rt))
        raise e.ApiError(404, "NotFound", f'customresourcedefinitions.apiextensions.k8s.io "{name}" not found',
                         details={"name": name, "group": "apiextensions.k8s.io",
                                  "kind": "customresourcedefinitions"})
    return None


def _crd_object(rt: ResourceType) -> dict[str, Any]:
    return {"kind": "CustomResourceDefinition", "apiVersion": "apiextensions.k8s.io/v1",
            "metadata": {"name": f"{rt.plural}.{rt.group}"},
            "spec": {"group": rt.group, "names": {"plural": rt.plural, "kind": rt.kind, "singular": rt.singular},
                     "scope": "Namespaced" if rt.namespaced else "Cluster",
                     "versions": [{"name": rt.version, "served": True, "storage": True}]},
            "status": {"acceptedNames": {"plural": rt.plural, "kind": rt.kind},
                       "conditions": [{"type": "Established", "status": "True"}]}}
