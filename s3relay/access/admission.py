# -*- test-case-name: tests.unit.test_admission -*-
"""Who may connect, by which Host, and how often: the checks before policy.

Three questions are answered for every request, each with an S3 error and a
log reason when the answer is no:

1. From where?  The effective client address (``networks``: the peer, or
   behind ``trusted_proxies`` the forwarded client) must be in ``[server]
   allowed_networks`` -- checked before the signature, so an address that may
   not connect learns nothing about keys -- and, once the client is known, in
   its own ``allowed_networks``.  Default: loopback only, so a relay nobody
   configured is not an open door.
2. To which name?  With ``allowed_hostnames`` set, the ``Host`` must be one of
   them, one of ``hostnames`` or a virtual-host bucket under one of those.
3. How often?  ``rate``/``burst``/``max_concurrent_requests``, for the relay
   and per client (``ratelimit``), spent only by requests that passed every
   other check, so that refused requests cannot exhaust a client's budget.

Config parsing and decisions are pure (no Twisted); ``Gate`` holds the rate
limiter's state for one relay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from s3relay.access.networks import (
    LOOPBACK,
    NOWHERE,
    Address,
    Networks,
    Origin,
    effective_origin,
    forwarded,
    parse_address,
    parse_networks,
    x_forwarded_for,
)
from s3relay.access.ratelimit import (
    UNLIMITED,
    Admitted,
    Clock,
    RateLimiter,
    RateLimits,
    Share,
)
from s3relay.ini import ConfigError, Section
from s3relay.s3.errors import S3Error


class RefusalCounter(Protocol):
    """Where refusals are counted (``ops.metrics.RelayMetrics``)."""

    def admission_refused(self, reason: str) -> None: ...


FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")
#: Longest forwarded-header value kept in an access record.
CLAIM_LOG_CAP = 512

_HOST_ENTRY = re.compile(r"(?:[a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class AdmissionConfig:
    """The ``[server]`` half: who may connect at all, and the relay's limits."""

    allowed_networks: Networks = LOOPBACK
    trusted_proxies: Networks = NOWHERE
    #: The header trusted proxies write: ``x-forwarded-for`` or ``forwarded``.
    forwarded_header: str = "x-forwarded-for"
    #: Host values (``name`` or ``name:port``) answered; None = any Host.
    allowed_hostnames: tuple[str, ...] | None = None
    #: Whether clients may upload in parts unless their section says otherwise.
    multipart: bool = True
    limits: RateLimits = UNLIMITED


@dataclass(frozen=True)
class ClientAdmission:
    """The ``[client:NAME]`` half: narrower networks and the client's own limits."""

    #: None = whatever ``[server] allowed_networks`` allows.
    allowed_networks: Networks | None = None
    limits: RateLimits = UNLIMITED


DEFAULT_ADMISSION = AdmissionConfig()
OPEN_CLIENT = ClientAdmission()


def _networks(section: Section, key: str) -> Networks | None:
    raw = section.optional(key)
    if raw is None:
        return None
    try:
        networks = parse_networks(raw)
    except ValueError as e:
        raise ConfigError(section.name, key, str(e)) from None
    if not networks.networks:
        raise ConfigError(section.name, key, "names no network")
    return networks


def _yes_no(section: Section, key: str) -> bool | None:
    raw = section.optional(key)
    if raw is None:
        return None
    if raw not in ("yes", "no"):
        raise ConfigError(section.name, key, "must be yes or no")
    return raw == "yes"


def _rate_limits(section: Section) -> RateLimits:
    rate = burst = concurrent = None
    if section.optional("rate") is not None:
        rate = section.convert("rate", "", float)
        if not rate > 0:  # 0 would never refill (and divide by zero), NaN never compare
            raise ConfigError(section.name, "rate", "must be above 0")
    if section.optional("burst") is not None:
        if rate is None:
            raise ConfigError(section.name, "burst", "needs rate")
        burst = section.convert("burst", "", float)
        if burst < 1:
            raise ConfigError(section.name, "burst", "must be at least 1")
    if section.optional("max_concurrent_requests") is not None:
        concurrent = section.convert("max_concurrent_requests", "", int)
    return RateLimits(
        rate=rate,
        burst=burst if burst is not None else max(1.0, rate or 1.0),
        max_concurrent=int(concurrent) if concurrent is not None else None,
    )


def parse_admission(section: Section) -> AdmissionConfig:
    """The admission keys of the ``[server]`` section (all optional)."""
    header = section.get("forwarded_header", "x-forwarded-for").lower()
    if header not in FORWARDED_HEADERS:
        raise ConfigError(section.name, "forwarded_header", "must be x-forwarded-for or forwarded")
    hostnames = None
    raw_hosts = section.optional("allowed_hostnames")
    if raw_hosts is not None:
        hostnames = tuple(h.strip().lower() for h in raw_hosts.split(",") if h.strip())
        for entry in hostnames:
            if not _HOST_ENTRY.fullmatch(entry):
                raise ConfigError(section.name, "allowed_hostnames", f"{entry!r} is not host[:port]")
        if not hostnames:
            raise ConfigError(section.name, "allowed_hostnames", "names no host")
    multipart = _yes_no(section, "multipart")
    return AdmissionConfig(
        allowed_networks=_networks(section, "allowed_networks") or LOOPBACK,
        trusted_proxies=_networks(section, "trusted_proxies") or NOWHERE,
        forwarded_header=header,
        allowed_hostnames=hostnames,
        multipart=True if multipart is None else multipart,
        limits=_rate_limits(section),
    )


def parse_client_admission(section: Section) -> ClientAdmission:
    """The admission keys of a ``[client:NAME]`` section (all optional)."""
    return ClientAdmission(_networks(section, "allowed_networks"), _rate_limits(section))


def client_multipart(section: Section, default: bool) -> str:
    """The client's ``multipart`` value for ``policy.parse_policy`` ("yes"/"no")."""
    own = _yes_no(section, "multipart")
    return "yes" if (default if own is None else own) else "no"


# -- decisions ---------------------------------------------------------------


def peer_address(address: object) -> Address | None:
    """The IP address of a Twisted peer address object.

    A UNIX-socket peer is a process on this host: it counts as 127.0.0.1.
    """
    host = getattr(address, "host", None)
    if isinstance(host, str):
        return parse_address(host)
    if getattr(address, "name", None) is not None:
        return parse_address("127.0.0.1")
    return None


def _claimed(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    if not values:
        return None
    text = ", ".join(values)
    return text if len(text) <= CLAIM_LOG_CAP else text[:CLAIM_LOG_CAP] + "..."


def origin_of(
    config: AdmissionConfig, peer: Address | None, headers: Mapping[str, Sequence[str]]
) -> tuple[Origin, dict[str, object]]:
    """Where a request comes from, and the access-record fields that say so.

    The record keeps both forwarded headers exactly as claimed (capped), and
    ``forwarded_trusted`` says whether the configured one was believed.
    """
    values = headers.get(config.forwarded_header) or ()
    parse = x_forwarded_for if config.forwarded_header == "x-forwarded-for" else forwarded
    origin = effective_origin(peer, parse(values) if values else (), config.trusted_proxies)
    record: dict[str, object] = {
        "address": str(origin.address) if origin.address is not None else None,
        "forwarded_for": _claimed(headers, "x-forwarded-for"),
        "forwarded": _claimed(headers, "forwarded"),
        "forwarded_trusted": origin.trusted and bool(values),
    }
    return origin, record


def _denied(reason: str) -> S3Error:
    return S3Error("AccessDenied", "Access Denied", 403, reason)


def check_network(config: AdmissionConfig, origin: Origin) -> None:
    """AccessDenied unless the effective address is in ``[server] allowed_networks``."""
    if origin.address not in config.allowed_networks:
        raise _denied(f"address {origin.address} not in [server] allowed_networks")


def check_client_network(client: str, admission: ClientAdmission, origin: Origin) -> None:
    """AccessDenied unless the effective address is in the client's ``allowed_networks``."""
    if admission.allowed_networks is not None and origin.address not in admission.allowed_networks:
        raise _denied(f"client {client}: address {origin.address} not in its allowed_networks")


def _split_host(host: str) -> tuple[str, str | None]:
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else None
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, port
    return host, None


def host_allowed(host: str, allowed: Sequence[str], hostnames: Sequence[str]) -> bool:
    """Whether ``host`` is an ``allowed`` entry (no port: any port), one of
    ``hostnames`` or ``<bucket>.<hostname>`` (any port)."""
    name, port = _split_host(host.strip().lower())
    for entry in allowed:
        entry_name, entry_port = _split_host(entry)
        if entry_name == name and (entry_port is None or entry_port == port):
            return True
    return any(
        name == hostname or (name.endswith("." + hostname) and len(name) > len(hostname) + 1)
        for hostname in hostnames
    )


def check_host(
    config: AdmissionConfig, hostnames: Sequence[str], headers: Mapping[str, Sequence[str]]
) -> None:
    """InvalidArgument (400) for a Host the relay does not answer to."""
    if config.allowed_hostnames is None:
        return
    values = headers.get("host") or []
    if len(values) != 1 or not host_allowed(values[0], config.allowed_hostnames, hostnames):
        shown = ", ".join(values)[:200] if values else "(none)"
        raise S3Error(
            "InvalidArgument",
            "The Host header names no endpoint this relay serves.",
            400,
            f"Host {shown!r} not in allowed_hostnames or hostnames",
        )


class Gate:
    """The checks above for one relay, counting refusals by rule, and the rate
    limiter's state (kept across reloads).

    The limits it enforces are this process's ``share`` of the configured
    ones (``ratelimit.Share``): all of them for a relay of its own, a part
    for one of ``[server] workers``.  By default the share the supervisor
    gave this process (``Share.of_process``).
    """

    def __init__(
        self, clock: Clock, metrics: RefusalCounter, share: Share | None = None
    ) -> None:
        self._limiter = RateLimiter(clock)
        self._metrics = metrics
        self.share = share if share is not None else Share.of_process()

    def in_flight(self, client: str | None = None) -> int:
        return self._limiter.in_flight("" if client is None else f"client:{client}")

    def check_connection(
        self,
        config: AdmissionConfig,
        hostnames: Sequence[str],
        origin: Origin,
        headers: Mapping[str, Sequence[str]],
    ) -> None:
        """The checks that need no client: network, then Host."""
        try:
            check_network(config, origin)
        except S3Error:
            self._metrics.admission_refused("network")
            raise
        try:
            check_host(config, hostnames, headers)
        except S3Error:
            self._metrics.admission_refused("host")
            raise

    def check_client(self, client: str, own: ClientAdmission, origin: Origin) -> None:
        try:
            check_client_network(client, own, origin)
        except S3Error:
            self._metrics.admission_refused("client_network")
            raise

    def admit(self, config: AdmissionConfig, client: str | None, own: ClientAdmission) -> Admitted:
        """Take a token and slots for ``client``'s request, or raise SlowDown."""
        share = self.share
        outcome = self._limiter.admit(
            share.limits(config.limits), client, share.limits(own.limits)
        )
        if isinstance(outcome, Admitted):
            return outcome
        self._metrics.admission_refused(f"{outcome.scope}_{outcome.limit}")
        raise outcome.error(client)
