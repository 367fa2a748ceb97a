# -*- test-case-name: tests.unit.test_targets -*-
"""The four forms of a request-target (RFC 9112 §3.2), and what the relay makes of each.

- origin-form, ``/path?query``: S3's own; served as it is.
- absolute-form, ``http://host/path?query``: what clients send to a proxy,
  and which an origin server must accept too (§3.2.2).  The relay serves it
  as the origin-form ``/path?query`` with the authority as its Host, so that
  it is the same request as ``GET /path`` with ``Host: host`` -- admission,
  addressing and the signature all see one Host.  A Host header naming
  another authority is refused (400 InvalidRequest): a client must send a
  Host identical to the authority (§3.2.2), and a proxy in front of the
  relay that routed or checked by the one while the relay served the other
  is how request smuggling starts.  Only ``http``/``https``, no userinfo.
- authority-form, ``host:port``: CONNECT's, asking for a tunnel.  The relay
  is no proxy: CONNECT (whatever its target) is 405 MethodNotAllowed with
  ``Allow``, and the channel closes the connection after it (the client may
  already be sending a tunnel's bytes); any other method with a target that
  is not ``/...`` or absolute is 400 InvalidURI.
- asterisk-form, ``*``: a question about the server as a whole (``OPTIONS *``,
  RFC 9110 §9.3.7).  No S3 resource is named.  What AWS S3 answers to it is
  not documented anywhere we could find, so the relay answers as S3 does a
  request-target it cannot parse: 400 InvalidURI "Couldn't parse the
  specified URI." (S3's documented error code, and what the relay already
  answered for any target not starting with ``/``), whatever the method.
  Twisted's own answer (200, or 405 ``Allow: OPTIONS``) is not used: it came
  before admission and left no access record (``PlainRequest.process``).

Every refusal here is made after admission (network, Host): ``read_target``
only says what it would be, and the resource raises it (``_decide``).
Pure: no Twisted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from s3relay.s3.errors import S3Error

#: The methods the relay relays (S3's), for a 405's ``Allow``.
ALLOWED_METHODS = "GET, HEAD, PUT, POST, DELETE"

ORIGIN, ABSOLUTE, AUTHORITY, ASTERISK = "origin", "absolute", "authority", "asterisk"

# scheme "://" authority [ path-abempty ] [ "?" query ]; a fragment is no part
# of a request-target.
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([/?][^#]*)?", re.DOTALL)
# A host name or IPv4 address, or an IP literal; an optional port.
_AUTHORITY = re.compile(rb"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class RequestTarget:
    """What a request-target is, and what the request is served as."""

    #: ORIGIN, ABSOLUTE, AUTHORITY or ASTERISK (anything else counts as AUTHORITY).
    form: str
    #: The origin-form target the request is served as (absolute-form mapped),
    #: or the target as sent when it is refused.
    uri: bytes
    #: A Host value for a request that sent none (an absolute-form's authority).
    host: bytes | None = None
    #: Why the request is refused, raised once it passed admission; None: served.
    refusal: S3Error | None = None


def invalid_uri(reason: str) -> S3Error:
    """S3's answer to a request-target it cannot parse."""
    return S3Error("InvalidURI", "Couldn't parse the specified URI.", 400, reason)


def method_not_allowed(reason: str) -> S3Error:
    return S3Error(
        "MethodNotAllowed",
        "The specified method is not allowed against this resource.",
        405,
        reason,
        headers={"Allow": ALLOWED_METHODS},
    )


def _shown(value: bytes) -> str:
    """``value`` for a log reason: capped, never raw control bytes."""
    text = value[:200].decode("latin-1")
    return repr(text + ("..." if len(value) > 200 else ""))


def read_target(method: bytes, target: bytes, host: Sequence[bytes] | None) -> RequestTarget:
    """The form of ``target`` (sent with ``method`` and the ``host`` header
    values, None without one), and what the relay does with it."""
    if method == b"CONNECT":
        return RequestTarget(
            AUTHORITY, target, refusal=method_not_allowed(
                f"CONNECT {_shown(target)}: the relay is no proxy and opens no tunnel"
            )
        )
    if target.startswith(b"/"):
        return RequestTarget(ORIGIN, target)
    if target == b"*":
        return RequestTarget(
            ASTERISK, target, refusal=invalid_uri(
                "asterisk-form request target (*) names no S3 resource"
            )
        )
    absolute = _ABSOLUTE.fullmatch(target)
    if absolute is None:
        return RequestTarget(
            AUTHORITY, target, refusal=invalid_uri(
                f"request target {_shown(target)} is neither origin-form (/...) nor absolute-form"
            )
        )
    scheme, authority, rest = absolute.group(1).lower(), absolute.group(2), absolute.group(3)
    uri = rest if rest is not None and rest.startswith(b"/") else b"/" + (rest or b"")
    if scheme not in (b"http", b"https"):
        return RequestTarget(ABSOLUTE, target, refusal=invalid_uri(
            f"absolute-form request target with scheme {_shown(scheme)}"
        ))
    if not _AUTHORITY.fullmatch(authority):
        # Userinfo (RFC 9110 §4.2.4: an error), an empty host (§4.2.1), or
        # characters no host name has.
        return RequestTarget(ABSOLUTE, target, refusal=invalid_uri(
            f"absolute-form request target with authority {_shown(authority)}"
        ))
    if host is None:
        return RequestTarget(ABSOLUTE, uri, host=authority)
    if len(host) != 1 or host[0].strip().lower() != authority.lower():
        shown = _shown(b", ".join(host))
        return RequestTarget(ABSOLUTE, uri, refusal=S3Error(
            "InvalidRequest",
            "The Host header does not match the authority of the request target.",
            400,
            f"absolute-form authority {_shown(authority)} but Host {shown}",
        ))
    return RequestTarget(ABSOLUTE, uri)
