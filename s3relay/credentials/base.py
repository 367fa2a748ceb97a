# -*- test-case-name: tests.unit.test_static_credentials,tests.unit.test_provider -*-
"""What every credential set's provider answers, static or fetched.

The request path and readiness ask one kind of object per credential set,
whatever its ``source``: ``require()`` for the keys to sign with (or the
503 that fails the request closed), ``check()`` for readiness.  A static
set (``s3relay.credentials.static``) and a fetched one
(``s3relay.credentials.provider``) differ only in how they get there, so
``s3relay.credentials.service`` holds one of these per set and has a single
credential path.

Pure: no ``twisted.internet``.
"""

from __future__ import annotations

import abc

from s3relay.credentials.answers import Fetched
from s3relay.credentials.spec import CredentialSet
from s3relay.s3.errors import S3Error


def unavailable(name: str) -> S3Error:
    """The 503 a request gets when credential set ``name`` has no valid keys."""
    return S3Error(
        "ServiceUnavailable",
        "The relay has no valid upstream credentials right now; please retry.",
        503,
        f"credential set {name} has no valid credentials",
    )


class SetProvider(abc.ABC):
    """The current credentials of one credential set."""

    name: str

    @abc.abstractmethod
    def start(self) -> None:
        """Begin keeping the credentials current (the service started)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop every timer and fetch (the service stopped, or a reload replaced it)."""

    @abc.abstractmethod
    def current(self) -> CredentialSet | None:
        """Valid credentials now, or None.  Never waits, never I/O."""

    @abc.abstractmethod
    def valid(self) -> Fetched | None:
        """The credentials last had, if still good to sign with (a successor asks)."""

    @abc.abstractmethod
    def kick(self) -> None:
        """Look for new credentials soon (a reload kept this set unchanged)."""

    @abc.abstractmethod
    def check(self) -> tuple[bool, str]:
        """Readiness: are there valid credentials, and a short word on them.  Never I/O."""

    def require(self) -> CredentialSet:
        """The credentials to sign a request with now, or the 503 ``S3Error``."""
        credentials = self.current()
        if credentials is None:
            raise unavailable(self.name)
        return credentials
