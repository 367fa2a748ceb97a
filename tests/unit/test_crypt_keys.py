"""Tests for s3relay.crypt.keys: wrapping data keys in object metadata, key
files and key rings, and ``s3relay generate-key``."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay import cli
from s3relay.crypt.keys import (
    FORMAT,
    FORMAT_MULTIPART,
    META_DATA_KEY,
    META_FORMAT,
    META_KEY_ID,
    KeyRing,
    UnusableKey,
    generate_key_file,
    is_encrypted,
    is_multipart,
    load_key_ring,
    read_key_file,
)
from s3relay.ini import ConfigError

KEK = bytes(range(32))
OLD_KEK = bytes(range(100, 132))
RING = KeyRing("k1", MappingProxyType({"k1": KEK}))


def write_key(path: Path, content: bytes, mode: int = 0o600) -> str:
    path.write_bytes(content)
    path.chmod(mode)
    return str(path)


def read(path: str) -> bytes:
    return read_key_file("encryption", "key_files", path)


# -- metadata --------------------------------------------------------------------


@given(st.text(min_size=1, max_size=20), st.binary(min_size=1, max_size=100))
@settings(max_examples=50, deadline=None)
def test_seal_then_open_metadata(bucket: str, key: bytes) -> None:
    data_key, metadata = RING.seal_metadata(bucket, key)
    assert len(data_key) == 32
    assert metadata[META_FORMAT] == FORMAT and metadata[META_KEY_ID] == "k1"
    assert data_key not in base64.b64decode(metadata[META_DATA_KEY])  # wrapped, not stored
    assert is_encrypted(metadata)
    assert RING.open_metadata(bucket, key, metadata) == data_key


def test_multipart_metadata_is_bound_to_its_format() -> None:
    data_key, metadata = RING.seal_metadata("b", b"k", multipart=True)
    assert metadata[META_FORMAT] == FORMAT_MULTIPART and is_multipart(metadata)
    assert RING.open_metadata("b", b"k", metadata) == data_key
    _, whole = RING.seal_metadata("b", b"k")
    assert not is_multipart(whole)
    # Relabelled, either would be read with the wrong segment layout: refused.
    with pytest.raises(UnusableKey):
        RING.open_metadata("b", b"k", {**metadata, META_FORMAT: FORMAT})
    with pytest.raises(UnusableKey):
        RING.open_metadata("b", b"k", {**whole, META_FORMAT: FORMAT_MULTIPART})


def test_every_object_gets_its_own_data_key() -> None:
    first, meta1 = RING.seal_metadata("b", b"k")
    second, meta2 = RING.seal_metadata("b", b"k")
    assert first != second and meta1[META_DATA_KEY] != meta2[META_DATA_KEY]


def altered(metadata: dict[str, str]) -> dict[str, str]:
    wrapped = bytearray(base64.b64decode(metadata[META_DATA_KEY]))
    wrapped[-1] ^= 1
    return {**metadata, META_DATA_KEY: base64.b64encode(bytes(wrapped)).decode()}


_, METADATA = RING.seal_metadata("bucket", b"dir/key")


@pytest.mark.parametrize(
    "ring, bucket, key, metadata",
    [
        (RING, "other-bucket", b"dir/key", METADATA),
        (RING, "bucket", b"dir/key2", METADATA),
        (RING, "bucket", b"dir/ke", METADATA),
        (RING, "bucket", b"dir/key", {**METADATA, META_KEY_ID: "k2"}),
        (RING, "bucket", b"dir/key", {**METADATA, META_KEY_ID: ""}),
        (KeyRing("k1", {"k1": OLD_KEK}), "bucket", b"dir/key", METADATA),
        (RING, "bucket", b"dir/key", altered(METADATA)),
        (RING, "bucket", b"dir/key", {**METADATA, META_DATA_KEY: "not base64!"}),
        (RING, "bucket", b"dir/key", {**METADATA, META_DATA_KEY: ""}),
        (RING, "bucket", b"dir/key", {**METADATA, META_DATA_KEY: METADATA[META_DATA_KEY][:20]}),
        (RING, "bucket", b"dir/key", {**METADATA, META_FORMAT: "2"}),
        (RING, "bucket", b"dir/key", {k: v for k, v in METADATA.items() if k != META_FORMAT}),
        (RING, "bucket", b"dir/key", {}),
    ],
    ids=["bucket", "key", "key-prefix", "unknown-id", "no-id", "other-kek", "altered",
         "not-base64", "no-data-key", "short-data-key", "format", "no-format", "no-metadata"],
)
def test_open_metadata_refuses(ring: KeyRing, bucket: str, key: bytes,
                               metadata: dict[str, str]) -> None:
    with pytest.raises(UnusableKey):
        ring.open_metadata(bucket, key, metadata)


def test_rotation_opens_old_objects_and_seals_with_the_new_key() -> None:
    old_ring = KeyRing("old", {"old": OLD_KEK})
    data_key, old_metadata = old_ring.seal_metadata("b", b"k")
    ring = KeyRing("new", {"new": KEK, "old": OLD_KEK})
    assert ring.open_metadata("b", b"k", old_metadata) == data_key
    new_key, new_metadata = ring.seal_metadata("b", b"k")
    assert new_metadata[META_KEY_ID] == "new"
    with pytest.raises(UnusableKey):
        old_ring.open_metadata("b", b"k", new_metadata)
    assert KeyRing("new", {"new": KEK}).open_metadata("b", b"k", new_metadata) == new_key


def test_the_wrap_is_bound_to_its_key_id() -> None:
    twins = KeyRing("a", {"a": KEK, "b": KEK})  # one key file copied under two names
    data_key, metadata = twins.seal_metadata("b", b"k")
    assert twins.open_metadata("b", b"k", metadata) == data_key
    with pytest.raises(UnusableKey):
        twins.open_metadata("b", b"k", {**metadata, META_KEY_ID: "b"})


# -- upload ids -------------------------------------------------------------------


UPSTREAM_ID = "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA--"


def test_upload_id_carries_the_data_key() -> None:
    data_key = bytes(range(7, 39))
    client_id = RING.upload_id("b", b"k", UPSTREAM_ID, data_key)
    assert client_id.startswith(UPSTREAM_ID) and data_key.hex() not in client_id
    assert RING.open_upload_id("b", b"k", client_id) == (UPSTREAM_ID, data_key)
    rotated = KeyRing("new", {"new": OLD_KEK, "k1": KEK})
    assert rotated.open_upload_id("b", b"k", client_id) == (UPSTREAM_ID, data_key)


CLIENT_ID = RING.upload_id("b", b"k", UPSTREAM_ID, bytes(32))


@pytest.mark.parametrize(
    "bucket, key, client_id",
    [
        ("b2", b"k", CLIENT_ID),
        ("b", b"k2", CLIENT_ID),
        ("b", b"k", "X" + CLIENT_ID),  # another upstream upload
        ("b", b"k", UPSTREAM_ID),  # not started through the relay
        ("b", b"k", CLIENT_ID[:-2]),
        ("b", b"k", CLIENT_ID[:-1] + ("A" if CLIENT_ID[-1] != "A" else "B")),
        ("b", b"k", CLIENT_ID.replace("~k1~", "~k2~")),
        ("b", b"k", CLIENT_ID[: CLIENT_ID.rindex("~") + 1] + "A"),
        ("b", b"k", CLIENT_ID[CLIENT_ID.index("~"):]),
    ],
    ids=["bucket", "key", "upstream-id", "no-token", "short", "altered", "key-id",
         "not-base64", "no-upstream-id"],
)
def test_open_upload_id_refuses(bucket: str, key: bytes, client_id: str) -> None:
    with pytest.raises(UnusableKey):
        RING.open_upload_id(bucket, key, client_id)


# -- key files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [KEK, KEK.hex().encode(), KEK.hex().upper().encode() + b"\n", base64.b64encode(KEK),
     base64.b64encode(KEK) + b"\n", b"  " + base64.b64encode(KEK) + b"\n\n"],
    ids=["raw", "hex", "hex-upper-newline", "base64", "base64-newline", "base64-spaces"],
)
def test_read_key_file_formats(tmp_path: Path, content: bytes) -> None:
    assert read(write_key(tmp_path / "k.key", content)) == KEK


@pytest.mark.parametrize(
    "content",
    [b"", KEK[:31], KEK + b"!", KEK[:31].hex().encode(), (KEK + b"!").hex().encode(),
     base64.b64encode(KEK[:16]), base64.b64encode(KEK + b"!") + b"\n", b"\xff" * 64],
    ids=["empty", "raw-31", "raw-33", "hex-31", "hex-33", "base64-16", "base64-33", "junk"],
)
def test_read_key_file_refuses_other_lengths(tmp_path: Path, content: bytes) -> None:
    path = write_key(tmp_path / "k.key", content)
    with pytest.raises(ConfigError) as info:
        read(path)
    assert str(info.value).startswith("[encryption] key_files: ")
    assert "not a 32-byte key" in str(info.value) and path in str(info.value)


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o620, 0o601, 0o666])
def test_read_key_file_refuses_a_file_others_can_use(tmp_path: Path, mode: int) -> None:
    path = write_key(tmp_path / "k.key", KEK, mode)
    with pytest.raises(ConfigError) as info:
        read(path)
    assert f"chmod 600 {path}" in str(info.value) and f"{mode:04o}" in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640])
def test_read_key_file_accepts_owner_and_group_read(tmp_path: Path, mode: int) -> None:
    assert read(write_key(tmp_path / "k.key", KEK, mode)) == KEK


def test_read_key_file_missing(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.key")
    with pytest.raises(ConfigError) as info:
        read(path)
    assert str(info.value) == (
        f"[encryption] key_files: cannot read {path}: No such file or directory"
    )


# -- key rings ---------------------------------------------------------------------


def test_load_key_ring_first_is_current(tmp_path: Path) -> None:
    new = write_key(tmp_path / "2026-12.key", KEK)
    old = write_key(tmp_path / "2026-06.key", base64.b64encode(OLD_KEK))
    ring = load_key_ring("encryption", "key_files", [new, old])
    assert ring.current == "2026-12"
    assert dict(ring.keys) == {"2026-12": KEK, "2026-06": OLD_KEK}
    assert KEK.hex() not in repr(ring)


def test_load_key_ring_refuses_duplicate_ids(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    first = write_key(tmp_path / "k1.key", KEK)
    second = write_key(tmp_path / "a" / "k1.bin", OLD_KEK)
    with pytest.raises(ConfigError, match="two key files have the id 'k1'"):
        load_key_ring("encryption", "key_files", [first, second])


@pytest.mark.parametrize("name", ["my key.key", "k\u00e9y.key", "a/", "k:1.key", "k+1"])
def test_load_key_ring_refuses_bad_ids(tmp_path: Path, name: str) -> None:
    path = str(tmp_path / name) if not name.endswith("/") else str(tmp_path) + "/"
    if not name.endswith("/"):
        write_key(tmp_path / name, KEK)
    with pytest.raises(ConfigError, match="key id"):
        load_key_ring("encryption", "key_files", [path])


def test_load_key_ring_accepts_id_characters(tmp_path: Path) -> None:
    path = write_key(tmp_path / "Key_2026-12.v1.key", KEK)
    assert load_key_ring("encryption", "key_files", [path]).current == "Key_2026-12.v1"


def test_load_key_ring_refuses_no_paths() -> None:
    with pytest.raises(ConfigError) as info:
        load_key_ring("encryption", "key_files", [])
    assert str(info.value) == "[encryption] key_files: names no key file"


# -- generating keys -----------------------------------------------------------------


def test_generate_key_file(tmp_path: Path) -> None:
    path = str(tmp_path / "new.key")
    generate_key_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = read(path)
    assert len(key) == 32
    with open(path, "rb") as handle:
        assert handle.read() == base64.b64encode(key) + b"\n"
    with pytest.raises(FileExistsError):
        generate_key_file(path)
    assert read(path) == key  # untouched
    other = str(tmp_path / "other.key")
    generate_key_file(other)
    assert read(other) != key


def test_generate_key_file_uses_the_random_source(tmp_path: Path) -> None:
    path = str(tmp_path / "k.key")
    generate_key_file(path, random=lambda n: KEK[:n])
    assert read(path) == KEK


def test_cli_generate_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "2026-12.key")
    assert cli.main(["generate-key", path]) == 0
    assert "'2026-12'" in capsys.readouterr().out
    key = read(path)
    assert cli.main(["generate-key", path]) == 1
    assert "exists" in capsys.readouterr().err
    assert read(path) == key
    assert cli.main(["generate-key", str(tmp_path / "no-dir" / "k.key")]) == 1
