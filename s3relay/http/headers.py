# -*- test-case-name: tests.unit.test_headers -*-
"""Header rules shared by both directions: which headers are the connection's
own (RFC 9110 §7.6.1), how names go on the wire, what a well-formed field is.

Pure: no Twisted.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence, TypeVar

#: Header names that describe one connection: the relay never forwards them
#: either way, and no configuration adds them.  The names a ``Connection``
#: header lists are the connection's too (``end_to_end``).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

#: RFC 9110 field names are tokens; values hold no control characters but tab.
#: (Twisted 22.4, bookworm's, checks neither.)
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_FIELD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

_Values = TypeVar("_Values")


def connection_named(values: Iterable[str]) -> frozenset[str]:
    """The header names listed by ``Connection`` header values, lower case."""
    return frozenset(
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    )


def end_to_end(headers: Mapping[str, _Values]) -> dict[str, _Values]:
    """``headers`` (lowercase names) without the hop-by-hop ones, those the
    ``Connection`` header names included."""
    connection: Sequence[str] = headers.get("connection", ())  # type: ignore[assignment]
    named = connection_named(connection)
    return {
        name: values
        for name, values in headers.items()
        if name not in HOP_BY_HOP and name not in named
    }


def header_text(value: bytes) -> str:
    """A header value as text: its UTF-8 reading where the bytes are UTF-8,
    else its ISO-8859-1 reading.

    That is what a client signed: SDKs that send non-ASCII values as UTF-8
    (botocore with urllib3 2, Go, Java) sign those bytes; those that send
    ISO-8859-1 (http.client) sign the UTF-8 of the text they had.  SigV4's
    canonical request is UTF-8, so either way the text, encoded again, is
    what the signature covers.
    """
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def wire_name(name: bytes) -> bytes:
    """A header name as it goes on the wire: ``x-amz-*`` in lower case.

    Twisted title-cases header names; S3 writes ``x-amz-meta-*`` in lower
    case, SDKs take user-metadata keys verbatim from the names, and
    S3-compatible stores may keep them as spelled.
    """
    return name.lower() if name[:6].lower() == b"x-amz-" else name


def response_head(
    version: bytes, code: bytes, reason: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> list[bytes]:
    """A response's status line and header lines, names as ``wire_name``
    spells them; a field with a line break in it is left out."""
    lines = [version, b" ", code, b" ", reason, b"\r\n"]
    for name, value in headers:
        if b"\r" in name + value or b"\n" in name + value:
            continue
        lines.extend((wire_name(name), b": ", value, b"\r\n"))
    lines.append(b"\r\n")
    return lines


def valid_field(line: bytes) -> bool:
    """Whether a header line (or a continuation of one) is well formed."""
    if line[:1] in (b" ", b"\t"):
        return not _BAD_FIELD_VALUE.search(line)
    name, colon, value = line.partition(b":")
    return bool(colon) and bool(_FIELD_NAME.fullmatch(name)) and not _BAD_FIELD_VALUE.search(value)
