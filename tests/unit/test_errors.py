"""Tests for s3relay.s3.errors: S3 errors as values, and the one response they make."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from s3relay.s3.errors import (
    Kind,
    S3Error,
    error_response,
    new_request_id,
    slow_down,
    upstream_timeout,
)


def test_error_response_is_s3_xml_with_the_request_id_and_the_errors_headers() -> None:
    error = S3Error("SlowDown", "Please reduce <your> rate.", 503, "why", {"Retry-After": "4"})
    response = error_response(error, "ABC123", "/bucket/key")
    assert response.status == 503
    document = ET.fromstring(response.body)
    assert [(e.tag, e.text) for e in document] == [
        ("Code", "SlowDown"), ("Message", "Please reduce <your> rate."),
        ("Resource", "/bucket/key"), ("RequestId", "ABC123"),
    ]
    assert dict(response.headers) == {
        b"Content-Type": b"application/xml",
        b"Content-Length": b"%d" % len(response.body),
        b"x-amz-request-id": b"ABC123",
        b"Retry-After": b"4",
    }


def test_reason_stays_out_of_the_response() -> None:
    error = S3Error("AccessDenied", "Access Denied", 403, "secret detail for the log")
    assert b"secret detail" not in error_response(error, "ID").body


def test_kinds_say_whose_failure_it_is() -> None:
    assert S3Error("AccessDenied", "no", 403).kind is Kind.REQUEST
    assert upstream_timeout("stalled").kind is Kind.UPSTREAM
    assert slow_down("busy").kind is Kind.REQUEST
    assert slow_down("busy").headers == {"Retry-After": "1"}


def test_request_ids_look_like_s3s_and_differ() -> None:
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[0-9A-F]{16}", i) for i in ids)
