# -*- test-case-name: tests.unit.test_provider -*-
"""Reading what credential sources answer: STS XML, Vault and OAuth2 JSON.

Every parser returns values or raises ``SourceError`` with a message safe to
log: it names the field or the error code, never a body (a body may echo a
token or a key).  Pure: no ``twisted.internet``.
"""

from __future__ import annotations

import calendar
import datetime
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from s3relay.credentials.spec import CredentialSet


class SourceError(Exception):
    """A credential source failed; ``str()`` is safe for logs and readiness."""


@dataclass(frozen=True)
class Fetched:
    """Credentials from a source and when they stop working (None: never)."""

    credentials: CredentialSet
    expiry: float | None


def parse_time(text: str) -> float:
    """Unix time of an ISO 8601 instant (STS ``Expiration``, IMDS ``Expiration``)."""
    value = text.strip().replace("Z", "+00:00")
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise SourceError(f"bad expiration time {text[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return calendar.timegm(moment.utctimetuple()) + moment.microsecond / 1e6


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_sts(name: str, status: int, body: bytes) -> Fetched:
    """An AssumeRole / AssumeRoleWithWebIdentity answer."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise SourceError(f"STS answered {status} with malformed XML") from None
    values = {_local(el.tag): (el.text or "").strip() for el in root.iter()}
    if status != 200 or _local(root.tag) == "ErrorResponse":
        code = values.get("Code", "unknown")[:64]
        raise SourceError(f"STS refused with {status} {code}")
    try:
        credentials = CredentialSet(
            name, values["AccessKeyId"], values["SecretAccessKey"], values["SessionToken"]
        )
        expiry = parse_time(values["Expiration"])
    except KeyError as e:
        raise SourceError(f"STS answer lacks {e.args[0]}") from None
    if not all((credentials.access_key_id, credentials.secret_access_key,
                credentials.session_token)):
        raise SourceError("STS answer has an empty credential field")
    return Fetched(credentials, expiry)


def _json(what: str, status: int, body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SourceError(f"{what} answered {status} with malformed JSON") from None
    if not isinstance(document, dict):
        raise SourceError(f"{what} answered {status} with JSON that is not an object")
    return document


def _vault_errors(status: int, document: dict[str, Any]) -> SourceError:
    errors = document.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], str) else ""
    # Vault's messages are fixed phrases ("permission denied"); still cut them short.
    return SourceError(f"Vault refused with {status}" + (f": {first[:80]}" if first else ""))


def parse_vault_login(status: int, body: bytes) -> str:
    """The client token from ``/v1/auth/approle/login``."""
    document = _json("Vault login", status, body)
    if status != 200:
        raise _vault_errors(status, document)
    auth = document.get("auth")
    token = auth.get("client_token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        raise SourceError("Vault login answer has no auth.client_token")
    return token


def parse_vault_creds(name: str, status: int, body: bytes, now: float) -> Fetched:
    """A ``creds`` or ``sts`` answer of the AWS secrets engine."""
    document = _json("Vault", status, body)
    if status != 200:
        raise _vault_errors(status, document)
    data = document.get("data")
    if not isinstance(data, dict):
        raise SourceError("Vault answer has no data")
    access, secret, token = data.get("access_key"), data.get("secret_key"), \
        data.get("security_token")
    if not isinstance(access, str) or not isinstance(secret, str) or not access or not secret:
        raise SourceError("Vault answer lacks data.access_key or data.secret_key")
    if token is not None and not isinstance(token, str):
        raise SourceError("Vault answer has a bad data.security_token")
    lease = document.get("lease_duration")
    if not isinstance(lease, int) or isinstance(lease, bool) or lease < 0:
        raise SourceError("Vault answer has a bad lease_duration")
    return Fetched(CredentialSet(name, access, secret, token or None),
                   now + lease if lease else None)


def parse_oauth_token(status: int, body: bytes) -> str:
    """The access token of an OAuth2 client-credentials answer (RFC 6749 §5)."""
    document = _json("token endpoint", status, body)
    if status != 200:
        error = document.get("error")
        word = error[:64] if isinstance(error, str) else "unknown"
        raise SourceError(f"token endpoint refused with {status} {word}")
    token = document.get("access_token")
    if not isinstance(token, str) or not token:
        raise SourceError("token endpoint answer has no access_token")
    return token
