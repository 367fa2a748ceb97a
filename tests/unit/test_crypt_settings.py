"""Tests for s3relay.crypt.settings: ``[encryption]`` as parse_config reads it."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from s3relay.config import ConfigError, parse_config
from s3relay.crypt.settings import EncryptionConfig

MINIMAL = "[upstream]\nurl = http://127.0.0.1:9000\nregion = r1\n"
NEW_KEY = bytes(range(32))
OLD_KEY = bytes(range(50, 82))


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    for name, key in [("2026-12.key", NEW_KEY), ("2026-06.key", OLD_KEY)]:
        (tmp_path / name).write_bytes(base64.b64encode(key) + b"\n")
        (tmp_path / name).chmod(0o600)
    return tmp_path


def encryption(keys: Path, section: str) -> EncryptionConfig:
    config = parse_config(MINIMAL + "[encryption]\n" + section, str(keys))
    assert config.encryption is not None
    return config.encryption


def error(keys: Path, section: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "[encryption]\n" + section, str(keys))
    return info.value


def test_no_section_no_encryption() -> None:
    assert parse_config(MINIMAL).encryption is None


def test_encryption_section(keys: Path) -> None:
    config = encryption(keys, "prefixes = secure-bucket, logs/private/ ,,logs/x\n"
                              f"key_files = 2026-12.key, {keys / '2026-06.key'}\n"
                              "allow_plaintext_reads = yes\n")
    assert config.prefixes == (("secure-bucket", b""), ("logs", b"private/"), ("logs", b"x"))
    assert config.keys.current == "2026-12"
    assert dict(config.keys.keys) == {"2026-12": NEW_KEY, "2026-06": OLD_KEY}
    assert config.allow_plaintext_reads is True


def test_covers_and_key_prefixes(keys: Path) -> None:
    config = encryption(keys, "prefixes = secure-bucket, logs/private/, logs/\u00e9t\u00e9/\n"
                              "key_files = 2026-12.key\n")
    assert config.allow_plaintext_reads is False
    assert config.covers("secure-bucket", b"")
    assert config.covers("secure-bucket", b"any/key")
    assert config.covers("logs", b"private/a")
    assert config.covers("logs", "\u00e9t\u00e9/a".encode())
    assert not config.covers("logs", b"private")
    assert not config.covers("logs", b"public/a")
    assert not config.covers("secure-bucket2", b"a")
    assert not config.covers("Secure-bucket", b"a")
    assert not config.covers(None, b"a")
    assert config.key_prefixes("logs") == (b"private/", "\u00e9t\u00e9/".encode())
    assert config.key_prefixes("secure-bucket") == (b"",)
    assert config.key_prefixes("other") == ()
    assert config.key_prefixes(None) == ()


@pytest.mark.parametrize(
    "section, message",
    [
        ("key_files = 2026-12.key\n", "[encryption] prefixes: is required"),
        ("prefixes =\nkey_files = 2026-12.key\n", "[encryption] prefixes: is required"),
        ("prefixes = , ,\nkey_files = 2026-12.key\n", "[encryption] prefixes: names no bucket"),
        ("prefixes = logs/my dir\nkey_files = 2026-12.key\n",
         "[encryption] prefixes: 'logs/my dir' is not BUCKET[/PREFIX]"),
        ("prefixes = /logs\nkey_files = 2026-12.key\n",
         "[encryption] prefixes: '/logs' is not BUCKET[/PREFIX]"),
        ("prefixes = logs\n", "[encryption] key_files: is required"),
        ("prefixes = logs\nkey_files = ,\n", "[encryption] key_files: names no key file"),
        ("prefixes = logs\nkey_files = 2026-12.key\nallow_plaintext_reads = maybe\n",
         "[encryption] allow_plaintext_reads: must be yes or no"),
        ("prefixes = logs\nkey_files = 2026-12.key\nkey_file = x\n", "[encryption] key_file"),
    ],
)
def test_errors(keys: Path, section: str, message: str) -> None:
    assert str(error(keys, section)).startswith(message)


def test_missing_key_file(keys: Path) -> None:
    e = error(keys, "prefixes = logs\nkey_files = 2026-12.key, absent.key\n")
    path = os.path.join(str(keys), "absent.key")
    assert str(e) == f"[encryption] key_files: cannot read {path}: No such file or directory"
    assert (e.section, e.key) == ("encryption", "key_files")


def test_unreadable_key_file(keys: Path) -> None:
    (keys / "adir.key").mkdir()  # reading a directory fails even as root
    e = error(keys, "prefixes = logs\nkey_files = adir.key\n")
    path = os.path.join(str(keys), "adir.key")
    assert str(e) == f"[encryption] key_files: cannot read {path}: Is a directory"


def test_key_file_open_to_others(keys: Path) -> None:
    (keys / "2026-06.key").chmod(0o644)
    e = error(keys, "prefixes = logs\nkey_files = 2026-12.key, 2026-06.key\n")
    assert str(e).startswith("[encryption] key_files: ")
    assert f"chmod 600 {keys / '2026-06.key'}" in str(e)


def test_key_file_not_a_key(keys: Path) -> None:
    (keys / "short.key").write_text("c2hvcnQ=\n")
    (keys / "short.key").chmod(0o600)
    e = error(keys, "prefixes = logs\nkey_files = short.key\n")
    assert str(e).startswith(f"[encryption] key_files: {keys / 'short.key'} is not a 32-byte key")
    assert "c2hvcnQ" not in str(e)
