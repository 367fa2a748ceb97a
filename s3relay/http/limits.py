# -*- test-case-name: tests.unit.test_limits -*-
"""Limits and timeouts of the ``[server]`` section.

A relay in front of S3 must neither hang on a client or upstream that stopped
moving, nor be held open by a slow-loris, nor accept a request S3 itself would
never take; yet it must never cut a transfer that is still making progress.
The values are parsed here from the ``[server]`` section; the channel
(``channel``), the exchange and the shutdown service apply them, with the
errors of ``s3relay.s3.errors``.  Pure: no
Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from s3relay.ini import ConfigError, Section
from s3relay.s3.errors import S3Error

#: S3's largest single PUT (5 GiB): anything larger S3 refuses anyway.
DEFAULT_MAX_OBJECT_SIZE = 5 * 1024**3


@dataclass(frozen=True)
class Limits:
    """Per-connection timeouts and request-size limits (seconds and bytes)."""

    #: Seconds to establish an upstream TCP (and TLS) connection.
    connect_timeout: float = 10.0
    #: Seconds the upstream may take to send response headers once the
    #: request body is complete.
    first_byte_timeout: float = 60.0
    #: Seconds a client may take to send a request line and headers (slow-loris).
    header_timeout: float = 20.0
    #: Largest request body (decoded length for aws-chunked uploads).
    max_object_size: int = DEFAULT_MAX_OBJECT_SIZE
    #: Bytes of header lines (names, values, separators) in one request.
    max_header_size: int = 16384
    #: Header lines in one request.
    max_headers: int = 100
    #: Bytes of the request target (path and query) in the request line.
    max_url_length: int = 8192
    #: Concurrent client connections; the ones past it get 503 SlowDown.
    max_connections: int = 1024
    #: Seconds in-flight requests may still run after SIGTERM.
    shutdown_grace: float = 30.0


DEFAULT_LIMITS = Limits()


def _count(section: Section, key: str, default: int) -> int:
    value = section.convert(key, str(default), int)
    return int(value)


def parse_limits(section: Section) -> Limits:
    """The limits of a ``[server]`` section (every key optional)."""
    d = DEFAULT_LIMITS
    limits = Limits(
        connect_timeout=section.convert("connect_timeout", str(d.connect_timeout), float),
        first_byte_timeout=section.convert(
            "first_byte_timeout", str(d.first_byte_timeout), float
        ),
        header_timeout=section.convert("header_timeout", str(d.header_timeout), float),
        max_object_size=_count(section, "max_object_size", d.max_object_size),
        max_header_size=_count(section, "max_header_size", d.max_header_size),
        max_headers=_count(section, "max_headers", d.max_headers),
        max_url_length=_count(section, "max_url_length", d.max_url_length),
        max_connections=_count(section, "max_connections", d.max_connections),
        shutdown_grace=section.convert("shutdown_grace", str(d.shutdown_grace), float),
    )
    if limits.max_url_length < 16:
        raise ConfigError(section.name, "max_url_length", "must be at least 16")
    if limits.max_header_size < 1024:
        raise ConfigError(section.name, "max_header_size", "must be at least 1024")
    return limits


def _one(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def check_declared_size(
    headers: Mapping[str, Sequence[str]], body_length: int | None, limits: Limits
) -> None:
    """Refuse a body whose declared size exceeds ``max_object_size``.

    ``headers`` have lowercase names; ``body_length`` is the Content-Length
    (None when HTTP-chunked).  For an aws-chunked upload the decoded length
    counts, not the framed one.  Lengths that do not parse are left to the
    body planner, which refuses them with its own error.
    """
    decoded = _one(headers, "x-amz-decoded-content-length")
    declared: int | None = body_length
    if decoded is not None and decoded.strip().isdigit():
        declared = int(decoded)
    if declared is not None and declared > limits.max_object_size:
        raise S3Error(
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed object size.",
            400,
            f"body of {declared} bytes exceeds max_object_size = {limits.max_object_size}",
        )
