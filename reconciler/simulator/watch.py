"""Watch plumbing: the events the store emits, the bounded history a watch can resume from,
and the per-connection queue that turns store events into what one watcher should see.

Like the real server, a watch filtered by selectors sees an object that starts matching as
ADDED and one that stops matching as DELETED, and a resume point older than the history
window is answered with 410 Expired.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconciler.simulator.resources import ResourceType

ObjPredicate = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class WatchEvent:
    """One committed change. `object` is the new state (the last state for DELETED, carrying
    the deletion's resourceVersion); `old` the state before, if any. Treat both as read-only."""

    type: str
    resource: ResourceType
    object: dict[str, Any]
    old: dict[str, Any] | None
    rv: int

    @property
    def namespace(self) -> str:
        return str(self.object["metadata"].get("namespace", ""))

    @property
    def name(self) -> str:
        return str(self.object["metadata"]["name"])


class History:
    """The last `limit` events; anything older is compacted, like etcd."""

    def __init__(self, limit: int, start_rv: int) -> None:
        self._events: deque[WatchEvent] = deque()
        self._limit = limit
        self.compacted_rv = start_rv

    def append(self, event: WatchEvent) -> None:
        self._events.append(event)
        while len(self._events) > self._limit:
            self.compacted_rv = self._events.popleft().rv

    def compact(self, upto_rv: int) -> None:
        while self._events and self._events[0].rv <= upto_rv:
            self._events.popleft()
        self.compacted_rv = max(self.compacted_rv, upto_rv)

    def since(self, rv: int) -> list[WatchEvent]:
        return [e for e in self._events if e.rv > rv]


class Watcher:
    """What one watch connection has yet to send. Fed by the store under its lock."""

    def __init__(self, resource: ResourceType, namespace: str | None, labels: ObjPredicate,
                 fields: ObjPredicate) -> None:
        self.resource = resource
        self.namespace = namespace
        self._labels = labels
        self._fields = fields
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self.closed = False

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        return self._labels(meta.get("labels") or {}) and self._fields(obj)

    def translate(self, event: WatchEvent) -> dict[str, Any] | None:
        """The event as this watcher sees it, or None when it is not for it."""
        if event.resource.key != self.resource.key:
            return None
        new_match = self.matches(event.object)
        if event.type == "MODIFIED":
            old_match = self.matches(event.old)
            if new_match and old_match:
                kind = "MODIFIED"
            elif new_match:
                kind = "ADDED"
            elif old_match:
                kind = "DELETED"
            else:
                return None
        elif new_match:
            kind = event.type
        else:
            return None
        return {"type": kind, "object": event.object}

    def offer(self, event: WatchEvent) -> None:
        translated = self.translate(event)
        if translated is not None:
            self.push(translated)

    def push(self, raw: dict[str, Any]) -> None:
        with self._cond:
            self._queue.append(raw)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self, timeout: float) -> list[dict[str, Any]]:
        """Wait up to `timeout` for events; return all queued (maybe none)."""
        with self._cond:
            if not self._queue and not self.closed:
                self._cond.wait(timeout)
            out = list(self._queue)
            self._queue.clear()
            return out
