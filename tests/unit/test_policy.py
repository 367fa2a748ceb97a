"""Tests for s3relay.access.policy: parsing client limits and authorizing classified requests."""

from __future__ import annotations

from typing import Mapping

import pytest

from s3relay.access.policy import (
    ACCESS_CLASSES,
    ALLOW_ALL,
    ClientPolicy,
    PolicyError,
    authorize,
    parse_policy,
)
from s3relay.config import ConfigError, parse_config
from s3relay.s3 import operations
from s3relay.s3.addressing import Target
from s3relay.s3.errors import S3Error
from s3relay.s3.operations import Operation, classify


def obj(bucket: str, key: bytes) -> Target:
    return Target(bucket, key, True)


def bkt(bucket: str) -> Target:
    return Target(bucket, b"", False)


SERVICE = Target(None, b"", False)
GET = Operation("GetObject", "read")
PUT = Operation("PutObject", "write")
DELETE = Operation("DeleteObject", "delete")
LIST_V2 = Operation("ListObjectsV2", "list")


def refused(
    policy: ClientPolicy,
    operation: Operation,
    target: Target,
    query: Mapping[bytes, bytes] | None = None,
) -> str:
    with pytest.raises(S3Error) as info:
        authorize(policy, "backup", operation, target, query or {})
    error = info.value
    assert (error.code, error.message, error.status) == ("AccessDenied", "Access Denied", 403)
    assert error.reason.startswith("client backup: ")
    return error.reason


def allowed(
    policy: ClientPolicy,
    operation: Operation,
    target: Target,
    query: Mapping[bytes, bytes] | None = None,
) -> None:
    authorize(policy, "backup", operation, target, query or {})


# -- parsing -------------------------------------------------------------------------


def test_absent_keys_allow_everything() -> None:
    assert parse_policy() == ALLOW_ALL == ClientPolicy()
    assert ALLOW_ALL.buckets is None and ALLOW_ALL.prefixes is None
    assert ALLOW_ALL.operations == frozenset(ACCESS_CLASSES)


def test_parse_values() -> None:
    policy = parse_policy(
        buckets="data, logs-* ,", prefixes="data:photos/, *:public/ ,x:", operations="read,list"
    )
    assert policy.buckets == ("data", "logs-*")
    assert policy.prefixes == (("data", "photos/"), ("*", "public/"), ("x", ""))
    assert policy.operations == frozenset({"read", "list"})


def test_read_only_and_all() -> None:
    assert parse_policy(read_only="yes").operations == frozenset({"read", "list"})
    assert parse_policy(read_only="no").operations == frozenset(ACCESS_CLASSES)
    assert parse_policy(operations="all").operations == frozenset(ACCESS_CLASSES)


@pytest.mark.parametrize(
    ("values", "key", "message"),
    [
        ({"operations": "read, delte"}, "operations", "unknown operation class 'delte'"),
        ({"operations": "Read"}, "operations", "unknown operation class 'Read'"),
        ({"operations": "all, read"}, "operations", "'all' goes alone"),
        ({"operations": " , "}, "operations", "names no operation class"),
        ({"read_only": "true"}, "read_only", "must be yes or no"),
        ({"read_only": "yes", "operations": "read"}, "read_only", "not both"),
        ({"read_only": "no", "operations": "read"}, "read_only", "not both"),
        ({"prefixes": "photos/"}, "prefixes", "is not BUCKET:PREFIX"),
        ({"prefixes": ":photos/"}, "prefixes", "is not BUCKET:PREFIX"),
        ({"prefixes": "a/b:photos/"}, "prefixes", "is not BUCKET:PREFIX"),
        ({"prefixes": "data:/photos/"}, "prefixes", "never starts with /"),
        ({"prefixes": ","}, "prefixes", "names no BUCKET:PREFIX"),
        ({"buckets": ","}, "buckets", "names no bucket"),
        ({"buckets": "a/b"}, "buckets", "is not a bucket name or glob"),
        ({"buckets": "a:b"}, "buckets", "is not a bucket name or glob"),
    ],
)
def test_parse_errors(values: dict[str, str], key: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(**values)
    assert info.value.key == key
    assert message in info.value.message


CLIENT = "[upstream]\nurl = http://h\nregion = r\n[client:a]\naccess_key_id = A\n" \
    "secret_access_key = s3cr3t\ncredentials = self\n"


def test_config_builds_the_policy() -> None:
    config = parse_config(CLIENT + "buckets = b*\nprefixes = b1:p/\noperations = read, list\n")
    policy = config.clients["a"].policy
    assert policy == ClientPolicy(("b*",), (("b1", "p/"),), frozenset({"read", "list"}))
    assert parse_config(CLIENT).clients["a"].policy == ALLOW_ALL
    assert parse_config(CLIENT + "read_only = yes\n").clients["a"].policy.operations == {
        "read", "list"}


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ("operations = read, nuke\n", "operations", "unknown operation class 'nuke'"),
        ("prefixes = nocolon\n", "prefixes", "is not BUCKET:PREFIX"),
        ("read_only = maybe\n", "read_only", "must be yes or no"),
        ("read_only = yes\noperations = read\n", "read_only", "not both"),
    ],
)
def test_config_errors_name_section_and_key(extra: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(CLIENT + extra)
    assert (info.value.section, info.value.key) == ("client:a", key)
    assert str(info.value).startswith(f"[client:a] {key}: ")
    assert message in str(info.value)
    assert "s3cr3t" not in str(info.value)


# -- authorizing ---------------------------------------------------------------------


def test_allow_all_allows_every_known_operation() -> None:
    for access in ACCESS_CLASSES:
        allowed(ALLOW_ALL, Operation("X", access), obj("b", b"k"))
    allowed(ALLOW_ALL, Operation("DeleteObjects", "delete"), bkt("b"))
    allowed(ALLOW_ALL, LIST_V2, bkt("b"))


@pytest.mark.parametrize("policy", [ALLOW_ALL, parse_policy(read_only="yes")])
def test_unknown_operation_always_refused(policy: ClientPolicy) -> None:
    assert refused(policy, operations.UNKNOWN, obj("b", b"k")) == (
        "client backup: unrecognised S3 request"
    )
    assert "unrecognised" in refused(policy, operations.UNKNOWN, SERVICE)


def test_operation_classes() -> None:
    policy = parse_policy(operations="read, write")
    allowed(policy, GET, obj("b", b"k"))
    allowed(policy, PUT, obj("b", b"k"))
    assert refused(policy, DELETE, obj("b", b"k")) == (
        "client backup: operation class 'delete' not allowed"
    )
    assert "'list'" in refused(policy, Operation("ListBuckets", "list"), SERVICE)
    assert "'multipart'" in refused(policy, Operation("UploadPart", "multipart"), obj("b", b"k"))
    assert "'bucket-admin'" in refused(policy, Operation("CreateBucket", "bucket-admin"), bkt("b"))


def test_read_only() -> None:
    policy = parse_policy(read_only="yes")
    allowed(policy, GET, obj("b", b"k"))
    allowed(policy, LIST_V2, bkt("b"))
    allowed(policy, Operation("ListBuckets", "list"), SERVICE)
    for operation in (PUT, DELETE, Operation("CreateMultipartUpload", "multipart")):
        refused(policy, operation, obj("b", b"k"))
    refused(policy, Operation("DeleteObjects", "delete"), bkt("b"))
    refused(policy, Operation("DeleteBucket", "bucket-admin"), bkt("b"))


def test_buckets_and_globs() -> None:
    policy = parse_policy(buckets="data, logs-*, x?z")
    for bucket in ("data", "logs-", "logs-2024", "xyz"):
        allowed(policy, GET, obj(bucket, b"k"))
        allowed(policy, LIST_V2, bkt(bucket))
    for bucket in ("data2", "Data", "logs", "xz", "other"):
        assert refused(policy, GET, obj(bucket, b"k")) == (
            f"client backup: bucket {bucket!r} not allowed"
        )
        refused(policy, LIST_V2, bkt(bucket))
    # ListBuckets names no bucket: allowed (its answer is not filtered).
    allowed(policy, Operation("ListBuckets", "list"), SERVICE)


def test_object_prefixes() -> None:
    policy = parse_policy(prefixes="data:photos/, *:public/, logs-*:2024-")
    allowed(policy, GET, obj("data", b"photos/cat.jpg"))
    allowed(policy, PUT, obj("data", b"public/x"))
    allowed(policy, PUT, obj("other", b"public/x"))
    allowed(policy, DELETE, obj("logs-a", b"2024-01"))
    assert refused(policy, GET, obj("data", b"secret")) == (
        "client backup: key is outside the allowed prefixes of bucket 'data'"
    )
    refused(policy, GET, obj("other", b"photos/cat.jpg"))  # photos/ is data's only
    refused(policy, DELETE, obj("logs-a", b"2023-01"))
    refused(policy, GET, obj("data", b"photos"))  # no trailing slash: not under photos/
    refused(policy, GET, obj("data", b"Photos/x"))


def test_bucket_without_a_matching_prefix_entry_has_no_keys() -> None:
    policy = parse_policy(prefixes="data:photos/")
    refused(policy, GET, obj("other", b"photos/x"))
    refused(policy, LIST_V2, bkt("other"), {b"prefix": b"photos/"})


def test_empty_prefix_means_the_whole_bucket() -> None:
    policy = parse_policy(prefixes="data:")
    allowed(policy, GET, obj("data", b"anything"))
    allowed(policy, LIST_V2, bkt("data"), {b"prefix": b""})
    refused(policy, LIST_V2, bkt("data"))  # still must carry a prefix parameter


def test_dot_segments_refused_with_prefixes() -> None:
    policy = parse_policy(prefixes="data:photos/")
    for key in (b"photos/../secret", b"photos/./x", b"photos/.."):
        assert "'.' or '..'" in refused(policy, GET, obj("data", key))
    allowed(policy, GET, obj("data", b"photos/..x/.y"))
    allowed(ALLOW_ALL, GET, obj("data", b"photos/../secret"))


def test_unicode_prefix() -> None:
    policy = parse_policy(prefixes="data:fotos/é/")
    allowed(policy, GET, obj("data", "fotos/é/1".encode()))
    refused(policy, GET, obj("data", b"fotos/e/1"))


@pytest.mark.parametrize(
    "name", ["ListObjects", "ListObjectsV2", "ListObjectVersions", "ListMultipartUploads"]
)
def test_listing_needs_an_allowed_prefix(name: str) -> None:
    access = "multipart" if name == "ListMultipartUploads" else "list"
    operation = Operation(name, access)
    policy = parse_policy(prefixes="data:photos/")
    allowed(policy, operation, bkt("data"), {b"prefix": b"photos/"})
    allowed(policy, operation, bkt("data"), {b"prefix": b"photos/2024/", b"delimiter": b"/"})
    assert refused(policy, operation, bkt("data")) == (
        f"client backup: {name} without one prefix query parameter"
    )
    assert "listing prefix is outside" in refused(
        policy, operation, bkt("data"), {b"prefix": b"photo"}
    )
    refused(policy, operation, bkt("data"), {b"prefix": b""})
    allowed(ALLOW_ALL, operation, bkt("data"))


def test_bucket_level_operations_without_keys_are_not_prefix_checked() -> None:
    policy = parse_policy(prefixes="data:photos/")
    allowed(policy, Operation("HeadBucket", "list"), bkt("data"))
    allowed(policy, Operation("GetBucketLocation", "list"), bkt("data"))
    allowed(policy, Operation("ListBuckets", "list"), SERVICE)


def test_multi_delete() -> None:
    multi = Operation("DeleteObjects", "delete")
    assert refused(parse_policy(prefixes="data:photos/"), multi, bkt("data")) == (
        "client backup: multi-delete with prefix restrictions is not supported yet"
    )
    allowed(parse_policy(buckets="data", operations="delete"), multi, bkt("data"))
    refused(parse_policy(buckets="data"), multi, bkt("other"))
    refused(parse_policy(operations="read, write"), multi, bkt("data"))


def test_copy_source_must_be_readable() -> None:
    copy = Operation("CopyObject", "write", ("data", b"photos/a"))
    part_copy = Operation("UploadPartCopy", "multipart", ("data", b"photos/a"))
    policy = parse_policy(buckets="data, dest", prefixes="data:photos/, dest:in/")
    allowed(policy, copy, obj("dest", b"in/a"))
    allowed(policy, part_copy, obj("dest", b"in/a"))
    assert refused(policy, copy, obj("dest", b"out/a")) == (
        "client backup: key is outside the allowed prefixes of bucket 'dest'"
    )
    outside = Operation("CopyObject", "write", ("data", b"private/a"))
    assert refused(policy, outside, obj("dest", b"in/a")) == (
        "client backup: copy source key is outside the allowed prefixes of bucket 'data'"
    )
    other_bucket = Operation("CopyObject", "write", ("secret", b"photos/a"))
    assert refused(policy, other_bucket, obj("dest", b"in/a")) == (
        "client backup: copy source bucket 'secret' not allowed"
    )
    write_only = parse_policy(operations="write")
    assert refused(write_only, copy, obj("dest", b"in/a")) == (
        "client backup: operation class 'read' (copy source) not allowed"
    )
    allowed(write_only, PUT, obj("dest", b"in/a"))
    traversal = Operation("CopyObject", "write", ("data", b"photos/../private/a"))
    refused(policy, traversal, obj("dest", b"in/a"))


def test_with_the_classifier() -> None:
    """authorize works on what classify really returns."""
    headers = {"x-amz-copy-source": ["/data/private%2Fa"]}
    copy = classify("PUT", obj("data", b"photos/b"), set(), headers)
    assert copy.copy_source == ("data", b"private/a")
    policy = parse_policy(prefixes="data:photos/")
    assert "copy source key" in refused(policy, copy, obj("data", b"photos/b"))
    listing = classify("GET", bkt("data"), {b"list-type", b"prefix"}, {})
    allowed(policy, listing, bkt("data"), {b"list-type": b"2", b"prefix": b"photos/"})
    session = classify("GET", bkt("data"), {b"session"}, {})
    assert "unrecognised" in refused(ALLOW_ALL, session, bkt("data"))
