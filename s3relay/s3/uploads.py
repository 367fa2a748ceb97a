# -*- test-case-name: tests.unit.test_uploads -*-
"""Upload ids bound to the keys they were created for.

A client's policy is checked against the key in the URL, but UploadPart,
UploadPartCopy, CompleteMultipartUpload, AbortMultipartUpload and ListParts
act on an upload *id*.  AWS S3, Ceph and MinIO find an upload by its id and
key together; a store that finds it by id alone would let a client allowed
``projects/alpha/`` complete (overwrite), list or abort another client's
upload for ``projects/beta/secret.txt`` through
``/bucket/projects/alpha/x?uploadId=ID``.  The relay does not rest on the
store: before an upload id's first use for a key it asks the upstream to
list that key's uploads (ListMultipartUploads, ``prefix`` = the key) and
goes on only if the id is listed under exactly that key; the answer is kept
(``UploadBindings``) until the upload is completed or aborted.
``[upstream] binds_upload_ids = yes`` skips the check for stores documented
to bind ids to keys.

Pure, stdlib only: the request itself is made by ``upstream.uploads``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from s3relay.s3.errors import S3Error
from s3relay.s3.safexml import Unreadable, read_xml

#: The operations that name an upload by ``uploadId``.
UPLOAD_ID_OPERATIONS = frozenset(
    {"UploadPart", "UploadPartCopy", "ListParts", "CompleteMultipartUpload",
     "AbortMultipartUpload"}
)
#: The operations after whose success an upload id is gone.
ENDING_OPERATIONS = frozenset({"CompleteMultipartUpload", "AbortMultipartUpload"})
#: Listing pages read at most for one key (1000 uploads each).
MAX_PAGES = 10


@dataclass(frozen=True)
class Binding:
    """An upload id and the bucket and key it is used for."""

    bucket: str
    key: bytes
    upload_id: str


def no_such_upload(binding: Binding, reason: str) -> S3Error:
    return S3Error(
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload "
        "may have been aborted or completed.",
        404,
        f"upload id {binding.upload_id[:80]!r} for /{binding.bucket}/"
        f"{binding.key.decode('utf-8', 'replace')[:200]}: {reason}",
    )


@dataclass(frozen=True)
class ListingPage:
    """What one ListMultipartUploads page says about a binding."""

    #: The id is listed under exactly the key.
    found: bool
    #: (key-marker, upload-id-marker) to read the key's next page with;
    #: None when no later page can list the key (the listing is by key).
    more: tuple[str, str] | None


def read_listing(xml_body: bytes, binding: Binding) -> ListingPage:
    """Read a ListMultipartUploadsResult page for ``binding``."""
    key = binding.key.decode("utf-8", "surrogateescape")
    stack: list[str] = []
    text: list[str] = []
    upload: dict[str, str] = {}
    result: dict[str, str] = {}
    found = False

    def start(tag: str, attrs: dict[str, str]) -> None:
        name = tag.rpartition("}")[2]
        if stack == ["ListMultipartUploadsResult"] and name == "Upload":
            upload.clear()
        stack.append(name)
        text.clear()

    def end(tag: str) -> None:
        nonlocal found
        name = stack.pop()
        value = "".join(text)
        text.clear()
        if stack == ["ListMultipartUploadsResult", "Upload"]:
            upload[name] = value
        elif stack == ["ListMultipartUploadsResult"]:
            if name == "Upload":
                found = found or (
                    upload.get("Key") == key and upload.get("UploadId") == binding.upload_id
                )
            else:
                result[name] = value

    def chars(data: str) -> None:
        text.append(data)

    try:
        read_xml(xml_body, start, end, chars)
    except Unreadable as e:
        raise _unreadable(str(e)) from None
    more = None
    if result.get("IsTruncated", "").strip().lower() == "true" and not found:
        next_key = result.get("NextKeyMarker", "")
        next_id = result.get("NextUploadIdMarker", "")
        if next_key == key and next_id:
            more = (next_key, next_id)
    return ListingPage(found, more)


def _unreadable(reason: str) -> S3Error:
    return S3Error(
        "InternalError",
        "The upstream S3 service failed to answer; please retry.",
        502,
        f"ListMultipartUploads answer unreadable: {reason}",
    )


class UploadBindings:
    """The bindings the upstream confirmed, most recently used last, bounded."""

    def __init__(self, size: int = 10000) -> None:
        self._size = size
        self._known: OrderedDict[Binding, None] = OrderedDict()

    def known(self, binding: Binding) -> bool:
        if binding in self._known:
            self._known.move_to_end(binding)
            return True
        return False

    def learn(self, binding: Binding) -> None:
        self._known[binding] = None
        self._known.move_to_end(binding)
        while len(self._known) > self._size:
            self._known.popitem(last=False)

    def forget(self, binding: Binding) -> None:
        self._known.pop(binding, None)
