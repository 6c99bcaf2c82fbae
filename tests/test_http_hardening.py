"""Connection-level bounds of every HTTP port, over raw sockets on 127.0.0.1.

A probe port or a webhook port is reachable by anything on the network, so a client that
never finishes its headers, idles on a keep-alive connection, opens connections without
end or sends an oversized body must cost a bounded amount.  These tests speak HTTP by
hand (raw sockets) so they control exactly which bytes reach the server and when.  A
closed connection is seen as EOF well inside a generous socket timeout; no test measures
how long anything took.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from starlette.types import ASGIApp

from reconciler.service.httpserver import Limits, ServerThread, health_app, webhook_app

from .test_httpserver import LIMIT, CountingApp, Recorder
from .test_webhook import SECRET

WAIT = 10.0  # far beyond every timeout under test: reaching it means "never closed"
SHORT = 0.4
LONG = 60.0


@contextmanager
def serving(app: ASGIApp, limits: Limits) -> Iterator[ServerThread]:
    server = ServerThread(app, "127.0.0.1", 0, name="test", limits=limits).start(timeout=10)
    try:
        yield server
    finally:
        server.stop()


def health() -> ASGIApp:
    return health_app(lambda: True, lambda: (True, "ok"))


def connect(server: ServerThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    sock.settimeout(WAIT)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lower-cased headers, body by Content-Length) from the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a complete response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a response body")
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed the connection (EOF or reset) before WAIT ran out."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def get(path: str = "/healthz", *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: test", *extra]) + "\r\n\r\n").encode()


# -- request head and idle timeouts ----------------------------------------------------------

@pytest.mark.parametrize(("case", "sent"), [
    ("connects and sends nothing", b""),
    ("half a request line", b"GET /heal"),
    ("request line, headers never finished", b"GET /healthz HTTP/1.1\r\nHost: test\r\n"),
])
def test_a_client_that_never_finishes_its_headers_is_disconnected(case: str, sent: bytes) -> None:
    with serving(health(), Limits(header_timeout=SHORT, keep_alive=LONG)) as server:
        with connect(server) as slow:
            if sent:
                slow.sendall(sent)
            assert closed_by_server(slow), case
        with connect(server) as prompt:  # the port still serves clients that send a request
            prompt.sendall(get())
            assert read_response(prompt)[0] == 200


def test_the_head_deadline_applies_again_to_the_next_request_on_a_kept_alive_connection() -> None:
    with serving(health(), Limits(header_timeout=SHORT, keep_alive=LONG)) as server, connect(server) as sock:
        sock.sendall(get())
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # one byte would cancel a plain idle timer
        assert closed_by_server(sock)


def test_an_idle_keep_alive_connection_is_closed() -> None:
    with serving(health(), Limits(header_timeout=LONG, keep_alive=1)) as server, connect(server) as sock:
        sock.sendall(get())
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") != "close"  # kept alive at first
        assert closed_by_server(sock)


def test_requests_on_a_kept_alive_connection_are_served_while_it_is_busy() -> None:
    with serving(health(), Limits(header_timeout=LONG, keep_alive=LONG)) as server, connect(server) as sock:
        for path in ("/healthz", "/readyz", "/healthz"):
            sock.sendall(get(path))
            assert read_response(sock)[0] == 200


# -- the connection bound ------------------------------------------------------------------

def test_connections_beyond_the_bound_are_answered_503_and_closed() -> None:
    with serving(health(), Limits(header_timeout=LONG, keep_alive=LONG, max_connections=3)) as server:
        held = [connect(server) for _ in range(3)]
        try:
            for sock in held:  # a full exchange: the server has surely registered each connection
                sock.sendall(get())
                assert read_response(sock)[0] == 200
            with connect(server) as extra:
                status, headers, _ = read_response(extra)
                assert (status, headers.get("connection")) == (503, "close")
                assert closed_by_server(extra)
            held[1].sendall(get())  # the connections within the bound are still served
            assert read_response(held[1])[0] == 200
            held[0].sendall(get("/healthz", "Connection: close"))
            assert read_response(held[0])[0] == 200
            assert closed_by_server(held[0])  # its slot is free once the server has closed it
            with connect(server) as again:
                again.sendall(get())
                assert read_response(again)[0] == 200
        finally:
            for sock in held:
                sock.close()


# -- bodies that are not read ----------------------------------------------------------------

def webhook() -> CountingApp:
    return CountingApp(webhook_app(lambda provider: SECRET, Recorder(), max_body=LIMIT))


def test_an_oversized_webhook_body_is_refused_from_its_headers_and_the_connection_closed() -> None:
    app = webhook()
    with serving(app, Limits(header_timeout=LONG, keep_alive=LONG)) as server, connect(server) as sock:
        sock.sendall((f"POST /webhook/github HTTP/1.1\r\nHost: test\r\nX-GitHub-Event: push\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {LIMIT + 1}\r\n\r\n").encode())
        # not one body byte sent: the answer can only come from the headers
        status, headers, body = read_response(sock)
        assert (status, headers.get("connection")) == (413, "close")
        assert b"body larger than" in body
        assert closed_by_server(sock)
    assert app.received == 0


def test_an_oversized_chunked_webhook_body_is_cut_off_at_the_limit_and_closed() -> None:
    app = webhook()
    with serving(app, Limits(header_timeout=LONG, keep_alive=LONG)) as server, connect(server) as sock:
        sock.sendall(b"POST /webhook/github HTTP/1.1\r\nHost: test\r\nX-GitHub-Event: push\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * (LIMIT + 100)
        sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")  # the body never ends
        status, headers, _ = read_response(sock)
        assert (status, headers.get("connection")) == (413, "close")
        assert closed_by_server(sock)
    assert app.received <= LIMIT + len(chunk)


def test_any_port_closes_instead_of_draining_a_body_it_answered_without_reading() -> None:
    with serving(health(), Limits(header_timeout=LONG, keep_alive=LONG)) as server, connect(server) as sock:
        # /healthz is GET only: Starlette answers 405 without touching the announced body
        sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n")
        assert read_response(sock)[0] == 405
        assert closed_by_server(sock)


@pytest.mark.parametrize("limits", [
    {"header_timeout": 0}, {"keep_alive": -1}, {"max_connections": 0},
])
def test_limits_must_be_positive(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        Limits(**limits)  # type: ignore[arg-type]
