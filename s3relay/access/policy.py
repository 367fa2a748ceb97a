# -*- test-case-name: tests.unit.test_policy -*-
"""What each client may do: buckets, key prefixes and operation classes.

A relay in front of one upstream account hands every client that account's
power unless it narrows it itself.  This module holds one client's limits as
a frozen value parsed once from its ``[client:NAME]`` section, and decides
per request -- after the signature is checked and the operation classified,
before anything goes upstream -- whether the request stays within them.

It fails closed: an operation the classifier does not recognise is always
refused, a bucket no ``prefixes`` entry matches has no readable keys for a
prefix-restricted client, and a request whose keys cannot all be checked
from the headers (DeleteObjects names its keys in the body) is refused for
a prefix-restricted client.  Pure, stdlib only; no Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Mapping, Sequence

from s3relay.s3.addressing import Target
from s3relay.s3.errors import S3Error
from s3relay.s3.operations import ACCESS_CLASSES, Operation

ALL = "all"
READ_ONLY = frozenset({"read", "list"})

#: Bucket-level operations that enumerate keys: a prefix-restricted client
#: must ask only for keys under one of its prefixes (``?prefix=``).
KEY_LISTINGS = frozenset(
    {"ListObjects", "ListObjectsV2", "ListObjectVersions", "ListMultipartUploads"}
)


#: What ``multipart = no`` refuses: starting, feeding and completing uploads.
#: AbortMultipartUpload, ListParts and ListMultipartUploads stay allowed (under
#: the ``multipart`` operation class) so that leftovers can be found and removed.
MULTIPART_UPLOADS = frozenset(
    {"CreateMultipartUpload", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload"}
)


class PolicyError(ValueError):
    """A bad policy value; ``key`` names the config key (config.py adds the section)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ClientPolicy:
    """One client's limits.  The default value allows everything (today's behaviour)."""

    #: Bucket names or fnmatch globs the client may use; None = any bucket.
    buckets: tuple[str, ...] | None = None
    #: (bucket name or glob, key prefix) pairs; None = any key.
    prefixes: tuple[tuple[str, str], ...] | None = None
    #: Access classes the client may use.
    operations: frozenset[str] = frozenset(ACCESS_CLASSES)
    #: Whether the client may upload in parts (``multipart = no``: the
    #: MULTIPART_UPLOADS operations are refused; cleanup stays allowed).
    multipart_uploads: bool = True

    def bucket_allowed(self, bucket: str) -> bool:
        return self.buckets is None or any(fnmatchcase(bucket, glob) for glob in self.buckets)

    def prefixes_for(self, bucket: str) -> tuple[bytes, ...] | None:
        """The key prefixes (UTF-8) allowed in ``bucket``; None = every key."""
        if self.prefixes is None:
            return None
        return tuple(
            prefix.encode("utf-8") for glob, prefix in self.prefixes if fnmatchcase(bucket, glob)
        )


ALLOW_ALL = ClientPolicy()


def _items(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def parse_policy(
    buckets: str | None = None,
    prefixes: str | None = None,
    operations: str | None = None,
    read_only: str | None = None,
    multipart: str | None = None,
) -> ClientPolicy:
    """The policy of a client section's raw values (None: key absent).

    Raises PolicyError naming the offending key, so that a typo ("delte")
    stops startup instead of silently granting or denying.
    """
    bucket_globs: tuple[str, ...] | None = None
    if buckets is not None:
        bucket_globs = _items(buckets)
        if not bucket_globs:
            raise PolicyError("buckets", "names no bucket")
        for glob in bucket_globs:
            if "/" in glob or ":" in glob or any(c.isspace() for c in glob):
                raise PolicyError("buckets", f"{glob!r} is not a bucket name or glob")

    prefix_rules: tuple[tuple[str, str], ...] | None = None
    if prefixes is not None:
        rules = []
        for entry in _items(prefixes):
            glob, colon, prefix = entry.partition(":")
            glob = glob.strip()
            if not colon or not glob or "/" in glob or any(c.isspace() for c in glob):
                raise PolicyError(
                    "prefixes", f"{entry!r} is not BUCKET:PREFIX (e.g. photos:2024/)"
                )
            if prefix.startswith("/"):
                raise PolicyError("prefixes", f"{entry!r}: a key prefix never starts with /")
            rules.append((glob, prefix))
        if not rules:
            raise PolicyError("prefixes", "names no BUCKET:PREFIX")
        prefix_rules = tuple(rules)

    if read_only is not None and read_only not in ("yes", "no"):
        raise PolicyError("read_only", "must be yes or no")
    if read_only is not None and operations is not None:
        raise PolicyError("read_only", "give read_only or operations, not both")

    classes = frozenset(ACCESS_CLASSES)
    if read_only == "yes":
        classes = READ_ONLY
    elif operations is not None:
        names = _items(operations)
        if not names:
            raise PolicyError("operations", "names no operation class")
        if ALL in names:
            if len(names) > 1:
                raise PolicyError("operations", "'all' goes alone")
        else:
            for name in names:
                if name not in ACCESS_CLASSES:
                    raise PolicyError(
                        "operations",
                        f"unknown operation class {name!r} (one of {', '.join(ACCESS_CLASSES)},"
                        f" or {ALL})",
                    )
            classes = frozenset(names)
    if multipart is not None and multipart not in ("yes", "no"):
        raise PolicyError("multipart", "must be yes or no")
    return ClientPolicy(bucket_globs, prefix_rules, classes, multipart != "no")


def _denied(client_name: str, rule: str) -> S3Error:
    return S3Error("AccessDenied", "Access Denied", 403, f"client {client_name}: {rule}")


def _dot_segments(key: bytes) -> bool:
    """Whether ``key`` has ``.``/``..`` segments some S3 servers might normalise away."""
    return any(segment in (b".", b"..") for segment in key.split(b"/"))


def _check_key(
    policy: ClientPolicy, client_name: str, bucket: str, key: bytes, what: str
) -> None:
    allowed = policy.prefixes_for(bucket)
    if allowed is None:
        return
    if _dot_segments(key):
        raise _denied(client_name, f"{what} has a '.' or '..' segment")
    if not any(key.startswith(prefix) for prefix in allowed):
        raise _denied(client_name, f"{what} is outside the allowed prefixes of bucket {bucket!r}")


def _check_bucket(policy: ClientPolicy, client_name: str, bucket: str, what: str) -> None:
    if not policy.bucket_allowed(bucket):
        raise _denied(client_name, f"{what} {bucket!r} not allowed")


def check_keys(
    policy: ClientPolicy, client_name: str, bucket: str, keys: Sequence[bytes], what: str
) -> None:
    """Raise AccessDenied unless every key in ``keys`` is under ``bucket``'s prefixes."""
    for key in keys:
        _check_key(policy, client_name, bucket, key, what)


def authorize(
    policy: ClientPolicy,
    client_name: str,
    operation: Operation,
    target: Target,
    query: Mapping[bytes, bytes],
    body_keys_checked: bool = False,
) -> None:
    """Raise AccessDenied unless ``client_name`` may do ``operation`` on ``target``.

    ``query`` holds the decoded query parameters (a repeated name must be left
    out by the caller, so that a value cannot be checked here and another one
    used upstream).  ``body_keys_checked`` says the caller checks the keys a
    DeleteObjects body names (s3relay.body.multidelete) before it goes upstream.
    The checks, in order: a recognised operation, its access
    class, the bucket, then the key (or the listing prefix) against the
    bucket's prefixes, and for copies the source with the ``read`` class.
    """
    if operation.access is None:
        raise _denied(client_name, "unrecognised S3 request")
    if operation.access not in policy.operations:
        raise _denied(client_name, f"operation class {operation.access!r} not allowed")
    if not policy.multipart_uploads and operation.name in MULTIPART_UPLOADS:
        raise S3Error(
            "AccessDenied",
            "Multipart uploads are disabled on this relay; upload with a single PUT.",
            403,
            f"client {client_name}: multipart = no ({operation.name})",
        )
    bucket = target.bucket
    if bucket is None:  # ListBuckets: its answer is filtered (s3relay.s3.listbuckets)
        return
    _check_bucket(policy, client_name, bucket, "bucket")
    if policy.prefixes is not None:
        if operation.name == "DeleteObjects" and not body_keys_checked:
            raise _denied(client_name, "multi-delete with prefix restrictions is not supported yet")
        if target.key:
            _check_key(policy, client_name, bucket, target.key, "key")
        elif operation.name in KEY_LISTINGS:
            prefix = query.get(b"prefix")
            if prefix is None:
                raise _denied(
                    client_name, f"{operation.name} without one prefix query parameter"
                )
            _check_key(policy, client_name, bucket, prefix, "listing prefix")
    if operation.copy_source is not None:
        if "read" not in policy.operations:
            raise _denied(client_name, "operation class 'read' (copy source) not allowed")
        source_bucket, source_key = operation.copy_source
        _check_bucket(policy, client_name, source_bucket, "copy source bucket")
        _check_key(policy, client_name, source_bucket, source_key, "copy source key")
