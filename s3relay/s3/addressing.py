# -*- test-case-name: tests.unit.test_addressing -*-
"""Which bucket and key a request names, and where that lives upstream.

Clients may address a bucket path-style (``/bucket/key``) or virtual-host
style (``bucket.<hostname>/key``); the upstream may want either.  The key is
kept as the exact bytes the client meant (percent-decoded once, never
normalised) and re-encoded once for the upstream, so keys with spaces, ``+``,
``%2F``, ``~`` or unicode arrive byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote_to_bytes

from s3relay.s3.errors import S3Error
from s3relay.s3.signing import uri_encode

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


@dataclass(frozen=True)
class Target:
    """The S3 resource a request addresses."""

    #: Bucket name, or None for service-level requests (ListBuckets).
    bucket: str | None
    #: Object key as decoded bytes; ``b""`` for bucket-level requests.
    key: bytes
    #: Whether the path had a separator after the bucket (``/bucket/``).
    slash: bool

    @property
    def resource(self) -> str:
        """The resource string S3 puts in error documents."""
        if self.bucket is None:
            return "/"
        key = self.key.decode("utf-8", "replace")
        return f"/{self.bucket}" + ("/" + key if self.slash else "")


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def parse_target(host: str, raw_path: bytes, hostnames: tuple[str, ...]) -> Target:
    """The target of a request with ``Host: host`` and request path ``raw_path``."""
    if not raw_path.startswith(b"/"):
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.", 400)
    path = unquote_to_bytes(raw_path)
    name = _host_name(host)
    bucket: str | None = None
    for hostname in hostnames:
        if name.endswith("." + hostname):
            bucket = name[: -len(hostname) - 1]
            return _checked(Target(bucket, path[1:], True))
    head, sep, key = path[1:].partition(b"/")
    if not head:
        if key or sep:
            raise S3Error("InvalidBucketName", "The specified bucket is not valid.", 400)
        return Target(None, b"", False)
    try:
        bucket = head.decode("ascii")
    except UnicodeDecodeError:
        raise S3Error("InvalidBucketName", "The specified bucket is not valid.", 400) from None
    return _checked(Target(bucket, key, bool(sep)))


def _checked(target: Target) -> Target:
    if target.bucket is not None and not _BUCKET.fullmatch(target.bucket):
        raise S3Error("InvalidBucketName", "The specified bucket is not valid.", 400)
    return target


class UpstreamAddress(Protocol):
    """Where the upstream is and how it names buckets (``config.UpstreamConfig``)."""

    @property
    def netloc(self) -> str: ...

    @property
    def addressing(self) -> str: ...


def upstream_location(target: Target, upstream: UpstreamAddress) -> tuple[str, str]:
    """(Host header, encoded path) of ``target`` at the upstream."""
    key = uri_encode(target.key, safe="/")
    if target.bucket is None:
        return upstream.netloc, "/"
    if upstream.addressing == "virtual":
        return f"{target.bucket}.{upstream.netloc}", "/" + key
    return upstream.netloc, f"/{target.bucket}" + ("/" + key if target.slash else "")
