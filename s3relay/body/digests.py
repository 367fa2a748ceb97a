# -*- test-case-name: tests.unit.test_payload -*-
"""Checking a request body against the digests its client declared.

A client proves its body with ``x-amz-content-sha256``, ``Content-MD5`` and
``x-amz-checksum-*`` (as headers, or as an aws-chunked trailer that arrives
after the data).  The relay forwards the body while it streams, so each digest
is computed incrementally and compared only at the end; the caller holds back
the body's last bytes until ``verify`` has passed, so that a corrupted body
never completes upstream.

Only the digests actually declared are computed: an undeclared body costs
nothing.  CRC32C and CRC64NVME are not in the standard library; they are
computed here with big-integer polynomial arithmetic (a piece of the body is
one integer, folded in halves by carry-less multiplication with precomputed
``x**(2**j) mod P``), which keeps the work in C loops over whole pieces
instead of a Python loop per byte.  Measured on 16 MiB: CRC32C 95-185 MB/s,
CRC64NVME 80-120 MB/s per core, which is why ``supported`` says yes to them.
"""

from __future__ import annotations

import binascii
import hashlib
import zlib
from types import MappingProxyType
from typing import Final, Iterable, Mapping, NamedTuple, Protocol, Sequence

from s3relay.s3.errors import S3Error, bad_digest, invalid_request

CHECKSUM_PREFIX: Final = "x-amz-checksum-"

#: Algorithm (the suffix of x-amz-checksum-<alg>) -> digest size in bytes.
DIGEST_SIZES: Final[Mapping[str, int]] = MappingProxyType(
    {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}
)

#: x-amz-checksum-* headers that describe checksums instead of carrying one.
_NOT_CHECKSUMS: Final = frozenset(
    {"x-amz-checksum-type", "x-amz-checksum-algorithm", "x-amz-checksum-mode"}
)

#: Small updates are coalesced up to this size before a CRC fold: the fold
#: has a fixed cost per call that would dominate on tiny pieces.
_CRC_BATCH: Final = 16 * 1024
#: Largest piece folded at once, bounding the transient integers.
_CRC_PIECE: Final = 256 * 1024

_REVERSED_BITS: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def checksum_algorithm(name: str) -> str:
    """The algorithm of an ``x-amz-checksum-<alg>`` name; InvalidRequest if unknown."""
    lowered = name.strip().lower()
    algorithm = lowered[len(CHECKSUM_PREFIX) :]
    if not lowered.startswith(CHECKSUM_PREFIX) or algorithm not in DIGEST_SIZES:
        raise invalid_request(
            f"Value for x-amz-checksum-algorithm header is invalid: {name!r}.",
            f"unknown checksum {name!r}",
        )
    return algorithm


def encoded_length(name: str) -> int:
    """Length of the base64 value of checksum ``name`` (8 for crc32, 44 for sha256...)."""
    return 4 * ((DIGEST_SIZES[checksum_algorithm(name)] + 2) // 3)


def decode_checksum(name: str, value: str) -> bytes:
    """The digest a checksum value declares; InvalidRequest unless it is valid base64 of the right size."""
    algorithm = checksum_algorithm(name)
    try:
        digest = binascii.a2b_base64(value.strip().encode("ascii"), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        digest = b""
    if len(digest) != DIGEST_SIZES[algorithm]:
        raise invalid_request(
            f"Value for x-amz-checksum-{algorithm} header is invalid.",
            f"malformed {name} value {value[:64]!r}",
        )
    return digest


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc32:
    """zlib's CRC-32 behind the hashlib interface."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes, /) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


class _Polynomial(NamedTuple):
    """A reflected CRC's generator with the constants its fold needs (immutable)."""

    width: int
    #: The generator P in normal (not reflected) bit order, including x**width.
    full: int
    #: bits[j]: the exponents set in x**(2**j) mod P.
    bits: tuple[tuple[int, ...], ...]
    #: table[b]: (b * x**width) mod P, to reduce the last few bytes.
    table: tuple[int, ...]


def _polynomial(width: int, normal: int) -> _Polynomial:
    full = normal | (1 << width)

    def mod(t: int) -> int:  # bitwise; used only to build the constants
        n = t.bit_length()
        while n > width:
            t ^= full << (n - width - 1)
            n = t.bit_length()
        return t

    bits = []
    power = 2  # x**(2**0)
    for _ in range(64):
        exponents = tuple(s for s in range(width) if power >> s & 1)
        bits.append(exponents)
        power = mod(_clmul(power, exponents))
    table = tuple(mod(b << width) for b in range(256))
    return _Polynomial(width, full, tuple(bits), table)


def _clmul(a: int, exponents: Sequence[int]) -> int:
    """Carry-less product of ``a`` and the polynomial with ``exponents`` set."""
    product = 0
    for s in exponents:
        product ^= a << s
    return product


def _reduce(poly: _Polynomial, t: int) -> int:
    """``t mod P`` for a polynomial of any size."""
    width = poly.width
    n = t.bit_length()
    while n > 2 * width:
        # t = high * x**b + low, and x**b mod P is precomputed for b = 2**j.
        j = (n - 1).bit_length() - 1
        b = 1 << j
        high = t >> b
        t = (t & ((1 << b) - 1)) ^ _clmul(high, poly.bits[j])
        n = t.bit_length()
    while n > width:  # at most width/8 table steps
        shift = (n - width - 1) & ~7
        top = t >> (width + shift)
        t = (t & ((1 << (width + shift)) - 1)) ^ (poly.table[top] << shift)
        n = t.bit_length()
    return t


_CRC32C: Final = _polynomial(32, 0x1EDC6F41)
_CRC64NVME: Final = _polynomial(64, 0xAD93D23594C93659)


class _ReflectedCrc:
    """A reflected CRC (init and final XOR all ones), as CRC32C and CRC64NVME are."""

    def __init__(self, poly: _Polynomial) -> None:
        self._poly = poly
        #: The CRC register in normal bit order, before the final XOR.
        self._register = (1 << poly.width) - 1
        #: Small updates waiting to be folded in together.
        self._pending = bytearray()

    def update(self, data: bytes, /) -> None:
        if len(data) + len(self._pending) < _CRC_BATCH:
            self._pending += data
            return
        if self._pending:
            self._pending += data[:_CRC_BATCH]
            self._fold(bytes(self._pending))
            self._pending.clear()
            data = data[_CRC_BATCH:]
        view = memoryview(data)
        for start in range(0, len(view), _CRC_PIECE):
            piece = view[start : start + _CRC_PIECE]
            if len(piece) < _CRC_BATCH:
                self._pending += piece
            else:
                self._fold(piece.tobytes())

    def _fold(self, piece: bytes) -> None:
        # The register after a piece D of n bits is (R * x**n + D * x**w) mod P;
        # reflected CRCs read each byte least significant bit first.
        poly = self._poly
        width = poly.width
        n = 8 * len(piece)
        data = int.from_bytes(piece.translate(_REVERSED_BITS), "big")
        if n < width:
            self._register = _reduce(poly, (self._register << n) ^ (data << width))
        else:
            folded = _reduce(poly, data ^ (self._register << (n - width)))
            self._register = _reduce(poly, folded << width)

    def digest(self) -> bytes:
        if self._pending:
            self._fold(bytes(self._pending))
            self._pending.clear()
        width = self._poly.width
        reflected = int(f"{self._register:0{width}b}"[::-1], 2)
        return (reflected ^ ((1 << width) - 1)).to_bytes(width // 8, "big")


def body_digests(body: bytes, checksum_names: Iterable[str]) -> dict[str, str]:
    """The digest headers for a body the relay wrote itself: ``content-md5``,
    and each ``x-amz-checksum-<alg>`` of ``checksum_names`` (base64 values)."""
    headers = {"content-md5": binascii.b2a_base64(hashlib.md5(body).digest(), newline=False)}
    for name in checksum_names:
        digest = _new_hash(checksum_algorithm(name))
        digest.update(body)
        headers[name.lower()] = binascii.b2a_base64(digest.digest(), newline=False)
    return {name: value.decode("ascii") for name, value in headers.items()}


def _new_hash(algorithm: str) -> _Hash:
    if algorithm == "crc32":
        return _Crc32()
    if algorithm == "crc32c":
        return _ReflectedCrc(_CRC32C)
    if algorithm == "crc64nvme":
        return _ReflectedCrc(_CRC64NVME)
    return hashlib.new(algorithm, usedforsecurity=False)


class PayloadChecker:
    """Hashes a body as it streams and checks it against what the client declared.

    ``checksums`` are x-amz-checksum-* values known up front (headers);
    a trailing checksum is added with ``expect`` once the trailer arrived, and
    its algorithm must be named in ``trailer_names`` so that it is hashed from
    the first byte.
    """

    def __init__(
        self,
        sha256_hex: str | None,
        content_md5: str | None,
        checksums: Mapping[str, str],
        *,
        trailer_names: Sequence[str] = (),
    ) -> None:
        #: Running hashes by algorithm ("sha256", "md5", "crc32"...).
        self._hashes: dict[str, _Hash] = {}
        #: (header name, algorithm, expected digest), checked by verify().
        self._expected: list[tuple[str, str, bytes]] = []
        #: Whether update() has seen a byte: later hashes would miss some.
        self._started = False
        if sha256_hex is not None:
            try:
                digest = bytes.fromhex(sha256_hex)
            except ValueError:
                digest = b""
            if len(digest) != 32 or len(sha256_hex) != 64:
                raise S3Error(
                    "InvalidArgument",
                    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-... "
                    "or a valid sha256 value.",
                    400,
                )
            self._expect("x-amz-content-sha256", "sha256", digest)
        if content_md5 is not None:
            try:
                md5 = binascii.a2b_base64(content_md5.strip().encode("ascii"), strict_mode=True)
            except (UnicodeEncodeError, binascii.Error):
                md5 = b""
            if len(md5) != 16:
                raise S3Error(
                    "InvalidDigest",
                    "The Content-MD5 you specified was invalid.",
                    400,
                    f"malformed Content-MD5 {content_md5[:64]!r}",
                )
            self._expect("content-md5", "md5", md5)
        for name, value in checksums.items():
            if name.strip().lower() not in _NOT_CHECKSUMS:
                self.expect(name, value)
        for name in trailer_names:
            self._hash(checksum_algorithm(name))

    @staticmethod
    def supported(name: str) -> bool:
        """Whether the relay computes checksum ``name`` (an x-amz-checksum-* header) itself."""
        lowered = name.strip().lower()
        return (
            lowered.startswith(CHECKSUM_PREFIX) and lowered[len(CHECKSUM_PREFIX) :] in DIGEST_SIZES
        )

    def expect(self, name: str, value: str) -> None:
        """Check the body against checksum ``name`` = ``value`` (base64) in verify()."""
        self._expect(name.strip().lower(), checksum_algorithm(name), decode_checksum(name, value))

    def _expect(self, name: str, algorithm: str, digest: bytes) -> None:
        if algorithm not in self._hashes and self._started:
            raise ValueError(
                f"{name} arrived after the body started: name it in trailer_names"
            )
        self._hash(algorithm)
        self._expected.append((name, algorithm, digest))

    def _hash(self, algorithm: str) -> None:
        if algorithm not in self._hashes:
            self._hashes[algorithm] = _new_hash(algorithm)

    def update(self, data: bytes) -> None:
        """Hash the next piece of the body."""
        if data:
            self._started = True
            for running in self._hashes.values():
                running.update(data)

    def verify(self) -> None:
        """Raise the S3 error for the first declared digest the body did not match."""
        for name, algorithm, expected in self._expected:
            computed = self._hashes[algorithm].digest()
            if computed == expected:
                continue
            reason = f"{name}: declared {expected.hex()}, computed {computed.hex()}"
            if name == "x-amz-content-sha256":
                raise S3Error(
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what "
                    "was computed.",
                    400,
                    reason,
                )
            if name == "content-md5":
                raise bad_digest(
                    "The Content-MD5 you specified did not match what we received.", reason
                )
            raise bad_digest(
                f"The x-amz-checksum-{algorithm} you specified did not match the "
                "calculated checksum.",
                reason,
            )
