# -*- test-case-name: tests.unit.test_config -*-
"""The relay's configuration: one frozen value parsed from an ini file.

Everything the relay knows about its world arrives here once, is validated
completely, and is then passed down as a read-only object.  A mistake stops
startup with one line that names the section and key, because an operator
reading a journal at 3 a.m. should not have to guess which line is wrong.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from s3relay.access.admission import (
    DEFAULT_ADMISSION,
    OPEN_CLIENT,
    AdmissionConfig,
    ClientAdmission,
    client_multipart,
    parse_admission,
    parse_client_admission,
)
from s3relay.access.anonymous import ANONYMOUS, parse_anonymous
from s3relay.access.cors import PREFLIGHT_CLIENT
from s3relay.access.policy import ALLOW_ALL, ClientPolicy, PolicyError, parse_policy
from s3relay.credentials.spec import (
    CredentialSet as CredentialSet,
)
from s3relay.credentials.spec import (
    CredentialSpec,
    StaticSpec,
    check_references,
    parse_credentials,
)
from s3relay.crypt.settings import EncryptionConfig, parse_encryption
from s3relay.http.limits import DEFAULT_LIMITS, Limits, parse_limits
from s3relay.ini import ConfigError as ConfigError
from s3relay.ini import Section
from s3relay.ini import names as _names
from s3relay.listen.tls import Subject, TlsSettings, parse_binding, parse_tls
from s3relay.ops.keylog import KeyLogging, parse_key_logging
from s3relay.upstream.routes import DEFAULT, Route, Routes, parse_routes
from s3relay.upstream.settings import UpstreamConfig as UpstreamConfig
from s3relay.upstream.settings import parse_upstream
from s3relay.upstream.transforms import NO_TRANSFORMS, Transforms, parse_transforms
from s3relay.workers.config import parse_workers

SELF = "self"


@dataclass(frozen=True)
class ServerConfig:
    listen: str
    #: Names clients use for the relay; ``bucket.<name>`` is virtual-host style.
    hostnames: tuple[str, ...]
    #: Regions a client may put in its signature scope.
    regions: tuple[str, ...]
    #: Seconds a connection may sit idle between requests or while sending headers.
    idle_timeout: float
    #: Client-facing TLS: protocol floor, ciphers, certificate, mTLS (``tls``).
    tls: TlsSettings = TlsSettings()
    #: How access records show object keys (``keylog``).
    log_keys: KeyLogging = KeyLogging()
    #: Timeouts, request-size limits, connection limit and shutdown grace (``limits``).
    limits: Limits = DEFAULT_LIMITS
    #: Who may connect, by which Host, and the relay's rate limits (``admission``).
    admission: AdmissionConfig = DEFAULT_ADMISSION
    #: Reactor processes sharing the listener (``workerconfig``, ``workers``).
    workers: int = 1
    #: Relay paths and copy sources with ``.``/``..`` segments (``addressing``);
    #: off: refused with 400 InvalidRequest.
    allow_dot_segments: bool = False
    #: The credential set CORS preflights are signed with upstream (``access.cors``);
    #: None: ``[anonymous]``'s, if any.
    preflight_credentials: str | None = None


@dataclass(frozen=True)
class ClientKey:
    """A key pair a client signs its requests to the relay with."""

    name: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    #: Name of the upstream credential set, or ``self``.
    credentials: str
    #: What the client may do (buckets, prefixes, operation classes); default: everything.
    policy: ClientPolicy = ALLOW_ALL
    #: The subject its TLS client certificate must have (``tls``); None: any connection.
    certificate_subject: Subject | None = None
    #: Its own allowed_networks and rate limits (``admission``).
    admission: ClientAdmission = OPEN_CLIENT
    #: Credential sets for named upstreams, by upstream name (``credentials = SET, west:SET``).
    upstream_credentials: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    upstream: UpstreamConfig
    #: The static credential sets (``source = static``), by name.
    credentials: Mapping[str, CredentialSet]
    clients: Mapping[str, ClientKey]
    #: Index of ``clients`` by access key id.
    clients_by_key: Mapping[str, ClientKey] = field(repr=False)
    #: Endpoint of the management site (/metrics, /healthz, /readyz); None = none.
    metrics_listen: str | None = None
    #: Every credential set's spec by name, static or fetched at run time
    #: (s3relay.credentials.provider keeps the fetched ones fresh).
    credential_specs: Mapping[str, CredentialSpec] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: The client unsigned requests act as (``[anonymous]``); None: refused.
    anonymous: ClientKey | None = None
    #: Storage class and headers added to upstream writes (``transforms``).
    transforms: Transforms = NO_TRANSFORMS
    #: Who CORS preflights act as upstream (``access.cors``); None: refused.
    preflight: ClientKey | None = None
    #: The prefixes stored encrypted, and the keys (``crypt``); None: none.
    encryption: EncryptionConfig | None = None
    #: Every upstream and the buckets it serves (``upstream.routes``).
    routes: Routes | None = None

    def client(self, access_key_id: str) -> ClientKey | None:
        return self.clients_by_key.get(access_key_id)

    def route(self, bucket: str | None) -> Route:
        """The upstream that serves ``bucket``."""
        if self.routes is None:
            return Route(DEFAULT, self.upstream, transforms=self.transforms)
        return self.routes.route(bucket)

    def credential_set(self, client: ClientKey, route: Route) -> str:
        """The set that signs ``client``'s requests to ``route``: the client's
        own for that upstream, else the upstream's ``credentials``, else the
        client's ``credentials``."""
        return (
            client.upstream_credentials.get(route.name) or route.credentials or client.credentials
        )


def _policy(section: Section, multipart: bool = True) -> ClientPolicy:
    try:
        return parse_policy(
            buckets=section.optional("buckets"),
            prefixes=section.optional("prefixes"),
            operations=section.optional("operations"),
            read_only=section.optional("read_only"),
            multipart=client_multipart(section, multipart),
        )
    except PolicyError as e:
        raise ConfigError(section.name, e.key, e.message) from None


def _server(section: Section) -> ServerConfig:
    hostnames = tuple(h.lower() for h in _names(section.get("hostnames", ",")))
    regions = _names(section.get("region", "us-east-1"))
    if not regions:
        raise ConfigError(section.name, "region", "names no region")
    listen = section.get("listen", "tcp:8080:interface=127.0.0.1")
    return ServerConfig(
        listen=listen,
        hostnames=hostnames,
        regions=regions,
        idle_timeout=section.convert("idle_timeout", "60", float),
        tls=parse_tls(section, listen),
        log_keys=parse_key_logging(section),
        limits=parse_limits(section),
        admission=parse_admission(section),
        workers=parse_workers(section, listen),
        allow_dot_segments=section.flag("allow_dot_segments"),
        preflight_credentials=section.optional("preflight_credentials"),
    )


def parse_config(text: str, base_dir: str = ".") -> Config:
    """Parse and validate the ini ``text``; relative file names resolve from ``base_dir``."""
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), default_section="\0"
    )
    try:
        parser.read_string(text)
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(
            "", None, f"not a valid ini file: line {e.lineno} is outside any [section]"
        ) from None
    except configparser.ParsingError as e:
        # Never quote the line: it may hold a secret.
        lines = ", ".join(str(lineno) for lineno, _ in e.errors)
        raise ConfigError("", None, f"not a valid ini file: cannot parse line {lines}") from None
    except configparser.Error as e:
        raise ConfigError("", None, f"not a valid ini file: {e.message.splitlines()[0]}") from None

    sections = {name: Section(name, parser[name], base_dir) for name in parser.sections()}
    labels: dict[tuple[str, str], str] = {}
    for name in sections:
        kind = name.split(":", 1)[0]
        single = ("server", "upstream", "metrics", "anonymous", "encryption")
        if name not in single and kind not in ("credentials", "client", "upstream"):
            raise ConfigError(name, None, "unknown section")
        named_kind = kind in ("credentials", "client", "upstream") and name != "upstream"
        if named_kind and not name.partition(":")[2].strip():
            raise ConfigError(name, None, f"needs a name: [{kind}:NAME]")
        if named_kind:
            named = (kind, name.partition(":")[2].strip())
            if named in labels:
                raise ConfigError(name, None, f"same name as [{labels[named]}]")
            labels[named] = name
    if "upstream" not in sections:
        raise ConfigError("upstream", None, "section is required")

    server = _server(sections.get("server") or Section("server", {}, base_dir))
    upstream = parse_upstream(sections["upstream"])
    metrics_listen = sections["metrics"].get("listen") if "metrics" in sections else None

    specs: dict[str, CredentialSpec] = {}
    clients: dict[str, ClientKey] = {}
    for name, section in sections.items():
        kind, _, label = name.partition(":")
        label = label.strip()
        if kind == "credentials":
            specs[label] = parse_credentials(section, label)
        elif kind == "client":
            default_set, per_upstream = _client_credentials(section)
            clients[label] = ClientKey(
                name=label,
                access_key_id=section.get("access_key_id"),
                secret_access_key=section.secret("secret_access_key"),
                credentials=default_set,
                upstream_credentials=per_upstream,
                policy=_policy(section, server.admission.multipart),
                certificate_subject=parse_binding(section, server.tls),
                admission=parse_client_admission(section),
            )
    if SELF in specs:
        raise ConfigError(f"credentials:{SELF}", None, f"'{SELF}' is a reserved name")
    check_references(specs)
    credentials = {
        name: spec.credentials for name, spec in specs.items() if isinstance(spec, StaticSpec)
    }

    by_key: dict[str, ClientKey] = {}
    for client in clients.values():
        section_name = f"client:{client.name}"
        if client.credentials != SELF and client.credentials not in specs:
            raise ConfigError(
                section_name,
                "credentials",
                f"no [credentials:{client.credentials}] section",
            )
        if client.access_key_id in by_key:
            other = by_key[client.access_key_id].name
            raise ConfigError(section_name, "access_key_id", f"already used by [client:{other}]")
        by_key[client.access_key_id] = client

    anonymous = None
    if "anonymous" in sections:
        access = parse_anonymous(
            sections["anonymous"], specs, clients, server.admission.multipart
        )
        anonymous = ClientKey(
            ANONYMOUS, "", "", access.credentials, access.policy,
            admission=parse_client_admission(sections["anonymous"]),
        )
    preflight_set = server.preflight_credentials
    if preflight_set is not None and preflight_set not in specs:
        raise ConfigError("server", "preflight_credentials", f"no [credentials:{preflight_set}] section")
    if preflight_set is None and anonymous is not None:
        preflight_set = anonymous.credentials
    preflight = ClientKey(PREFLIGHT_CLIENT, "", "", preflight_set) if preflight_set else None
    transforms = parse_transforms(
        sections["upstream"],
        {n.partition(":")[2].strip(): s for n, s in sections.items() if n.startswith("client:")},
    )

    encryption = parse_encryption(sections["encryption"]) if "encryption" in sections else None

    client_sections = {
        n.partition(":")[2].strip(): s for n, s in sections.items() if n.startswith("client:")
    }
    routes = parse_routes(
        upstream,
        {n.partition(":")[2].strip(): s for n, s in sections.items() if n.startswith("upstream:")},
        parse_upstream,
        lambda section: parse_transforms(section, client_sections),
        transforms,
    )
    _check_route_credentials(routes, clients, specs)

    for section in sections.values():
        section.check_unknown()
    return Config(
        server,
        upstream,
        MappingProxyType(credentials),
        MappingProxyType(clients),
        MappingProxyType(by_key),
        metrics_listen,
        credential_specs=MappingProxyType(specs),
        anonymous=anonymous,
        transforms=transforms,
        preflight=preflight,
        encryption=encryption,
        routes=routes,
    )


def _client_credentials(section: Section) -> tuple[str, Mapping[str, str]]:
    """``credentials = SET`` or ``SET, UPSTREAM:SET, ...``: the default set and
    the sets for named upstreams."""
    default, per_upstream = None, {}
    for entry in section.get("credentials").split(","):
        upstream, colon, name = (p.strip() for p in entry.partition(":"))
        if not colon:
            if default is not None or not upstream:
                raise ConfigError(section.name, "credentials", "give one default set first, "
                                  "then UPSTREAM:SET for named upstreams")
            default = upstream
        elif not upstream or not name or upstream in per_upstream:
            raise ConfigError(section.name, "credentials", f"{entry.strip()[:64]!r} is not "
                              "UPSTREAM:SET (once per upstream)")
        else:
            per_upstream[upstream] = name
    if default is None:
        raise ConfigError(section.name, "credentials", "names no default set")
    return default, MappingProxyType(per_upstream)


def _check_route_credentials(
    routes: Routes, clients: Mapping[str, ClientKey], specs: Mapping[str, CredentialSpec]
) -> None:
    """Every (client, upstream) pair has a set that exists, found at start."""
    for route in routes.named.values():
        if route.credentials is not None and route.credentials not in specs:
            raise ConfigError(f"upstream:{route.name}", "credentials",
                              f"no [credentials:{route.credentials}] section")
    for client in clients.values():
        for upstream, name in client.upstream_credentials.items():
            if upstream not in routes.named:
                raise ConfigError(f"client:{client.name}", "credentials",
                                  f"no [upstream:{upstream}] section")
            if name != SELF and name not in specs:
                raise ConfigError(f"client:{client.name}", "credentials",
                                  f"no [credentials:{name}] section")


def load_config(path: str) -> Config:
    """Read and parse the config file at ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as e:
        raise ConfigError("", None, f"cannot read {path}: {e.strerror}") from None
    return parse_config(text, os.path.dirname(os.path.abspath(path)))
