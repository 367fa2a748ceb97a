"""Tests for s3relay.body.multidelete: DeleteObjects bodies held, checked, then released whole;
and StreamingBody's verify_first mode that keeps the upstream request from starting."""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Any

import pytest
from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

from s3relay.access.policy import ClientPolicy, parse_policy
from s3relay.body.digests import PayloadChecker
from s3relay.body.multidelete import (
    MAX_DELETE_BODY,
    CheckedDeleteBody,
    hold_for_check,
    rewritten_plan,
)
from s3relay.body.plan import BodyPlan, PlainBody
from s3relay.body.producer import StreamingBody
from s3relay.s3 import sigv4
from s3relay.s3.deletexml import parse_delete
from s3relay.s3.errors import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
SCOPED = parse_policy(buckets="b", prefixes="b:photos/, b:caf\u00e9/")


def delete_body(*keys: str, ns: bool = True) -> bytes:
    xmlns = f' xmlns="{NS}"' if ns else ""
    objects = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
    return f'<?xml version="1.0" encoding="UTF-8"?><Delete{xmlns}>{objects}</Delete>'.encode()


def checked(policy: ClientPolicy = SCOPED, md5: str | None = None) -> CheckedDeleteBody:
    inner = PlainBody(PayloadChecker(None, md5, {}))
    return CheckedDeleteBody(inner, policy, "scoped", "b")


def run(body: bytes, policy: ClientPolicy = SCOPED, piece: int = 7) -> bytes:
    f = checked(policy)
    for i in range(0, len(body), piece):
        assert f.feed(body[i : i + piece]) == b""  # nothing leaves before the check
    return f.finish()


def code(body: bytes, policy: ClientPolicy = SCOPED) -> str:
    with pytest.raises(S3Error) as info:
        run(body, policy)
    return info.value.code


@pytest.mark.parametrize("ns", [True, False])
def test_allowed_keys_released_as_read_and_written_anew(ns: bool) -> None:
    body = delete_body("photos/a", "photos/b c", ns=ns)
    released = run(body)
    assert released == parse_delete(body).to_xml()
    assert [o.key for o in parse_delete(released).objects] == ["photos/a", "photos/b c"]


def test_one_forbidden_key_refuses_all() -> None:
    assert code(delete_body("photos/a", "private/x")) == "AccessDenied"


def test_escaped_keys_are_checked_decoded() -> None:
    # &#112; is "p": the decoded key is photos/x, allowed, and sent as such.
    assert run(delete_body("&#112;hotos/x")) == parse_delete(delete_body("photos/x")).to_xml()
    # "photos/&lt;" decodes to photos/<, allowed; "ph&amp;otos/" is not photos/.
    run(delete_body("photos/&lt;"))
    assert code(delete_body("ph&amp;otos/x")) == "AccessDenied"
    assert parse_delete(run(delete_body("caf\u00e9/x"))).objects[0].key == "caf\u00e9/x"


def test_a_key_split_by_a_field_element_is_malformed_not_checked_by_its_tail() -> None:
    """The review's bypass: the text after <Size/> is under the prefix, the
    whole text (what an upstream reading the concatenation deletes) is not."""
    assert code(delete_body("backup/<Size/>photos/zzz")) == "MalformedXML"


def test_dot_segments_refused() -> None:
    assert code(delete_body("photos/../private/x")) == "AccessDenied"


def test_doctype_refused() -> None:
    body = (
        b'<!DOCTYPE Delete [<!ENTITY e "photos/">]><Delete><Object><Key>&e;x</Key></Object>'
        b"</Delete>"
    )
    assert code(body) == "MalformedXML"


@pytest.mark.parametrize(
    "body", [b"", b"<Delete/>", b"<Delete><Object></Object></Delete>", b"garbage", b"<Delete>"]
)
def test_malformed(body: bytes) -> None:
    assert code(body) == "MalformedXML"


def test_more_than_1000_keys() -> None:
    assert code(delete_body(*(f"photos/{i}" for i in range(1001)))) == "MalformedXML"


def test_1000_long_keys_fit() -> None:
    body = delete_body(*(f"photos/{i:04d}" + "k" * 1010 for i in range(1000)))
    assert len(body) < MAX_DELETE_BODY
    assert run(body, piece=65536) == body


def test_huge_body_refused_while_streaming() -> None:
    f = checked()
    with pytest.raises(S3Error) as info:
        for _ in range(MAX_DELETE_BODY // 65536 + 2):
            f.feed(b" " * 65536)
    assert info.value.code == "EntityTooLarge"


def test_inner_verification_runs_first() -> None:
    body = delete_body("photos/a")
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    f = checked(md5=good)
    f.feed(body)
    assert f.finish() == body
    f = checked(md5=base64.b64encode(hashlib.md5(b"x").digest()).decode())
    f.feed(body)
    with pytest.raises(S3Error) as info:
        f.finish()
    assert info.value.code == "BadDigest"


def test_hold_for_check() -> None:
    plan = BodyPlan(100, sigv4.UNSIGNED_PAYLOAD, {})
    new_plan, f = hold_for_check(plan, PlainBody(PayloadChecker(None, None, {})), SCOPED, "c", "b")
    assert new_plan.verify_first and new_plan.length == 100
    assert isinstance(f, CheckedDeleteBody)
    with pytest.raises(S3Error) as info:
        hold_for_check(BodyPlan(MAX_DELETE_BODY + 1, "UNSIGNED-PAYLOAD", {}), f, SCOPED, "c", "b")
    assert info.value.code == "EntityTooLarge"
    trailer = BodyPlan(
        100, sigv4.STREAMING_UNSIGNED_TRAILER, {"x-amz-trailer": "x-amz-checksum-crc32"}
    )
    with pytest.raises(S3Error) as info:
        hold_for_check(trailer, f, SCOPED, "c", "b")
    assert info.value.code == "InvalidRequest"


class Source:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseBody(self) -> None:
        self.calls.append("pause")

    def resumeBody(self) -> None:
        self.calls.append("resume")


@implementer(IConsumer)
class Consumer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        raise AssertionError

    def unregisterProducer(self) -> None:
        raise AssertionError


def producer(body: bytes) -> tuple[StreamingBody, list[S3Error], list[str]]:
    rejected: list[S3Error] = []
    fired: list[str] = []
    p = StreamingBody(len(body), checked(), Source(), rejected.append, verify_first=True)
    assert p.verified is not None
    p.verified.addCallback(lambda _: fired.append("verified"))
    return p, rejected, fired


def test_verify_first_fires_only_after_a_good_body_then_sends_it_all() -> None:
    body = delete_body("photos/a", "photos/b")
    p, rejected, fired = producer(body)
    p.dataReceived(body[:10])
    p.dataReceived(body[10:])
    assert fired == []
    p.bodyComplete()
    assert fired == ["verified"] and rejected == []
    consumer = Consumer()
    done: list[object] = []
    p.startProducing(consumer).addBoth(done.append)
    assert consumer.data == body
    assert done == [None]


def test_verify_first_refusal_never_fires() -> None:
    body = delete_body("photos/a", "private/x")
    p, rejected, fired = producer(body)
    p.dataReceived(body)
    p.bodyComplete()
    assert fired == []
    assert [e.code for e in rejected] == ["AccessDenied"]


def test_without_verify_first_nothing_changes() -> None:
    p = StreamingBody(3, PlainBody(PayloadChecker(None, None, {})), Source(), lambda e: None)
    assert p.verified is None


def test_authorize_defers_keys_only_when_told() -> None:
    from s3relay.access.policy import authorize
    from s3relay.s3.addressing import Target
    from s3relay.s3.operations import Operation

    multi = Operation("DeleteObjects", "delete")
    target = Target("b", b"", False)
    with pytest.raises(S3Error):
        authorize(SCOPED, "scoped", multi, target, {})
    authorize(SCOPED, "scoped", multi, target, {}, body_keys_checked=True)
    with pytest.raises(S3Error):  # the bucket and class are still checked
        authorize(SCOPED, "scoped", multi, Target("other", b"", False), {},
                  body_keys_checked=True)


def test_rewritten_plan_has_the_new_bodys_length_and_digests() -> None:
    body = parse_delete(delete_body("photos/a")).to_xml()
    headers = {"content-md5": ["stale"], "x-amz-checksum-crc32": ["stale"],
               "x-amz-checksum-sha256": ["stale"], "x-amz-checksum-algorithm": ["CRC32"]}
    plan = rewritten_plan(body, headers)
    assert plan.length == len(body)
    assert plan.payload_hash == hashlib.sha256(body).hexdigest()
    assert plan.headers == {
        "content-md5": base64.b64encode(hashlib.md5(body).digest()).decode(),
        "x-amz-checksum-crc32": base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode(),
        "x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
    }
    assert not plan.verify_first
