"""The HTTP side: URL routing like kube-apiserver, verbs, list paging, streaming watches and
pod logs, with faults, authentication and RBAC decided before any state is touched."""

from __future__ import annotations

import base64
import contextlib
import json
import select
import socket
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from reconciler.simulator import discovery
from reconciler.simulator import errors as e
from reconciler.simulator import patch as p
from reconciler.simulator.faults import Fault
from reconciler.simulator.resources import ResourceType
from reconciler.simulator.selectors import SelectorError, parse_field_selector, parse_label_selector

if TYPE_CHECKING:
    from reconciler.simulator.server import FakeKubeServer

_PUBLIC = {"healthz", "livez", "readyz", "version"}
_PATCH_TYPES = (p.MERGE, p.JSON_PATCH, p.STRATEGIC, p.APPLY_YAML)


@dataclass(frozen=True)
class Route:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass
class Response:
    code: int
    body: Any
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one `Warning: 299 - "..."` header each


def warning_header(text: str) -> str:
    """RFC 7234 warn-value as kube-apiserver writes it: code 299, agent "-", quoted text."""
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def route(fake: FakeKubeServer, parts: list[str]) -> Route | None:
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    namespace_sub = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
    if len(rest) >= 3 and rest[0] == "namespaces" and not namespace_sub:
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    rt = fake.registry.get(group, rest[0], version)
    if rt is None or (namespace is not None and not rt.namespaced):
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if (sub is not None and sub not in rt.all_subresources()) or (
            name is not None and rt.namespaced and namespace is None):
        return None
    return Route(rt, namespace, name, sub)


def _verb(method: str, r: Route, watch: bool) -> str | None:
    if r.name is None:
        return {"GET": "watch" if watch else "list", "POST": "create",
                "DELETE": "deletecollection"}.get(method)
    if r.subresource == "log":
        return "get" if method == "GET" else None
    return {"GET": "get", "PUT": "update", "PATCH": "patch",
            "DELETE": None if r.subresource else "delete"}.get(method)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    fake: FakeKubeServer  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.fake._untrack(self.connection)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # ------------------------------------------------------------------ plumbing
    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = _Unparsed(raw)
        watch = method == "GET" and query.get("watch") in ("true", "1")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip() or None
        record: dict[str, Any] = {"method": method, "path": url.path, "query": query,
                                  "body": None if isinstance(body, _Unparsed) else body,
                                  "watch": watch, "content_type": content_type,
                                  "user": self.fake.user_for(self.headers.get("Authorization"))}
        fault = self.fake.faults.claim(method, url.path, watch)
        if fault is not None:
            if fault.delay:
                self.fake._stopping.wait(fault.delay)
            if not fault.after_apply and fault.status is not None:
                return self._reply(self._fault_response(fault), record)
            if not fault.after_apply and fault.drop:
                return self._drop(record)
        try:
            response = self._process(method, url.path, query, body, content_type, watch, record)
        except e.ApiError as exc:
            response = Response(exc.code, exc.status())
        if response is None:
            return None
        response.warnings.extend(self.fake.warnings_for(method, url.path))
        if fault is not None and fault.after_apply:
            self.fake._note_applied(record, response.code)
            if fault.status is not None:
                return self._reply(self._fault_response(fault), record)
            return self._drop(record)
        return self._reply(response, record)

    def _fault_response(self, fault: Fault) -> Response:
        headers = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else {}
        status = fault.status or 500
        if fault.body is None:
            return Response(status, e.default_status(status, retry_after=fault.retry_after), headers=headers)
        if isinstance(fault.body, str):
            return Response(status, fault.body, "text/plain", headers)
        return Response(status, fault.body, headers=headers)

    def _reply(self, response: Response, record: dict[str, Any]) -> None:
        if isinstance(response.body, (bytes, str)):
            data = response.body.encode() if isinstance(response.body, str) else response.body
        else:
            data = json.dumps(response.body).encode()
        self.fake._record(record, response.code, response.body)  # before the client can see it
        try:
            self.send_response(response.code)
            for key, value in response.headers.items():
                self.send_header(key, value)
            for text in response.warnings:
                self.send_header("Warning", warning_header(text))
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _drop(self, record: dict[str, Any]) -> None:
        self.fake._record(record, None, None, dropped=True)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ dispatch
    def _process(self, method: str, path: str, query: dict[str, str], body: Any,
                 content_type: str | None, watch: bool, record: dict[str, Any]) -> Response | None:
        parts = [part for part in path.split("/") if part]
        auth = self.headers.get("Authorization")
        if self.fake.require_auth and record["user"] is None and not (
                auth is None and parts[:1] and parts[0] in _PUBLIC):
            raise e.ApiError(401, "Unauthorized", "Unauthorized")
        if len(parts) == 1 and parts[0] in ("healthz", "livez", "readyz"):
            return Response(200, "ok", "text/plain")
        doc = discovery.document(self.fake.registry, parts, f"{self.fake.host}:{self.fake.port}")
        if doc is not None and method == "GET":
            return Response(200, doc)
        special = self._authorization_or_crd(method, parts, body)
        if special is not None:
            return special
        r = route(self.fake, parts)
        if r is None:
            raise e.ApiError(404, "NotFound", "the server could not find the requested resource")
        verb = _verb(method, r, watch)
        if verb is None or (r.rt.namespaced and r.namespace is None and verb not in ("list", "watch")):
            raise e.ApiError(405, "MethodNotAllowed",
                             "the server does not allow this method on the requested resource")
        resource = f"{r.rt.plural}/{r.subresource}" if r.subresource else r.rt.plural
        if self.fake.denials.denies(verb, r.rt.group, resource, r.namespace):
            name = None if verb in ("create", "list", "watch", "deletecollection") else r.name
            raise e.forbidden(self.fake.user, verb, r.rt.group, r.rt.plural, r.subresource,
                              r.namespace, name)
        if isinstance(body, _Unparsed) and method != "DELETE":
            raise e.bad_request(f"couldn't get version/kind; json parse error: {body.raw[:40]!r}")
        store = self.fake.store
        dry_run = query.get("dryRun") == "All"
        validation = query.get("fieldValidation")
        warnings: list[str] = []
        if verb == "watch":
            self._watch(r, query, record)
            return None
        if verb == "list":
            return Response(200, self._list(r, query))
        if verb == "get" and r.subresource == "log":
            try:
                return self._log(r, query)
            except e.ApiError:
                # kube-apiserver encodes an error Status in a media type the client accepts;
                # a client that accepts only text/plain gets 406 instead of the 404/400
                if not _accepts_json(self.headers.get("Accept")):
                    raise e.ApiError(406, "NotAcceptable", "only the following media types are accepted: "
                                     "application/json, application/yaml, "
                                     "application/vnd.kubernetes.protobuf") from None
                raise
        if verb == "get":
            return Response(200, store.get(r.rt, r.namespace, r.name or ""))
        if verb == "create":
            created = store.create(r.rt, r.namespace, body, dry_run, field_validation=validation,
                                   warnings=warnings)
            return Response(201, created, warnings=warnings)
        if verb == "update":
            updated = store.update(r.rt, r.namespace, r.name or "", body, r.subresource, dry_run,
                                   field_validation=validation, warnings=warnings)
            return Response(200, updated, warnings=warnings)
        if verb == "patch":
            if content_type not in _PATCH_TYPES:
                raise e.ApiError(415, "UnsupportedMediaType",
                                 f"the body of the request was in an unknown format - accepted media "
                                 f"types include: {', '.join(_PATCH_TYPES)}")
            existed = store.current(r.rt, r.namespace, r.name or "") is not None
            result = store.patch(r.rt, r.namespace, r.name or "", content_type, body, r.subresource,
                                 dry_run, query.get("fieldManager"), field_validation=validation,
                                 warnings=warnings)
            return Response(200 if existed else 201, result, warnings=warnings)
        options = body if isinstance(body, dict) else {}
        policy = options.get("propagationPolicy") or query.get("propagationPolicy")
        orphan = options.get("orphanDependents", query.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if orphan in (True, "true") else "Background"
        if verb == "deletecollection":
            items, rv = store.list(r.rt, r.namespace, *self._selectors(r.rt, query))
            for item in items:
                store.delete(r.rt, item["metadata"].get("namespace"), item["metadata"]["name"],
                             propagation=policy, dry_run=dry_run)
            return Response(200, {"kind": r.rt.list_kind, "apiVersion": r.rt.api_version,
                                  "metadata": {"resourceVersion": str(rv)}, "items": items})
        return Response(200, store.delete(r.rt, r.namespace, r.name or "", propagation=policy,
                                          preconditions=options.get("preconditions"), dry_run=dry_run))

    def _authorization_or_crd(self, method: str, parts: list[str], body: Any) -> Response | None:
        """SelfSubjectAccessReview (answered from the RBAC switch, ``server.forbid``) and GET of
        a CRD by name (every registered custom type; ``server.unregister`` removes one)."""
        if parts == ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] and method == "POST":
            spec = (body.get("spec") if isinstance(body, dict) else None) or {}
            attrs = spec.get("resourceAttributes") or {}
            resource = str(attrs.get("resource", ""))
            if attrs.get("subresource"):
                resource += f"/{attrs['subresource']}"
            denied = self.fake.denials.would_deny(str(attrs.get("verb", "")), str(attrs.get("group", "")),
                                                  resource, attrs.get("namespace") or None)
            status: dict[str, Any] = {"allowed": not denied}
            if denied:
                status["denied"] = True
                status["reason"] = "no RBAC policy matched"
            return Response(201, {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                                  "metadata": {"creationTimestamp": None}, "spec": spec, "status": status})
        if parts[:4] == ["apis", "apiextensions.k8s.io", "v1", "customresourcedefinitions"] and method == "GET":
            found = [rt for rt in self.fake.registry.all() if rt.custom]
            if len(parts) == 4:
                return Response(200, {"kind": "CustomResourceDefinitionList", "apiVersion": "apiextensions.k8s.io/v1",
                                      "metadata": {}, "items": [_crd_object(rt) for rt in found]})
            name = parts[4] if len(parts) == 5 else ""
            for rt in found:
                if f"{rt.plural}.{rt.group}" == name:
                    return Response(200, _crd_object(rt))
            raise e.ApiError(404, "NotFound", f'customresourcedefinitions.apiextensions.k8s.io "{name}" not found',
                             details={"name": name, "group": "apiextensions.k8s.io",
                                      "kind": "customresourcedefinitions"})
        return None

    def _selectors(self, rt: ResourceType, query: dict[str, str]) -> tuple[Any, Any]:
        try:
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"), rt.all_selectable_fields)
        except SelectorError as exc:
            raise e.bad_request(str(exc)) from exc
        return labels, fields

    def _list(self, r: Route, query: dict[str, str]) -> dict[str, Any]:
        items, rv = self.fake.store.list(r.rt, r.namespace, *self._selectors(r.rt, query))
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        token = query.get("continue")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                start = tuple(state["start"])
            except (ValueError, KeyError, TypeError) as exc:
                raise e.bad_request("continue key is not valid: illegal base64 data") from exc
            items = [i for i in items if (i["metadata"].get("namespace", ""), i["metadata"]["name"]) > start]
        limit = int(query.get("limit") or 0)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            state = {"rv": rv, "start": [last.get("namespace", ""), last["name"]]}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {"kind": r.rt.list_kind, "apiVersion": r.rt.api_version, "metadata": meta, "items": items}

    # ------------------------------------------------------------------ pod logs
    def _log(self, r: Route, query: dict[str, str]) -> Response:
        pod = self.fake.store.get(r.rt, r.namespace, r.name or "")
        spec = pod.get("spec") or {}
        names = [c["name"] for c in spec.get("containers", [])]
        all_names = names + [c["name"] for c in spec.get("initContainers", [])]
        container = query.get("container")
        if not container:
            if len(names) != 1:
                raise e.bad_request(f"a container name must be specified for pod {r.name}, "
                                    f"choose one of: [{' '.join(names)}]")
            container = names[0]
        if container not in all_names:
            raise e.bad_request(f"container {container} is not valid for pod {r.name}")
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        state = next((s.get("state") or {} for s in statuses if s.get("name") == container), {})
        if "waiting" in state:
            reason = state["waiting"].get("reason", "ContainerCreating")
            if reason in ("ImagePullBackOff", "ErrImagePull"):
                reason = "trying and failing to pull image"
            raise e.bad_request(f'container "{container}" in pod "{r.name}" is waiting to start: {reason}')
        if query.get("previous") in ("true", "1"):
            raise e.bad_request(f'previous terminated container "{container}" in pod "{r.name}" not found')
        text = self.fake.pod_log(r.namespace or "", r.name or "", container)
        if query.get("tailLines"):
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(query["tailLines"]):]) if int(query["tailLines"]) else ""
        if query.get("limitBytes"):
            text = text.encode()[: int(query["limitBytes"])].decode(errors="ignore")
        return Response(200, text, "text/plain")

    # ------------------------------------------------------------------ watch
    def _watch(self, r: Route, query: dict[str, str], record: dict[str, Any]) -> None:
        fake, store = self.fake, self.fake.store
        labels, fields = self._selectors(r.rt, query)
        timeout = float(query.get("timeoutSeconds") or fake.default_watch_timeout)
        initial = query.get("sendInitialEvents") == "true"
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        error: e.ApiError | None = None
        watcher = None
        try:
            watcher = store.open_watch(r.rt, r.namespace, labels, fields,
                                       None if initial else query.get("resourceVersion"), initial)
        except e.ApiError as exc:
            if exc.code != 410:
                raise
            error = exc
        fake._record(record, 200, None)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        last_bookmark = time.monotonic()
        try:
            if error is not None or watcher is None:
                self._chunk({"type": "ERROR", "object": error.status() if error else {}})
            else:
                while not fake._stopping.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    events = watcher.take(min(remaining, 0.2))
                    for event in events:
                        self._chunk(event)
                    if bookmarks and time.monotonic() - last_bookmark >= fake.bookmark_interval:
                        self._send_bookmark(r, watcher)
                        last_bookmark = time.monotonic()
                    if not events and self._client_gone():
                        self.close_connection = True
                        return
                if bookmarks and not fake._stopping.is_set():
                    self._send_bookmark(r, watcher)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        finally:
            if watcher is not None:
                store.close_watch(watcher)

    def _send_bookmark(self, r: Route, watcher: Any) -> None:
        with self.fake.store.lock:  # drain and read the resourceVersion at one instant
            rest = watcher.take(0)
            mark = self.fake.store.bookmark(r.rt)
        for event in rest:
            self._chunk(event)
        self._chunk(mark)

    def _chunk(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


def _accepts_json(accept: str | None) -> bool:
    if not accept:
        return True
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(types & {"application/json", "application/*", "*/*"})


@dataclass(frozen=True)
class _Unparsed:
    raw: bytes


def _crd_object(rt: ResourceType) -> dict[str, Any]:
    return {"kind": "CustomResourceDefinition", "apiVersion": "apiextensions.k8s.io/v1",
            "metadata": {"name": f"{rt.plural}.{rt.group}"},
            "spec": {"group": rt.group, "names": {"plural": rt.plural, "kind": rt.kind, "singular": rt.singular},
                     "scope": "Namespaced" if rt.namespaced else "Cluster",
                     "versions": [{"name": rt.version, "served": True, "storage": True}]},
            "status": {"acceptedNames": {"plural": rt.plural, "kind": rt.kind},
                       "conditions": [{"type": "Established", "status": "True"}]}}
