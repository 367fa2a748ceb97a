# -*- test-case-name: tests.unit.test_crypt_layout -*-
"""Where plaintext bytes sit in a stored (encrypted) object.

An object is a run of segments: each holds up to ``SEGMENT`` plaintext
bytes and is stored as nonce + ciphertext + tag, ``OVERHEAD`` bytes longer.
Every segment but the last is full, and there is always a last one (empty
for an empty object), so the stored size fixes the plaintext size and the
reverse: listings and HEAD can report plaintext sizes from the stored ones,
and a plaintext range maps onto the whole segments that hold it.

Pure, stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Plaintext bytes per segment.
SEGMENT = 64 * 1024
NONCE = 12
TAG = 16
#: Bytes a segment adds when stored.
OVERHEAD = NONCE + TAG
STORED_SEGMENT = SEGMENT + OVERHEAD


def segment_count(plaintext_size: int) -> int:
    return max(1, -(-plaintext_size // SEGMENT))


def stored_size(plaintext_size: int) -> int:
    """The stored size of a ``plaintext_size``-byte object."""
    return plaintext_size + OVERHEAD * segment_count(plaintext_size)


def plaintext_size(stored: int) -> int | None:
    """The plaintext size of a ``stored``-byte object; None if no object is that long."""
    count = max(1, -(-stored // STORED_SEGMENT))
    size = stored - OVERHEAD * count
    return size if size >= 0 and stored_size(size) == stored else None


@dataclass(frozen=True)
class Span:
    """The plaintext bytes ``first``..``last`` (inclusive) of a ``size``-byte object."""

    first: int
    last: int
    size: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    @property
    def first_segment(self) -> int:
        return self.first // SEGMENT

    @property
    def stored_range(self) -> tuple[int, int]:
        """The stored bytes (inclusive) of the segments that hold the span."""
        start = self.first_segment * STORED_SEGMENT
        end = min((self.last // SEGMENT + 1) * STORED_SEGMENT, stored_size(self.size))
        return start, end - 1

    @property
    def skip(self) -> int:
        """Plaintext bytes of the first segment before the span."""
        return self.first - self.first_segment * SEGMENT

    def content_range(self) -> str:
        return f"bytes {self.first}-{self.last}/{self.size}"


class Unsatisfiable(Exception):
    """The range lies outside the object (S3's 416 InvalidRange)."""


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def requested_span(header: str | None, size: int) -> Span | None:
    """The span a ``Range`` header asks of a ``size``-byte object.

    None: the whole object (no header, or one S3 ignores: not a single
    ``bytes=`` range).  Raises ``Unsatisfiable`` where S3 answers 416.
    """
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    start, end = match.group(1), match.group(2)
    if start == "":  # the last n bytes
        count = int(end)
        if count == 0 or size == 0:
            raise Unsatisfiable()
        return Span(max(0, size - count), size - 1, size)
    first = int(start)
    if end and int(end) < first:
        return None  # S3 ignores an inverted range
    if first >= size:
        raise Unsatisfiable()
    return Span(first, min(int(end), size - 1) if end else size - 1, size)
