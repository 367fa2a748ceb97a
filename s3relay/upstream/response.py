# -*- test-case-name: tests.unit.test_response_relay -*-
"""Upstream response bodies on their way to the client.

Most responses stream (``ResponseRelay``), with the upstream socket as the
client request's producer.  A few small ones must
be rewritten before the client sees a byte, e.g. ListBuckets cut down to a
client's buckets.  ``FilteredRelay`` collects such a body up to a fixed cap,
runs the rewrite, sets the new Content-Length and writes the result.  Too
large a body or a failed rewrite is not a truncated answer: ``done``
errbacks with ``ResponseRefused`` carrying the S3 error for the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from s3relay.s3.errors import S3Error


#: How a response body that ended cleanly ends (PotentialDataLoss: no length
#: was given, the connection's close ended it).
CLEAN_END = (ResponseDone, PotentialDataLoss)


class ResponseRelay(Protocol):
    """Writes an upstream response body to the client as it arrives.

    The upstream transport is registered as the client request's producer,
    so a slow client pauses the upstream socket (DESIGN.md §1.8).
    ``done`` fires when the body ended cleanly and errbacks when the
    upstream died mid-body, so that the caller can abort the client rather
    than let a truncated body look complete.
    """

    def __init__(self, request: Any) -> None:
        self.request = request
        self.done: Deferred[None] = Deferred()
        self.sent = 0

    def connectionMade(self) -> None:
        self.request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.sent += len(data)
        self.request.write(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        # A client gone first took the channel with it: nothing to unregister from.
        if self.request.producer is not None and self.request.channel is not None:
            self.request.unregisterProducer()
        # isinstance, not reason.check: check() names every class of the
        # exception's MRO, each time, about 40 us a response.
        if isinstance(reason.value, CLEAN_END):
            self.done.callback(None)
        else:
            self.done.errback(reason)

    def stop(self) -> None:
        """The client went away: drop the upstream connection."""
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()


@dataclass(frozen=True)
class Rewrite:
    """How to rewrite a successful (200) response body."""

    #: The new body of a whole body; raises S3Error to refuse it.
    body: Callable[[bytes], bytes]
    #: Bytes held at most; a longer body is an InternalError.
    cap: int


class ResponseRefused(Exception):
    """The response could not be rewritten; carries the error the client gets."""

    def __init__(self, error: S3Error) -> None:
        super().__init__(error.code)
        self.error = error


class FilteredRelay(ResponseRelay):
    """Holds a response body (at most ``cap`` bytes), rewrites it, writes the result."""

    def __init__(self, request: Any, rewrite: Rewrite) -> None:
        super().__init__(request)
        self._rewrite = rewrite.body
        self._cap = rewrite.cap
        self._parts: list[bytes] = []
        self._size = 0
        self._refused: S3Error | None = None

    def connectionMade(self) -> None:
        """No producer registration: nothing is written until the body is whole."""

    def dataReceived(self, data: bytes) -> None:
        if self._refused is not None:
            return
        self._size += len(data)
        if self._size > self._cap:
            self._parts = []
            self._refused = S3Error(
                "InternalError",
                "We encountered an internal error. Please try again.",
                500,
                f"upstream response over the {self._cap}-byte rewrite cap",
            )
            cast(IPushProducer, self.transport).stopProducing()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if self._refused is not None:
            self.done.errback(ResponseRefused(self._refused))
            return
        if not isinstance(reason.value, CLEAN_END):
            self.done.errback(reason)
            return
        encoding = self.request.responseHeaders.getRawHeaders(b"content-encoding") or []
        try:
            if any(value.strip().lower() not in (b"", b"identity") for value in encoding):
                raise S3Error(
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                    500,
                    "upstream response to rewrite has a content-encoding",
                )
            body = self._rewrite(b"".join(self._parts))
        except S3Error as e:
            self.done.errback(ResponseRefused(e))
            return
        finally:
            self._parts = []
        self.request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
        self.sent = len(body)
        if body:
            self.request.write(body)
        self.done.callback(None)
