"""What each operation becomes under an encrypted prefix (s3relay.crypt.rules)."""

from __future__ import annotations

import pytest

from s3relay.crypt.keys import KeyRing
from s3relay.crypt.rules import Treatment, treatment
from s3relay.crypt.settings import EncryptionConfig
from s3relay.s3.addressing import Target
from s3relay.s3.errors import S3Error
from s3relay.s3.operations import Operation

#: All of "secure", and "logs/private/..." in "logs".
ENCRYPTION = EncryptionConfig(
    (("secure", b""), ("logs", b"private/")), KeyRing("k1", {"k1": b"\x01" * 32})
)

INSIDE = [Target("secure", b"a/b.txt", True), Target("logs", b"private/x", True)]
OUTSIDE = [Target("logs", b"public/x", True), Target("logs", b"privat", True),
           Target("other", b"private/x", True)]


def treat(name: str, target: Target, query: set[bytes] | None = None,
          copy_source: tuple[str, bytes] | None = None) -> Treatment | None:
    return treatment(ENCRYPTION, Operation(name, "read", copy_source), target, query or set())


def refused(name: str, target: Target, query: set[bytes] | None = None,
            copy_source: tuple[str, bytes] | None = None) -> S3Error:
    with pytest.raises(S3Error) as raised:
        treat(name, target, query, copy_source)
    return raised.value


@pytest.mark.parametrize("target", INSIDE)
@pytest.mark.parametrize("name, expected", [
    ("PutObject", Treatment.SEAL),
    ("GetObject", Treatment.READ),
    ("HeadObject", Treatment.READ),
    ("CreateMultipartUpload", Treatment.START_UPLOAD),
    ("UploadPart", Treatment.SEAL_PART),
    ("CompleteMultipartUpload", Treatment.COMPLETE),
    ("ListParts", Treatment.LIST_PARTS),
    ("AbortMultipartUpload", Treatment.UPLOAD_ID),
])
def test_object_operations_under_a_prefix(target: Target, name: str,
                                          expected: Treatment) -> None:
    assert treat(name, target, {b"versionId", b"uploadId"}) is expected


@pytest.mark.parametrize("target", INSIDE)
@pytest.mark.parametrize("name", ["GetObject", "HeadObject"])
def test_reading_one_part_is_refused(target: Target, name: str) -> None:
    error = refused(name, target, {b"partNumber"})
    assert (error.code, error.status) == ("NotImplemented", 501)


@pytest.mark.parametrize("target", OUTSIDE)
@pytest.mark.parametrize("name", [
    "PutObject", "GetObject", "HeadObject", "CreateMultipartUpload", "UploadPart",
    "CompleteMultipartUpload", "ListParts", "AbortMultipartUpload", "CopyObject",
    "SelectObjectContent", "GetObjectAttributes", "RestoreObject", "UploadPartCopy",
])
def test_objects_outside_the_prefixes_are_as_usual(target: Target, name: str) -> None:
    assert treat(name, target) is None


def test_reading_one_part_outside_the_prefixes_is_as_usual() -> None:
    assert treat("GetObject", OUTSIDE[0], {b"partNumber"}) is None


@pytest.mark.parametrize("name", ["ListObjects", "ListObjectsV2", "ListObjectVersions"])
def test_listings(name: str) -> None:
    for bucket in ("secure", "logs"):
        assert treat(name, Target(bucket, b"", False)) is Treatment.LIST
        assert treat(name, Target(bucket, b"", True)) is Treatment.LIST  # "/bucket/"
    assert treat(name, Target("other", b"", False)) is None


@pytest.mark.parametrize("name", [
    "ListMultipartUploads", "HeadBucket", "GetBucketLocation", "DeleteObjects",
    "PutBucketPolicy", "DeleteBucket",
])
def test_other_bucket_operations_are_as_usual(name: str) -> None:
    assert treat(name, Target("secure", b"", False)) is None


def test_service_operations_are_as_usual() -> None:
    assert treat("ListBuckets", Target(None, b"", False)) is None


@pytest.mark.parametrize("target", INSIDE)
@pytest.mark.parametrize("name", [
    "DeleteObject", "GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging",
    "GetObjectAcl", "PutObjectAcl", "GetObjectRetention", "PutObjectRetention",
    "GetObjectLegalHold", "PutObjectLegalHold",
])
def test_metadata_and_deletes_are_as_usual(target: Target, name: str) -> None:
    assert treat(name, target) is None


@pytest.mark.parametrize("target", INSIDE)
@pytest.mark.parametrize("name", ["CopyObject", "UploadPartCopy"])
def test_copies_into_a_prefix_are_refused(target: Target, name: str) -> None:
    error = refused(name, target, copy_source=("other", b"plain"))
    assert (error.code, error.status) == ("NotImplemented", 501)


@pytest.mark.parametrize("source", [("secure", b"x"), ("logs", b"private/y")])
@pytest.mark.parametrize("name", ["CopyObject", "UploadPartCopy"])
def test_copies_out_of_a_prefix_are_refused(source: tuple[str, bytes], name: str) -> None:
    error = refused(name, OUTSIDE[0], copy_source=source)
    assert (error.code, error.status) == ("NotImplemented", 501)


def test_copies_between_plain_objects_are_as_usual() -> None:
    assert treat("CopyObject", OUTSIDE[0], copy_source=("logs", b"public/y")) is None


@pytest.mark.parametrize("target", INSIDE)
@pytest.mark.parametrize("name", [
    "SelectObjectContent", "GetObjectAttributes", "RestoreObject", "GetObjectTorrent",
    "Unknown",
])
def test_other_object_data_operations_under_a_prefix_are_refused(
    target: Target, name: str
) -> None:
    error = refused(name, target)
    assert (error.code, error.status) == ("NotImplemented", 501)
