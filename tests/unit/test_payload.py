# -*- test-case-name: tests.unit.test_payload -*-
"""Tests for s3relay.body.digests: every digest right and wrong, malformed
declarations, trailers added late, and the big-integer CRCs against
published check values and a byte-at-a-time reference."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from typing import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.body.digests import PayloadChecker, decode_checksum, encoded_length
from s3relay.s3.errors import S3Error

CRC32C_POLY_REFLECTED = 0x82F63B78
CRC64NVME_POLY_REFLECTED = 0x9A6C9329AC4BC9B5


def reference_crc(data: bytes, width: int, reflected_poly: int) -> int:
    """Textbook table-driven reflected CRC (init and final XOR all ones)."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ reflected_poly if crc & 1 else crc >> 1
        table.append(crc)
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ mask


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def expected_values(data: bytes) -> dict[str, str]:
    return {
        "x-amz-checksum-crc32": b64(zlib.crc32(data).to_bytes(4, "big")),
        "x-amz-checksum-crc32c": b64(
            reference_crc(data, 32, CRC32C_POLY_REFLECTED).to_bytes(4, "big")
        ),
        "x-amz-checksum-crc64nvme": b64(
            reference_crc(data, 64, CRC64NVME_POLY_REFLECTED).to_bytes(8, "big")
        ),
        "x-amz-checksum-sha1": b64(hashlib.sha1(data).digest()),
        "x-amz-checksum-sha256": b64(hashlib.sha256(data).digest()),
    }


def computed(name: str, pieces: Sequence[bytes]) -> bytes:
    """The digest PayloadChecker computes for ``name``, read back through a mismatch."""
    size = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}[
        name.removeprefix("x-amz-checksum-")
    ]
    for guess in (b"\0" * size, b"\1" * size):
        checker = PayloadChecker(None, None, {name: b64(guess)})
        for piece in pieces:
            checker.update(piece)
        try:
            checker.verify()
            return guess
        except S3Error as error:
            _, _, rest = error.reason.partition(", computed ")
            return bytes.fromhex(rest)
    raise AssertionError("unreachable")


# -- CRC check values --------------------------------------------------------


@pytest.mark.parametrize(
    "data,value",
    [
        (b"123456789", 0xE3069283),
        (b"\0" * 32, 0x8A9136AA),  # RFC 3720 B.4
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
        (b"", 0),
    ],
)
def test_crc32c_check_values(data: bytes, value: int) -> None:
    assert computed("x-amz-checksum-crc32c", [data]) == value.to_bytes(4, "big")


def test_crc64nvme_check_value() -> None:
    assert computed("x-amz-checksum-crc64nvme", [b"123456789"]) == (0xAE8B14860A799888).to_bytes(
        8, "big"
    )
    assert computed("x-amz-checksum-crc64nvme", [b""]) == bytes(8)


def test_reference_matches_zlib_shape() -> None:
    # The reference, given CRC-32's polynomial, is zlib: it is a faithful textbook CRC.
    data = os.urandom(1000)
    assert reference_crc(data, 32, 0xEDB88320) == zlib.crc32(data)


@given(st.binary(max_size=50000), st.lists(st.integers(0, 40000), max_size=6))
@settings(max_examples=60, deadline=None)
def test_crcs_match_reference_for_any_split(data: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    checker = PayloadChecker(None, None, expected_values(data))
    for piece in pieces:
        checker.update(piece)
    checker.verify()


def test_crcs_large_pieces() -> None:
    """Pieces above the 256 KiB fold limit and odd sizes between batches."""
    data = os.urandom(2 * 1024 * 1024 + 12345)
    pieces = [data[:5], data[5:20000], data[20000:1500000], data[1500000:]]
    for pieces_ in ([data], pieces):
        checker = PayloadChecker(None, None, expected_values(data))
        for piece in pieces_:
            checker.update(piece)
        checker.verify()


# -- each algorithm right and wrong ------------------------------------------

ALL = [
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
]


@pytest.mark.parametrize("name", ALL)
def test_checksum_right_and_wrong(name: str) -> None:
    data = b"The quick brown fox jumps over the lazy dog" * 500
    good = expected_values(data)[name]
    checker = PayloadChecker(None, None, {name: good})
    checker.update(data[:100])
    checker.update(data[100:])
    checker.verify()
    assert PayloadChecker.supported(name)

    bad = PayloadChecker(None, None, {name: good})
    bad.update(data[:-1] + b"!")
    with pytest.raises(S3Error) as caught:
        bad.verify()
    assert caught.value.code == "BadDigest"
    assert caught.value.status == 400
    assert caught.value.message == (
        f"The {name} you specified did not match the calculated checksum."
    )


def test_header_names_any_case() -> None:
    data = b"abc"
    value = expected_values(data)["x-amz-checksum-crc32"]
    checker = PayloadChecker(None, None, {"X-Amz-Checksum-CRC32": value})
    checker.update(data)
    checker.verify()


def test_sha256() -> None:
    data = b"hello"
    checker = PayloadChecker(hashlib.sha256(data).hexdigest().upper(), None, {})
    checker.update(data)
    checker.verify()
    checker = PayloadChecker(hashlib.sha256(data).hexdigest(), None, {})
    checker.update(b"hellp")
    with pytest.raises(S3Error) as caught:
        checker.verify()
    assert caught.value.code == "XAmzContentSHA256Mismatch"
    assert caught.value.status == 400


@pytest.mark.parametrize("value", ["abc", "g" * 64, "a" * 63, "a" * 65, " " + "a" * 63])
def test_sha256_malformed(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        PayloadChecker(value, None, {})
    assert caught.value.status == 400


def test_md5() -> None:
    data = b"hello"
    md5 = b64(hashlib.md5(data).digest())
    checker = PayloadChecker(None, md5, {})
    checker.update(data)
    checker.verify()
    checker = PayloadChecker(None, md5, {})
    checker.update(b"jello")
    with pytest.raises(S3Error) as caught:
        checker.verify()
    assert caught.value.code == "BadDigest"
    assert caught.value.message == "The Content-MD5 you specified did not match what we received."


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64!",
        "AAAA",
        b64(b"\0" * 15),
        b64(b"\0" * 17),
        "XrY7u+Ae7tCTyyK7j1rNww",  # padding missing
        "\u00e9" * 24,
    ],
)
def test_md5_malformed(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        PayloadChecker(None, value, {})
    assert caught.value.code == "InvalidDigest"
    assert caught.value.message == "The Content-MD5 you specified was invalid."
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "name,value",
    [
        ("x-amz-checksum-md5", b64(b"\0" * 16)),
        ("x-amz-checksum-crc16", "AAA="),
        ("x-amz-checksum-crc32", "AAAAAAAA"),  # 6 bytes
        ("x-amz-checksum-crc32", "AAAA"),  # 3 bytes
        ("x-amz-checksum-crc32", "AAAAAA=="[:-1]),
        ("x-amz-checksum-crc32", "AA AAAA=="),
        ("x-amz-checksum-sha256", b64(b"\0" * 20)),
        ("x-amz-checksum-crc64nvme", b64(b"\0" * 4)),
        ("x-amz-checksum-crc32", ""),
    ],
)
def test_checksum_malformed(name: str, value: str) -> None:
    with pytest.raises(S3Error) as caught:
        PayloadChecker(None, None, {name: value})
    assert caught.value.code == "InvalidRequest"
    checker = PayloadChecker(None, None, {})
    with pytest.raises(S3Error) as caught:
        checker.expect(name, value)
    assert caught.value.code == "InvalidRequest"


def test_descriptive_headers_ignored() -> None:
    checker = PayloadChecker(
        None, None, {"x-amz-checksum-type": "FULL_OBJECT", "x-amz-checksum-algorithm": "CRC32"}
    )
    checker.update(b"anything")
    checker.verify()


def test_supported() -> None:
    for name in ALL:
        assert PayloadChecker.supported(name)
        assert PayloadChecker.supported(name.upper())
    for name in ("x-amz-checksum-md5", "x-amz-checksum-type", "content-md5", "x-amz-checksum-"):
        assert not PayloadChecker.supported(name)


def test_helpers() -> None:
    assert [encoded_length(name) for name in ALL] == [8, 8, 12, 28, 44]
    assert decode_checksum("x-amz-checksum-crc32", " AAAAAQ== ") == b"\0\0\0\1"


# -- trailers ----------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_trailer_via_expect(name: str) -> None:
    data = os.urandom(70000)
    value = expected_values(data)[name]
    checker = PayloadChecker(None, None, {}, trailer_names=[name])
    checker.update(data[:30000])
    checker.update(data[30000:])
    checker.expect(name, value)
    checker.verify()

    checker = PayloadChecker(None, None, {}, trailer_names=[name])
    checker.update(data[1:])
    checker.expect(name, value)
    with pytest.raises(S3Error) as caught:
        checker.verify()
    assert caught.value.code == "BadDigest"


def test_trailer_same_algorithm_as_header() -> None:
    data = b"abc"
    value = expected_values(data)["x-amz-checksum-sha256"]
    checker = PayloadChecker(None, None, {"x-amz-checksum-sha256": value})
    checker.update(data)
    checker.expect("x-amz-checksum-sha256", value)
    checker.verify()


def test_trailer_not_announced_fails_loudly() -> None:
    """A checksum whose hash did not run from the first byte cannot be checked."""
    checker = PayloadChecker(None, None, {})
    checker.update(b"abc")
    with pytest.raises(ValueError):
        checker.expect("x-amz-checksum-crc32", expected_values(b"abc")["x-amz-checksum-crc32"])
    empty = PayloadChecker(None, None, {})
    empty.update(b"")
    empty.expect("x-amz-checksum-crc32", expected_values(b"")["x-amz-checksum-crc32"])
    empty.verify()


def test_trailer_names_validated() -> None:
    with pytest.raises(S3Error) as caught:
        PayloadChecker(None, None, {}, trailer_names=["x-amz-checksum-md5"])
    assert caught.value.code == "InvalidRequest"


def test_nothing_declared_hashes_nothing() -> None:
    checker = PayloadChecker(None, None, {})
    assert not checker._hashes
    checker.update(b"x" * 1000)
    checker.verify()


def test_all_together_first_failure_reported() -> None:
    data = b"payload"
    checker = PayloadChecker(
        hashlib.sha256(data).hexdigest(), b64(hashlib.md5(data).digest()), expected_values(data)
    )
    checker.update(data)
    checker.verify()
    checker = PayloadChecker(
        hashlib.sha256(data).hexdigest(), b64(hashlib.md5(data).digest()), expected_values(data)
    )
    checker.update(b"payloaX")
    with pytest.raises(S3Error) as caught:
        checker.verify()
    assert caught.value.code == "XAmzContentSHA256Mismatch"
