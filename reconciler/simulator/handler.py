"""The HTTP side: the request handler kube-apiserver clients talk to. It reads a request,
applies faults, authentication and RBAC before any state is touched, dispatches each verb to
the store and writes the reply; URL routing lives in ``handler_routing``, list paging, pod logs
and SSAR/CRD answers in ``handler_reads``, streaming watches in ``handler_watch``."""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any
from urllib.parse import parse_qs, urlsplit

from reconciler.simulator import discovery
from reconciler.simulator import errors as e
from reconciler.simulator import patch as p
from reconciler.simulator.faults import Fault
from reconciler.simulator.handler_reads import accepts_json, authorization_or_crd, list_page, pod_log, selectors
from reconciler.simulator.handler_routing import Response, Unparsed, route, verb_for, warning_header
from reconciler.simulator.handler_watch import WatchStream
from reconciler.simulator.serving import ServedApi

_PUBLIC = {"healthz", "livez", "readyz", "version"}
_PATCH_TYPES = (p.MERGE, p.JSON_PATCH, p.STRATEGIC, p.APPLY_YAML)


class Handler(WatchStream):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    fake: ServedApi  # set on the per-server subclass

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
                body = Unparsed(raw)
        watch = method == "GET" and query.get("watch") in ("true", "1")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip() or None
        record: dict[str, Any] = {"method": method, "path": url.path, "query": query,
                                  "body": None if isinstance(body, Unparsed) else body,
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
        special = authorization_or_crd(self.fake, method, parts, body)
        if special is not None:
            return special
        r = route(self.fake, parts)
        if r is None:
            raise e.ApiError(404, "NotFound", "the server could not find the requested resource")
        verb = verb_for(method, r, watch)
        if verb is None or (r.rt.namespaced and r.namespace is None and verb not in ("list", "watch")):
            raise e.ApiError(405, "MethodNotAllowed",
                             "the server does not allow this method on the requested resource")
        resource = f"{r.rt.plural}/{r.subresource}" if r.subresource else r.rt.plural
        if self.fake.denials.denies(verb, r.rt.group, resource, r.namespace):
            name = None if verb in ("create", "list", "watch", "deletecollection") else r.name
            raise e.forbidden(self.fake.user, verb, r.rt.group, r.rt.plural, r.subresource,
                              r.namespace, name)
        if isinstance(body, Unparsed) and method != "DELETE":
            raise e.bad_request(f"couldn't get version/kind; json parse error: {body.raw[:40]!r}")
        store = self.fake.store
        dry_run = query.get("dryRun") == "All"
        validation = query.get("fieldValidation")
        warnings: list[str] = []
        if verb == "watch":
            self._watch(r, query, record)
            return None
        if verb == "list":
            return Response(200, list_page(self.fake, r, query))
        if verb == "get" and r.subresource == "log":
            try:
                return pod_log(self.fake, r, query)
            except e.ApiError:
                # kube-apiserver encodes an error Status in a media type the client accepts;
                # a client that accepts only text/plain gets 406 instead of the 404/400
                if not accepts_json(self.headers.get("Accept")):
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
            items, rv = store.list(r.rt, r.namespace, *selectors(r.rt, query))
            for item in items:
                store.delete(r.rt, item["metadata"].get("namespace"), item["metadata"]["name"],
                             propagation=policy, dry_run=dry_run)
            return Response(200, {"kind": r.rt.list_kind, "apiVersion": r.rt.api_version,
                                  "metadata": {"resourceVersion": str(rv)}, "items": items})
        return Response(200, store.delete(r.rt, r.namespace, r.name or "", propagation=policy,
                                          preconditions=options.get("preconditions"), dry_run=dry_run))
