"""Encrypted PUT and GET end to end, in memory (tests.unit.memory), the upstream played by hand."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

import pytest

from s3relay.crypt.keys import KeyRing, generate_key_file, load_key_ring
from s3relay.crypt.layout import (
    SEGMENT,
    STORED_SEGMENT,
    requested_span,
    segment_count,
    stored_size,
)
from s3relay.crypt.segments import Opener, Sealer
from tests.unit.memory import Client, Message, Relay, config_text

MD5 = "3858f62230ac3c915f300c664312c63f"
META = ("x-amz-meta-s3relay-format", "x-amz-meta-s3relay-key-id", "x-amz-meta-s3relay-data-key")
NO_SUCH_KEY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
               b"<Message>The specified key does not exist.</Message><Key>key</Key>"
               b"<RequestId>UPSTREAMID</RequestId></Error>")


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = str(tmp_path / "kek-1.key")
    generate_key_file(path)
    return path


@pytest.fixture
def relay(key_file: str) -> Relay:
    return Relay(config_text() + f"\n[encryption]\nprefixes = bucket\nkey_files = {key_file}\n")


@pytest.fixture
def ring(key_file: str) -> KeyRing:
    return load_key_ring("encryption", "key_files", [key_file])


def only_response(client: Client) -> Message:
    responses = client.responses()
    assert len(responses) == 1, client.received()
    return responses[0]


def error_code(message: Message) -> str:
    found = re.search(rb"<Code>(.*?)</Code>", message.body)
    assert found is not None, message.body
    return found.group(1).decode()


def seal(ring: KeyRing, plaintext: bytes) -> tuple[bytes, dict[str, str]]:
    """An object of ``bucket/key`` as the relay stores it: its bytes and metadata."""
    data_key, metadata = ring.seal_metadata("bucket", b"key")
    sealer = Sealer(data_key)
    return sealer.feed(plaintext) + sealer.finish(), metadata


def head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def found(stored: bytes, metadata: dict[str, str]) -> bytes:
    """The upstream's answer to the relay's HEAD of a stored object."""
    return head("200 OK", {"Content-Length": str(len(stored)), "ETag": f'"{MD5}"', **metadata})


def decryption_failures(relay: Relay) -> bytes:
    sample = re.search(rb"^s3relay_decryption_failures_total (\S+)$", relay.metrics.render(),
                       re.MULTILINE)
    assert sample is not None
    return sample.group(1)


# (a) PUT


def test_put_goes_upstream_sealed(relay: Relay, ring: KeyRing) -> None:
    body = os.urandom(2 * SEGMENT + 1000)
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    client = relay.connect()
    client.send(relay.sign("PUT", "/bucket/key", {"Content-MD5": md5}, body))
    (call,) = relay.upstream.calls
    sent = call.request
    assert sent.start_line == "PUT /bucket/key HTTP/1.1" and sent.complete
    assert sent.header("content-length") == str(stored_size(len(body))) == str(len(sent.body))
    assert sent.header("x-amz-content-sha256") == "UNSIGNED-PAYLOAD"
    assert sent.header("content-md5") is None
    metadata = {name: sent.header(name) or "" for name in META}
    assert metadata["x-amz-meta-s3relay-format"] == "1"
    assert metadata["x-amz-meta-s3relay-key-id"] == "kek-1"
    data_key = ring.open_metadata("bucket", b"key", metadata)
    count = segment_count(len(body))
    opener = Opener(data_key, 0, count, count, 0, len(body))
    assert opener.feed(sent.body) + opener.finish() == body
    assert body[:SEGMENT] not in sent.body

    call.respond(head("200 OK", {"ETag": f'"{MD5}"', "Content-Length": "0"}))
    response = only_response(client)
    assert response.status == 200 and response.header("etag") == f'"{MD5}-0"'


def test_put_whose_body_fails_its_check_arrives_short(relay: Relay) -> None:
    body = os.urandom(SEGMENT + 10)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    client = relay.connect()
    client.send(relay.sign("PUT", "/bucket/key", {"Content-MD5": wrong}, body))
    (call,) = relay.upstream.calls
    assert call.aborted and len(call.request.body) < stored_size(len(body))
    response = only_response(client)
    assert response.status == 400 and error_code(response) == "BadDigest"


def test_put_answer_carries_no_stored_checksum(relay: Relay) -> None:
    client = relay.connect()
    client.send(relay.sign("PUT", "/bucket/key", body=b"hello"))
    relay.upstream.calls[0].respond(head("200 OK", {
        "ETag": f'"{MD5}"', "x-amz-checksum-crc64nvme": "AAAAAAAAAAA=",
        "x-amz-checksum-type": "FULL_OBJECT", "Content-Length": "0"}))
    response = only_response(client)
    assert response.status == 200 and response.header("etag") == f'"{MD5}-0"'
    assert response.header("x-amz-checksum-crc64nvme") is None


# (b) GET


@pytest.mark.parametrize("range_header", [
    "bytes=70000-140000", "bytes=0-0", "bytes=-100", "bytes=199990-", "bytes=65536-131071",
    "bytes=100-999999",
])
def test_ranged_get(relay: Relay, ring: KeyRing, range_header: str) -> None:
    plaintext = os.urandom(200_000)
    stored, metadata = seal(ring, plaintext)
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key", {"Range": range_header}))
    (lookup,) = relay.upstream.calls
    assert lookup.request.start_line == "HEAD /bucket/key HTTP/1.1"
    assert lookup.request.header("range") is None
    lookup.respond(found(stored, metadata))

    span = requested_span(range_header, len(plaintext))
    assert span is not None
    first, last = span.stored_range
    get = relay.upstream.calls[1]
    assert get.request.start_line == "GET /bucket/key HTTP/1.1"
    assert get.request.header("if-match") == f'"{MD5}"'
    assert get.request.header("range") == f"bytes={first}-{last}"
    assert first % STORED_SEGMENT == 0
    get.respond(head("206 Partial Content", {
        "Content-Length": str(last - first + 1), "Content-Range": f"bytes {first}-{last}/"
        f"{len(stored)}", "ETag": f'"{MD5}"', **metadata}) + stored[first:last + 1])

    response = only_response(client)
    assert response.status == 206 and response.complete
    assert response.body == plaintext[span.first:span.last + 1]
    assert response.header("content-length") == str(span.length)
    assert response.header("content-range") == f"bytes {span.first}-{span.last}/200000"
    assert response.header("etag") == f'"{MD5}-0"'
    assert b"x-amz-meta-s3relay-" not in response.head.lower()


@pytest.mark.parametrize("size", [0, 5, SEGMENT, 3 * SEGMENT + 7])
def test_whole_get(relay: Relay, ring: KeyRing, size: int) -> None:
    plaintext = os.urandom(size)
    stored, metadata = seal(ring, plaintext)
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key", {"If-Match": f'"{MD5}-0"'}))
    lookup = relay.upstream.calls[0]
    assert lookup.request.header("if-match") == f'"{MD5}"'  # the shown ETag read back
    lookup.respond(found(stored, metadata))
    get = relay.upstream.calls[1]
    assert get.request.header("range") is None
    assert get.request.header("if-match") == f'"{MD5}"'
    get.respond(found(stored, metadata) + stored)

    response = only_response(client)
    assert response.status == 200 and response.complete and response.body == plaintext
    assert response.header("content-length") == str(size)
    assert response.header("content-range") is None
    assert response.header("etag") == f'"{MD5}-0"'
    assert b"x-amz-meta-s3relay-" not in response.head.lower()


def test_head_reports_the_plaintext(relay: Relay, ring: KeyRing) -> None:
    stored, metadata = seal(ring, b"x" * 1000)
    client = relay.connect()
    client.send(relay.sign("HEAD", "/bucket/key"))
    (call,) = relay.upstream.calls
    assert call.request.start_line == "HEAD /bucket/key HTTP/1.1"
    call.respond(found(stored, metadata))
    response = client.responses()[0]
    assert response.status == 200 and response.header("content-length") == "1000"
    assert response.header("etag") == f'"{MD5}-0"'
    assert b"x-amz-meta-s3relay-" not in response.head.lower()


def test_ranged_get_across_parts(relay: Relay, ring: KeyRing) -> None:
    data_key, metadata = ring.seal_metadata("bucket", b"key", multipart=True)
    parts = [os.urandom(2 * SEGMENT), os.urandom(1000)]
    sealers = [Sealer(data_key, number) for number in (1, 2)]
    sealed = [sealer.feed(part) + sealer.finish() for sealer, part in zip(sealers, parts)]
    stored, plaintext = b"".join(sealed), b"".join(parts)
    etag = f'"{MD5}-2"'
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key", {"Range": "bytes=100000-131500"}))
    relay.upstream.calls[0].respond(head("200 OK", {
        "Content-Length": str(len(stored)), "ETag": etag, **metadata}))
    part_head = relay.upstream.calls[1]
    assert part_head.request.start_line == "HEAD /bucket/key?partNumber=1 HTTP/1.1"
    part_head.respond(head("206 Partial Content", {
        "Content-Length": str(len(sealed[0])), "ETag": f'"{MD5}"',
        "Content-Range": f"bytes 0-{len(sealed[0]) - 1}/{len(stored)}", **metadata}))
    get = relay.upstream.calls[2]
    first, last = STORED_SEGMENT, len(stored) - 1  # segment 1 of part 1, part 2
    assert get.request.header("range") == f"bytes={first}-{last}"
    assert get.request.header("if-match") == etag
    get.respond(head("206 Partial Content", {
        "Content-Length": str(last - first + 1), "ETag": etag,
        "Content-Range": f"bytes {first}-{last}/{len(stored)}", **metadata})
        + stored[first:])
    response = only_response(client)
    assert response.status == 206 and response.body == plaintext[100000:131501]
    assert response.header("content-range") == f"bytes 100000-131500/{len(plaintext)}"
    assert response.header("etag") == etag  # a multipart ETag as it is


def test_a_key_that_does_not_unwrap_is_500(relay: Relay, ring: KeyRing) -> None:
    _, moved = ring.seal_metadata("bucket", b"another-key")
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    relay.upstream.calls[0].respond(found(b"x" * 100, moved))
    response = only_response(client)
    assert response.status == 500 and error_code(response) == "InternalError"
    assert len(relay.upstream.calls) == 1
    assert decryption_failures(relay) == b"1.0"


NOT_MODIFIED = head("304 Not Modified", {"ETag": f'"{MD5}"'})


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_not_modified_shows_the_etag(relay: Relay, method: str) -> None:
    client = relay.connect()
    client.send(relay.sign(method, "/bucket/key", {"If-None-Match": f'"{MD5}-0"'}))
    relay.upstream.calls[0].respond(NOT_MODIFIED)
    if method == "GET":
        relay.upstream.calls[1].respond(NOT_MODIFIED)
    response = client.responses()[0]
    assert response.status == 304
    assert response.header("etag") == f'"{MD5}-0"'


# (c) a stored object altered


def test_an_altered_segment_aborts_the_client(relay: Relay, ring: KeyRing) -> None:
    plaintext = os.urandom(3 * SEGMENT)
    stored, metadata = seal(ring, plaintext)
    at = STORED_SEGMENT + 100  # in the second segment
    altered = stored[:at] + bytes([stored[at] ^ 1]) + stored[at + 1:]
    assert decryption_failures(relay) == b"0.0"
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    relay.upstream.calls[0].respond(found(stored, metadata))
    get = relay.upstream.calls[1]
    get.respond(found(stored, metadata) + altered[:STORED_SEGMENT])
    assert only_response(client).body == plaintext[:SEGMENT] and not client.aborted

    get.respond(altered[STORED_SEGMENT:])
    assert client.aborted
    response = only_response(client)
    assert response.header("content-length") == str(len(plaintext)) and not response.complete
    assert response.body == plaintext[:SEGMENT]
    assert decryption_failures(relay) == b"1.0"


def test_an_altered_last_segment_aborts_the_client(relay: Relay, ring: KeyRing) -> None:
    stored, metadata = seal(ring, os.urandom(2 * SEGMENT))
    altered = stored[:-1] + bytes([stored[-1] ^ 1])  # the last segment's tag
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    relay.upstream.calls[0].respond(found(stored, metadata))
    relay.upstream.calls[1].respond(found(stored, metadata) + altered)
    relay.upstream.calls[1].lose()
    assert client.aborted
    assert all(not response.complete for response in client.responses())
    assert decryption_failures(relay) == b"1.0"


# (d) the HEAD finds no encrypted object


def test_missing_object_is_the_upstreams_answer(relay: Relay) -> None:
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key", {"Range": "bytes=0-9"}))
    relay.upstream.calls[0].respond(head("404 Not Found", {"Content-Length": "0"}))
    get = relay.upstream.calls[1]
    assert get.request.start_line == "GET /bucket/key HTTP/1.1"
    assert get.request.header("range") == "bytes=0-9"  # as the client asked
    assert get.request.header("if-match") is None
    get.respond(head("404 Not Found", {"Content-Type": "application/xml",
                                       "Content-Length": str(len(NO_SUCH_KEY))}) + NO_SUCH_KEY)
    response = only_response(client)
    assert response.status == 404 and response.body == NO_SUCH_KEY


def test_an_unencrypted_object_is_refused(relay: Relay) -> None:
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    relay.upstream.calls[0].respond(head("200 OK", {"Content-Length": "10", "ETag": f'"{MD5}"',
                                                    "x-amz-meta-colour": "blue"}))
    response = only_response(client)
    assert response.status == 403 and error_code(response) == "AccessDenied"
    assert len(relay.upstream.calls) == 1


# (e) a range past the end


@pytest.mark.parametrize("range_header", ["bytes=100-", "bytes=100-200", "bytes=5000-"])
def test_a_range_past_the_end_is_416(relay: Relay, ring: KeyRing, range_header: str) -> None:
    stored, metadata = seal(ring, b"y" * 100)
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key", {"Range": range_header}))
    relay.upstream.calls[0].respond(found(stored, metadata))
    response = only_response(client)
    assert response.status == 416 and error_code(response) == "InvalidRange"
    assert b"<ActualObjectSize>100</ActualObjectSize>" in response.body
    assert len(relay.upstream.calls) == 1


# (f) copies


@pytest.mark.parametrize("path, source", [
    ("/bucket/copy", "/other/plain"), ("/other/copy", "/bucket/key"), ("/bucket/b", "bucket/a"),
])
def test_copies_are_refused_before_the_upstream(relay: Relay, path: str, source: str) -> None:
    client = relay.connect()
    client.send(relay.sign("PUT", path, {"x-amz-copy-source": source}))
    response = only_response(client)
    assert response.status == 501 and error_code(response) == "NotImplemented"
    assert relay.upstream.calls == []


def test_copies_elsewhere_go_upstream(relay: Relay) -> None:
    client = relay.connect()
    client.send(relay.sign("PUT", "/other/copy", {"x-amz-copy-source": "/other/plain"}))
    (call,) = relay.upstream.calls
    assert call.request.header("x-amz-copy-source") == "/other/plain"
