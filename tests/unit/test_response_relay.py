"""``upstream.ResponseRelay``: an upstream response body on its way to the client."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.test.requesthelper import DummyChannel

from s3relay.upstream.response import ResponseRelay


def test_upstream_ending_after_the_client_left_is_quiet() -> None:
    """The client went first (its channel is gone): the upstream's end must not raise.

    It raised AttributeError from ``unregisterProducer``, which Twisted logged
    as a critical traceback for every download a client gave up on, and
    ``done`` never fired.
    """
    request = Request(DummyChannel())
    relay = ResponseRelay(request)
    relay.makeConnection(StringTransport())
    assert request.producer is relay.transport
    request.connectionLost(Failure(ConnectionDone()))
    assert request.channel is None
    relay.connectionLost(Failure(ConnectionDone()))
    failures: list[Failure] = []
    relay.done.addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(ConnectionDone)
