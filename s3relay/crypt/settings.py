# -*- test-case-name: tests.unit.test_crypt_settings -*-
"""``[encryption]``: which objects are encrypted, and with which keys.

::

    [encryption]
    prefixes = secure-bucket, logs/private/
    key_files = /etc/s3relay/keys/2026-12.key, /etc/s3relay/keys/2026-06.key
    allow_plaintext_reads = no

A prefix is a bucket (all of it) or ``bucket/key-prefix``.  The key files
are read when the config is (at start and on SIGHUP); one that is missing
or unreadable refuses the config.

Pure, stdlib only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from s3relay.crypt.keys import KeyRing, load_key_ring
from s3relay.ini import ConfigError, Section


@dataclass(frozen=True)
class EncryptionConfig:
    #: (bucket, key prefix) pairs; ``b""`` covers the whole bucket.
    prefixes: tuple[tuple[str, bytes], ...]
    keys: KeyRing
    #: Serve objects found without the relay's metadata as they are stored.
    allow_plaintext_reads: bool = False

    def covers(self, bucket: str | None, key: bytes) -> bool:
        """Whether the object ``bucket``/``key`` is stored encrypted."""
        return any(b == bucket and key.startswith(p) for b, p in self.prefixes)

    def key_prefixes(self, bucket: str | None) -> tuple[bytes, ...]:
        """The key prefixes of ``bucket`` whose objects are encrypted."""
        return tuple(p for b, p in self.prefixes if b == bucket)


def parse_encryption(section: Section) -> EncryptionConfig:
    prefixes = []
    for entry in section.get("prefixes").split(","):
        entry = entry.strip()
        if not entry:
            continue
        bucket, _, prefix = entry.partition("/")
        if not bucket or any(c.isspace() for c in entry):
            raise ConfigError(section.name, "prefixes", f"{entry[:64]!r} is not BUCKET[/PREFIX]")
        prefixes.append((bucket, prefix.encode("utf-8")))
    if not prefixes:
        raise ConfigError(section.name, "prefixes", "names no bucket")
    paths = [
        os.path.join(section.base_dir, p.strip())
        for p in section.get("key_files").split(",")
        if p.strip()
    ]
    return EncryptionConfig(
        tuple(prefixes),
        load_key_ring(section.name, "key_files", paths),
        section.flag("allow_plaintext_reads"),
    )
