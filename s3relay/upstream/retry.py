# -*- test-case-name: tests.unit.test_retry -*-
"""When a failed upstream attempt may be sent again, once, on a new connection.

A pooled keep-alive connection can be closed by the upstream (its idle
timeout) just as the relay reuses it: the request dies before any response
byte.  Twisted's pool retries that only for body-less GET/HEAD/OPTIONS/
DELETE/TRACE; a PUT (with or without a body) would reach the client as a
502 although the upstream never saw it complete.  The relay retries it
itself, under these rules:

- the failure says the connection died before a response (``RequestNotSent``,
  ``RequestTransmissionFailed``, ``ResponseNeverReceived``), not that the
  relay cancelled or aborted it (timeouts, a client that went away);
- no body byte left the relay (the producer can replay nothing it consumed);
- the method is idempotent, or the request has a body of which the upstream
  got nothing (so the upstream cannot have acted on it);
- once: the caller forgets the request after the first retry.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionAborted, TimeoutError
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived

from s3relay.body.producer import StreamingBody
from s3relay.compat import RequestAborted, RequestNotSent

#: RFC 9110 §9.2.2 idempotent methods S3 uses.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

_DIED_BEFORE_RESPONSE = (RequestNotSent, RequestTransmissionFailed, ResponseNeverReceived)
#: Reasons that mean the relay itself ended the attempt: never retried.
_ENDED_BY_US = (CancelledError, ConnectionAborted, RequestAborted, TimeoutError)


def died_before_response(failure: Failure) -> bool:
    """Whether the upstream connection died before any response byte, by no act of ours."""
    if not failure.check(*_DIED_BEFORE_RESPONSE):
        return False
    reasons = getattr(failure.value, "reasons", None) or []
    return not any(isinstance(r, Failure) and r.check(*_ENDED_BY_US) for r in reasons)


def may_retry(method: str, failure: Failure, body: StreamingBody | None) -> bool:
    """Whether an attempt that failed with ``failure`` may be sent again.

    ``body`` is rewound when the answer is yes (which is why this is not a
    pure question): call it once per failed attempt.
    """
    if not died_before_response(failure):
        return False
    if body is None:
        return method.upper() in IDEMPOTENT
    return body.rewind()
