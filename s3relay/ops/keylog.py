# -*- test-case-name: tests.integration.test_log_privacy -*-
"""How object keys appear in access records: ``[server] log_keys``.

Object names can be personal data (``invoices/jane.doe@example.com.pdf``).
``log_keys = hash`` writes HMAC-SHA256(salt, key) instead: equal keys give
equal hashes, so an operator can still follow one object through the log,
but cannot read or (without the salt) guess names.  The salt is
``log_key_salt`` (or ``log_key_salt_file``) when given, which keeps hashes
stable across restarts so logs from different days correlate; without it,
a random salt per process, so hashes cannot be linked across restarts at
all (the private choice).  ``log_keys = no`` leaves the field out.
Pure: no Twisted.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Callable

from s3relay.ini import ConfigError, Section

MODES = ("yes", "hash", "no")


@dataclass(frozen=True)
class KeyLogging:
    """The ``log_keys`` choice and its configured salt (None: per process)."""

    mode: str = "yes"
    salt: bytes | None = field(default=None, repr=False)

    def key_text(self, process_salt: bytes) -> Callable[[bytes], str] | None:
        """How a key appears in the access record; None: it does not.

        ``process_salt`` is the relay process's random salt, used unless a
        salt is configured (it outlives reloads: hashes stay comparable).
        """
        if self.mode == "no":
            return None
        if self.mode == "yes":
            return plain_key
        salt = self.salt if self.salt is not None else process_salt
        return lambda key: "hmac-sha256:" + hmac.new(salt, key, hashlib.sha256).hexdigest()


def plain_key(key: bytes) -> str:
    return key.decode("utf-8", "replace")


def parse_key_logging(section: Section) -> KeyLogging:
    """``log_keys`` and ``log_key_salt``/``log_key_salt_file`` from ``[server]``."""
    mode = section.get("log_keys", "yes")
    if mode not in MODES:
        raise ConfigError(section.name, "log_keys", "must be yes, hash or no")
    has_salt = section.optional("log_key_salt") or section.optional("log_key_salt_file")
    if not has_salt:
        return KeyLogging(mode)
    salt = section.secret("log_key_salt")
    if mode != "hash":
        raise ConfigError(section.name, "log_key_salt", "only with log_keys = hash")
    if len(salt) < 16:
        raise ConfigError(section.name, "log_key_salt", "must be at least 16 characters")
    return KeyLogging(mode, salt.encode("utf-8"))
