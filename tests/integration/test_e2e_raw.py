"""Hand-built requests through the relay process to the signature-checking S3 server:
every payload mode, and every refusal with nothing stored upstream."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import socket
from typing import Any, Callable
from urllib.parse import quote

import pytest
import requests
from awscrt import checksums

from s3relay.s3 import sigv4
from tests import harness
from tests.integration.conftest import CLIENT_KEY, HOSTNAME, boto_client
from tests.rawclient import (
    Reply,
    crc32_b64,
    http_chunked,
    send,
    sign,
    signed_chunks,
    unsigned_chunks,
    utcnow,
)
from tests.unit.oracle import signing_at

Keys = Callable[[str], list[str]]


def put_headers(body: bytes, **extra: str) -> dict[str, str]:
    return {"content-length": str(len(body)), **extra}


def test_plain_signed_put(relay: harness.Relay, upstream: Any, bucket: str) -> None:
    body = b"hashed body"
    url = f"{relay.url}/{bucket}/k"
    headers = sign("PUT", url, put_headers(body), hashlib.sha256(body).hexdigest(), CLIENT_KEY)
    assert send(url, "PUT", headers, body).status == 200
    assert upstream.get_object(Bucket=bucket, Key="k")["Body"].read() == body


def test_tampered_header_refused(relay: harness.Relay, bucket: str, object_keys: Keys) -> None:
    body = b"x"
    url = f"{relay.url}/{bucket}/k"
    headers = sign("PUT", url, put_headers(body, **{"x-amz-meta-a": "1"}),
                   sigv4.UNSIGNED_PAYLOAD, CLIENT_KEY)
    headers["x-amz-meta-a"] = "2"
    reply = send(url, "PUT", headers, body)
    assert (reply.status, reply.code()) == (403, "SignatureDoesNotMatch")
    assert object_keys(bucket) == []


def test_unsigned_amz_header_refused(relay: harness.Relay, bucket: str, object_keys: Keys) -> None:
    body = b"x"
    url = f"{relay.url}/{bucket}/k"
    headers = sign("PUT", url, put_headers(body), sigv4.UNSIGNED_PAYLOAD, CLIENT_KEY)
    headers["x-amz-storage-class"] = "GLACIER"
    reply = send(url, "PUT", headers, body)
    assert (reply.status, reply.code()) == (403, "AccessDenied")
    assert b"not signed" in reply.body
    assert object_keys(bucket) == []


def test_skewed_clock_refused(relay: harness.Relay, bucket: str, object_keys: Keys) -> None:
    body = b"x"
    url = f"{relay.url}/{bucket}/k"
    past = utcnow() - datetime.timedelta(minutes=20)
    headers = sign("PUT", url, put_headers(body), sigv4.UNSIGNED_PAYLOAD, CLIENT_KEY, past)
    reply = send(url, "PUT", headers, body)
    assert (reply.status, reply.code()) == (403, "RequestTimeTooSkewed")
    assert object_keys(bucket) == []


def test_expired_presigned_url_refused(relay: harness.Relay, upstream: Any, bucket: str) -> None:
    upstream.put_object(Bucket=bucket, Key="k", Body=b"secret stuff")
    client = boto_client(relay.url, signature_version="s3v4")
    params = {"Bucket": bucket, "Key": "k"}
    fresh = client.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    with signing_at(utcnow() - datetime.timedelta(seconds=120)):
        stale = client.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    assert requests.get(fresh, timeout=10).status_code == 200
    response = requests.get(stale, timeout=10)
    assert response.status_code == 403
    assert b"<Code>AccessDenied</Code>" in response.content
    assert b"expired" in response.content
    assert b"secret stuff" not in response.content


def test_sigv2_header_refused(relay: harness.Relay, bucket: str) -> None:
    reply = send(f"{relay.url}/{bucket}", "GET",
                 {"host": f"127.0.0.1:{relay.port}", "authorization": "AWS AKID:c2lnbmF0dXJl"})
    assert (reply.status, reply.code()) == (400, "InvalidRequest")


def test_anonymous_put_refused(relay: harness.Relay, bucket: str, object_keys: Keys) -> None:
    body = b"anonymous"
    reply = send(f"{relay.url}/{bucket}/k", "PUT",
                 {"host": f"127.0.0.1:{relay.port}", **put_headers(body)}, body)
    assert (reply.status, reply.code()) == (403, "AccessDenied")
    assert reply.headers["content-type"] == "application/xml"
    assert reply.headers["x-amz-request-id"] and b"<RequestId>" in reply.body
    assert object_keys(bucket) == []


@pytest.mark.parametrize("size", [10, 3 * 1024 * 1024])
def test_wrong_body_hash_stores_nothing(relay: harness.Relay, bucket: str, object_keys: Keys,
                                        size: int) -> None:
    body = os.urandom(size)
    url = f"{relay.url}/{bucket}/k"
    wrong = hashlib.sha256(body + b"!").hexdigest()
    headers = sign("PUT", url, put_headers(body), wrong, CLIENT_KEY)
    try:
        reply = send(url, "PUT", headers, body)
    except (ConnectionError, OSError):
        pass  # a long remainder may be cut off: what matters is what was stored
    else:
        assert (reply.status, reply.code()) == (400, "XAmzContentSHA256Mismatch")
    assert object_keys(bucket) == []


def test_wrong_content_md5_stores_nothing(relay: harness.Relay, bucket: str,
                                          object_keys: Keys) -> None:
    body = b"some body"
    url = f"{relay.url}/{bucket}/k"
    md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    headers = sign("PUT", url, put_headers(body, **{"content-md5": md5}),
                   sigv4.UNSIGNED_PAYLOAD, CLIENT_KEY)
    reply = send(url, "PUT", headers, body)
    assert (reply.status, reply.code()) == (400, "BadDigest")
    assert object_keys(bucket) == []


def chunked_headers(data: bytes, framed_length: int | None, mode: str,
                    **extra: str) -> dict[str, str]:
    headers = {"content-encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(data)), **extra}
    if framed_length is not None:
        headers["content-length"] = str(framed_length)
    return headers


def signed_chunked_put(relay: harness.Relay, bucket: str, data: bytes, chunk: int,
                       trailer: tuple[str, str] | None = None,
                       tamper: Callable[[bytes], bytes] = lambda b: b,
                       http_chunked_outer: bool = False) -> Reply:
    url = f"{relay.url}/{bucket}/chunked"
    mode = sigv4.STREAMING_SIGNED_TRAILER if trailer else sigv4.STREAMING_SIGNED
    extra = {"x-amz-trailer": trailer[0]} if trailer else {}
    # Sign first (the framed length depends only on sizes), then build the body.
    probe = signed_chunks(data, chunk, sign("PUT", url, {}, mode, CLIENT_KEY),
                          CLIENT_KEY[1], trailer)
    length = None if http_chunked_outer else len(probe)
    headers = chunked_headers(data, length, mode, **extra)
    if http_chunked_outer:
        headers["transfer-encoding"] = "chunked"
    headers = sign("PUT", url, headers, mode, CLIENT_KEY)
    body = tamper(signed_chunks(data, chunk, headers, CLIENT_KEY[1], trailer))
    return send(url, "PUT", headers, http_chunked(body) if http_chunked_outer else body)


@pytest.mark.parametrize("size,chunk", [(0, 8192), (200_000, 8192), (300_000, 65536)])
def test_signed_chunked_upload(relay: harness.Relay, upstream: Any, bucket: str,
                               size: int, chunk: int) -> None:
    data = os.urandom(size)
    reply = signed_chunked_put(relay, bucket, data, chunk)
    assert reply.status == 200, reply.body
    assert upstream.get_object(Bucket=bucket, Key="chunked")["Body"].read() == data


def test_signed_chunked_inside_http_chunked(relay: harness.Relay, upstream: Any,
                                            bucket: str) -> None:
    data = os.urandom(100_000)
    reply = signed_chunked_put(relay, bucket, data, 16384, http_chunked_outer=True)
    assert reply.status == 200, reply.body
    assert upstream.get_object(Bucket=bucket, Key="chunked")["Body"].read() == data


def flip_byte(position: int) -> Callable[[bytes], bytes]:
    def tamper(body: bytes) -> bytes:
        return body[:position] + bytes([body[position] ^ 1]) + body[position + 1:]
    return tamper


@pytest.mark.parametrize("position", [200, 70_000, -300])
def test_bad_chunk_signature_stores_nothing(relay: harness.Relay, bucket: str,
                                            object_keys: Keys, position: int) -> None:
    data = os.urandom(150_000)
    reply = signed_chunked_put(relay, bucket, data, 65536, tamper=flip_byte(position))
    assert (reply.status, reply.code()) == (403, "SignatureDoesNotMatch")
    assert object_keys(bucket) == []


def test_signed_trailer_upload(relay: harness.Relay, upstream: Any, bucket: str) -> None:
    data = os.urandom(100_000)
    reply = signed_chunked_put(relay, bucket, data, 65536,
                               trailer=("x-amz-checksum-crc32", crc32_b64(data)))
    assert reply.status == 200, reply.body
    assert upstream.get_object(Bucket=bucket, Key="chunked")["Body"].read() == data


def test_wrong_trailer_checksum_stores_nothing(relay: harness.Relay, bucket: str,
                                               object_keys: Keys) -> None:
    data = os.urandom(100_000)
    reply = signed_chunked_put(relay, bucket, data, 65536,
                               trailer=("x-amz-checksum-crc32", crc32_b64(b"other")))
    assert (reply.status, reply.code()) == (400, "BadDigest")
    assert object_keys(bucket) == []


def checksum_b64(algorithm: str, data: bytes) -> str:
    """The x-amz-checksum-<algorithm> value of ``data``, computed by awscrt / hashlib."""
    if algorithm == "crc32c":
        value = checksums.crc32c(data).to_bytes(4, "big")
    elif algorithm == "crc64nvme":
        value = checksums.crc64nvme(data).to_bytes(8, "big")
    elif algorithm == "crc32":
        return crc32_b64(data)
    else:
        value = hashlib.new(algorithm, data).digest()
    return base64.b64encode(value).decode()


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"])
@pytest.mark.parametrize("good", [True, False])
def test_unsigned_trailer_upload(relay: harness.Relay, upstream: Any, bucket: str,
                                 object_keys: Keys, good: bool, algorithm: str) -> None:
    data = os.urandom(150_000)
    checksum = checksum_b64(algorithm, data if good else b"other")
    name = f"x-amz-checksum-{algorithm}"
    body = unsigned_chunks(data, 65536, (name, checksum))
    url = f"{relay.url}/{bucket}/k"
    headers = chunked_headers(data, len(body), sigv4.STREAMING_UNSIGNED_TRAILER,
                              **{"x-amz-trailer": name})
    reply = send(url, "PUT", sign("PUT", url, headers, sigv4.STREAMING_UNSIGNED_TRAILER,
                                  CLIENT_KEY), body)
    if good:
        assert reply.status == 200, reply.body
        assert upstream.get_object(Bucket=bucket, Key="k")["Body"].read() == data
    else:
        assert (reply.status, reply.code()) == (400, "BadDigest")
        assert object_keys(bucket) == []


def raw_exchange(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


def request_head(method: str, url: str, headers: dict[str, str]) -> bytes:
    path = url.split(f"127.0.0.1:{url.split(':')[2].split('/')[0]}", 1)[1]
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_expect_continue_only_after_authentication(relay: harness.Relay, upstream: Any,
                                                   bucket: str, object_keys: Keys) -> None:
    body = b"continued body"
    url = f"{relay.url}/{bucket}/k"
    bad = sign("PUT", url, put_headers(body, expect="100-continue"), sigv4.UNSIGNED_PAYLOAD,
               (CLIENT_KEY[0], "wrong"))
    sock = raw_exchange(relay.port, request_head("PUT", url, bad))
    answer = read_until(sock, b"</Error>")
    sock.close()
    assert answer.startswith(b"HTTP/1.1 403")
    assert b"100 Continue" not in answer and b"SignatureDoesNotMatch" in answer
    assert object_keys(bucket) == []

    good = sign("PUT", url, put_headers(body, expect="100-continue"), sigv4.UNSIGNED_PAYLOAD,
                CLIENT_KEY)
    sock = raw_exchange(relay.port, request_head("PUT", url, good))
    assert read_until(sock, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    answer = read_until(sock, b"\r\n\r\n")
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert upstream.get_object(Bucket=bucket, Key="k")["Body"].read() == body


def test_virtual_host_style(relay: harness.Relay, upstream: Any, bucket: str) -> None:
    body = b"virtual"
    key = "dir/with space+plus"
    virtual = f"http://{bucket}.{HOSTNAME}:{relay.port}/{quote(key)}"
    headers = sign("PUT", virtual, put_headers(body), hashlib.sha256(body).hexdigest(), CLIENT_KEY)
    assert send(f"{relay.url}/{quote(key)}", "PUT", headers, body).status == 200
    assert upstream.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    listing = send(f"{relay.url}/?list-type=2", "GET",
                   sign("GET", f"http://{bucket}.{HOSTNAME}:{relay.port}/?list-type=2", {},
                        sigv4.EMPTY_SHA256, CLIENT_KEY))
    assert listing.status == 200 and f"<Key>{key}</Key>".encode() in listing.body


def test_session_token_with_long_term_key_refused(relay: harness.Relay, bucket: str,
                                                  object_keys: Keys) -> None:
    body = b"x"
    url = f"{relay.url}/{bucket}/k"
    headers = sign("PUT", url, put_headers(body, **{"x-amz-security-token": "bogus"}),
                   sigv4.UNSIGNED_PAYLOAD, CLIENT_KEY)
    reply = send(url, "PUT", headers, body)
    assert (reply.status, reply.code()) == (400, "InvalidToken")
    assert object_keys(bucket) == []
