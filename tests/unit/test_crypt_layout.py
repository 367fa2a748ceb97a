"""Tests for s3relay.crypt.layout: stored and plaintext sizes, Range headers,
and the stored bytes a span needs (checked end to end through segments)."""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from s3relay.crypt.layout import (
    OVERHEAD,
    SEGMENT,
    STORED_SEGMENT,
    Span,
    Unsatisfiable,
    plaintext_size,
    requested_span,
    segment_count,
    stored_size,
)
from s3relay.crypt.segments import Opener, Sealer

GIB = 1024**3
KEY = bytes(range(32))


def seal(plaintext: bytes) -> bytes:
    sealer = Sealer(KEY)
    return sealer.feed(plaintext) + sealer.finish()


def open_span(stored_object: bytes, span: Span) -> bytes:
    """The plaintext of ``span``, from the stored bytes of its range, opened as reader.py does."""
    start, end = span.stored_range
    count = span.last // SEGMENT - span.first_segment + 1
    opener = Opener(
        KEY, span.first_segment, count, segment_count(span.size), span.skip, span.length
    )
    return opener.feed(stored_object[start : end + 1]) + opener.finish()


# -- sizes -----------------------------------------------------------------------


def test_sizes_by_hand() -> None:
    assert OVERHEAD == 28 and STORED_SEGMENT == SEGMENT + 28
    assert [stored_size(n) for n in (0, 1, SEGMENT, SEGMENT + 1)] == [
        28, 29, SEGMENT + 28, SEGMENT + 1 + 56
    ]
    assert plaintext_size(28) == 0
    assert plaintext_size(STORED_SEGMENT) == SEGMENT
    assert plaintext_size(STORED_SEGMENT + 29) == SEGMENT + 1


@given(st.integers(0, 10 * GIB))
@example(0)
@example(SEGMENT - 1)
@example(SEGMENT)
@example(SEGMENT + 1)
@example(10 * GIB)
@settings(max_examples=500, deadline=None)
def test_stored_size_and_plaintext_size_are_inverse(size: int) -> None:
    stored = stored_size(size)
    assert stored == size + OVERHEAD * max(1, -(-size // SEGMENT))
    assert plaintext_size(stored) == size
    assert stored_size(size + 1) > stored  # strictly increasing: one object per stored size


@given(st.integers(0, 10 * GIB))
@settings(max_examples=500, deadline=None)
def test_plaintext_size_is_none_exactly_off_the_image(stored: int) -> None:
    size = plaintext_size(stored)
    if size is not None:
        assert stored_size(size) == stored
    else:  # no size near stored / STORED_SEGMENT segments has that stored size
        segments = stored // STORED_SEGMENT
        candidates = (stored - OVERHEAD * n for n in range(segments - 1, segments + 3))
        assert all(c < 0 or stored_size(c) != stored for c in candidates)


@pytest.mark.parametrize("stored", range(28))
def test_no_object_is_shorter_than_one_overhead(stored: int) -> None:
    assert plaintext_size(stored) is None


@pytest.mark.parametrize("segments", [1, 2, 1000])
@pytest.mark.parametrize("extra", [1, 2, OVERHEAD - 1, OVERHEAD])
def test_no_object_stops_just_past_a_full_segment(segments: int, extra: int) -> None:
    # After n full segments the next one needs its overhead before a plaintext byte.
    assert plaintext_size(segments * STORED_SEGMENT + extra) is None
    assert plaintext_size(segments * STORED_SEGMENT + OVERHEAD + 1) == segments * SEGMENT + 1


# -- Range headers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "header, size, first, last",
    [
        ("bytes=0-0", 10, 0, 0),
        ("bytes=2-5", 10, 2, 5),
        ("bytes=2-9", 10, 2, 9),
        ("bytes=2-1000", 10, 2, 9),  # clamped to the end
        ("bytes=7-", 10, 7, 9),
        ("bytes=0-", 10, 0, 9),
        ("bytes=-3", 10, 7, 9),
        ("bytes=-10", 10, 0, 9),
        ("bytes=-1000", 10, 0, 9),  # more than the object: all of it
        (" bytes=1-2 ", 10, 1, 2),
        ("bytes=3-3", 4, 3, 3),
    ],
)
def test_requested_span(header: str, size: int, first: int, last: int) -> None:
    assert requested_span(header, size) == Span(first, last, size)


@pytest.mark.parametrize(
    "header",
    [None, "", "bytes=", "bytes=-", "bytes=1-2,4-5", "items=0-1", "bytes=a-b", "0-1",
     "bytes 0-1", "bytes=0-1x", "bytes=1--2", "bytes= 1-2"],
)
def test_malformed_range_is_the_whole_object(header: str | None) -> None:
    assert requested_span(header, 10) is None


@pytest.mark.parametrize("header", ["bytes=5-4", "bytes=9-0", "bytes=20-10"])
def test_inverted_range_is_ignored(header: str) -> None:
    assert requested_span(header, 10) is None


@pytest.mark.parametrize(
    "header, size",
    [("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=11-", 10), ("bytes=-0", 10),
     ("bytes=0-", 0), ("bytes=0-0", 0), ("bytes=-1", 0), ("bytes=-0", 0)],
)
def test_unsatisfiable_range(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        requested_span(header, size)


def test_span_properties() -> None:
    span = Span(SEGMENT + 5, 2 * SEGMENT + 9, 3 * SEGMENT)
    assert span.length == SEGMENT + 5
    assert (span.first_segment, span.skip) == (1, 5)
    assert span.stored_range == (STORED_SEGMENT, 3 * STORED_SEGMENT - 1)
    assert span.content_range() == f"bytes {SEGMENT + 5}-{2 * SEGMENT + 9}/{3 * SEGMENT}"
    # The last segment is short: the range ends where the object does.
    short = Span(2 * SEGMENT, 2 * SEGMENT + 1, 2 * SEGMENT + 7)
    assert short.stored_range == (2 * STORED_SEGMENT, stored_size(2 * SEGMENT + 7) - 1)


# -- stored ranges, end to end -------------------------------------------------


@st.composite
def spans(draw: st.DrawFn) -> Span:
    size = draw(st.one_of(
        st.integers(1, 4 * SEGMENT + 100),
        st.sampled_from([1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT, 3 * SEGMENT + 1]),
    ))
    first = draw(st.integers(0, size - 1))
    last = draw(st.one_of(st.integers(first, size - 1), st.just(first), st.just(size - 1)))
    return Span(first, last, size)


@given(spans())
@settings(max_examples=150, deadline=None)
def test_stored_range_holds_exactly_the_span(span: Span) -> None:
    plaintext = random.Random(span.size).randbytes(span.size)
    stored_object = seal(plaintext)
    assert len(stored_object) == stored_size(span.size)
    start, end = span.stored_range
    # Whole segments: from the first holding the span to the last holding it.
    assert start == (span.first // SEGMENT) * STORED_SEGMENT
    last_segment = span.last // SEGMENT
    assert end == min((last_segment + 1) * STORED_SEGMENT, len(stored_object)) - 1
    assert open_span(stored_object, span) == plaintext[span.first : span.last + 1]


@given(st.integers(1, 3 * SEGMENT + 10), st.data())
@settings(max_examples=100, deadline=None)
def test_requested_span_then_stored_range_gives_the_requested_bytes(
    size: int, data: st.DataObject
) -> None:
    a = data.draw(st.integers(0, size + 10))
    b = data.draw(st.integers(a, a + 2 * SEGMENT))
    suffix = data.draw(st.integers(1, size + 10))
    plaintext = random.Random(size).randbytes(size)
    stored_object = seal(plaintext)
    for header, expected in [
        (f"bytes={a}-{b}", plaintext[a : b + 1]),
        (f"bytes={a}-", plaintext[a:]),
        (f"bytes=-{suffix}", plaintext[-suffix:]),
    ]:
        if a >= size and not header.startswith("bytes=-"):
            with pytest.raises(Unsatisfiable):
                requested_span(header, size)
            continue
        span = requested_span(header, size)
        assert span is not None
        assert open_span(stored_object, span) == expected
