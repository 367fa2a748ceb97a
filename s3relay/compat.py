# -*- test-case-name: tests.unit.test_compat,tests.unit.test_writethrough -*-
"""Every use of Twisted-private API outside the HTTP channel, in one place.

Each is here because no public API does the same: a write sent at once, the
connection pool's protocol factory, the server endpoint parser, a TLS
handshake's outcome, a port's accept batch, whether a request's client is
gone.  ``tests/unit/test_compat.py`` has a canary for each, which fails when
Twisted changes under it; ``.ci/bookworm`` runs them on Debian's Twisted 22.4
too.  ``http/channel.py`` keeps the channel's own (DESIGN.md §1).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import endpoints
from twisted.internet.abstract import FileDescriptor
from twisted.internet.tcp import Connection
from twisted.protocols import tls
from twisted.web._newclient import ConnectionAborted as RequestAborted
from twisted.web._newclient import HTTP11ClientProtocol, RequestNotSent
from twisted.web.client import HTTPConnectionPool
from twisted.web.client import _HTTP11ClientFactory as HTTP11ClientFactory
from twisted.web.server import Request

__all__ = [
    "HTTP11ClientFactory",
    "HTTP11ClientProtocol",
    "RequestAborted",
    "RequestNotSent",
    "TLSProtocol",
    "WRITE_THROUGH",
    "accept_one_per_wakeup",
    "client_gone",
    "handshake_done",
    "keep_connection_header",
    "parse_server",
    "tls_failure_reason",
    "size_transport",
    "use_client_factory",
    "write_through",
]

if TYPE_CHECKING:
    TLSProtocol = tls.TLSMemoryBIOProtocol
else:  # write aggregation where Twisted has it (not in bookworm's 22.4)
    TLSProtocol = getattr(tls, "BufferingTLSTransport", tls.TLSMemoryBIOProtocol)


def use_client_factory(pool: HTTPConnectionPool, factory: Callable[..., Any]) -> None:
    """Have ``pool`` build its connections' protocols with ``factory``
    (called like ``HTTP11ClientFactory``, whose subclass it should build)."""
    pool._factory = factory  # type: ignore[assignment]


def parse_server(description: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A server endpoint string's plugin arguments and keywords, parsed as
    ``serverFromString`` would."""
    _, args, kwargs = endpoints._parseServer(description, None)
    return tuple(args), kwargs


def handshake_done(protocol: tls.TLSMemoryBIOProtocol) -> bool:
    """Whether ``protocol``'s TLS handshake completed (True if unknown)."""
    return bool(getattr(protocol, "_handshakeDone", True))


def tls_failure_reason(protocol: tls.TLSMemoryBIOProtocol) -> Any:
    """The failure TLS recorded before the connection was lost, if any."""
    return getattr(protocol, "_reason", None)


def keep_connection_header(protocol: HTTP11ClientProtocol) -> Callable[[Any], Any]:
    """A callback for the response to the request ``protocol`` just sent,
    putting back the ``Connection`` header the response had.

    Twisted's client parser keeps ``Connection`` among its connection
    headers, out of ``response.headers``; the relay needs it to drop the
    headers it names (RFC 9110 §7.6.1).
    """
    parser = protocol._parser

    def keep(response: Any) -> Any:
        values = parser.connHeaders.getRawHeaders(b"connection") if parser is not None else None
        if values:
            response.headers.setRawHeaders(b"connection", values)
        return response

    return keep


def accept_one_per_wakeup(port: Any) -> None:
    """Make ``port`` accept one connection each time the reactor finds it readable.

    Twisted's port accepts up to ``numberAccepts`` (100 at first) queued
    connections per wake-up.  Every worker wakes for the shared socket, and
    the first took a whole burst -- a client pool opening 16 keep-alive
    connections kept one worker busy and the other idle.  One at a time,
    the workers take turns, and a busy one, slower back to its poll, takes fewer.
    """
    read = port.doRead

    def doRead() -> Any:
        port.numberAccepts = 1
        return read()

    port.doRead = doRead


def client_gone(request: Request) -> bool:
    """Whether ``request``'s connection is lost."""
    return bool(request._disconnected)


#: Writes from this size up are sent at once when nothing is queued before them.
WRITE_THROUGH = 16 * 1024


def size_transport(transport: Any, size: int) -> None:
    """Have ``transport`` read ``size`` bytes at once, and send as much.

    ``size`` becomes Twisted's ``bufferSize`` (the read size, and the queue
    that pauses the producer) and its ``SEND_LIMIT`` (Twisted's 128 KiB would
    split each 512 KiB read into four sends, each a poll of its own).  A TCP
    connection also gets ``write_through``, once.
    """
    transport.bufferSize = size
    transport.SEND_LIMIT = max(size, FileDescriptor.SEND_LIMIT)
    if isinstance(transport, Connection) and "write" not in vars(transport):
        transport.write = partial(write_through, transport, transport.write)  # type: ignore[method-assign]


def write_through(transport: Connection, queue: Callable[[bytes], None], data: bytes) -> None:
    """Send ``data`` at once if nothing is queued; queue only what the socket did not take.

    Twisted queues every write and sends it when the reactor next polls.  For
    a large transfer that is two ``epoll_ctl`` calls, a poll and a Python
    round trip per chunk, and the chunk held in memory until then: half the
    relay's CPU per GiB (bench/README.md).  Small writes (headers, small
    bodies) are queued as before, so that they still leave together, and so
    is everything while a pull producer is registered: it is asked for more
    only when the queue drains.
    """
    if (len(data) >= WRITE_THROUGH and transport.connected and not transport._tempDataLen
            and transport.offset == len(transport.dataBuffer)
            and (transport.producer is None or transport.streamingProducer)):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):  # else the connection is lost: the queued write finds out
            if sent == len(data):
                return
            data = data[sent:]
    queue(data)
