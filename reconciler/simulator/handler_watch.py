"""Streaming watches: the chunked ``watch=true`` response (initial events, resourceVersion
resume or a 410 ERROR event, timeouts, periodic and final bookmarks) and noticing a client that
went away. A mixin of the request handler, since it writes to the connection itself."""

from __future__ import annotations

import json
import select
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from reconciler.simulator import errors as e
from reconciler.simulator.handler_reads import selectors
from reconciler.simulator.handler_routing import Route
from reconciler.simulator.serving import ServedApi


class WatchStream(BaseHTTPRequestHandler):
    fake: ServedApi  # set on the per-server subclass

    def _watch(self, r: Route, query: dict[str, str], record: dict[str, Any]) -> None:
        fake, store = self.fake, self.fake.store
        labels, fields = selectors(r.rt, query)
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
