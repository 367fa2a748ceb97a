# -*- test-case-name: tests.unit.test_config -*-
"""The ``[upstream]`` section: where the store is and how to reach it.

Pure: the Agent (``agent``) and the request builder (``forward``) take this
value; ``config`` parses it with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from s3relay.ini import ConfigError, Section

#: How bucket names reach the upstream: in the path, or in the Host.
ADDRESSING = ("path", "virtual")
#: How a store reads non-ASCII header bytes (``header_charset``).
HEADER_CHARSETS = ("utf-8", "latin-1")


@dataclass(frozen=True)
class UpstreamConfig:
    url: str
    region: str
    addressing: str
    #: Persistent connections kept per upstream host.
    max_connections: int
    #: PEM CA bundle the upstream's certificate must chain to (None: the system's).
    ca_pem: bytes | None = field(default=None, repr=False)
    #: Skip checking the upstream's certificate (loudly).
    insecure: bool = False
    #: The store binds upload ids to their keys (AWS S3, Ceph, MinIO): the
    #: relay need not check each id's key first (``s3.uploads``).
    binds_upload_ids: bool = False
    #: How the store reads non-ASCII header bytes: as UTF-8 (AWS S3, MinIO,
    #: Ceph: the bytes are what SigV4 signs) or as ISO-8859-1 (stores on WSGI,
    #: such as moto, which sign the UTF-8 of that reading).  Values go upstream
    #: in that encoding, signed for it.
    header_charset: str = "utf-8"

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def netloc(self) -> str:
        """Host (and non-default port) as the upstream's Host header wants it."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        default = 443 if parts.scheme == "https" else 80
        if parts.port is not None and parts.port != default:
            return f"{host}:{parts.port}"
        return host


def parse_upstream(section: Section) -> UpstreamConfig:
    """The ``[upstream]`` section."""
    url = section.get("url")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(section.name, "url", f"{url!r} is not an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(section.name, "url", f"{url!r} is not an http(s) URL")
    if parts.path not in ("", "/") or "?" in url or "#" in url:
        raise ConfigError(section.name, "url", "must not have a path or query")
    try:
        parts.port
    except ValueError:
        raise ConfigError(section.name, "url", f"{url!r} has a bad port") from None
    addressing = section.get("addressing", "path")
    if addressing not in ADDRESSING:
        raise ConfigError(section.name, "addressing", "must be path or virtual")
    insecure = section.flag("insecure")
    ca_file = section.optional("ca_file")
    ca_pem = None
    if ca_file:
        if insecure:
            raise ConfigError(section.name, "ca_file", "makes no sense with insecure = yes")
        ca_pem = section.read_file("ca_file", ca_file)
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise ConfigError(section.name, "ca_file", f"{ca_file} holds no PEM certificate")
    header_charset = section.get("header_charset", "utf-8")
    if header_charset not in HEADER_CHARSETS:
        raise ConfigError(section.name, "header_charset", "must be utf-8 or latin-1")
    if (ca_file or insecure) and parts.scheme != "https":
        raise ConfigError(section.name, "url", "ca_file and insecure need an https url")
    return UpstreamConfig(
        url=url.rstrip("/"),
        region=section.get("region"),
        addressing=addressing,
        max_connections=int(section.convert("max_connections", "32", int)),
        ca_pem=ca_pem,
        insecure=insecure,
        binds_upload_ids=section.flag("binds_upload_ids"),
        header_charset=header_charset,
    )
