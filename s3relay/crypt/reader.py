# -*- test-case-name: tests.unit.test_crypt_reader -*-
"""Reading encrypted objects: GET and HEAD under an encrypted prefix.

A GET needs the object's size and wrapped data key before it can ask for
the stored bytes of a range, so ``ObjectRead.lookup`` first sends a HEAD
(with the client's conditions and version), and for a multipart object
one of part 1 (its size fixes where every part starts), then signs the GET for the
segments that hold the range, pinned to the ETag the HEAD saw: an object
replaced in between is a 503 to retry, never the wrong key's bytes.
``open`` and ``rewrite_headers`` turn the upstream's answer into the client's (plaintext length,
``Content-Range``, no stored checksums or relay metadata), and
``DecryptingRelay`` opens segments as they arrive: one that fails to
authenticate cuts the client connection, so a wrong body never looks
complete.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from s3relay.crypt.etags import shown
from s3relay.crypt.keys import META_PREFIX, UnusableKey, is_encrypted, is_multipart
from s3relay.crypt.layout import (
    SEGMENT,
    Span,
    Unsatisfiable,
    plaintext_size,
    requested_span,
    segment_count,
)
from s3relay.crypt.segments import DecryptionFailed, Opener
from s3relay.crypt.settings import EncryptionConfig
from s3relay.s3.errors import Kind, S3Error
from s3relay.upstream.agent import WireHeaders
from s3relay.upstream.forward import UpstreamRequest
from s3relay.upstream.response import CLEAN_END, ResponseRelay

#: Signs the GET for the stored object: (Range value or None, ETag to pin or None).
SignRead = Callable[[str | None, str | None], UpstreamRequest]

#: Client headers the ranged GET of an encrypted object replaces (the HEAD had them).
READ_CONDITIONS = (
    "range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since"
)

#: Response headers that describe the stored bytes, not the plaintext.
_STORED_ONLY = (b"content-md5",)


def unreadable(reason: str) -> S3Error:
    """The error for an object the relay cannot decrypt (a key or format failure)."""
    return S3Error("InternalError", "The relay cannot decrypt this object.", 500, reason)


def _changed() -> S3Error:
    return S3Error(
        "ServiceUnavailable", "The object changed while it was read; please retry.", 503,
        "the object's ETag changed between the relay's HEAD and GET", kind=Kind.UPSTREAM,
    )


def _send(agent: IAgent, request: UpstreamRequest) -> Deferred[IResponse]:
    return agent.request(
        request.method.encode("ascii"), request.url.encode("ascii"),
        WireHeaders(request.wire_headers()), None,
    )


def metadata(headers: Headers) -> dict[str, str]:
    """The relay's metadata headers of a response (lowercase names)."""
    return {
        name.decode("latin-1").lower(): values[0].decode("latin-1")
        for name, values in headers.getAllRawHeaders()
        if name.lower().startswith(META_PREFIX.encode())
    }


def _stored_length(headers: Headers) -> int | None:
    values = headers.getRawHeaders(b"content-length")
    return int(values[0]) if values and values[0].isdigit() else None


@dataclass(frozen=True)
class _Plan:
    """What the lookup found: the GET to send, and how its answer is read."""

    upstream: UpstreamRequest
    #: None: pass the answer through (a plaintext object, or the upstream's error).
    data_key: bytes | None = None
    span: Span | None = None
    size: int = 0
    #: Segments per part of a multipart object; None for a whole one.
    per_part: int | None = None
    #: The HEAD was not a 200: only an error answer may be passed on.
    expect_error: bool = False


class ObjectRead:
    """One client GET or HEAD of an object under an encrypted prefix."""

    def __init__(
        self,
        encryption: EncryptionConfig,
        bucket: str,
        key: bytes,
        range_header: str | None,
        head: UpstreamRequest | None,
        part_head: UpstreamRequest | None,
        original: UpstreamRequest,
        sign_read: SignRead,
        on_failure: Callable[[], None],
    ) -> None:
        self._encryption = encryption
        self._bucket = bucket
        self._key = key
        self._range = range_header
        #: The HEAD a GET starts with (None for a HEAD, which is its own lookup).
        self._head = head
        #: The HEAD of part 1, for a multipart object's part size.
        self._part_head = part_head
        #: The GET (or HEAD) as the client asked it.
        self.original = original
        self._sign_read = sign_read
        self._on_failure = on_failure
        self._plan: _Plan | None = None
        #: The client's (status, Content-Length, Content-Range) for an encrypted object.
        self._answer: tuple[int, int, str | None] | None = None

    def lookup(self, agent: IAgent) -> Deferred[UpstreamRequest]:
        """HEAD the object; fires with the GET to send, or errbacks with an S3Error."""
        assert self._head is not None
        return _send(agent, self._head).addCallback(self._looked_up, agent)

    def _looked_up(
        self, response: IResponse, agent: IAgent
    ) -> UpstreamRequest | Deferred[UpstreamRequest]:
        response.deliverBody(Protocol())  # a HEAD's body is empty
        if response.code != 200:
            # The client's GET answers it (404, 304, 412...: S3's own error body).
            self._plan = _Plan(self.original, expect_error=True)
            return self.original
        etag = (response.headers.getRawHeaders(b"etag") or [b""])[0].decode("latin-1")
        found = metadata(response.headers)
        if not is_encrypted(found):
            self._refuse_plaintext()
            self._plan = _Plan(self._sign_read(self._range, etag or None))
            return self._plan.upstream
        data_key, size = self._open(found, _stored_length(response.headers))
        try:
            span = requested_span(self._range, size)
        except Unsatisfiable:
            raise S3Error(
                "InvalidRange", "The requested range is not satisfiable", 416,
                f"range {self._range!r} of a {size}-byte object",
                details=(("ActualObjectSize", str(size)), ("RangeRequested", self._range or "")),
            ) from None
        stored = None if span is None else "bytes=%d-%d" % span.stored_range
        plan = _Plan(self._sign_read(stored, etag or None), data_key, span, size)
        if not is_multipart(found) or self._part_head is None:
            self._plan = plan
            return plan.upstream
        # Where each part's segments start: every part but the last is part 1's size.
        return _send(agent, self._part_head).addCallback(self._part_sized, plan)

    def _part_sized(self, response: IResponse, plan: _Plan) -> UpstreamRequest:
        response.deliverBody(Protocol())
        stored = _stored_length(response.headers) if response.code in (200, 206) else None
        part = plaintext_size(stored) if stored is not None else None
        if part is None or (part % SEGMENT and part < plan.size):
            self._on_failure()
            raise unreadable(f"part 1 answered {response.code}, {stored} bytes: not a part "
                             "the relay sealed")
        self._plan = replace(plan, per_part=segment_count(part))
        return plan.upstream

    def _refuse_plaintext(self) -> None:
        if not self._encryption.allow_plaintext_reads:
            raise S3Error(
                "AccessDenied", "Access Denied", 403,
                "object under an encrypted prefix is stored unencrypted "
                "([encryption] allow_plaintext_reads = no)",
            )

    def _open(self, found: dict[str, str], stored: int | None) -> tuple[bytes, int]:
        try:
            data_key = self._encryption.keys.open_metadata(self._bucket, self._key, found)
        except UnusableKey as e:
            self._on_failure()
            raise unreadable(str(e)) from None
        size = plaintext_size(stored) if stored is not None else None
        if size is None:
            self._on_failure()
            raise unreadable(f"a stored size of {stored} bytes is no encrypted object's")
        return data_key, size

    def open(self, response: IResponse) -> Opener | None:
        """Check the upstream's answer before the client sees any of it; the
        opener that decrypts its body, if it is an encrypted object's."""
        if self._head is None:
            self._open_head(response)
            return None
        plan = self._plan
        assert plan is not None
        ok = 200 <= response.code < 300
        if (plan.expect_error and ok) or response.code == 412:
            # The object appeared or changed since the HEAD: never pass on stored bytes.
            raise _changed()
        if plan.data_key is None or not ok:
            return None  # a plaintext object (allowed), or the upstream's error as it wrote it
        span = plan.span
        if span is None:
            self._answer = (200, plan.size, None)
            total = segment_count(plan.size)
            return Opener(plan.data_key, 0, total, total, 0, plan.size, plan.per_part)
        self._answer = (206, span.length, span.content_range())
        count = span.last // SEGMENT - span.first_segment + 1
        return Opener(
            plan.data_key, span.first_segment, count, segment_count(span.size), span.skip,
            span.length, plan.per_part,
        )

    def _open_head(self, response: IResponse) -> None:
        if response.code != 200:
            return
        found = metadata(response.headers)
        if not is_encrypted(found):
            self._refuse_plaintext()
            return
        _, size = self._open(found, _stored_length(response.headers))
        self._answer = (200, size, None)

    def rewrite_headers(self, request: Any) -> None:
        """Make the client's response head (its headers copied from the
        upstream's) describe the plaintext."""
        headers = request.responseHeaders
        if self._answer is None:
            if request.code == 304:  # the object is unchanged: its ETag as clients know it
                show_etag(headers)
            return
        code, length, content_range = self._answer
        request.setResponseCode(code)
        plaintext_head(headers)
        headers.setRawHeaders(b"content-length", [b"%d" % length])
        if content_range is None:
            headers.removeHeader(b"content-range")
        else:
            headers.setRawHeaders(b"content-range", [content_range.encode()])


def plaintext_head(headers: Headers) -> None:
    """Response headers about an encrypted object's stored bytes, made to
    describe its plaintext: the ETag shown (``etags``), no stored checksums,
    ``Content-MD5`` or relay metadata."""
    for name, _ in list(headers.getAllRawHeaders()):
        lower = name.lower()
        stored_only = lower.startswith((META_PREFIX.encode(), b"x-amz-checksum-"))
        if stored_only or lower in _STORED_ONLY:
            headers.removeHeader(name)
    show_etag(headers)


def show_etag(headers: Headers) -> None:
    """The response's ETag as clients see an encrypted object's (``etags``)."""
    etag = headers.getRawHeaders(b"etag")
    if etag:
        headers.setRawHeaders(b"etag", [shown(etag[0].decode("latin-1")).encode("latin-1")])


class DecryptingRelay(ResponseRelay):
    """Relays a stored body decrypted; a segment that fails cuts the response."""

    def __init__(self, request: Any, opener: Opener) -> None:
        super().__init__(request)
        self._opener = opener
        self._failure: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        if self._failure is not None:
            return
        try:
            plaintext = self._opener.feed(data)
        except DecryptionFailed:
            self._failure = Failure()
            self.stop()
            return
        if plaintext:
            self.sent += len(plaintext)
            self.request.write(plaintext)

    def connectionLost(self, reason: Failure = Failure(CLEAN_END[0]())) -> None:
        if self._failure is None and isinstance(reason.value, CLEAN_END):
            try:
                tail = self._opener.finish()
            except DecryptionFailed:
                self._failure = Failure()
            else:
                if tail:
                    self.sent += len(tail)
                    self.request.write(tail)
        super().connectionLost(self._failure or reason)
