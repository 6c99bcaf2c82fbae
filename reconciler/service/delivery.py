"""Deliveries to the outside world (forge statuses, webhooks, Slack): a bounded, persisted,
retrying queue per sink, filled after each cycle and emptied by one worker thread per sink.

Why it exists: people watch their pull requests and their chat, not ``status/``.  Why it is
built this way — the rules, in the order they apply:

* **Only what is durable is announced.**  After every cycle (and follow-up) the service
  hands the :class:`~reconciler.service.cycle.CycleResult` to :meth:`Notifier.observe`.  An
  execution is considered only when its ``(phase, reason)`` differs from the last one this
  replica announced *and* the store says the remote status branch holds exactly that state
  (``GitStatusStore.durable``: the pushed or fetched tip has the file's bytes).  So a
  notification never announces a status that a failed push then loses; a state whose push
  failed is announced by the first later cycle whose push succeeds (or that finds it on
  the remote).  Intermediate states that never reached the remote are never announced.
* **One delivery per transition.**  The key is ``(execution, phase, reason)``; an
  unchanged cycle sends nothing, a message or timestamp change alone sends nothing, and
  the delivery id (:func:`event_id`, sent as ``X-Kubernaut-Delivery``) is stable so a
  receiver can de-duplicate.  Nothing the sinks send contains a clock value of ours.
* **Never blocks.**  :meth:`Notifier.observe` only computes and appends (and writes a small
  JSON file); HTTP happens in the sink's worker thread.  A forge outage delays only that
  sink's own queue: cycles and status commits go on.
* **In order, retried, bounded.**  Each sink's queue is FIFO; the head is retried with
  exponential backoff (``retryBaseDelay`` doubling up to ``retryMaxDelay``) or as long as a
  rate limit says (``Retry-After``, ``X-RateLimit-Reset``, capped at an hour); permanent
  refusals (400/404/422, a redirect) drop that item.  A full queue drops first an item
  superseded by a newer one for the same execution, else the oldest — never the newest.
* **Persisted.**  ``deliveries.json`` under the cache directory (tmp + rename) holds each
  sink's queue and, per execution, the id last queued.  After a restart delivered items
  are not resent (they left the queue, and their id is recorded), undelivered ones are
  (in order), and a transition that happened while the process was down is queued.
* **Restarts and failovers.**  The first pass after this replica starts leading treats an
  execution it has no record of (or a stale record) as news only when its state changed
  within ``replayWindow`` (default 10m): a new replica does not replay history, and the
  last transition before a crash is not lost.  A queue left from a term that ended longer
  ago than the window is dropped (another replica announced since).  Across a failover
  delivery is at-least-once: the new leader may repeat a transition the old one sent just
  before it died.  Only the leader sends: leadership is checked before every request.
* **Secrets** (tokens, the Slack URL, the HMAC key) are read from their files when a
  request is built, never stored in the queue file, and redacted from every error.

This module owns the :class:`Notifier` (the queues, their workers, when to save); the event and
its routing are :mod:`reconciler.service.delivery_event`'s, what a sink is and what its answers mean
:mod:`reconciler.service.delivery_sink`'s, the queue's bound and file :mod:`reconciler.service.delivery_queue`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import ConfigError
from reconciler.record.status import ExecutionState
from reconciler.service.delivery_event import Event, changed_at, event_id, make_event, matches
from reconciler.service.delivery_queue import Shown, admit, read_state, write_state
from reconciler.service.delivery_sink import Outcome, Sink, backoff
from reconciler.service.outbound import Request, Response, send
from reconciler.source.gitwords import redact_text

if TYPE_CHECKING:
    from reconciler.record.transitions import CycleResult
    from reconciler.service.metrics import Metrics

LAST_RECORDS_CAP = 20_000  # per sink: executions whose last queued id is remembered


class Notifier:
    """The queues, their worker threads and their file (see the module docstring)."""

    def __init__(self, sinks: Sequence[Sink], *, state_file: Path | None,
                 durable: Callable[[str, ExecutionState], bool], is_leader: Callable[[], bool] = lambda: True,
                 metrics: Metrics | None = None, public_url: str = "", queue_size: int = 500,
                 replay_window: float = 600.0, timeout: float = 10.0, base_delay: float = 1.0, max_delay: float = 300.0,
                 clock: Callable[[], float] = time.time, logger: logging.Logger | None = None,
                 transport: Callable[[Request, float], Response] = send):
        self.sinks = list(sinks)
        self.state_file = state_file
        self.durable = durable
        self.is_leader = is_leader
        self.metrics = metrics
        self.public_url = public_url.rstrip("/")
        self.queue_size = queue_size
        self.replay_window = replay_window
        self.timeout = timeout
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock = clock
        self.log = logger or logging.getLogger("reconciler.delivery")
        self.transport = transport
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._queues: dict[str, list[dict[str, Any]]] = {s.name: [] for s in self.sinks}
        self._last: dict[str, dict[str, dict[str, Any]]] = {s.name: {} for s in self.sinks}
        self._due: dict[str, float] = {s.name: 0.0 for s in self.sinks}  # monotonic time of the next attempt
        self._current: dict[str, tuple[str, str]] = {}  # this term: name → (phase, reason) last handled
        self._primed = False
        self._pins: dict[str, str] = {}  # name → the declaring commit once it started
        self._shown: dict[tuple[str, str], Shown] = {}
        self._warned: dict[str, str] = {}
        self._leader_at = 0.0  # wall time of the last pass as leader (persisted)
        self._saved_leader_at = 0.0
        self.delivered = 0  # requests delivered (for tests and operators' tools)
        self._load()
        for sink in self.sinks:
            self._gauge(sink.name)

    # -- persistence -----------------------------------------------------------------------

    def _load(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            self._leader_at = self._saved_leader_at = read_state(self.state_file, self._queues, self._last)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            self.log.warning("delivery state unreadable; starting empty", extra={
                "file": str(self.state_file), "error": str(e)[:200]})

    def _save(self) -> None:
        """Atomically (tmp + rename); called with the lock held."""
        if self.state_file is None:
            return
        try:
            write_state(self.state_file, self._leader_at, self._queues, self._last)
            self._saved_leader_at = self._leader_at
        except OSError as e:
            self._warn("save", "delivery state not saved (kept in memory)", str(e))

    # -- filling the queues (the cycle's thread) -------------------------------------------

    def catch_up(self) -> None:
        """On becoming leader: the next pass compares with what this replica recorded."""
        with self._cond:
            self._current.clear()
            self._primed = False

    def observe(self, result: CycleResult) -> None:
        """Queue the durable transitions of a cycle. Never raises, never sends."""
        if not self.sinks:
            return
        try:
            self._observe(result)
        except Exception as e:  # a bug here must never break a cycle
            self.log.exception("delivery: could not queue the cycle's transitions", extra={"error": str(e)[:300]})

    def _observe(self, result: CycleResult) -> None:
        now = self.clock()
        decl = result.declaration
        if decl is None:  # the cycle did not get past loading: its states are not the whole picture
            return
        with self._cond:
            changed = False
            if not self._primed and now - self._leader_at > self.replay_window:
                changed |= self._drop_stale_backlog()
            for name, state in sorted(result.states.items()):
                key = (state.phase, state.reason)
                previous = self._current.get(name)
                if previous == key or not self.durable(name, state):
                    continue
                self._current[name] = key
                when = changed_at(state)
                recent = when is not None and when.timestamp() >= now - self.replay_window
                execution = decl.find(name)
                invalid = None if execution is not None else next(
                    (i for i in decl.invalid if i.name == name), None)
                origin = execution.origin if execution else invalid.origin if invalid else None
                commit = self._pins.get(name, "") if state.started else ""
                commit = commit or (origin.last_commit if origin else "") or self._pins.get(name, "")
                if commit and state.started:
                    self._pins.setdefault(name, commit)
                event: Event | None = None
                for sink in self.sinks:
                    last = self._last[sink.name].get(name)
                    if last is not None and last.get("id") == event_id(name, state.phase, state.reason):
                        continue
                    if previous is None and not self._primed and not recent:
                        continue  # history this replica never queued: not news (see the docstring)
                    if event is None:
                        from_phase = previous[0] if previous else str((last or {}).get("phase", ""))
                        event = make_event(name, state, from_phase=from_phase,
                                           labels=execution.labels if execution else {},
                                           file=execution.file if execution else invalid.file if invalid else "",
                                           commit=commit, revision=result.revision)
                    if not matches(sink.rules, event):
                        continue
                    self._enqueue(sink, event, now)
                    changed = True
            self._primed = True
            self._leader_at = now
            changed |= self._prune(now)
            if changed or now - self._saved_leader_at > self.replay_window / 4:
                self._save()
            self._cond.notify_all()

    def _enqueue(self, sink: Sink, event: Event, now: float) -> None:
        item = {"event": event.to_json(), "targets": None, "sent": 0, "attempts": 0, "queuedAt": now}
        self._queues[sink.name], dropped = admit(self._queues[sink.name], item, self.queue_size)
        for lost in dropped:
            self._count(sink.name, "dropped")
            ev = lost["event"]
            self._show(sink, ev["execution"], ev["phase"], ev["reason"], "dropped", "the queue was full")
            self.log.warning("delivery dropped: the queue is full", extra={
                "sink": sink.name, "execution": ev["execution"], "phase": ev["phase"]})
        self._last[sink.name][event.execution] = {"id": event.id, "phase": event.phase, "at": now}
        self._show(sink, event.execution, event.phase, event.reason, "queued")
        self._gauge(sink.name)

    def _drop_stale_backlog(self) -> bool:
        dropped = False
        for sink in self.sinks:
            queue = self._queues[sink.name]
            if queue:
                self.log.warning("delivery backlog of an earlier term dropped (another replica has led since)",
                                 extra={"sink": sink.name, "items": len(queue)})
                for _ in queue:
                    self._count(sink.name, "dropped")
                self._queues[sink.name] = []
                self._gauge(sink.name)
                dropped = True
        return dropped

    def _prune(self, now: float) -> bool:
        """Forget records older than the replay window (the first pass after a restart
        ignores such states anyway) unless still queued; at most LAST_RECORDS_CAP each."""
        pruned = False
        for sink in self.sinks:
            records = self._last[sink.name]
            queued = {q["event"]["execution"] for q in self._queues[sink.name]}
            old = [n for n, r in records.items() if n not in queued and r.get("at", 0) < now - self.replay_window]
            if len(records) - len(old) > LAST_RECORDS_CAP:
                keep = sorted((r.get("at", 0), n) for n, r in records.items() if n not in old)
                old += [n for _, n in keep[:len(keep) - LAST_RECORDS_CAP] if n not in queued]
            for name in old:
                records.pop(name, None)
                pruned = True
        return pruned

    # -- emptying them (one thread per sink) ----------------------------------------------

    def start(self) -> None:
        for sink in self.sinks:
            thread = threading.Thread(target=self._work, args=(sink,), name=f"delivery-{sink.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 2.0)
        with self._cond:
            if self.sinks:
                self._save()

    def wake(self) -> None:
        """Retry every sink now (after a fix), instead of at the end of its backoff."""
        with self._cond:
            for name in self._due:
                self._due[name] = 0.0
            self._cond.notify_all()

    def _work(self, sink: Sink) -> None:
        while not self._stop.is_set():
            with self._cond:
                queue = self._queues[sink.name]
                wait = self._due[sink.name] - time.monotonic()
                if not queue or wait > 0 or not self._primed:  # the first pass judges a loaded backlog
                    self._cond.wait(timeout=min(wait, 5.0) if queue and self._primed else 5.0)
                    continue
                item = queue[0]
            if not self.is_leader():
                self._stop.wait(1.0)
                continue
            try:
                self._deliver(sink, item)
            except Exception as e:  # never let a bug kill the worker
                self.log.exception("delivery worker error", extra={"sink": sink.name, "error": str(e)[:300]})
                with self._cond:
                    self._due[sink.name] = time.monotonic() + self.max_delay

    def _deliver(self, sink: Sink, item: dict[str, Any]) -> None:
        event = Event.from_json(item["event"])
        if item["targets"] is None:
            item["targets"] = sink.targets(event)
        targets: list[str] = item["targets"]
        if not targets:
            with self._cond:
                self._count(sink.name, "dropped")
                self._remove(sink, item)
                self._show(sink, event.execution, event.phase, event.reason, "dropped",
                           "no commit is known for this execution: nothing to attach the status to")
            return
        link = f"{self.public_url}/executions/{event.execution}" if self.public_url else ""
        while item["sent"] < len(targets):
            if self._stop.is_set() or not self.is_leader():
                return
            attempt = item["attempts"] + 1
            try:
                request = sink.request(event, targets[item["sent"]], link)
            except ConfigError as e:
                outcome = Outcome("retry", backoff(attempt, base=self.base_delay, cap=self.max_delay), str(e))
            else:
                if not self.is_leader():  # the fence, right before the request
                    return
                response = self.transport(request, self.timeout)
                outcome = sink.classify(response, attempt, self.clock(), base=self.base_delay, cap=self.max_delay)
            why = redact_text(outcome.why, sink.secrets())
            if outcome.kind == "delivered":
                with self._cond:
                    item["sent"] += 1
                    item["attempts"] = 0
                    self.delivered += 1
                    self._count(sink.name, "sent")
                    if item["sent"] < len(targets):
                        self._save_if_queued(sink, item)
                continue
            with self._cond:
                self._count(sink.name, "failed")
                if outcome.kind == "retry":
                    item["attempts"] = attempt
                    self._due[sink.name] = time.monotonic() + outcome.delay
                    self._show(sink, event.execution, event.phase, event.reason, "retrying", why, attempt)
                    self._save_if_queued(sink, item)
                else:
                    self._count(sink.name, "dropped")
                    self._remove(sink, item)
                    self._show(sink, event.execution, event.phase, event.reason, "dropped", why, attempt)
            if outcome.kind == "retry":
                self._warn(sink.name, "delivery failed; retrying", why, sink=sink.name, execution=event.execution,
                           delay=round(outcome.delay, 1))
            else:
                self.log.error("delivery refused; dropped", extra={"sink": sink.name, "execution": event.execution,
                                                                   "phase": event.phase, "error": why})
            return
        with self._cond:
            self._remove(sink, item)
            self._show(sink, event.execution, event.phase, event.reason, "delivered")
            self._warned.pop(sink.name, None)
        self.log.info("delivered", extra={"sink": sink.name, "execution": event.execution, "phase": event.phase,
                                          "reason": event.reason, "delivery": event.id})

    def _remove(self, sink: Sink, item: dict[str, Any]) -> None:
        queue = self._queues[sink.name]
        self._queues[sink.name] = [q for q in queue if q is not item]
        self._due[sink.name] = 0.0
        self._gauge(sink.name)
        self._save()
        self._cond.notify_all()

    def _save_if_queued(self, sink: Sink, item: dict[str, Any]) -> None:
        if any(q is item for q in self._queues[sink.name]):
            self._save()

    # -- views and metrics -----------------------------------------------------------------

    def deliveries(self, name: str) -> list[dict[str, Any]]:
        """The last delivery of ``name`` to each sink (for the dashboard), in sink order."""
        with self._cond:
            return [self._shown[(s.name, name)].to_view() for s in self.sinks if (s.name, name) in self._shown]

    def wait_empty(self, timeout: float) -> bool:
        """Block until every queue is empty (tests, a graceful drain); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not any(self._queues.values()), timeout)

    def depth(self, sink: str) -> int:
        with self._cond:
            return len(self._queues.get(sink, []))

    def _show(self, sink: Sink, name: str, phase: str, reason: str, result: str, error: str = "",
              attempts: int = 0) -> None:
        self._shown[(sink.name, name)] = Shown(sink.name, sink.kind, phase, reason, result, self.clock(),
                                               error[:300], attempts)

    def _count(self, sink: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.record_delivery(sink, result)

    def _gauge(self, sink: str) -> None:
        if self.metrics is not None:
            self.metrics.set_delivery_queue(sink, len(self._queues.get(sink, [])))

    def _warn(self, what: str, message: str, error: str, **extra: Any) -> None:
        level = logging.DEBUG if self._warned.get(what) == error else logging.WARNING
        self._warned[what] = error
        self.log.log(level, message, extra={**extra, "error": error})
