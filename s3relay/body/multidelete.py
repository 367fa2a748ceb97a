# -*- test-case-name: tests.unit.test_multidelete -*-
"""DeleteObjects (POST ?delete) keys checked against a client's prefixes.

A multi-delete names its keys in the XML body, not in the URL, so a
prefix-restricted client could otherwise delete anything in its bucket.
The body is small (S3 allows 1000 keys of at most 1024 bytes), so it is
held whole, up to ``MAX_DELETE_BODY``, by a ``BodyFilter`` that returns
nothing while the body arrives.  At the end the client's digests are
checked, the body is read strictly (``s3.deletexml``) and every key is
checked; what goes upstream is then not the client's bytes but the request
as read, written anew (``rewritten_plan`` gives its length and digests), so
that the upstream deletes exactly the keys that were checked.  The caller
marks the plan ``verify_first`` so that the upstream request does not even
start before the check passed: a refused multi-delete sends the upstream
nothing.  Pure, stdlib only.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Mapping, Sequence

from s3relay.access.policy import ClientPolicy, check_keys
from s3relay.body.digests import body_digests
from s3relay.body.plan import BodyFilter, BodyPlan, declared_checksum_names
from s3relay.s3.deletexml import parse_delete
from s3relay.s3.errors import S3Error

#: Largest DeleteObjects body held for checking: 1000 keys of 1024 bytes,
#: XML-escaped, with their element tags and version ids fit well within it.
MAX_DELETE_BODY = 2 * 1024 * 1024


def too_large(size: int) -> S3Error:
    return S3Error(
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size.",
        400,
        f"DeleteObjects body of {size} bytes over the {MAX_DELETE_BODY}-byte cap",
    )


class CheckedDeleteBody:
    """Holds a DeleteObjects body until its keys passed ``policy``, then releases it."""

    def __init__(
        self, inner: BodyFilter, policy: ClientPolicy, client_name: str, bucket: str
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._client_name = client_name
        self._bucket = bucket
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> bytes:
        out = self._inner.feed(data)
        self._size += len(out)
        if self._size > MAX_DELETE_BODY:
            self._parts = []
            raise too_large(self._size)
        self._parts.append(out)
        return b""

    def finish(self) -> bytes:
        tail = self._inner.finish()  # the client's hashes and checksums first
        body = b"".join(self._parts) + tail
        self._parts = []
        if len(body) > MAX_DELETE_BODY:
            raise too_large(len(body))
        request = parse_delete(body)
        keys = [o.key_bytes for o in request.objects]
        check_keys(self._policy, self._client_name, self._bucket, keys, "multi-delete key")
        return request.to_xml()


def hold_for_check(
    plan: BodyPlan, body_filter: BodyFilter, policy: ClientPolicy, client_name: str, bucket: str
) -> tuple[BodyPlan, BodyFilter]:
    """The plan and filter of a DeleteObjects whose keys must pass ``policy`` first."""
    if plan.length > MAX_DELETE_BODY:
        raise too_large(plan.length)
    if "x-amz-trailer" in plan.headers:
        # The upstream body would be re-framed aws-chunked, not the XML itself.
        raise S3Error(
            "InvalidRequest",
            "Send the multi-delete body with its checksum in a header, not a trailer.",
            400,
            "DeleteObjects with a trailing checksum for a prefix-restricted client",
        )
    return replace(plan, verify_first=True), CheckedDeleteBody(
        body_filter, policy, client_name, bucket
    )


def rewritten_plan(body: bytes, client_headers: Mapping[str, Sequence[str]]) -> BodyPlan:
    """The upstream plan for ``body`` written by the relay: its length and
    SHA-256, a Content-MD5, and each checksum the client declared, computed anew."""
    checksums = declared_checksum_names(client_headers)
    return BodyPlan(
        len(body), hashlib.sha256(body).hexdigest(), body_digests(body, checksums)
    )
