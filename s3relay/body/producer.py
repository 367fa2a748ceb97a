# -*- test-case-name: tests.unit.test_body -*-
"""The client's request body as the upstream request's body producer.

Bytes go from the client socket through a ``BodyFilter`` (which verifies
and may re-frame them) straight to the upstream socket.  Until the Agent
starts the producer (the upstream connection is not there yet) a little is
buffered, then the client is paused; after that the upstream's pause and
resume map onto the client socket, so memory stays flat whatever the size.
The latest piece is held back until the next one arrives, and the last one
until the filter's final check passes: a body that fails verification
reaches the upstream short, and the upstream stores nothing.  (Holding a
whole piece rather than one byte costs no copy.)
"""

from __future__ import annotations

from typing import Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from s3relay.body.plan import BodyFilter
from s3relay.s3.errors import S3Error

#: Bytes buffered before the upstream connection is ready.
HIGH_WATER = 256 * 1024


class BodySource(Protocol):
    """The client side: what to pause when the upstream cannot keep up."""

    def pauseBody(self) -> None: ...

    def resumeBody(self) -> None: ...


class BodyRejected(Exception):
    """The client's body failed verification; carries the S3 error."""

    def __init__(self, error: S3Error) -> None:
        super().__init__(error.code)
        self.error = error


@implementer(IBodyProducer)
class StreamingBody:
    """Feeds a verified client body to the Agent, with backpressure both ways."""

    def __init__(
        self,
        length: int,
        body_filter: BodyFilter,
        source: BodySource,
        on_rejected: Callable[[S3Error], None],
        high_water: int = HIGH_WATER,
        verify_first: bool = False,
    ) -> None:
        self.length = length
        self._filter = body_filter
        self._source = source
        self._on_rejected = on_rejected
        self._high_water = high_water
        self._buffer: list[bytes] = []
        self._buffered = 0
        #: The latest output piece: sent when the next arrives, or once the body verified.
        self._held = b""
        self._consumer: IConsumer | None = None
        self._finished: Deferred[None] | None = None
        self._complete = False
        self._stopped = False
        #: Why the client went away, once it did.
        self._lost: Failure | None = None
        #: Why the body was refused, once it was.
        self.error: S3Error | None = None
        #: Client body bytes taken in so far.
        self.received = 0
        #: Body bytes handed to the upstream connection so far: while none
        #: were, a failed attempt can be retried on a new connection (``rewind``).
        self.sent = 0
        #: The producer the current upstream attempt was given (``attempt``).
        self._attempt: BodyAttempt | None = None
        #: With ``verify_first``: fires with the whole upstream body once it
        #: passed the filter's final check, before which the caller does not
        #: start the upstream request (the filter holds the body; it must be
        #: small).  ``length`` is then that body's.
        self.verified: Deferred[bytes] | None = Deferred() if verify_first else None
        #: The filter's final output, when it was checked before startProducing.
        self._tail: bytes | None = None

    # The client side (fed by RelayRequest).

    def dataReceived(self, data: bytes) -> None:
        if self._stopped or self.error is not None:
            return
        self.received += len(data)
        try:
            out = self._filter.feed(data)
        except S3Error as e:
            self._reject(e)
            return
        if out:
            out, self._held = self._held, out
            self._send(out)

    def bodyComplete(self) -> None:
        self._complete = True
        if self.verified is not None and self._consumer is None and self.error is None:
            try:
                self._tail = self._filter.finish()
            except S3Error as e:
                self._reject(e)
                return
            # The caller now starts the upstream request; startProducing sends
            # the body, complete as it is -- maybe before this returns, on a
            # pooled connection, so it must not be sent here as well.
            body = b"".join(self._buffer) + self._held + self._tail
            self.length = len(body)
            self.verified.callback(body)
            return
        if self._consumer is not None:
            self._end()

    def clientLost(self, reason: Failure) -> None:
        """The client went away: abort the upstream request."""
        self._stopped = True
        self._lost = reason
        finished, self._finished = self._finished, None
        if finished is not None:
            finished.errback(reason)

    # IBodyProducer (driven by the Agent).

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        finished: Deferred[None] = Deferred()
        self._finished = finished
        if self.error is not None:
            self._finished = None
            finished.errback(BodyRejected(self.error))
            return finished
        if self._lost is not None:
            self._finished = None
            finished.errback(self._lost)
            return finished
        buffered, self._buffer, self._buffered = b"".join(self._buffer), [], 0
        if buffered:
            self.sent += len(buffered)
            consumer.write(buffered)
        if self._complete:
            self._end()
        else:
            self._source.resumeBody()
        return finished

    def pauseProducing(self) -> None:
        self._source.pauseBody()

    def resumeProducing(self) -> None:
        if not self._stopped:
            self._source.resumeBody()

    def stopProducing(self) -> None:
        # The upstream request is gone; the Deferred must never fire now.
        self._stopped = True
        self._finished = None

    # Retrying a dead upstream connection (the pooled-connection race).

    def attempt(self) -> BodyAttempt:
        """The producer to give one upstream attempt; a new one disowns the last."""
        if self._attempt is not None:
            self._attempt.live = False
        self._attempt = BodyAttempt(self)
        return self._attempt

    def rewind(self) -> bool:
        """Make the body startable again for a new attempt, if that is still possible.

        Only while no byte left for the upstream (nothing consumed from the
        client is lost), the body was not refused and the client is still
        there.  Bytes that arrive meanwhile are buffered (and the client
        paused at the high-water mark) until the next ``startProducing``.
        A complete body that an attempt already started on is not rewound
        either: its filter's final check ran (and may not run twice).
        """
        if self.sent or self.error is not None or self._lost is not None:
            return False
        if self._complete and self._consumer is not None:
            return False
        self._consumer = None
        self._finished = None
        self._stopped = False
        return True

    def _send(self, data: bytes) -> None:
        if not data:
            return
        if self._consumer is None:
            self._buffer.append(data)
            self._buffered += len(data)
            if self._buffered >= self._high_water:
                self._source.pauseBody()
        else:
            self.sent += len(data)
            self._consumer.write(data)

    def _end(self) -> None:
        if self._stopped or self.error is not None:
            return
        try:
            tail = self._tail if self._tail is not None else self._filter.finish()
        except S3Error as e:
            self._reject(e)
            return
        held, self._held = self._held, b""
        self._send(held)
        self._send(tail)
        finished, self._finished = self._finished, None
        if finished is not None:
            finished.callback(None)

    def _reject(self, error: S3Error) -> None:
        self.error = error
        self._buffer, self._held = [], b""
        finished, self._finished = self._finished, None
        if finished is not None:
            finished.errback(BodyRejected(error))
        self._on_rejected(error)


@implementer(IBodyProducer)
class BodyAttempt:
    """One upstream attempt's handle on a ``StreamingBody``.

    Twisted stops a failed request's producer after reporting the failure
    (``Request.stopWriting``), by which time a retry may already run: each
    attempt gets its own handle, and a disowned one passes nothing on.
    """

    def __init__(self, body: StreamingBody) -> None:
        self.body = body
        self.length = body.length
        #: False once a newer attempt took over.
        self.live = True

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        return self.body.startProducing(consumer)

    def pauseProducing(self) -> None:
        if self.live:
            self.body.pauseProducing()

    def resumeProducing(self) -> None:
        if self.live:
            self.body.resumeProducing()

    def stopProducing(self) -> None:
        if self.live:
            self.body.stopProducing()
