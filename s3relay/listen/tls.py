# -*- test-case-name: tests.unit.test_tls_config -*-
"""Client-facing TLS settings from ``[server]``, and certificate-subject bindings.

Pure: parsing and comparison only.  ``listen`` turns ``TlsSettings`` into a
pyOpenSSL context; ``client_cert`` reads a connection's peer certificate.

A binding (``[client:NAME] certificate_subject = CN=alice,O=Example``) is the
*whole* subject of the client certificate, attributes in any order, names as
RFC 4514 spells them (CN, O, OU, C, L, ST, STREET, DC, UID; any other as its
dotted OID, e.g. ``1.2.840.113549.1.9.1`` for emailAddress), values exact: a
certificate with an extra attribute (``OU=contractors``) does not match.
Matching only the CN would let any certificate the CA issued with that CN,
for whatever purpose, stand in for the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from s3relay.ini import ConfigError, Section

#: Mozilla "intermediate" (server-side TLS guidelines v5.7), for TLS 1.2.
#: TLS 1.3 suites are not set by a cipher string: OpenSSL's defaults apply.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
MIN_VERSIONS = ("1.2", "1.3")
#: A served certificate closer than this to its end is warned about (ACME
#: clients renew 30 days ahead: one still this close means renewal failed).
EXPIRY_WARNING = timedelta(days=7)
CLIENT_AUTH = ("optional", "required")

#: A certificate subject: (attribute short name upper-cased, value) pairs, sorted.
Subject = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TlsSettings:
    """How the client-facing listener does TLS (when it does TLS at all)."""

    #: "1.2" or "1.3": older protocol versions are refused at the handshake.
    min_version: str = "1.2"
    #: OpenSSL cipher string for TLS 1.2.
    ciphers: str = INTERMEDIATE_CIPHERS
    #: PEM private key and certificate chain for a listener that is not ``ssl:``
    #: (``systemd:``, ``tcp:``): present means the listener is wrapped in TLS.
    private_key_pem: bytes | None = field(default=None, repr=False)
    certificate_pem: bytes | None = None
    #: PEM CA bundle client certificates must chain to (None: no mTLS).
    client_ca_pem: bytes | None = None
    #: "optional" or "required" (only with ``client_ca_pem``).
    client_auth: str = "required"

    @property
    def verifies_clients(self) -> bool:
        return self.client_ca_pem is not None


@dataclass(frozen=True)
class CertificateFacts:
    """What the log says about a served certificate (all public: it is sent to every client).

    An operator who renewed a certificate wants to see, at startup and after
    each reload, which one is served now and until when.
    """

    subject: str
    serial: int
    not_before: datetime
    not_after: datetime

    def describe(self) -> str:
        return (
            f"{self.subject} serial {self.serial:x}, "
            f"valid until {self.not_after:%Y-%m-%d %H:%M:%S} UTC"
        )

    def validity_problem(self, now: datetime) -> str | None:
        """Why clients will refuse this certificate at ``now`` (timezone-aware), or soon will.

        Served anyway: refusing it would not help (the listener would keep an
        older, probably also expired one or not start at all), so this is a
        loud warning, not an error.
        """
        if now >= self.not_after:
            return (
                f"EXPIRED on {self.not_after:%Y-%m-%d %H:%M:%S} UTC: clients that check "
                "it refuse every connection; renew it and reload"
            )
        if now < self.not_before:
            return f"NOT VALID before {self.not_before:%Y-%m-%d %H:%M:%S} UTC"
        if self.not_after - now < EXPIRY_WARNING:
            return f"expires in {(self.not_after - now).days} days: renew it and reload"
        return None


def _pem(section: Section, key: str, marker: bytes, what: str) -> bytes | None:
    path = section.optional(key)
    if path is None:
        return None
    data = section.read_file(key, path)
    if marker not in data:
        raise ConfigError(section.name, key, f"{path} holds no PEM {what}")
    return data


def parse_tls(section: Section, listen: str) -> TlsSettings:
    """The ``tls_*`` keys of ``[server]``; ``listen`` tells whether TLS is on."""
    min_version = section.get("tls_min_version", "1.2")
    if min_version not in MIN_VERSIONS:
        raise ConfigError(section.name, "tls_min_version", "must be 1.2 or 1.3")
    ciphers = section.get("tls_ciphers", INTERMEDIATE_CIPHERS).strip()
    certificate = _pem(section, "tls_certificate", b"-----BEGIN CERTIFICATE-----", "certificate")
    private_key = _pem(section, "tls_private_key", b"PRIVATE KEY-----", "private key")
    if (certificate is None) != (private_key is None):
        raise ConfigError(section.name, "tls_certificate", "give tls_private_key with it")
    is_ssl = listen.split(":", 1)[0].strip().lower() == "ssl"
    if certificate is not None and is_ssl:
        raise ConfigError(
            section.name, "tls_certificate", "an ssl: listener has its certKey and privateKey"
        )
    client_ca = _pem(section, "tls_client_ca", b"-----BEGIN CERTIFICATE-----", "certificate")
    client_auth = section.optional("tls_client_auth")
    if client_auth is not None and client_ca is None:
        raise ConfigError(section.name, "tls_client_auth", "needs tls_client_ca")
    if client_auth is not None and client_auth not in CLIENT_AUTH:
        raise ConfigError(section.name, "tls_client_auth", "must be optional or required")
    tls_on = is_ssl or certificate is not None
    given = [
        key
        for key in ("tls_min_version", "tls_ciphers", "tls_client_ca")
        if section.optional(key) is not None
    ]
    if given and not tls_on:
        raise ConfigError(
            section.name,
            given[0],
            "needs a TLS listener (listen = ssl:..., or tls_certificate and tls_private_key)",
        )
    return TlsSettings(
        min_version=min_version,
        ciphers=ciphers,
        private_key_pem=private_key,
        certificate_pem=certificate,
        client_ca_pem=client_ca,
        client_auth=client_auth or "required",
    )


def parse_subject(text: str) -> Subject:
    """``CN=alice,O=Example`` as sorted (NAME, value) pairs; ``\\,`` is a literal comma.

    Raises ValueError with a message fit for a ConfigError.
    """
    parts: list[str] = []
    current = ""
    escaped = False
    for char in text:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    if escaped:
        raise ValueError("ends with a lone backslash")
    parts.append(current)
    pairs: list[tuple[str, str]] = []
    for part in parts:
        name, eq, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name or not value:
            raise ValueError(f"{part.strip()!r} is not NAME=value (e.g. CN=alice,O=Example)")
        if not name.replace(".", "").isalnum() or not name.isascii():
            raise ValueError(f"{name!r} is not an attribute name")
        pairs.append((name.upper(), value))
    return tuple(sorted(pairs))


def parse_binding(section: Section, tls: TlsSettings) -> Subject | None:
    """A client section's ``certificate_subject``, checked against the server's mTLS."""
    text = section.optional("certificate_subject")
    if text is None:
        return None
    try:
        subject = parse_subject(text)
    except ValueError as e:
        raise ConfigError(section.name, "certificate_subject", str(e)) from None
    if not tls.verifies_clients:
        raise ConfigError(section.name, "certificate_subject", "needs [server] tls_client_ca")
    return subject


def format_subject(subject: Subject) -> str:
    """A subject for a log line (names and values, nothing secret)."""
    return ",".join(f"{name}={value}" for name, value in subject)
