"""A browser app's CORS sequence through the real relay, against a bucket
with a real CORS configuration in the signature-checking S3 server.

The page asks the browser to PUT a presigned URL from another origin: the
browser sends an unsigned preflight first (OPTIONS with Origin and
Access-Control-Request-Method), then the PUT with Origin.  The relay asks
the upstream for the preflight's answer (signed with
``[server] preflight_credentials``) and passes it back as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from tests import harness
from tests.integration.conftest import boto_client, relay_config

APP = "https://app.example.com"


@pytest.fixture(scope="module")
def relay(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str]) -> Iterator[harness.Relay]:
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key).replace(
        "[upstream]", "preflight_credentials = main\n\n[upstream]", 1
    )
    relay = harness.start_relay(workdir, text, port)
    yield relay
    harness.stop(relay.process)


@pytest.fixture
def cors_bucket(upstream: Any, bucket: str) -> str:
    upstream.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [APP], "AllowedMethods": ["GET", "PUT"],
        "AllowedHeaders": ["content-type"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600,
    }]})
    return bucket


def preflight(relay: harness.Relay, url: str, origin: str = APP,
              method: str = "PUT") -> requests.Response:
    return requests.options(url, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type",
    }, timeout=10)


def test_the_browser_sequence_for_a_presigned_put(
    relay: harness.Relay, upstream: Any, cors_bucket: str
) -> None:
    client = boto_client(relay.url, signature_version="s3v4")
    url = client.generate_presigned_url(
        "put_object", Params={"Bucket": cors_bucket, "Key": "from-the-page.txt"}, ExpiresIn=300
    )
    answer = preflight(relay, url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == APP
    assert "PUT" in answer.headers["Access-Control-Allow-Methods"]
    assert answer.headers["Access-Control-Max-Age"] == "600"
    put = requests.put(url, data=b"uploaded by a page", headers={"Origin": APP}, timeout=10)
    assert put.status_code == 200, put.text
    assert put.headers.get("Access-Control-Allow-Origin") == APP
    body = upstream.get_object(Bucket=cors_bucket, Key="from-the-page.txt")["Body"].read()
    assert body == b"uploaded by a page"


def test_an_origin_the_bucket_does_not_allow_gets_the_stores_refusal(
    relay: harness.Relay, cors_bucket: str
) -> None:
    answer = preflight(relay, f"{relay.url}/{cors_bucket}/k", origin="https://evil.example")
    # The store's own answer, as it is: a browser goes no further than a non-2xx preflight.
    assert answer.status_code == 403 and "CORSResponse" in answer.text
    assert "X-S3relay-Request-Id" in answer.headers


def test_a_malformed_preflight_is_the_relays_400(relay: harness.Relay, cors_bucket: str) -> None:
    answer = requests.options(f"{relay.url}/{cors_bucket}/k", headers={"Origin": APP}, timeout=10)
    assert answer.status_code == 400 and "<Code>BadRequest</Code>" in answer.text
    # The page can read it: the relay's own errors let the requesting origin in.
    assert answer.headers["Access-Control-Allow-Origin"] == APP


def test_preflights_are_counted(relay: harness.Relay, cors_bucket: str) -> None:
    preflight(relay, f"{relay.url}/{cors_bucket}/k")
    record = [r["access"] for r in relay.records() if "access" in r][-1]
    assert (record["operation"], record["client"], record["status"]) == (
        "CorsPreflight", "preflight", 200
    )
