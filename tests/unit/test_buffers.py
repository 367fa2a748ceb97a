"""Socket buffer sizes shrink with the number of requests under way (``upstream.BufferBudget``)."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web._newclient import Request
from twisted.web.http_headers import Headers

from s3relay.upstream.agent import (
    BUFFER_BUDGET,
    SMALLEST_BUFFER,
    TRANSPORT_BUFFER,
    TRIM_AFTER,
    BufferBudget,
    _QuietFactory,
    libc_malloc_trim,
)

KiB = 1024


def test_few_transfers_get_the_full_size_many_share_the_budget() -> None:
    budget = BufferBudget()
    sizes = {}
    for active in (0, 1, 4, 5, 8, 32, 1000):
        budget.active = active
        sizes[active] = budget.size()
    assert sizes[0] == sizes[1] == sizes[4] == TRANSPORT_BUFFER == 512 * KiB
    assert sizes[5] == BUFFER_BUDGET // 5
    assert sizes[8] == 256 * KiB
    assert sizes[32] == sizes[1000] == SMALLEST_BUFFER == 64 * KiB


class Socket(StringTransport):
    bufferSize = 65536


def test_transfers_under_way_shrink_as_more_start_and_grow_as_they_end() -> None:
    """The first transfers do not keep 512 KiB once others join (16 at once: 128 KiB each)."""
    budget = BufferBudget()
    clients = [Socket() for _ in range(16)]
    for client in clients[:2]:
        budget.start(client)
    assert [c.bufferSize for c in clients[:2]] == [512 * KiB] * 2
    for client in clients[2:]:
        budget.start(client)
    assert {c.bufferSize for c in clients} == {128 * KiB}
    for client in clients[2:]:
        budget.end(client, 0)
    assert [c.bufferSize for c in clients[:2]] == [512 * KiB] * 2
    assert budget.active == 2


def test_idle_keep_alive_connection_is_not_resized() -> None:
    budget = BufferBudget()
    idle = Socket()
    budget.start(idle)
    budget.end(idle, 0)
    for _ in range(8):
        budget.start(Socket())
    assert idle.bufferSize == 512 * KiB  # sized when its next request starts


def test_pipelined_requests_on_one_connection_count_twice() -> None:
    budget = BufferBudget()
    client = Socket()
    budget.start(client)
    budget.start(client)
    budget.end(client, 0)
    for _ in range(6):
        budget.start(Socket())
    assert client.bufferSize == BUFFER_BUDGET // 7  # still under way, still resized


def upstream_connection(budget: BufferBudget, back_to_pool: list[object]) -> tuple[object, Socket]:
    protocol = _QuietFactory(back_to_pool.append, "upstream", buffers=budget).buildProtocol(None)
    transport = Socket()
    protocol.makeConnection(transport)
    return protocol, transport


def get() -> Request:
    return Request(b"GET", b"/b/k", Headers({b"host": [b"u"]}), None, persistent=True)


def test_upstream_connection_is_in_the_budget_while_its_request_is_out() -> None:
    budget = BufferBudget()
    pooled: list[object] = []
    protocol, transport = upstream_connection(budget, pooled)
    for _ in range(8):
        budget.start(Socket())
    protocol.request(get())  # type: ignore[attr-defined]
    assert transport.bufferSize == 256 * KiB
    budget.start(Socket())
    assert transport.bufferSize == BUFFER_BUDGET // 9
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # type: ignore[attr-defined]
    assert pooled == [protocol]  # back in the pool: out of the budget
    budget.start(Socket())
    assert transport.bufferSize == BUFFER_BUDGET // 9


def test_upstream_connection_lost_mid_request_leaves_the_budget() -> None:
    budget = BufferBudget()
    protocol, transport = upstream_connection(budget, [])
    protocol.request(get()).addErrback(lambda failure: None)  # type: ignore[attr-defined]
    protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
    for _ in range(8):
        budget.start(Socket())
    assert transport.bufferSize == 512 * KiB


def test_tls_wrapper_is_left_alone() -> None:
    budget = BufferBudget()
    tls = StringTransport()  # no bufferSize (a TLS wrapper): its TCP socket keeps Twisted's
    budget.start(tls)
    budget.start(Socket())
    budget.start(Socket())
    assert not hasattr(tls, "bufferSize")
    budget.end(tls, 0)
    assert budget.active == 2


def test_heap_trimmed_once_large_transfers_are_over() -> None:
    """After large transfers glibc would keep the freed buffers; small requests never trim."""
    trims: list[None] = []
    budget = BufferBudget(trim=lambda: trims.append(None))
    for _ in range(1000):  # a client of small objects, one at a time
        client = Socket()
        budget.start(client)
        budget.end(client, 4096)
    assert len(trims) == 0
    first, second = Socket(), Socket()
    budget.start(first)
    budget.start(second)
    budget.end(first, TRIM_AFTER)
    assert trims == []  # the second is still under way
    budget.end(second, 0)
    assert len(trims) == 1
    budget.start(first)
    budget.end(first, 0)
    assert len(trims) == 1


def test_malloc_trim_is_found_here() -> None:
    trim = libc_malloc_trim()
    assert trim is not None  # glibc (Debian)
    trim()
