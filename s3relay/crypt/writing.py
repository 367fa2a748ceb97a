# -*- test-case-name: tests.unit.test_crypt_writing -*-
"""PutObject under an encrypted prefix: the body sealed on its way upstream.

The client's body is verified as ever (its SHA-256, chunk signatures,
Content-MD5, checksums, all of the plaintext) by the filter ``plan_body``
made; ``SealedBody`` seals that filter's output.  The last segment is
sealed only after the filter's final check passed, so a body that fails it
reaches the upstream short and nothing is stored.  The upstream request is
signed ``UNSIGNED-PAYLOAD`` for the stored length, which the plaintext
length fixes (``layout.stored_size``), and carries none of the client's
claims about the plaintext.

Pure, stdlib only.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from s3relay.body.plan import BodyFilter, BodyPlan
from s3relay.crypt.keys import META_PREFIX
from s3relay.crypt.layout import stored_size
from s3relay.crypt.segments import Sealer
from s3relay.s3.signing import UNSIGNED_PAYLOAD


class SealedBody:
    """A verifying body filter whose output is sealed."""

    def __init__(self, inner: BodyFilter, sealer: Sealer) -> None:
        self._inner = inner
        self._sealer = sealer

    def feed(self, data: bytes) -> bytes:
        return self._sealer.feed(self._inner.feed(data))

    def finish(self) -> bytes:
        tail = self._inner.finish()  # raises when the body failed its check
        return self._sealer.feed(tail) + self._sealer.finish()


def sealed(
    plan: BodyPlan, body_filter: BodyFilter, data_key: bytes, part: int = 0
) -> tuple[BodyPlan, BodyFilter]:
    """The plan and filter that store the plaintext body of ``plan`` sealed
    (as upload part ``part``, or 0: a whole object)."""
    return (
        BodyPlan(stored_size(plan.length), UNSIGNED_PAYLOAD, plan.headers),
        SealedBody(body_filter, Sealer(data_key, part)),
    )


def plaintext_claims(headers: Mapping[str, Sequence[str]]) -> list[str]:
    """Client headers (lowercase) that describe the plaintext, or would pose
    as the relay's metadata: none of them go upstream."""
    return [
        name for name in headers
        if name == "content-md5" or name.startswith(("x-amz-checksum-", META_PREFIX))
        or name == "x-amz-sdk-checksum-algorithm"
    ]
