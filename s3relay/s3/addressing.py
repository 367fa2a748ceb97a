# -*- test-case-name: tests.unit.test_addressing -*-
"""Which bucket and key a request names, and where that lives upstream.

Clients may address a bucket path-style (``/bucket/key``) or virtual-host
style (``bucket.<hostname>/key``); the upstream may want either.  The key is
kept as the exact bytes the client meant (percent-decoded once, never
normalised) and re-encoded once for the upstream, so keys with spaces, ``+``,
``%2F``, ``~`` or unicode arrive byte for byte.

Two rules keep a path from naming one thing to the relay's policy and
another to whatever sits behind it: a path (or copy source) with a ``.`` or
``..`` segment is refused unless ``[server] allow_dot_segments = yes``
(``check_dot_segments``), and only bucket names that are one DNS label go
virtual-host style upstream (``virtual_hostable``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, Sequence
from urllib.parse import unquote_to_bytes

from s3relay.s3.errors import S3Error
from s3relay.s3.signing import uri_encode

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")

# botocore's rule for virtual-host style (utils.check_dns_name, and the
# endpoint rules' aws.isVirtualHostableS3Bucket(Bucket, false)): one DNS label
# of 3 to 63 lowercase letters, digits and hyphens, starting and ending with a
# letter or digit.  No dots, no underscores, no upper case.
_VIRTUAL_HOSTABLE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")

#: The segments a path-normalizing server or proxy collapses (RFC 3986 §5.2.4).
_DOT_SEGMENTS = frozenset({b".", b".."})


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


def has_dot_segment(decoded: bytes) -> bool:
    """Whether the percent-decoded path ``decoded`` has a ``.`` or ``..`` segment.

    Only whole segments count: ``a..b``, ``.hidden``, ``x/.y`` and ``...`` do
    not.  The path is split after decoding, so ``%2e``, ``.%2E`` and
    ``..%2F`` count as well as the raw forms (S3 reads ``%2F`` as ``/``).
    """
    return any(segment in _DOT_SEGMENTS for segment in decoded.split(b"/"))


def check_dot_segments(raw_path: bytes, copy_sources: Sequence[str] = ()) -> None:
    """Refuse a request path or ``x-amz-copy-source`` value with a dot segment.

    S3 itself never normalises: ``/shared/../team-a-data/k`` is the key
    ``../team-a-data/k`` in bucket ``shared``, and that is what the policy
    checks.  But any store or proxy behind the relay that normalises paths
    (RFC 3986 dot-segment removal, as most HTTP servers and proxies do) reads
    it as ``/team-a-data/k``: another bucket, which the policy never saw.  So
    such a request is refused before anything else, with InvalidRequest, the
    code S3 uses for a well-formed request it will not serve as asked (e.g.
    a dotted bucket name on Transfer Acceleration): a client does not retry
    it, and it is not confused with an authentication or policy refusal.
    """
    if has_dot_segment(unquote_to_bytes(raw_path)):
        raise _dot_segment_error("the request path")
    for value in copy_sources:
        # As operations.parse_copy_source reads it: the part before "?", decoded once.
        if has_dot_segment(unquote_to_bytes(value.partition("?")[0])):
            raise _dot_segment_error("x-amz-copy-source")


def _dot_segment_error(where: str) -> S3Error:
    return S3Error(
        "InvalidRequest",
        f"Dot segments ('.' or '..' between slashes, also percent-encoded) are not "
        f"allowed in {where}.",
        400,
        f"dot segment in {where} (allow_dot_segments = no)",
    )


def parse_target(
    host: str,
    raw_path: bytes,
    hostnames: tuple[str, ...],
    *,
    allow_dot_segments: bool = False,
    copy_sources: Sequence[str] = (),
) -> Target:
    """The target of a request with ``Host: host`` and request path ``raw_path``.

    Unless ``allow_dot_segments``, a ``.`` or ``..`` segment in the path or in
    one of ``copy_sources`` (the request's ``x-amz-copy-source`` values) is
    refused (``check_dot_segments``); in virtual-host style requests the whole
    path is the key, and is checked the same way.
    """
    if not raw_path.startswith(b"/"):
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.", 400)
    if not allow_dot_segments:
        check_dot_segments(raw_path, copy_sources)
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


def virtual_hostable(bucket: str) -> bool:
    """Whether ``bucket`` may go virtual-host style (``bucket.<endpoint>``) upstream.

    botocore's rule: a name that is one DNS label of 3 to 63 characters,
    lowercase letters, digits and hyphens, not starting or ending with a
    hyphen.  Every other name the relay accepts -- with a dot, an
    underscore, an upper-case letter, shorter or longer -- goes path style
    even with ``addressing = virtual``, as botocore sends it.  A dotted name
    in the Host would be read by the upstream (and any wildcard certificate)
    as a bucket under a subdomain: ``shared.team-a-data.<endpoint>`` is
    bucket ``shared`` to a store that takes the first label.  An upper-case
    name would be folded to lower case by anything that treats the Host as
    a DNS name: another bucket again.
    """
    return _VIRTUAL_HOSTABLE.fullmatch(bucket) is not None


def upstream_location(target: Target, upstream: UpstreamAddress) -> tuple[str, str]:
    """(Host header, encoded path) of ``target`` at the upstream.

    With ``addressing = virtual`` only ``virtual_hostable`` buckets go in the
    Host: the first label of the upstream Host is then exactly the bucket
    name; all other requests are path style.
    """
    key = uri_encode(target.key, safe="/")
    if target.bucket is None:
        return upstream.netloc, "/"
    if upstream.addressing == "virtual" and virtual_hostable(target.bucket):
        return f"{target.bucket}.{upstream.netloc}", "/" + key
    return upstream.netloc, f"/{target.bucket}" + ("/" + key if target.slash else "")
