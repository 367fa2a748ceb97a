# -*- test-case-name: tests.unit.test_tls_config -*-
"""The client certificate a request arrived with, and the binding check.

A client key with a ``certificate_subject`` may only be used over a TLS
connection whose (CA-verified) client certificate has exactly that subject:
a stolen key alone is not enough.  Checked right after the signature, before
anything reaches the upstream.
"""

from __future__ import annotations

from typing import Any

from s3relay.listen.tls import Subject, format_subject
from s3relay.s3.errors import S3Error


def peer_subject(transport: Any) -> Subject | None:
    """The subject of the verified peer certificate on ``transport``, or None.

    The handshake already checked the certificate against ``tls_client_ca``:
    OpenSSL only completes it for a certificate that verifies.
    """
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return None
    try:
        certificate = get()
    except Exception:  # not a TLS connection, or no handshake yet
        return None
    if certificate is None:
        return None
    subject = certificate.to_cryptography().subject
    return tuple(
        sorted(
            (attribute.rfc4514_attribute_name.upper(), _text(attribute.value))
            for attribute in subject
        )
    )


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def check_binding(client: str, expected: Subject | None, transport: Any) -> None:
    """Raise AccessDenied unless the connection's certificate is ``client``'s."""
    if expected is None:
        return
    actual = peer_subject(transport)
    if actual == expected:
        return
    reason = (
        f"client {client} is bound to a certificate and the connection has none"
        if actual is None
        else f"client {client} is bound to {format_subject(expected)}, "
        f"the connection's certificate is {format_subject(actual)}"
    )
    raise S3Error("AccessDenied", "Access Denied", 403, reason)
