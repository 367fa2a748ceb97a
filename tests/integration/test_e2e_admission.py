"""Who may connect, by which Host, multipart = no and rate limits, in real relay
processes in front of the signature-checking S3 server.  Every refusal is
asserted by its S3 error code and by the upstream not holding the object."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3.exceptions
import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests import harness
from tests.integration.conftest import CLIENT_KEY, HOSTNAME, boto_client, relay_config
from tests.rawclient import Reply, send, sign

NETCLIENT = ("AKIDADMISSIONNET0001", "admission-net-secret/abcdefghijklmnop")
NOMULTI = ("AKIDADMISSIONNOMP001", "admission-nomp-secret/abcdefghijklmno")
SLOW = ("AKIDADMISSIONSLOW001", "admission-slow-secret/abcdefghijklmno")
SINGLE = ("AKIDADMISSIONONE0001", "admission-one-secret/abcdefghijklmnop")


def client_section(name: str, key: tuple[str, str], extra: str) -> str:
    return (f"\n[client:{name}]\naccess_key_id = {key[0]}\nsecret_access_key = {key[1]}\n"
            f"credentials = main\n{extra}\n")


def with_server_keys(text: str, keys: str) -> str:
    return text.replace("[server]\n", f"[server]\n{keys}\n", 1)


def start(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
          server_keys: str, clients: str) -> tuple[harness.Relay, str]:
    port, metrics_port = harness.free_port(), harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key)
    text = with_server_keys(text, server_keys.replace("PORT", str(port)))
    text += clients + f"\n[metrics]\nlisten = tcp:{metrics_port}:interface=127.0.0.1\n"
    return harness.start_relay(workdir, text, port), f"http://127.0.0.1:{metrics_port}"


@pytest.fixture(scope="module")
def gated(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str]
) -> Iterator[tuple[harness.Relay, str]]:
    """Loopback allowed, no trusted proxies, Host checked, limited clients."""
    relay, management = start(
        workdir, s3, self_key,
        "allowed_networks = 127.0.0.0/8, ::1\nallowed_hostnames = 127.0.0.1:PORT",
        client_section("netclient", NETCLIENT, "allowed_networks = 10.0.0.0/8")
        + client_section("nomulti", NOMULTI, "multipart = no")
        + client_section("slow", SLOW, "rate = 0.2\nburst = 2")
        + client_section("single", SINGLE, "max_concurrent_requests = 1")
        + "\n[anonymous]\nbuckets = *\ncredentials = main\nrate = 0.2\nburst = 2\n",
    )
    yield relay, management
    harness.stop(relay.process)


@pytest.fixture(scope="module")
def proxied(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str]
) -> Iterator[tuple[harness.Relay, str]]:
    """Behind a 'proxy' on 127.0.0.1: X-Forwarded-For from it is believed."""
    relay, management = start(
        workdir, s3, self_key,
        "allowed_networks = 127.0.0.0/8, 10.0.0.0/8, 192.168.0.0/16\n"
        "trusted_proxies = 127.0.0.1",
        client_section("netclient", NETCLIENT, "allowed_networks = 10.0.0.0/8"),
    )
    yield relay, management
    harness.stop(relay.process)


@pytest.fixture(scope="module")
def closed(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str]
) -> Iterator[tuple[harness.Relay, str]]:
    """allowed_networks without loopback: every test client is outside."""
    relay, management = start(
        workdir, s3, self_key, "allowed_networks = 10.0.0.0/8, 2001:db8::/32", ""
    )
    yield relay, management
    harness.stop(relay.process)


def put(relay: harness.Relay, key: tuple[str, str], bucket: str, name: str,
        headers: dict[str, str] | None = None, host: str | None = None) -> Reply:
    body = b"admission test body"
    url = f"{relay.url}/{bucket}/{name}"
    signed = sign("PUT", url, headers or {}, hashlib.sha256(body).hexdigest(), key)
    if host is not None:
        signed["host"] = host  # (the signature no longer matches: refused before that)
    signed["content-length"] = str(len(body))
    return send(url, "PUT", signed, body)


def metric(management: str, rule: str) -> float:
    text = requests.get(f"{management}/metrics", timeout=10).text
    prefix = f's3relay_admission_refusals_total{{rule="{rule}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


def refused(reply: Reply, status: int, code: str) -> None:
    assert (reply.status, reply.code()) == (status, code), reply.body


# -- who may connect ---------------------------------------------------------


def test_outside_allowed_networks_refused(
    closed: tuple[harness.Relay, str], bucket: str, object_keys: Callable[[str], list[str]]
) -> None:
    relay, management = closed
    with pytest.raises(ClientError) as info:
        boto_client(relay.url).put_object(Bucket=bucket, Key="nope", Body=b"x")
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # Claiming an allowed address does not help: nobody is a trusted proxy.
    reply = put(relay, CLIENT_KEY, bucket, "claimed", {"x-forwarded-for": "10.1.2.3"})
    refused(reply, 403, "AccessDenied")
    assert object_keys(bucket) == []
    record = relay.access(reply.headers["x-amz-request-id"])
    assert "allowed_networks" in record["reason"]
    assert record["address"] == "127.0.0.1"
    assert record["forwarded_for"] == "10.1.2.3" and record["forwarded_trusted"] is False
    assert record["client"] is None  # refused before the signature was looked at
    assert metric(management, "network") >= 2


def test_client_networks_not_bypassed_by_untrusted_xff(
    gated: tuple[harness.Relay, str], bucket: str, object_keys: Callable[[str], list[str]]
) -> None:
    relay, management = gated
    for headers in ({}, {"x-forwarded-for": "10.1.2.3"}, {"forwarded": "for=10.1.2.3"}):
        reply = put(relay, NETCLIENT, bucket, "netclient", headers)
        refused(reply, 403, "AccessDenied")
        record = relay.access(reply.headers["x-amz-request-id"])
        assert record["client"] == "netclient" and "client netclient" in record["reason"]
        assert record["address"] == "127.0.0.1" and record["forwarded_trusted"] is False
    assert object_keys(bucket) == []
    assert metric(management, "client_network") >= 3
    # The same relay serves a client without a network rule.
    assert put(relay, CLIENT_KEY, bucket, "alice").status == 200


def test_trusted_proxy_xff_honoured(
    proxied: tuple[harness.Relay, str], bucket: str, object_keys: Callable[[str], list[str]]
) -> None:
    relay, _ = proxied
    reply = put(relay, NETCLIENT, bucket, "via-proxy",
                {"x-forwarded-for": "192.168.9.9, 10.1.2.3"})
    assert reply.status == 200, reply.body
    record = relay.access(reply.headers["x-s3relay-request-id"])
    assert record["address"] == "10.1.2.3" and record["forwarded_trusted"] is True
    assert record["forwarded_for"] == "192.168.9.9, 10.1.2.3"
    # The right-most untrusted address counts, not what the client put on the left.
    reply = put(relay, NETCLIENT, bucket, "spoofed", {"x-forwarded-for": "10.1.2.3, 192.168.9.9"})
    refused(reply, 403, "AccessDenied")
    # Without a forwarded address the proxy itself is the client: outside 10/8.
    refused(put(relay, NETCLIENT, bucket, "direct"), 403, "AccessDenied")
    # Forwarded is not the configured header: ignored.
    refused(put(relay, NETCLIENT, bucket, "rfc7239", {"forwarded": "for=10.1.2.3"}),
            403, "AccessDenied")
    # The global rule applies to the effective address too.
    reply = put(relay, CLIENT_KEY, bucket, "far", {"x-forwarded-for": "203.0.113.9"})
    refused(reply, 403, "AccessDenied")
    assert "[server] allowed_networks" in relay.access(reply.headers["x-amz-request-id"])["reason"]
    assert object_keys(bucket) == ["via-proxy"]


def test_host_not_allowed(
    gated: tuple[harness.Relay, str], bucket: str, object_keys: Callable[[str], list[str]]
) -> None:
    relay, management = gated
    for host in (f"evil.example:{relay.port}", f"127.0.0.1:{relay.port + 1}", "localhost"):
        reply = put(relay, CLIENT_KEY, bucket, "host", host=host)
        refused(reply, 400, "InvalidArgument")
    assert object_keys(bucket) == []
    assert metric(management, "host") >= 3
    # Virtual-host style under [server] hostnames is included.
    body = b"virtual"
    url = f"{relay.url}/vhost"
    vhost = f"{bucket}.{HOSTNAME}:{relay.port}"
    signed = sign("PUT", f"http://{vhost}/vhost", {}, hashlib.sha256(body).hexdigest(), CLIENT_KEY)
    signed["content-length"] = str(len(body))
    reply = send(url, "PUT", signed, body)
    assert reply.status == 200, reply.body
    assert object_keys(bucket) == ["vhost"]


# -- multipart = no ------------------------------------------------------------


def test_multipart_off_refuses_upload_cleanly(
    gated: tuple[harness.Relay, str], bucket: str, upstream: Any, tmp_path: Path,
    object_keys: Callable[[str], list[str]],
) -> None:
    relay, _ = gated
    big = tmp_path / "big"
    big.write_bytes(b"m" * (2 * 1024 * 1024))
    client = boto_client(relay.url, NOMULTI)
    transfer = TransferConfig(multipart_threshold=1024 * 1024, multipart_chunksize=1024 * 1024)
    with pytest.raises(boto3.exceptions.S3UploadFailedError) as info:
        client.upload_file(str(big), bucket, "big", Config=transfer)
    assert "AccessDenied" in str(info.value)
    assert object_keys(bucket) == []
    assert upstream.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # A single PUT still works, and a leftover upload can be listed and aborted.
    client.upload_file(str(big), bucket, "small-enough")
    upload = upstream.create_multipart_upload(Bucket=bucket, Key="leftover")["UploadId"]
    listed = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in listed] == [upload]
    client.abort_multipart_upload(Bucket=bucket, Key="leftover", UploadId=upload)
    assert upstream.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert object_keys(bucket) == ["small-enough"]


# -- rate limits ---------------------------------------------------------------


def test_burst_gets_slowdown_then_recovers(
    gated: tuple[harness.Relay, str], bucket: str, object_keys: Callable[[str], list[str]]
) -> None:
    relay, management = gated
    stored, throttled = [], None
    for n in range(12):  # burst 2, one token per 5 s: the 3rd or so is refused
        reply = put(relay, SLOW, bucket, f"burst-{n}")
        if reply.status == 503:
            throttled = (f"burst-{n}", reply)
            break
        assert reply.status == 200, reply.body
        stored.append(f"burst-{n}")
    assert throttled is not None, "no request was throttled"
    name, reply = throttled
    refused(reply, 503, "SlowDown")
    retry_after = int(reply.headers["retry-after"])
    assert 1 <= retry_after <= 5
    assert sorted(object_keys(bucket)) == sorted(stored)  # the refused one is absent
    assert metric(management, "client_rate") >= 1
    # Other clients are not affected by this client's limit.
    assert put(relay, CLIENT_KEY, bucket, "other").status == 200
    for _ in range(3):
        time.sleep(retry_after)
        reply = put(relay, SLOW, bucket, name)
        if reply.status == 200:
            break
        retry_after = int(reply.headers["retry-after"])
    assert reply.status == 200, reply.body
    assert name in object_keys(bucket)


def test_anonymous_requests_share_their_own_rate_limit(
    gated: tuple[harness.Relay, str], bucket: str
) -> None:
    relay, management = gated
    url = f"{relay.url}/{bucket}/no-such-key"
    before = metric(management, "client_rate")
    for _ in range(12):  # burst 2, one token per 5 s: the 3rd or so is refused
        reply = send(url, "GET", {"host": relay.url.split("//")[1]})
        if reply.status == 503:
            break
        refused(reply, 404, "NoSuchKey")  # unsigned, allowed, and answered by S3
    refused(reply, 503, "SlowDown")
    assert 1 <= int(reply.headers["retry-after"]) <= 5
    assert relay.access(reply.headers["x-amz-request-id"])["client"] == "anonymous"
    assert metric(management, "client_rate") == before + 1
    assert put(relay, CLIENT_KEY, bucket, "signed-while-anonymous-waits").status == 200


def test_concurrency_limit_released_on_disconnect(
    gated: tuple[harness.Relay, str], bucket: str, object_keys: Callable[[str], list[str]]
) -> None:
    relay, management = gated
    url = f"{relay.url}/{bucket}/held"
    headers = sign("PUT", url, {}, "UNSIGNED-PAYLOAD", SINGLE)
    headers["content-length"] = "1000"
    held = socket.create_connection(("127.0.0.1", relay.port), timeout=30)
    try:
        head = f"PUT /{bucket}/held HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        ) + "\r\n"
        held.sendall(head.encode() + b"x" * 10)  # and then nothing: the request stays open
        reply = None
        for _ in range(40):
            reply = put(relay, SINGLE, bucket, "second")
            if reply.status == 503:
                break
            time.sleep(0.25)
        assert reply is not None
        refused(reply, 503, "SlowDown")
        assert reply.headers["retry-after"] == "1"
        assert metric(management, "client_concurrency") >= 1
    finally:
        held.close()  # the client goes away mid-body: its slot must come back
    for _ in range(40):
        reply = put(relay, SINGLE, bucket, "after")
        if reply.status == 200:
            break
        time.sleep(0.25)
    assert reply.status == 200, reply.body
    assert "held" not in object_keys(bucket)
    # Every other way a request ends gives its slot back too: an upstream
    # error, a body the relay rejects after admission, a plain success.
    refused(put(relay, SINGLE, "no-such-bucket-admission", "x"), 404, "NoSuchBucket")
    url = f"{relay.url}/{bucket}/bad-hash"
    bad = sign("PUT", url, {}, hashlib.sha256(b"other").hexdigest(), SINGLE)
    bad["content-length"] = "5"
    assert send(url, "PUT", bad, b"wrong").status == 400
    for n in range(3):
        assert put(relay, SINGLE, bucket, f"then-{n}").status == 200
    assert "bad-hash" not in object_keys(bucket)
