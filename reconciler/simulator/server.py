"""`FakeKubeServer`: a real HTTP Kubernetes API server in a background thread, for tests that
must use the official client unmodified. This module is its public face: lifecycle,
kubeconfig, the request log, fault and RBAC controls, hooks, and direct store access for
tests and simulators (writes made here emit watch events exactly like API writes)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from reconciler.simulator import errors as e
from reconciler.simulator.faults import Denial, DenialSet, Fault, FaultSet
from reconciler.simulator.handler import Handler
from reconciler.simulator.resources import Registry, ResourceType, default_resources
from reconciler.simulator.selectors import parse_label_selector
from reconciler.simulator.serving import ServedApi
from reconciler.simulator.store import Admission, Store
from reconciler.simulator.watch import WatchEvent

DEFAULT_TOKEN = "fake-bearer-token-DO-NOT-LOG"
DEFAULT_USER = "system:serviceaccount:kubernaut-system:kubernaut-reconciler"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it. `status` is None when the connection was dropped;
    `applied_status` is what the server would have answered when a fault dropped or replaced
    the answer after applying the request."""

    method: str
    path: str
    query: dict[str, str]
    status: int | None
    body: Any
    watch: bool
    content_type: str | None
    response: Any
    dropped: bool = False
    applied_status: int | None = None
    user: str | None = None  # who the bearer token authenticated as (None: no valid token)


class FakeKubeServer:
    def __init__(self, *, clock: Callable[[], datetime] = utc_now, token: str = DEFAULT_TOKEN,
                 user: str = DEFAULT_USER, require_auth: bool = True, history_limit: int = 1000,
                 initial_resource_version: int = 1000, strict_namespaces: bool = False,
                 default_watch_timeout: float = 1800.0, bookmark_interval: float = 60.0,
                 host: str = "127.0.0.1") -> None:
        self.clock = clock
        self.token = token
        self.user = user
        self.require_auth = require_auth
        self.default_watch_timeout = default_watch_timeout
        self.bookmark_interval = bookmark_interval
        self.host = host
        self.port = 0
        self.registry = Registry()
        for rt in default_resources():
            self.registry.register(rt)
        self.store = Store(self.registry, self._now, history_limit=history_limit,
                           initial_rv=initial_resource_version, strict_namespaces=strict_namespaces)
        self.faults = FaultSet()
        self.denials = DenialSet()
        self._tokens: dict[str, str] = {}  # extra bearer tokens → the user each one is
        self._warn_rules: list[tuple[str, str, str]] = []  # (method, path regex, warning text)
        self._requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._logs: dict[tuple[str, str, str], str] = {}
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _now(self) -> datetime:
        return self.clock()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeKubeServer is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeKubeServer:
        if self._httpd is not None:
            return self
        served: ServedApi = self  # mypy: the server is what its handlers are typed against
        handler = type("BoundHandler", (Handler,), {"fake": served})
        httpd = ThreadingHTTPServer((self.host, 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fakekube-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; open watches end and idle connections are cut. Never hangs."""
        if self._httpd is None:
            return
        self._stopping.set()
        self.store.close_all_watches()
        self.store.hooks.stop()
        self._httpd.shutdown()
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None

    def __enter__(self) -> FakeKubeServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if exc_type is None and self.hook_errors:
            raise RuntimeError(f"fakekube hooks failed: {self.hook_errors!r}") from self.hook_errors[0]

    def _track(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._connections.add(conn)
        if self._stopping.is_set():
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _untrack(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._connections.discard(conn)

    def write_kubeconfig(self, path: str | Path, context: str = "fake", token: str | None = None,
                         namespace: str | None = None) -> Path:
        """A kubeconfig for `kubernetes.config.load_kube_config(config_file=..., context=...)`."""
        ctx: dict[str, Any] = {"cluster": "fakekube", "user": "fakekube-user"}
        if namespace:
            ctx["namespace"] = namespace
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": context,
            "clusters": [{"name": "fakekube", "cluster": {"server": self.url,
                                                          "insecure-skip-tls-verify": True}}],
            "users": [{"name": "fakekube-user", "user": {"token": token or self.token}}],
            "contexts": [{"name": context, "context": ctx}],
        }
        target = Path(path)
        target.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return target

    # ------------------------------------------------------------------ authentication
    def add_token(self, token: str, user: str) -> None:
        """Accept one more bearer token, authenticating as `user`: several clients (processes)
        are then told apart in `requests` by `RecordedRequest.user`, never by the token."""
        self._tokens[token] = user

    def user_for(self, authorization: str | None) -> str | None:
        """The user an `Authorization` header authenticates as, or None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        token = authorization[len("Bearer "):]
        return self.user if token == self.token else self._tokens.get(token)

    # ------------------------------------------------------------------ request log
    def _record(self, record: dict[str, Any], status: int | None, response: Any,
                dropped: bool = False) -> None:
        with self._requests_lock:
            self._requests.append(RecordedRequest(
                record["method"], record["path"], record["query"], status, record["body"],
                record["watch"], record["content_type"], response, dropped,
                record.get("applied_status"), record.get("user")))

    def _note_applied(self, record: dict[str, Any], code: int) -> None:
        record["applied_status"] = code

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._requests_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    # ------------------------------------------------------------------ faults and RBAC
    def inject(self, method: str | None = None, path_regex: str | None = None, status: int | None = None,
               delay: float = 0.0, drop: bool = False, times: int | None = 1,
               retry_after: float | None = None, after_apply: bool = False, body: Any = None,
               watch: bool | None = None) -> Fault:
        return self.faults.add(Fault(method, path_regex, status, delay, drop, times, retry_after,
                                     after_apply, body, watch))

    def warn_on(self, method: str, path_regex: str, text: str) -> Callable[[], None]:
        """Add `Warning: 299 - "<text>"` to answers of matching requests, as admission
        webhooks, PodSecurity in warn mode and deprecated APIs do. Returns a remover."""
        entry = (method.upper(), path_regex, text)
        self._warn_rules.append(entry)
        return lambda: self._warn_rules.remove(entry) if entry in self._warn_rules else None

    def warnings_for(self, method: str, path: str) -> list[str]:
        return [text for m, rx, text in list(self._warn_rules) if m == method and re.search(rx, path)]

    def forbid(self, verb: str, resource: str, namespace: str | None = None,
               group: str | None = None) -> Denial:
        return self.denials.add(Denial(verb, resource, namespace, group))

    # ------------------------------------------------------------------ resources and hooks
    def register(self, rt: ResourceType) -> ResourceType:
        """Serve one more resource type, e.g. `server.register(crd("x.io", "v1", "foos", "Foo"))`."""
        return self.registry.register(rt)

    def unregister(self, group: str, plural: str) -> ResourceType | None:
        """Stop serving a type, e.g. ``unregister("tekton.dev", "pipelineruns")``: a cluster
        without that CRD (404 on its paths, absent from discovery and
        ``customresourcedefinitions``)."""
        return self.registry.unregister(group, plural)

    def resource(self, group: str, version: str, plural: str) -> ResourceType:
        return self.registry.require(group, version, plural)

    def on_event(self, callback: Callable[[WatchEvent], Any]) -> Callable[[], None]:
        """Call `callback(event)` for every committed change (on the hook thread). Returns an
        unsubscribe function."""
        return self.store.hooks.add(callback)

    def add_admission(self, group: str, version: str, plural: str, fn: Admission) -> Callable[[], None]:
        return self.store.add_admission(self.resource(group, version, plural), fn)

    def flush_hooks(self, timeout: float = 5.0) -> bool:
        return self.store.hooks.flush(timeout)

    @property
    def hook_errors(self) -> list[BaseException]:
        return list(self.store.hooks.errors)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until `predicate()` holds, re-checked on every store change (no polling)."""
        with self.store.changed:
            return self.store.changed.wait_for(predicate, timeout)

    def wait_for_object(self, group: str, version: str, plural: str, namespace: str | None, name: str,
                        predicate: Callable[[dict[str, Any] | None], bool] = lambda o: o is not None,
                        timeout: float = 5.0) -> dict[str, Any] | None:
        rt = self.resource(group, version, plural)
        self.wait_for(lambda: predicate(self.store.current(rt, namespace, name)), timeout)
        return self.get_object(group, version, plural, namespace, name)

    @property
    def active_watches(self) -> int:
        """Watch connections currently open (wait on it before changing what a test watches)."""
        return self.store.watch_count

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    def compact(self) -> None:
        self.store.compact()

    # ------------------------------------------------------------------ direct store access
    def get_object(self, group: str, version: str, plural: str, namespace: str | None,
                   name: str) -> dict[str, Any] | None:
        try:
            return self.store.get(self.resource(group, version, plural), namespace, name)
        except e.ApiError:
            return None

    def list_objects(self, group: str, version: str, plural: str, namespace: str | None = None,
                     label_selector: str | None = None) -> list[dict[str, Any]]:
        items, _ = self.store.list(self.resource(group, version, plural), namespace,
                                   parse_label_selector(label_selector))
        return items

    def create_object(self, group: str, version: str, plural: str, obj: dict[str, Any],
                      namespace: str | None = None) -> dict[str, Any]:
        """Create with full API semantics (validation, admission); raises `ApiError`."""
        ns = namespace or obj.get("metadata", {}).get("namespace")
        return self.store.create(self.resource(group, version, plural), ns, obj)

    def put_object(self, group: str, version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace directly (no validation, status included)."""
        return self.store.put(self.resource(group, version, plural), obj)

    def modify_object(self, group: str, version: str, plural: str, namespace: str | None, name: str,
                      fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        return self.store.mutate(self.resource(group, version, plural), namespace, name, fn)

    def update_status(self, group: str, version: str, plural: str, namespace: str | None, name: str,
                      status: dict[str, Any]) -> dict[str, Any]:
        """Replace `.status` like a controller's status update."""
        def replace(obj: dict[str, Any]) -> None:
            obj["status"] = status
        return self.modify_object(group, version, plural, namespace, name, replace)

    def delete_object(self, group: str, version: str, plural: str, namespace: str | None, name: str,
                      propagation: str | None = None) -> dict[str, Any] | None:
        """Delete like the API would (finalizers, propagation); None when it did not exist."""
        try:
            return self.store.delete(self.resource(group, version, plural), namespace, name,
                                     propagation=propagation)
        except e.ApiError as exc:
            if exc.code == 404:
                return None
            raise

    # ------------------------------------------------------------------ pod logs
    def set_pod_log(self, namespace: str, pod: str, text: str, container: str | None = None) -> None:
        """What `GET .../pods/<pod>/log` answers (for `container`, or the pod's only one)."""
        self._logs[(namespace, pod, container or "")] = text

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        return self._logs.get((namespace, pod, container), self._logs.get((namespace, pod, ""), ""))
