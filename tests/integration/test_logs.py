"""JSON log lines: unit and through a real relay process."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from twisted.logger import Logger, LogLevel, globalLogPublisher

from s3relay.logs import event_as_json, observer
from tests import harness
from tests.integration.conftest import CLIENT_KEY, boto_client


def test_event_as_json_keeps_structured_fields() -> None:
    line = event_as_json({
        "log_time": 0.5, "log_level": LogLevel.warn, "log_namespace": "s3relay",
        "log_format": "refused {code}", "code": "AccessDenied", "access": {"status": 403},
        "secret_thing": "not copied",
    })
    record = json.loads(line)
    assert record == {"time": "1970-01-01T00:00:00.500Z", "level": "warn", "namespace": "s3relay",
                      "message": "refused AccessDenied", "access": {"status": 403}}


def test_observer_writes_one_line_per_event() -> None:
    out = io.StringIO()
    watch = observer(out)
    globalLogPublisher.addObserver(watch)
    try:
        Logger(namespace="t").info("one {x}", x="\nnewline")
        try:
            1 / 0
        except ZeroDivisionError:
            Logger(namespace="t").failure("two")
    finally:
        globalLogPublisher.removeObserver(watch)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["message"] == "one \nnewline"
    assert "ZeroDivisionError" in json.loads(lines[1])["error"]


def test_access_records_from_the_relay(relay: harness.Relay, bucket: str) -> None:
    client = boto_client(relay.url)
    client.put_object(Bucket=bucket, Key="logged key", Body=b"12345")
    with pytest.raises(ClientError):
        boto_client(relay.url, (CLIENT_KEY[0], "wrong")).get_object(Bucket=bucket, Key="x")
    records = [r["access"] for r in relay.records() if "access" in r]
    put = [r for r in records if r["bucket"] == bucket and r["operation"] == "PutObject"]
    assert len(put) == 1
    record: dict[str, Any] = put[0]
    assert record["client"] == "alice" and record["key"] == "logged key"
    assert record["status"] == 200 and record["bytes_in"] > 0 and record["upstream_status"] == 200
    assert record["remote"] == "127.0.0.1" and record["error_code"] is None
    assert len(record["request_id"]) == 16 and record["duration"] >= 0
    refused = [r for r in records if r["error_code"] == "SignatureDoesNotMatch"]
    assert refused and refused[-1]["status"] == 403 and refused[-1]["upstream_status"] is None
    assert CLIENT_KEY[1] not in relay.output()
