"""Storage underneath the fake API: etcd's part.

Objects by type/namespace/name, one global monotonically increasing resourceVersion, the
bounded event history, live watchers and hooks. Every committed change goes through
`_commit`, so API writes and direct writes by tests or simulators emit identical events.
"""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from reconciler.simulator import errors as e
from reconciler.simulator.hooks import HookRunner
from reconciler.simulator.resources import Registry, ResourceType
from reconciler.simulator.watch import History, ObjPredicate, Watcher, WatchEvent

Clock = Callable[[], datetime]
Admission = Callable[[str, dict[str, Any], "dict[str, Any] | None"], None]


def timestamp(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec_part(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rt.status_subresource else set())
    return {k: v for k, v in obj.items() if k not in skip}


class Storage:
    def __init__(self, registry: Registry, clock: Clock, *, history_limit: int = 1000,
                 initial_rv: int = 1000, strict_namespaces: bool = False) -> None:
        self.registry = registry
        self.clock = clock
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.history = History(history_limit, initial_rv)
        self.hooks = HookRunner()
        self.strict_namespaces = strict_namespaces
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self._by_uid: dict[str, tuple[ResourceType, str, str]] = {}
        self._rv = initial_rv
        self._watchers: set[Watcher] = set()
        self._admission: dict[tuple[str, str], list[Admission]] = {}
        self._random = random.Random()

    # ------------------------------------------------------------------ reading
    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "" if rt.namespaced else "", name)

    def current(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object itself (read-only), or None."""
        return self._objects.get(rt.key, {}).get(self._key(rt, namespace, name))

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.current(rt, namespace, name)
            if obj is None:
                raise e.not_found(rt.group, rt.plural, name)
            return copy.deepcopy(obj)

    def list(self, rt: ResourceType, namespace: str | None, labels: ObjPredicate | None = None,
             fields: ObjPredicate | None = None) -> tuple[list[dict[str, Any]], int]:
        with self.lock:
            items = [obj for (ns, _), obj in sorted(self._objects.get(rt.key, {}).items())
                     if (not namespace or not rt.namespaced or ns == namespace)
                     and (labels is None or labels(obj["metadata"].get("labels") or {}))
                     and (fields is None or fields(obj))]
            return copy.deepcopy(items), self._rv

    def add_admission(self, rt: ResourceType, fn: Admission) -> Callable[[], None]:
        """Register a mutating/validating admission function (it may raise ApiError)."""
        with self.lock:
            self._admission.setdefault(rt.key, []).append(fn)
        return lambda: self._admission.get(rt.key, []).remove(fn)

    # ------------------------------------------------------------------ commit
    def _commit(self, rt: ResourceType, kind: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        bucket = self._objects.setdefault(rt.key, {})
        key = self._key(rt, meta.get("namespace"), meta["name"])
        if kind == "DELETED":
            bucket.pop(key, None)
            self._by_uid.pop(meta.get("uid", ""), None)
        else:
            bucket[key] = obj
            self._by_uid[meta["uid"]] = (rt, key[0], key[1])
        event = WatchEvent(kind, rt, obj, old, self._rv)
        self.history.append(event)
        for watcher in list(self._watchers):
            watcher.offer(event)
        self.hooks.enqueue(event)
        self.changed.notify_all()
        return copy.deepcopy(obj)

    # ------------------------------------------------------------------ direct access
    def put(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace without admission, validation or subresource rules (a controller's
        or a test's direct write). Fills system metadata like a create would."""
        new = copy.deepcopy(obj)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        meta = new.setdefault("metadata", {})
        if not rt.namespaced:
            meta.pop("namespace", None)
        elif not meta.get("namespace"):
            raise ValueError(f"{rt.plural} are namespaced: set metadata.namespace")
        with self.lock:
            old = self.current(rt, meta.get("namespace"), meta["name"])
            if old is None:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", timestamp(self.clock()))
                meta["generation"] = 1
                if rt.defaults is not None:
                    rt.defaults(new, True)
                return self._commit(rt, "ADDED", new, None)
            for system in ("uid", "creationTimestamp", "deletionTimestamp"):
                if system in old["metadata"]:
                    meta[system] = old["metadata"][system]
            meta["generation"] = int(old["metadata"].get("generation", 1)) + (
                1 if spec_part(rt, new) != spec_part(rt, old) else 0)
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            if new == old:
                return copy.deepcopy(old)
            return self._commit(rt, "MODIFIED", new, old)

    def mutate(self, rt: ResourceType, namespace: str | None, name: str,
               fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply `fn` to a copy of the object and write it back directly (see `put`)."""
        with self.lock:
            obj = self.get(rt, namespace, name)
            fn(obj)
            return self.put(rt, obj)

    # ------------------------------------------------------------------ watch
    def open_watch(self, rt: ResourceType, namespace: str | None, labels: ObjPredicate,
                   fields: ObjPredicate, resource_version: str | None,
                   initial_bookmark: bool = False) -> Watcher:
        """Register a watcher with its initial events queued. Raises 410 Expired."""
        watcher = Watcher(rt, namespace, labels, fields)
        with self.lock:
            if resource_version in (None, "", "0"):
                items, _ = self.list(rt, namespace)
                for obj in items:
                    if watcher.matches(obj):
                        watcher.push({"type": "ADDED", "object": obj})
                if initial_bookmark:
                    watcher.push(self.bookmark(rt, initial_end=True))
            else:
                try:
                    start = int(resource_version)
                except ValueError as exc:
                    raise e.bad_request(f'resourceVersion: Invalid value: "{resource_version}": '
                                        "must be an unsigned integer") from exc
                if start < self.history.compacted_rv:
                    raise e.expired(resource_version, self.history.compacted_rv + 1)
                for event in self.history.since(start):
                    watcher.offer(event)
            self._watchers.add(watcher)
            self.changed.notify_all()
        return watcher

    def bookmark(self, rt: ResourceType, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version,
                                               "metadata": meta}}

    def close_watch(self, watcher: Watcher) -> None:
        with self.lock:
            self._watchers.discard(watcher)
            self.changed.notify_all()
        watcher.close()

    @property
    def watch_count(self) -> int:
        with self.lock:
            return len(self._watchers)

    def close_all_watches(self) -> None:
        with self.lock:
            watchers, self._watchers = list(self._watchers), set()
        for watcher in watchers:
            watcher.close()

    def compact(self) -> None:
        """Forget all history: every resume from an older resourceVersion gets 410 Expired."""
        with self.lock:
            self.history.compact(self._rv)
