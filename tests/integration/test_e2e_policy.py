"""Per-client limits in a real relay process, driven with boto3 against the
signature-checking S3 server: allowed requests work, refused ones are 403
AccessDenied and leave the upstream untouched."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from s3relay.s3 import sigv4
from tests import harness
from tests.integration.conftest import boto_client, relay_config
from tests.rawclient import send, sign

READER = ("AKIDPOLICYREADER0001", "policy-reader-secret/abcdefghijklmnop")
SCOPED = ("AKIDPOLICYSCOPED0001", "policy-scoped-secret/abcdefghijklmnop")
BUCKETED = ("AKIDPOLICYBUCKET0001", "policy-bucket-secret/abcdefghijklmnop")
NODELETE = ("AKIDPOLICYNODEL00001", "policy-nodelete-secret/abcdefghijklm")

_names = itertools.count()


def client_section(name: str, key: tuple[str, str], extra: str) -> str:
    return (f"\n[client:{name}]\naccess_key_id = {key[0]}\nsecret_access_key = {key[1]}\n"
            f"credentials = main\n{extra}\n")


@pytest.fixture(scope="module")
def policy_relay(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str]
) -> Iterator[harness.Relay]:
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key)
    text += client_section("reader", READER, "read_only = yes")
    text += client_section(
        "scoped", SCOPED, "buckets = pol-mine-*\nprefixes = pol-mine-*:photos/, *:public/"
    )
    text += client_section("bucketed", BUCKETED, "buckets = pol-mine-*")
    text += client_section("nodelete", NODELETE, "operations = read, list, write")
    relay = harness.start_relay(workdir, text, port)
    yield relay
    harness.stop(relay.process)


@pytest.fixture
def mine(upstream: Any) -> str:
    """A fresh bucket the restricted clients may use, holding photos/a and private/x."""
    name = f"pol-mine-{next(_names)}"
    upstream.create_bucket(Bucket=name)
    upstream.put_object(Bucket=name, Key="photos/a", Body=b"photo")
    upstream.put_object(Bucket=name, Key="private/x", Body=b"secret")
    return name


@pytest.fixture
def other(upstream: Any) -> str:
    """A fresh bucket outside the restricted clients' ``buckets``."""
    name = f"pol-other-{next(_names)}"
    upstream.create_bucket(Bucket=name)
    upstream.put_object(Bucket=name, Key="public/y", Body=b"other")
    return name


def denied(relay: harness.Relay, key: tuple[str, str], operation: str, **kwargs: Any) -> None:
    """``operation`` by ``key`` is refused with 403 AccessDenied.

    A fresh client (so a fresh connection) each time: see
    test_refused_expect_continue_request_keeps_framing.
    """
    call = getattr(boto_client(relay.url, key), operation)
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert response["Error"]["Code"] in ("AccessDenied", "403")  # HEAD has no body


def keys(upstream: Any, bucket: str) -> list[str]:
    listing = upstream.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_unrestricted_client_unchanged(policy_relay: harness.Relay, upstream: Any,
                                       mine: str) -> None:
    alice = boto_client(policy_relay.url)
    alice.put_object(Bucket=mine, Key="anything", Body=b"1")
    alice.delete_object(Bucket=mine, Key="private/x")
    assert keys(upstream, mine) == ["anything", "photos/a"]


def test_read_only_client(policy_relay: harness.Relay, upstream: Any, mine: str) -> None:
    reader = boto_client(policy_relay.url, READER)
    assert reader.get_object(Bucket=mine, Key="private/x")["Body"].read() == b"secret"
    assert len(reader.list_objects_v2(Bucket=mine)["Contents"]) == 2
    assert any(b["Name"] == mine for b in reader.list_buckets()["Buckets"])
    denied(policy_relay, READER, "put_object", Bucket=mine, Key="new", Body=b"no")
    denied(policy_relay, READER, "delete_object", Bucket=mine, Key="photos/a")
    denied(policy_relay, READER, "delete_objects", Bucket=mine,
           Delete={"Objects": [{"Key": "photos/a"}]})
    denied(policy_relay, READER, "create_multipart_upload", Bucket=mine, Key="mp")
    assert keys(upstream, mine) == ["photos/a", "private/x"]
    assert upstream.list_multipart_uploads(Bucket=mine).get("Uploads", []) == []
    log = policy_relay.output()
    assert "client reader: operation class 'write' not allowed" in log
    assert "client reader: operation class 'delete' not allowed" in log
    assert READER[1] not in log


def test_prefix_client(policy_relay: harness.Relay, upstream: Any, mine: str) -> None:
    scoped = boto_client(policy_relay.url, SCOPED)
    scoped.put_object(Bucket=mine, Key="photos/b", Body=b"new")
    assert scoped.get_object(Bucket=mine, Key="photos/a")["Body"].read() == b"photo"
    listing = scoped.list_objects_v2(Bucket=mine, Prefix="photos/")
    assert [item["Key"] for item in listing["Contents"]] == ["photos/a", "photos/b"]
    scoped.delete_object(Bucket=mine, Key="photos/b")

    denied(policy_relay, SCOPED, "get_object", Bucket=mine, Key="private/x")
    denied(policy_relay, SCOPED, "head_object", Bucket=mine, Key="private/x")
    denied(policy_relay, SCOPED, "put_object", Bucket=mine, Key="private/y", Body=b"no")
    denied(policy_relay, SCOPED, "delete_object", Bucket=mine, Key="private/x")
    denied(policy_relay, SCOPED, "list_objects_v2", Bucket=mine)
    denied(policy_relay, SCOPED, "list_objects_v2", Bucket=mine, Prefix="priv")
    denied(policy_relay, SCOPED, "list_objects", Bucket=mine)
    # DeleteObjects names its keys in the body: one outside the prefixes refuses all.
    denied(policy_relay, SCOPED, "delete_objects", Bucket=mine,
           Delete={"Objects": [{"Key": "photos/a"}, {"Key": "private/x"}]})
    assert keys(upstream, mine) == ["photos/a", "private/x"]
    assert "multi-delete key is outside the allowed prefixes" in policy_relay.output()


def test_prefix_client_copy(policy_relay: harness.Relay, upstream: Any, mine: str) -> None:
    scoped = boto_client(policy_relay.url, SCOPED)
    scoped.copy_object(Bucket=mine, Key="photos/copy", CopySource=f"{mine}/photos/a")
    denied(policy_relay, SCOPED, "copy_object", Bucket=mine, Key="photos/stolen",
           CopySource=f"{mine}/private/x")
    denied(policy_relay, SCOPED, "copy_object", Bucket=mine, Key="private/moved",
           CopySource=f"{mine}/photos/a")
    assert keys(upstream, mine) == ["photos/a", "photos/copy", "private/x"]
    assert "copy source key is outside the allowed prefixes" in policy_relay.output()


def test_prefix_client_upload_part_copy(policy_relay: harness.Relay, upstream: Any,
                                        mine: str) -> None:
    scoped = boto_client(policy_relay.url, SCOPED)
    upload = scoped.create_multipart_upload(Bucket=mine, Key="photos/mp")["UploadId"]
    denied(policy_relay, SCOPED, "upload_part_copy", Bucket=mine, Key="photos/mp", UploadId=upload,
           PartNumber=1, CopySource=f"{mine}/private/x")
    assert upstream.list_parts(Bucket=mine, Key="photos/mp", UploadId=upload).get(
        "Parts", []) == []
    scoped.abort_multipart_upload(Bucket=mine, Key="photos/mp", UploadId=upload)


def test_repeated_prefix_parameter_refused(policy_relay: harness.Relay, mine: str) -> None:
    url = f"{policy_relay.url}/{mine}?list-type=2&prefix=photos/&prefix=private/"
    reply = send(url, "GET", sign("GET", url, {}, sigv4.UNSIGNED_PAYLOAD, SCOPED))
    assert (reply.status, reply.code()) == (403, "AccessDenied")
    assert b"private/x" not in reply.body


def test_bucket_restricted_client(policy_relay: harness.Relay, upstream: Any, mine: str,
                                  other: str) -> None:
    bucketed = boto_client(policy_relay.url, BUCKETED)
    bucketed.put_object(Bucket=mine, Key="anywhere", Body=b"ok")
    assert bucketed.get_object(Bucket=mine, Key="private/x")["Body"].read() == b"secret"
    bucketed.list_objects_v2(Bucket=mine)
    denied(policy_relay, BUCKETED, "put_object", Bucket=other, Key="new", Body=b"no")
    denied(policy_relay, BUCKETED, "get_object", Bucket=other, Key="public/y")
    denied(policy_relay, BUCKETED, "delete_object", Bucket=other, Key="public/y")
    denied(policy_relay, BUCKETED, "list_objects_v2", Bucket=other)
    denied(policy_relay, BUCKETED, "head_bucket", Bucket=other)
    denied(policy_relay, BUCKETED, "copy_object", Bucket=mine, Key="stolen",
           CopySource=f"{other}/public/y")
    assert keys(upstream, other) == ["public/y"]
    assert "stolen" not in keys(upstream, mine)
    assert f"client bucketed: bucket '{other}' not allowed" in policy_relay.output()


def test_prefix_glob_for_any_bucket_still_needs_the_bucket(
    policy_relay: harness.Relay, upstream: Any, other: str
) -> None:
    """scoped has `*:public/`, but `buckets` still excludes pol-other-*."""
    denied(policy_relay, SCOPED, "get_object", Bucket=other, Key="public/y")


def test_operation_classes_client(policy_relay: harness.Relay, upstream: Any, mine: str) -> None:
    nodelete = boto_client(policy_relay.url, NODELETE)
    nodelete.put_object(Bucket=mine, Key="more", Body=b"1")
    denied(policy_relay, NODELETE, "delete_object", Bucket=mine, Key="more")
    denied(policy_relay, NODELETE, "create_multipart_upload", Bucket=mine, Key="mp")
    denied(policy_relay, NODELETE, "create_bucket", Bucket=f"pol-mine-new-{next(_names)}")
    assert keys(upstream, mine) == ["more", "photos/a", "private/x"]


def test_refused_expect_continue_request_keeps_framing(policy_relay: harness.Relay,
                                                       mine: str) -> None:
    reader = boto_client(policy_relay.url, READER)
    with pytest.raises(ClientError):
        reader.put_object(Bucket=mine, Key="new", Body=b"no")
    with pytest.raises(ClientError) as info:
        reader.delete_object(Bucket=mine, Key="photos/a")  # same connection
    assert info.value.response["Error"]["Code"] == "AccessDenied"
