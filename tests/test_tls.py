"""The TLS listener: ALPN-offering clients, and SDK uploads that only happen over https."""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from tests import harness
from tests.conftest import boto_client, needs_trailers


def test_alpn_offering_client_negotiates_http11(tls_relay: harness.Relay,
                                                tls_files: tuple[Path, Path]) -> None:
    context = ssl.create_default_context(cafile=str(tls_files[0]))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", tls_relay.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_old_tls_versions_refused(tls_relay: harness.Relay) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pytest.warns(DeprecationWarning):
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        context.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with socket.create_connection(("127.0.0.1", tls_relay.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.fixture
def https_client(tls_relay: harness.Relay, tls_files: tuple[Path, Path]) -> Any:
    """boto3 at its defaults over https: checksum trailers on every upload."""
    return boto_client(tls_relay.url, verify=str(tls_files[0]))


@needs_trailers
def test_sdk_trailer_uploads_over_https(https_client: Any, upstream: Any, bucket: str,
                                        tls_relay: harness.Relay) -> None:
    sent: list[str] = []
    https_client.meta.events.register(
        "before-send.s3.*",
        lambda request, **kw: sent.append(request.headers.get("x-amz-content-sha256", b"")),
    )
    data = os.urandom(300_000)
    https_client.put_object(Bucket=bucket, Key="trailer", Body=data)
    assert sent[-1] in (b"STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    stored = upstream.get_object(Bucket=bucket, Key="trailer")["Body"].read()
    assert stored == data  # decoded, not chunk-framed
    got = https_client.get_object(Bucket=bucket, Key="trailer")
    assert got["Body"].read() == data


@needs_trailers
@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA256", "CRC64NVME"])
def test_checksum_algorithms_over_https(https_client: Any, upstream: Any, bucket: str,
                                        algorithm: str) -> None:
    data = os.urandom(70_000)
    https_client.put_object(Bucket=bucket, Key=algorithm, Body=data, ChecksumAlgorithm=algorithm)
    assert upstream.get_object(Bucket=bucket, Key=algorithm)["Body"].read() == data


def test_multipart_over_https(https_client: Any, upstream: Any, bucket: str,
                              tmp_path: Path) -> None:
    path = tmp_path / "mp.bin"
    data = os.urandom(11 * 1024 * 1024)
    path.write_bytes(data)
    https_client.upload_file(str(path), bucket, "mp")
    assert upstream.get_object(Bucket=bucket, Key="mp")["Body"].read() == data
