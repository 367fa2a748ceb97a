# -*- test-case-name: tests.unit.test_uploads -*-
"""Asking the upstream whether an upload id belongs to a key (``s3.uploads``).

``UploadCheck`` reads ListMultipartUploads pages for the key through the
relay's Agent before the request that uses the id goes upstream; the
exchange waits for it (with the client's body held back, and no
``100 Continue`` sent) and refuses the request with 404 NoSuchUpload when
the id is not listed under the key.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgent, IResponse

from s3relay.s3.errors import Kind, S3Error
from s3relay.s3.uploads import (
    ENDING_OPERATIONS,
    MAX_PAGES,
    Binding,
    UploadBindings,
    no_such_upload,
    read_listing,
)
from s3relay.upstream.agent import WireHeaders
from s3relay.upstream.forward import UpstreamRequest

#: Largest listing page read (1000 uploads of long keys fit well within it).
MAX_LISTING_BYTES = 4 * 1024 * 1024

#: Signs the listing request for a page: (key-marker, upload-id-marker) or None.
SignListing = Callable[[tuple[str, str] | None], UpstreamRequest]


class UploadCheck:
    """One request's check that its upload id is the upstream's for its key."""

    def __init__(self, bindings: UploadBindings, binding: Binding, sign: SignListing) -> None:
        self._bindings = bindings
        self.binding = binding
        self._sign = sign
        self._current: Deferred[Any] | None = None

    def needed(self) -> bool:
        """Whether the upstream must be asked (the binding is not known yet)."""
        return not self._bindings.known(self.binding)

    def run(self, agent: IAgent) -> Deferred[None]:
        """Fires once the upstream listed the id under the key; errbacks with
        an S3Error otherwise.  Cancelling it cancels the request under way."""
        done: Deferred[None] = Deferred(lambda _: self._cancel())
        self._page(agent, None, 1, done)
        return done

    def ended(self, operation: str, status: int) -> None:
        """The request using the id got ``status``: a completed or aborted upload is gone."""
        if operation in ENDING_OPERATIONS and 200 <= status < 300:
            self._bindings.forget(self.binding)

    def _cancel(self) -> None:
        current, self._current = self._current, None
        if current is not None:
            current.cancel()

    def _page(self, agent: IAgent, markers: tuple[str, str] | None, page: int,
              done: Deferred[None]) -> None:
        request = self._sign(markers)
        headers = WireHeaders(request.wire_headers())
        response = agent.request(b"GET", request.url.encode("ascii"), headers, None)
        body = response.addCallback(self._read)
        self._current = body

        def checked(body: bytes) -> None:
            self._current = None
            listing = read_listing(body, self.binding)
            if listing.found:
                self._bindings.learn(self.binding)
                done.callback(None)
            elif listing.more is not None and page < MAX_PAGES:
                self._page(agent, listing.more, page + 1, done)
            else:
                done.errback(no_such_upload(self.binding, "not listed under this key upstream"))

        def failed(failure: Failure) -> None:
            self._current = None
            if not done.called:
                done.errback(failure)

        body.addCallback(checked).addErrback(failed)

    def _read(self, response: IResponse) -> Deferred[bytes]:
        collected: Deferred[bytes] = Deferred()
        response.deliverBody(_Collect(collected, response.code, self.binding))
        return collected


class _Collect(Protocol):
    """Reads a listing page whole, up to ``MAX_LISTING_BYTES``."""

    def __init__(self, done: Deferred[bytes], status: int, binding: Binding) -> None:
        self._done = done
        self._status = status
        self._binding = binding
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_LISTING_BYTES:
            self.transport.stopProducing()  # type: ignore[union-attr]
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._done.called:
            return
        if self._status == 404:  # no such bucket: no such upload either
            self._done.errback(no_such_upload(self._binding, "the upstream has no such bucket"))
        elif self._status != 200 or self._size > MAX_LISTING_BYTES:
            self._done.errback(S3Error(
                "InternalError",
                "The upstream S3 service failed to answer; please retry.",
                502,
                f"checking an upload id: upstream answered {self._status} "
                f"({self._size} bytes) to ListMultipartUploads",
                kind=Kind.UPSTREAM,
            ))
        elif not reason.check(ResponseDone, PotentialDataLoss):
            self._done.errback(reason)
        else:
            self._done.callback(b"".join(self._parts))
