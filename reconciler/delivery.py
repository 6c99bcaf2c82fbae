"""Deliveries to the outside world (forge statuses, webhooks, Slack): a bounded, persisted,
retrying queue per sink, filled after each cycle and emptied by one worker thread per sink.

Why it exists: people watch their pull requests and their chat, not ``status/``.  Why it is
built this way — the rules, in the order they apply:

* **Only what is durable is announced.**  After every cycle (and follow-up) the service
  hands the :class:`~reconciler.cycle.CycleResult` to :meth:`Notifier.observe`.  An
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
"""

from __future__ import annotations

import email.utils
import fnmatch
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .config import RouteRule
from .errors import ConfigError
from .gitsource import redact_text
from .outbound import Request, Response, send
from .runvocab import format_time
from .status import ExecutionState

if TYPE_CHECKING:
    from .cycle import CycleResult
    from .metrics import Metrics

STATE_VERSION = 1
RATE_LIMIT_CAP = 3600.0
LAST_RECORDS_CAP = 20_000  # per sink: executions whose last queued id is remembered


# -- what happened ------------------------------------------------------------------------

def event_id(execution: str, phase: str, reason: str) -> str:
    """The delivery id of a transition: the same transition always has the same id."""
    return hashlib.sha256(f"{execution}\0{phase}\0{reason}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Event:
    """One durable transition of one execution, with what every sink needs (JSON-friendly)."""

    id: str
    execution: str
    from_phase: str
    phase: str
    reason: str
    message: str = ""
    run: str = ""
    target: str = ""
    namespace: str = ""
    workflow: str = ""  # id@version
    labels: dict[str, str] = field(default_factory=dict)
    file: str = ""
    commit: str = ""  # the commit that declared it
    revision: str = ""  # the tracked branch's tip when it was seen
    was_execution_failure: bool | None = None
    failed_task: str = ""
    failed_step: str = ""
    summary: str = ""  # the failure's natural-language summary
    conflicting: str = ""  # the execution holding the target (ResourceBusy)
    status: dict[str, Any] = field(default_factory=dict)  # the full status document's "status"

    @property
    def workflow_id(self) -> str:
        return self.workflow.partition("@")[0]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def make_event(name: str, state: ExecutionState, *, from_phase: str, labels: Mapping[str, str], file: str,
               commit: str, revision: str) -> Event:
    doc = state.to_document()["status"]
    failure = state.failure_details
    ran = failure.get("wasExecutionFailure")
    namespace = state.target.split("/")[0] if state.target.count("/") == 2 else ""
    return Event(
        id=event_id(name, state.phase, state.reason), execution=name, from_phase=from_phase, phase=state.phase,
        reason=state.reason, message=state.message, run=state.execution_ref.name if state.execution_ref else "",
        target=state.target, namespace=namespace, workflow=state.workflow, labels=dict(labels), file=file,
        commit=commit, revision=revision, was_execution_failure=ran if isinstance(ran, bool) else None,
        failed_task=str(failure.get("failedTaskName") or ""), failed_step=str(failure.get("failedStepName") or ""),
        summary=str(failure.get("naturalLanguageSummary") or ""),
        conflicting=str(state.skip_details.get("conflictingExecution") or ""), status=doc)


def changed_at(state: ExecutionState) -> datetime | None:
    """The latest time the state records (start, completion, condition transitions, failure):
    when it last changed, as far as the status can tell."""
    times = [t for t in (state.start_time, state.completion_time) if t is not None]
    times += [c.last_transition_time for c in state.conditions]
    return max(times) if times else None


def matches(rules: Sequence[RouteRule], event: Event) -> bool:
    """A sink takes the event when any rule matches (every transition when it has none)."""
    return not rules or any(_rule_matches(rule, event) for rule in rules)


def _rule_matches(rule: RouteRule, event: Event) -> bool:
    def globbed(patterns: list[str], value: str) -> bool:
        return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)

    return ((not rule.phases or event.phase in rule.phases) and globbed(rule.reasons, event.reason)
            and globbed(rule.workflows, event.workflow_id) and globbed(rule.namespaces, event.namespace)
            and all(event.labels.get(k) == v for k, v in rule.labels.items()))


# -- what an answer means -------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    kind: Literal["delivered", "retry", "drop"]
    delay: float = 0.0  # seconds before the next attempt (retry)
    why: str = ""


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Exponential: base, 2·base, 4·base … up to cap (attempt counts from 1)."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def rate_limit_delay(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds a rate-limit answer asks us to wait: ``Retry-After`` (seconds or an HTTP
    date), else ``X-RateLimit-Reset``/``RateLimit-Reset`` (Unix time) when nothing remains;
    None when the answer says nothing.  Capped at an hour."""
    retry_after = headers.get("retry-after", "").strip()
    if retry_after:
        if retry_after.isdigit():
            return min(RATE_LIMIT_CAP, float(retry_after))
        try:
            when = email.utils.parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return min(RATE_LIMIT_CAP, max(0.0, when.timestamp() - now))
    remaining = headers.get("x-ratelimit-remaining", headers.get("ratelimit-remaining", "")).strip()
    reset = headers.get("x-ratelimit-reset", headers.get("ratelimit-reset", "")).strip()
    if remaining == "0" and reset.isdigit():
        return min(RATE_LIMIT_CAP, max(1.0, float(reset) - now + 1.0))
    return None


def classify_http(response: Response, attempt: int, now: float, *, base: float, cap: float,
                  rate_limited: bool = False) -> Outcome:
    """The common meaning of an HTTP answer (sinks add their own cases first)."""
    status = response.status
    if status is None:
        return Outcome("retry", backoff(attempt, base=base, cap=cap), response.error or "no answer")
    if 200 <= status < 300:
        return Outcome("delivered")
    why = f"HTTP {status}" + (f": {_snippet(response)}" if response.body else "")
    if status == 429 or rate_limited:
        told = rate_limit_delay(response.headers, now)
        return Outcome("retry", told if told is not None else backoff(attempt, base=base, cap=cap),
                       f"rate limited ({why})")
    if status in (401, 403):  # credentials: a rotated Secret heals it, keep the queue
        return Outcome("retry", backoff(attempt, base=base, cap=cap), f"credentials refused ({why})")
    if status in (408, 409, 425) or status >= 500:
        return Outcome("retry", backoff(attempt, base=base, cap=cap), why)
    if 300 <= status < 400:
        return Outcome("drop", 0.0, f"{why}: redirects are not followed (credentials would travel); "
                                    "configure the final URL")
    return Outcome("drop", 0.0, why)


def _snippet(response: Response) -> str:
    text = response.text(200)
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:200]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])[:200]
    return " ".join(text.split())[:200]


# -- the queue ------------------------------------------------------------------------------

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


class Sink(Protocol):
    """One destination.  ``targets`` are the places one event goes (a forge: the declaring
    commit and the merge commit; others: one); ``request`` reads its secret when called."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def rules(self) -> Sequence[RouteRule]: ...

    def targets(self, event: Event) -> list[str]: ...
    def request(self, event: Event, target: str, link: str) -> Request: ...
    def classify(self, response: Response, attempt: int, now: float, *, base: float, cap: float) -> Outcome: ...
    def secrets(self) -> list[str]: ...


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


class Notifier:
    """The queues, their worker threads and their file (see the module docstring)."""

    def __init__(self, sinks: Sequence[Sink], *, state_file: Path | None,
                 durable: Callable[[str, ExecutionState], bool], is_leader: Callable[[], bool] = lambda: True,
                 metrics: Metrics | None = None,
                 public_url: str = "", queue_size: int = 500, replay_window: float = 600.0,
                 timeout: float = 10.0, base_delay: float = 1.0, max_delay: float = 300.0,
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
            data = json.loads(self.state_file.read_text())
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError("unknown format")
            for name in self._queues:
                self._queues[name] = [q for q in data.get("queue", {}).get(name, [])
                                      if isinstance(q, dict) and isinstance(q.get("event"), dict)]
                self._last[name] = {k: v for k, v in data.get("last", {}).get(name, {}).items() if isinstance(v, dict)}
            self._leader_at = self._saved_leader_at = float(data.get("leaderAt", 0.0))
        except (OSError, ValueError, TypeError, AttributeError) as e:
            self.log.warning("delivery state unreadable; starting empty", extra={
                "file": str(self.state_file), "error": str(e)[:200]})

    def _save(self) -> None:
        """Atomically (tmp + rename); called with the lock held."""
        if self.state_file is None:
            return
        data = {"version": STATE_VERSION, "leaderAt": self._leader_at, "queue": self._queues, "last": self._last}
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as handle:
                json.dump(data, handle, separators=(",", ":"), sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.state_file)
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


def secret_values(values: Iterable[str | None]) -> list[str]:
    return [v for v in values if v]
