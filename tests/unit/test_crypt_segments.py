"""Tests for s3relay.crypt.segments: sealing and opening the segment stream,
whole, ranged and per part, and every way a store could alter it."""

from __future__ import annotations

import itertools
import random
from typing import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.crypt.layout import (
    NONCE,
    SEGMENT,
    STORED_SEGMENT,
    Span,
    plaintext_size,
    segment_count,
    stored_size,
)
from s3relay.crypt.segments import DecryptionFailed, Opener, Sealer

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SIZES = [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 3 * SEGMENT + 17]


def pieces(data: bytes, chunks: Sequence[int]) -> list[bytes]:
    """``data`` cut in pieces of the sizes ``chunks`` (repeated)."""
    steps = itertools.cycle(chunks if any(chunks) else [len(data) + 1])
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        step = next(steps)
        out.append(data[pos : pos + step])
        pos += step
    return out


def seal(plaintext: bytes, chunks: Sequence[int] = (), part: int = 0, key: bytes = KEY) -> bytes:
    sealer = Sealer(key, part=part)
    out = b"".join(sealer.feed(p) for p in pieces(plaintext, chunks))
    return out + sealer.finish()


def open_stored(
    stored: bytes,
    first: int = 0,
    last: int | None = None,
    per_part: int | None = None,
    chunks: Sequence[int] = (),
    key: bytes = KEY,
    size: int | None = None,
) -> bytes:
    """Plaintext bytes ``first``..``last`` of a stored object, opened as reader.py does
    from the object's stored size (or ``size``, the plaintext size it should have)."""
    size = plaintext_size(len(stored)) if size is None else size
    assert size is not None, "a stored size the reader refuses before decrypting"
    total = segment_count(size)
    if last is None:  # the whole object
        opener = Opener(key, 0, total, total, 0, size, per_part)
        data = stored
    else:
        span = Span(first, last, size)
        count = span.last // SEGMENT - span.first_segment + 1
        opener = Opener(key, span.first_segment, count, total, span.skip, span.length, per_part)
        start, end = span.stored_range
        data = stored[start : end + 1]
    return b"".join(opener.feed(p) for p in pieces(data, chunks)) + opener.finish()


def plaintext_of(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def segments_of(stored: bytes) -> list[bytes]:
    return [stored[i : i + STORED_SEGMENT] for i in range(0, len(stored), STORED_SEGMENT)]


chunk_sizes = st.lists(
    st.one_of(st.integers(0, 100), st.integers(1, 3 * STORED_SEGMENT)), max_size=8
)


# -- round trips -----------------------------------------------------------------


@given(st.sampled_from(SIZES), chunk_sizes, chunk_sizes)
@settings(max_examples=200, deadline=None)
def test_round_trip_in_any_chunks(size: int, seal_chunks: list[int], open_chunks: list[int]
                                  ) -> None:
    plaintext = plaintext_of(size)
    stored = seal(plaintext, seal_chunks)
    assert len(stored) == stored_size(size)
    assert open_stored(stored, chunks=open_chunks) == plaintext


def test_one_empty_segment_for_an_empty_object() -> None:
    sealer = Sealer(KEY)
    assert sealer.feed(b"") == b""
    stored = sealer.finish()
    assert len(stored) == stored_size(0) == 28
    assert open_stored(stored) == b""


def test_full_segments_leave_as_soon_as_more_arrives() -> None:
    sealer = Sealer(KEY)
    assert sealer.feed(bytes(SEGMENT)) == b""  # it may be the last: held back
    assert len(sealer.feed(b"x")) == STORED_SEGMENT
    assert len(sealer.finish()) == stored_size(1)


@given(st.integers(1, 4 * SEGMENT), st.data(), chunk_sizes)
@settings(max_examples=150, deadline=None)
def test_ranged_open(size: int, data: st.DataObject, open_chunks: list[int]) -> None:
    plaintext = plaintext_of(size)
    stored = seal(plaintext)
    first = data.draw(st.integers(0, size - 1))
    last = data.draw(st.integers(first, size - 1))
    assert open_stored(stored, first, last, chunks=open_chunks) == plaintext[first : last + 1]


# -- multipart: parts sealed each on its own ---------------------------------------


def seal_parts(plaintext: bytes, per_part: int, key: bytes = KEY,
               numbers: Sequence[int] | None = None) -> list[bytes]:
    """The stored parts of a multipart object, ``per_part`` segments in every part
    but the last; ``numbers``: the part numbers to seal them as."""
    step = per_part * SEGMENT
    parts = [plaintext[i : i + step] for i in range(0, len(plaintext), step)] or [b""]
    numbers = numbers or range(1, len(parts) + 1)
    return [seal(part, part=number, key=key) for part, number in zip(parts, numbers)]


@st.composite
def multipart(draw: st.DrawFn) -> tuple[int, bytes]:
    per_part = draw(st.integers(1, 3))
    full_parts = draw(st.integers(0, 3))
    last = draw(st.one_of(st.integers(1, per_part * SEGMENT), st.sampled_from(
        [1, SEGMENT - 1, SEGMENT, per_part * SEGMENT])))
    return per_part, plaintext_of(full_parts * per_part * SEGMENT + last)


@given(multipart(), st.data())
@settings(max_examples=100, deadline=None)
def test_multipart_round_trip_and_ranges(case: tuple[int, bytes], data: st.DataObject) -> None:
    per_part, plaintext = case
    stored = b"".join(seal_parts(plaintext, per_part))
    assert plaintext_size(len(stored)) == len(plaintext)
    assert open_stored(stored, per_part=per_part) == plaintext
    first = data.draw(st.integers(0, len(plaintext) - 1))
    last = data.draw(st.integers(first, len(plaintext) - 1))
    assert open_stored(stored, first, last, per_part=per_part) == plaintext[first : last + 1]


@pytest.mark.parametrize("per_part", [1, 2])
def test_multipart_range_across_a_part_boundary(per_part: int) -> None:
    plaintext = plaintext_of(3 * per_part * SEGMENT + 5)
    stored = b"".join(seal_parts(plaintext, per_part))
    boundary = per_part * SEGMENT
    for first, last in [(boundary - 3, boundary + 2), (boundary - 1, 2 * boundary),
                        (0, len(plaintext) - 1), (2 * boundary - 1, len(plaintext) - 1)]:
        assert open_stored(stored, first, last, per_part) == plaintext[first : last + 1]


def test_a_multipart_object_does_not_open_as_a_whole_one_nor_the_reverse() -> None:
    plaintext = plaintext_of(2 * SEGMENT + 1)
    with pytest.raises(DecryptionFailed):
        open_stored(b"".join(seal_parts(plaintext, 1)))
    with pytest.raises(DecryptionFailed):
        open_stored(seal(plaintext), per_part=1)


# -- tampering ---------------------------------------------------------------------


def fails(stored: bytes, per_part: int | None = None, key: bytes = KEY,
          size: int | None = None, first: int = 0, last: int | None = None) -> None:
    with pytest.raises(DecryptionFailed):
        open_stored(stored, first, last, per_part, key=key, size=size)


PLAINTEXT = plaintext_of(3 * SEGMENT + 100)
STORED = seal(PLAINTEXT)
SEGMENTS = segments_of(STORED)  # three full, one short


@given(st.integers(0, len(STORED) - 1), st.integers(1, 255))
@settings(max_examples=200, deadline=None)
def test_any_flipped_byte_fails(position: int, flip: int) -> None:
    altered = bytearray(STORED)
    altered[position] ^= flip
    fails(bytes(altered))


@pytest.mark.parametrize(
    "order",
    [
        [1, 0, 2, 3],  # two segments swapped
        [0, 2, 1, 3],
        [0, 1, 3],  # a segment dropped
        [1, 2, 3],
        [0, 1, 2],  # truncated at a segment boundary
        [0],
        [0, 1, 1, 2, 3],  # a segment duplicated
        [0, 0, 1, 2, 3],
    ],
)
def test_reordered_dropped_duplicated_or_truncated_segments_fail(order: list[int]) -> None:
    fails(b"".join(SEGMENTS[i] for i in order))


def test_truncation_of_an_object_of_full_segments_fails() -> None:
    stored = seal(plaintext_of(3 * SEGMENT))
    fails(stored[: 2 * STORED_SEGMENT])
    fails(stored[:STORED_SEGMENT])


@pytest.mark.parametrize("cut", [1, NONCE, STORED_SEGMENT, len(STORED) - 1])
def test_stored_bytes_short_of_the_size_fail_at_finish(cut: int) -> None:
    fails(STORED[:-cut], size=len(PLAINTEXT))


def test_no_segment_for_an_empty_object_fails() -> None:
    fails(b"", size=0)


def test_a_shorter_object_than_the_size_says_fails() -> None:
    fails(seal(PLAINTEXT[:-1]), size=len(PLAINTEXT))


def test_extra_stored_bytes_fail() -> None:
    fails(STORED + SEGMENTS[-1], size=len(PLAINTEXT))
    fails(STORED + b"x", size=len(PLAINTEXT))
    full = seal(plaintext_of(2 * SEGMENT))
    fails(full + segments_of(full)[0], size=2 * SEGMENT)
    fails(full + full, size=2 * SEGMENT)


def test_more_than_the_range_asked_fails() -> None:
    # An upstream that ignored the Range header and sent the whole object.
    span = Span(0, 10, len(PLAINTEXT))
    opener = Opener(KEY, 0, 1, segment_count(span.size), 0, span.length)
    with pytest.raises(DecryptionFailed):
        opener.feed(STORED)
        opener.finish()


def test_another_key_fails() -> None:
    fails(STORED, key=OTHER_KEY)
    fails(STORED, first=SEGMENT, last=SEGMENT + 1, key=OTHER_KEY)


def test_a_segment_under_another_data_key_fails() -> None:
    foreign = segments_of(seal(PLAINTEXT, key=OTHER_KEY))[1]
    fails(b"".join([SEGMENTS[0], foreign, *SEGMENTS[2:]]))


def test_swapped_parts_fail() -> None:
    plaintext = plaintext_of(3 * SEGMENT + 5)
    parts = seal_parts(plaintext, 1)
    assert open_stored(b"".join(parts), per_part=1) == plaintext
    fails(b"".join([parts[1], parts[0], *parts[2:]]), per_part=1)
    fails(b"".join([parts[0], parts[2], parts[1], parts[3]]), per_part=1)


@pytest.mark.parametrize("numbers", [[1, 3, 3], [0, 2, 3], [2, 1, 3], [1, 2, 4], [1, 2, 0]])
def test_a_part_sealed_with_the_wrong_number_fails(numbers: list[int]) -> None:
    plaintext = plaintext_of(4 * SEGMENT + 7)
    fails(b"".join(seal_parts(plaintext, 2, numbers=numbers)), per_part=2)


def test_a_part_truncated_at_a_segment_boundary_fails() -> None:
    plaintext = plaintext_of(4 * SEGMENT + 7)
    parts = seal_parts(plaintext, 2)
    fails(b"".join([parts[0][:STORED_SEGMENT], *parts[1:]]), per_part=2)
    fails(b"".join([parts[0], parts[1][:STORED_SEGMENT], parts[2]]), per_part=2)


# -- nonces ------------------------------------------------------------------------


def test_sealing_twice_never_repeats_a_nonce() -> None:
    plaintext = plaintext_of(3 * SEGMENT + 1)
    first, second = seal(plaintext), seal(plaintext)
    assert first != second
    nonces = [s[:NONCE] for s in segments_of(first) + segments_of(second)]
    assert len(set(nonces)) == len(nonces) == 8


def test_each_segment_takes_a_fresh_nonce_from_the_source() -> None:
    drawn: list[bytes] = []

    def nonces(n: int) -> bytes:
        assert n == NONCE
        drawn.append(n.to_bytes(1, "big") * 4 + len(drawn).to_bytes(8, "big"))
        return drawn[-1]

    sealer = Sealer(KEY, nonces=nonces)
    stored = sealer.feed(plaintext_of(2 * SEGMENT + 3)) + sealer.finish()
    assert [s[:NONCE] for s in segments_of(stored)] == drawn
    assert len(set(drawn)) == 3
