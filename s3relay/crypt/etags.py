# -*- test-case-name: tests.unit.test_crypt_etags -*-
"""ETags of encrypted objects as clients see them.

A stored object's ETag is the MD5 of what the store holds, the ciphertext.
Clients that check an ETag against the MD5 of what they sent or received
(s3cmd after every upload and part, rclone after downloads) would call every
transfer corrupt, but all of them skip the check for an ETag with a ``-``
(a multipart object's ``"md5-N"``).  So the relay shows an MD5 ETag of an
encrypted object or part as ``"md5-0"``, which no multipart object has, in
every answer (PUT, UploadPart, HEAD, GET, listings) and reads it back from
the client (``If-Match``, ``If-None-Match``, CompleteMultipartUpload).

Pure, stdlib only.
"""

from __future__ import annotations

import re

_MD5 = re.compile(r'("?)([0-9a-fA-F]{32})("?)')
_SHOWN = re.compile(r'("?)([0-9a-fA-F]{32})-0("?)')
SUFFIX = "-0"


def shown(etag: str) -> str:
    """The ETag a client sees for the stored ``etag``."""
    match = _MD5.fullmatch(etag.strip())
    return f"{match[1]}{match[2]}{SUFFIX}{match[3]}" if match else etag


def stored(etag: str) -> str:
    """The stored ETag a client's ``etag`` names."""
    match = _SHOWN.fullmatch(etag.strip())
    return f"{match[1]}{match[2]}{match[3]}" if match else etag.strip()


def stored_list(value: str) -> str:
    """An ``If-Match``/``If-None-Match`` value with each ETag read back."""
    return ", ".join(stored(item) for item in value.split(","))
