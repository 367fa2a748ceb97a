"""Tests for s3relay.body.plan: the upstream body for every S3 payload mode.

Encoded client bodies are built here with a small signer on top of
s3relay.s3.sigv4's chunk/trailer strings to sign and a ``Verified`` made by
hand; checksums come from an independent table-driven CRC implementation.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.body.plan import BodyFilter, BodyPlan, ChunkSigner, plan_body
from s3relay.s3 import sigv4
from s3relay.s3.errors import S3Error

SECRET = "bodyplan/secret+key0000000000000000000"
AMZ_DATE = "20240301T123045Z"
SCOPE = sigv4.Scope("20240301", "us-east-1", "s3")
SEED = "5e1ed5eed" + "0" * 55
KEY = sigv4.SigningKeyCache().key(SECRET, SCOPE.date, SCOPE.region)
FRAME = 65536  # UnsignedTrailerFramer's chunk size

Headers = dict[str, list[str]]


def verified(payload_hash: str) -> sigv4.Verified:
    return sigv4.Verified("AKIDCLIENT", KEY, SEED, AMZ_DATE, SCOPE, payload_hash)


# -- an independent reference for the encodings -------------------------------------------


def _table(poly: int) -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _table(0x82F63B78)
_CRC64NVME = _table(0x9A6C9329AC4BC9B5)


def _reflected(table: list[int], width: int, data: bytes) -> int:
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ mask


def digest(algorithm: str, data: bytes) -> bytes:
    if algorithm == "crc32":
        return zlib.crc32(data).to_bytes(4, "big")
    if algorithm == "crc32c":
        return _reflected(_CRC32C, 32, data).to_bytes(4, "big")
    if algorithm == "crc64nvme":
        return _reflected(_CRC64NVME, 64, data).to_bytes(8, "big")
    return hashlib.new(algorithm, data).digest()


def checksum(name: str, data: bytes) -> str:
    return base64.b64encode(digest(name.removeprefix("x-amz-checksum-"), data)).decode()


def md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_reference_crcs() -> None:
    assert _reflected(_CRC32C, 32, b"123456789") == 0xE3069283
    assert _reflected(_CRC64NVME, 64, b"123456789") == 0xAE8B14860A799888
    assert checksum("x-amz-checksum-crc32", b"") == "AAAAAA=="


def chunk_signature(previous: str, chunk: bytes) -> str:
    text = sigv4.chunk_string_to_sign(AMZ_DATE, SCOPE, previous, hashlib.sha256(chunk).hexdigest())
    return sigv4.signature(KEY, text)


def signed_body(chunks: Sequence[bytes], trailers: Sequence[tuple[str, str]] = (),
                sent: Sequence[bytes] | None = None) -> bytes:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER); ``sent`` replaces the chunk data only."""
    sent = chunks if sent is None else sent
    out, previous = [], SEED
    for chunk, data in [*zip(chunks, sent), (b"", b"")]:
        previous = chunk_signature(previous, chunk)
        out.append(b"%x;chunk-signature=%s\r\n" % (len(data), previous.encode()))
        if data:
            out.append(data + b"\r\n")
    if trailers:
        text = "".join(f"{n}:{v}\n" for n, v in trailers).encode()
        sig = sigv4.signature(KEY, sigv4.trailer_string_to_sign(
            AMZ_DATE, SCOPE, previous, hashlib.sha256(text).hexdigest()))
        out += [f"{n}:{v}\r\n".encode() for n, v in trailers]
        out.append(f"x-amz-trailer-signature:{sig}\r\n".encode())
    out.append(b"\r\n")
    return b"".join(out)


def unsigned_body(chunks: Sequence[bytes], trailers: Sequence[tuple[str, str]] = ()) -> bytes:
    out = [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c]
    out.append(b"0\r\n")
    out += [f"{n}:{v}\r\n".encode() for n, v in trailers]
    out.append(b"\r\n")
    return b"".join(out)


def framed(data: bytes, name: str, value: str) -> bytes:
    """What the upstream gets for a trailer body: 64 KiB chunks, then the trailer."""
    out = [b"%x\r\n%s\r\n" % (len(data[i:i + FRAME]), data[i:i + FRAME])
           for i in range(0, len(data), FRAME)]
    out.append(f"0\r\n{name}:{value}\r\n\r\n".encode())
    return b"".join(out)


def split(data: bytes, chunk_size: int) -> list[bytes]:
    return [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]


def run(body_filter: BodyFilter, body: bytes, step: int | None = None) -> bytes:
    step = step or len(body) or 1
    out = [body_filter.feed(body[i:i + step]) for i in range(0, len(body), step)]
    out.append(body_filter.finish())
    return b"".join(out)


def fails(body_filter: BodyFilter, body: bytes, code: str, status: int = 400,
          step: int | None = None) -> S3Error:
    with pytest.raises(S3Error) as info:
        run(body_filter, body, step)
    assert (info.value.code, info.value.status) == (code, status)
    return info.value


def refused(headers: Headers, payload_hash: str, client_length: int | None, code: str,
            status: int = 400) -> S3Error:
    with pytest.raises(S3Error) as info:
        plan_body(headers, verified(payload_hash), client_length)
    assert (info.value.code, info.value.status) == (code, status)
    return info.value


def streaming_headers(payload_hash: str, decoded: int, trailer: str | None = None,
                      **extra: str) -> Headers:
    headers = {
        "content-encoding": ["aws-chunked"],
        "x-amz-content-sha256": [payload_hash],
        "x-amz-decoded-content-length": [str(decoded)],
    }
    if trailer:
        headers["x-amz-trailer"] = [trailer]
    for name, value in extra.items():
        headers[name.replace("_", "-")] = [value]
    return headers


DATA = b"Hello, relay! " * 5000  # 70000 bytes: more than one upstream frame
assert len(DATA) > FRAME


# -- plain bodies ------------------------------------------------------------------------


def test_sha256_body() -> None:
    sha = hashlib.sha256(DATA).hexdigest()
    plan, body_filter = plan_body({"x-amz-content-sha256": [sha]}, verified(sha), len(DATA))
    assert plan == BodyPlan(len(DATA), sha, {})
    assert run(body_filter, DATA, 999) == DATA


def test_sha256_body_feed_returns_input_and_finish_nothing() -> None:
    sha = hashlib.sha256(b"abc").hexdigest()
    _, body_filter = plan_body({}, verified(sha), 3)
    assert body_filter.feed(b"ab") == b"ab"
    assert body_filter.feed(b"c") == b"c"
    assert body_filter.finish() == b""


def test_sha256_mismatch() -> None:
    sha = hashlib.sha256(DATA).hexdigest()
    _, body_filter = plan_body({}, verified(sha), len(DATA))
    error = fails(body_filter, DATA[:-1] + b"X", "XAmzContentSHA256Mismatch")
    assert sha in error.reason


def test_unsigned_payload() -> None:
    plan, body_filter = plan_body({}, verified(sigv4.UNSIGNED_PAYLOAD), 5)
    assert plan == BodyPlan(5, sigv4.UNSIGNED_PAYLOAD, {})
    assert run(body_filter, b"12345") == b"12345"


@pytest.mark.parametrize("payload_hash", [sigv4.UNSIGNED_PAYLOAD, sigv4.EMPTY_SHA256])
def test_plain_body_with_http_chunked_framing_needs_a_length(payload_hash: str) -> None:
    error = refused({}, payload_hash, None, "MissingContentLength", 411)
    assert error.message == "You must provide the Content-Length HTTP header."


def test_plain_body_gzip_plan_has_no_headers() -> None:
    plan, _ = plan_body({"content-encoding": ["gzip"]}, verified(sigv4.UNSIGNED_PAYLOAD), 9)
    assert plan == BodyPlan(9, sigv4.UNSIGNED_PAYLOAD, {})


def test_aws_chunked_without_streaming_hash() -> None:
    refused({"content-encoding": ["gzip, aws-chunked"]}, sigv4.UNSIGNED_PAYLOAD, 9,
            "InvalidArgument")


@pytest.mark.parametrize("payload_hash", [sigv4.UNSIGNED_PAYLOAD, "sha"])
def test_content_md5(payload_hash: str) -> None:
    sha = hashlib.sha256(DATA).hexdigest() if payload_hash == "sha" else payload_hash
    headers = {"content-md5": [md5(DATA)]}
    _, body_filter = plan_body(headers, verified(sha), len(DATA))
    assert run(body_filter, DATA, 4096) == DATA
    headers = {"content-md5": [md5(DATA + b"x")]}
    _, body_filter = plan_body(headers, verified(sigv4.UNSIGNED_PAYLOAD), len(DATA))
    error = fails(body_filter, DATA, "BadDigest")
    assert error.message == "The Content-MD5 you specified did not match what we received."


def test_content_md5_malformed() -> None:
    refused({"content-md5": ["not-md5"]}, sigv4.UNSIGNED_PAYLOAD, 1, "InvalidDigest")


@pytest.mark.parametrize("name", ["x-amz-checksum-crc32", "x-amz-checksum-crc32c",
                                  "x-amz-checksum-crc64nvme", "x-amz-checksum-sha1",
                                  "x-amz-checksum-sha256"])
def test_header_checksum_on_plain_body(name: str) -> None:
    _, body_filter = plan_body({name: [checksum(name, DATA)],
                                "x-amz-checksum-type": ["FULL_OBJECT"],
                                "x-amz-checksum-algorithm": ["CRC32"]},
                               verified(sigv4.UNSIGNED_PAYLOAD), len(DATA))
    assert run(body_filter, DATA, 10000) == DATA
    _, body_filter = plan_body({name: [checksum(name, DATA)]},
                               verified(sigv4.UNSIGNED_PAYLOAD), len(DATA))
    fails(body_filter, DATA[1:] + b"!", "BadDigest")


# -- STREAMING-AWS4-HMAC-SHA256-PAYLOAD -----------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 1000, 8192, 65536, 70000])
@pytest.mark.parametrize("step", [None, 1 << 20, 1, 4093])
def test_signed_chunks(chunk_size: int, step: int | None) -> None:
    data = DATA if chunk_size > 100 else DATA[:300]
    if step == 1 and chunk_size > 100:
        data = data[:5000]
    body = signed_body(split(data, chunk_size))
    headers = streaming_headers(sigv4.STREAMING_SIGNED, len(data))
    plan, body_filter = plan_body(headers, verified(sigv4.STREAMING_SIGNED), len(body))
    assert plan == BodyPlan(len(data), sigv4.UNSIGNED_PAYLOAD, {})
    assert run(body_filter, body, step) == data


def test_signed_chunks_empty_body() -> None:
    body = signed_body([])
    headers = streaming_headers(sigv4.STREAMING_SIGNED, 0)
    plan, body_filter = plan_body(headers, verified(sigv4.STREAMING_SIGNED), len(body))
    assert plan == BodyPlan(0, sigv4.UNSIGNED_PAYLOAD, {})
    assert run(body_filter, body) == b""


def test_signed_chunks_other_encoding_kept_http_chunked() -> None:
    data = b"gzipped bytes"
    headers = streaming_headers(sigv4.STREAMING_SIGNED, len(data))
    headers["content-encoding"] = ["aws-chunked,gzip", "br"]
    plan, body_filter = plan_body(headers, verified(sigv4.STREAMING_SIGNED), None)
    assert plan == BodyPlan(len(data), sigv4.UNSIGNED_PAYLOAD, {"content-encoding": "gzip,br"})
    assert run(body_filter, signed_body([data])) == data


def test_signed_chunk_tampered() -> None:
    chunks = split(DATA, 8192)
    sent = list(chunks)
    sent[3] = sent[3][:100] + b"#" + sent[3][101:]
    body = signed_body(chunks, sent=sent)
    _, body_filter = plan_body(streaming_headers(sigv4.STREAMING_SIGNED, len(DATA)),
                               verified(sigv4.STREAMING_SIGNED), len(body))
    # Raised by feed, at the end of the bad chunk: the three good chunks went out first.
    boundary = body.index(sent[3]) + len(sent[3])
    out = body_filter.feed(body[:boundary - 1])
    assert out.startswith(b"".join(chunks[:3]))
    with pytest.raises(S3Error) as info:
        body_filter.feed(body[boundary - 1:])
    assert (info.value.code, info.value.status) == ("SignatureDoesNotMatch", 403)
    with pytest.raises(S3Error):
        body_filter.finish()


def test_signed_chunks_with_wrong_seed() -> None:
    body = signed_body([b"data"])
    other = sigv4.Verified("AKIDCLIENT", KEY, "f" * 64, AMZ_DATE, SCOPE, sigv4.STREAMING_SIGNED)
    _, body_filter = plan_body(streaming_headers(sigv4.STREAMING_SIGNED, 4), other, len(body))
    fails(body_filter, body, "SignatureDoesNotMatch", 403)


def test_signed_chunks_short_body() -> None:
    body = signed_body([b"data"])
    _, body_filter = plan_body(streaming_headers(sigv4.STREAMING_SIGNED, 4),
                               verified(sigv4.STREAMING_SIGNED), len(body))
    fails(body_filter, body[:-10], "IncompleteBody")  # cut inside the final chunk header
    _, body_filter = plan_body(streaming_headers(sigv4.STREAMING_SIGNED, 4),
                               verified(sigv4.STREAMING_SIGNED), len(body))
    assert run(body_filter, body[:-2]) == b"data"  # a missing last CRLF is tolerated


def test_signed_chunks_wrong_decoded_length() -> None:
    body = signed_body([b"data"])
    _, body_filter = plan_body(streaming_headers(sigv4.STREAMING_SIGNED, 5),
                               verified(sigv4.STREAMING_SIGNED), len(body))
    fails(body_filter, body, "IncompleteBody")


def test_signed_chunks_content_md5_and_header_checksum() -> None:
    body = signed_body(split(DATA, 10000))
    headers = streaming_headers(sigv4.STREAMING_SIGNED, len(DATA), content_md5=md5(DATA),
                                x_amz_checksum_crc32c=checksum("x-amz-checksum-crc32c", DATA))
    _, body_filter = plan_body(headers, verified(sigv4.STREAMING_SIGNED), len(body))
    assert run(body_filter, body, 3000) == DATA
    headers["content-md5"] = [md5(b"other")]
    _, body_filter = plan_body(headers, verified(sigv4.STREAMING_SIGNED), len(body))
    error = fails(body_filter, body, "BadDigest")
    assert "Content-MD5" in error.message


def test_missing_decoded_content_length() -> None:
    headers = streaming_headers(sigv4.STREAMING_SIGNED, 0)
    del headers["x-amz-decoded-content-length"]
    for payload_hash in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER,
                         sigv4.STREAMING_UNSIGNED_TRAILER):
        error = refused(headers, payload_hash, 100, "MissingContentLength", 411)
        assert "x-amz-decoded-content-length" in error.reason


@pytest.mark.parametrize("value", ["", "-1", "1.0", "0x10", "ten", "1 2"])
def test_bad_decoded_content_length(value: str) -> None:
    headers = streaming_headers(sigv4.STREAMING_SIGNED, 0)
    headers["x-amz-decoded-content-length"] = [value]
    refused(headers, sigv4.STREAMING_SIGNED, 100, "InvalidArgument")


def test_repeated_decoded_content_length() -> None:
    headers = streaming_headers(sigv4.STREAMING_SIGNED, 0)
    headers["x-amz-decoded-content-length"] = ["4", "4"]
    refused(headers, sigv4.STREAMING_SIGNED, 100, "InvalidArgument")


@pytest.mark.parametrize("value", ["\xb2", "1\xb9", "\xb3"])
def test_superscript_decoded_content_length(value: str) -> None:
    headers = streaming_headers(sigv4.STREAMING_SIGNED, 0)
    headers["x-amz-decoded-content-length"] = [value]
    refused(headers, sigv4.STREAMING_SIGNED, 100, "InvalidArgument")


def test_trailer_needs_trailer_mode() -> None:
    headers = streaming_headers(sigv4.STREAMING_SIGNED, 4, "x-amz-checksum-crc32")
    refused(headers, sigv4.STREAMING_SIGNED, 100, "InvalidRequest")


# -- trailers ------------------------------------------------------------------------------

TRAILER_MODES = [sigv4.STREAMING_SIGNED_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER]
ALGORITHMS = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"]


def trailer_body(mode: str, chunks: Sequence[bytes], trailers: Sequence[tuple[str, str]]
                 ) -> bytes:
    if mode == sigv4.STREAMING_SIGNED_TRAILER:
        return signed_body(chunks, trailers)
    return unsigned_body(chunks, trailers)


@pytest.mark.parametrize("mode", TRAILER_MODES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 70000])
def test_trailer_bodies(mode: str, algorithm: str, size: int) -> None:
    name = f"x-amz-checksum-{algorithm}"
    data = (DATA * 2)[:size]
    value = checksum(name, data)
    body = trailer_body(mode, split(data, 8000), [(name, value)])
    headers = streaming_headers(mode, size, name)
    plan, body_filter = plan_body(headers, verified(mode), len(body))
    expected = framed(data, name, value)
    assert plan == BodyPlan(len(expected), sigv4.STREAMING_UNSIGNED_TRAILER, {
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(size),
        "x-amz-trailer": name,
    })
    assert run(body_filter, body, 5001) == expected


@pytest.mark.parametrize("mode", TRAILER_MODES)
def test_trailer_name_any_case_and_other_encodings(mode: str) -> None:
    data = b"x" * 10
    value = checksum("x-amz-checksum-crc32", data)
    body = trailer_body(mode, [data], [("x-amz-checksum-crc32", value)])
    headers = streaming_headers(mode, 10, " X-Amz-Checksum-CRC32 ")
    headers["content-encoding"] = ["gzip,aws-chunked"]
    plan, body_filter = plan_body(headers, verified(mode), None)
    assert plan.headers == {
        "content-encoding": "aws-chunked,gzip",
        "x-amz-decoded-content-length": "10",
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    assert run(body_filter, body) == framed(data, "x-amz-checksum-crc32", value)
    assert plan.length == len(framed(data, "x-amz-checksum-crc32", value))


@pytest.mark.parametrize("mode", TRAILER_MODES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_wrong_trailer_checksum(mode: str, algorithm: str) -> None:
    name = f"x-amz-checksum-{algorithm}"
    body = trailer_body(mode, split(DATA, 9000), [(name, checksum(name, DATA + b"!"))])
    _, body_filter = plan_body(streaming_headers(mode, len(DATA), name), verified(mode),
                               len(body))
    # Everything but the end went out; finish refuses and returns no trailer.
    for piece in split(body, 7777):
        body_filter.feed(piece)
    with pytest.raises(S3Error) as info:
        body_filter.finish()
    assert (info.value.code, info.value.status) == ("BadDigest", 400)
    assert info.value.message == (f"The x-amz-checksum-{algorithm} you specified did not match "
                                  "the calculated checksum.")


@pytest.mark.parametrize("mode", TRAILER_MODES)
def test_malformed_trailer_value(mode: str) -> None:
    name = "x-amz-checksum-crc32"
    body = trailer_body(mode, [b"abc"], [(name, "not base64!")])
    _, body_filter = plan_body(streaming_headers(mode, 3, name), verified(mode), len(body))
    fails(body_filter, body, "InvalidRequest")


@pytest.mark.parametrize("mode", TRAILER_MODES)
def test_missing_trailer(mode: str) -> None:
    name = "x-amz-checksum-crc32"
    body = trailer_body(mode, [b"abc"], [])
    _, body_filter = plan_body(streaming_headers(mode, 3, name), verified(mode), len(body))
    with pytest.raises(S3Error) as info:
        run(body_filter, body)
    assert info.value.code in ("MalformedTrailerError", "InvalidRequest")


def test_signed_trailer_signature_wrong() -> None:
    name = "x-amz-checksum-crc32"
    value = checksum(name, b"abc")
    body = signed_body([b"abc"], [(name, value)])
    start = body.index(b"x-amz-trailer-signature:") + len(b"x-amz-trailer-signature:")
    forged = body[:start] + (b"0" if body[start:start + 1] != b"0" else b"1") + body[start + 1:]
    _, body_filter = plan_body(streaming_headers(sigv4.STREAMING_SIGNED_TRAILER, 3, name),
                               verified(sigv4.STREAMING_SIGNED_TRAILER), len(forged))
    fails(body_filter, forged, "SignatureDoesNotMatch", 403)


def test_signed_trailer_chunk_tampered() -> None:
    name = "x-amz-checksum-crc32"
    chunks = [b"abc", b"def"]
    # The checksum matches the tampered data: only the chunk signature can tell.
    body = signed_body(chunks, [(name, checksum(name, b"abcdeF"))], sent=[b"abc", b"deF"])
    _, body_filter = plan_body(streaming_headers(sigv4.STREAMING_SIGNED_TRAILER, 6, name),
                               verified(sigv4.STREAMING_SIGNED_TRAILER), len(body))
    fails(body_filter, body, "SignatureDoesNotMatch", 403)


@pytest.mark.parametrize("mode", TRAILER_MODES)
def test_two_trailer_names(mode: str) -> None:
    headers = streaming_headers(mode, 3, "x-amz-checksum-crc32, x-amz-checksum-sha256")
    error = refused(headers, mode, 100, "InvalidRequest")
    assert error.message == "Only one trailing checksum is supported."
    headers["x-amz-trailer"] = ["x-amz-checksum-crc32", "x-amz-checksum-sha256"]
    refused(headers, mode, 100, "InvalidRequest")


@pytest.mark.parametrize("mode", TRAILER_MODES)
@pytest.mark.parametrize("trailer", ["content-md5", "x-amz-meta-a", "x-amz-checksum-md5"])
def test_unsupported_trailer(mode: str, trailer: str) -> None:
    refused(streaming_headers(mode, 3, trailer), mode, 100, "InvalidRequest")


def test_unsigned_trailer_mode_without_trailer() -> None:
    body = unsigned_body([b"abc", b"de"])
    plan, body_filter = plan_body(streaming_headers(sigv4.STREAMING_UNSIGNED_TRAILER, 5),
                                  verified(sigv4.STREAMING_UNSIGNED_TRAILER), len(body))
    assert plan == BodyPlan(5, sigv4.UNSIGNED_PAYLOAD, {})
    assert run(body_filter, body) == b"abcde"


def test_chunk_signer_matches_sigv4() -> None:
    signer = ChunkSigner(verified(sigv4.STREAMING_SIGNED))
    sha = hashlib.sha256(b"x").hexdigest()
    assert signer.chunk_signature(SEED, sha) == chunk_signature(SEED, b"x")
    assert signer.trailer_signature("a" * 64, sha) == sigv4.signature(
        KEY, f"AWS4-HMAC-SHA256-TRAILER\n{AMZ_DATE}\n{SCOPE}\n{'a' * 64}\n{sha}")


# -- Hypothesis: any body, any framing, any split ------------------------------------------

MODES = [sigv4.STREAMING_SIGNED, *TRAILER_MODES, sigv4.UNSIGNED_PAYLOAD, "sha256"]


def encode(mode: str, data: bytes, chunk_size: int, algorithm: str,
           sent: bytes | None = None) -> tuple[Headers, str, bytes]:
    """(headers, payload hash, client body) for ``data``; ``sent`` is what goes on the wire."""
    sent = data if sent is None else sent
    name = f"x-amz-checksum-{algorithm}"
    if mode in (sigv4.UNSIGNED_PAYLOAD, "sha256"):
        payload_hash = (hashlib.sha256(data).hexdigest() if mode == "sha256"
                        else sigv4.UNSIGNED_PAYLOAD)
        return {name: [checksum(name, data)]}, payload_hash, sent
    trailer = None if mode == sigv4.STREAMING_SIGNED else name
    headers = streaming_headers(mode, len(data), trailer)
    if trailer is None:
        headers[name] = [checksum(name, data)]
        return headers, mode, signed_body(split(data, chunk_size), sent=split(sent, chunk_size))
    trailers = [(name, checksum(name, data))]
    if mode == sigv4.STREAMING_SIGNED_TRAILER:
        body = signed_body(split(data, chunk_size), trailers, sent=split(sent, chunk_size))
    else:
        body = unsigned_body(split(sent, chunk_size), trailers)
    return headers, mode, body


def feed_in_pieces(body_filter: BodyFilter, body: bytes, cuts: list[int]) -> bytes:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    out = [body_filter.feed(body[a:b]) for a, b in zip(points, points[1:])]
    out.append(body_filter.finish())
    return b"".join(out)


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=300) | st.binary(min_size=65530, max_size=65600),
    chunk_size=st.integers(1, 70000),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=6),
    mode=st.sampled_from(MODES),
    algorithm=st.sampled_from(ALGORITHMS),
)
def test_any_body_reaches_upstream_exactly(data: bytes, chunk_size: int, cuts: list[int],
                                           mode: str, algorithm: str) -> None:
    headers, payload_hash, body = encode(mode, data, chunk_size, algorithm)
    plan, body_filter = plan_body(headers, verified(payload_hash), len(body))
    out = feed_in_pieces(body_filter, body, cuts)
    assert len(out) == plan.length
    if payload_hash in (sigv4.STREAMING_SIGNED_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER):
        name = f"x-amz-checksum-{algorithm}"
        assert out == framed(data, name, checksum(name, data))
    else:
        assert out == data


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=300),
    chunk_size=st.integers(1, 400),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=4),
    mode=st.sampled_from(MODES),
    algorithm=st.sampled_from(ALGORITHMS),
    position=st.integers(0, 1 << 20),
    flip=st.integers(1, 255),
)
def test_any_corrupted_payload_byte_is_refused(
    data: bytes, chunk_size: int, cuts: list[int], mode: str, algorithm: str, position: int,
    flip: int,
) -> None:
    position %= len(data)
    sent = data[:position] + bytes([data[position] ^ flip]) + data[position + 1:]
    headers, payload_hash, body = encode(mode, data, chunk_size, algorithm, sent)
    plan, body_filter = plan_body(headers, verified(payload_hash), len(body))
    with pytest.raises(S3Error) as info:
        feed_in_pieces(body_filter, body, cuts)
    expected = {
        sigv4.STREAMING_SIGNED: "SignatureDoesNotMatch",
        sigv4.STREAMING_SIGNED_TRAILER: "SignatureDoesNotMatch",
        sigv4.STREAMING_UNSIGNED_TRAILER: "BadDigest",
        sigv4.UNSIGNED_PAYLOAD: "BadDigest",
    }.get(payload_hash, "XAmzContentSHA256Mismatch")
    assert info.value.code == expected


