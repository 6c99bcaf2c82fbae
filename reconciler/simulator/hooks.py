"""Server-side event hooks: how simulators (the "controllers") react to API writes.

Hooks run on one dispatcher thread in commit order, after the write is committed and
outside the store lock, like an informer-driven controller: they see every event, may
write back through the store, and never block the request that caused the event. Errors
are kept in `errors` so a test can fail on them instead of losing them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from reconciler.simulator.watch import WatchEvent

Hook = Callable[[WatchEvent], Any]


class HookRunner:
    def __init__(self) -> None:
        self._hooks: list[Hook] = []
        self._pending: deque[WatchEvent] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def add(self, hook: Hook) -> Callable[[], None]:
        with self._cond:
            self._hooks.append(hook)
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="fakekube-hooks", daemon=True)
                self._thread.start()

        def remove() -> None:
            with self._cond:
                if hook in self._hooks:
                    self._hooks.remove(hook)
        return remove

    def enqueue(self, event: WatchEvent) -> None:
        with self._cond:
            if self._hooks and not self._stopping:
                self._pending.append(event)
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    self._pending.clear()
                    self._cond.notify_all()
                    return
                event = self._pending.popleft()
                hooks = list(self._hooks)
                self._busy = True
            for hook in hooks:
                try:
                    hook(event)
                except BaseException as exc:  # kept for the test to see
                    self.errors.append(exc)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event was handled (including events hooks caused)."""
        with self._cond:
            return self._cond.wait_for(lambda: (not self._pending and not self._busy)
                                       or self._stopping, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
