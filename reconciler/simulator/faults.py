"""Fault injection and RBAC denials, both decided before a request touches any state.

`Fault` answers matching requests with an error status, a delay, or a dropped connection
(optionally after the write was applied: the "created, but the response was lost" case).
`Denial` makes requests of a verb on a resource answer 403 like RBAC would.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    method: str | None = None
    path_regex: str | None = None
    status: int | None = None
    delay: float = 0.0
    drop: bool = False
    times: int | None = 1
    retry_after: float | None = None
    after_apply: bool = False
    body: Any = None
    watch: bool | None = None
    hits: int = 0
    _owner: FaultSet | None = field(default=None, repr=False, compare=False)

    @property
    def active(self) -> bool:
        return self.times is None or self.hits < self.times

    def matches(self, method: str, path: str, is_watch: bool) -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.watch is not None and self.watch != is_watch:
            return False
        return not self.path_regex or re.search(self.path_regex, path) is not None

    def remove(self) -> None:
        if self._owner is not None:
            self._owner.remove(self)


class FaultSet:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        if fault.status is None and not fault.drop and not fault.delay and not fault.after_apply:
            raise ValueError("a fault needs a status, a delay, drop=True or after_apply=True")
        fault._owner = self
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def claim(self, method: str, path: str, is_watch: bool) -> Fault | None:
        """The first active matching fault, counted as hit; None when no fault applies."""
        with self._lock:
            for fault in self._faults:
                if fault.active and fault.matches(method, path, is_watch):
                    fault.hits += 1
                    return fault
        return None


@dataclass
class Denial:
    verb: str
    resource: str
    namespace: str | None = None
    group: str | None = None
    hits: int = 0
    _owner: DenialSet | None = field(default=None, repr=False, compare=False)

    def matches(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        return (self.verb in ("*", verb) and self.resource in ("*", resource)
                and (self.namespace is None or self.namespace == namespace)
                and (self.group is None or self.group in ("*", group)))

    def remove(self) -> None:
        if self._owner is not None:
            self._owner.remove(self)


class DenialSet:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Denial] = []

    def add(self, denial: Denial) -> Denial:
        denial._owner = self
        with self._lock:
            self._rules.append(denial)
        return denial

    def remove(self, denial: Denial) -> None:
        with self._lock:
            if denial in self._rules:
                self._rules.remove(denial)

    def would_deny(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        """What a SelfSubjectAccessReview answers: the same rules, no hit counted."""
        with self._lock:
            return any(rule.matches(verb, group, resource, namespace) for rule in self._rules)

    def denies(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        with self._lock:
            for rule in self._rules:
                if rule.matches(verb, group, resource, namespace):
                    rule.hits += 1
                    return True
        return False
