"""The generic registry semantics of kube-apiserver on top of `Storage`.

Create/update/patch/delete as the real server does them: type and namespace checks,
generateName, defaults, admission, validation (422), optimistic concurrency (409),
status-subresource isolation, generation, no-op writes, delete preconditions, finalizers,
propagation policies and the garbage collector's cascade.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from reconciler.simulator import errors as e
from reconciler.simulator import patch as p
from reconciler.simulator.resources import ResourceType
from reconciler.simulator.schema import decode, strict_message
from reconciler.simulator.storage import Admission, Clock, Storage, spec_part, timestamp
from reconciler.simulator.validation import Cause, check_metadata, required

__all__ = ["Admission", "Clock", "Store", "timestamp"]

_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_POLICIES = ("Orphan", "Background", "Foreground")


class Store(Storage):
    # ------------------------------------------------------------------ create
    def _check_type(self, rt: ResourceType, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise e.bad_request("the body of the request was in an unknown format")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if rt.custom and not kind:
            raise e.bad_request("Object 'Kind' is missing in the request body")
        if api_version and api_version != rt.api_version:
            raise e.bad_request(f"the API version in the data ({api_version}) does not match the "
                                f"expected API version ({rt.api_version})")
        if kind and kind != rt.kind:
            raise e.bad_request(f"the kind in the data ({kind}) does not match the expected kind "
                                f"({rt.kind})")
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise e.bad_request("metadata must be an object")
        return meta

    def _decode(self, rt: ResourceType, obj: dict[str, Any], field_validation: str | None,
                warnings: list[str] | None) -> list[Cause]:
        """The CRD schema's part of decoding (pruning, strict field validation); returns the
        type errors, which the real server reports with the other validation errors (422)."""
        if rt.schema is None:
            return []
        decoded = decode(obj, rt.schema)
        mode = field_validation or "Warn"
        if mode not in ("Ignore", "Warn", "Strict"):
            raise e.bad_request(f'fieldValidation: Unsupported value: "{mode}": supported values: '
                                '"Ignore", "Warn", "Strict"')
        if decoded.unknown and mode == "Strict":
            raise e.bad_request(strict_message(rt.kind, rt.version, decoded.unknown))
        if mode == "Warn" and warnings is not None:
            warnings.extend(decoded.warnings)
        return decoded.causes

    def _validate(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None,
                  operation: str, schema_causes: list[Cause] | None = None) -> None:
        for fn in list(self._admission.get(rt.key, [])):
            fn(operation, obj, old)
        causes: list[Cause] = list(schema_causes or []) + check_metadata(obj["metadata"], rt.name_rule)
        if rt.validate is not None:
            causes += rt.validate(obj, old)
        if causes:
            raise e.invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), causes)

    def create(self, rt: ResourceType, namespace: str | None, body: Any,
               dry_run: bool = False, *, field_validation: str | None = None,
               warnings: list[str] | None = None) -> dict[str, Any]:
        obj: dict[str, Any] = copy.deepcopy(body)
        meta = self._check_type(rt, obj)
        schema_causes = self._decode(rt, obj, field_validation, warnings)
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise e.bad_request("the namespace of the provided object does not match the "
                                    "namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):  # etcd3's check, surfacing as a 500 like on a real cluster
            raise e.ApiError(500, "InternalError", "Internal error occurred: resourceVersion should not be "
                             "set on objects to be created", {"causes": [{"message": "resourceVersion should "
                                                                          "not be set on objects to be created"}]})
        for system in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"):
            meta.pop(system, None)
        generate = not meta.get("name") and meta.get("generateName")
        if not meta.get("name") and not generate:
            raise e.invalid(rt.kind, rt.group, "",
                            [required("metadata.name", "name or generateName is required")])
        with self.lock:
            if rt.namespaced and self.strict_namespaces:
                ns_type = self.registry.require("", "v1", "namespaces")
                if self.current(ns_type, None, namespace or "") is None:
                    raise e.not_found("", "namespaces", namespace or "")
            for _ in range(8):
                if generate:
                    meta["name"] = str(generate) + "".join(self._random.choice(_GEN_CHARS)
                                                           for _ in range(5))
                if self.current(rt, namespace, meta["name"]) is None:
                    break
                if not generate:
                    raise e.already_exists(rt.group, rt.plural, meta["name"])
            else:
                raise e.already_exists(rt.group, rt.plural, meta["name"])
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = timestamp(self.clock())
            meta["generation"] = 1
            if rt.status_subresource:
                obj.pop("status", None)
                if rt.initial_status is not None:
                    obj["status"] = copy.deepcopy(rt.initial_status)
            if rt.defaults is not None:
                rt.defaults(obj, True)
            self._validate(rt, obj, None, "CREATE", schema_causes)
            if dry_run:
                return obj
            return self._commit(rt, "ADDED", obj, None)

    # ------------------------------------------------------------------ update / patch
    def update(self, rt: ResourceType, namespace: str | None, name: str, body: Any,
               subresource: str | None = None, dry_run: bool = False, *,
               field_validation: str | None = None, warnings: list[str] | None = None) -> dict[str, Any]:
        with self.lock:
            old = self.current(rt, namespace, name)
            if old is None:
                raise e.not_found(rt.group, rt.plural, name)
            return self._replace(rt, old, copy.deepcopy(body), subresource, dry_run,
                                 field_validation, warnings)

    def patch(self, rt: ResourceType, namespace: str | None, name: str, content_type: str,
              body: Any, subresource: str | None = None, dry_run: bool = False,
              field_manager: str | None = None, *, field_validation: str | None = None,
              warnings: list[str] | None = None) -> dict[str, Any]:
        if content_type == p.STRATEGIC and rt.custom:
            raise e.ApiError(415, "UnsupportedMediaType",
                             "the body of the request was in an unknown format - accepted media types "
                             "include: application/json-patch+json, application/merge-patch+json, "
                             "application/apply-patch+yaml")
        if content_type == p.APPLY_YAML and not field_manager:
            raise e.invalid("PatchOptions", "meta.k8s.io", "", [required("fieldManager",
                                                                         "is required for apply patch")])
        with self.lock:
            old = self.current(rt, namespace, name)
            if old is None:
                if content_type == p.APPLY_YAML and subresource is None:
                    return self.create(rt, namespace, body, dry_run, field_validation=field_validation,
                                       warnings=warnings)
                raise e.not_found(rt.group, rt.plural, name)
            try:
                patched = p.apply_patch(content_type, old, body)
            except p.PatchError as exc:
                raise e.ApiError(exc.code, "BadRequest" if exc.code == 400 else "Invalid", str(exc)) from exc
            return self._replace(rt, old, patched, subresource, dry_run, field_validation, warnings)

    def _replace(self, rt: ResourceType, old: dict[str, Any], obj: Any, subresource: str | None,
                 dry_run: bool, field_validation: str | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
        old_meta = old["metadata"]
        meta = self._check_type(rt, obj)
        schema_causes = self._decode(rt, obj, field_validation, warnings)
        name = old_meta["name"]
        if meta.get("name") != name:
            raise e.bad_request(f"the name of the object ({meta.get('name', '')}) does not match the "
                                f"name on the URL ({name})")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != old_meta["namespace"]:
                raise e.bad_request("the namespace of the provided object does not match the "
                                    "namespace sent on the request")
            meta["namespace"] = old_meta["namespace"]
        if meta.get("resourceVersion") and meta["resourceVersion"] != old_meta["resourceVersion"]:
            raise e.conflict(rt.group, rt.plural, name, e.MODIFIED)
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise e.invalid(rt.kind, rt.group, name, [(
                "metadata.uid", "FieldValueInvalid", f'Invalid value: "{meta["uid"]}": field is immutable')])
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        else:
            new = obj
            for system in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                           "generation", "resourceVersion"):
                if system in old_meta:
                    meta[system] = old_meta[system]
                else:
                    meta.pop(system, None)
            if rt.status_subresource:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            if rt.defaults is not None:
                rt.defaults(new, False)
            self._validate(rt, new, old, "UPDATE", schema_causes)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise e.invalid(rt.kind, rt.group, name, [(
                        "metadata.finalizers", "FieldValueForbidden",
                        "Forbidden: no new finalizers can be added if the object is being deleted")])
            if spec_part(rt, new) != spec_part(rt, old):
                meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if new == old or dry_run:
            return copy.deepcopy(new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(rt, new, old)
        return self._commit(rt, "MODIFIED", new, old)

    # ------------------------------------------------------------------ delete
    def delete(self, rt: ResourceType, namespace: str | None, name: str, *,
               propagation: str | None = None, preconditions: dict[str, Any] | None = None,
               dry_run: bool = False) -> dict[str, Any]:
        """Delete like the API: returns the response body (object or Status)."""
        policy = propagation or rt.default_propagation
        if policy not in _POLICIES:
            raise e.invalid("DeleteOptions", "meta.k8s.io", "", [(
                "propagationPolicy", "FieldValueNotSupported",
                f'Unsupported value: "{policy}": supported values: "Foreground", "Background", '
                '"Orphan", "nil"')])
        with self.lock:
            old = self.current(rt, namespace, name)
            if old is None:
                raise e.not_found(rt.group, rt.plural, name)
            meta = old["metadata"]
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise e.conflict(rt.group, rt.plural, name, "Precondition failed: UID in precondition: "
                                 f"{pre['uid']}, UID in object meta: {meta['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise e.conflict(rt.group, rt.plural, name,
                                 "Precondition failed: ResourceVersion in precondition: "
                                 f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                 f"{meta['resourceVersion']}")
            if dry_run:
                return copy.deepcopy(old)
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(old)
            finalizers = list(meta.get("finalizers") or [])
            gc_finalizer = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}.get(policy)
            if gc_finalizer is None and not finalizers:
                removed = self._remove(rt, copy.deepcopy(old), old)
                if rt.return_deleted_object:
                    return removed
                return e.success_status(name, rt.group, rt.plural, meta["uid"])
            pending = copy.deepcopy(old)
            pending["metadata"]["deletionTimestamp"] = timestamp(self.clock())
            pending["metadata"]["deletionGracePeriodSeconds"] = 0
            if gc_finalizer:
                pending["metadata"]["finalizers"] = [*finalizers, gc_finalizer]
            answer = self._commit(rt, "MODIFIED", pending, old)
            if gc_finalizer:  # the garbage collector's part, done at once
                if policy == "Orphan":
                    self._orphan_dependents(pending)
                else:
                    self._delete_dependents(pending)
                current = self.current(rt, namespace, name)
                assert current is not None
                done = copy.deepcopy(current)
                done["metadata"]["finalizers"] = [f for f in done["metadata"]["finalizers"]
                                                  if f != gc_finalizer]
                if done["metadata"]["finalizers"]:
                    self._commit(rt, "MODIFIED", done, current)
                else:
                    done["metadata"].pop("finalizers")
                    self._remove(rt, done, current)
            return answer

    def _remove(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
        removed = self._commit(rt, "DELETED", obj, old)
        self._delete_dependents(obj)
        if rt.key == ("", "namespaces"):
            for other in self.registry.all():
                if other.namespaced:
                    for (ns, nm) in list(self._objects.get(other.key, {})):
                        if ns == obj["metadata"]["name"] and self.current(other, ns, nm) is not None:
                            self.delete(other, ns, nm, propagation="Background")
        return removed

    # ------------------------------------------------------------------ garbage collection
    def _dependents(self, owner: dict[str, Any]) -> list[tuple[ResourceType, dict[str, Any]]]:
        uid = owner["metadata"]["uid"]
        namespace = owner["metadata"].get("namespace")
        found = []
        for rt in self.registry.all():
            for obj in self._objects.get(rt.key, {}).values():
                refs = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs) and (
                        not namespace or obj["metadata"].get("namespace") == namespace):
                    found.append((rt, obj))
        return found

    def _orphan_dependents(self, owner: dict[str, Any]) -> None:
        uid = owner["metadata"]["uid"]
        for rt, obj in self._dependents(owner):
            new = copy.deepcopy(obj)
            refs = [r for r in new["metadata"]["ownerReferences"] if r.get("uid") != uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences")
            self._commit(rt, "MODIFIED", new, obj)

    def _delete_dependents(self, owner: dict[str, Any]) -> None:
        uid = owner["metadata"]["uid"]
        for rt, obj in self._dependents(owner):
            meta = obj["metadata"]
            others = [r for r in meta["ownerReferences"] if r.get("uid") != uid and r.get("uid") in self._by_uid]
            if others:
                new = copy.deepcopy(obj)
                new["metadata"]["ownerReferences"] = others
                self._commit(rt, "MODIFIED", new, obj)
            elif self.current(rt, meta.get("namespace"), meta["name"]) is not None:
                self.delete(rt, meta.get("namespace"), meta["name"], propagation="Background")
