"""The data a sink's queue is made of and kept in: its bound (:func:`admit`: a full queue drops
first an item superseded for the same execution, else the oldest), the ``deliveries.json``
file (each sink's queue, the id last queued per execution, when this replica last led;
written tmp + rename) and the last delivery of each execution, as the dashboard shows it
(:class:`Shown`).

The :class:`~reconciler.service.delivery.Notifier` holds the lock and decides when; this module only
computes, reads and writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from reconciler.observe.vocabulary import format_time

STATE_VERSION = 1


def admit(queue: list[dict[str, Any]], item: dict[str, Any], limit: int) -> tuple[list[dict[str, Any]],
                                                                                   list[dict[str, Any]]]:
    """Append ``item``; when that exceeds ``limit``, drop the oldest item superseded by a
    newer one for the same execution, else the oldest.  Returns (queue, dropped)."""
    queue = [*queue, item]
    dropped: list[dict[str, Any]] = []
    while len(queue) > limit:
        newest: dict[str, int] = {}
        for index, queued in enumerate(queue):
            newest[queued["event"]["execution"]] = index
        victim = next((i for i, q in enumerate(queue) if newest[q["event"]["execution"]] != i), 0)
        dropped.append(queue.pop(victim))
    return queue, dropped


@dataclass
class Shown:
    """The last delivery of one execution to one sink, for the dashboard."""

    sink: str
    kind: str
    phase: str
    reason: str
    result: str  # queued | retrying | delivered | dropped
    at: float
    error: str = ""
    attempts: int = 0

    def to_view(self) -> dict[str, Any]:
        return {"sink": self.sink, "kind": self.kind, "phase": self.phase, "reason": self.reason,
                "result": self.result, "attempts": self.attempts, "error": self.error,
                "at": format_time(datetime.fromtimestamp(self.at, timezone.utc).replace(microsecond=0))}


def read_state(path: Path, queues: dict[str, list[dict[str, Any]]],
               last: dict[str, dict[str, dict[str, Any]]]) -> float:
    """Fill each sink's queue and records in ``queues`` and ``last`` (their keys: the sinks
    configured now) from ``path``; returns when this replica last led.  Raises OSError,
    ValueError, TypeError or AttributeError on a file it cannot read (what was filled before
    stays filled)."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError("unknown format")
    for name in queues:
        queues[name] = [q for q in data.get("queue", {}).get(name, [])
                        if isinstance(q, dict) and isinstance(q.get("event"), dict)]
        last[name] = {k: v for k, v in data.get("last", {}).get(name, {}).items() if isinstance(v, dict)}
    return float(data.get("leaderAt", 0.0))


def write_state(path: Path, leader_at: float, queues: dict[str, list[dict[str, Any]]],
                last: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Atomically (tmp + rename, fsynced); raises OSError when it cannot."""
    data = {"version": STATE_VERSION, "leaderAt": leader_at, "queue": queues, "last": last}
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w") as handle:
        json.dump(data, handle, separators=(",", ":"), sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
