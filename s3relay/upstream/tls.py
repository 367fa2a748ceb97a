# -*- test-case-name: tests.integration.test_upstream_tls -*-
"""How the relay checks the upstream's TLS certificate.

By default against the system's trust store, with the hostname checked by
service-identity (Twisted's ``optionsForClientTLS``).  ``ca_file`` replaces
the trust store with an operator's CA bundle, the usual case for an on-prem
S3-compatible store.  ``insecure`` turns checking off; the relay says so
loudly at startup and in ``/readyz``.
"""

from __future__ import annotations

import re
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def load_bundle(pem: bytes) -> Any:
    """A trust root from the certificates in a PEM bundle."""
    certificates = [Certificate.loadPEM(block) for block in _PEM.findall(pem)]
    if not certificates:
        raise ValueError("no PEM certificate in it")
    return trustRootFromCertificates(certificates)


@implementer(IPolicyForHTTPS)
class UpstreamTLS:
    def __init__(self, ca_pem: bytes | None = None, insecure: bool = False) -> None:
        self._trust = load_bundle(ca_pem) if ca_pem else None
        self._insecure = insecure

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        name = hostname.decode("ascii")
        if self._insecure:
            return _Unverified(name)
        return optionsForClientTLS(name, trustRoot=self._trust)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS with no certificate check at all (``insecure = yes``)."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname.encode("idna")
        self._options = CertificateOptions(verify=False)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        connection.set_tlsext_host_name(self._hostname)
        return connection
