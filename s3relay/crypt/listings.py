# -*- test-case-name: tests.unit.test_crypt_listings -*-
"""Plaintext sizes in ListObjects, ListObjectsV2 and ListObjectVersions.

The upstream lists stored sizes; for keys under an encrypted prefix the
relay puts in the plaintext size (``layout.plaintext_size``) and the ETag
clients see (``etags``), leaving the
rest of the document byte for byte as the upstream wrote it.  S3 writes
these documents without comments or CDATA, so each entry is one
``<Contents>`` or ``<Version>`` element with one ``<Key>`` and one
``<Size>``.  A stored size no encrypted object can have (an object stored
before encryption was enabled) is left as it is.

Pure, stdlib only.
"""

from __future__ import annotations

import re
from typing import Sequence
from urllib.parse import unquote_plus

from s3relay.crypt.layout import plaintext_size

_ENTRY = re.compile(rb"<(Contents|Version)>(.*?)</\1>", re.DOTALL)
_KEY = re.compile(rb"<Key>(.*?)</Key>", re.DOTALL)
_SIZE = re.compile(rb"<Size>(\d+)</Size>")
_ETAG = re.compile(rb"<ETag>(&quot;|&#34;|\")?([0-9a-fA-F]{32})(&quot;|&#34;|\")?</ETag>")


def plaintext_entry(entry: bytes) -> bytes | None:
    """A listed object's or part's elements with its plaintext size and the
    ETag clients see (``etags.shown``); None if no sealed object is that long."""
    found = _SIZE.search(entry)
    plain = plaintext_size(int(found.group(1))) if found else None
    if found is None or plain is None:
        return None
    entry = b"%s<Size>%d</Size>%s" % (entry[:found.start()], plain, entry[found.end():])
    return _ETAG.sub(lambda m: b"<ETag>%s%s-0%s</ETag>" % (
        m.group(1) or b"", m.group(2), m.group(3) or b""), entry, count=1)
_URL_ENCODED = re.compile(rb"<EncodingType>\s*url\s*</EncodingType>")
_REFERENCE = re.compile(r"&(?:(lt|gt|amp|quot|apos)|#(\d+)|#x([0-9a-fA-F]+));")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def _xml_text(raw: str) -> str:
    """XML character data with its five entities and character references read."""

    def one(match: re.Match[str]) -> str:
        name, decimal, hexadecimal = match.groups()
        if name:
            return _NAMED[name]
        code = int(decimal) if decimal else int(hexadecimal, 16)
        return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else match.group(0)

    return _REFERENCE.sub(one, raw)


def plaintext_listing(body: bytes, prefixes: Sequence[bytes]) -> bytes:
    """``body`` with the sizes of the keys under ``prefixes`` made plaintext sizes."""
    url_encoded = _URL_ENCODED.search(body) is not None

    def entry(match: re.Match[bytes]) -> bytes:
        inner = match.group(2)
        key_match = _KEY.search(inner)
        if key_match is None:
            return match.group(0)
        key = _xml_text(key_match.group(1).decode("utf-8", "surrogateescape"))
        if url_encoded:
            key = unquote_plus(key, errors="surrogateescape")
        raw_key = key.encode("utf-8", "surrogateescape")
        if not any(raw_key.startswith(p) for p in prefixes):
            return match.group(0)

        plain = plaintext_entry(inner)
        if plain is None:
            return match.group(0)  # not an object the relay encrypted
        tag = match.group(1)
        return b"<%s>%s</%s>" % (tag, plain, tag)

    return _ENTRY.sub(entry, body)
