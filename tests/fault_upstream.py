"""A raw-socket HTTP/1.1 upstream whose every answer a test scripts.

moto always answers well; the relay's fault handling needs an upstream that
answers 500/503 with an S3 error document, or that closes a kept-alive
connection just as the next request arrives (the race a pooled connection
loses when the server's idle timeout fires).  Requests are parsed with
``Content-Length`` framing only, which is what the relay sends upstream.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Callable

#: Longest request head accepted (the relay's are far smaller).
MAX_HEAD = 64 * 1024


@dataclass
class Seen:
    """One request as the upstream received it."""

    connection: int
    #: Position of the request on its connection (0 = first).
    index: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    #: False when the upstream closed the connection instead of answering.
    answered: bool = True


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str = "OK"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def encode(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def s3_error(status: int, code: str, message: str, request_id: str) -> Answer:
    """An S3 error answer as S3 sends it: XML body and x-amz-request-id."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId><HostId>fault-upstream</HostId></Error>"
    ).encode()
    reasons = {500: "Internal Server Error", 503: "Slow Down"}
    return Answer(status, reasons.get(status, "Error"), (
        ("Content-Type", "application/xml"),
        ("x-amz-request-id", request_id),
        ("x-amz-id-2", "fault-upstream-host-id"),
        ("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())),
    ), body)


def s3_ok(seen: Seen) -> Answer:
    """A plausible S3 success: an ETag for a PUT, a tiny listing otherwise."""
    headers = [("x-amz-request-id", f"OK-{seen.connection}-{seen.index}")]
    if seen.method == "PUT":
        headers.append(("ETag", '"%s"' % hashlib.md5(seen.body).hexdigest()))
        return Answer(200, "OK", tuple(headers))
    body = b"<ListBucketResult><Name>b</Name></ListBucketResult>"
    headers.append(("Content-Type", "application/xml"))
    return Answer(200, "OK", tuple(headers), body if seen.method != "HEAD" else b"")


#: Builds the answer to a request, once its body arrived.
Script = Callable[[Seen], Answer]
#: Decides from a request's head whether to close the connection instead of
#: answering: None answers; n closes it unanswered once n body bytes arrived
#: (0: at once, reading no body).
Dropper = Callable[[Seen], "int | None"]


def never(seen: Seen) -> int | None:
    return None


def stale_after_first(seen: Seen) -> int | None:
    """Close a kept-alive connection, unanswered, when its second request arrives.

    What a server does whose idle timeout fires just as a pooled connection is
    reused.
    """
    return 0 if seen.index > 0 else None


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: list[Seen] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)
    connections: int = 0


class FaultUpstream:
    """Serves each request as ``script`` says, or drops it as ``drop`` says; a context manager."""

    def __init__(self, script: Script = s3_ok, drop: Dropper = never) -> None:
        self.script = script
        self.drop = drop
        self._state = _State()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def seen(self) -> list[Seen]:
        with self._state.lock:
            return list(self._state.seen)

    @property
    def connections(self) -> int:
        with self._state.lock:
            return self._state.connections

    def __enter__(self) -> FaultUpstream:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._state.lock:
            sockets = list(self._state.sockets)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._state.lock:
                self._state.sockets.append(sock)
                number = self._state.connections
                self._state.connections += 1
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        sock.settimeout(60)
        buffered = b""
        try:
            for index in range(1_000_000):
                while b"\r\n\r\n" not in buffered:
                    data = sock.recv(65536)
                    if not data or len(buffered) > MAX_HEAD:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                seen = Seen(number, index, method, path, headers)
                with self._state.lock:
                    self._state.seen.append(seen)
                cut = self.drop(seen)
                if cut is not None:
                    while len(buffered) < cut:
                        data = sock.recv(65536)
                        if not data:
                            break
                        buffered += data
                    seen.answered = False
                    seen.body = buffered  # the body bytes that had arrived
                    return
                length = int(headers.get("content-length", "0"))
                while len(buffered) < length:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffered += data
                seen.body, buffered = buffered[:length], buffered[length:]
                sock.sendall(self.script(seen).encode())
        except OSError:
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass
