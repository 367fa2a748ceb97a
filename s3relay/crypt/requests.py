# -*- test-case-name: tests.unit.test_crypt_requests -*-
"""The upstream request an operation under an encrypted prefix turns into:
its body plan, the headers added and removed, its query, and how the answer
is rewritten (``rules`` said which treatment it gets).

Pure, stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Mapping, Sequence

from s3relay.body.plan import BodyFilter, BodyPlan
from s3relay.crypt.keys import UnusableKey
from s3relay.crypt.listings import plaintext_listing
from s3relay.crypt.rules import Treatment
from s3relay.crypt.settings import EncryptionConfig
from s3relay.crypt.uploads import CompleteBody, plaintext_parts, with_client_upload_id
from s3relay.crypt.writing import plaintext_claims, sealed
from s3relay.s3.addressing import Target
from s3relay.s3.errors import S3Error

#: Plans the client's body: (plaintext only) -> plan, filter (``body.plan.plan_body``).
PlanBody = Callable[[bool], tuple[BodyPlan, BodyFilter]]


@dataclass(frozen=True)
class Translation:
    plan: BodyPlan
    body_filter: BodyFilter
    #: Headers set on the upstream request (the relay's metadata).
    added: Mapping[str, str] = field(default_factory=dict)
    #: Client headers that do not go upstream (claims about the plaintext).
    removed: tuple[str, ...] = ()
    #: The query for the upstream: the upstream's own upload id.
    pairs: tuple[tuple[bytes, bytes], ...] = ()
    #: Rewrites the upstream's 200 answer body before the client sees it.
    rewrite: Callable[[bytes], bytes] | None = None
    #: The upstream's upload id, for an operation on an upload.
    upload_id: str | None = None
    #: The answer's ETag is an encrypted object's or part's (``etags``).
    shows_etag: bool = False


def no_such_upload(reason: str) -> S3Error:
    return S3Error(
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload "
        "may have been aborted or completed.",
        404,
        reason,
    )


def _upstream_upload_id(
    encryption: EncryptionConfig, target: Target, client_id: str, required: bool
) -> tuple[str, bytes | None]:
    assert target.bucket is not None
    try:
        return encryption.keys.open_upload_id(target.bucket, target.key, client_id)
    except UnusableKey as e:
        if required:
            raise no_such_upload(str(e)) from None
        return client_id, None  # an id from ListMultipartUploads: its upload is to be dropped


def _part_number(query: Mapping[bytes, bytes]) -> int:
    value = query.get(b"partNumber", b"")
    if not value.isdigit() or not 1 <= int(value) <= 10_000:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, "
                      "inclusive", 400, f"partNumber {value[:16]!r}")
    return int(value)


def translate(
    treatment: Treatment,
    encryption: EncryptionConfig,
    target: Target,
    headers: Mapping[str, Sequence[str]],
    pairs: Sequence[tuple[bytes, bytes]],
    query: Mapping[bytes, bytes],
    plan_body: PlanBody,
) -> Translation:
    """How the request goes upstream (``READ`` is ``reader``'s, and left as it is)."""
    ring = encryption.keys
    bucket, key = target.bucket or "", target.key
    claims = tuple(plaintext_claims(headers))
    if treatment is Treatment.LIST:
        plan, body_filter = plan_body(False)
        return Translation(plan, body_filter, pairs=tuple(pairs), rewrite=partial(
            plaintext_listing, prefixes=encryption.key_prefixes(target.bucket)))
    if treatment is Treatment.SEAL:
        data_key, stored = ring.seal_metadata(bucket, key)
        return Translation(*sealed(*plan_body(True), data_key), stored, claims, tuple(pairs),
                           shows_etag=True)
    if treatment is Treatment.START_UPLOAD:
        data_key, stored = ring.seal_metadata(bucket, key, multipart=True)
        plan, body_filter = plan_body(False)
        given_id = partial(ring.upload_id, bucket, key, data_key=data_key)
        return Translation(plan, body_filter, stored, claims, tuple(pairs),
                           partial(with_client_upload_id, client_id=given_id))
    if treatment is Treatment.READ:
        plan, body_filter = plan_body(False)
        return Translation(plan, body_filter, pairs=tuple(pairs))
    client_id = query.get(b"uploadId", b"").decode("utf-8", "replace")
    upload_id, part_key = _upstream_upload_id(
        encryption, target, client_id, required=treatment in (Treatment.SEAL_PART,
                                                             Treatment.COMPLETE))
    upstream_pairs = tuple(
        (name, upload_id.encode() if name == b"uploadId" else value) for name, value in pairs
    )
    if treatment is Treatment.SEAL_PART:
        assert part_key is not None
        part = _part_number(query)
        return Translation(*sealed(*plan_body(True), part_key, part), {}, claims,
                           upstream_pairs, upload_id=upload_id, shows_etag=True)
    plan, body_filter = plan_body(treatment is Treatment.COMPLETE)
    if treatment is Treatment.COMPLETE:
        return Translation(replace(plan, verify_first=True), CompleteBody(body_filter), {},
                           claims, upstream_pairs, upload_id=upload_id)
    rewrite = plaintext_parts if treatment is Treatment.LIST_PARTS else None
    return Translation(plan, body_filter, {}, (), upstream_pairs, rewrite, upload_id)
