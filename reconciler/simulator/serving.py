"""What a request handler needs of the fake API server it serves (:class:`ServedApi`).

The handler modules are typed against this protocol, not against ``FakeKubeServer``:
the server builds its handler class, so if the handlers imported the server (even only
for type checking) the two would import each other.  ``FakeKubeServer`` matches it
structurally, which mypy checks where the server hands itself to its handler class.
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Protocol

from reconciler.simulator.faults import DenialSet, FaultSet
from reconciler.simulator.resources import Registry
from reconciler.simulator.store import Store


class ServedApi(Protocol):
    store: Store
    registry: Registry
    faults: FaultSet
    denials: DenialSet
    host: str
    port: int
    user: str
    require_auth: bool
    default_watch_timeout: float
    bookmark_interval: float
    _stopping: threading.Event

    def user_for(self, authorization: str | None) -> str | None: ...
    def warnings_for(self, method: str, path: str) -> list[str]: ...
    def pod_log(self, namespace: str, pod: str, container: str) -> str: ...
    def _track(self, conn: socket.socket) -> None: ...
    def _untrack(self, conn: socket.socket) -> None: ...
    def _record(self, record: dict[str, Any], status: int | None, response: Any, dropped: bool = False) -> None: ...
    def _note_applied(self, record: dict[str, Any], code: int) -> None: ...
