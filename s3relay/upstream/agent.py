# -*- test-case-name: tests.unit.test_buffers -*-
"""The upstream Agent: pooled connections, their endpoints, and the buffer budget they share."""

from __future__ import annotations

import collections
import ctypes
from functools import partial
from typing import Any, Callable

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    HTTPConnectionPool,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory
from zope.interface import implementer

from s3relay.compat import (
    HTTP11ClientFactory,
    HTTP11ClientProtocol,
    keep_connection_header,
    size_transport,
    use_client_factory,
)
from s3relay.http.headers import wire_name
from s3relay.upstream.settings import UpstreamConfig
from s3relay.upstream.tls import UpstreamTLS

#: Seconds an idle pooled connection is kept; below S3's own idle cut-off so
#: that the relay, not the server, closes it.
POOL_IDLE_SECONDS = 15
CONNECT_TIMEOUT = 10
#: Upstream origins whose endpoints are kept (virtual-host style: one per bucket).
MAX_ORIGINS = 256


#: Bytes a socket reads at once and buffers before pausing its producer
#: (Twisted's ``bufferSize``), for one transfer alone.  Twisted's 64 KiB
#: default makes a large transfer pause and resume a socket for every read;
#: this quarters the syscalls and the Python work per byte.
TRANSPORT_BUFFER = 512 * 1024
#: What requests under way share; past 4 at once each gets less, down to 64 KiB.
BUFFER_BUDGET = 2 * 1024 * 1024
SMALLEST_BUFFER = 64 * 1024
#: Body bytes moved, after which the heap is trimmed once nothing is under way.
TRIM_AFTER = 8 * 1024 * 1024


def libc_malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None under a C library without it (musl)."""
    try:
        return partial(ctypes.CDLL("libc.so.6").malloc_trim, 0)
    except (OSError, AttributeError):
        return None


class BufferBudget:
    """Socket buffer sizes that shrink as more requests run at once.

    A transfer holds up to about two buffers (a read and a write backlog):
    512 KiB each for 32 parallel transfers added 30 MiB to a ~56 MiB process
    (boto3, 8 threads x 4 multipart transfers: peak RSS 88-99 MiB; with the
    budget 63 MiB).  The sockets of the requests under way (client side
    from the start, upstream side while the request is out) are all resized
    when their number changes: the sum stays a small multiple of
    ``BUFFER_BUDGET`` whatever the concurrency and whatever the order the
    transfers came in, while up to four transfers keep the full size
    (bench/README.md).  Sent at once (``writethrough``), a chunk is rarely
    held at all while the peer keeps up; the budget is for peers that do not.

    Freed buffers stay in the C heap, so after large transfers the process
    would keep ~5-8 MiB it no longer uses; ``trim`` (glibc's ``malloc_trim``)
    hands them back once nothing is under way and ``TRIM_AFTER`` bytes moved.
    """

    def __init__(self, budget: int = BUFFER_BUDGET,
                 trim: Callable[[], object] | None = None) -> None:
        self._budget = budget
        self._trim = trim
        self._moved = 0
        #: Requests under way (``Exchange``).
        self.active = 0
        #: TCP transports of requests under way (a pipelining client's may count twice).
        self._in_use: collections.Counter[Any] = collections.Counter()
        self._size = self.size()

    def size(self) -> int:
        share = self._budget // max(self.active, 1)
        return max(SMALLEST_BUFFER, min(TRANSPORT_BUFFER, share))

    def start(self, transport: Any) -> None:
        """A request starts on the client's ``transport``."""
        self.active += 1
        self._resize()
        self.acquire(transport)

    def end(self, transport: Any, moved: int) -> None:
        """The request on ``transport`` ended after ``moved`` body bytes (both ways)."""
        self.release(transport)
        self.active -= 1
        self._resize()
        self._moved += moved
        if self.active == 0 and self._moved >= TRIM_AFTER and self._trim is not None:
            self._moved = 0
            self._trim()

    def acquire(self, transport: Any) -> None:
        """``transport`` carries a request under way: the current size, and each change of it.

        A TLS wrapper has no ``bufferSize``: left alone, and its TCP socket keeps
        Twisted's size and queue (Twisted hands it one 16 KiB record at a time,
        which sent at once would only multiply the ``send`` calls).
        """
        if hasattr(transport, "bufferSize"):
            size_transport(transport, self._size)
            self._in_use[transport] += 1

    def release(self, transport: Any) -> None:
        count = self._in_use[transport]
        if count > 1:
            self._in_use[transport] = count - 1
        else:
            self._in_use.pop(transport, None)

    def _resize(self) -> None:
        # Only while fewer than BUFFER_BUDGET // SMALLEST_BUFFER (32) are under
        # way does the size change, so this loop stays short.
        size = self.size()
        if size != self._size:
            self._size = size
            for transport in self._in_use:
                size_transport(transport, size)


class UpstreamProtocol(HTTP11ClientProtocol):
    """An upstream connection: in the buffer budget while a request is out on
    it, and its responses keep their ``Connection`` header (so that the
    headers it names are dropped)."""

    def __init__(self, quiescentCallback: Any, buffers: BufferBudget) -> None:
        super().__init__(self._quiescent)
        self._back_to_pool = quiescentCallback
        self._buffers = buffers
        self._out = False

    def request(self, request: Any) -> Any:
        if not self._out:  # one count per connection while a request is out on it
            self._buffers.acquire(self.transport)
            self._out = True
        return super().request(request).addCallback(keep_connection_header(self))

    def _quiescent(self, protocol: HTTP11ClientProtocol) -> None:
        self._release()
        self._back_to_pool(protocol)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._release()
        super().connectionLost(reason)

    def _release(self) -> None:
        if self._out:
            self._out = False
            self._buffers.release(self.transport)


class _QuietFactory(HTTP11ClientFactory):
    """Builds tuned connections; one upstream connection is not worth two log lines."""

    noisy = False

    def __init__(self, quiescentCallback: Any, metadata: Any, buffers: BufferBudget) -> None:
        super().__init__(quiescentCallback, metadata)
        self._buffers = buffers

    def buildProtocol(self, addr: Any) -> HTTP11ClientProtocol:
        return UpstreamProtocol(self._quiescentCallback, self._buffers)


@implementer(IAgentEndpointFactory)
class UpstreamEndpoints:
    """One endpoint per upstream origin, built at its first request.

    Twisted's standard factory builds a new endpoint for every request, and
    for https a new TLS context too (~60 us of CPU, a tenth of a small
    request's); an endpoint can connect any number of times.
    """

    def __init__(self, reactor: Any, tls: UpstreamTLS, connect_timeout: float) -> None:
        self._reactor = reactor
        self._tls = tls
        self._timeout = connect_timeout
        self._built: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._built.get(key)
        if endpoint is None:
            if uri.scheme not in (b"http", b"https"):
                raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
            endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, timeout=self._timeout)
            if uri.scheme == b"https":
                endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
            if len(self._built) >= MAX_ORIGINS:
                self._built.clear()
            self._built[key] = endpoint
        return endpoint


def make_agent(
    reactor: IReactorTime,
    upstream: UpstreamConfig,
    connect_timeout: float = CONNECT_TIMEOUT,
    buffers: BufferBudget | None = None,
) -> IAgent:
    """An Agent with a keep-alive pool sized for ``upstream``; connecting
    gives up after ``connect_timeout`` seconds ([server] connect_timeout);
    upstream sockets take their buffer size from ``buffers``."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    use_client_factory(pool, partial(_QuietFactory, buffers=buffers or BufferBudget()))
    pool.maxPersistentPerHost = upstream.max_connections
    pool.cachedConnectionTimeout = POOL_IDLE_SECONDS
    # The Exchange retries a request whose connection died unanswered (retry.py),
    # PUTs included; Twisted's own retry on top would make it twice.
    pool.retryAutomatically = False
    endpoints = UpstreamEndpoints(reactor, UpstreamTLS(upstream.ca_pem, upstream.insecure),
                                  connect_timeout)
    return Agent.usingEndpointFactory(reactor, endpoints, pool=pool)


class WireHeaders(Headers):
    """Upstream request headers, names as ``wire_name`` spells them (Twisted
    would title-case ``x-amz-*`` names)."""

    def getAllRawHeaders(self) -> Any:
        for name, values in super().getAllRawHeaders():
            yield wire_name(name), values
