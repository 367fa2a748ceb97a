# -*- test-case-name: tests.unit.test_routes -*-
"""ListBuckets with several upstreams: every named upstream's list, read
before the default upstream's answer is rewritten to hold them all
(``s3.listbuckets.merge_buckets``).  One that fails makes the answer an
error, never a silently shorter list."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import readBody
from twisted.web.iweb import IAgent, IResponse

from s3relay.s3.errors import Kind, S3Error
from s3relay.s3.listbuckets import filter_buckets
from s3relay.upstream.agent import WireHeaders
from s3relay.upstream.forward import UpstreamRequest


def _failed(upstream: str, detail: str) -> S3Error:
    return S3Error(
        "ServiceUnavailable", "Please reduce your request rate.", 503,
        f"ListBuckets of upstream {upstream!r}: {detail}", kind=Kind.UPSTREAM,
    )


class BucketLists:
    """The named upstreams' ListBuckets answers, each cut to the buckets
    ``visible(bucket, upstream)`` says (routed there, and the client's)."""

    def __init__(
        self,
        requests: Mapping[str, UpstreamRequest],
        agents: Callable[[str], IAgent],
        visible: Callable[[str, str], bool],
    ) -> None:
        self._requests = requests
        self._agents = agents
        self._visible = visible
        #: The lists read, once ``lookup`` fired.
        self.documents: list[bytes] = []

    def lookup(self, agent: IAgent) -> Deferred[None]:
        answers = [self._one(name, request) for name, request in self._requests.items()]
        together = DeferredList(answers, fireOnOneErrback=True, consumeErrors=True)

        def done(results: Sequence[tuple[bool, bytes]]) -> None:
            self.documents = [document for _, document in results]

        def failed(failure: Failure) -> Failure:
            first: Failure = getattr(failure.value, "subFailure", failure)
            return first

        return together.addCallbacks(done, failed)

    def _one(self, name: str, request: UpstreamRequest) -> Deferred[bytes]:
        answer = self._agents(name).request(
            b"GET", request.url.encode("ascii"), WireHeaders(request.wire_headers()), None
        )

        def read(response: IResponse) -> Deferred[bytes]:
            if response.code != 200:
                response.deliverBody(Protocol())
                raise _failed(name, f"answered {response.code}")
            body: Deferred[bytes] = readBody(response)
            return body

        def cut(document: bytes) -> bytes:
            return filter_buckets(document, lambda bucket: self._visible(bucket, name))

        def unreachable(failure: Failure) -> Failure:
            if isinstance(failure.value, S3Error):
                return failure
            return Failure(_failed(name, failure.getErrorMessage()))

        return answer.addCallback(read).addCallback(cut).addErrback(unreachable)
