"""A loopback TCP forwarder between the relay and the S3 server.

It lets end-to-end tests see what crossed the wire upstream (and when), and
break a connection mid-response, without faking either end.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Callable


class TcpTap:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target>, counting bytes each way."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        #: Bytes sent towards the S3 server / back to the relay, all connections.
        self.sent_up = 0
        self.sent_down = 0
        #: The first bytes that went upstream, to inspect request heads.
        self.captured = bytearray()
        #: Every byte that goes upstream while set (a test sets and reads it).
        self.up_log: bytearray | None = None
        #: Connections accepted so far.
        self.connections = 0
        #: Reset every connection once this many response bytes went down it.
        self.cut_down_after: int | None = None
        #: Asked once per new connection: reset it after this many bytes
        #: upstream ("up") or downstream ("down"), or None for no cut.
        self.chaos: Callable[[], tuple[str, int] | None] | None = None
        #: Connections reset so far (either way of cutting).
        self.cuts = 0
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._sockets += [client, server]
                self.connections += 1
            way, after = (self.chaos() if self.chaos else None) or ("", 0)
            for source, sink, up in ((client, server, True), (server, client, False)):
                cut = after if way == ("up" if up else "down") else None
                threading.Thread(target=self._pump, args=(source, sink, up, cut),
                                 daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, up: bool,
              cut: int | None) -> None:
        passed = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                limit = cut if cut is not None or up else self.cut_down_after  # global: down only
                if limit is not None:
                    allowed = limit - passed
                    if len(data) >= allowed:
                        sink.sendall(data[:allowed])
                        self._reset(source, sink)
                        with self._lock:
                            self.cuts += 1
                        return
                sink.sendall(data)
                passed += len(data)
                with self._lock:
                    if up:
                        self.sent_up += len(data)
                        if len(self.captured) < 65536:
                            self.captured += data[:4096]
                        if self.up_log is not None:
                            self.up_log += data
                    else:
                        self.sent_down += len(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _reset(*sockets: socket.socket) -> None:
        for s in sockets:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked on the other side
            except OSError:
                pass
            s.close()

    def wait_up(self, at_least: int, seconds: float = 10.0) -> bool:
        """Whether ``at_least`` bytes went upstream within ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.sent_up >= at_least:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.close()
                except OSError:
                    pass
