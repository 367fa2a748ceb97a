# -*- test-case-name: tests.unit.test_crypt_uploads -*-
"""Before an encrypted CompleteMultipartUpload: the uploaded parts, listed
by the upstream, must make one object (``uploads.check_parts``)."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import readBody
from twisted.web.iweb import IAgent, IResponse

from s3relay.crypt.uploads import MAX_PARTS, check_parts, read_parts_page
from s3relay.s3.errors import Kind, S3Error
from s3relay.upstream.agent import WireHeaders
from s3relay.upstream.forward import UpstreamRequest

#: Signs the ListParts request for a page: its part-number-marker, or None.
SignPage = Callable[[str | None], UpstreamRequest]

#: ListParts pages read at most (1000 parts each).
MAX_PAGES = MAX_PARTS // 1000 + 1


class PartsCheck:
    """The upstream's list of an upload's parts, checked before it completes."""

    def __init__(self, sign_page: SignPage) -> None:
        self._sign_page = sign_page
        self._parts: list[tuple[int, int]] = []
        self._current: Deferred[Any] | None = None

    def lookup(self, agent: IAgent) -> Deferred[None]:
        """Fires once the parts passed; errbacks with an S3Error otherwise."""
        done: Deferred[None] = Deferred(lambda _: self._cancel())
        self._page(agent, None, 1, done)
        return done

    def _cancel(self) -> None:
        current, self._current = self._current, None
        if current is not None:
            current.cancel()

    def _page(self, agent: IAgent, marker: str | None, page: int, done: Deferred[None]) -> None:
        request = self._sign_page(marker)
        answer = agent.request(b"GET", request.url.encode("ascii"),
                               WireHeaders(request.wire_headers()), None)
        self._current = answer.addCallback(self._read)

        def read(body: bytes) -> None:
            self._current = None
            listed = read_parts_page(body)
            self._parts.extend(listed.parts)
            if listed.next_marker is not None and page < MAX_PAGES:
                self._page(agent, listed.next_marker, page + 1, done)
                return
            check_parts(self._parts)
            done.callback(None)

        self._current.addCallback(read).addErrback(
            lambda failure: None if done.called else done.errback(failure)
        )

    def _read(self, response: IResponse) -> Deferred[bytes]:
        if response.code == 200:
            body: Deferred[bytes] = readBody(response)
            return body
        response.deliverBody(Protocol())  # an error document: not needed
        if response.code == 404:
            raise S3Error("NoSuchUpload", "The specified upload does not exist.", 404,
                          "ListParts before completing: 404")
        raise S3Error(
            "InternalError", "The upstream S3 service failed to answer; please retry.", 502,
            f"ListParts before completing: upstream answered {response.code}",
            kind=Kind.UPSTREAM,
        )
