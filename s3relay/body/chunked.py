# -*- test-case-name: tests.unit.test_chunked -*-
"""aws-chunked bodies: decoding the client's, framing the upstream's.

A client that streams with ``Content-Encoding: aws-chunked`` signs every
chunk with a key the upstream does not know, so the relay must take the
framing apart, verify each chunk signature (and the trailer's), and pass on
the plain payload.  Bodies run to many GiB, so the decoder is incremental:
it keeps only a partial chunk header or trailer line (at most 4 KiB), hands
payload bytes on as they arrive, and checks a chunk's signature the moment
its last byte has arrived.  The caller holds back the body's final bytes
until ``finish`` succeeded, so a forged chunk never completes an upload.

When the client sent a trailing checksum, the upstream should still check
it; ``UnsignedTrailerFramer`` re-frames the decoded payload as
``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` in fixed-size chunks, so that the
framed length (the upstream's Content-Length) is known before the first byte.

The chunk-signature arithmetic is injected (``ChunkVerifier``) so that this
module needs nothing from SigV4 but the chaining rule.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final, Protocol, Sequence

from s3relay.body.digests import decode_checksum, encoded_length
from s3relay.s3.errors import S3Error, signature_mismatch

#: Longest chunk header or trailer line, CRLF excluded.
MAX_LINE: Final = 4096
#: Largest chunk size accepted in a header: 16 hex digits.
_MAX_SIZE_DIGITS: Final = 16
_HEX_DIGITS: Final = b"0123456789abcdefABCDEF"
_SIGNATURE_PREFIX: Final = b"chunk-signature="
_TRAILER_SIGNATURE: Final = "x-amz-trailer-signature"
_EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()

# Decoder states.
_HEADER: Final = 0  # reading a chunk header line
_DATA: Final = 1  # reading chunk payload
_DATA_END: Final = 2  # reading the CRLF after chunk payload
_TRAILER: Final = 3  # reading trailer lines after the final chunk
_END: Final = 4  # after the final chunk without trailer: an optional CRLF
_DONE: Final = 5  # complete; no byte may follow


class ChunkVerifier(Protocol):
    """The signatures a signed aws-chunked body must carry, chained from the seed."""

    def chunk_signature(self, previous_signature: str, chunk_sha256_hex: str) -> str: ...

    def trailer_signature(self, previous_signature: str, trailer_sha256_hex: str) -> str: ...


def _malformed(reason: str) -> S3Error:
    return S3Error("InvalidRequest", "The aws-chunked request body is malformed.", 400, reason)


def _bad_trailer(reason: str) -> S3Error:
    return S3Error(
        "MalformedTrailerError",
        "The request contained trailing data that was not well-formed or did not "
        "conform to our published schema.",
        400,
        reason,
    )


def _incomplete(reason: str) -> S3Error:
    return S3Error(
        "IncompleteBody",
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
        400,
        reason,
    )


class AwsChunkedDecoder:
    """Decodes an aws-chunked body incrementally, verifying as it goes.

    ``verifier`` None means unsigned chunks (``STREAMING-UNSIGNED-PAYLOAD-TRAILER``),
    whose headers may carry any chunk extension; otherwise each header must
    be ``<hex>;chunk-signature=<sig>``, chained from ``seed_signature``.
    ``trailer_names`` are the lowercase names the client declared in
    ``x-amz-trailer``.  Any failure raises ``S3Error``, and so does every
    later call.
    """

    def __init__(
        self,
        decoded_length: int,
        verifier: ChunkVerifier | None,
        seed_signature: str | None,
        trailer_names: Sequence[str],
    ) -> None:
        if decoded_length < 0:
            raise ValueError("decoded_length must not be negative")
        if verifier is not None and seed_signature is None:
            raise ValueError("a signed body needs its seed signature")
        #: x-amz-decoded-content-length: the payload size the client announced.
        self._decoded_length = decoded_length
        self._verifier = verifier
        #: The signature the next chunk (or the trailer) chains from.
        self._previous = seed_signature or ""
        self._trailer_names = frozenset(n.strip().lower() for n in trailer_names)
        self._state = _HEADER
        #: Partial header/trailer line, or partial CRLF, across feeds.
        self._line = bytearray()
        #: Payload bytes still to come in the current chunk.
        self._remaining = 0
        #: Payload bytes announced by the chunk headers so far.
        self._announced = 0
        #: SHA-256 of the current chunk's payload (signed bodies only).
        self._chunk_hash = hashlib.sha256()
        #: The current chunk's signature, from its header.
        self._chunk_signature = b""
        self._trailers: dict[str, str] = {}
        #: Trailer lines as received (CRLF stripped) and the trailer signature.
        self._trailer_lines: list[bytes] = []
        self._trailer_signature: str | None = None
        #: The failure, re-raised by every later call.
        self._error: S3Error | None = None

    @property
    def trailers(self) -> dict[str, str]:
        """Trailer values by lowercase name (without the trailer signature)."""
        return dict(self._trailers)

    @property
    def done(self) -> bool:
        """Whether the final chunk (and trailers) arrived and verified."""
        return self._state == _DONE or (self._state == _END and not self._line)

    def feed(self, data: bytes) -> list[bytes]:
        """Decode the next client bytes; return the payload pieces they held."""
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except S3Error as error:
            self._error = error
            raise

    def finish(self) -> None:
        """The client body ended: raise unless the encoding ended properly."""
        if self._error is not None:
            raise self._error
        try:
            if self._state == _TRAILER and not self._line and self._trailer_lines:
                # Tolerated: trailers complete, the blank line after them missing.
                self._end_trailers()
            if not self.done:
                raise _incomplete(f"aws-chunked body ended early (state {self._state})")
        except S3Error as error:
            self._error = error
            raise

    def _feed(self, data: bytes) -> list[bytes]:
        pieces: list[bytes] = []
        pos = 0
        size = len(data)
        while pos < size:
            state = self._state
            if state == _DATA:
                end = min(size, pos + self._remaining)
                piece = data[pos:end]
                pos = end
                self._remaining -= len(piece)
                if self._verifier is not None:
                    self._chunk_hash.update(piece)
                pieces.append(piece)
                if not self._remaining:
                    self._check_chunk()
                    self._state = _DATA_END
            elif state == _HEADER or state == _TRAILER:
                line, pos = self._read_line(data, pos)
                if line is None:
                    break
                if state == _HEADER:
                    self._header(line)
                else:
                    self._trailer(line)
            elif state == _DATA_END or state == _END:
                pos = self._read_crlf(data, pos)
            else:
                raise _malformed("data after the end of the aws-chunked body")
        return pieces

    def _read_line(self, data: bytes, pos: int) -> tuple[bytes | None, int]:
        """The next CRLF-terminated line (without CRLF), or None until it is complete."""
        room = MAX_LINE + 2 - len(self._line)
        newline = data.find(b"\n", pos, pos + room)
        if newline < 0:
            self._line += data[pos : pos + room]
            if len(self._line) >= MAX_LINE + 2:
                raise _malformed(f"line longer than {MAX_LINE} bytes")
            return None, len(data)
        line = bytes(self._line) + data[pos:newline]
        self._line.clear()
        if not line.endswith(b"\r"):
            raise _malformed("line not terminated by CRLF")
        return line[:-1], newline + 1

    def _read_crlf(self, data: bytes, pos: int) -> int:
        take = data[pos : pos + 2 - len(self._line)]
        self._line += take
        if not b"\r\n".startswith(self._line):
            if self._state == _END:
                raise _malformed("data after the final chunk (undeclared trailer?)")
            raise _malformed("chunk data not followed by CRLF")
        if len(self._line) == 2:
            self._line.clear()
            self._state = _DONE if self._state == _END else _HEADER
        return pos + len(take)

    def _header(self, line: bytes) -> None:
        size_text, _, extension = line.partition(b";")
        if (
            not size_text
            or len(size_text) > _MAX_SIZE_DIGITS
            or size_text.translate(None, _HEX_DIGITS)
        ):
            raise _malformed(f"bad chunk size {size_text[:40]!r}")
        chunk_size = int(size_text, 16)
        if self._verifier is not None:
            signature = extension[len(_SIGNATURE_PREFIX) :]
            if (
                not extension.startswith(_SIGNATURE_PREFIX)
                or len(signature) != 64
                or signature.translate(None, _HEX_DIGITS)
            ):
                raise _malformed(f"chunk header without a valid signature: {line[:120]!r}")
            self._chunk_signature = signature.lower()
            self._chunk_hash = hashlib.sha256()
        self._announced += chunk_size
        if self._announced > self._decoded_length:
            raise _incomplete(
                f"chunks carry more than x-amz-decoded-content-length {self._decoded_length}"
            )
        if chunk_size:
            self._remaining = chunk_size
            self._state = _DATA
            return
        if self._announced != self._decoded_length:
            raise _incomplete(
                f"chunks carry {self._announced} bytes, "
                f"x-amz-decoded-content-length is {self._decoded_length}"
            )
        self._check_chunk()
        self._state = _TRAILER if self._trailer_names else _END

    def _check_chunk(self) -> None:
        """Verify the signature of the chunk whose payload just ended."""
        if self._verifier is None:
            return
        expected = self._verifier.chunk_signature(
            self._previous, self._chunk_hash.hexdigest()
        )
        if not hmac.compare_digest(expected.encode("ascii"), self._chunk_signature):
            raise signature_mismatch(
                f"chunk signature mismatch after {self._announced} payload bytes"
            )
        self._previous = expected

    def _trailer(self, line: bytes) -> None:
        if not line:
            self._end_trailers()
            return
        name_bytes, colon, value_bytes = line.partition(b":")
        try:
            name = name_bytes.decode("ascii").strip().lower()
            value = value_bytes.decode("ascii").strip()
        except UnicodeDecodeError:
            raise _bad_trailer(f"non-ASCII trailer line {line[:120]!r}") from None
        if not colon or not name:
            raise _bad_trailer(f"trailer line without a name: {line[:120]!r}")
        if name == _TRAILER_SIGNATURE and self._verifier is not None:
            if self._trailer_signature is not None:
                raise _bad_trailer("repeated x-amz-trailer-signature")
            self._trailer_signature = value
            return
        if name not in self._trailer_names:
            raise _bad_trailer(f"undeclared trailer {name!r}")
        if name in self._trailers or self._trailer_signature is not None:
            raise _bad_trailer(f"repeated trailer {name!r} or trailer after its signature")
        self._trailers[name] = value
        self._trailer_lines.append(line)

    def _end_trailers(self) -> None:
        missing = self._trailer_names - self._trailers.keys()
        if missing:
            raise _bad_trailer(f"declared trailers missing: {sorted(missing)}")
        if self._verifier is not None:
            if self._trailer_signature is None:
                raise _bad_trailer("signed trailer without x-amz-trailer-signature")
            # Clients sign the lines they send; accept the canonical form too.
            raw = b"".join(line + b"\n" for line in self._trailer_lines)
            canonical = "".join(f"{n}:{v}\n" for n, v in self._trailers.items()).encode()
            received = self._trailer_signature.lower().encode("ascii")
            for text in {raw, canonical}:
                expected = self._verifier.trailer_signature(
                    self._previous, hashlib.sha256(text).hexdigest()
                )
                if hmac.compare_digest(expected.encode("ascii"), received):
                    break
            else:
                raise signature_mismatch("trailer signature mismatch")
        self._state = _DONE


def _chunk_overhead(size: int) -> int:
    """Framing bytes around a chunk of ``size`` payload bytes: hex size, two CRLFs."""
    return len(f"{size:x}") + 4


class UnsignedTrailerFramer:
    """Re-frames a verified, decoded body as STREAMING-UNSIGNED-PAYLOAD-TRAILER for the upstream.

    Chunks are ``chunk_size`` bytes except the last, so ``framed_length`` is
    known before the first byte.  At most one chunk of payload is buffered.
    """

    def __init__(self, decoded_length: int, trailer_name: str, chunk_size: int = 65536) -> None:
        if decoded_length < 0 or chunk_size <= 0:
            raise ValueError("decoded_length must be >= 0 and chunk_size > 0")
        self._decoded_length = decoded_length
        self._name = trailer_name.strip().lower()
        #: Base64 length of the trailer value (also validates the name).
        self._value_length = encoded_length(self._name)
        self._chunk_size = chunk_size
        self._header = f"{chunk_size:x}\r\n".encode("ascii")
        #: Payload not yet framed: less than one chunk.
        self._buffer = bytearray()
        self._fed = 0

    @staticmethod
    def framed_length(decoded_length: int, trailer_name: str, chunk_size: int = 65536) -> int:
        """Exact length of the framed body, trailer included."""
        name = trailer_name.strip().lower()
        full, rest = divmod(decoded_length, chunk_size)
        length = full * (chunk_size + _chunk_overhead(chunk_size))
        if rest:
            length += rest + _chunk_overhead(rest)
        # "0\r\n" + "name:value\r\n" + "\r\n"
        return length + 3 + len(name) + 1 + encoded_length(name) + 2 + 2

    def feed(self, data: bytes) -> bytes:
        """Framed bytes ready to send for the next payload bytes."""
        self._fed += len(data)
        if self._fed > self._decoded_length:
            raise ValueError(f"fed {self._fed} bytes, more than {self._decoded_length}")
        chunk_size = self._chunk_size
        if len(self._buffer) + len(data) < chunk_size:
            self._buffer += data
            return b""
        view = memoryview(data)
        parts: list[bytes | bytearray | memoryview] = []
        pos = 0
        if self._buffer:
            pos = chunk_size - len(self._buffer)
            parts += (self._header, self._buffer, view[:pos], b"\r\n")
        while len(data) - pos >= chunk_size:
            parts += (self._header, view[pos : pos + chunk_size], b"\r\n")
            pos += chunk_size
        joined = b"".join(parts)
        self._buffer = bytearray(view[pos:])
        return joined

    def finish(self, trailer_value: str) -> bytes:
        """The rest of the framed body: the last partial chunk, the final chunk, the trailer."""
        if self._fed != self._decoded_length:
            raise ValueError(f"fed {self._fed} bytes, expected {self._decoded_length}")
        value = trailer_value.strip()
        decode_checksum(self._name, value)  # InvalidRequest unless well-formed
        if len(value) != self._value_length:
            raise S3Error("InvalidRequest", f"Value for {self._name} is invalid.", 400)
        parts: list[bytes] = []
        if self._buffer:
            parts += (f"{len(self._buffer):x}\r\n".encode("ascii"), bytes(self._buffer), b"\r\n")
            self._buffer.clear()
        parts.append(f"0\r\n{self._name}:{value}\r\n\r\n".encode("ascii"))
        return b"".join(parts)
