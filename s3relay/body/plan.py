# -*- test-case-name: tests.unit.test_bodyplan -*-
"""How a client's request body travels upstream, for every S3 payload mode.

The client proved its body to the relay (a SHA-256, chunk signatures, a
checksum, or nothing); the upstream must get a body it can check in turn.
Plain bodies go through as they are, with the client's hash.  aws-chunked
bodies are decoded and verified here (the client's chunk signatures are
chained to its key, which the upstream does not know); a trailing checksum is
re-framed as ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` so that the upstream still
receives and checks it.  A ``BodyFilter`` does the work while streaming; its
``finish`` raises if anything failed to verify, and the caller holds back
the body's last bytes until it has returned.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from s3relay.body.chunked import AwsChunkedDecoder, UnsignedTrailerFramer
from s3relay.body.digests import CHECKSUM_PREFIX, PayloadChecker
from s3relay.s3 import sigv4
from s3relay.s3.errors import S3Error


class BodyFilter(Protocol):
    """Turns client body bytes into upstream body bytes, verifying as it goes."""

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


@dataclass(frozen=True)
class BodyPlan:
    """What the upstream request says about its body."""

    #: Bytes the upstream receives.
    length: int
    #: The upstream request's ``x-amz-content-sha256``.
    payload_hash: str
    #: Headers that describe the upstream body (content-encoding, trailer...).
    headers: Mapping[str, str]
    #: Hold the whole (small) body and verify it before the upstream request
    #: starts, e.g. a multi-delete whose keys are checked (s3relay.body.multidelete).
    verify_first: bool = False


class ChunkSigner:
    """Chunk and trailer signatures chained from a verified request."""

    def __init__(self, verified: sigv4.Verified) -> None:
        self._verified = verified

    def chunk_signature(self, previous_signature: str, chunk_sha256_hex: str) -> str:
        v = self._verified
        text = sigv4.chunk_string_to_sign(v.amz_date, v.scope, previous_signature, chunk_sha256_hex)
        return sigv4.signature(v.signing_key, text)

    def trailer_signature(self, previous_signature: str, trailer_sha256_hex: str) -> str:
        v = self._verified
        text = sigv4.trailer_string_to_sign(
            v.amz_date, v.scope, previous_signature, trailer_sha256_hex
        )
        return sigv4.signature(v.signing_key, text)


class PlainBody:
    """A body sent as is: hashed while it streams, checked at the end."""

    def __init__(self, checker: PayloadChecker) -> None:
        self._checker = checker

    def feed(self, data: bytes) -> bytes:
        self._checker.update(data)
        return data

    def finish(self) -> bytes:
        self._checker.verify()
        return b""


class DecodedBody:
    """An aws-chunked body, decoded and verified, optionally re-framed with its trailer."""

    def __init__(
        self,
        decoder: AwsChunkedDecoder,
        checker: PayloadChecker,
        framer: UnsignedTrailerFramer | None,
        trailer_name: str | None,
    ) -> None:
        self._decoder = decoder
        self._checker = checker
        self._framer = framer
        self._trailer_name = trailer_name

    def feed(self, data: bytes) -> bytes:
        out = []
        for piece in self._decoder.feed(data):
            self._checker.update(piece)
            out.append(self._framer.feed(piece) if self._framer else piece)
        return b"".join(out)

    def finish(self) -> bytes:
        self._decoder.finish()
        trailers = self._decoder.trailers
        for name, value in trailers.items():
            if PayloadChecker.supported(name):
                self._checker.expect(name, value)
        self._checker.verify()
        if self._framer is None or self._trailer_name is None:
            return b""
        trailer = trailers.get(self._trailer_name)
        if trailer is None:
            raise S3Error(
                "MalformedTrailerError",
                "The request contained trailing data that was not well-formed.",
                400,
                f"declared trailer {self._trailer_name} missing",
            )
        return self._framer.finish(trailer)


def _one(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    return ",".join(v.strip() for v in values) if values else None


def declared_checksum_names(headers: Mapping[str, Sequence[str]]) -> list[str]:
    """The ``x-amz-checksum-<alg>`` headers (lowercase names) a client sent
    that carry a checksum of its body."""
    return [
        name for name in headers
        if name.startswith(CHECKSUM_PREFIX) and name != "x-amz-checksum-type"
        and name != "x-amz-checksum-algorithm"
    ]


def _declared_checksums(headers: Mapping[str, Sequence[str]]) -> dict[str, str]:
    return {name: _one(headers, name) or "" for name in declared_checksum_names(headers)}


def _length(value: str | None, header: str) -> int:
    if value is None:
        raise S3Error(
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
            411,
            f"no {header}",
        )
    if not (value.isascii() and value.isdigit()):
        raise S3Error("InvalidArgument", f"Invalid {header}: {value!r}.", 400)
    return int(value)


def plan_body(
    headers: Mapping[str, Sequence[str]],
    verified: sigv4.Verified,
    client_length: int | None,
    plaintext: bool = False,
) -> tuple[BodyPlan, BodyFilter]:
    """Decide how the body of a verified request goes upstream.

    ``headers`` are the client's (lowercase names); ``client_length`` is the
    length of the body on the wire, None when it was sent HTTP-chunked.
    ``plaintext``: the filter yields the verified body bytes alone, never a
    re-framed trailer (for a body the relay transforms, ``crypt.writing``).
    """
    payload_hash = verified.payload_hash
    encodings = [
        token.strip()
        for value in headers.get("content-encoding", ())
        for token in value.split(",")
        if token.strip()
    ]
    other_encodings = [e for e in encodings if e.lower() != "aws-chunked"]
    md5 = _one(headers, "content-md5")
    declared = _declared_checksums(headers)

    if not payload_hash.startswith("STREAMING-"):
        if len(other_encodings) != len(encodings):
            raise S3Error(
                "InvalidArgument",
                "Content-Encoding aws-chunked needs a STREAMING x-amz-content-sha256.",
                400,
            )
        if client_length is None:
            client_length = _length(None, "Content-Length")
        hex_hash = None if payload_hash == sigv4.UNSIGNED_PAYLOAD else payload_hash
        plan = BodyPlan(client_length, payload_hash, {})
        return plan, PlainBody(PayloadChecker(hex_hash, md5, declared))

    decoded_length = _length(
        _one(headers, "x-amz-decoded-content-length"), "x-amz-decoded-content-length"
    )
    trailer_names = [
        n.strip().lower() for n in (_one(headers, "x-amz-trailer") or "").split(",") if n.strip()
    ]
    if len(trailer_names) > 1:
        raise S3Error("InvalidRequest", "Only one trailing checksum is supported.", 400)
    if trailer_names and not trailer_names[0].startswith(CHECKSUM_PREFIX):
        raise S3Error("InvalidRequest", f"Unsupported trailer {trailer_names[0]!r}.", 400)
    if payload_hash == sigv4.STREAMING_SIGNED and trailer_names:
        raise S3Error(
            "InvalidRequest",
            "x-amz-trailer needs a STREAMING-...-TRAILER x-amz-content-sha256.",
            400,
        )
    signed = payload_hash in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER)
    decoder = AwsChunkedDecoder(
        decoded_length,
        ChunkSigner(verified) if signed else None,
        verified.seed_signature if signed else None,
        trailer_names,
    )
    checker = PayloadChecker(
        None,
        md5,
        declared,
        trailer_names=[n for n in trailer_names if PayloadChecker.supported(n)],
    )
    upstream_headers: dict[str, str] = {}
    if trailer_names and not plaintext:
        name = trailer_names[0]
        framer = UnsignedTrailerFramer(decoded_length, name)
        upstream_headers["content-encoding"] = ",".join(["aws-chunked", *other_encodings])
        upstream_headers["x-amz-decoded-content-length"] = str(decoded_length)
        upstream_headers["x-amz-trailer"] = name
        plan = BodyPlan(
            UnsignedTrailerFramer.framed_length(decoded_length, name),
            sigv4.STREAMING_UNSIGNED_TRAILER,
            upstream_headers,
        )
        return plan, DecodedBody(decoder, checker, framer, name)
    if other_encodings:
        upstream_headers["content-encoding"] = ",".join(other_encodings)
    plan = BodyPlan(decoded_length, sigv4.UNSIGNED_PAYLOAD, upstream_headers)
    return plan, DecodedBody(decoder, checker, None, None)


class RelayBody:
    """A body the relay writes itself in place of a client's empty one."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def feed(self, data: bytes) -> bytes:
        return b""

    def finish(self) -> bytes:
        return self._body


def relay_body(body: bytes) -> tuple[BodyPlan, BodyFilter]:
    """The plan and filter of ``body``, sent for a request that had none."""
    return BodyPlan(len(body), hashlib.sha256(body).hexdigest(), {}), RelayBody(body)
