# -*- test-case-name: tests.unit.test_credspec -*-
"""``[credentials:NAME]``: where a credential set's upstream keys come from.

Each section names a ``source`` (default ``static``, so configs written before
there were sources keep working) and that source's keys.  Parsing yields a
frozen spec per set; ``s3relay.credentials.service`` turns each into a
provider: the static ones hold their keys, the remote ones fetch and refresh
them at run time.  Nothing here touches the
network, so ``s3relay --check-config`` can validate a config offline.

Secret files must not be open to other users: a key file an operator forgot
to ``chmod 600`` is refused at load, with the fix in the message, rather than
quietly leaking to every local user.  Group read is allowed, because the
Debian way is ``root:s3relay 0640`` (the daemon can read, not rewrite, its
secrets); group write is not.

Pure: no ``twisted.internet``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Mapping, Union
from urllib.parse import urlsplit

from s3relay.ini import ConfigError, Section

SOURCES = ("static", "chain", "assume-role", "web-identity", "oidc", "vault")

#: AWS's limits on AssumeRole* DurationSeconds.
MIN_DURATION, MAX_DURATION = 900, 43200


@dataclass(frozen=True)
class CredentialSet:
    """A key pair (and maybe a session token) the relay signs upstream requests with."""

    name: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SecretRef:
    """A secret given inline or as a file that is read again at every use.

    Files are re-read because the tools that write them (Vault agent, a
    Kubernetes projected volume) rotate them under a running relay.
    """

    section: str
    key: str
    value: str | None = field(default=None, repr=False)
    path: str | None = None

    def read(self) -> str:
        """The secret now; ConfigError if its file became unreadable or unsafe."""
        if self.value is not None:
            return self.value
        assert self.path is not None
        return read_secret_file(self.section, self.key, self.path)


@dataclass(frozen=True)
class Refresh:
    """When to refresh and when to stop asking a source that keeps failing."""

    #: Refresh this many seconds before the credentials expire.
    margin: float = 300.0
    #: Up to this many seconds more, at random, so relays do not refresh in step.
    jitter: float = 60.0
    #: First retry delay after a failure (doubles up to ``open_interval``).
    retry: float = 5.0
    #: Consecutive failures that open the circuit breaker.
    failure_threshold: int = 3
    #: Seconds the breaker stays open before one probe is let through.
    open_interval: float = 60.0
    #: Seconds one fetch may take.
    timeout: float = 10.0


@dataclass(frozen=True)
class StaticSpec:
    name: str
    credentials: CredentialSet


@dataclass(frozen=True)
class ChainSpec:
    """botocore's default chain: env, shared files, web identity, ECS, IMDS."""

    name: str
    profile: str | None
    refresh: Refresh


@dataclass(frozen=True)
class StsTarget:
    """The STS endpoint and the role to assume there."""

    role_arn: str
    session_name: str
    duration: int
    sts_url: str
    region: str


@dataclass(frozen=True)
class AssumeRoleSpec:
    name: str
    sts: StsTarget
    external_id: str | None
    #: The credential set that signs the AssumeRole call.
    source: str
    refresh: Refresh


@dataclass(frozen=True)
class WebIdentitySpec:
    name: str
    sts: StsTarget
    #: Read at every refresh: Kubernetes rotates projected tokens.
    token_file: str
    refresh: Refresh


@dataclass(frozen=True)
class OidcSpec:
    name: str
    token_url: str
    client_id: str
    client_secret: SecretRef
    scope: str | None
    sts: StsTarget
    refresh: Refresh


@dataclass(frozen=True)
class VaultSpec:
    name: str
    vault_url: str
    #: ``<mount>/creds/<role>`` (IAM user, leased) or ``<mount>/sts/<role>``.
    path: str
    token: SecretRef | None
    role_id: str | None
    secret_id: SecretRef | None
    ca_pem: bytes | None = field(default=None, repr=False)
    refresh: Refresh = Refresh()

    @property
    def temporary(self) -> bool:
        """An ``sts`` path hands out session credentials (with a token)."""
        return "/sts/" in f"/{self.path}/"


CredentialSpec = Union[
    StaticSpec, ChainSpec, AssumeRoleSpec, WebIdentitySpec, OidcSpec, VaultSpec
]
REMOTE = (ChainSpec, AssumeRoleSpec, WebIdentitySpec, OidcSpec, VaultSpec)


def read_secret_file(section: str, key: str, path: str) -> str:
    """A secret file's stripped text, refused when other users may read or change it."""
    try:
        info = os.stat(path)
        if info.st_mode & 0o027 and stat.S_ISREG(info.st_mode):
            raise ConfigError(
                section,
                key,
                f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run: chmod 600 {path} (or 640 with the relay's group)",
            )
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as e:
        raise ConfigError(section, key, f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise ConfigError(section, key, "is not a valid file name") from None
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(section, key, f"{path} is not UTF-8 text") from None
    if not value:
        raise ConfigError(section, key, f"{path} is empty")
    return value


def _path(section: Section, key: str, value: str) -> str:
    return os.path.join(section.base_dir, value)


def _secret_ref(section: Section, key: str, required: bool = True) -> SecretRef | None:
    inline, path = section.optional(key), section.optional(f"{key}_file")
    if inline and path:
        raise ConfigError(section.name, key, f"give {key} or {key}_file, not both")
    if path:
        ref = SecretRef(section.name, f"{key}_file", path=_path(section, key, path))
        ref.read()  # refuse an unreadable or unsafe file now, not at the first refresh
        return ref
    if inline:
        return SecretRef(section.name, key, value=inline)
    if required:
        raise ConfigError(section.name, key, f"is required (or {key}_file)")
    return None


def _url(section: Section, key: str, default: str | None = None) -> str:
    url = section.get(key, default)
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError:
        raise ConfigError(section.name, key, f"{url!r} is not an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(section.name, key, f"{url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ConfigError(section.name, key, "must not hold a user name or password")
    return url


def _number(section: Section, key: str, default: float) -> float:
    return section.convert(key, repr(default), float)


def _refresh(section: Section) -> Refresh:
    jitter_raw = section.get("refresh_jitter", "60")
    try:
        jitter = float(jitter_raw)
    except ValueError:
        raise ConfigError(section.name, "refresh_jitter", f"{jitter_raw!r} is not a number") \
            from None
    if not jitter >= 0 or jitter == float("inf"):
        raise ConfigError(section.name, "refresh_jitter", "must be 0 or more")
    threshold = section.convert("failure_threshold", "3", int)
    return Refresh(
        margin=_number(section, "refresh_margin", 300.0),
        jitter=jitter,
        retry=_number(section, "retry_interval", 5.0),
        failure_threshold=int(threshold),
        open_interval=_number(section, "open_interval", 60.0),
        timeout=_number(section, "timeout", 10.0),
    )


def _sts(section: Section, name: str) -> StsTarget:
    region = section.get("region", "us-east-1")
    duration = int(section.convert("duration", "3600", int))
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise ConfigError(
            section.name, "duration", f"must be {MIN_DURATION} to {MAX_DURATION} seconds"
        )
    role_arn = section.get("role_arn")
    if not role_arn.startswith("arn:"):
        raise ConfigError(section.name, "role_arn", f"{role_arn!r} is not an ARN")
    session = section.get("session_name", f"s3relay-{name}")
    if not 2 <= len(session) <= 64:
        raise ConfigError(section.name, "session_name", "must be 2 to 64 characters")
    return StsTarget(
        role_arn=role_arn,
        session_name=session,
        duration=duration,
        sts_url=_url(section, "sts_url", f"https://sts.{region}.amazonaws.com").rstrip("/"),
        region=region,
    )


def _static(section: Section, name: str) -> StaticSpec:
    secret = _secret_ref(section, "secret_access_key")
    token = _secret_ref(section, "session_token", required=False)
    assert secret is not None
    return StaticSpec(
        name,
        CredentialSet(
            name=name,
            access_key_id=section.get("access_key_id"),
            secret_access_key=secret.read(),
            session_token=token.read() if token else None,
        ),
    )


def _vault(section: Section, name: str) -> VaultSpec:
    path = section.get("path").strip("/")
    parts = path.split("/")
    if len(parts) < 3 or parts[-2] not in ("creds", "sts") or not all(parts):
        raise ConfigError(section.name, "path", "must be <mount>/creds/<role> or <mount>/sts/<role>")
    token = _secret_ref(section, "token", required=False)
    role_id = section.optional("role_id")
    secret_id_file = section.optional("secret_id_file")
    secret_id = None
    if secret_id_file:
        secret_id = SecretRef(
            section.name, "secret_id_file", path=_path(section, "secret_id_file", secret_id_file)
        )
        secret_id.read()
    if token and (role_id or secret_id):
        raise ConfigError(section.name, "token", "give token[_file] or role_id + secret_id_file")
    if not token and not (role_id and secret_id):
        raise ConfigError(
            section.name, None, "needs token[_file], or role_id and secret_id_file (AppRole)"
        )
    ca_file = section.optional("ca_file")
    ca_pem = section.read_file("ca_file", ca_file) if ca_file else None
    if ca_pem is not None and b"-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise ConfigError(section.name, "ca_file", f"{ca_file} holds no PEM certificate")
    url = _url(section, "vault_url").rstrip("/")
    if ca_pem is not None and urlsplit(url).scheme != "https":
        raise ConfigError(section.name, "ca_file", "needs an https vault_url")
    return VaultSpec(name, url, path, token, role_id, secret_id, ca_pem, _refresh(section))


def parse_credentials(section: Section, name: str) -> CredentialSpec:
    """The spec of one ``[credentials:NAME]`` section (references checked later)."""
    source = section.get("source", "static")
    if source not in SOURCES:
        raise ConfigError(section.name, "source", f"must be one of {', '.join(SOURCES)}")
    if source == "static":
        return _static(section, name)
    if source == "chain":
        return ChainSpec(name, section.optional("profile"), _refresh(section))
    if source == "assume-role":
        return AssumeRoleSpec(
            name,
            _sts(section, name),
            section.optional("external_id"),
            section.get("source_credentials"),
            _refresh(section),
        )
    if source == "web-identity":
        token_file = _path(section, "token_file", section.get("token_file"))
        if not os.access(token_file, os.R_OK):
            raise ConfigError(section.name, "token_file", f"cannot read {token_file}")
        return WebIdentitySpec(name, _sts(section, name), token_file, _refresh(section))
    if source == "oidc":
        secret = _secret_ref(section, "client_secret")
        assert secret is not None
        return OidcSpec(
            name,
            _url(section, "token_url"),
            section.get("client_id"),
            secret,
            section.optional("scope"),
            _sts(section, name),
            _refresh(section),
        )
    return _vault(section, name)


def check_references(specs: Mapping[str, CredentialSpec]) -> None:
    """Every ``source_credentials`` names a set, and no set depends on itself."""
    for name, spec in specs.items():
        seen = [name]
        while isinstance(spec, AssumeRoleSpec):
            section = f"credentials:{seen[-1]}"
            if spec.source not in specs:
                raise ConfigError(
                    section, "source_credentials", f"no [credentials:{spec.source}] section"
                )
            if spec.source in seen:
                cycle = " -> ".join([*seen, spec.source])
                raise ConfigError(section, "source_credentials", f"is a cycle: {cycle}")
            seen.append(spec.source)
            spec = specs[spec.source]


def sources_first(specs: Mapping[str, CredentialSpec]) -> list[str]:
    """Names ordered so that every assume-role set comes after its source."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        spec = specs[name]
        if isinstance(spec, AssumeRoleSpec):
            visit(spec.source)
        ordered.append(name)

    for name in specs:
        visit(name)
    return ordered
