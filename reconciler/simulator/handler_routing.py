"""What a request means before any state is touched: the kube-apiserver URL grammar (group,
version, namespace, name, subresource), the verb a method and route stand for, and the
``Response`` value every verb handler returns (with its ``Warning`` headers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler.simulator.resources import ResourceType
from reconciler.simulator.serving import ServedApi


@dataclass(frozen=True)
class Route:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass
class Response:
    code: int
    body: Any
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one `Warning: 299 - "..."` header each


@dataclass(frozen=True)
class Unparsed:
    """A request body that is not JSON (kept so DELETE can ignore it and other verbs reject it)."""

    raw: bytes


def warning_header(text: str) -> str:
    """RFC 7234 warn-value as kube-apiserver writes it: code 299, agent "-", quoted text."""
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def route(fake: ServedApi, parts: list[str]) -> Route | None:
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    namespace_sub = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
    if len(rest) >= 3 and rest[0] == "namespaces" and not namespace_sub:
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    rt = fake.registry.get(group, rest[0], version)
    if rt is None or (namespace is not None and not rt.namespaced):
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if (sub is not None and sub not in rt.all_subresources()) or (
            name is not None and rt.namespaced and namespace is None):
        return None
    return Route(rt, namespace, name, sub)


def verb_for(method: str, r: Route, watch: bool) -> str | None:
    if r.name is None:
        return {"GET": "watch" if watch else "list", "POST": "create",
                "DELETE": "deletecollection"}.get(method)
    if r.subresource == "log":
        return "get" if method == "GET" else None
    return {"GET": "get", "PUT": "update", "PATCH": "patch",
            "DELETE": None if r.subresource else "delete"}.get(method)
