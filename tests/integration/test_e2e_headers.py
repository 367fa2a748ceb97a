"""Non-ASCII header values through the real relay: accepted as signed, stored
and read back as sent.

SDKs send such values two ways: botocore (urllib3 2), Go and Java as UTF-8
bytes, signing those bytes; http.client-based clients as ISO-8859-1 bytes,
signing the UTF-8 of their text.  The relay verifies either, and re-signs
for how the upstream reads header bytes (``[upstream] header_charset``;
moto, on WSGI, reads ISO-8859-1).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests import harness
from tests.integration.conftest import CLIENT_KEY, boto_client

DISPOSITION = 'attachment; filename="Hello World\xe9 \u20ac.txt"'
LATIN = 'attachment; filename="Hello World\xe9.txt"'


def test_boto3_utf8_header_value_is_accepted_and_reads_back(
    relay: harness.Relay, upstream: Any, bucket: str
) -> None:
    client = boto_client(relay.url)
    with pytest.raises(ClientError):  # moto alone refuses what boto3 sends it
        upstream.put_object(Bucket=bucket, Key="direct", Body=b"x", ContentDisposition=LATIN)
    client.put_object(Bucket=bucket, Key="k", Body=b"x", ContentDisposition=LATIN)
    assert upstream.head_object(Bucket=bucket, Key="k")["ContentDisposition"] == LATIN
    assert client.head_object(Bucket=bucket, Key="k")["ContentDisposition"] == LATIN
    got = client.get_object(Bucket=bucket, Key="k")
    assert got["ContentDisposition"] == LATIN and got["Body"].read() == b"x"


def test_a_value_the_upstream_cannot_read_is_refused_before_it(
    relay: harness.Relay, bucket: str, object_keys: Any
) -> None:
    """The euro sign has no ISO-8859-1 byte: moto could not be sent it."""
    with pytest.raises(ClientError) as info:
        boto_client(relay.url).put_object(Bucket=bucket, Key="euro", Body=b"x",
                                          ContentDisposition=DISPOSITION)
    assert info.value.response["Error"]["Code"] == "InvalidArgument"
    assert object_keys(bucket) == []


def raw_put(relay: harness.Relay, path: str, value: str, wire: str, signed: str) -> bytes:
    """A PUT whose Content-Disposition botocore signs as ``signed`` text and
    that goes on the wire encoded as ``wire``; the relay's raw answer."""
    host = f"127.0.0.1:{relay.port}"
    request = AWSRequest("PUT", f"http://{host}{path}", data=b"x",
                         headers={"Content-Disposition": signed, "Content-Length": "1",
                                  "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    S3SigV4Auth(Credentials(*CLIENT_KEY), "s3", "us-east-1").add_auth(request)
    request.headers.replace_header("Content-Disposition", value)
    lines = [f"PUT {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in request.headers.items()]
    head = "\r\n".join(lines).encode(wire, "surrogateescape") + b"\r\n\r\nx"
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("wire", ["utf-8", "latin-1"])
def test_raw_utf8_and_latin1_bytes_as_signed(
    relay: harness.Relay, upstream: Any, bucket: str, wire: str
) -> None:
    answer = raw_put(relay, f"/{bucket}/{wire}", LATIN, wire, LATIN)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert upstream.head_object(Bucket=bucket, Key=wire)["ContentDisposition"] == LATIN


def test_a_value_other_than_signed_is_refused(relay: harness.Relay, bucket: str) -> None:
    answer = raw_put(relay, f"/{bucket}/changed", LATIN.replace("\xe9", "\xe8"), "utf-8", LATIN)
    assert answer.startswith(b"HTTP/1.1 403 ") and b"SignatureDoesNotMatch" in answer

