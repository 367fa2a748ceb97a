"""Tests for s3relay.s3.operations: which S3 operation a request is, and its access class."""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Any

import botocore.serialize
import botocore.session
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.s3 import operations
from s3relay.s3.addressing import Target, parse_target
from s3relay.s3.errors import S3Error
from s3relay.s3.operations import (
    ACCESS_CLASSES,
    Operation,
    classify,
    parse_copy_source,
)

UNKNOWN = Operation("Unknown", None)
COPY = {"x-amz-copy-source": ["/src-bucket/dir/caf%C3%A9%20x?versionId=v1"]}
COPIED = ("src-bucket", "dir/café x".encode())

# -- the expected classification, one entry per table row -----------------------------
#
# "METHOD /", "METHOD /{b}?subresources" or "METHOD /{b}/{k}?subresources" (+ " copy"
# for a request with x-amz-copy-source), then the operation and its access class.

EXPECTED: list[tuple[str, str, str]] = [
    ("GET /", "ListBuckets", "list"),
    # bucket contents
    ("HEAD /{b}", "HeadBucket", "list"),
    ("GET /{b}", "ListObjects", "list"),
    ("GET /{b}?list-type=2", "ListObjectsV2", "list"),
    ("GET /{b}?versions", "ListObjectVersions", "list"),
    ("GET /{b}?location", "GetBucketLocation", "list"),
    ("GET /{b}?uploads", "ListMultipartUploads", "multipart"),
    ("POST /{b}?delete", "DeleteObjects", "delete"),
    # the bucket itself
    ("PUT /{b}", "CreateBucket", "bucket-admin"),
    ("DELETE /{b}", "DeleteBucket", "bucket-admin"),
    ("GET /{b}?acl", "GetBucketAcl", "bucket-admin"),
    ("PUT /{b}?acl", "PutBucketAcl", "bucket-admin"),
    ("GET /{b}?policy", "GetBucketPolicy", "bucket-admin"),
    ("PUT /{b}?policy", "PutBucketPolicy", "bucket-admin"),
    ("DELETE /{b}?policy", "DeleteBucketPolicy", "bucket-admin"),
    ("GET /{b}?policyStatus", "GetBucketPolicyStatus", "bucket-admin"),
    ("GET /{b}?versioning", "GetBucketVersioning", "bucket-admin"),
    ("PUT /{b}?versioning", "PutBucketVersioning", "bucket-admin"),
    ("GET /{b}?lifecycle", "GetBucketLifecycleConfiguration", "bucket-admin"),
    ("PUT /{b}?lifecycle", "PutBucketLifecycleConfiguration", "bucket-admin"),
    ("DELETE /{b}?lifecycle", "DeleteBucketLifecycle", "bucket-admin"),
    ("GET /{b}?cors", "GetBucketCors", "bucket-admin"),
    ("PUT /{b}?cors", "PutBucketCors", "bucket-admin"),
    ("DELETE /{b}?cors", "DeleteBucketCors", "bucket-admin"),
    ("GET /{b}?encryption", "GetBucketEncryption", "bucket-admin"),
    ("PUT /{b}?encryption", "PutBucketEncryption", "bucket-admin"),
    ("DELETE /{b}?encryption", "DeleteBucketEncryption", "bucket-admin"),
    ("GET /{b}?tagging", "GetBucketTagging", "bucket-admin"),
    ("PUT /{b}?tagging", "PutBucketTagging", "bucket-admin"),
    ("DELETE /{b}?tagging", "DeleteBucketTagging", "bucket-admin"),
    ("GET /{b}?website", "GetBucketWebsite", "bucket-admin"),
    ("PUT /{b}?website", "PutBucketWebsite", "bucket-admin"),
    ("DELETE /{b}?website", "DeleteBucketWebsite", "bucket-admin"),
    ("GET /{b}?replication", "GetBucketReplication", "bucket-admin"),
    ("PUT /{b}?replication", "PutBucketReplication", "bucket-admin"),
    ("DELETE /{b}?replication", "DeleteBucketReplication", "bucket-admin"),
    ("GET /{b}?logging", "GetBucketLogging", "bucket-admin"),
    ("PUT /{b}?logging", "PutBucketLogging", "bucket-admin"),
    ("GET /{b}?notification", "GetBucketNotificationConfiguration", "bucket-admin"),
    ("PUT /{b}?notification", "PutBucketNotificationConfiguration", "bucket-admin"),
    ("GET /{b}?requestPayment", "GetBucketRequestPayment", "bucket-admin"),
    ("PUT /{b}?requestPayment", "PutBucketRequestPayment", "bucket-admin"),
    ("GET /{b}?accelerate", "GetBucketAccelerateConfiguration", "bucket-admin"),
    ("PUT /{b}?accelerate", "PutBucketAccelerateConfiguration", "bucket-admin"),
    ("GET /{b}?ownershipControls", "GetBucketOwnershipControls", "bucket-admin"),
    ("PUT /{b}?ownershipControls", "PutBucketOwnershipControls", "bucket-admin"),
    ("DELETE /{b}?ownershipControls", "DeleteBucketOwnershipControls", "bucket-admin"),
    ("GET /{b}?publicAccessBlock", "GetPublicAccessBlock", "bucket-admin"),
    ("PUT /{b}?publicAccessBlock", "PutPublicAccessBlock", "bucket-admin"),
    ("DELETE /{b}?publicAccessBlock", "DeletePublicAccessBlock", "bucket-admin"),
    ("GET /{b}?object-lock", "GetObjectLockConfiguration", "bucket-admin"),
    ("PUT /{b}?object-lock", "PutObjectLockConfiguration", "bucket-admin"),
    ("GET /{b}?analytics", "ListBucketAnalyticsConfigurations", "bucket-admin"),
    ("GET /{b}?analytics&id=a1", "GetBucketAnalyticsConfiguration", "bucket-admin"),
    ("PUT /{b}?analytics&id=a1", "PutBucketAnalyticsConfiguration", "bucket-admin"),
    ("DELETE /{b}?analytics&id=a1", "DeleteBucketAnalyticsConfiguration", "bucket-admin"),
    ("GET /{b}?inventory", "ListBucketInventoryConfigurations", "bucket-admin"),
    ("GET /{b}?inventory&id=i1", "GetBucketInventoryConfiguration", "bucket-admin"),
    ("PUT /{b}?inventory&id=i1", "PutBucketInventoryConfiguration", "bucket-admin"),
    ("DELETE /{b}?inventory&id=i1", "DeleteBucketInventoryConfiguration", "bucket-admin"),
    ("GET /{b}?metrics", "ListBucketMetricsConfigurations", "bucket-admin"),
    ("GET /{b}?metrics&id=m1", "GetBucketMetricsConfiguration", "bucket-admin"),
    ("PUT /{b}?metrics&id=m1", "PutBucketMetricsConfiguration", "bucket-admin"),
    ("DELETE /{b}?metrics&id=m1", "DeleteBucketMetricsConfiguration", "bucket-admin"),
    ("GET /{b}?intelligent-tiering", "ListBucketIntelligentTieringConfigurations",
     "bucket-admin"),
    ("GET /{b}?intelligent-tiering&id=t", "GetBucketIntelligentTieringConfiguration",
     "bucket-admin"),
    ("PUT /{b}?intelligent-tiering&id=t", "PutBucketIntelligentTieringConfiguration",
     "bucket-admin"),
    ("DELETE /{b}?intelligent-tiering&id=t", "DeleteBucketIntelligentTieringConfiguration",
     "bucket-admin"),
    ("GET /{b}?abac", "GetBucketAbac", "bucket-admin"),
    ("PUT /{b}?abac", "PutBucketAbac", "bucket-admin"),
    ("POST /{b}?metadataConfiguration", "CreateBucketMetadataConfiguration", "bucket-admin"),
    ("GET /{b}?metadataConfiguration", "GetBucketMetadataConfiguration", "bucket-admin"),
    ("DELETE /{b}?metadataConfiguration", "DeleteBucketMetadataConfiguration", "bucket-admin"),
    ("POST /{b}?metadataTable", "CreateBucketMetadataTableConfiguration", "bucket-admin"),
    ("GET /{b}?metadataTable", "GetBucketMetadataTableConfiguration", "bucket-admin"),
    ("DELETE /{b}?metadataTable", "DeleteBucketMetadataTableConfiguration", "bucket-admin"),
    ("PUT /{b}?metadataAnnotationTable", "UpdateBucketMetadataAnnotationTableConfiguration",
     "bucket-admin"),
    ("PUT /{b}?metadataInventoryTable", "UpdateBucketMetadataInventoryTableConfiguration",
     "bucket-admin"),
    ("PUT /{b}?metadataJournalTable", "UpdateBucketMetadataJournalTableConfiguration",
     "bucket-admin"),
    # objects
    ("GET /{b}/{k}", "GetObject", "read"),
    ("GET /{b}/{k}?partNumber=2", "GetObject", "read"),
    ("HEAD /{b}/{k}", "HeadObject", "read"),
    ("HEAD /{b}/{k}?partNumber=2", "HeadObject", "read"),
    ("PUT /{b}/{k}", "PutObject", "write"),
    ("PUT /{b}/{k} copy", "CopyObject", "write"),
    ("DELETE /{b}/{k}", "DeleteObject", "delete"),
    ("GET /{b}/{k}?acl", "GetObjectAcl", "read"),
    ("PUT /{b}/{k}?acl", "PutObjectAcl", "write"),
    ("GET /{b}/{k}?tagging", "GetObjectTagging", "read"),
    ("PUT /{b}/{k}?tagging", "PutObjectTagging", "write"),
    ("DELETE /{b}/{k}?tagging", "DeleteObjectTagging", "write"),
    ("GET /{b}/{k}?retention", "GetObjectRetention", "read"),
    ("PUT /{b}/{k}?retention", "PutObjectRetention", "write"),
    ("GET /{b}/{k}?legal-hold", "GetObjectLegalHold", "read"),
    ("PUT /{b}/{k}?legal-hold", "PutObjectLegalHold", "write"),
    ("GET /{b}/{k}?attributes", "GetObjectAttributes", "read"),
    ("GET /{b}/{k}?torrent", "GetObjectTorrent", "read"),
    ("PUT /{b}/{k}?encryption", "UpdateObjectEncryption", "write"),
    ("POST /{b}/{k}?restore", "RestoreObject", "write"),
    ("POST /{b}/{k}?select&select-type=2", "SelectObjectContent", "read"),
    # multipart uploads
    ("POST /{b}/{k}?uploads", "CreateMultipartUpload", "multipart"),
    ("PUT /{b}/{k}?partNumber=1&uploadId=u", "UploadPart", "multipart"),
    ("PUT /{b}/{k}?partNumber=1&uploadId=u copy", "UploadPartCopy", "multipart"),
    ("GET /{b}/{k}?uploadId=u", "ListParts", "multipart"),
    ("POST /{b}/{k}?uploadId=u", "CompleteMultipartUpload", "multipart"),
    ("DELETE /{b}/{k}?uploadId=u", "AbortMultipartUpload", "multipart"),
]

#: Query parameters that must never change the answer.
NOISE = [
    b"versionId", b"x-id", b"response-content-type", b"response-content-disposition",
    b"response-cache-control", b"response-expires", b"prefix", b"delimiter", b"max-keys",
    b"marker", b"continuation-token", b"start-after", b"encoding-type", b"fetch-owner",
    b"key-marker", b"max-parts", b"part-number-marker", b"X-Amz-Algorithm",
    b"X-Amz-Credential", b"X-Amz-Date", b"X-Amz-Expires", b"X-Amz-SignedHeaders",
    b"X-Amz-Signature", b"X-Amz-Security-Token", b"x-amz-acl", b"x-amz-checksum-crc32",
]
KEY = "photos/2024/café +%~.jpg".encode()


def request(spec: str, style: str) -> tuple[str, Target, set[bytes], dict[str, list[str]]]:
    """(method, target, query names, headers) of an EXPECTED request line."""
    method, _, rest = spec.partition(" ")
    rest, _, copy = rest.partition(" ")
    path, _, query = rest.partition("?")
    names = {piece.partition("=")[0].encode() for piece in query.split("&") if piece}
    slash = style == "virtual"  # path style /bucket has no slash; virtual style is "/"
    target = {
        "/": Target(None, b"", False),
        "/{b}": Target("my.bucket-1", b"", slash),
        "/{b}/{k}": Target("my.bucket-1", KEY, True),
    }[path]
    return method, target, names, (dict(COPY) if copy else {})


def test_every_table_row_is_expected() -> None:
    table = Counter((row[0], row[4], row[5]) for row in operations._TABLE)
    expected = Counter((spec.split()[0], name, access) for spec, name, access in EXPECTED)
    assert table == expected


@pytest.mark.parametrize("noise", [False, True], ids=["bare", "noisy"])
@pytest.mark.parametrize("style", ["path", "virtual"])
@pytest.mark.parametrize(("spec", "name", "access"), EXPECTED, ids=[e[0] for e in EXPECTED])
def test_classify(spec: str, name: str, access: str, style: str, noise: bool) -> None:
    method, target, names, headers = request(spec, style)
    if noise:
        names |= set(NOISE)
        headers.update({"x-amz-acl": ["private"], "x-amz-copy-source-range": ["bytes=0-1"]})
    operation = classify(method, target, names, headers)
    copy_source = COPIED if "copy" in spec.split() else None
    assert operation == Operation(name, access, copy_source)
    assert operation.access in ACCESS_CLASSES


def test_path_style_bucket_with_trailing_slash() -> None:
    target = Target("bucket", b"", True)  # /bucket/
    assert classify("GET", target, [b"list-type"], {}).name == "ListObjectsV2"
    assert classify("PUT", target, [], {}).name == "CreateBucket"


@pytest.mark.parametrize(
    ("method", "target", "names", "headers"),
    [
        ("PATCH", Target("b", b"k", True), [], {}),
        ("OPTIONS", Target("b", b"k", True), [], {}),
        ("get", Target("b", b"k", True), [], {}),
        ("GET ", Target("b", b"k", True), [], {}),
        ("POST", Target("b", b"k", True), [], {}),  # POST on an object, no subresource
        ("POST", Target("b", b"", False), [], {}),  # browser-form PostObject
        ("POST", Target("b", b"k", True), [b"delete"], {}),
        ("POST", Target("b", b"", False), [b"uploads"], {}),
        ("PUT", Target("b", b"", False), [b"uploads"], {}),
        ("PUT", Target("b", b"k", True), [b"partNumber"], {}),  # no uploadId
        ("PUT", Target("b", b"k", True), [b"uploadId"], {}),  # no partNumber
        ("GET", Target("b", b"k", True), [b"uploads", b"uploadId"], {}),
        ("HEAD", Target("b", b"k", True), [b"uploadId"], {}),
        ("HEAD", Target(None, b"", False), [], {}),
        ("PUT", Target(None, b"", False), [], {}),
        ("DELETE", Target(None, b"", False), [], {}),
        ("GET", Target(None, b"", False), [b"acl"], {}),
        ("GET", Target("b", b"k", True), [b"policy"], {}),  # bucket subresource on an object
        ("GET", Target("b", b"k", True), [b"location"], {}),
        ("GET", Target("b", b"", False), [b"retention"], {}),  # object subresource on a bucket
        ("GET", Target("b", b"", False), [b"list-type", b"versions"], {}),
        ("GET", Target("b", b"", False), [b"acl", b"policy"], {}),
        ("GET", Target("b", b"", False), [b"ACL"], {}),  # subresources are case-sensitive
        ("GET", Target("b", b"", False), [b"Versions"], {}),
        ("GET", Target("b", b"", False), [b"session"], {}),  # CreateSession: credentials
        ("GET", Target("b", b"", False), [b"foo"], {}),  # an unknown parameter
        ("GET", Target("b", b"", False), [b"max-directory-buckets"], {}),
        ("GET", Target("b", b"k", True), ["é".encode()], {}),
        ("GET", Target("b", b"k", True), [b"\xff"], {}),
        ("GET", Target("b", b"k", True), [b"annotation"], {}),
        ("PUT", Target("b", b"k", True), [b"renameObject"], {}),
        ("PUT", Target("b", b"k", True), [], {"x-amz-rename-source": ["/b/other"]}),
        ("POST", Target("b", b"k", True), [b"select"], {}),  # no select-type
        ("DELETE", Target("b", b"", False), [b"versioning"], {}),
        ("PUT", Target("b", b"", False), [b"analytics"], {}),  # no id
        ("POST", Target("WriteGetObjectResponse", b"", False), [], {}),
        # a copy source where none belongs
        ("GET", Target("b", b"k", True), [], COPY),
        ("PUT", Target("b", b"k", True), [b"tagging"], COPY),
        ("PUT", Target("b", b"", False), [], COPY),
        ("POST", Target("b", b"k", True), [b"uploads"], COPY),
        ("PUT", Target("b", b"k", True), [b"x-amz-copy-source"], {}),  # hoisted to the query
        ("PUT", Target("b", b"k", True), [b"X-Amz-Copy-Source"], {}),
        ("PUT", Target("b", b"k", True), [b"x-amz-rename-source"], {}),
    ],
)
def test_unknown(
    method: str, target: Target, names: list[bytes], headers: dict[str, list[str]]
) -> None:
    assert classify(method, target, names, headers) == UNKNOWN


@pytest.mark.parametrize("values", [[], ["/a/b", "/c/d"]])
def test_copy_source_header_not_single(values: list[str]) -> None:
    with pytest.raises(S3Error) as info:
        classify("PUT", Target("b", b"k", True), [], {"x-amz-copy-source": values})
    assert (info.value.code, info.value.status) == ("InvalidArgument", 400)


def test_copy_with_malformed_source() -> None:
    with pytest.raises(S3Error) as info:
        classify("PUT", Target("b", b"k", True), [b"partNumber", b"uploadId"],
                 {"x-amz-copy-source": ["nokey"]})
    assert info.value.code == "InvalidArgument"


# -- x-amz-copy-source --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bucket/key", ("bucket", b"key")),
        ("/bucket/key", ("bucket", b"key")),
        ("/bucket/key?versionId=3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", ("bucket", b"key")),
        ("bucket/dir/sub/file.txt?versionId=null", ("bucket", b"dir/sub/file.txt")),
        ("/my.bucket-1/caf%C3%A9%20x", ("my.bucket-1", "café x".encode())),
        ("bucket/a%2Fb", ("bucket", b"a/b")),
        ("bucket/a+b", ("bucket", b"a+b")),  # a plus is a plus, as in paths
        ("bucket/a%2Bb%7E~", ("bucket", b"a+b~~")),
        ("bucket/what%3FversionId%3Dx", ("bucket", b"what?versionId=x")),
        ("bucket/%FF%00", ("bucket", b"\xff\x00")),
        ("bucket//leading", ("bucket", b"/leading")),
        ("bucket/dir/", ("bucket", b"dir/")),
        ("bucket/%E2%82%AC/%F0%9F%98%80", ("bucket", "€/😀".encode())),
    ],
)
def test_parse_copy_source(value: str, expected: tuple[str, bytes]) -> None:
    assert parse_copy_source(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "/",
        "bucket",
        "/bucket",
        "bucket/",
        "/bucket/",
        "//bucket/key",
        "/bucket/?versionId=1",
        "bucket/key?versionId",
        "bucket/key?versionId=",
        "bucket/key?versionid=1",
        "bucket/key?foo=bar",
        "bucket/key?versionId=1&partNumber=2",
        "bucket/key?",
        "bucket/ké",  # not URL-encoded
        "bucket/a b",
        "bucket/key\n",
        " bucket/key",
        "-bucket/key",
        "buck%65t/key",
        "bucket name/key",
        "arn:aws:s3:us-west-2:123456789012:accesspoint/my-ap/object/key",
    ],
)
def test_parse_copy_source_malformed(value: str) -> None:
    with pytest.raises(S3Error) as info:
        parse_copy_source(value)
    assert (info.value.code, info.value.status) == ("InvalidArgument", 400)


# -- properties ---------------------------------------------------------------------------

_NAMES = st.sampled_from(
    sorted(operations.SUBRESOURCES | operations.ORDINARY_PARAMS)
    + ["X-Amz-Signature", "x-amz-copy-source", "foo", "ACL", "session"]
).map(str.encode)
_TARGETS = st.one_of(
    st.just(Target(None, b"", False)),
    st.builds(Target, st.sampled_from(["b", "my.bucket"]), st.binary(max_size=8), st.booleans()),
)
_COPY_VALUES = st.one_of(
    st.text(max_size=30), st.sampled_from(["/b/k", "b/k?versionId=1", "b/", "/b/%41?x=1"])
)
_HEADERS = st.dictionaries(
    st.sampled_from(["x-amz-copy-source", "x-amz-rename-source", "x-amz-acl", "range"]),
    st.lists(_COPY_VALUES, max_size=2),
    max_size=3,
)


@settings(max_examples=500)
@given(
    st.one_of(st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"]), st.text()),
    _TARGETS,
    st.sets(st.one_of(_NAMES, st.binary(max_size=6)), max_size=5),
    _HEADERS,
)
def test_classify_only_s3_errors(
    method: str, target: Target, names: set[bytes], headers: dict[str, list[str]]
) -> None:
    try:
        operation = classify(method, target, names, headers)
    except S3Error as e:
        assert e.code == "InvalidArgument"
        return
    assert (operation.name == "Unknown") == (operation.access is None)
    assert operation.access is None or operation.access in ACCESS_CLASSES
    assert (operation.copy_source is not None) == (
        operation.name in ("CopyObject", "UploadPartCopy")
    )
    # ordinary parameters never change the answer
    assert classify(method, target, names | set(NOISE), headers) == operation


# -- botocore as an oracle ------------------------------------------------------------------

MODEL = botocore.session.get_session().get_service_model("s3")
SERIALIZER = botocore.serialize.create_serializer("rest-xml", include_validation=False)

#: Deprecated operations that send the same request as their successor.
ALIASES = {
    "GetBucketLifecycle": "GetBucketLifecycleConfiguration",
    "PutBucketLifecycle": "PutBucketLifecycleConfiguration",
    "GetBucketNotification": "GetBucketNotificationConfiguration",
    "PutBucketNotification": "PutBucketNotificationConfiguration",
}
#: Operations deliberately not distinguished: GET / is ListBuckets.
NOT_DISTINGUISHED = {"ListDirectoryBuckets"}
#: Operations deliberately left Unknown (refused).
REFUSED = {
    "CreateSession", "RenameObject", "WriteGetObjectResponse", "GetObjectAnnotation",
    "PutObjectAnnotation", "DeleteObjectAnnotation", "ListObjectAnnotations",
}
CLASSIFIED = {name for _, name, _ in EXPECTED}
SAMPLES: dict[str, Any] = {
    "Bucket": "my.bucket-1",
    "Key": "dir/café +x~.txt",
    "CopySource": "/src-bucket/dir/caf%C3%A9%20x?versionId=v1",
    "UploadId": "upload-1",
    "PartNumber": 3,
}


def sample(shape: Any, name: str) -> Any:
    """A value botocore accepts for a member ``name`` of ``shape``."""
    if name in SAMPLES:
        return SAMPLES[name]
    kind = shape.type_name
    if kind == "structure":
        return {m: sample(s, m) for m, s in shape.members.items() if m in shape.required_members}
    if kind == "list":
        return [sample(shape.member, name)]
    if kind == "map":
        return {"k": "v"}
    if kind == "string":
        return shape.enum[0] if shape.enum else "x"
    if kind in ("integer", "long"):
        return 1
    if kind == "boolean":
        return True
    if kind == "timestamp":
        return datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)
    return b"x"


def serialized(operation: str, full: bool) -> tuple[str, str, set[bytes], dict[str, list[str]]]:
    """(method, path, query names, headers) of ``operation`` as botocore sends it.

    ``full``: with every query string and header member set, not just the required ones.
    """
    model = MODEL.operation_model(operation)
    shape = model.input_shape  # None where the operation takes no input (older botocore)
    members = shape.members.items() if shape is not None else ()
    params = {
        m: sample(s, m)
        for m, s in members
        if m in shape.required_members
        or (full and s.serialization.get("location") in ("querystring", "header", "headers"))
    }
    sent = SERIALIZER.serialize_to_request(params, model)
    path, _, static = sent["url_path"].partition("?")
    names = {p.partition("=")[0].encode() for p in static.split("&") if p}
    names |= {name.encode() for name in sent["query_string"]}
    headers = {k.lower(): [str(v)] for k, v in sent["headers"].items()}
    return sent["method"], path, names, headers


def expected_name(operation: str) -> str | None:
    if operation in ALIASES:
        return ALIASES[operation]
    if operation in REFUSED:
        return "Unknown"
    if operation in CLASSIFIED:
        return operation
    return None  # an operation newer than this test: Unknown or itself, nothing else


@pytest.mark.parametrize("full", [False, True], ids=["required", "full"])
@pytest.mark.parametrize("operation", sorted(set(MODEL.operation_names) - NOT_DISTINGUISHED))
def test_botocore_oracle(operation: str, full: bool) -> None:
    method, path, names, headers = serialized(operation, full)
    path_style = parse_target("s3.relay.test", path.encode(), ())
    targets = [path_style]
    if path_style.bucket is not None:
        rest = path.encode()[1 + len(path_style.bucket):] or b"/"
        targets.append(parse_target(f"{path_style.bucket}.relay.test", rest, ("relay.test",)))
    for target in targets:
        result = classify(method, target, names, headers)
        expected = expected_name(operation)
        if expected is None:
            assert result.name in ("Unknown", operation)
        else:
            assert result.name == expected
        if result.name in ("CopyObject", "UploadPartCopy"):
            assert result.copy_source == COPIED


def test_oracle_covers_the_table() -> None:
    """Every operation the table names exists in botocore (where it is new enough)."""
    missing = CLASSIFIED - set(MODEL.operation_names)
    assert missing <= {
        "GetBucketAbac", "PutBucketAbac", "CreateBucketMetadataConfiguration",
        "GetBucketMetadataConfiguration", "DeleteBucketMetadataConfiguration",
        "CreateBucketMetadataTableConfiguration", "GetBucketMetadataTableConfiguration",
        "DeleteBucketMetadataTableConfiguration",
        "UpdateBucketMetadataAnnotationTableConfiguration",
        "UpdateBucketMetadataInventoryTableConfiguration",
        "UpdateBucketMetadataJournalTableConfiguration", "UpdateObjectEncryption",
        "GetObjectTorrent",
    }


def test_botocore_query_parameters_are_known() -> None:
    """Every query parameter botocore sends is a subresource or an ordinary parameter."""
    known = operations.SUBRESOURCES | operations.ORDINARY_PARAMS
    sent = {
        member.serialization.get("name")
        for name in CLASSIFIED & set(MODEL.operation_names)
        if MODEL.operation_model(name).input_shape is not None
        for member in MODEL.operation_model(name).input_shape.members.values()
        if member.serialization.get("location") == "querystring"
    }
    assert sent <= known
