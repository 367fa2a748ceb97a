"""An https upstream: certificate and hostname checked, a CA bundle, or (loudly) nothing.

The upstream here is a second relay with a TLS listener (the ``tls_relay``
fixture, a self-signed certificate for 127.0.0.1) in front of the S3 server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from botocore.exceptions import ClientError
from twisted.internet.testing import MemoryReactorClock
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported

from s3relay.upstream.agent import UpstreamEndpoints
from s3relay.upstream.tls import UpstreamTLS
from tests import harness
from tests.integration.conftest import CLIENT_KEY, OTHER_KEY, boto_client


def chained(workdir: Path, tls_relay: harness.Relay, upstream_extra: str) -> harness.Relay:
    """A relay whose upstream is ``tls_relay``, signing with a key ``tls_relay`` knows."""
    port = harness.free_port()
    text = f"""
[server]
listen = tcp:{port}:interface=127.0.0.1

[upstream]
url = https://127.0.0.1:{tls_relay.port}
region = us-east-1
{upstream_extra}

[credentials:next]
access_key_id = {CLIENT_KEY[0]}
secret_access_key = {CLIENT_KEY[1]}

[client:front]
access_key_id = {OTHER_KEY[0]}
secret_access_key = {OTHER_KEY[1]}
credentials = next
"""
    return harness.start_relay(workdir, text, port)


@pytest.fixture
def front(request: pytest.FixtureRequest, workdir: Path, tls_relay: harness.Relay,
          tls_files: tuple[Path, Path]) -> Iterator[harness.Relay]:
    extra = request.param.format(cert=tls_files[0])
    relay = chained(workdir, tls_relay, extra)
    yield relay
    harness.stop(relay.process)


@pytest.mark.parametrize("front", ["ca_file = {cert}", "insecure = yes"], indirect=True)
def test_https_upstream_accepted(front: harness.Relay, upstream: Any, bucket: str) -> None:
    boto_client(front.url, OTHER_KEY).put_object(Bucket=bucket, Key="via-tls", Body=b"chained")
    assert upstream.get_object(Bucket=bucket, Key="via-tls")["Body"].read() == b"chained"


@pytest.mark.parametrize("front", ["insecure = yes"], indirect=True)
def test_insecure_is_loud(front: harness.Relay) -> None:
    assert any("INSECURE" in r["message"] and r["level"] == "warn" for r in front.records())


@pytest.mark.parametrize("front", [""], indirect=True)
def test_unknown_ca_refused(front: harness.Relay, bucket: str,
                            object_keys: Callable[[str], list[str]]) -> None:
    """The system trust store does not know the test CA: nothing may go through."""
    with pytest.raises(ClientError) as excinfo:
        boto_client(front.url, OTHER_KEY).put_object(Bucket=bucket, Key="nope", Body=b"x")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] in (502, 503)
    assert object_keys(bucket) == []
    assert "certificate verify failed" in front.output().lower()


def test_wrong_hostname_refused(workdir: Path, tls_relay: harness.Relay,
                                tls_files: tuple[Path, Path], bucket: str,
                                object_keys: Callable[[str], list[str]]) -> None:
    """The certificate is for 127.0.0.1, not for localhost."""
    relay = chained(workdir, tls_relay, f"ca_file = {tls_files[0]}")
    config = relay.log.parent / f"relay-{relay.port}.ini"
    harness.stop(relay.process)
    text = config.read_text().replace("https://127.0.0.1:", "https://localhost:")
    relay = harness.start_relay(workdir, text, relay.port)
    try:
        with pytest.raises(ClientError) as excinfo:
            boto_client(relay.url, OTHER_KEY).put_object(Bucket=bucket, Key="nope", Body=b"x")
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] in (502, 503)
        assert object_keys(bucket) == []
        assert "DNSMismatch" in relay.output()
    finally:
        harness.stop(relay.process)


def test_endpoints_built_once_per_origin() -> None:
    """A TLS context per request would cost ~60 us; the endpoint is kept per origin."""
    endpoints = UpstreamEndpoints(MemoryReactorClock(), UpstreamTLS(), 5.0)
    first = endpoints.endpointForURI(URI.fromBytes(b"https://s3.example:443/bucket/a"))
    again = endpoints.endpointForURI(URI.fromBytes(b"https://s3.example:443/bucket/b?x=1"))
    other = endpoints.endpointForURI(URI.fromBytes(b"https://bucket.s3.example/"))
    plain = endpoints.endpointForURI(URI.fromBytes(b"http://s3.example:443/"))
    assert first is again
    assert len({id(first), id(other), id(plain)}) == 3
    with pytest.raises(SchemeNotSupported):
        endpoints.endpointForURI(URI.fromBytes(b"ftp://s3.example/"))
