"""Socket buffer sizes shrink with the number of requests under way (``upstream.BufferBudget``)."""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.web._newclient import Request
from twisted.web.http_headers import Headers

from s3relay.upstream import (
    BUFFER_BUDGET,
    SMALLEST_BUFFER,
    TRANSPORT_BUFFER,
    BufferBudget,
    _QuietFactory,
)

KiB = 1024


def test_few_transfers_get_the_full_size_many_share_the_budget() -> None:
    budget = BufferBudget()
    sizes = {}
    for active in (0, 1, 2, 3, 8, 16, 1000):
        budget.active = active
        sizes[active] = budget.size()
    assert sizes[0] == sizes[1] == sizes[2] == TRANSPORT_BUFFER == 512 * KiB
    assert sizes[3] == BUFFER_BUDGET // 3
    assert sizes[8] == 128 * KiB
    assert sizes[16] == sizes[1000] == SMALLEST_BUFFER == 64 * KiB


class Socket(StringTransport):
    bufferSize = 65536


def test_pooled_upstream_connection_is_sized_for_each_request() -> None:
    budget = BufferBudget()
    protocol = _QuietFactory(lambda protocol: None, "upstream", buffers=budget).buildProtocol(None)
    transport = Socket()
    protocol.makeConnection(transport)
    budget.active = 4
    protocol.request(Request(b"GET", b"/b/k", Headers({b"host": [b"u"]}), None))
    assert transport.bufferSize == 256 * KiB
    tls = StringTransport()  # no bufferSize (a TLS wrapper): left alone
    budget.tune(tls)
    assert not hasattr(tls, "bufferSize")
