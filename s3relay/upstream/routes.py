# -*- test-case-name: tests.unit.test_routes -*-
"""Several upstreams: which store a bucket lives in.

``[upstream]`` is the default, for every bucket no ``[upstream:NAME]``
claims; each named one lists bucket names or globs in ``buckets``.  Two
upstreams whose globs could both match one bucket name are a config error,
found by intersecting the globs over the characters bucket names have, so
that where a bucket goes never depends on the order of sections.

Pure, stdlib only.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Callable, Mapping
from xml.sax.saxutils import escape

from s3relay.ini import ConfigError, Section
from s3relay.upstream.settings import UpstreamConfig
from s3relay.upstream.transforms import Transforms

DEFAULT = "default"

#: Characters of S3 bucket names (and of the legacy ones: upper case, ``_``).
_ALPHABET = frozenset(string.ascii_letters + string.digits + ".-_")


@dataclass(frozen=True)
class Route:
    """One upstream and the buckets it serves."""

    name: str
    upstream: UpstreamConfig
    #: Bucket names or globs (``fnmatch``); () for the default upstream.
    buckets: tuple[str, ...] = ()
    #: The credential set requests routed here are signed with, unless a
    #: client names its own for this upstream; None: the client's.
    credentials: str | None = None
    #: Storage classes and headers added to writes routed here.
    transforms: Transforms | None = None

    def serves(self, bucket: str) -> bool:
        return any(fnmatchcase(bucket, glob) for glob in self.buckets)


@dataclass(frozen=True)
class Routes:
    """Every upstream: the default and the named ones, by name."""

    default: Route
    named: Mapping[str, Route]

    def route(self, bucket: str | None) -> Route:
        """The upstream of ``bucket`` (service requests: the default's)."""
        if bucket is not None:
            for route in self.named.values():
                if route.serves(bucket):
                    return route
        return self.default

    def all(self) -> tuple[Route, ...]:
        return (self.default, *self.named.values())


def location_constraint(region: str) -> bytes:
    """The CreateBucket body that puts a bucket in ``region``."""
    return (
        '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<LocationConstraint>{escape(region)}</LocationConstraint></CreateBucketConfiguration>"
    ).encode("utf-8")


def _tokens(glob: str) -> list[frozenset[str] | None]:
    """A glob as tokens: the characters one position may be, or None for ``*``."""
    tokens: list[frozenset[str] | None] = []
    i = 0
    while i < len(glob):
        char, i = glob[i], i + 1
        if char == "*":
            tokens.append(None)
        elif char == "?":
            tokens.append(_ALPHABET)
        elif char == "[" and glob.find("]", i + 1) != -1:
            end = glob.find("]", i + 1)
            tokens.append(frozenset(c for c in _ALPHABET if fnmatchcase(c, glob[i - 1:end + 1])))
            i = end + 1
        else:
            tokens.append(frozenset({char}))
    return tokens


def globs_overlap(first: str, second: str) -> bool:
    """Whether some bucket name matches both globs."""
    a, b = _tokens(first), _tokens(second)

    @lru_cache(maxsize=None)
    def meet(i: int, j: int) -> bool:  # can a[i:] and b[j:] match one string?
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] is None:  # '*': nothing more, or one of b's characters
            return meet(i + 1, j) or (j < len(b) and meet(i, j + 1))
        if j < len(b) and b[j] is None:
            return meet(i, j + 1) or (i < len(a) and meet(i + 1, j))
        if i == len(a) or j == len(b):
            return False
        return bool(a[i] & b[j]) and meet(i + 1, j + 1)  # type: ignore[operator]

    return meet(0, 0)


def parse_routes(
    default: UpstreamConfig,
    sections: Mapping[str, Section],
    parse_upstream: Callable[[Section], UpstreamConfig],
    transforms: Callable[[Section], Transforms],
    default_transforms: Transforms,
) -> Routes:
    """The ``[upstream:NAME]`` sections (by NAME) beside the default upstream."""
    named: dict[str, Route] = {}
    for name, section in sections.items():
        if name == DEFAULT:
            raise ConfigError(section.name, None, f"'{DEFAULT}' names [upstream] itself")
        globs = tuple(g.strip() for g in section.get("buckets").split(",") if g.strip())
        if not globs:
            raise ConfigError(section.name, "buckets", "names no bucket")
        for glob in globs:
            if any(c.isspace() or c == "/" for c in glob):
                raise ConfigError(section.name, "buckets", f"{glob[:64]!r} is not a bucket glob")
        for other in named.values():
            for glob in globs:
                clash = next((g for g in other.buckets if globs_overlap(glob, g)), None)
                if clash is not None:
                    raise ConfigError(
                        section.name, "buckets",
                        f"{glob!r} and [upstream:{other.name}]'s {clash!r} can match the "
                        "same bucket",
                    )
        named[name] = Route(
            name, parse_upstream(section), globs, section.optional("credentials"),
            transforms(section),
        )
    return Routes(Route(DEFAULT, default, (), None, default_transforms), named)
