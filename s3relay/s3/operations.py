# -*- test-case-name: tests.unit.test_operations -*-
"""Which S3 operation a request is, and what kind of access it needs.

Access control needs to know what a request *does* before it is relayed.  S3
encodes that in the method, whether a bucket and key are named, which
subresource query parameters are present (``?acl``, ``?uploads``,
``?uploadId=`` ...) and the ``x-amz-copy-source`` header.  This module maps
those to the S3 API operation name and one access class, from one table.

It fails closed: a combination the table does not list, a query parameter it
does not know (S3-compatible servers grow subresources, e.g. ``?session``
hands out credentials) or a copy source where none belongs yields
``Operation("Unknown", None)``, which callers refuse.  Pure, stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from s3relay.s3.addressing import Target
from s3relay.s3.errors import S3Error

#: The access classes operations are sorted into (``[client:NAME] operations``).
ACCESS_CLASSES = ("read", "list", "write", "delete", "multipart", "bucket-admin")
READ, LIST, WRITE, DELETE, MULTIPART, ADMIN = ACCESS_CLASSES


@dataclass(frozen=True)
class Operation:
    """An S3 operation and the access class it needs."""

    #: S3 API operation name (as botocore spells it), "Unknown" if not recognised.
    name: str
    #: One of ACCESS_CLASSES, None for Unknown (refuse).
    access: str | None
    #: For CopyObject / UploadPartCopy: the source (bucket, key bytes) that must be readable too.
    copy_source: tuple[str, bytes] | None = None


UNKNOWN = Operation("Unknown", None)

SERVICE, BUCKET, OBJECT = "service", "bucket", "object"

# Access classes, and why:
#
# * read: object data and an object's own metadata -- GetObject/HeadObject, and
#   reads of an object's ACL, tags, retention, legal hold, attributes, torrent.
#   SelectObjectContent is a read (S3 itself requires s3:GetObject for it).
# * list: enumerating a bucket (objects, versions) or the buckets, plus
#   HeadBucket and GetBucketLocation, which only say that a bucket exists and
#   where (IAM grants HeadBucket with s3:ListBucket; SDKs and s3cmd probe both).
# * write: creating or changing an object: PutObject, CopyObject (whose source
#   needs `read` too, see Operation.copy_source), and writes of an object's
#   ACL, tags, retention, legal hold, encryption.  PutObjectAcl is `write`, not
#   `bucket-admin`, because PutObject can set the same ACL (x-amz-acl) anyway.
#   DeleteObjectTagging is `write`, not `delete`: it removes no data, and is
#   the same as PutObjectTagging with an empty TagSet.  RestoreObject is
#   `write` (as in IAM): it changes object state and incurs retrieval charges.
# * delete: removing objects or versions: DeleteObject, DeleteObjects (callers
#   check every key in the body, see s3relay.s3.deletexml).
# * multipart: the multipart-upload life cycle, including ListParts,
#   ListMultipartUploads (it names in-progress keys) and AbortMultipartUpload
#   (it discards only an unfinished upload).  CompleteMultipartUpload creates
#   an object: grant `multipart` together with `write`.  UploadPartCopy's
#   source needs `read`.
# * bucket-admin: everything about the bucket itself: create/delete, and both
#   reads and writes of its configuration (ACL, policy, policy status, CORS,
#   lifecycle, versioning, encryption, tagging, replication, website, logging,
#   notification, ownership controls, public access block, object lock,
#   analytics/inventory/metrics/intelligent-tiering, metadata tables, ...):
#   the reads reveal the security posture and no data client needs them.
#
# Deliberately Unknown (refused): POST to a bucket without subresource (the
# browser-form PostObject, not SigV4-signed), CreateSession (?session, hands
# out S3 Express credentials), RenameObject (?renameObject), object
# annotations (?annotation), WriteGetObjectResponse, ListDirectoryBuckets'
# ?max-directory-buckets.
#
# A row: method, level (service / bucket / object), the subresource query
# parameters present (exactly this set, space separated), whether an
# x-amz-copy-source header is present, the operation, its access class.
_Row = tuple[str, str, str, bool, str, str]
_TABLE: tuple[_Row, ...] = (
    ("GET", SERVICE, "", False, "ListBuckets", LIST),
    # -- bucket: contents ------------------------------------------------------------
    ("HEAD", BUCKET, "", False, "HeadBucket", LIST),
    ("GET", BUCKET, "", False, "ListObjects", LIST),
    ("GET", BUCKET, "list-type", False, "ListObjectsV2", LIST),
    ("GET", BUCKET, "versions", False, "ListObjectVersions", LIST),
    ("GET", BUCKET, "location", False, "GetBucketLocation", LIST),
    ("GET", BUCKET, "uploads", False, "ListMultipartUploads", MULTIPART),
    ("POST", BUCKET, "delete", False, "DeleteObjects", DELETE),
    # -- bucket: the bucket itself -------------------------------------------------------
    ("PUT", BUCKET, "", False, "CreateBucket", ADMIN),
    ("DELETE", BUCKET, "", False, "DeleteBucket", ADMIN),
    ("GET", BUCKET, "acl", False, "GetBucketAcl", ADMIN),
    ("PUT", BUCKET, "acl", False, "PutBucketAcl", ADMIN),
    ("GET", BUCKET, "policy", False, "GetBucketPolicy", ADMIN),
    ("PUT", BUCKET, "policy", False, "PutBucketPolicy", ADMIN),
    ("DELETE", BUCKET, "policy", False, "DeleteBucketPolicy", ADMIN),
    ("GET", BUCKET, "policyStatus", False, "GetBucketPolicyStatus", ADMIN),
    ("GET", BUCKET, "versioning", False, "GetBucketVersioning", ADMIN),
    ("PUT", BUCKET, "versioning", False, "PutBucketVersioning", ADMIN),
    ("GET", BUCKET, "lifecycle", False, "GetBucketLifecycleConfiguration", ADMIN),
    ("PUT", BUCKET, "lifecycle", False, "PutBucketLifecycleConfiguration", ADMIN),
    ("DELETE", BUCKET, "lifecycle", False, "DeleteBucketLifecycle", ADMIN),
    ("GET", BUCKET, "cors", False, "GetBucketCors", ADMIN),
    ("PUT", BUCKET, "cors", False, "PutBucketCors", ADMIN),
    ("DELETE", BUCKET, "cors", False, "DeleteBucketCors", ADMIN),
    ("GET", BUCKET, "encryption", False, "GetBucketEncryption", ADMIN),
    ("PUT", BUCKET, "encryption", False, "PutBucketEncryption", ADMIN),
    ("DELETE", BUCKET, "encryption", False, "DeleteBucketEncryption", ADMIN),
    ("GET", BUCKET, "tagging", False, "GetBucketTagging", ADMIN),
    ("PUT", BUCKET, "tagging", False, "PutBucketTagging", ADMIN),
    ("DELETE", BUCKET, "tagging", False, "DeleteBucketTagging", ADMIN),
    ("GET", BUCKET, "website", False, "GetBucketWebsite", ADMIN),
    ("PUT", BUCKET, "website", False, "PutBucketWebsite", ADMIN),
    ("DELETE", BUCKET, "website", False, "DeleteBucketWebsite", ADMIN),
    ("GET", BUCKET, "replication", False, "GetBucketReplication", ADMIN),
    ("PUT", BUCKET, "replication", False, "PutBucketReplication", ADMIN),
    ("DELETE", BUCKET, "replication", False, "DeleteBucketReplication", ADMIN),
    ("GET", BUCKET, "logging", False, "GetBucketLogging", ADMIN),
    ("PUT", BUCKET, "logging", False, "PutBucketLogging", ADMIN),
    ("GET", BUCKET, "notification", False, "GetBucketNotificationConfiguration", ADMIN),
    ("PUT", BUCKET, "notification", False, "PutBucketNotificationConfiguration", ADMIN),
    ("GET", BUCKET, "requestPayment", False, "GetBucketRequestPayment", ADMIN),
    ("PUT", BUCKET, "requestPayment", False, "PutBucketRequestPayment", ADMIN),
    ("GET", BUCKET, "accelerate", False, "GetBucketAccelerateConfiguration", ADMIN),
    ("PUT", BUCKET, "accelerate", False, "PutBucketAccelerateConfiguration", ADMIN),
    ("GET", BUCKET, "ownershipControls", False, "GetBucketOwnershipControls", ADMIN),
    ("PUT", BUCKET, "ownershipControls", False, "PutBucketOwnershipControls", ADMIN),
    ("DELETE", BUCKET, "ownershipControls", False, "DeleteBucketOwnershipControls", ADMIN),
    ("GET", BUCKET, "publicAccessBlock", False, "GetPublicAccessBlock", ADMIN),
    ("PUT", BUCKET, "publicAccessBlock", False, "PutPublicAccessBlock", ADMIN),
    ("DELETE", BUCKET, "publicAccessBlock", False, "DeletePublicAccessBlock", ADMIN),
    ("GET", BUCKET, "object-lock", False, "GetObjectLockConfiguration", ADMIN),
    ("PUT", BUCKET, "object-lock", False, "PutObjectLockConfiguration", ADMIN),
    ("GET", BUCKET, "analytics", False, "ListBucketAnalyticsConfigurations", ADMIN),
    ("GET", BUCKET, "analytics id", False, "GetBucketAnalyticsConfiguration", ADMIN),
    ("PUT", BUCKET, "analytics id", False, "PutBucketAnalyticsConfiguration", ADMIN),
    ("DELETE", BUCKET, "analytics id", False, "DeleteBucketAnalyticsConfiguration", ADMIN),
    ("GET", BUCKET, "inventory", False, "ListBucketInventoryConfigurations", ADMIN),
    ("GET", BUCKET, "inventory id", False, "GetBucketInventoryConfiguration", ADMIN),
    ("PUT", BUCKET, "inventory id", False, "PutBucketInventoryConfiguration", ADMIN),
    ("DELETE", BUCKET, "inventory id", False, "DeleteBucketInventoryConfiguration", ADMIN),
    ("GET", BUCKET, "metrics", False, "ListBucketMetricsConfigurations", ADMIN),
    ("GET", BUCKET, "metrics id", False, "GetBucketMetricsConfiguration", ADMIN),
    ("PUT", BUCKET, "metrics id", False, "PutBucketMetricsConfiguration", ADMIN),
    ("DELETE", BUCKET, "metrics id", False, "DeleteBucketMetricsConfiguration", ADMIN),
    ("GET", BUCKET, "intelligent-tiering", False,
     "ListBucketIntelligentTieringConfigurations", ADMIN),
    ("GET", BUCKET, "intelligent-tiering id", False,
     "GetBucketIntelligentTieringConfiguration", ADMIN),
    ("PUT", BUCKET, "intelligent-tiering id", False,
     "PutBucketIntelligentTieringConfiguration", ADMIN),
    ("DELETE", BUCKET, "intelligent-tiering id", False,
     "DeleteBucketIntelligentTieringConfiguration", ADMIN),
    ("GET", BUCKET, "abac", False, "GetBucketAbac", ADMIN),
    ("PUT", BUCKET, "abac", False, "PutBucketAbac", ADMIN),
    ("POST", BUCKET, "metadataConfiguration", False, "CreateBucketMetadataConfiguration", ADMIN),
    ("GET", BUCKET, "metadataConfiguration", False, "GetBucketMetadataConfiguration", ADMIN),
    ("DELETE", BUCKET, "metadataConfiguration", False,
     "DeleteBucketMetadataConfiguration", ADMIN),
    ("POST", BUCKET, "metadataTable", False, "CreateBucketMetadataTableConfiguration", ADMIN),
    ("GET", BUCKET, "metadataTable", False, "GetBucketMetadataTableConfiguration", ADMIN),
    ("DELETE", BUCKET, "metadataTable", False, "DeleteBucketMetadataTableConfiguration", ADMIN),
    ("PUT", BUCKET, "metadataAnnotationTable", False,
     "UpdateBucketMetadataAnnotationTableConfiguration", ADMIN),
    ("PUT", BUCKET, "metadataInventoryTable", False,
     "UpdateBucketMetadataInventoryTableConfiguration", ADMIN),
    ("PUT", BUCKET, "metadataJournalTable", False,
     "UpdateBucketMetadataJournalTableConfiguration", ADMIN),
    # -- objects -------------------------------------------------------------------------
    ("GET", OBJECT, "", False, "GetObject", READ),
    ("GET", OBJECT, "partNumber", False, "GetObject", READ),
    ("HEAD", OBJECT, "", False, "HeadObject", READ),
    ("HEAD", OBJECT, "partNumber", False, "HeadObject", READ),
    ("PUT", OBJECT, "", False, "PutObject", WRITE),
    ("PUT", OBJECT, "", True, "CopyObject", WRITE),
    ("DELETE", OBJECT, "", False, "DeleteObject", DELETE),
    ("GET", OBJECT, "acl", False, "GetObjectAcl", READ),
    ("PUT", OBJECT, "acl", False, "PutObjectAcl", WRITE),
    ("GET", OBJECT, "tagging", False, "GetObjectTagging", READ),
    ("PUT", OBJECT, "tagging", False, "PutObjectTagging", WRITE),
    ("DELETE", OBJECT, "tagging", False, "DeleteObjectTagging", WRITE),
    ("GET", OBJECT, "retention", False, "GetObjectRetention", READ),
    ("PUT", OBJECT, "retention", False, "PutObjectRetention", WRITE),
    ("GET", OBJECT, "legal-hold", False, "GetObjectLegalHold", READ),
    ("PUT", OBJECT, "legal-hold", False, "PutObjectLegalHold", WRITE),
    ("GET", OBJECT, "attributes", False, "GetObjectAttributes", READ),
    ("GET", OBJECT, "torrent", False, "GetObjectTorrent", READ),
    ("PUT", OBJECT, "encryption", False, "UpdateObjectEncryption", WRITE),
    ("POST", OBJECT, "restore", False, "RestoreObject", WRITE),
    ("POST", OBJECT, "select select-type", False, "SelectObjectContent", READ),
    # -- objects: multipart uploads ------------------------------------------------------
    ("POST", OBJECT, "uploads", False, "CreateMultipartUpload", MULTIPART),
    ("PUT", OBJECT, "partNumber uploadId", False, "UploadPart", MULTIPART),
    ("PUT", OBJECT, "partNumber uploadId", True, "UploadPartCopy", MULTIPART),
    ("GET", OBJECT, "uploadId", False, "ListParts", MULTIPART),
    ("POST", OBJECT, "uploadId", False, "CompleteMultipartUpload", MULTIPART),
    ("DELETE", OBJECT, "uploadId", False, "AbortMultipartUpload", MULTIPART),
)

_Key = tuple[str, str, frozenset[str], bool]
_INDEX: dict[_Key, Operation] = {
    (method, level, frozenset(markers.split()), copy): Operation(name, access)
    for method, level, markers, copy, name, access in _TABLE
}
assert len(_INDEX) == len(_TABLE), "two table rows match the same requests"
assert all(op.access in ACCESS_CLASSES for op in _INDEX.values())

#: Query parameters that select the operation: exactly these take part in the lookup.
SUBRESOURCES = frozenset(name for row in _TABLE for name in row[2].split())

#: Query parameters that refine an operation without changing which one it is.
ORDINARY_PARAMS = frozenset(
    {
        "versionId", "x-id",
        "response-cache-control", "response-content-disposition", "response-content-encoding",
        "response-content-language", "response-content-type", "response-expires",
        "prefix", "delimiter", "max-keys", "marker", "continuation-token", "start-after",
        "encoding-type", "fetch-owner", "key-marker", "version-id-marker", "upload-id-marker",
        "max-uploads", "max-parts", "part-number-marker", "max-buckets", "bucket-region",
    }
)

#: Headers (or ``X-Amz-*`` query parameters: presigned URLs may hoist
#: headers) that make a request read or move another object.
_COPY_SOURCE, _RENAME_SOURCE = "x-amz-copy-source", "x-amz-rename-source"


def classify(
    method: str,
    target: Target,
    query_names: Collection[bytes],
    headers: Mapping[str, Sequence[str]],
) -> Operation:
    """The operation a request is, from its method, target, query names and headers.

    ``query_names`` are the decoded query parameter names as sent; ``headers``
    maps lowercase names to values.  Raises S3Error only for a malformed
    ``x-amz-copy-source`` on a copy.  ``x-id`` is ignored: only its name is
    known here, and a client's hint could never grant anything anyway.
    """
    markers = set()
    for raw in query_names:
        name = raw.decode("ascii", "replace")
        if name in SUBRESOURCES:
            markers.add(name)
        elif name.lower().startswith(("x-amz-copy-source", _RENAME_SOURCE)):
            return UNKNOWN
        elif name not in ORDINARY_PARAMS and not name.lower().startswith("x-amz-"):
            return UNKNOWN
    if _RENAME_SOURCE in headers:
        return UNKNOWN
    copy = _COPY_SOURCE in headers
    if target.bucket is None:
        level = SERVICE
    else:
        level = OBJECT if target.key else BUCKET
    operation = _INDEX.get((method, level, frozenset(markers), copy), UNKNOWN)
    if copy and operation.access is not None:
        values = headers[_COPY_SOURCE]
        if len(values) != 1:
            raise _bad_copy_source("several x-amz-copy-source headers")
        operation = Operation(operation.name, operation.access, parse_copy_source(values[0]))
    return operation


# What S3 accepts as a bucket name in a copy source (as addressing.parse_target).
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
# Printable ASCII without space: the value must be URL-encoded.
_ENCODED = re.compile(r"[\x21-\x7e]+")


def _bad_copy_source(reason: str) -> S3Error:
    return S3Error(
        "InvalidArgument",
        "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        400,
        reason,
    )


def parse_copy_source(value: str) -> tuple[str, bytes]:
    """(bucket, key bytes) of an ``x-amz-copy-source`` header value.

    ``/bucket/key`` or ``bucket/key``, optionally ``?versionId=...``; the key is
    percent-decoded once (``+`` stays a plus, as in paths).  Anything else --
    raw non-ASCII, access point ARNs, other query parameters -- is refused,
    so the relay and the upstream cannot disagree about the source.
    """
    if not _ENCODED.fullmatch(value):
        raise _bad_copy_source("x-amz-copy-source is empty or not URL-encoded ASCII")
    path, question, query = value.partition("?")
    if question:
        name, equals, version = query.partition("=")
        if name != "versionId" or not equals or not version or "&" in version:
            raise _bad_copy_source("x-amz-copy-source query other than versionId=")
    if path.startswith("/"):
        path = path[1:]
    bucket, _, key = path.partition("/")
    if not _BUCKET.fullmatch(bucket) or not key:
        raise _bad_copy_source("x-amz-copy-source has no bucket/key")
    return bucket, unquote_to_bytes(key)
