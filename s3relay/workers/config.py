# -*- test-case-name: tests.integration.test_workers -*-
"""``[server] workers``: how many reactor processes serve the listener.

One Twisted reactor uses one core.  With ``workers = N`` (N > 1) the process
systemd starts becomes a supervisor that binds the listener and runs N
worker processes accepting on that same socket (``workers``).  Pure: no
Twisted.
"""

from __future__ import annotations

from s3relay.ini import ConfigError, Section

#: More would be a typo: each worker is a whole relay (~50 MiB RSS).
MAX_WORKERS = 64

#: Listener kinds whose socket a worker can adopt (TCP, IPv4 or IPv6).
SHAREABLE = ("tcp", "tcp6", "ssl", "systemd")


def parse_workers(section: Section, listen: str) -> int:
    """The ``workers`` key of ``[server]`` (default 1: one process, no supervisor)."""
    workers = int(section.convert("workers", "1", int))
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(section.name, "workers", f"must be between 1 and {MAX_WORKERS}")
    scheme = listen.split(":", 1)[0].strip().lower()
    if workers > 1 and scheme not in SHAREABLE:
        raise ConfigError(
            section.name, "workers", f"needs a tcp:, ssl: or systemd: listener, not {scheme}:"
        )
    return workers
