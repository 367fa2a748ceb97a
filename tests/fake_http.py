"""A small real HTTP/1.1 server for wire-protocol fakes (IMDS, Vault, OIDC).

Those services cannot be installed here, so tests talk to fakes that speak
their real wire protocols over loopback TCP.  This module holds what the
fakes share: a threaded server on an ephemeral 127.0.0.1 port, a record of
every request, and injectable failures (status codes, a stalled answer,
malformed JSON, a reset connection) so the failure paths of a client can be
exercised as well as the happy path.

Shutting down never hangs: stalled answers wait on an event that shutdown
sets, and every open connection is shut down so keep-alive handler threads
end at once.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Callable

#: The failure kinds ``fail_next`` accepts.
FAILURE_KINDS = ("401", "403", "500", "503", "timeout", "malformed", "reset")

#: How long a "timeout" failure holds the connection open without answering
#: (unless the server shuts down first).
STALL_SECONDS = 120.0

#: Request bodies above this are refused (413): fakes never need more.
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived: what tests assert on."""

    method: str
    path: str
    #: Header names as sent; ``header()`` looks them up case-insensitively.
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: The failure injected for this request, or None when it was answered normally.
    failure: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """What a fake answers: status, headers and a complete body."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, document: Any, *headers: tuple[str, str]) -> Reply:
        body = json.dumps(document).encode()
        return cls(status, body, (("Content-Type", "application/json"), *headers))

    @classmethod
    def text(cls, status: int, text: str, *headers: tuple[str, str]) -> Reply:
        return cls(status, text.encode(), (("Content-Type", "text/plain"), *headers))


@dataclass
class _Failure:
    kind: str
    times: int
    path: str | None = field(default=None)


class FakeHTTPServer:
    """Base of the fakes: subclasses implement ``answer`` and ``error_reply``.

    Use as a context manager; ``url`` is valid inside it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._failures: deque[_Failure] = deque()
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------

    def __enter__(self) -> FakeHTTPServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop promptly: release stalled answers, close every connection."""
        self._stopping.set()
        server = self._server
        if server is None:
            return
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, "use the fake as a context manager"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what tests use --------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far (a copy), oldest first."""
        with self._lock:
            return list(self._requests)

    def fail_next(self, kind: str, times: int = 1, path: str | None = None) -> None:
        """Fail the next ``times`` requests (only those whose path starts with ``path``).

        Kinds: "401", "403", "500", "503" (the service's error document),
        "timeout" (accept and read the request, then answer nothing until
        shutdown or ``STALL_SECONDS``), "malformed" (200 with invalid JSON),
        "reset" (close the connection with a TCP RST instead of answering).
        """
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; one of {FAILURE_KINDS}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._failures.append(_Failure(kind, times, path))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    # -- for subclasses --------------------------------------------------

    def answer(self, request: RecordedRequest) -> Reply:
        """The service's answer to a request that is not failed on purpose."""
        raise NotImplementedError

    def error_reply(self, status: int) -> Reply:
        """The service's error document for an injected 401/403/500/503."""
        return Reply.json(status, {"error": f"injected {status}"})

    # -- internals -------------------------------------------------------

    def _take_failure(self, path: str) -> str | None:
        with self._lock:
            for failure in self._failures:
                if failure.path is None or path.startswith(failure.path):
                    failure.times -= 1
                    if failure.times == 0:
                        self._failures.remove(failure)
                    return failure.kind
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _track(self, connection: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


def _handler_class(fake: FakeHTTPServer) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to one fake (http.server wants a class)."""

    class Handler(_Handler):
        owner = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FakeHTTPServer
    #: Keep-alive connections idle this long are closed (bounds handler threads).
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.owner._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence: the record of requests is the log."""

    def do_GET(self) -> None:
        self._serve()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_LIST = do_GET

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Reply.text(413, "too large"))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        kind = self.owner._take_failure(self.path)
        request = RecordedRequest(
            self.command, self.path, tuple(self.headers.items()), body, kind
        )
        self.owner._record(request)
        if kind is None:
            self._send(self.owner.answer(request))
        elif kind == "timeout":
            self.owner._stopping.wait(STALL_SECONDS)
            self.close_connection = True
        elif kind == "reset":
            # Linger 0: closing sends an RST, not an orderly FIN.
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()
            self.close_connection = True
        elif kind == "malformed":
            self._send(Reply(200, b'{"truncated": ', (("Content-Type", "application/json"),)))
        else:
            self._send(self.owner.error_reply(int(kind)))

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)


#: A route: (method, path) -> answer.  Fakes build these tables.
Route = Callable[[RecordedRequest], Reply]
