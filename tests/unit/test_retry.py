"""Retrying an upstream attempt whose connection died unanswered (s3relay.upstream.retry).

The rules are checked on their own, then against Twisted's real HTTP client
protocol over in-memory transports: the order in which Twisted reports the
failure and stops the producer is what makes a replay safe or not.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.error import (
    ConnectError,
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
)
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web._newclient import (
    HTTP11ClientProtocol,
    Request,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface.verify import verifyObject

from s3relay.body.producer import StreamingBody
from s3relay.s3.errors import S3Error
from s3relay.upstream.retry import died_before_response, may_retry
from tests.unit.test_body import BAD, Consumer, Filter, Source


def wrapped(kind: type[Exception], *reasons: BaseException) -> Failure:
    return Failure(kind([Failure(r) for r in reasons]))


def make_body(length: int = 10, **options: Any) -> tuple[StreamingBody, Source, list[S3Error]]:
    source, rejected = Source(), list[S3Error]()
    body = StreamingBody(length, Filter(**options), source, rejected.append, high_water=4)
    return body, source, rejected


# -- the rules ----------------------------------------------------------------


@pytest.mark.parametrize("failure", [
    Failure(RequestNotSent()),
    wrapped(RequestTransmissionFailed, ConnectionDone()),
    wrapped(RequestTransmissionFailed, ConnectionLost()),
    wrapped(ResponseNeverReceived, ConnectionDone()),
])
def test_connection_died_before_response(failure: Failure) -> None:
    assert died_before_response(failure)


@pytest.mark.parametrize("failure", [
    wrapped(ResponseNeverReceived, CancelledError()),  # the relay cancelled (client gone)
    wrapped(ResponseNeverReceived, ConnectionAborted()),  # the relay aborted (a timeout)
    wrapped(RequestTransmissionFailed, CancelledError()),
    wrapped(ResponseFailed, ConnectionLost()),  # response bytes had arrived
    Failure(ConnectError()),  # never connected: not a stale connection
    Failure(CancelledError()),
])
def test_other_failures_are_not_retried(failure: Failure) -> None:
    assert not died_before_response(failure)
    assert not may_retry("GET", failure, None)


def test_bodyless_requests_retry_only_idempotent_methods() -> None:
    stale = wrapped(ResponseNeverReceived, ConnectionDone())
    for method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS"):
        assert may_retry(method, stale, None)
    # A body-less POST (CreateMultipartUpload) may have been acted on.
    assert not may_retry("POST", stale, None)


def test_a_body_is_retried_only_while_no_byte_was_sent() -> None:
    stale = wrapped(RequestTransmissionFailed, ConnectionDone())
    body, _, _ = make_body()
    body.startProducing(Consumer())
    assert may_retry("POST", stale, body)  # the upstream has none of the body
    body.attempt()
    consumer = Consumer()
    body.startProducing(consumer)
    body.dataReceived(b"abc")
    body.dataReceived(b"def")  # releases the held "abc"
    assert consumer.data == b"abc" and body.sent == 3
    assert not may_retry("PUT", stale, body)


def test_a_refused_or_abandoned_body_is_not_retried() -> None:
    stale = wrapped(RequestTransmissionFailed, ConnectionDone())
    body, _, rejected = make_body(fail_feed_at=1)
    body.startProducing(Consumer()).addErrback(lambda _: None)
    body.dataReceived(b"x")
    assert rejected == [BAD]
    assert not may_retry("PUT", stale, body)

    body, _, _ = make_body()
    body.startProducing(Consumer()).addErrback(lambda _: None)
    body.clientLost(Failure(ConnectionLost()))
    assert not may_retry("PUT", stale, body)


def test_a_finished_body_is_not_rewound() -> None:
    # All client bytes were framing (an empty aws-chunked payload): nothing was
    # sent, but the filter's final check ran and must not run twice.
    stale = wrapped(ResponseNeverReceived, ConnectionDone())
    body, _, _ = make_body(length=0)
    body.startProducing(Consumer())
    body.bodyComplete()
    assert body.sent == 0
    assert not may_retry("PUT", stale, body)


# -- attempts ----------------------------------------------------------------


def test_a_disowned_attempt_passes_nothing_on() -> None:
    body, source, _ = make_body()
    first = body.attempt()
    verifyObject(IBodyProducer, first)
    assert first.length == 10
    first.startProducing(Consumer())
    second = body.attempt()
    assert (first.live, second.live) == (False, True)
    source.calls.clear()
    first.pauseProducing()
    first.resumeProducing()
    first.stopProducing()
    assert source.calls == []
    second.pauseProducing()
    assert source.calls == ["pause"]


def test_rewound_body_buffers_until_the_next_attempt_starts() -> None:
    body, source, _ = make_body()
    first = body.attempt()
    first.startProducing(Consumer())
    first.stopProducing()  # the dead transport stops its producer first
    assert body.rewind()
    second = body.attempt()
    body.dataReceived(b"01234")  # above high water: the client is paused
    body.dataReceived(b"56789")
    assert source.calls[-1] == "pause"
    body.bodyComplete()
    consumer = Consumer()
    results: list[Any] = []
    second.startProducing(consumer).addBoth(results.append)
    assert consumer.data == b"0123456789" and results == [None]
    assert body.sent == 10


# -- against Twisted's client protocol ------------------------------------------


def connect() -> tuple[HTTP11ClientProtocol, StringTransport]:
    protocol = HTTP11ClientProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def put(protocol: HTTP11ClientProtocol, producer: Any) -> Any:
    headers = Headers({b"host": [b"upstream"]})
    return protocol.request(Request(b"PUT", b"/bucket/key", headers, producer, persistent=True))


def test_replay_after_twisted_reports_a_dead_connection() -> None:
    body, _, _ = make_body()
    stale, stale_transport = connect()
    fresh, fresh_transport = connect()
    outcomes: list[Any] = []

    def failed(failure: Failure) -> Any:
        outcomes.append(failure)
        assert may_retry("PUT", failure, body)
        return put(fresh, body.attempt())

    put(stale, body.attempt()).addCallbacks(outcomes.append, failed).addCallback(
        outcomes.append)
    assert stale_transport.value().startswith(b"PUT /bucket/key HTTP/1.1\r\n")
    assert stale_transport.producer is not None
    # What a TCP transport does when the peer closed: stop the registered
    # producer, then tell the protocol; Twisted then stops it once more.
    stale_transport.producer.stopProducing()
    stale.connectionLost(Failure(ConnectionDone()))
    assert len(outcomes) == 1 and outcomes[0].check(RequestTransmissionFailed)

    body.dataReceived(b"01234")
    body.dataReceived(b"56789")
    body.bodyComplete()
    sent = fresh_transport.value()
    assert sent.startswith(b"PUT /bucket/key HTTP/1.1\r\n")
    assert b"Content-Length: 10\r\n" in sent and sent.endswith(b"\r\n\r\n0123456789")
    fresh.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert len(outcomes) == 2 and outcomes[1].code == 200


def test_no_replay_once_body_bytes_went_out() -> None:
    body, _, _ = make_body()
    stale, stale_transport = connect()
    outcomes: list[Any] = []
    put(stale, body.attempt()).addBoth(outcomes.append)
    body.dataReceived(b"01234")
    body.dataReceived(b"5")
    assert stale_transport.value().endswith(b"01234")
    assert stale_transport.producer is not None
    stale_transport.producer.stopProducing()
    stale.connectionLost(Failure(ConnectionDone()))
    assert outcomes[0].check(RequestTransmissionFailed)
    assert not may_retry("PUT", outcomes[0], body)
