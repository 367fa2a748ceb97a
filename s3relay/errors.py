# -*- test-case-name: tests.test_errors -*-
"""S3 errors as values.

Every refusal the relay makes is an ``S3Error``: the S3 error code a client
library knows how to interpret, the HTTP status that goes with it, and a
message for the client.  ``reason`` is for the log line only (it may say more
than the client should hear, but never a secret).  The resource turns the
value into the XML body S3 itself would send.
"""

from __future__ import annotations

from typing import Mapping
from xml.sax.saxutils import escape


class S3Error(Exception):
    """A request the relay refuses, expressed the way S3 would refuse it."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int = 400,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        #: Why, for the log: defaults to the client-facing message.
        self.reason = reason if reason is not None else message
        #: Extra response headers (``Retry-After`` for SlowDown).
        self.headers: Mapping[str, str] = headers or {}

    def to_xml(self, request_id: str, resource: str = "") -> bytes:
        """The S3 error document for this error."""
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
            f"<Code>{escape(self.code)}</Code>",
            f"<Message>{escape(self.message)}</Message>",
        ]
        if resource:
            parts.append(f"<Resource>{escape(resource)}</Resource>")
        parts.append(f"<RequestId>{escape(request_id)}</RequestId></Error>")
        return "".join(parts).encode("utf-8")


def access_denied(message: str = "Access Denied", reason: str | None = None) -> S3Error:
    return S3Error("AccessDenied", message, 403, reason)


def signature_mismatch(reason: str) -> S3Error:
    return S3Error(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you "
        "provided. Check your key and signing method.",
        403,
        reason,
    )


def invalid_request(message: str, reason: str | None = None) -> S3Error:
    return S3Error("InvalidRequest", message, 400, reason)


def bad_digest(message: str, reason: str | None = None) -> S3Error:
    return S3Error("BadDigest", message, 400, reason)
