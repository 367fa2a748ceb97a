# -*- test-case-name: tests.unit.test_transforms -*-
"""Headers the operator adds to upstream writes: a forced storage class and
extra headers such as server-side encryption.

An operator who pays for storage, or must encrypt at rest, cannot rely on
every client remembering ``--storage-class`` or ``--sse``.  The relay sets
these headers itself on the write operations, replacing whatever the client
sent, *before* the upstream request is signed, so S3 sees them as signed
headers like any other.

Keys (all optional; documented in etc/s3relay/s3relay.ini):

* ``[upstream] force_storage_class = CLASS``: every client's writes.
* ``[upstream] bucket_storage_class = GLOB:CLASS, ...``: writes into the
  buckets a glob matches (first matching entry wins) -- this beats the
  client's and the global class, because where data lands decides its cost.
* ``[client:NAME] force_storage_class = CLASS``: that client's writes
  (beats the global class).
* ``[upstream] add_headers`` / ``[client:NAME] add_headers``: one
  ``name: value`` per line (indented continuation lines in the ini); a
  client's value for a name replaces the global one.
* ``[upstream] add_headers_operations``: the S3 operations that get
  ``add_headers`` (default PutObject, CreateMultipartUpload, CopyObject).

Pure, stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Mapping

from s3relay.http.headers import HOP_BY_HOP
from s3relay.ini import ConfigError, Section

#: S3's storage classes (botocore's StorageClass enum).
STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "OUTPOSTS",
        "GLACIER_IR",
        "SNOW",
        "EXPRESS_ONEZONE",
        "FSX_OPENZFS",
        "FSX_ONTAP",
        "AWS_BACKUP_WARM",
        "AWS_BACKUP_LOW_COST_WARM",
    }
)

STORAGE_CLASS_HEADER = "x-amz-storage-class"

#: The operations that create object data and take x-amz-storage-class.
STORAGE_CLASS_OPERATIONS = frozenset({"PutObject", "CreateMultipartUpload", "CopyObject"})

#: Operations that take added headers unless the operator says otherwise.
DEFAULT_HEADER_OPERATIONS = STORAGE_CLASS_OPERATIONS

#: Headers that may be added to: writes whose request headers S3 reads as
#: object settings.  Others (UploadPart, CompleteMultipartUpload...) would
#: be refused by S3 for most added headers (e.g. SSE on UploadPart).
HEADER_OPERATIONS = frozenset(
    {
        "PutObject",
        "CreateMultipartUpload",
        "CopyObject",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "GetObject",
        "HeadObject",
    }
)

#: Headers an operator may not add: hop-by-hop ones, the ones that frame or
#: authenticate the request (the relay sets them), and the storage class
#: (force_storage_class says that).
_REFUSED = HOP_BY_HOP | frozenset(
    {
        "host",
        "authorization",
        "expect",
        "content-length",
        "content-encoding",
        "content-md5",
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
        "x-amz-decoded-content-length",
        "x-amz-trailer",
        "x-amz-copy-source",
        "x-amz-copy-source-range",
        STORAGE_CLASS_HEADER,
    }
)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
#: Visible ASCII and inner spaces: what survives the signer's trimming unchanged.
_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


@dataclass(frozen=True)
class ClientTransforms:
    """One client's own additions (overriding the global ones)."""

    storage_class: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Transforms:
    """Everything the operator adds to upstream requests; the default adds nothing."""

    storage_class: str | None = None
    #: (bucket glob, class), first match wins over client and global classes.
    bucket_classes: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    header_operations: frozenset[str] = DEFAULT_HEADER_OPERATIONS
    #: By client name.
    clients: Mapping[str, ClientTransforms] = field(default_factory=lambda: MappingProxyType({}))

    def headers_for(self, operation: str, client: str, bucket: str | None) -> dict[str, str]:
        """The headers (lowercase names) to set on ``client``'s ``operation`` upstream."""
        own = self.clients.get(client, ClientTransforms())
        added: dict[str, str] = {}
        if operation in self.header_operations:
            added.update(self.headers)
            added.update(own.headers)
        if operation in STORAGE_CLASS_OPERATIONS:
            chosen = own.storage_class or self.storage_class
            if bucket is not None:
                chosen = next(
                    (cls for glob, cls in self.bucket_classes if fnmatchcase(bucket, glob)), chosen
                )
            if chosen is not None:
                added[STORAGE_CLASS_HEADER] = chosen
        return added


NO_TRANSFORMS = Transforms()


def _storage_class(section: Section, key: str, value: str) -> str:
    value = value.strip()
    if value not in STORAGE_CLASSES:
        raise ConfigError(
            section.name, key, f"{value[:64]!r} is not an S3 storage class (e.g. STANDARD_IA)"
        )
    return value


def _headers(section: Section) -> Mapping[str, str]:
    raw = section.optional("add_headers")
    headers: dict[str, str] = {}
    if raw is None:
        return MappingProxyType(headers)
    for line in raw.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if not colon or not _TOKEN.fullmatch(name):
            raise ConfigError(
                section.name, "add_headers", f"{line.strip()[:64]!r} is not NAME: VALUE"
            )
        if name in _REFUSED:
            raise ConfigError(
                section.name, "add_headers", f"{name!r} is set by the relay and cannot be added"
            )
        if not _VALUE.fullmatch(value):
            raise ConfigError(
                section.name, "add_headers", f"{name}: the value must be printable ASCII"
            )
        if name in headers:
            raise ConfigError(section.name, "add_headers", f"{name!r} given twice")
        headers[name] = value
    if not headers:
        raise ConfigError(section.name, "add_headers", "names no header")
    return MappingProxyType(headers)


def _client(section: Section) -> ClientTransforms:
    cls = section.optional("force_storage_class")
    return ClientTransforms(
        _storage_class(section, "force_storage_class", cls) if cls else None,
        _headers(section),
    )


def parse_transforms(upstream: Section, clients: Mapping[str, Section]) -> Transforms:
    """The transforms of the ``[upstream]`` section and the ``[client:NAME]`` sections by name."""
    cls = upstream.optional("force_storage_class")
    bucket_classes = []
    for entry in (upstream.optional("bucket_storage_class") or "").split(","):
        if not entry.strip():
            continue
        glob, colon, value = entry.partition(":")
        glob = glob.strip()
        if not colon or not glob or "/" in glob or any(c.isspace() for c in glob):
            raise ConfigError(
                upstream.name, "bucket_storage_class", f"{entry.strip()[:64]!r} is not BUCKET:CLASS"
            )
        bucket_classes.append((glob, _storage_class(upstream, "bucket_storage_class", value)))
    operations = DEFAULT_HEADER_OPERATIONS
    raw_operations = upstream.optional("add_headers_operations")
    if raw_operations is not None:
        names = frozenset(p.strip() for p in raw_operations.split(",") if p.strip())
        unknown = sorted(names - HEADER_OPERATIONS)
        if unknown or not names:
            raise ConfigError(
                upstream.name,
                "add_headers_operations",
                f"{', '.join(unknown)[:128] or 'nothing'}: give some of "
                f"{', '.join(sorted(HEADER_OPERATIONS))}",
            )
        operations = names
    return Transforms(
        _storage_class(upstream, "force_storage_class", cls) if cls else None,
        tuple(bucket_classes),
        _headers(upstream),
        operations,
        MappingProxyType({name: _client(section) for name, section in clients.items()}),
    )
