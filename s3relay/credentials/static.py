# -*- test-case-name: tests.unit.test_static_credentials -*-
"""Static credential sets (``source = static``) and ``credentials = self``.

A static set is a provider like the fetched ones, so that requests and
readiness have one credential path (``s3relay.credentials.service``).  Its
keys were read from the config (and its secret files) at load, so it is
always valid, and it never refreshes: no timer, no thread, no I/O.  A
SIGHUP reload re-reads the secret files; a set whose keys changed gets a new
``StaticProvider``.

``own_key`` is what a client with ``credentials = self`` re-signs with: its
own key pair, which the upstream must know too.

Pure: no ``twisted.internet``.
"""

from __future__ import annotations

from s3relay.config import ClientKey
from s3relay.credentials.answers import Fetched
from s3relay.credentials.base import SetProvider
from s3relay.credentials.spec import CredentialSet, StaticSpec


def own_key(client: ClientKey) -> CredentialSet:
    """The credentials of a ``credentials = self`` client: its own key pair."""
    return CredentialSet(f"client:{client.name}", client.access_key_id, client.secret_access_key)


class StaticProvider(SetProvider):
    """The keys of one static credential set, as the config holds them."""

    def __init__(self, spec: StaticSpec) -> None:
        self.name = spec.name
        self._fetched = Fetched(spec.credentials, None)

    def start(self) -> None:
        """Nothing to keep current."""

    def stop(self) -> None:
        """Nothing running."""

    def current(self) -> CredentialSet:
        return self._fetched.credentials

    def valid(self) -> Fetched:
        return self._fetched

    def kick(self) -> None:
        """Nothing to look up: a reload that changed the keys builds a new provider."""

    def check(self) -> tuple[bool, str]:
        return True, "static"
