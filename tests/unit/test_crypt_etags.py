"""The ETags clients see for encrypted objects (s3relay.crypt.etags)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3relay.crypt.etags import SUFFIX, shown, stored, stored_list

MD5 = "3858f62230ac3c915f300c664312c63f"

md5s = st.text(alphabet="0123456789abcdefABCDEF", min_size=32, max_size=32)
quotes = st.sampled_from(["", '"'])


def test_by_hand() -> None:
    assert SUFFIX == "-0"
    assert shown(f'"{MD5}"') == f'"{MD5}-0"'
    assert shown(MD5) == f"{MD5}-0"
    assert stored(f'"{MD5}-0"') == f'"{MD5}"'
    assert stored(f"{MD5}-0") == MD5


@given(md5s, quotes)
def test_shown_then_stored_is_the_stored_etag(md5: str, quote: str) -> None:
    etag = f"{quote}{md5}{quote}"
    assert shown(etag) == f"{quote}{md5}-0{quote}"
    assert stored(shown(etag)) == etag


def test_surrounding_space_is_dropped() -> None:
    assert shown(f' "{MD5}" ') == f'"{MD5}-0"'
    assert stored(f' "{MD5}-0" ') == f'"{MD5}"'


@pytest.mark.parametrize("etag", [
    f'"{MD5}-3"',  # a multipart object's
    f"{MD5}-12",
    f'"{MD5[:31]}"',  # not 32 hex digits
    f'"{MD5}0"',
    f'"{MD5[:31]}g"',
    '"not-an-etag"',
    "",
    "*",
    f'W/"{MD5}"',
])
def test_other_etags_are_left_alone(etag: str) -> None:
    assert shown(etag) == etag
    assert stored(etag) == etag


def test_a_stored_md5_etag_is_not_read_back() -> None:
    """Only a shown ETag (with -0) names another stored one."""
    assert stored(f'"{MD5}"') == f'"{MD5}"'


@given(st.text(max_size=50))
def test_anything_else_is_unchanged(etag: str) -> None:
    if "-0" not in etag:
        assert stored(etag) == etag.strip()
    if len(etag.strip().strip('"')) != 32:
        assert shown(etag) == etag


def test_stored_list() -> None:
    other = "0123456789abcdef0123456789abcdef"
    assert stored_list(f'"{MD5}-0", "{other}-0"') == f'"{MD5}", "{other}"'
    assert stored_list(f'"{MD5}-0","{other}-2"') == f'"{MD5}", "{other}-2"'
    assert stored_list(f'"{MD5}-0"') == f'"{MD5}"'


def test_stored_list_star() -> None:
    assert stored_list("*") == "*"
    assert stored_list(" * ") == "*"


@given(st.lists(st.tuples(md5s, quotes), min_size=1, max_size=5))
def test_stored_list_reads_back_every_shown_etag(etags: list[tuple[str, str]]) -> None:
    shown_list = ", ".join(shown(f"{q}{md5}{q}") for md5, q in etags)
    assert stored_list(shown_list) == ", ".join(f"{q}{md5}{q}" for md5, q in etags)
