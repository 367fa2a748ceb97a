"""The upload ids clients get for encrypted uploads (KeyRing.upload_id, open_upload_id)."""

from __future__ import annotations

import os
import string
from typing import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3relay.crypt.keys import TOKEN_MARK, KeyRing, UnusableKey

OLD, NEW = os.urandom(32), os.urandom(32)
RING = KeyRing("k-2026.06", {"k-2026.06": OLD})
DATA_KEY = bytes(range(32))
UPSTREAM = "VXBsb2FkIElEIGZvciA2aWpKOGY.Gw-_"

upstream_ids = st.text(string.ascii_letters + string.digits + "._-~+/=", min_size=1,
                       max_size=80)


def made(bucket: str = "bucket", key: bytes = b"dir/key", upstream: str = UPSTREAM) -> str:
    return RING.upload_id(bucket, key, upstream, DATA_KEY)


@given(st.text(min_size=1, max_size=20), st.binary(max_size=40), upstream_ids,
       st.binary(min_size=32, max_size=32))
def test_round_trip(bucket: str, key: bytes, upstream: str, data_key: bytes) -> None:
    client_id = RING.upload_id(bucket, key, upstream, data_key)
    assert client_id.startswith(f"{upstream}{TOKEN_MARK}k-2026.06~")
    assert RING.open_upload_id(bucket, key, client_id) == (upstream, data_key)


def test_the_id_is_query_safe() -> None:
    token = made()[len(UPSTREAM):]
    assert set(token) <= set(string.ascii_letters + string.digits + "-_.~")


def test_each_id_is_wrapped_anew() -> None:
    assert made() != made()


@pytest.mark.parametrize("bucket, key, client_id", [
    ("other", b"dir/key", made()),
    ("bucket", b"dir/other", made()),
    ("bucket", b"dir/key", UPSTREAM + "x" + made()[len(UPSTREAM):]),  # another upstream id
    ("bucket", b"dir/key", "other-id" + made()[len(UPSTREAM):]),
])
def test_refused_elsewhere(bucket: str, key: bytes, client_id: str) -> None:
    with pytest.raises(UnusableKey):
        RING.open_upload_id(bucket, key, client_id)


def test_a_tampered_token_is_refused() -> None:
    client_id = made()
    for at in range(len(client_id) - 80, len(client_id)):  # every character of the wrap
        flipped = "A" if client_id[at] != "A" else "B"
        with pytest.raises(UnusableKey):
            RING.open_upload_id("bucket", b"dir/key", client_id[:at] + flipped
                                + client_id[at + 1:])


@pytest.mark.parametrize("client_id", [
    UPSTREAM,  # the upstream's own (ListMultipartUploads)
    made().replace(TOKEN_MARK, "~s3r2~"),
    made()[len(UPSTREAM):],  # no upstream id
    f"{UPSTREAM}{TOKEN_MARK}",
    f"{UPSTREAM}{TOKEN_MARK}k-2026.06",
    f"{UPSTREAM}{TOKEN_MARK}k-2026.06~",
    f"{UPSTREAM}{TOKEN_MARK}k-2026.06~%%%%",
    made()[:-4],  # truncated
    made() + "AAAA",
])
def test_ids_without_a_data_key_are_refused(client_id: str) -> None:
    with pytest.raises(UnusableKey):
        RING.open_upload_id("bucket", b"dir/key", client_id)


def test_an_unknown_key_id_is_refused() -> None:
    other = KeyRing("k-2027", {"k-2027": OLD})  # the same bytes, another id
    with pytest.raises(UnusableKey, match="not configured"):
        RING.open_upload_id("bucket", b"dir/key", other.upload_id("bucket", b"dir/key",
                                                                 UPSTREAM, DATA_KEY))
    renamed = made().replace("~k-2026.06~", "~k-2027~")
    with pytest.raises(UnusableKey):
        other.open_upload_id("bucket", b"dir/key", renamed)


def test_a_key_of_the_same_id_with_other_bytes_is_refused() -> None:
    impostor = KeyRing("k-2026.06", {"k-2026.06": NEW})
    with pytest.raises(UnusableKey):
        impostor.open_upload_id("bucket", b"dir/key", made())


def test_after_rotation() -> None:
    rotated = KeyRing("k-2026.12", {"k-2026.12": NEW, "k-2026.06": OLD})
    assert rotated.open_upload_id("bucket", b"dir/key", made()) == (UPSTREAM, DATA_KEY)
    fresh = rotated.upload_id("bucket", b"dir/key", UPSTREAM, DATA_KEY)
    assert f"{TOKEN_MARK}k-2026.12~" in fresh
    assert rotated.open_upload_id("bucket", b"dir/key", fresh) == (UPSTREAM, DATA_KEY)
    with pytest.raises(UnusableKey):
        RING.open_upload_id("bucket", b"dir/key", fresh)  # the old ring lacks the new key


def filled(byte: int) -> Callable[[int], bytes]:
    """A deterministic random source: ``byte`` repeated."""
    return lambda count: bytes([byte]) * count


def test_only_the_url_safe_alphabet_is_accepted() -> None:
    ids = (RING.upload_id("bucket", b"dir/key", UPSTREAM, DATA_KEY, filled(byte))
           for byte in range(256))
    client_id = next(made_id for made_id in ids if {"-", "_"} & set(made_id.rpartition("~")[2]))
    start, _, token = client_id.rpartition("~")
    other = f"{start}~{token.replace('-', '+').replace('_', '/')}"
    assert other != client_id
    with pytest.raises(UnusableKey):
        RING.open_upload_id("bucket", b"dir/key", other)
