"""Shared fixtures: one signature-checking S3 server and relays in front of it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import botocore
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests import harness
from tests.certs import make_certificate
from tests.tcptap import TcpTap

CLIENT_KEY = ("AKIDRELAYCLIENT00001", "client-secret-0001/abcdefghijklmnopqrstu")
OTHER_KEY = ("AKIDRELAYCLIENT00002", "client-secret-0002/abcdefghijklmnopqrstu")
HOSTNAME = "relay.test"

#: botocore sends checksum trailers (and knows request_checksum_calculation)
#: from 1.36 on; the bookworm run (.ci/bookworm) has 1.29.
needs_trailers = pytest.mark.skipif(
    tuple(int(p) for p in botocore.__version__.split(".")[:2]) < (1, 36),
    reason="this botocore sends no checksum trailers",
)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


#: What a relay logs when code it runs raised (Twisted logs it and carries on).
RAISED = ('"level": "critical"', "Traceback (most recent call last)", "Unhandled Error")


@pytest.fixture(scope="session", autouse=True)
def relays_raised_nothing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the run: no relay process anywhere logged an exception.

    A relay survives an exception in a callback, so a test that checks only
    what its client saw can pass over a bug: a critical traceback on every
    abandoned download, and a multi-delete dropped on a pooled connection,
    were found in these logs, their tests green.
    """
    yield
    raised = [f"{log.name}: {line[:400]}"
              for log in tmp_path_factory.getbasetemp().rglob("relay-*.log")
              for line in log.read_text(errors="replace").splitlines()
              if any(mark in line for mark in RAISED)]
    assert not raised, "relay logs hold exceptions:\n" + "\n".join(raised[:10])


@pytest.fixture(scope="session")
def s3(workdir: Path) -> Iterator[harness.S3Server]:
    server = harness.start_s3(workdir)
    yield server
    harness.stop(server.process)


def relay_config(
    s3: harness.S3Server,
    listen: str,
    self_key: tuple[str, str],
    upstream_url: str = "",
    addressing: str = "path",
) -> str:
    return f"""
[server]
listen = {listen}
hostnames = {HOSTNAME}
region = us-east-1, eu-west-1

[upstream]
url = {upstream_url or s3.url}
region = us-east-1
addressing = {addressing}
# moto runs on WSGI: it reads header bytes as ISO-8859-1.
header_charset = latin-1

[credentials:main]
access_key_id = {s3.access_key}
secret_access_key = {s3.secret_key}

[client:alice]
access_key_id = {CLIENT_KEY[0]}
secret_access_key = {CLIENT_KEY[1]}
credentials = main

[client:bob]
access_key_id = {OTHER_KEY[0]}
secret_access_key = {OTHER_KEY[1]}
credentials = main

[client:selfie]
access_key_id = {self_key[0]}
secret_access_key = {self_key[1]}
credentials = self
"""


@pytest.fixture(scope="session")
def self_key(s3: harness.S3Server) -> tuple[str, str]:
    """An IAM key the upstream knows, configured as a client key with ``credentials = self``."""
    return s3.new_access_key()


@pytest.fixture(scope="session")
def relay(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str]
) -> Iterator[harness.Relay]:
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key)
    process = harness.start_relay(workdir, text, port)
    yield process
    harness.stop(process.process)


@pytest.fixture(scope="module")
def tap(s3: harness.S3Server) -> Iterator[TcpTap]:
    """A TCP tap in front of the S3 server, counting what reaches it (one per module)."""
    tap = TcpTap(s3.port)
    yield tap
    tap.close()


def works(url: str, key: tuple[str, str]) -> bool:
    """Whether a relay at ``url`` answers ``key``'s ListBuckets."""
    try:
        boto_client(url, key).list_buckets()
        return True
    except ClientError:
        return False


@pytest.fixture(scope="session")
def tls_files(workdir: Path) -> tuple[Path, Path]:
    return make_certificate(workdir, "127.0.0.1")


@pytest.fixture(scope="session")
def tls_relay(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], tls_files: tuple[Path, Path]
) -> Iterator[harness.Relay]:
    port = harness.free_port()
    cert, key = tls_files
    listen = f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    process = harness.start_relay(workdir, relay_config(s3, listen, self_key), port, "https")
    yield process
    harness.stop(process.process)


def boto_client(
    url: str, key: tuple[str, str] = CLIENT_KEY, verify: Any = None, **config: Any
) -> Any:
    options = {"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1}}
    options.update(config)
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        verify=verify,
        config=BotoConfig(**options),
    )


@pytest.fixture(scope="session")
def client(relay: harness.Relay) -> Any:
    """boto3 talking to the relay with a configured client key."""
    return boto_client(relay.url)


@pytest.fixture(scope="session")
def upstream(s3: harness.S3Server) -> Any:
    """boto3 talking straight to the S3 server, to inspect what arrived."""
    return s3.client()


_names = itertools.count()


@pytest.fixture
def bucket(upstream: Any) -> str:
    """A fresh bucket, created directly upstream."""
    name = f"bucket-{next(_names)}"
    upstream.create_bucket(Bucket=name)
    return name


@pytest.fixture
def object_keys(upstream: Any) -> Callable[[str], list[str]]:
    def keys(bucket: str) -> list[str]:
        listing = upstream.list_objects_v2(Bucket=bucket)
        return [item["Key"] for item in listing.get("Contents", [])]

    return keys
