"""The management site of a real relay process, after real traffic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from tests import harness
from tests.integration.conftest import CLIENT_KEY, boto_client, relay_config


def start(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
          upstream_url: str = "") -> tuple[harness.Relay, str]:
    port, metrics_port = harness.free_port(), harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key, upstream_url)
    text += f"\n[metrics]\nlisten = tcp:{metrics_port}:interface=127.0.0.1\n"
    return harness.start_relay(workdir, text, port), f"http://127.0.0.1:{metrics_port}"


def samples(management: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{management}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def watched(workdir: Path, s3: harness.S3Server,
            self_key: tuple[str, str]) -> Iterator[tuple[harness.Relay, str]]:
    relay, management = start(workdir, s3, self_key)
    yield relay, management
    harness.stop(relay.process)


def test_metrics_count_real_traffic(watched: tuple[harness.Relay, str], bucket: str) -> None:
    relay, management = watched
    client = boto_client(relay.url)
    for key in ("a", "b"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * 1000)
    with pytest.raises(ClientError):
        client.get_object(Bucket=bucket, Key="missing")
    with pytest.raises(ClientError):
        boto_client(relay.url, (CLIENT_KEY[0], "wrong")).list_objects_v2(Bucket=bucket)

    got = samples(management)
    def requests_total(operation: str, method: str, status: str) -> float:
        labels = (("method", method), ("operation", operation), ("status", status))
        return got.get(("s3relay_requests_total", labels), 0.0)
    assert requests_total("PutObject", "PUT", "200") == 2
    assert requests_total("GetObject", "GET", "404") == 1
    assert requests_total("Unknown", "GET", "403") == 1  # refused before it was classified
    assert got[("s3relay_refusals_total", (("code", "SignatureDoesNotMatch"),))] == 1
    assert got[("s3relay_received_bytes_total", ())] >= 2000
    assert got[("s3relay_requests_in_flight", ())] == 0
    assert got[("s3relay_upstream_latency_seconds_count", (("upstream", "default"),))] == 3
    text = requests.get(f"{management}/metrics", timeout=10).text
    assert CLIENT_KEY[0] not in text and bucket not in text  # no keys or names in labels


def test_health_and_readiness(watched: tuple[harness.Relay, str]) -> None:
    _, management = watched
    health = requests.get(f"{management}/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = requests.get(f"{management}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_readiness_fails_while_upstream_is_unreachable(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str]
) -> None:
    relay, management = start(workdir, s3, self_key, f"http://127.0.0.1:{harness.free_port()}")
    try:
        with pytest.raises(ClientError) as excinfo:
            boto_client(relay.url).list_buckets()
        assert excinfo.value.response["Error"]["Code"] == "ServiceUnavailable"
        ready = requests.get(f"{management}/readyz", timeout=10)
        assert ready.status_code == 503
        body: Any = json.loads(ready.content)
        assert body["checks"]["upstream"]["ok"] is False
        assert "unreachable" in body["checks"]["upstream"]["detail"]
        got = samples(management)
        labels = (("kind", "connect"), ("upstream", "default"))
        errors = got[("s3relay_upstream_errors_total", labels)]
        assert errors >= 1  # botocore may have retried
        assert errors == got[("s3relay_refusals_total", (("code", "ServiceUnavailable"),))]
    finally:
        harness.stop(relay.process)
