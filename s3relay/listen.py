# -*- test-case-name: tests.test_tls -*-
"""Client-facing listeners from Twisted endpoint strings.

Any server endpoint string works (``tcp:``, ``systemd:``, ``unix:``...).
``ssl:`` is rebuilt around the same key and certificates with ALPN
``http/1.1`` and TLS 1.2 as the floor: with no ALPN protocols configured,
current Twisted/pyOpenSSL select an empty protocol and every ALPN-offering
client (curl, urllib3, Go, Node) fails the handshake (DESIGN.md §6).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.ssl import CertificateOptions, TLSVersion

from .config import ConfigError


def listen_endpoint(
    reactor: Any, description: str, section: str = "server"
) -> IStreamServerEndpoint:
    """The server endpoint ``description`` names, TLS tuned for HTTP/1.1.

    Raises ConfigError for a description Twisted cannot parse or whose
    key and certificate files cannot be loaded.
    """
    try:
        return _endpoint(reactor, description)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(section, "listen", str(e)) from None


def _endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    if description.split(":", 1)[0].lower() != "ssl":
        return endpoints.serverFromString(reactor, description)
    _, (port, _, parsed), kwargs = endpoints._parseServer(description, None)
    options = CertificateOptions(
        privateKey=parsed.privateKey,
        certificate=parsed.certificate,
        extraCertChain=parsed.extraCertChain,
        dhParameters=parsed.dhParameters,
        acceptableProtocols=[b"http/1.1"],
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
    return endpoints.SSL4ServerEndpoint(reactor, port, options, **kwargs)
