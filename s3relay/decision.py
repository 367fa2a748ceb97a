# -*- test-case-name: tests.unit.test_exchange -*-
"""What the resource decided for a request it accepted.

``RelayResource`` authenticates, authorizes and re-signs from the headers
alone; the result is one frozen ``Decision`` that its ``Exchange`` takes
whole, so that nothing about a relayed request is set on it from outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.web.iweb import IAgent

from s3relay.body.plan import BodyFilter, BodyPlan
from s3relay.crypt.reader import ObjectRead
from s3relay.s3.addressing import Target
from s3relay.s3.operations import Operation
from s3relay.upstream.forward import UpstreamRequest
from s3relay.upstream.response import Rewrite
from s3relay.upstream.uploads import UploadCheck


class Lookup(Protocol):
    """What the upstream must answer before the request goes there."""

    def lookup(self, agent: IAgent) -> Deferred[Any]:
        """Fires with the upstream request to send instead (or None: the
        decided one), or errbacks with the S3Error that answers the client."""


@dataclass(frozen=True)
class Decision:
    """An accepted request, ready to go upstream."""

    #: The authenticated client's name (``anonymous`` for unsigned requests).
    client: str
    target: Target
    operation: Operation
    #: How the body is read and checked on its way upstream.
    plan: BodyPlan
    body_filter: BodyFilter
    #: The re-signed request for the upstream.
    upstream: UpstreamRequest
    #: Rewrites a 200 response body before the client sees it (held whole, capped).
    rewrite: Rewrite | None
    #: Frees the admission slots the request holds; run once it ends.
    release: Callable[[], None]
    #: Seconds the upstream has to answer once the whole request is sent.
    first_byte_timeout: float
    #: For a body held whole and written anew by the relay (``plan.verify_first``):
    #: the upstream request for the body as it will be sent, replacing ``upstream``.
    resign: Callable[[bytes], UpstreamRequest] | None = None
    #: For a request naming an upload id not yet known to be its key's: the
    #: check the upstream answers first (``upstream.uploads``).
    upload_check: UploadCheck | None = None
    #: For a GET or HEAD of an encrypted object: its answer, decrypted (``crypt.reader``).
    reader: ObjectRead | None = None
    #: Asked of the upstream first: an encrypted object's HEAD, an
    #: encrypted upload's parts (``crypt.partcheck``).
    lookup: Lookup | None = None
    #: The answer's ETag is shown as an encrypted object's (``crypt.etags``).
    shows_etag: bool = False
    #: The upstream the request goes to (``upstream.routes``).
    route: str = "default"
