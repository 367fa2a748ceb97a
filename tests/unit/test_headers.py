"""Tests for s3relay.http.headers: the header rules both directions share."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s3relay.http.headers import (
    HOP_BY_HOP,
    connection_named,
    end_to_end,
    header_text,
    response_head,
    valid_field,
    wire_name,
)


def test_connection_named_reads_every_value_and_token() -> None:
    assert connection_named(["close, X-Private", " keep-alive ,,TE "]) == {
        "close", "x-private", "keep-alive", "te"
    }
    assert connection_named([]) == frozenset()


def test_end_to_end_drops_fixed_and_named_hop_by_hop_headers() -> None:
    headers = {
        "connection": ["x-secret"], "x-secret": ["1"], "keep-alive": ["5"],
        "content-type": ["text/plain"],
    }
    assert end_to_end(headers) == {"content-type": ["text/plain"]}


@given(st.dictionaries(st.sampled_from(sorted(HOP_BY_HOP) + ["etag", "x-amz-meta-a"]),
                       st.lists(st.text(max_size=5), min_size=1, max_size=2)))
def test_end_to_end_never_keeps_a_hop_by_hop_name(headers: dict[str, list[str]]) -> None:
    kept = end_to_end(headers)
    assert not set(kept) & HOP_BY_HOP
    assert set(kept) <= set(headers)


def test_wire_name_lowers_only_amz_headers() -> None:
    assert wire_name(b"X-Amz-Meta-Color") == b"x-amz-meta-color"
    assert wire_name(b"Content-Type") == b"Content-Type"


def test_response_head_spells_names_and_drops_split_fields() -> None:
    lines = response_head(
        b"HTTP/1.1", b"200", b"OK",
        [(b"X-Amz-Request-Id", b"1"), (b"Evil", b"a\r\nInjected: 1"), (b"ETag", b'"e"')],
    )
    assert b"".join(lines) == (
        b'HTTP/1.1 200 OK\r\nx-amz-request-id: 1\r\nETag: "e"\r\n\r\n'
    )


def test_valid_field() -> None:
    assert valid_field(b"Host: example")
    assert valid_field(b"\tcontinued value")
    assert not valid_field(b"Bad Name: x")
    assert not valid_field(b"NoColon")
    assert not valid_field(b"X: a\x00b")


def test_header_text_reads_utf8_bytes_as_utf8_and_others_as_latin1() -> None:
    assert header_text("café".encode()) == "café"
    assert header_text("café".encode("latin-1")) == "café"
    assert header_text(b"plain") == "plain"


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_header_text_of_utf8_is_the_text(text: str) -> None:
    assert header_text(text.encode("utf-8")) == text
