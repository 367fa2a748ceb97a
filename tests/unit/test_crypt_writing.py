"""Tests for s3relay.crypt.writing: a verified PutObject body, sealed."""

from __future__ import annotations

import base64
import hashlib
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.body.digests import PayloadChecker
from s3relay.body.plan import BodyPlan, PlainBody
from s3relay.crypt.layout import SEGMENT, plaintext_size, segment_count, stored_size
from s3relay.crypt.segments import DecryptionFailed, Opener, Sealer
from s3relay.crypt.writing import SealedBody, plaintext_claims, sealed
from s3relay.s3.errors import S3Error
from s3relay.s3.signing import UNSIGNED_PAYLOAD

DATA_KEY = bytes(range(32))
SIZES = [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def body_filter(checker: PayloadChecker) -> SealedBody:
    return SealedBody(PlainBody(checker), Sealer(DATA_KEY))


def feed(body: SealedBody, data: bytes, chunk: int) -> bytes:
    return b"".join(body.feed(data[i : i + chunk]) for i in range(0, len(data), chunk))


def open_whole(stored: bytes) -> bytes:
    size = plaintext_size(len(stored))
    assert size is not None
    total = segment_count(size)
    opener = Opener(DATA_KEY, 0, total, total, 0, size)
    return opener.feed(stored) + opener.finish()


@given(st.sampled_from(SIZES), st.integers(1, 3 * SEGMENT), st.booleans())
@settings(max_examples=60, deadline=None)
def test_sealed_body_decrypts_to_the_verified_body(size: int, chunk: int, signed: bool) -> None:
    data = random.Random(size).randbytes(size)
    checker = PayloadChecker(sha256(data) if signed else None, md5(data),
                             {"x-amz-checksum-crc32": crc32(data)})
    body = body_filter(checker)
    stored = feed(body, data, chunk) + body.finish()
    assert len(stored) == stored_size(size)
    assert open_whole(stored) == data


class HoldsBackTail:
    """A filter that gives its last bytes only from finish (as DecodedBody may)."""

    def __init__(self, held: int) -> None:
        self._held = held
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out, self._buffer = self._buffer[: -self._held], self._buffer[-self._held :]
        return out

    def finish(self) -> bytes:
        return self._buffer


@pytest.mark.parametrize("size", SIZES)
def test_the_inner_filters_tail_is_sealed(size: int) -> None:
    data = random.Random(size).randbytes(size)
    body = SealedBody(HoldsBackTail(SEGMENT + 10), Sealer(DATA_KEY))
    stored = feed(body, data, 1000) + body.finish()
    assert open_whole(stored) == data


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "claims, code",
    [
        ((sha256(b"other"), None, {}), "XAmzContentSHA256Mismatch"),
        ((None, md5(b"other"), {}), "BadDigest"),
        ((None, None, {"x-amz-checksum-crc32": crc32(b"other")}), "BadDigest"),
    ],
    ids=["sha256", "content-md5", "checksum"],
)
def test_a_body_that_fails_its_check_never_reaches_the_upstream_whole(
    size: int, claims: tuple[str | None, str | None, dict[str, str]], code: str
) -> None:
    data = random.Random(size).randbytes(size)
    body = body_filter(PayloadChecker(*claims))
    sent = feed(body, data, 4096)
    with pytest.raises(S3Error) as info:
        body.finish()
    assert info.value.code == code
    assert len(sent) < stored_size(size)
    # Even as an object, what was sent does not open: its last segment never left.
    if sent:
        with pytest.raises(DecryptionFailed):
            open_whole(sent)


def test_sealed_plan() -> None:
    plan = BodyPlan(3 * SEGMENT + 5, sha256(b"x"), {"content-encoding": "gzip"})
    checker = PayloadChecker(None, None, {})
    new_plan, new_filter = sealed(plan, PlainBody(checker), DATA_KEY, part=0)
    assert new_plan == BodyPlan(stored_size(3 * SEGMENT + 5), UNSIGNED_PAYLOAD,
                                {"content-encoding": "gzip"})
    data = random.Random(1).randbytes(3 * SEGMENT + 5)
    stored = new_filter.feed(data) + new_filter.finish()
    assert len(stored) == new_plan.length and open_whole(stored) == data


def test_plaintext_claims() -> None:
    headers = {
        "content-md5": ["x"],
        "x-amz-checksum-crc32": ["x"],
        "x-amz-checksum-sha256": ["x"],
        "x-amz-checksum-algorithm": ["CRC32"],
        "x-amz-checksum-type": ["FULL_OBJECT"],
        "x-amz-sdk-checksum-algorithm": ["CRC32"],
        "x-amz-meta-s3relay-format": ["1"],
        "x-amz-meta-s3relay-data-key": ["forged"],
        "x-amz-meta-owner": ["me"],
        "x-amz-meta-s3relay": ["no dash: not the relay's"],
        "content-type": ["text/plain"],
        "content-length": ["5"],
        "x-amz-content-sha256": ["UNSIGNED-PAYLOAD"],
        "x-amz-decoded-content-length": ["5"],
        "x-amz-trailer": ["x-amz-checksum-crc32"],
        "content-encoding": ["aws-chunked"],
        "x-amz-server-side-encryption": ["AES256"],
        "x-amz-storage-class": ["STANDARD"],
    }
    assert plaintext_claims(headers) == [
        "content-md5",
        "x-amz-checksum-crc32",
        "x-amz-checksum-sha256",
        "x-amz-checksum-algorithm",
        "x-amz-checksum-type",
        "x-amz-sdk-checksum-algorithm",
        "x-amz-meta-s3relay-format",
        "x-amz-meta-s3relay-data-key",
    ]
    assert plaintext_claims({}) == []
