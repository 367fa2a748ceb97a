# -*- test-case-name: tests.unit.test_crypt_keys -*-
"""Key-encryption keys (KEKs) and the data keys they wrap.

Every object gets a random 256-bit data key.  The first configured KEK
wraps it with AES-256-GCM, and the associated data binds the wrap to the
format, the KEK's id, the bucket and the key: a wrapped data key copied to
another object's metadata does not unwrap there.  The stored metadata
(``x-amz-meta-s3relay-*``) holds the format version, the KEK id and the
wrapped key; older KEKs stay configured so their objects stay readable.

Pure: ``cryptography`` and the standard library.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3relay.ini import ConfigError

KEY_BYTES = 32

#: The object metadata the relay stores with every encrypted object.
META_FORMAT = "x-amz-meta-s3relay-format"
META_KEY_ID = "x-amz-meta-s3relay-key-id"
META_DATA_KEY = "x-amz-meta-s3relay-data-key"
META_PREFIX = "x-amz-meta-s3relay-"
FORMAT = "1"
#: The format of an object assembled from a multipart upload's parts.
FORMAT_MULTIPART = "1-multipart"
FORMATS = (FORMAT, FORMAT_MULTIPART)

#: Joins the upstream's upload id and the relay's token in the id clients see.
TOKEN_MARK = "~s3r1~"

_WRAP_NONCE = 12
_URLSAFE = re.compile(r"[A-Za-z0-9_-]*")


class UnusableKey(Exception):
    """An object's key metadata cannot be used: missing, unknown KEK, or altered."""


@dataclass(frozen=True)
class KeyRing:
    """The configured KEKs by id; ``current`` wraps the keys of new objects."""

    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    def seal_metadata(
        self,
        bucket: str,
        key: bytes,
        multipart: bool = False,
        random: Callable[[int], bytes] = os.urandom,
    ) -> tuple[bytes, dict[str, str]]:
        """A new data key, and the metadata headers that store it wrapped."""
        data_key = random(KEY_BYTES)
        version = FORMAT_MULTIPART if multipart else FORMAT
        wrapped = self._wrap(data_key, _binding(version, self.current, bucket, key), random)
        return data_key, {
            META_FORMAT: version,
            META_KEY_ID: self.current,
            META_DATA_KEY: base64.b64encode(wrapped).decode("ascii"),
        }

    def _wrap(self, data_key: bytes, binding: bytes, random: Callable[[int], bytes]) -> bytes:
        nonce = random(_WRAP_NONCE)
        return nonce + AESGCM(self.keys[self.current]).encrypt(nonce, data_key, binding)

    def _unwrap(self, key_id: str, wrapped: bytes, binding: bytes) -> bytes:
        kek = self.keys.get(key_id)
        if kek is None:
            raise UnusableKey(f"wrapped by key {key_id[:64]!r}, which is not configured")
        try:
            return AESGCM(kek).decrypt(wrapped[:_WRAP_NONCE], wrapped[_WRAP_NONCE:], binding)
        except (ValueError, InvalidTag):
            raise UnusableKey(f"data key does not unwrap with key {key_id!r}") from None

    def upload_id(
        self,
        bucket: str,
        key: bytes,
        upstream_id: str,
        data_key: bytes,
        random: Callable[[int], bytes] = os.urandom,
    ) -> str:
        """The upload id a client is given for ``upstream_id``: the upstream's
        id with the object's data key, wrapped for this upload alone.

        No S3 call shows an unfinished upload's metadata, so the parts'
        requests carry the data key themselves."""
        wrapped = self._wrap(data_key, _upload_binding(self.current, bucket, key, upstream_id),
                             random)
        token = base64.urlsafe_b64encode(wrapped).decode("ascii").rstrip("=")
        return f"{upstream_id}{TOKEN_MARK}{self.current}~{token}"

    def open_upload_id(self, bucket: str, key: bytes, client_id: str) -> tuple[str, bytes]:
        """The upstream's upload id and the data key in a client's upload id."""
        upstream_id, mark, token = client_id.rpartition(TOKEN_MARK)
        key_id, _, wrapped = token.partition("~")
        if not mark or not upstream_id:
            raise UnusableKey("the upload id carries no data key: not started through the relay")
        try:
            if not _URLSAFE.fullmatch(wrapped):
                raise ValueError("not base64url")
            raw = base64.urlsafe_b64decode(wrapped + "=" * (-len(wrapped) % 4))
        except (binascii.Error, ValueError):
            raise UnusableKey("the upload id's data key is not base64") from None
        binding = _upload_binding(key_id, bucket, key, upstream_id)
        return upstream_id, self._unwrap(key_id, raw, binding)

    def open_metadata(self, bucket: str, key: bytes, metadata: Mapping[str, str]) -> bytes:
        """The data key that ``metadata`` (lowercase names) wraps for ``bucket``/``key``."""
        version = metadata.get(META_FORMAT)
        if version not in FORMATS:
            raise UnusableKey(f"unknown encryption format {str(version)[:16]!r}")
        key_id = metadata.get(META_KEY_ID, "")
        try:
            wrapped = base64.b64decode(metadata.get(META_DATA_KEY, ""), validate=True)
        except (binascii.Error, ValueError):
            raise UnusableKey("the wrapped data key is not base64") from None
        return self._unwrap(key_id, wrapped, _binding(version, key_id, bucket, key))


def _binding(version: str, key_id: str, bucket: str, key: bytes) -> bytes:
    parts = [b"s3relay data key", version.encode(), key_id.encode(), bucket.encode(), key]
    return b"\0".join(parts)


def _upload_binding(key_id: str, bucket: str, key: bytes, upstream_id: str) -> bytes:
    parts = [b"s3relay upload", key_id.encode(), bucket.encode(), key, upstream_id.encode()]
    return b"\0".join(parts)


def is_multipart(metadata: Mapping[str, str]) -> bool:
    return metadata.get(META_FORMAT) == FORMAT_MULTIPART


def is_encrypted(metadata: Mapping[str, str]) -> bool:
    """Whether an object's metadata says the relay encrypted it."""
    return META_FORMAT in metadata


def key_id(path: str) -> str:
    """A KEK's id: its file name without the extension."""
    return os.path.splitext(os.path.basename(path))[0]


def _decode(raw: bytes) -> bytes | None:
    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
        try:
            value = decode(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError, binascii.Error):
            continue
        if len(value) == KEY_BYTES:
            return value
    return None


def read_key_file(section: str, option: str, path: str) -> bytes:
    """A KEK from ``path``: 32 bytes raw, or as hex or base64 text; refused
    when other users may read or change the file."""
    try:
        info = os.stat(path)
        if info.st_mode & 0o027 and stat.S_ISREG(info.st_mode):
            raise ConfigError(
                section, option,
                f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run: chmod 600 {path} (or 640 with the relay's group)",
            )
        with open(path, "rb") as handle:
            raw = handle.read(4096)
    except OSError as e:
        raise ConfigError(section, option, f"cannot read {path}: {e.strerror}") from None
    key = _decode(raw)
    if key is None:
        raise ConfigError(
            section, option, f"{path} is not a 32-byte key (raw, hex or base64); "
            "make one with: s3relay generate-key PATH"
        )
    return key


def load_key_ring(section: str, option: str, paths: Sequence[str]) -> KeyRing:
    """The KEKs in ``paths``; the first is current."""
    if not paths:
        raise ConfigError(section, option, "names no key file")
    keys: dict[str, bytes] = {}
    for path in paths:
        name = key_id(path)
        if not name or not name.isascii() or not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(section, option, f"{path}: a key id (the file name) must be "
                              "letters, digits, '-', '_' or '.'")
        if name in keys:
            raise ConfigError(section, option, f"two key files have the id {name!r}")
        keys[name] = read_key_file(section, option, path)
    return KeyRing(key_id(paths[0]), MappingProxyType(keys))


def generate_key_file(path: str, random: Callable[[int], bytes] = os.urandom) -> None:
    """Write a new KEK to ``path`` as base64 text, mode 0600; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(random(KEY_BYTES)).decode("ascii") + "\n")
