"""The TLS listener: ALPN-offering clients, SDK uploads that only happen over
https, protocol floor and ciphers, and client certificates (mTLS) bound to
client keys."""

from __future__ import annotations

import os
import socket
import ssl
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from botocore.exceptions import ClientError
from botocore.exceptions import SSLError as BotoSSLError
from OpenSSL import crypto
from prometheus_client.parser import text_string_to_metric_families

from tests import harness
from tests.certs import Authority, make_ca, make_client_certificate
from tests.integration.conftest import (
    OTHER_KEY,
    boto_client,
    needs_trailers,
    relay_config,
)


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


# --- helpers ---------------------------------------------------------------------------


def start_tls_relay(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
                    tls_files: tuple[Path, Path], server: str = "", alice: str = "",
                    metrics: bool = False) -> tuple[harness.Relay, str]:
    """A TLS relay with extra ``[server]`` and ``[client:alice]`` lines."""
    port, metrics_port = harness.free_port(), harness.free_port()
    cert, key = tls_files
    listen = f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    text = relay_config(s3, listen, self_key)
    text = text.replace("[server]\n", f"[server]\n{server}\n", 1)
    text = text.replace("[client:alice]\n", f"[client:alice]\n{alice}\n", 1)
    if metrics:
        text += f"\n[metrics]\nlisten = tcp:{metrics_port}:interface=127.0.0.1\n"
    relay = harness.start_relay(workdir, text, port, "https")
    return relay, f"http://127.0.0.1:{metrics_port}"


def context(ca: Path, cert: tuple[Path, Path] | None = None,
            maximum: ssl.TLSVersion | None = None, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def tls_request(port: int, ctx: ssl.SSLContext) -> tuple[bytes, str | None]:
    """An unsigned GET over a fresh connection: (the response's first bytes, cipher).

    b"" when the TLS layer refused: in TLS 1.3 the client's handshake ends
    before the server has checked the client certificate, so a refusal can
    show only when reading.
    """
    cipher = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                cipher = (tls.cipher() or ("",))[0]
                tls.sendall(b"GET / HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n")
                return tls.recv(64), cipher
    except (ssl.SSLError, ConnectionError):
        return b"", cipher


def sample(management: str, name: str) -> float:
    text = requests.get(f"{management}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name:
                return float(found.value)
    raise AssertionError(f"no {name}")


def handshake_failures(management: str) -> float:
    return sample(management, "s3relay_tls_handshake_failures_total")


def wait_for_failures(management: str, at_least: float) -> float:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        value = handshake_failures(management)
        if value >= at_least:
            return value
        time.sleep(0.1)
    return handshake_failures(management)


# --- protocol floor and ciphers ---------------------------------------------------------


def test_default_ciphers_refuse_cbc(tls_relay: harness.Relay,
                                   tls_files: tuple[Path, Path]) -> None:
    """Mozilla intermediate: AEAD suites only."""
    good = context(tls_files[0], maximum=ssl.TLSVersion.TLSv1_2)
    answer, cipher = tls_request(tls_relay.port, good)
    assert answer.startswith(b"HTTP/1.1 403")
    assert cipher is not None and ("GCM" in cipher or "CHACHA20" in cipher), cipher
    cbc = context(tls_files[0], maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA")
    assert tls_request(tls_relay.port, cbc)[0] == b""


@pytest.fixture(scope="module")
def tls13_relay(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
                tls_files: tuple[Path, Path]) -> Iterator[harness.Relay]:
    relay, _ = start_tls_relay(workdir, s3, self_key, tls_files, "tls_min_version = 1.3")
    yield relay
    harness.stop(relay.process)


def test_min_version_13_refuses_12(tls13_relay: harness.Relay,
                                   tls_files: tuple[Path, Path]) -> None:
    old = context(tls_files[0], maximum=ssl.TLSVersion.TLSv1_2)
    with socket.create_connection(("127.0.0.1", tls13_relay.port), timeout=30) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="127.0.0.1")
    answer, _ = tls_request(tls13_relay.port, context(tls_files[0]))
    assert answer.startswith(b"HTTP/1.1 403")


@pytest.fixture(scope="module")
def cipher_relay(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
                 tls_files: tuple[Path, Path]) -> Iterator[harness.Relay]:
    relay, _ = start_tls_relay(workdir, s3, self_key, tls_files,
                               "tls_ciphers = ECDHE-ECDSA-AES256-GCM-SHA384")
    yield relay
    harness.stop(relay.process)


def test_cipher_option_applied(cipher_relay: harness.Relay,
                               tls_files: tuple[Path, Path]) -> None:
    tls12 = context(tls_files[0], maximum=ssl.TLSVersion.TLSv1_2)
    answer, cipher = tls_request(cipher_relay.port, tls12)
    assert answer.startswith(b"HTTP/1.1 403") and cipher == "ECDHE-ECDSA-AES256-GCM-SHA384"
    other = context(tls_files[0], maximum=ssl.TLSVersion.TLSv1_2,
                    ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    assert tls_request(cipher_relay.port, other)[0] == b""


# --- mTLS -------------------------------------------------------------------------------

ALICE_SUBJECT = "certificate_subject = CN=alice, O=Example"


@pytest.fixture(scope="module")
def authorities(workdir: Path) -> tuple[Authority, Authority]:
    return make_ca(workdir, "clients"), make_ca(workdir, "stranger")


@pytest.fixture(scope="module")
def mtls(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
         tls_files: tuple[Path, Path],
         authorities: tuple[Authority, Authority]) -> Iterator[tuple[harness.Relay, str]]:
    server = f"tls_client_ca = {authorities[0].cert_path}\ntls_client_auth = required"
    relay, management = start_tls_relay(workdir, s3, self_key, tls_files, server,
                                        ALICE_SUBJECT, metrics=True)
    yield relay, management
    harness.stop(relay.process)


@pytest.fixture(scope="module")
def client_certs(workdir: Path,
                 authorities: tuple[Authority, Authority]) -> dict[str, tuple[Path, Path]]:
    ours, stranger = authorities
    return {
        "alice": make_client_certificate(workdir, ours, "alice", {"O": "Example", "CN": "alice"}),
        "mallory": make_client_certificate(workdir, ours, "mallory",
                                           {"CN": "mallory", "O": "Example"}),
        "alice-ou": make_client_certificate(workdir, ours, "alice-ou",
                                            {"CN": "alice", "O": "Example", "OU": "temp"}),
        "forged": make_client_certificate(workdir, stranger, "forged",
                                          {"CN": "alice", "O": "Example"}),
    }


def test_mtls_required_refuses_no_certificate(mtls: tuple[harness.Relay, str],
                                              tls_files: tuple[Path, Path]) -> None:
    relay, management = mtls
    socket.create_connection(("127.0.0.1", relay.port), timeout=30).close()  # not a failure
    before = handshake_failures(management)
    assert tls_request(relay.port, context(tls_files[0]))[0] == b""
    assert wait_for_failures(management, before + 1) == before + 1


def test_certificate_expiry_metric(mtls: tuple[harness.Relay, str],
                                   tls_files: tuple[Path, Path]) -> None:
    served = crypto.load_certificate(crypto.FILETYPE_PEM, tls_files[0].read_bytes())
    stamp = served.get_notAfter()
    assert stamp is not None
    not_after = datetime.strptime(stamp.decode("ascii"), "%Y%m%d%H%M%SZ")
    expected = not_after.replace(tzinfo=timezone.utc).timestamp()
    assert sample(mtls[1], "s3relay_tls_certificate_expiry_timestamp_seconds") == expected


def test_mtls_refuses_certificate_of_another_ca(
        mtls: tuple[harness.Relay, str], tls_files: tuple[Path, Path],
        client_certs: dict[str, tuple[Path, Path]]) -> None:
    relay, management = mtls
    before = handshake_failures(management)
    assert tls_request(relay.port, context(tls_files[0], client_certs["forged"]))[0] == b""
    assert wait_for_failures(management, before + 1) >= before + 1


def test_mtls_good_certificate_served(mtls: tuple[harness.Relay, str],
                                      tls_files: tuple[Path, Path], upstream: Any, bucket: str,
                                      client_certs: dict[str, tuple[Path, Path]]) -> None:
    relay, _ = mtls
    alice = boto_client(relay.url, verify=str(tls_files[0]),
                        client_cert=tuple(map(str, client_certs["alice"])))
    alice.put_object(Bucket=bucket, Key="hello", Body=b"from alice")
    assert upstream.get_object(Bucket=bucket, Key="hello")["Body"].read() == b"from alice"
    # bob has no binding: any verified certificate will do.
    bob = boto_client(relay.url, OTHER_KEY, verify=str(tls_files[0]),
                      client_cert=tuple(map(str, client_certs["mallory"])))
    assert bob.get_object(Bucket=bucket, Key="hello")["Body"].read() == b"from alice"


@pytest.mark.parametrize("cert", ["mallory", "alice-ou"])
def test_mtls_subject_binding_mismatch_denied(
        mtls: tuple[harness.Relay, str], tls_files: tuple[Path, Path], upstream: Any,
        bucket: str, object_keys: Any, client_certs: dict[str, tuple[Path, Path]],
        cert: str) -> None:
    relay, _ = mtls
    alice_key_wrong_cert = boto_client(relay.url, verify=str(tls_files[0]),
                                       client_cert=tuple(map(str, client_certs[cert])))
    with pytest.raises(ClientError) as refused:
        alice_key_wrong_cert.put_object(Bucket=bucket, Key="stolen", Body=b"x")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert object_keys(bucket) == []
    record = [r["access"] for r in relay.records() if "access" in r][-1]
    assert record["client"] == "alice" and record["error_code"] == "AccessDenied"
    assert "CN=mallory" in relay.output() or "OU=temp" in relay.output()


def test_mtls_required_boto_without_certificate_fails(mtls: tuple[harness.Relay, str],
                                                      tls_files: tuple[Path, Path],
                                                      bucket: str, object_keys: Any) -> None:
    relay, _ = mtls
    with pytest.raises((BotoSSLError, ClientError, Exception)) as failed:
        boto_client(relay.url, verify=str(tls_files[0])).put_object(
            Bucket=bucket, Key="anonymous", Body=b"x")
    assert not isinstance(failed.value, ClientError)  # no S3 answer: the TLS layer refused
    assert object_keys(bucket) == []


@pytest.fixture(scope="module")
def mtls_optional(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
                  tls_files: tuple[Path, Path],
                  authorities: tuple[Authority, Authority]) -> Iterator[harness.Relay]:
    server = f"tls_client_ca = {authorities[0].cert_path}\ntls_client_auth = optional"
    relay, _ = start_tls_relay(workdir, s3, self_key, tls_files, server, ALICE_SUBJECT)
    yield relay
    harness.stop(relay.process)


def test_mtls_optional_bound_client_needs_certificate(
        mtls_optional: harness.Relay, tls_files: tuple[Path, Path], bucket: str,
        object_keys: Any, client_certs: dict[str, tuple[Path, Path]]) -> None:
    relay = mtls_optional
    with pytest.raises(ClientError) as refused:
        boto_client(relay.url, verify=str(tls_files[0])).put_object(
            Bucket=bucket, Key="no-cert", Body=b"x")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert object_keys(bucket) == []
    # An unbound client needs none; the bound one passes with its certificate.
    boto_client(relay.url, OTHER_KEY, verify=str(tls_files[0])).put_object(
        Bucket=bucket, Key="bob", Body=b"x")
    boto_client(relay.url, verify=str(tls_files[0]),
                client_cert=tuple(map(str, client_certs["alice"]))).put_object(
        Bucket=bucket, Key="alice", Body=b"x")
    assert sorted(object_keys(bucket)) == ["alice", "bob"]
    # A certificate from another CA is refused even where certificates are optional.
    assert tls_request(relay.port, context(tls_files[0], client_certs["forged"]))[0] == b""
