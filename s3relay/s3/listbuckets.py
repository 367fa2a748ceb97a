# -*- test-case-name: tests.unit.test_listbuckets -*-
"""ListBuckets answers cut down to the buckets a client may use.

A client restricted to ``buckets = backups-*`` should not learn the names
of every other bucket of the upstream account.  The upstream's
``ListAllMyBucketsResult`` is rewritten by removing the byte ranges of the
``<Bucket>`` elements whose ``<Name>`` the client's policy does not allow;
everything else (declaration, namespace, Owner, pagination, whitespace)
stays byte for byte as S3 sent it, so no re-serialisation can change it.

The document is parsed with expat and refused if it declares a document
type (so no entity is declared, expanded or fetched).  Anything unexpected
fails closed: an S3Error (500 InternalError), never the unfiltered list.
Pure, stdlib only.
"""

from __future__ import annotations

import re
from typing import Callable, NoReturn, Sequence
from xml.parsers import expat

from s3relay.s3.errors import S3Error
from s3relay.s3.safexml import S3_NS, hardened_parser

#: Bytes of a ListBuckets answer the relay holds to filter it (10,000 buckets
#: take about 1.5 MB).
MAX_LIST_BUCKETS_BYTES = 4 * 1024 * 1024


class _Refused(Exception):
    pass


def _internal(reason: str) -> S3Error:
    return S3Error(
        "InternalError",
        "We encountered an internal error. Please try again.",
        500,
        f"ListBuckets answer: {reason}",
    )


def filter_buckets(document: bytes, allowed: Callable[[str], bool]) -> bytes:
    """``document`` without the ``<Bucket>`` entries whose name ``allowed`` refuses."""
    cuts: list[tuple[int, int]] = []  # byte ranges of refused <Bucket> elements
    stack: list[str] = []
    name: list[str] = []
    bucket_start: list[int] = []
    seen_root: list[bool] = []

    def refuse(*_: object) -> NoReturn:
        raise _Refused("document type declarations are not accepted")

    def start(tag: str, attrs: dict[str, str]) -> None:
        namespace, _, local = tag.rpartition("}")
        if namespace not in ("", S3_NS):
            raise _Refused(f"element in namespace {namespace[:64]!r}")
        if not stack:
            if local != "ListAllMyBucketsResult" or seen_root:
                raise _Refused(f"root element {local[:64]!r}")
            seen_root.append(True)
        path = "/".join(stack[1:] + [local])
        if path == "Buckets/Bucket":
            bucket_start[:] = [parser.CurrentByteIndex]
            name.clear()
        stack.append(local)

    def end(tag: str) -> None:
        path = "/".join(stack[1:])
        stack.pop()
        if path == "Buckets/Bucket":
            bucket_name = "".join(name)
            if not bucket_name or not allowed(bucket_name):
                close = document.index(b">", parser.CurrentByteIndex) + 1
                cuts.append((bucket_start[0], close))

    def chars(data: str) -> None:
        if stack[1:] == ["Buckets", "Bucket", "Name"]:
            name.append(data)

    parser = hardened_parser(refuse, "UTF-8")  # byte offsets need one encoding
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(document, True)
    except (expat.ExpatError, _Refused, ValueError, LookupError) as e:
        raise _internal(str(e)[:200]) from None
    if not seen_root:
        raise _internal("empty")
    if not cuts:
        return document
    out, position = [], 0
    for begin, close in cuts:
        out.append(document[position:begin])
        position = close
    out.append(document[position:])
    return b"".join(out)


_BUCKET = re.compile(rb"<Bucket>.*?<Name>(.*?)</Name>.*?</Bucket>", re.DOTALL)
_BUCKETS = re.compile(rb"<Buckets>.*?</Buckets>|<Buckets\s*/>", re.DOTALL)


def merge_buckets(document: bytes, others: Sequence[bytes]) -> bytes:
    """``document`` with the ``<Bucket>`` entries of ``others`` (each already
    read by ``filter_buckets``) among its own, in S3's order: by name."""
    entries = [
        (match.group(1), match.group(0))
        for doc in (document, *others)
        for match in _BUCKET.finditer(doc)
    ]
    entries.sort(key=lambda entry: entry[0])
    merged = b"<Buckets>%s</Buckets>" % b"".join(element for _, element in entries)
    if _BUCKETS.search(document) is None:
        raise _internal("no <Buckets> element to merge into")
    return _BUCKETS.sub(lambda _: merged, document, count=1)
