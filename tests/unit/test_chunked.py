# -*- test-case-name: tests.unit.test_chunked -*-
"""Tests for s3relay.body.chunked: AWS's published vector, real botocore bodies,
and Hypothesis for splits, garbage and framing lengths.

The chunk-signature arithmetic is written out here (``Signer``) from the
published algorithm, independently of s3relay.s3.sigv4, and checked against
AWS's example signatures first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import zlib
from typing import Sequence

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.body.chunked import MAX_LINE, AwsChunkedDecoder, UnsignedTrailerFramer
from s3relay.body.digests import PayloadChecker
from s3relay.s3.errors import S3Error

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AMZ_DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
AWS_SIGNATURES = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
EMPTY = hashlib.sha256(b"").hexdigest()


class Signer:
    """Chunk and trailer signatures as DESIGN.md §3 defines them."""

    def __init__(self, secret: str = SECRET, amz_date: str = AMZ_DATE, scope: str = SCOPE) -> None:
        key = ("AWS4" + secret).encode()
        for part in scope.split("/"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self.key = key
        self.prefix = f"{amz_date}\n{scope}\n"

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def chunk_signature(self, previous_signature: str, chunk_sha256_hex: str) -> str:
        return self._sign(
            f"AWS4-HMAC-SHA256-PAYLOAD\n{self.prefix}{previous_signature}\n{EMPTY}\n"
            f"{chunk_sha256_hex}"
        )

    def trailer_signature(self, previous_signature: str, trailer_sha256_hex: str) -> str:
        return self._sign(
            f"AWS4-HMAC-SHA256-TRAILER\n{self.prefix}{previous_signature}\n{trailer_sha256_hex}"
        )


def signed_body(
    chunks: Sequence[bytes],
    trailers: Sequence[tuple[str, str]] = (),
    signer: Signer | None = None,
    seed: str = SEED,
) -> bytes:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER) body; the final 0-chunk is added."""
    signer = signer or Signer()
    out, previous = [], seed
    for chunk in [*(c for c in chunks if c), b""]:
        previous = signer.chunk_signature(previous, hashlib.sha256(chunk).hexdigest())
        out.append(b"%x;chunk-signature=%s\r\n" % (len(chunk), previous.encode()))
        if chunk:
            out.append(chunk + b"\r\n")
    if trailers:
        text = "".join(f"{name}:{value}\n" for name, value in trailers)
        sig = signer.trailer_signature(previous, hashlib.sha256(text.encode()).hexdigest())
        for name, value in trailers:
            out.append(f"{name}:{value}\r\n".encode())
        out.append(f"x-amz-trailer-signature:{sig}\r\n".encode())
    out.append(b"\r\n")
    return b"".join(out)


def unsigned_body(chunks: Sequence[bytes], trailers: Sequence[tuple[str, str]] = ()) -> bytes:
    out = [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c]
    out.append(b"0\r\n")
    out += [f"{name}:{value}\r\n".encode() for name, value in trailers]
    out.append(b"\r\n")
    return b"".join(out)


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def decode(
    body: bytes,
    length: int,
    signed: bool = True,
    trailer_names: Sequence[str] = (),
    step: int | None = None,
    seed: str = SEED,
) -> tuple[bytes, AwsChunkedDecoder]:
    decoder = AwsChunkedDecoder(
        length, Signer() if signed else None, seed if signed else None, trailer_names
    )
    step = step or len(body) or 1
    out = []
    for i in range(0, len(body), step):
        out += decoder.feed(body[i : i + step])
    decoder.finish()
    assert decoder.done
    return b"".join(out), decoder


def aws_example_body() -> bytes:
    return (
        b"10000;chunk-signature=" + AWS_SIGNATURES[0].encode() + b"\r\n" + b"a" * 65536 + b"\r\n"
        b"400;chunk-signature=" + AWS_SIGNATURES[1].encode() + b"\r\n" + b"a" * 1024 + b"\r\n"
        b"0;chunk-signature=" + AWS_SIGNATURES[2].encode() + b"\r\n\r\n"
    )


# -- AWS's published example -------------------------------------------------


def test_signer_reproduces_aws_example() -> None:
    assert signed_body([b"a" * 65536, b"a" * 1024]) == aws_example_body()


@pytest.mark.parametrize("step", [None, 1, 7, 65536, 65600])
def test_aws_example_decodes(step: int | None) -> None:
    payload, decoder = decode(aws_example_body(), 66560, step=step)
    assert payload == b"a" * 66560
    assert decoder.trailers == {}


@pytest.mark.parametrize("chunk,offset", [(0, 0), (0, 100), (0, 65535), (1, 0), (1, 1023)])
def test_aws_example_flipped_data_byte(chunk: int, offset: int) -> None:
    body = bytearray(aws_example_body())
    header = body.index(AWS_SIGNATURES[chunk].encode())
    body[body.index(b"\r\n", header) + 2 + offset] ^= 0x01
    with pytest.raises(S3Error) as caught:
        decode(bytes(body), 66560)
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.status == 403


@pytest.mark.parametrize("which", [0, 1, 2])
def test_aws_example_flipped_signature_digit(which: int) -> None:
    body = aws_example_body()
    sig = AWS_SIGNATURES[which]
    flipped = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    with pytest.raises(S3Error) as caught:
        decode(body.replace(sig.encode(), flipped.encode()), 66560)
    assert caught.value.code == "SignatureDoesNotMatch"


def test_wrong_seed() -> None:
    with pytest.raises(S3Error) as caught:
        decode(aws_example_body(), 66560, seed="0" * 64)
    assert caught.value.code == "SignatureDoesNotMatch"


def test_error_is_sticky() -> None:
    decoder = AwsChunkedDecoder(66560, Signer(), "0" * 64, [])
    with pytest.raises(S3Error):
        decoder.feed(aws_example_body())
    with pytest.raises(S3Error):
        decoder.feed(b"")
    with pytest.raises(S3Error):
        decoder.finish()


def test_signature_checked_when_data_complete() -> None:
    body = signed_body([b"x" * 10]).replace(b"x" * 10, b"y" * 10)
    decoder = AwsChunkedDecoder(10, Signer(), SEED, [])
    header_end = body.index(b"\r\n") + 2
    assert decoder.feed(body[: header_end + 9]) == [b"y" * 9]
    with pytest.raises(S3Error) as caught:
        decoder.feed(body[header_end + 9 : header_end + 10])
    assert caught.value.code == "SignatureDoesNotMatch"


# -- signed trailers ---------------------------------------------------------


def test_signed_trailer() -> None:
    data = b"hello world" * 1000
    body = signed_body([data[:8192], data[8192:]], [("x-amz-checksum-crc32", crc32_b64(data))])
    for step in (None, 1, 13):
        payload, decoder = decode(body, len(data), trailer_names=["x-amz-checksum-crc32"], step=step)
        assert payload == data
        assert decoder.trailers == {"x-amz-checksum-crc32": crc32_b64(data)}


def test_signed_trailer_bad_signature() -> None:
    body = signed_body([b"abc"], [("x-amz-checksum-crc32", crc32_b64(b"abc"))])
    tampered = body.replace(crc32_b64(b"abc").encode(), crc32_b64(b"abd").encode())
    with pytest.raises(S3Error) as caught:
        decode(tampered, 3, trailer_names=["x-amz-checksum-crc32"])
    assert caught.value.code == "SignatureDoesNotMatch"


def test_signed_trailer_signature_required() -> None:
    body = signed_body([b"abc"], [("x-amz-checksum-crc32", crc32_b64(b"abc"))])
    start = body.index(b"x-amz-trailer-signature:")
    body = body[:start] + body[body.index(b"\r\n", start) + 2 :]
    with pytest.raises(S3Error) as caught:
        decode(body, 3, trailer_names=["x-amz-checksum-crc32"])
    assert caught.value.code == "MalformedTrailerError"


def test_signed_trailer_case_and_spaces() -> None:
    """Trailer names in any case, blanks around ':'; the client signed what it sent."""
    signer = Signer()
    value = crc32_b64(b"abc")
    body = signed_body([b"abc"])[: -len(b"\r\n")]
    final_sig = body.rsplit(b"chunk-signature=", 1)[1][:64].decode()
    line = f"X-Amz-Checksum-CRC32 : {value}"
    sig = signer.trailer_signature(final_sig, hashlib.sha256((line + "\n").encode()).hexdigest())
    body += f"{line}\r\nX-Amz-Trailer-Signature: {sig}\r\n\r\n".encode()
    _, decoder = decode(body, 3, trailer_names=["x-amz-checksum-crc32"])
    assert decoder.trailers == {"x-amz-checksum-crc32": value}


def test_undeclared_trailer() -> None:
    body = signed_body([b"abc"], [("x-amz-checksum-crc32", crc32_b64(b"abc"))])
    for names in ([], ["x-amz-checksum-sha256"]):
        with pytest.raises(S3Error):
            decode(body, 3, trailer_names=names)


def test_declared_trailer_missing() -> None:
    with pytest.raises(S3Error) as caught:
        decode(unsigned_body([b"abc"]), 3, signed=False, trailer_names=["x-amz-checksum-crc32"])
    assert caught.value.code == "MalformedTrailerError"


# -- unsigned bodies and quirks ----------------------------------------------


def test_unsigned_trailer_with_extensions_and_case() -> None:
    value = crc32_b64(b"abcdef")
    body = (
        b"3;foo=bar\r\nabc\r\n3;x\r\ndef\r\n0\r\n"
        + f"X-Amz-Checksum-Crc32 :\t{value} \r\n\r\n".encode()
    )
    payload, decoder = decode(body, 6, signed=False, trailer_names=["x-amz-checksum-crc32"])
    assert payload == b"abcdef"
    assert decoder.trailers == {"x-amz-checksum-crc32": value}


def test_missing_final_crlf_tolerated() -> None:
    body = signed_body([b"abc"])
    assert body.endswith(b"\r\n\r\n")
    payload, _ = decode(body[:-2], 3)
    assert payload == b"abc"
    payload, _ = decode(unsigned_body([b"abc"])[:-2], 3, signed=False)
    assert payload == b"abc"


def test_missing_blank_line_after_trailers_tolerated() -> None:
    body = unsigned_body([b"abc"], [("x-amz-checksum-crc32", crc32_b64(b"abc"))])
    _, decoder = decode(body[:-2], 3, signed=False, trailer_names=["x-amz-checksum-crc32"])
    assert decoder.trailers["x-amz-checksum-crc32"] == crc32_b64(b"abc")


def test_empty_body() -> None:
    payload, _ = decode(signed_body([]), 0)
    assert payload == b""
    payload, _ = decode(b"0\r\n\r\n", 0, signed=False)
    assert payload == b""


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"3\r\nabc",
        b"3\r\nabc\r\n",
        b"3\r\nabc\r\n0",
        b"3\r\nabc\r\n0\r\n\r",
    ],
)
def test_truncated_unsigned(body: bytes) -> None:
    decoder = AwsChunkedDecoder(3, None, None, [])
    decoder.feed(body)
    assert not decoder.done
    with pytest.raises(S3Error) as caught:
        decoder.finish()
    assert caught.value.code == "IncompleteBody"


@pytest.mark.parametrize(
    "body",
    [
        b"ffffffffffffffff\r\n",
        b"10000000000000000\r\n",
        b"-3\r\nabc\r\n",
        b"\r\nabc\r\n",
        b";x\r\n",
        b"0x3\r\nabc\r\n",
        b" 3\r\nabc\r\n",
        b"3_\r\n",
        b"3\nabc\r\n",
        b"3\r\nabcX\n",
        b"3\r\nabc\r\n0\r\n\r\nmore",
        b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n",
        b"4\r\nabcd\r\n",
        b"2\r\nab\r\n0\r\n\r\n",
        b"3" * (MAX_LINE + 10),
        b"3;" + b"e" * MAX_LINE + b"\r\nabc\r\n",
    ],
)
def test_malformed_unsigned(body: bytes) -> None:
    decoder = AwsChunkedDecoder(3, None, None, [])
    with pytest.raises(S3Error) as caught:
        out = decoder.feed(body)
        assert sum(map(len, out)) <= 3
        decoder.finish()
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "header",
    [
        b"3\r\n",
        b"3;chunk-signature=abc\r\n",
        b"3;chunk-signature=" + b"g" * 64 + b"\r\n",
        b"3;chunk-signature=" + b"a" * 65 + b"\r\n",
        b"3;foo=bar;chunk-signature=" + b"a" * 64 + b"\r\n",
    ],
)
def test_malformed_signed_header(header: bytes) -> None:
    decoder = AwsChunkedDecoder(3, Signer(), SEED, [])
    with pytest.raises(S3Error) as caught:
        decoder.feed(header)
    assert caught.value.code == "InvalidRequest"


def test_long_header_across_feeds() -> None:
    decoder = AwsChunkedDecoder(3, None, None, [])
    for _ in range(MAX_LINE // 100):
        decoder.feed(b"0" * 100)
    with pytest.raises(S3Error):
        decoder.feed(b"0" * 200)


def test_header_split_across_crlf() -> None:
    decoder = AwsChunkedDecoder(3, None, None, [])
    out = []
    for piece in (b"3\r", b"\nab", b"c\r", b"\n0\r", b"\n\r", b"\n"):
        out += decoder.feed(piece)
    decoder.finish()
    assert b"".join(out) == b"abc"


# -- real client bytes -------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 5000, 16384, 70000])
def test_botocore_unsigned_trailer_body(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    wrapper = AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=16384,
    )
    body = wrapper.read()
    for step in (None, 1000, 3):
        if step == 3 and size > 5000:
            continue
        payload, decoder = decode(body, size, False, ["x-amz-checksum-crc32"], step)
        assert payload == data
        checker = PayloadChecker(None, None, {}, trailer_names=["x-amz-checksum-crc32"])
        checker.update(payload)
        for name, value in decoder.trailers.items():
            checker.expect(name, value)
        checker.verify()
    # A corrupted payload fails the trailer check.
    if size:
        checker = PayloadChecker(None, None, {}, trailer_names=["x-amz-checksum-crc32"])
        checker.update(b"!" + data[1:])
        checker.expect("x-amz-checksum-crc32", decoder.trailers["x-amz-checksum-crc32"])
        with pytest.raises(S3Error) as caught:
            checker.verify()
        assert caught.value.code == "BadDigest"


# -- Hypothesis --------------------------------------------------------------


@st.composite
def chunked_case(draw: st.DrawFn) -> tuple[bytes, list[bytes], list[int]]:
    data = draw(st.binary(max_size=3000))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    splits = draw(st.lists(st.integers(1, 600), max_size=30))
    return data, chunks, splits


def feed_split(decoder: AwsChunkedDecoder, body: bytes, splits: Sequence[int]) -> bytes:
    out, pos = [], 0
    for step in splits:
        out += decoder.feed(body[pos : pos + step])
        pos += step
    out += decoder.feed(body[pos:])
    decoder.finish()
    return b"".join(out)


@given(chunked_case(), st.booleans(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_any_split_roundtrips(
    case: tuple[bytes, list[bytes], list[int]], signed: bool, trailer: bool
) -> None:
    data, chunks, splits = case
    trailers = [("x-amz-checksum-crc32", crc32_b64(data))] if trailer else []
    names = [n for n, _ in trailers]
    body = signed_body(chunks, trailers) if signed else unsigned_body(chunks, trailers)
    decoder = AwsChunkedDecoder(len(data), Signer() if signed else None, SEED, names)
    assert feed_split(decoder, body, splits) == data
    assert decoder.done
    assert decoder.trailers == dict(trailers)


@given(st.binary(min_size=1, max_size=300))
@settings(max_examples=200, deadline=None)
def test_one_byte_feeds(data: bytes) -> None:
    body = signed_body([data[: len(data) // 2], data[len(data) // 2 :]])
    decoder = AwsChunkedDecoder(len(data), Signer(), SEED, [])
    assert feed_split(decoder, body, [1] * len(body)) == data


def only_s3_errors(decoder: AwsChunkedDecoder, body: bytes, splits: Sequence[int], limit: int) -> None:
    total = 0
    try:
        pos = 0
        for step in [*splits, len(body)]:
            total += sum(map(len, decoder.feed(body[pos : pos + step])))
            assert total <= limit
            pos += step
        decoder.finish()
    except S3Error:
        pass
    assert total <= limit


@given(st.binary(max_size=500), st.integers(0, 400), st.lists(st.integers(1, 50)), st.booleans())
@settings(max_examples=400, deadline=None)
def test_garbage_raises_only_s3_errors(
    body: bytes, length: int, splits: list[int], signed: bool
) -> None:
    decoder = AwsChunkedDecoder(
        length, Signer() if signed else None, SEED, ["x-amz-checksum-crc32"] if length % 2 else []
    )
    only_s3_errors(decoder, body, splits, length)


@st.composite
def mutated_body(draw: st.DrawFn) -> tuple[bytes, int, bool]:
    data, chunks, _ = draw(chunked_case())
    signed = draw(st.booleans())
    trailers = [("x-amz-checksum-crc32", crc32_b64(data))] if draw(st.booleans()) else []
    body = bytearray(signed_body(chunks, trailers) if signed else unsigned_body(chunks, trailers))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "size"]))
        at = draw(st.integers(0, len(body)))
        if kind == "truncate":
            del body[at:]
        elif kind == "flip" and at < len(body):
            body[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            body[at:at] = draw(
                st.sampled_from([b"ffffffffffffffff", b"-1", b"\r\n", b";", b"0\r\n", b":", b"x"])
            )
        elif kind == "size":
            body[0:0] = draw(st.sampled_from([b"ffffffffffffffff\r\n", b"\r\n", b"-5\r\n", b"1g\r\n"]))
    return bytes(body), len(data), signed


@given(mutated_body(), st.lists(st.integers(1, 200), max_size=10))
@settings(max_examples=400, deadline=None)
def test_mutations_raise_only_s3_errors(case: tuple[bytes, int, bool], splits: list[int]) -> None:
    body, length, signed = case
    decoder = AwsChunkedDecoder(
        length, Signer() if signed else None, SEED, ["x-amz-checksum-crc32"]
    )
    only_s3_errors(decoder, body, splits, length)


# -- UnsignedTrailerFramer ---------------------------------------------------


def frame(data: bytes, name: str, value: str, chunk_size: int, splits: Sequence[int]) -> bytes:
    framer = UnsignedTrailerFramer(len(data), name, chunk_size)
    out, pos = [], 0
    for step in [*splits, len(data)]:
        out.append(framer.feed(data[pos : pos + step]))
        pos += step
    out.append(framer.finish(value))
    return b"".join(out)


@given(
    st.integers(0, 5000),
    st.sampled_from([1, 2, 15, 16, 17, 255, 256, 1000, 4096]),
    st.lists(st.integers(0, 700), max_size=20),
)
@settings(max_examples=300, deadline=None)
def test_framer_length_and_roundtrip(size: int, chunk_size: int, splits: list[int]) -> None:
    data = bytes(i % 251 for i in range(size))
    value = crc32_b64(data)
    name = "x-amz-checksum-crc32"
    framed = frame(data, name, value, chunk_size, splits)
    assert len(framed) == UnsignedTrailerFramer.framed_length(size, name, chunk_size)
    payload, decoder = decode(framed, size, signed=False, trailer_names=[name])
    assert payload == data
    assert decoder.trailers == {name: value}


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 2 * 65536, 200000])
@pytest.mark.parametrize(
    "name,value_length",
    [
        ("x-amz-checksum-crc32", 8),
        ("x-amz-checksum-crc32c", 8),
        ("x-amz-checksum-crc64nvme", 12),
        ("x-amz-checksum-sha1", 28),
        ("x-amz-checksum-sha256", 44),
    ],
)
def test_framer_default_chunks(size: int, name: str, value_length: int) -> None:
    data = b"q" * size
    digest_size = {8: 4, 12: 8, 28: 20, 44: 32}[value_length]
    value = base64.b64encode(b"\x01" * digest_size).decode()
    assert len(value) == value_length
    framed = frame(data, name, value, 65536, [100, 70000])
    assert len(framed) == UnsignedTrailerFramer.framed_length(size, name)
    assert framed.endswith(f"0\r\n{name}:{value}\r\n\r\n".encode())
    payload, decoder = decode(framed, size, signed=False, trailer_names=[name])
    assert payload == data


def test_framer_errors() -> None:
    with pytest.raises(S3Error) as caught:
        UnsignedTrailerFramer.framed_length(10, "x-amz-checksum-md5")
    assert caught.value.code == "InvalidRequest"
    with pytest.raises(S3Error):
        UnsignedTrailerFramer(10, "x-amz-meta-foo")
    framer = UnsignedTrailerFramer(3, "x-amz-checksum-crc32")
    framer.feed(b"ab")
    with pytest.raises(ValueError):
        framer.finish(crc32_b64(b"ab"))
    with pytest.raises(ValueError):
        framer.feed(b"cd")
    for bad in ("AAAA", "AAAAAAAAAAAA", "AAA\rAA==", "not base64"):
        framer = UnsignedTrailerFramer(0, "x-amz-checksum-crc32")
        with pytest.raises(S3Error):
            framer.finish(bad)
