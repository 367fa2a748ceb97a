# -*- test-case-name: tests.unit.test_crypt_segments -*-
"""The segment stream: AES-256-GCM over fixed plaintext segments (``layout``).

Each segment is sealed under the object's data key with a fresh random
nonce, and its associated data names the format, the segment's index and
whether it is the object's last.  So a store that reorders, drops,
duplicates or truncates segments, or moves them between objects (each has
its own data key), makes a tag fail; a truncation at a segment boundary
leaves a last segment not marked last, which fails too.  The parts of a
multipart upload are sealed each on its own, under the object's data key,
with the part number in the associated data.

Random nonces rather than counters: a data key never meets a nonce twice
even if the same segment is sealed again (a retried upload part).

Pure: ``cryptography`` only.
"""

from __future__ import annotations

import os
import struct
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3relay.crypt.layout import NONCE, OVERHEAD, SEGMENT, STORED_SEGMENT

#: Format version 1: the part number (0 for a whole object), the segment's
#: index in it, and whether it ends it.
_CONTEXT = struct.Struct(">8sIQ?")
_FORMAT = b"s3relay1"


def _context(part: int, index: int, last: bool) -> bytes:
    return _CONTEXT.pack(_FORMAT, part, index, last)


class _Held:
    """Bytes held as they came, taken in fixed sizes with as few copies as
    can be: a copy per step costs as much as the cipher itself.  With
    ``views``, what is taken may be a memoryview into what came."""

    def __init__(self, views: bool) -> None:
        self._views = views
        self._buffer = b""
        self._offset = 0
        self._pieces: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        if data:
            self._pieces.append(data)
            self.size += len(data)

    def take(self, size: int) -> bytes | memoryview:
        """The first ``size`` bytes held (all of them when fewer)."""
        if len(self._buffer) - self._offset < size and self._pieces:
            if self._offset == len(self._buffer) and len(self._pieces[0]) >= size:
                self._buffer = self._pieces.pop(0)  # whole segments straight from the piece
            else:
                self._buffer = b"".join([memoryview(self._buffer)[self._offset:], *self._pieces])
                self._pieces = []
            self._offset = 0
        start = self._offset
        end = self._offset = min(start + size, len(self._buffer))
        self.size -= end - start
        if start == 0 and end == len(self._buffer):
            return self._buffer
        piece = memoryview(self._buffer)[start:end]
        return piece if self._views else bytes(piece)


def _takes_views(aead: AESGCM) -> bool:
    """Whether this ``cryptography`` reads memoryviews (42 and later; bookworm's
    38 wants bytes, which costs a copy per segment)."""
    try:
        aead.encrypt(bytes(NONCE), memoryview(b""), None)
    except TypeError:
        return False
    return True


class DecryptionFailed(Exception):
    """A stored segment did not authenticate: the object was altered or is not ours."""


class Sealer:
    """Plaintext in, stored segments out; the last segment at ``finish``.

    ``part``: the multipart upload part the body is (0: a whole object).
    """

    def __init__(
        self, data_key: bytes, part: int = 0, nonces: Callable[[int], bytes] = os.urandom
    ) -> None:
        self._aead = AESGCM(data_key)
        self._part = part
        self._nonces = nonces
        #: Plaintext not sealed yet.
        self._held = _Held(_takes_views(self._aead))
        self._index = 0

    def feed(self, data: bytes) -> bytes:
        held = self._held
        held.add(data)
        out: list[bytes] = []
        # The segment that ends the body may be full: keep one back until more arrives.
        while held.size > SEGMENT:
            out += self._seal(held.take(SEGMENT), last=False)
        return b"".join(out)

    def finish(self) -> bytes:
        return b"".join(self._seal(self._held.take(SEGMENT), last=True))

    def _seal(self, plaintext: bytes | memoryview, last: bool) -> tuple[bytes, bytes]:
        nonce = self._nonces(NONCE)
        sealed = self._aead.encrypt(nonce, plaintext, _context(self._part, self._index, last))
        self._index += 1
        return nonce, sealed


class Opener:
    """Stored segments in, plaintext out: ``count`` of them from segment
    ``first`` of an object of ``total`` segments.

    ``per_part``: segments in each part of a multipart object (every part
    but the last is as long), None for a whole object.  Of the plaintext,
    ``skip`` bytes are dropped and ``length`` given.
    """

    def __init__(
        self,
        data_key: bytes,
        first: int,
        count: int,
        total: int,
        skip: int,
        length: int,
        per_part: int | None = None,
    ) -> None:
        self._aead = AESGCM(data_key)
        self._index = first
        self._end = first + count
        self._total = total
        self._per_part = per_part
        self._skip = skip
        self._left = length
        #: Stored bytes not opened yet.
        self._held = _Held(_takes_views(self._aead))

    def feed(self, data: bytes) -> bytes:
        held = self._held
        held.add(data)
        out = []
        while held.size >= STORED_SEGMENT:
            out.append(self._open(held.take(STORED_SEGMENT)))
        return b"".join(out)

    def finish(self) -> bytes:
        """The rest; raises ``DecryptionFailed`` unless every segment came, whole."""
        out = self._open(self._held.take(STORED_SEGMENT)) if self._held.size else b""
        if self._index != self._end or self._left:
            raise DecryptionFailed(f"stored object ends {self._end - self._index} segments early")
        return out

    def _place(self, index: int) -> tuple[int, int, bool]:
        """Segment ``index``'s part, index in that part, and whether it ends the part."""
        ends_object = index == self._total - 1
        if self._per_part is None:
            return 0, index, ends_object
        part, within = divmod(index, self._per_part)
        return part + 1, within, ends_object or within == self._per_part - 1

    def _open(self, stored: bytes | memoryview) -> bytes:
        index = self._index
        if index >= self._end:
            raise DecryptionFailed(f"stored object has more than {self._end} segments")
        if len(stored) < OVERHEAD:
            raise DecryptionFailed(f"segment {index} is {len(stored)} bytes, too short")
        part, within, last = self._place(index)
        try:
            plaintext = self._aead.decrypt(
                bytes(stored[:NONCE]), stored[NONCE:], _context(part, within, last)
            )
        except InvalidTag:
            raise DecryptionFailed(f"segment {index} does not authenticate") from None
        if index < self._total - 1 and len(plaintext) != SEGMENT:
            raise DecryptionFailed(f"segment {index} is short but not the last")
        self._index += 1
        if self._skip:
            plaintext, self._skip = plaintext[self._skip:], max(0, self._skip - len(plaintext))
        if len(plaintext) > self._left:
            plaintext = plaintext[: self._left]
        self._left -= len(plaintext)
        return plaintext
