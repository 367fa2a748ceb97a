# -*- test-case-name: tests.unit.test_crypt_uploads -*-
"""Multipart uploads under an encrypted prefix.

CreateMultipartUpload stores the wrapped data key in the object's metadata
and hands the client an upload id that carries it too (``keys.upload_id``);
each UploadPart is sealed on its own as that part number's segments.  An
assembled object reads as one run of segments only if every part but the
last holds the same whole number of segments, and the parts are 1..N: so
CompleteMultipartUpload first lists the uploaded parts and refuses any
other shape (every common client uploads equal parts of 5 MiB or more,
multiples of 64 KiB), and the client's part list is read, checked and
written anew without the checksums of parts the upstream never saw.

Pure, stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable
from xml.sax.saxutils import escape

from s3relay.body.plan import BodyFilter
from s3relay.crypt.etags import stored
from s3relay.crypt.layout import SEGMENT, plaintext_size
from s3relay.crypt.listings import plaintext_entry
from s3relay.s3.errors import S3Error
from s3relay.s3.safexml import S3_NS, Unreadable, read_xml

#: Largest CompleteMultipartUpload body held: 10,000 parts with checksums fit.
MAX_COMPLETE_BODY = 4 * 1024 * 1024
MAX_PARTS = 10_000

_UPLOAD_ID = re.compile(rb"<UploadId>([^<]*)</UploadId>")
_PART = re.compile(rb"<Part>(.*?)</Part>", re.DOTALL)


def with_client_upload_id(body: bytes, client_id: Callable[[str], str]) -> bytes:
    """A CreateMultipartUpload answer with the upload id the client is to use."""
    return _UPLOAD_ID.sub(
        lambda m: b"<UploadId>%s</UploadId>" % client_id(m.group(1).decode()).encode(), body,
        count=1,
    )


def plaintext_parts(body: bytes) -> bytes:
    """A ListParts answer with each part's plaintext size and shown ETag."""

    def part(match: re.Match[bytes]) -> bytes:
        plain = plaintext_entry(match.group(1))
        return match.group(0) if plain is None else b"<Part>%s</Part>" % plain  # unsealed: as is

    return _PART.sub(part, body)


def bad_shape(reason: str) -> S3Error:
    return S3Error(
        "InvalidPart",
        "An encrypted multipart upload needs parts numbered 1 to N, all but the last of the "
        f"same size, a multiple of {SEGMENT // 1024} KiB.",
        400,
        reason,
    )


@dataclass(frozen=True)
class PartsPage:
    #: (part number, stored size) in the order listed.
    parts: tuple[tuple[int, int], ...]
    #: The part-number-marker of the next page; None: the last page.
    next_marker: str | None


def read_parts_page(body: bytes) -> PartsPage:
    """One ListParts answer page."""
    parts: list[tuple[int, int]] = []
    stack: list[str] = []
    text: list[str] = []
    fields: dict[str, str] = {}
    top: dict[str, str] = {}

    def start(tag: str, _: dict[str, str]) -> None:
        stack.append(tag.rpartition("}")[2])
        text.clear()

    def end(_: str) -> None:
        name = stack.pop()
        value = "".join(text).strip()
        text.clear()
        if stack[-1:] == ["Part"]:
            fields[name] = value
        elif name == "Part":
            if not (fields.get("PartNumber", "").isdigit() and fields.get("Size", "").isdigit()):
                raise Unreadable("a part without PartNumber and Size")
            parts.append((int(fields["PartNumber"]), int(fields["Size"])))
            fields.clear()
        elif len(stack) == 1:
            top[name] = value

    try:
        read_xml(body, start, end, text.append)
    except Unreadable as e:
        raise S3Error(
            "InternalError", "The upstream S3 service failed to answer; please retry.", 502,
            f"ListParts answer unreadable: {e}",
        ) from None
    more = top.get("IsTruncated", "").lower() == "true"
    return PartsPage(tuple(parts), top.get("NextPartNumberMarker") if more else None)


def check_parts(parts: list[tuple[int, int]]) -> None:
    """Refuse an upload whose parts (number, stored size) cannot make one object."""
    parts = sorted(parts)
    if not parts:
        raise bad_shape("no parts uploaded")
    numbers = [number for number, _ in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise bad_shape(f"parts numbered {numbers[:5]}..., not 1 to {len(parts)}")
    found = [plaintext_size(stored) for _, stored in parts]
    sizes = [size for size in found if size is not None]
    if len(sizes) != len(found):
        raise bad_shape("a part that the relay did not seal")
    first, last = sizes[0], sizes[-1]
    if len(sizes) > 1:
        if first % SEGMENT or any(size != first for size in sizes[:-1]):
            raise bad_shape(f"parts of {sorted(set(sizes))[:4]} bytes")
        if not 0 < last <= first:
            raise bad_shape(f"last part of {last} bytes after parts of {first}")


class CompleteBody:
    """Holds a CompleteMultipartUpload body; at the end, checks its part
    list (1..N in order) and gives it anew, without part checksums."""

    def __init__(self, inner: BodyFilter) -> None:
        self._inner = inner
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> bytes:
        out = self._inner.feed(data)
        self._size += len(out)
        if self._size > MAX_COMPLETE_BODY:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed "
                          "size.", 400, f"CompleteMultipartUpload body over {MAX_COMPLETE_BODY}")
        self._parts.append(out)
        return b""

    def finish(self) -> bytes:
        tail = self._inner.finish()
        body = b"".join(self._parts) + tail
        self._parts = []
        return complete_body(parse_complete(body))


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """The (part number, ETag) list of a CompleteMultipartUpload body."""
    parts: list[tuple[int, str]] = []
    stack: list[str] = []
    text: list[str] = []
    fields: dict[str, str] = {}

    def start(tag: str, attrs: dict[str, str]) -> None:
        namespace, _, name = tag.rpartition("}")
        if namespace not in ("", S3_NS) or attrs:
            raise Unreadable(f"unexpected <{name[:64]}>")
        path = "/".join([*stack, name])
        if [*stack, name][:2] not in (["CompleteMultipartUpload"],
                                      ["CompleteMultipartUpload", "Part"]) or len(stack) > 2:
            raise Unreadable(f"unexpected element {path[:128]}")
        stack.append(name)
        text.clear()

    def end(_: str) -> None:
        name = stack.pop()
        if len(stack) == 2:
            fields[name] = "".join(text).strip()
        elif name == "Part":
            number = fields.get("PartNumber", "")
            if not number.isdigit() or "ETag" not in fields:
                raise Unreadable("a part without PartNumber and ETag")
            parts.append((int(number), stored(fields["ETag"])))
            fields.clear()
        text.clear()

    try:
        read_xml(body, start, end, text.append)
    except Unreadable as e:
        raise S3Error(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our "
            "published schema.", 400, f"CompleteMultipartUpload body: {e}",
        ) from None
    if [number for number, _ in parts] != list(range(1, len(parts) + 1)) or not parts:
        raise bad_shape(f"completing with parts {[n for n, _ in parts][:5]}..., not 1 to N")
    if len(parts) > MAX_PARTS:
        raise bad_shape(f"{len(parts)} parts")
    return parts


def complete_body(parts: list[tuple[int, str]]) -> bytes:
    """A CompleteMultipartUpload body naming ``parts``."""
    items = "".join(
        f"<Part><PartNumber>{number}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
        for number, etag in parts
    )
    return (f'<CompleteMultipartUpload xmlns="{S3_NS}">{items}</CompleteMultipartUpload>'
            ).encode("utf-8")
