# -*- test-case-name: tests.test_tls -*-
"""Client-facing listeners from Twisted endpoint strings, TLS from ``[server]``.

Any server endpoint string works (``tcp:``, ``systemd:``, ``unix:``...).
``ssl:`` is rebuilt as a plain TCP endpoint wrapped in our own TLS layer
around the same key and certificates, so that every listener gets the same
options: ALPN ``http/1.1`` (with no ALPN protocols configured, current
Twisted/pyOpenSSL select an empty protocol and every ALPN-offering client
fails the handshake, DESIGN.md §6), the ``tls_min_version`` floor, the
``tls_ciphers`` list and, with ``tls_client_ca``, client certificates
verified by OpenSSL during the handshake.  Any other endpoint (a socket
inherited from systemd) is wrapped the same way when ``tls_certificate`` and
``tls_private_key`` are given.  Failed handshakes are counted.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable

from OpenSSL import SSL, crypto
from twisted.internet import endpoints
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.protocols import tls as _tls
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from .config import ConfigError
from .tls import TlsSettings

_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def listen_endpoint(
    reactor: Any,
    description: str,
    section: str = "server",
    tls: TlsSettings | None = None,
    handshake_failed: Callable[[], object] | None = None,
) -> IStreamServerEndpoint:
    """The server endpoint ``description`` names, with TLS as ``tls`` says.

    Raises ConfigError for a description Twisted cannot parse, key and
    certificate files that cannot be loaded, or a cipher list OpenSSL
    cannot use.
    """
    settings = tls or TlsSettings()
    try:
        return _endpoint(reactor, description, settings, handshake_failed or (lambda: None))
    except ConfigError:
        raise
    except IndexError:
        if _scheme(description) != "systemd":
            raise ConfigError(section, "listen", "cannot be parsed") from None
        raise ConfigError(
            section,
            "listen",
            "no such socket inherited from systemd (is s3relay.socket started?)",
        ) from None
    except (OSError, ValueError, TypeError, KeyError, SSL.Error, crypto.Error) as e:
        raise ConfigError(section, "listen", str(e) or type(e).__name__) from None


def check_listener(
    reactor: Any, description: str, section: str = "server", tls: TlsSettings | None = None
) -> None:
    """Check ``description`` and its TLS files as ``listen_endpoint`` would.

    ``systemd:`` sockets are handed only to the service's main process, not
    to ``ExecStartPre=s3relay --check-config``: for those only the TLS side
    is checked here (startup reports a missing socket).
    """
    if _scheme(description) == "systemd":
        description = "tcp:0:interface=127.0.0.1"
    listen_endpoint(reactor, description, section, tls)


def _scheme(description: str) -> str:
    return description.split(":", 1)[0].strip().lower()


def _endpoint(
    reactor: Any, description: str, tls: TlsSettings, failed: Callable[[], object]
) -> IStreamServerEndpoint:
    if _scheme(description) != "ssl":
        plain = endpoints.serverFromString(reactor, description)
        if tls.certificate_pem is None or tls.private_key_pem is None:
            return plain
        certificates = [
            crypto.load_certificate(crypto.FILETYPE_PEM, pem)
            for pem in _PEM_CERT.findall(tls.certificate_pem)
        ]
        if not certificates:
            raise ConfigError("server", "tls_certificate", "holds no PEM certificate")
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, tls.private_key_pem)
        options = certificate_options(tls, key, certificates[0], certificates[1:], None)
        return TLSServerEndpoint(plain, options, failed)
    _, (port, _, parsed), kwargs = endpoints._parseServer(description, None)
    options = certificate_options(
        tls, parsed.privateKey, parsed.certificate, parsed.extraCertChain, parsed.dhParameters
    )
    return TLSServerEndpoint(endpoints.TCP4ServerEndpoint(reactor, port, **kwargs), options, failed)


def certificate_options(
    tls: TlsSettings,
    key: Any,
    certificate: Any,
    chain: list[Any] | None,
    dh_parameters: Any,
) -> CertificateOptions:
    """pyOpenSSL context options for the client-facing side."""
    ciphers = AcceptableCiphers.fromOpenSSLCipherString(tls.ciphers)
    verify: dict[str, Any] = {}
    if tls.client_ca_pem is not None:
        authorities = [
            crypto.load_certificate(crypto.FILETYPE_PEM, pem)
            for pem in _PEM_CERT.findall(tls.client_ca_pem)
        ]
        verify = dict(
            verify=True,
            caCerts=authorities,
            requireCertificate=tls.client_auth == "required",
        )
    try:
        options = CertificateOptions(
            privateKey=key,
            certificate=certificate,
            extraCertChain=chain or None,
            dhParameters=dh_parameters,
            acceptableProtocols=[b"http/1.1"],
            raiseMinimumTo=_VERSIONS[tls.min_version],
            acceptableCiphers=ciphers,
            **verify,
        )
    except ValueError as e:  # "None of the specified ciphers are supported"
        raise ConfigError("server", "tls_ciphers", f"{tls.ciphers!r}: {e}") from None
    try:
        options.getContext()  # now, not at the first connection: a key that does not match
    except SSL.Error as e:
        raise ConfigError("server", "tls_private_key", f"unusable: {e}") from None
    return options


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """Any stream server endpoint with TLS layered on its connections."""

    def __init__(
        self,
        wrapped: IStreamServerEndpoint,
        options: CertificateOptions,
        handshake_failed: Callable[[], object],
    ) -> None:
        self._wrapped = wrapped
        self._options = options
        self._handshake_failed = handshake_failed

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        factory = _CountingTLSFactory(self._options, protocolFactory, self._handshake_failed)
        return self._wrapped.listen(factory)


if TYPE_CHECKING:
    _TLSProtocol = TLSMemoryBIOProtocol
else:  # write aggregation where Twisted has it (not in bookworm's 22.4)
    _TLSProtocol = getattr(_tls, "BufferingTLSTransport", TLSMemoryBIOProtocol)


class _CountingTLSProtocol(_TLSProtocol):
    """Reports a connection whose TLS handshake failed (not a plain close)."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        effective = getattr(self, "_reason", None) or reason
        failed = not getattr(self, "_handshakeDone", True) and isinstance(
            effective.value, SSL.Error
        )
        super().connectionLost(reason)
        if failed:
            factory: Any = self.factory
            factory.handshake_failed()


class _CountingTLSFactory(TLSMemoryBIOFactory):
    protocol = _CountingTLSProtocol

    def __init__(
        self,
        options: CertificateOptions,
        wrapped: IProtocolFactory,
        handshake_failed: Callable[[], object],
    ) -> None:
        super().__init__(options, False, wrapped)
        #: Called once per failed handshake (RelayMetrics.tls_handshake_failed).
        self.handshake_failed = handshake_failed
