"""boto3 through a real relay process to a signature-checking S3 server."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import pytest
import requests
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests import harness
from tests.integration.conftest import (
    CLIENT_KEY,
    boto_client,
    needs_trailers,
    relay_config,
)
from tests.tcptap import TcpTap

AWKWARD_KEYS = [
    "plain.txt",
    "with space/and+plus.bin",
    "percent%2Fslash",
    "tilde~equals=amp&.txt",
    "unicode/ключ-鍵-🙂.dat",
    "dir//double/.../dot/..x/.y",
    "q?mark#hash;semi",
]


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def test_bucket_and_object_crud(client: Any, upstream: Any) -> None:
    client.create_bucket(Bucket="crud")
    assert "crud" in [b["Name"] for b in client.list_buckets()["Buckets"]]
    client.put_object(Bucket="crud", Key="a.txt", Body=b"hello", ContentType="text/plain",
                      Metadata={"colour": "blue"})
    got = client.get_object(Bucket="crud", Key="a.txt")
    assert got["Body"].read() == b"hello"
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"colour": "blue"}
    head = client.head_object(Bucket="crud", Key="a.txt")
    assert head["ContentLength"] == 5
    assert upstream.get_object(Bucket="crud", Key="a.txt")["Body"].read() == b"hello"
    client.delete_object(Bucket="crud", Key="a.txt")
    with pytest.raises(ClientError) as excinfo:
        client.head_object(Bucket="crud", Key="a.txt")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    client.delete_bucket(Bucket="crud")
    assert "crud" not in [b["Name"] for b in upstream.list_buckets()["Buckets"]]


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_awkward_keys_round_trip(client: Any, upstream: Any, bucket: str, key: str) -> None:
    body = key.encode() * 3
    client.put_object(Bucket=bucket, Key=key, Body=body)
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    listed = [o["Key"] for o in upstream.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == [key]
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == [key]


def test_dot_segment_keys_refused_by_default(client: Any, upstream: Any, bucket: str) -> None:
    """``./`` and ``../`` segments are refused (``[server] allow_dot_segments``; their round
    trip with it on: test_e2e_security_addressing)."""
    with pytest.raises(ClientError) as excinfo:
        client.put_object(Bucket=bucket, Key="dir//double/./dot/../x", Body=b"x")
    assert error_code(excinfo) == "InvalidRequest"
    assert "Contents" not in upstream.list_objects_v2(Bucket=bucket)


def test_listing_with_prefix_and_delimiter(client: Any, bucket: str) -> None:
    for key in ["a/1", "a/2", "b/1", "top"]:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    listing = client.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in listing["Contents"]] == ["a/1", "a/2"]
    listing = client.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["a/", "b/"]
    page = client.list_objects(Bucket=bucket, MaxKeys=2)
    assert page["IsTruncated"] and len(page["Contents"]) == 2


def test_range_get(client: Any, bucket: str) -> None:
    body = bytes(range(256)) * 64
    client.put_object(Bucket=bucket, Key="r", Body=body)
    got = client.get_object(Bucket=bucket, Key="r", Range="bytes=100-1099")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["Body"].read() == body[100:1100]


def test_copy_object(client: Any, upstream: Any, bucket: str) -> None:
    client.put_object(Bucket=bucket, Key="src key+1", Body=b"copy me")
    client.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src key+1"})
    assert upstream.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"copy me"


def test_multipart_upload(client: Any, upstream: Any, bucket: str) -> None:
    part = os.urandom(5 * 1024 * 1024)
    upload = client.create_multipart_upload(Bucket=bucket, Key="big")
    etags = []
    for number in (1, 2):
        etags.append(
            client.upload_part(
                Bucket=bucket, Key="big", UploadId=upload["UploadId"], PartNumber=number,
                Body=part,
            )["ETag"]
        )
    parts = client.list_parts(Bucket=bucket, Key="big", UploadId=upload["UploadId"])
    assert [p["PartNumber"] for p in parts["Parts"]] == [1, 2]
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="big",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]},
    )
    stored = upstream.get_object(Bucket=bucket, Key="big")["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(part + part).digest()


def test_upload_file_managed_transfer(client: Any, upstream: Any, bucket: str, tmp_path: Any) -> None:
    path = tmp_path / "f.bin"
    data = os.urandom(12 * 1024 * 1024 + 17)
    path.write_bytes(data)
    client.upload_file(str(path), bucket, "managed")
    assert upstream.get_object(Bucket=bucket, Key="managed")["Body"].read() == data
    out = tmp_path / "out.bin"
    client.download_file(bucket, "managed", str(out))
    assert out.read_bytes() == data


@needs_trailers
def test_when_required_checksums(relay: harness.Relay, upstream: Any, bucket: str) -> None:
    """boto3 with request_checksum_calculation=when_required sends a plain signed body."""
    plain = boto_client(relay.url, request_checksum_calculation="when_required")
    plain.put_object(Bucket=bucket, Key="k", Body=b"plain body")
    assert upstream.get_object(Bucket=bucket, Key="k")["Body"].read() == b"plain body"


def test_self_credentials(relay: harness.Relay, upstream: Any, bucket: str,
                          self_key: tuple[str, str]) -> None:
    """A client whose own key pair re-signs its requests (credentials = self)."""
    mine = boto_client(relay.url, self_key)
    mine.put_object(Bucket=bucket, Key="self", Body=b"s")
    assert upstream.get_object(Bucket=bucket, Key="self")["Body"].read() == b"s"


def test_presigned_get_and_put(relay: harness.Relay, upstream: Any, bucket: str) -> None:
    client = boto_client(relay.url, signature_version="s3v4")
    put_url = client.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "pre signed"}, ExpiresIn=300
    )
    assert requests.put(put_url, data=b"presigned body", timeout=10).status_code == 200
    assert upstream.get_object(Bucket=bucket, Key="pre signed")["Body"].read() == b"presigned body"
    get_url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "pre signed"}, ExpiresIn=300
    )
    response = requests.get(get_url, timeout=10)
    assert response.status_code == 200 and response.content == b"presigned body"
    tampered = get_url.replace("pre%20signed", "other")
    response = requests.get(tampered, timeout=10)
    assert response.status_code == 403 and b"SignatureDoesNotMatch" in response.content


def test_presigned_zero_expiry_is_expired_as_s3_says(
    relay: harness.Relay, upstream: Any, bucket: str
) -> None:
    upstream.put_object(Bucket=bucket, Key="k", Body=b"x")
    # botocore's own query signer (its CRT one refuses 0, which S3 accepts).
    request = AWSRequest("GET", f"{relay.url}/{bucket}/k")
    S3SigV4QueryAuth(Credentials(*CLIENT_KEY), "s3", "us-east-1", expires=0).add_auth(request)
    url = request.url
    assert "X-Amz-Expires=0" in url
    response = requests.get(url, timeout=10)
    assert response.status_code == 403, response.content
    for element in (b"<Code>AccessDenied</Code>", b"<Message>Request has expired</Message>",
                    b"<X-Amz-Expires>0</X-Amz-Expires>", b"<Expires>", b"<ServerTime>"):
        assert element in response.content, response.content


def test_sigv2_presigned_refused(client: Any, bucket: str) -> None:
    url = client.generate_presigned_url(  # botocore's default presigner is SigV2
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300
    )
    assert "AWSAccessKeyId=" in url
    response = requests.get(url, timeout=10)
    assert response.status_code == 400
    assert b"<Code>InvalidRequest</Code>" in response.content
    assert b"AWS4-HMAC-SHA256" in response.content


def test_wrong_secret_refused(relay: harness.Relay, bucket: str,
                              object_keys: Callable[[str], list[str]]) -> None:
    wrong = boto_client(relay.url, (CLIENT_KEY[0], "not-the-secret"))
    with pytest.raises(ClientError) as excinfo:
        wrong.put_object(Bucket=bucket, Key="nope", Body=b"x")
    assert error_code(excinfo) == "SignatureDoesNotMatch"
    assert object_keys(bucket) == []


def test_unknown_key_refused(relay: harness.Relay, bucket: str,
                             object_keys: Callable[[str], list[str]]) -> None:
    stranger = boto_client(relay.url, ("AKIDUNKNOWN000000000", "whatever"))
    with pytest.raises(ClientError) as excinfo:
        stranger.put_object(Bucket=bucket, Key="nope", Body=b"x")
    assert error_code(excinfo) == "InvalidAccessKeyId"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert object_keys(bucket) == []


def test_anonymous_refused(relay: harness.Relay, bucket: str) -> None:
    response = requests.get(f"{relay.url}/{bucket}", timeout=10)
    assert response.status_code == 403
    assert b"<Code>AccessDenied</Code>" in response.content
    assert b"<RequestId>" in response.content


def test_upstream_errors_pass_through(client: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        client.get_object(Bucket=bucket, Key="missing")
    assert error_code(excinfo) == "NoSuchKey"
    with pytest.raises(ClientError) as excinfo:
        client.list_objects_v2(Bucket="no-such-bucket-here")
    assert error_code(excinfo) == "NoSuchBucket"


def test_virtual_addressing_upstream(workdir: Any, s3: harness.S3Server, upstream: Any,
                                     self_key: tuple[str, str], bucket: str) -> None:
    """``addressing = virtual``: the bucket travels in the upstream Host header."""
    port = harness.free_port()
    tap = TcpTap(s3.port)
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key,
                        f"http://127.0.0.1:{tap.port}", addressing="virtual")
    relay = harness.start_relay(workdir, text, port)
    try:
        client = boto_client(relay.url)
        client.put_object(Bucket=bucket, Key="v/key with space", Body=b"virtual")
        assert upstream.get_object(Bucket=bucket, Key="v/key with space")["Body"].read() == b"virtual"
        listing = client.list_objects_v2(Bucket=bucket)
        assert [o["Key"] for o in listing["Contents"]] == ["v/key with space"]
        wire = bytes(tap.captured).lower()
        assert b"put /v/key%20with%20space http/1.1" in wire
        assert f"host: {bucket}.127.0.0.1:{tap.port}".encode() in wire
    finally:
        harness.stop(relay.process)
        tap.close()
