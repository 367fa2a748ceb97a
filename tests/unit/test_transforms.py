"""Tests for s3relay.upstream.transforms: forced storage class and added headers, parsed and applied."""

from __future__ import annotations

import datetime

import pytest

from s3relay.body.plan import BodyPlan
from s3relay.config import ConfigError, CredentialSet, parse_config
from s3relay.ini import Section
from s3relay.s3 import sigv4
from s3relay.s3.addressing import parse_target
from s3relay.upstream.forward import build_upstream_request
from s3relay.upstream.transforms import STORAGE_CLASSES, Transforms, parse_transforms

BASE = """
[upstream]
url = http://127.0.0.1:9000
region = us-east-1
{upstream}

[credentials:main]
access_key_id = AKIAUPSTREAM0000
secret_access_key = upstream-secret

[client:alice]
access_key_id = AKIDALICE0000001
secret_access_key = alice-secret
credentials = main
{alice}

[client:bob]
access_key_id = AKIDBOB000000001
secret_access_key = bob-secret
credentials = main
"""


def transforms(upstream: str = "", alice: str = "") -> Transforms:
    return parse_config(BASE.format(upstream=upstream, alice=alice)).transforms


def test_default_adds_nothing() -> None:
    t = transforms()
    for operation in ("PutObject", "CreateMultipartUpload", "CopyObject", "GetObject"):
        assert t.headers_for(operation, "alice", "b") == {}


def test_global_storage_class_on_the_three_writes_only() -> None:
    t = transforms("force_storage_class = STANDARD_IA")
    for operation in ("PutObject", "CreateMultipartUpload", "CopyObject"):
        assert t.headers_for(operation, "bob", "b") == {"x-amz-storage-class": "STANDARD_IA"}
    for operation in ("UploadPart", "GetObject", "CompleteMultipartUpload", "DeleteObject"):
        assert t.headers_for(operation, "bob", "b") == {}


def test_client_beats_global_and_bucket_beats_both() -> None:
    t = transforms(
        "force_storage_class = STANDARD_IA\nbucket_storage_class = logs-*:GLACIER_IR, x:ONEZONE_IA",
        "force_storage_class = INTELLIGENT_TIERING",
    )
    assert t.headers_for("PutObject", "bob", "data")["x-amz-storage-class"] == "STANDARD_IA"
    assert t.headers_for("PutObject", "alice", "data")["x-amz-storage-class"] == (
        "INTELLIGENT_TIERING"
    )
    assert t.headers_for("PutObject", "alice", "logs-1")["x-amz-storage-class"] == "GLACIER_IR"
    assert t.headers_for("CopyObject", "bob", "x")["x-amz-storage-class"] == "ONEZONE_IA"
    assert t.headers_for("PutObject", "anonymous", "y")["x-amz-storage-class"] == "STANDARD_IA"


def test_bucket_class_without_global() -> None:
    t = transforms("bucket_storage_class = cold:DEEP_ARCHIVE")
    assert t.headers_for("PutObject", "bob", "cold") == {"x-amz-storage-class": "DEEP_ARCHIVE"}
    assert t.headers_for("PutObject", "bob", "warm") == {}


@pytest.mark.parametrize(
    "upstream, alice, message",
    [
        ("force_storage_class = STANDARD-IA", "", "not an S3 storage class"),
        ("force_storage_class = standard_ia", "", "not an S3 storage class"),
        ("", "force_storage_class = FAST", "not an S3 storage class"),
        ("bucket_storage_class = logs", "", "is not BUCKET:CLASS"),
        ("bucket_storage_class = a/b:STANDARD", "", "is not BUCKET:CLASS"),
        ("bucket_storage_class = logs:NOPE", "", "not an S3 storage class"),
    ],
)
def test_bad_storage_classes(upstream: str, alice: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        transforms(upstream, alice)


def test_every_s3_class_accepted() -> None:
    for cls in STORAGE_CLASSES:
        assert transforms(f"force_storage_class = {cls}").storage_class == cls


def test_added_headers_global_and_per_client() -> None:
    t = transforms(
        "add_headers = x-amz-server-side-encryption: aws:kms\n"
        "    X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id: arn:aws:kms:eu:1:key/k\n"
        "    x-amz-meta-via: relay one",
        "add_headers = x-amz-server-side-encryption: AES256",
    )
    assert t.headers_for("PutObject", "bob", "b") == {
        "x-amz-server-side-encryption": "aws:kms",
        "x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:eu:1:key/k",
        "x-amz-meta-via": "relay one",
    }
    assert t.headers_for("CreateMultipartUpload", "alice", "b")[
        "x-amz-server-side-encryption"
    ] == "AES256"
    assert t.headers_for("GetObject", "bob", "b") == {}
    assert t.headers_for("UploadPart", "bob", "b") == {}


def test_added_header_operations_chosen() -> None:
    t = transforms(
        "add_headers = x-amz-request-payer: requester\n"
        "add_headers_operations = GetObject, HeadObject"
    )
    assert t.headers_for("GetObject", "bob", "b") == {"x-amz-request-payer": "requester"}
    assert t.headers_for("PutObject", "bob", "b") == {}


@pytest.mark.parametrize(
    "line, message",
    [
        ("host: example.com", "set by the relay"),
        ("Authorization: AWS4-HMAC-SHA256 x", "set by the relay"),
        ("connection: close", "set by the relay"),
        ("transfer-encoding: chunked", "set by the relay"),
        ("te: trailers", "set by the relay"),
        ("x-amz-content-sha256: UNSIGNED-PAYLOAD", "set by the relay"),
        ("x-amz-date: 20250101T000000Z", "set by the relay"),
        ("x-amz-security-token: t", "set by the relay"),
        ("x-amz-storage-class: GLACIER", "set by the relay"),
        ("content-length: 3", "set by the relay"),
        ("no colon here", "is not NAME: VALUE"),
        ("bad name: v", "is not NAME: VALUE"),
        (": v", "is not NAME: VALUE"),
        ("x-amz-meta-a: caf\u00e9", "printable ASCII"),
        ("x-amz-meta-a:", "printable ASCII"),
    ],
)
def test_refused_added_headers(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        transforms(f"add_headers = {line}")
    assert "[upstream] add_headers" in str(info.value)


def test_refused_added_header_per_client_names_the_client() -> None:
    with pytest.raises(ConfigError, match=r"\[client:alice\] add_headers"):
        transforms("", "add_headers = proxy-authorization: x")


def test_duplicate_and_unknown_operation() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        transforms("add_headers = x-amz-meta-a: 1\n  X-Amz-Meta-A: 2")
    with pytest.raises(ConfigError, match="add_headers_operations"):
        transforms("add_headers = x-amz-meta-a: 1\nadd_headers_operations = DeleteObject")


def test_parse_transforms_directly() -> None:
    upstream = Section("upstream", {"force_storage_class": "GLACIER"}, ".")
    client = Section("client:c", {"add_headers": "x-amz-meta-x: y"}, ".")
    t = parse_transforms(upstream, {"c": client})
    assert t.headers_for("PutObject", "c", None) == {
        "x-amz-meta-x": "y",
        "x-amz-storage-class": "GLACIER",
    }
    upstream.check_unknown()
    client.check_unknown()


def test_added_headers_replace_client_values_and_are_signed() -> None:
    """forward.build_upstream_request puts the added headers in the signature."""
    config = parse_config(BASE.format(upstream="", alice=""))
    target = parse_target("127.0.0.1:8080", b"/bucket/key", ())
    now = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    plan = BodyPlan(3, sigv4.UNSIGNED_PAYLOAD, {})
    credentials = CredentialSet("main", "AKIAUPSTREAM0000", "upstream-secret")
    client_headers = {"x-amz-storage-class": ["GLACIER"], "content-length": ["3"]}
    added = {"x-amz-storage-class": "STANDARD_IA", "x-amz-server-side-encryption": "AES256"}
    request = build_upstream_request(
        "PUT", target, b"", False, client_headers, plan, credentials, config.upstream, now,
        sigv4.SigningKeyCache(), added,
    )
    assert request.headers["x-amz-storage-class"] == "STANDARD_IA"
    assert request.headers["x-amz-server-side-encryption"] == "AES256"
    signed = request.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert "x-amz-storage-class" in signed.split(";")
    assert "x-amz-server-side-encryption" in signed.split(";")
    # The signature verifies with exactly these header values.
    verified = sigv4.verify(
        "PUT", b"/bucket/key", b"",
        {name: [value] for name, value in request.headers.items()},
        now, lambda key: "upstream-secret", ("us-east-1",), sigv4.SigningKeyCache(),
    )
    assert verified.access_key == "AKIAUPSTREAM0000"


def test_documented_examples_parse() -> None:
    """Every key is documented in etc/s3relay/s3relay.ini, and its example value loads."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "etc" / "s3relay" / "s3relay.ini").read_text()
    lines = text.splitlines()

    def example(key: str) -> str:
        for i, line in enumerate(lines):
            if line.startswith(f"; {key} = "):
                value = line.split(" = ", 1)[1]
                for following in lines[i + 1 :]:
                    if not following.startswith(";     "):
                        break
                    value += "\n    " + following[6:]
                return value
        raise AssertionError(f"{key} is not documented")

    upstream = "\n".join(
        f"{key} = {example(key)}"
        for key in ("force_storage_class", "bucket_storage_class", "add_headers",
                    "add_headers_operations")
    )
    t = transforms(upstream)
    assert t.storage_class == "STANDARD_IA"
    assert t.headers_for("PutObject", "bob", "logs-1") == {
        "x-amz-server-side-encryption": "aws:kms",
        "x-amz-server-side-encryption-aws-kms-key-id":
            "arn:aws:kms:eu-central-1:111122223333:key/example",
        "x-amz-storage-class": "GLACIER_IR",
    }
    assert "; [anonymous]" in text and example("credentials") == "main"
