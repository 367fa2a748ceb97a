# -*- test-case-name: tests.unit.test_crypt_rules -*-
"""What each S3 operation becomes under an encrypted prefix.

Fail closed: an operation the relay cannot do on encrypted objects without
storing plaintext, or without making an object that does not decrypt, is
refused before anything goes upstream.  A copy would store the source's
bytes under the destination's key (each object's data key is bound to its
bucket and key); the part and attribute reads would hand out stored bytes
or sizes.

Pure, stdlib only.
"""

from __future__ import annotations

import enum
from typing import Collection

from s3relay.crypt.settings import EncryptionConfig
from s3relay.s3.addressing import Target
from s3relay.s3.errors import S3Error
from s3relay.s3.operations import Operation


class Treatment(enum.Enum):
    SEAL = "seal"  # PutObject: encrypt the body
    READ = "read"  # GetObject, HeadObject: decrypt, plaintext sizes
    LIST = "list"  # listings: plaintext sizes
    START_UPLOAD = "start-upload"  # CreateMultipartUpload: a data key, in the upload id too
    SEAL_PART = "seal-part"  # UploadPart: encrypt the part
    COMPLETE = "complete"  # CompleteMultipartUpload: check the parts first
    LIST_PARTS = "list-parts"  # ListParts: plaintext sizes
    UPLOAD_ID = "upload-id"  # AbortMultipartUpload: the upstream's upload id


_LISTINGS = frozenset({"ListObjects", "ListObjectsV2", "ListObjectVersions"})

#: Object operations that neither read nor write object data.
_UNCHANGED = frozenset(
    {
        "DeleteObject",
        "GetObjectAcl", "PutObjectAcl",
        "GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging",
        "GetObjectRetention", "PutObjectRetention",
        "GetObjectLegalHold", "PutObjectLegalHold",
    }
)

_UPLOADS = {
    "CreateMultipartUpload": Treatment.START_UPLOAD,
    "UploadPart": Treatment.SEAL_PART,
    "CompleteMultipartUpload": Treatment.COMPLETE,
    "ListParts": Treatment.LIST_PARTS,
    "AbortMultipartUpload": Treatment.UPLOAD_ID,
}


def _not_implemented(what: str, reason: str) -> S3Error:
    return S3Error(
        "NotImplemented",
        f"{what} is not supported for objects the relay encrypts.",
        501,
        reason,
    )


def treatment(
    encryption: EncryptionConfig,
    operation: Operation,
    target: Target,
    query_names: Collection[bytes],
) -> Treatment | None:
    """How ``operation`` on ``target`` is relayed; None: as usual.  Raises
    S3Error for what cannot be done on encrypted objects."""
    name = operation.name
    source = operation.copy_source
    if source is not None and encryption.covers(*source):
        raise _not_implemented("Copying an encrypted object", f"{name} from an encrypted prefix")
    if target.bucket is None or not target.slash or not target.key:
        if name in _LISTINGS and encryption.key_prefixes(target.bucket):
            return Treatment.LIST
        return None
    if not encryption.covers(target.bucket, target.key) or name in _UNCHANGED:
        return None
    if name == "PutObject":
        return Treatment.SEAL
    if name in ("GetObject", "HeadObject"):
        if b"partNumber" in query_names:
            raise _not_implemented("Reading one part", f"{name} with partNumber")
        return Treatment.READ
    if name in _UPLOADS:
        return _UPLOADS[name]
    if name in ("CopyObject", "UploadPartCopy"):
        raise _not_implemented("Copying into an encrypted prefix", f"{name} into it")
    raise _not_implemented(name, f"{name} under an encrypted prefix")
