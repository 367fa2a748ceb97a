"""Tests for s3relay.s3.listbuckets (the XML rewrite) and s3relay.upstream.response (the capped relay)."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

import pytest
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers

from s3relay.access.policy import parse_policy
from s3relay.s3.errors import S3Error
from s3relay.s3.listbuckets import MAX_LIST_BUCKETS_BYTES, filter_buckets
from s3relay.upstream.response import FilteredRelay, ResponseRefused, Rewrite

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def document(*names: str, ns: bool = True, extra: str = "") -> bytes:
    buckets = "".join(
        f"<Bucket><Name>{n}</Name><CreationDate>2025-01-01T00:00:00.000Z</CreationDate>"
        f"<BucketRegion>us-east-1</BucketRegion></Bucket>"
        for n in names
    )
    xmlns = f' xmlns="{NS}"' if ns else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult{xmlns}>'
        f"<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner>"
        f"<Buckets>{buckets}</Buckets>{extra}</ListAllMyBucketsResult>"
    ).encode()


def names(xml: bytes) -> list[str]:
    root = ElementTree.fromstring(xml)
    return [e.text or "" for e in root.iter() if e.tag.rpartition("}")[2] == "Name"]


def allow(*globs: str) -> Any:
    return parse_policy(buckets=", ".join(globs)).bucket_allowed


@pytest.mark.parametrize("ns", [True, False])
def test_keeps_only_allowed_buckets(ns: bool) -> None:
    xml = document("backups-1", "private", "backups-2", "logs", ns=ns)
    out = filter_buckets(xml, allow("backups-*"))
    assert names(out) == ["backups-1", "backups-2"]
    # Everything else byte for byte.
    assert out == document("backups-1", "backups-2", ns=ns)


def test_unchanged_when_all_allowed() -> None:
    xml = document("a", "b")
    assert filter_buckets(xml, allow("*")) is xml


def test_none_allowed_leaves_empty_buckets() -> None:
    out = filter_buckets(document("a", "b") + b"\n", allow("zzz"))
    assert names(out) == []
    assert b"<Buckets></Buckets>" in out and b"<Owner>" in out


def test_empty_bucket_list() -> None:
    xml = document()
    assert filter_buckets(xml, allow("a")) == xml


def test_pagination_and_whitespace_kept() -> None:
    xml = (
        b'<?xml version="1.0"?>\n<ListAllMyBucketsResult xmlns="' + NS.encode() + b'">\n'
        b"  <Buckets>\n    <Bucket>\n      <Name>a</Name>\n    </Bucket>\n"
        b"    <Bucket><Name>b</Name></Bucket>\n  </Buckets>\n"
        b"  <ContinuationToken>tok</ContinuationToken>\n</ListAllMyBucketsResult>\n"
    )
    out = filter_buckets(xml, allow("b"))
    assert names(out) == ["b"]
    assert b"<ContinuationToken>tok</ContinuationToken>" in out
    assert out.replace(b" ", b"").replace(b"\n", b"") == xml.replace(b" ", b"").replace(
        b"\n", b""
    ).replace(b"<Bucket><Name>a</Name></Bucket>", b"")


def test_escaped_and_unicode_names() -> None:
    # Bucket names are plain, but the parser must compare decoded text, not raw bytes.
    xml = document("caf\u00e9", "a&amp;b", "ok")
    assert names(filter_buckets(xml, allow("a&b"))) == ["a&b"]
    assert names(filter_buckets(xml, allow("caf\u00e9"))) == ["caf\u00e9"]


def test_split_character_data() -> None:
    xml = document("ab").replace(b"<Name>ab</Name>", b"<Name>a<!-- c -->b</Name>")
    assert names(filter_buckets(xml, allow("ab"))) == ["ab"]
    assert names(filter_buckets(xml, allow("a"))) == []


def test_nameless_and_self_closing_buckets_dropped() -> None:
    xml = document("a").replace(b"<Buckets>", b"<Buckets><Bucket/><Bucket></Bucket>")
    out = filter_buckets(xml, allow("*"))
    assert out == document("a")


@pytest.mark.parametrize(
    "xml",
    [
        b"",
        b"not xml",
        b"<ListAllMyBucketsResult><Buckets>",
        b"<Error><Code>x</Code></Error>",
        b'<!DOCTYPE x [<!ENTITY e "private">]><ListAllMyBucketsResult><Buckets><Bucket>'
        b"<Name>&e;</Name></Bucket></Buckets></ListAllMyBucketsResult>",
        b'<!DOCTYPE ListAllMyBucketsResult SYSTEM "http://example.com/x.dtd">'
        b"<ListAllMyBucketsResult/>",
        b'<ListAllMyBucketsResult xmlns="urn:other"/>',
    ],
)
def test_malformed_is_internal_error(xml: bytes) -> None:
    with pytest.raises(S3Error) as info:
        filter_buckets(xml, allow("*"))
    assert info.value.code == "InternalError" and info.value.status == 500


def test_ten_thousand_buckets() -> None:
    xml = document(*(f"bucket-{i:05d}" for i in range(10000)))
    assert len(xml) < MAX_LIST_BUCKETS_BYTES
    out = filter_buckets(xml, allow("bucket-0000*"))
    assert names(out) == [f"bucket-{i:05d}" for i in range(10)]


class Request:
    """Enough of a RelayRequest for FilteredRelay."""

    def __init__(self) -> None:
        self.responseHeaders = Headers()
        self.written: list[bytes] = []
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        raise AssertionError("nothing streams while the body is held")

    def unregisterProducer(self) -> None:
        self.producer = None


def run(body_parts: list[bytes], cap: int, reason: Failure | None = None) -> tuple[Request, Any]:
    request = Request()
    request.responseHeaders.setRawHeaders(b"content-length", [b"999"])
    relay = FilteredRelay(request, Rewrite(lambda b: filter_buckets(b, allow("keep*")), cap))
    transport = StringTransport()
    relay.makeConnection(transport)
    results: list[Any] = []
    relay.done.addBoth(results.append)
    for part in body_parts:
        relay.dataReceived(part)
    relay.connectionLost(reason or Failure(ResponseDone()))
    return request, (results[0], transport)


def test_relay_rewrites_and_sets_length() -> None:
    xml = document("keep-1", "drop", "keep-2")
    request, (result, _) = run([xml[:50], xml[50:]], len(xml))
    assert result is None
    body = b"".join(request.written)
    assert names(body) == ["keep-1", "keep-2"]
    assert request.responseHeaders.getRawHeaders(b"content-length") == [b"%d" % len(body)]


def test_relay_over_cap_refuses_and_stops_upstream() -> None:
    xml = document("keep-1", "drop")
    request, (result, transport) = run([xml], len(xml) - 1)
    assert isinstance(result, Failure) and isinstance(result.value, ResponseRefused)
    assert result.value.error.code == "InternalError"
    assert "cap" in result.value.error.reason
    assert request.written == []
    assert transport.producerState == "stopped"


def test_relay_bad_document_refused() -> None:
    request, (result, _) = run([b"<x/>"], 100)
    assert isinstance(result.value, ResponseRefused)
    assert request.written == []


def test_relay_upstream_died_is_passed_on() -> None:
    request, (result, _) = run([b"<List"], 100, Failure(ResponseFailed([])))
    assert isinstance(result.value, ResponseFailed)
    assert request.written == []


def test_relay_encoded_response_refused() -> None:
    request = Request()
    request.responseHeaders.setRawHeaders(b"content-encoding", [b"gzip"])
    relay = FilteredRelay(request, Rewrite(lambda b: b, 100))
    relay.makeConnection(StringTransport())
    results: list[Any] = []
    relay.done.addBoth(results.append)
    relay.dataReceived(b"\x1f\x8b")
    relay.connectionLost(Failure(ResponseDone()))
    assert isinstance(results[0].value, ResponseRefused)
