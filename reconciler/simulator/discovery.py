"""Discovery documents (`/api`, `/apis`, `/apis/<group>[/<version>]`, `/version`), enough for
clients that probe the server before they talk to it."""

from __future__ import annotations

from typing import Any

from reconciler.simulator.resources import Registry, ResourceType

VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fakekube", "gitCommit": "fakekube",
           "gitTreeState": "clean", "buildDate": "2024-08-13T07:28:49Z", "goVersion": "go1.22.5",
           "compiler": "gc", "platform": "linux/amd64"}

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _resources(types: list[ResourceType]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rt in sorted(types, key=lambda t: t.plural):
        entry: dict[str, Any] = {"name": rt.plural, "singularName": rt.singular or rt.kind.lower(),
                                 "namespaced": rt.namespaced, "kind": rt.kind, "verbs": _VERBS}
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        out.append(entry)
        for sub in rt.all_subresources():
            verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
            out.append({"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                        "kind": rt.kind, "verbs": verbs})
    return out


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def document(registry: Registry, parts: list[str], address: str) -> dict[str, Any] | None:
    """The discovery answer for a path split on '/', or None when it is not a discovery path."""
    groups = registry.groups()
    if parts == ["version"]:
        return dict(VERSION)
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}
    if parts == ["api", "v1"]:
        return {"kind": "APIResourceList", "groupVersion": "v1", "resources": _resources(groups.get("", []))}
    if parts == ["apis"]:
        listed = [_group(g, sorted({t.version for t in types})) for g, types in sorted(groups.items()) if g]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}
    if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups and parts[1]:
        types = groups[parts[1]]
        return {"kind": "APIGroup", "apiVersion": "v1", **_group(parts[1], sorted({t.version for t in types}))}
    if len(parts) == 3 and parts[0] == "apis" and parts[1] in groups and parts[1]:
        types = [t for t in groups[parts[1]] if t.version == parts[2]]
        if types:
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": f"{parts[1]}/{parts[2]}", "resources": _resources(types)}
    return None
