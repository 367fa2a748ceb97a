# -*- test-case-name: tests.integration.test_tls,tests.integration.test_reload_tls -*-
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

The TLS context is held by a ``ServerContext`` that a reload swaps
(``ListenerTls``): certificates renewed every few weeks (ACME) need no
restart, and connections already open keep the context they started with.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from OpenSSL import SSL, crypto
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from s3relay.compat import TLSProtocol, handshake_done, parse_server, tls_failure_reason
from s3relay.config import ConfigError, ServerConfig
from s3relay.listen.tls import CertificateFacts, TlsSettings

log = Logger(namespace="s3relay")

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
    with _config_errors(section, description):
        plain = _plain_endpoint(reactor, description)
        options = _options(description, settings)
    if options is None:
        return plain
    return TLSServerEndpoint(plain, ServerContext(options), handshake_failed or (lambda: None))


def tls_options(
    description: str, tls: TlsSettings, section: str = "server"
) -> CertificateOptions | None:
    """The TLS options a listener on ``description`` gets (None: plain).

    Reads an ``ssl:`` description's key and certificate files again.  Raises
    ConfigError as ``listen_endpoint`` does.
    """
    with _config_errors(section, description):
        return _options(description, tls)


def check_listener(
    reactor: Any, description: str, section: str = "server", tls: TlsSettings | None = None
) -> list[str]:
    """Check ``description`` and its TLS files as ``listen_endpoint`` would.

    Returns warnings (a served certificate that is expired or not valid
    yet).  ``systemd:`` sockets are handed only to the service's main
    process, not to ``ExecStartPre=s3relay --check-config``: for those only
    the TLS side is checked here (startup reports a missing socket).
    """
    if _scheme(description) == "systemd":
        description = "tcp:0:interface=127.0.0.1"
    endpoint = listen_endpoint(reactor, description, section, tls)
    if not isinstance(endpoint, TLSServerEndpoint):
        return []
    facts = endpoint.context.facts
    problem = facts.validity_problem(_utc(reactor.seconds()))
    return [f"certificate {facts.describe()}: {problem}"] if problem else []


def _scheme(description: str) -> str:
    return description.split(":", 1)[0].strip().lower()


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


@contextmanager
def _config_errors(section: str, description: str) -> Iterator[None]:
    """What goes wrong building a listener, as the ConfigError an operator reads."""
    try:
        yield
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
    except VerifyError as e:  # an ssl: description's key is not the certificate's
        raise ConfigError(section, "listen", f"privateKey: {e}") from None
    except (OSError, ValueError, TypeError, KeyError, SSL.Error, crypto.Error) as e:
        raise ConfigError(section, "listen", str(e) or type(e).__name__) from None


#: Connections the kernel queues for accept() unless the description says
#: ``backlog=``.  Twisted's default, 50, is too few for a burst of clients:
#: with SYN cookies on, connections past it are dropped after the client saw
#: them open, and its first request meets a reset (tests/integration/test_e2e_load.py).
#: The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 1024
_BACKLOG_SCHEMES = ("tcp", "tcp6", "ssl", "unix")


def _with_backlog(description: str) -> str:
    if _scheme(description) in _BACKLOG_SCHEMES and not re.search(r"(?:^|:)backlog=",
                                                                    description):
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


def _plain_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """The endpoint without TLS: ``ssl:`` becomes TCP on the same port and interface."""
    description = _with_backlog(description)
    if _scheme(description) != "ssl":
        return endpoints.serverFromString(reactor, description)
    (port, _, _), kwargs = parse_server(description)
    return endpoints.TCP4ServerEndpoint(reactor, port, **kwargs)


def _options(description: str, tls: TlsSettings) -> CertificateOptions | None:
    if _scheme(description) == "ssl":
        (_, _, parsed), _ = parse_server(description)
        return certificate_options(
            tls, parsed.privateKey, parsed.certificate, parsed.extraCertChain,
            parsed.dhParameters,
        )
    if tls.certificate_pem is None or tls.private_key_pem is None:
        return None
    certificates = _certificates(tls.certificate_pem, "tls_certificate")
    key = crypto.load_privatekey(crypto.FILETYPE_PEM, tls.private_key_pem)
    return certificate_options(tls, key, certificates[0], certificates[1:], None)


def _certificates(pem: bytes, key: str) -> list[Any]:
    """Every certificate of a PEM file; ConfigError unless all are complete.

    A file caught half-written (a renewal in progress when SIGHUP came)
    must not load as its first few certificates: a chain without its
    intermediate, or an empty client CA list that refuses every client.
    """
    blocks = _PEM_CERT.findall(pem)
    if not blocks or len(blocks) != pem.count(b"-----BEGIN CERTIFICATE-----"):
        raise ConfigError("server", key, "holds no complete PEM certificate (truncated?)")
    return [crypto.load_certificate(crypto.FILETYPE_PEM, block) for block in blocks]


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
        authorities = _certificates(tls.client_ca_pem, "tls_client_ca")
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


def certificate_facts(certificate: Any) -> CertificateFacts:
    """Subject, serial and validity of a pyOpenSSL certificate, for log lines."""
    leaf = certificate.to_cryptography()
    not_before = getattr(leaf, "not_valid_before_utc", None)
    not_after = getattr(leaf, "not_valid_after_utc", None)
    if not_before is None or not_after is None:  # cryptography < 42 (bookworm): naive UTC
        not_before = leaf.not_valid_before.replace(tzinfo=timezone.utc)
        not_after = leaf.not_valid_after.replace(tzinfo=timezone.utc)
    return CertificateFacts(leaf.subject.rfc4514_string(), leaf.serial_number, not_before,
                            not_after)


@implementer(IOpenSSLServerConnectionCreator)
class ServerContext:
    """The TLS context new client connections get; a reload replaces it.

    Each connection takes the context current when it is accepted, and its
    ``SSL.Connection`` holds on to it: open connections (keep-alive, a long
    upload) go on with the certificate and client CA they started with,
    the next accepted connection gets the new ones.  Swapping is one
    attribute assignment in the reactor thread, so it is atomic for new
    connections.
    """

    def __init__(self, options: CertificateOptions) -> None:
        #: Built and checked (key matches certificate) before it gets here.
        self.options = options
        #: The served certificate, for log lines and --check-config.
        self.facts = certificate_facts(options.certificate)

    def replace(self, options: CertificateOptions) -> None:
        self.options = options
        self.facts = certificate_facts(options.certificate)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.options.getContext(), None)


class ListenerTls:
    """The running client listener's TLS, as SIGHUP may change it.

    The listener itself (address, port, TLS on or off) stays as it started:
    a new ``listen`` takes a restart (the Reloader says so).  What a reload
    re-reads is the TLS context: certificate chain and key (from the
    running ``ssl:`` description's files, or the new ``tls_certificate`` /
    ``tls_private_key``), client CA and options from the new ``[server]``.
    """

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        now: Callable[[], float],
        expiry: Callable[[float], object] = lambda unix_time: None,
    ) -> None:
        #: The description the listener was started from (reloads keep it).
        self._description = description
        #: None for a listener without TLS.
        self._context = endpoint.context if isinstance(endpoint, TLSServerEndpoint) else None
        #: Seconds since the epoch (reactor.seconds): for the validity check.
        self._now = now
        #: Told the served certificate's notAfter (Unix time), for the metric.
        self._expiry = expiry

    def log_served(self) -> None:
        """Log which certificate is served, and loudly if clients will refuse it."""
        if self._context is None:
            return
        facts = self._context.facts
        log.info("client TLS certificate {certificate}", certificate=facts.describe())
        self._served(facts)

    def prepare(self, server: ServerConfig) -> Callable[[], None]:
        """Build the TLS context ``server`` describes; return what swaps it in.

        Raises ConfigError (unreadable files, a key that does not match the
        certificate, unusable ciphers): the reload is refused and the
        running context stays.  An expired certificate is served, with a
        loud warning.
        """
        options = tls_options(self._description, server.tls)
        context = self._context
        if context is None or options is None:
            if (context is None) != (options is None) and server.listen == self._description:
                log.warn(
                    "reload: switching the listener's TLS {what} takes a restart",
                    what="on" if options is not None else "off",
                )
            return lambda: None
        facts = certificate_facts(options.certificate)

        def swap() -> None:
            before = context.facts
            context.replace(options)
            log.info(
                "reload: client TLS certificate {certificate}{change}",
                certificate=facts.describe(),
                change="" if before.serial != facts.serial else " (unchanged)",
            )
            self._served(facts)

        return swap

    def _served(self, facts: CertificateFacts) -> None:
        self._expiry(facts.not_after.timestamp())
        problem = facts.validity_problem(_utc(self._now()))
        if problem is not None:
            log.warn(
                "client TLS certificate {certificate}: {problem}",
                certificate=facts.describe(),
                problem=problem,
            )


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """Any stream server endpoint with TLS layered on its connections."""

    def __init__(
        self,
        wrapped: IStreamServerEndpoint,
        context: ServerContext,
        handshake_failed: Callable[[], object],
    ) -> None:
        self._wrapped = wrapped
        #: Swapped by ``ListenerTls`` on reload.
        self.context = context
        self._handshake_failed = handshake_failed

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        factory = _CountingTLSFactory(self.context, protocolFactory, self._handshake_failed)
        return self._wrapped.listen(factory)


class _CountingTLSProtocol(TLSProtocol):
    """Reports a connection whose TLS handshake failed (not a plain close)."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        effective = tls_failure_reason(self) or reason
        failed = not handshake_done(self) and isinstance(effective.value, SSL.Error)
        super().connectionLost(reason)
        if failed:
            factory: Any = self.factory
            factory.handshake_failed()


class _CountingTLSFactory(TLSMemoryBIOFactory):
    protocol = _CountingTLSProtocol

    def __init__(
        self,
        context: ServerContext,
        wrapped: IProtocolFactory,
        handshake_failed: Callable[[], object],
    ) -> None:
        super().__init__(context, False, wrapped)
        #: Called once per failed handshake (RelayMetrics.tls_handshake_failed).
        self.handshake_failed = handshake_failed
