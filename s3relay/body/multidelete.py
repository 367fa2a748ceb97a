# -*- test-case-name: tests.unit.test_multidelete -*-
"""DeleteObjects (POST ?delete) keys checked against a client's prefixes.

A multi-delete names its keys in the XML body, not in the URL, so a
prefix-restricted client could otherwise delete anything in its bucket.
The body is small (S3 allows 1000 keys of at most 1024 bytes), so it is
held whole, up to ``MAX_DELETE_BODY``, by a ``BodyFilter`` that returns
nothing while the body arrives.  At the end every key is checked; only then
is the body released, byte for byte as the client sent it (so Content-MD5
and checksum headers stay valid).  The caller marks the plan
``verify_first`` so that the upstream request does not even start before
the check passed: a refused multi-delete sends the upstream nothing.
Pure, stdlib only.
"""

from __future__ import annotations

from dataclasses import replace

from s3relay.access.policy import ClientPolicy, check_keys
from s3relay.body.plan import BodyFilter, BodyPlan
from s3relay.s3.errors import S3Error
from s3relay.s3.operations import delete_objects_keys

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
        keys = delete_objects_keys(body)
        check_keys(self._policy, self._client_name, self._bucket, keys, "multi-delete key")
        return body


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
