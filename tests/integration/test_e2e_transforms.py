"""Anonymous access, forced storage class, added headers, filtered ListBuckets and
checked multi-delete, in a real relay process in front of the signature-checking S3
server (moto), with a TCP tap on the upstream link to show refusals send nothing."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from tests import harness
from tests.integration.conftest import boto_client, relay_config
from tests.rawclient import send, sign
from tests.tcptap import TcpTap

CLASSY = ("AKIDTRANSFORMCLASS01", "transform-classy-secret/abcdefghijklm")
SCOPED = ("AKIDTRANSFORMSCOPE01", "transform-scoped-secret/abcdefghijklm")
LISTER = ("AKIDTRANSFORMLIST001", "transform-lister-secret/abcdefghijklm")

_names = itertools.count()


def client_section(name: str, key: tuple[str, str], extra: str) -> str:
    return (f"\n[client:{name}]\naccess_key_id = {key[0]}\nsecret_access_key = {key[1]}\n"
            f"credentials = main\n{extra}\n")


@pytest.fixture(scope="module")
def relay(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], tap: TcpTap
) -> Iterator[harness.Relay]:
    port = harness.free_port()
    text = relay_config(
        s3, f"tcp:{port}:interface=127.0.0.1", self_key, f"http://127.0.0.1:{tap.port}"
    )
    text = text.replace(
        "addressing = path\n",
        "addressing = path\nbucket_storage_class = tr-cold-*:GLACIER_IR\n"
        "add_headers = x-amz-server-side-encryption: AES256\n",
    )
    text += client_section(
        "classy", CLASSY,
        "force_storage_class = STANDARD_IA\nadd_headers = x-amz-meta-relayed: by s3relay",
    )
    text += client_section(
        "scoped", SCOPED,
        "buckets = tr-mine-*\nprefixes = tr-mine-*:photos/\noperations = read, list, write, delete",
    )
    text += client_section("lister", LISTER, "buckets = tr-mine-*\nread_only = yes")
    text += "\n[anonymous]\nbuckets = tr-pub-*\nprefixes = tr-pub-*:public/\ncredentials = main\n"
    relay = harness.start_relay(workdir, text, port)
    yield relay
    harness.stop(relay.process)


def fresh(upstream: Any, kind: str, **objects: bytes) -> str:
    name = f"tr-{kind}-{next(_names)}"
    upstream.create_bucket(Bucket=name)
    for key, body in objects.items():
        upstream.put_object(Bucket=name, Key=key.replace("__", "/"), Body=body)
    return name


def keys(upstream: Any, bucket: str) -> list[str]:
    listing = upstream.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def unsigned(relay: harness.Relay, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> Any:
    all_headers = {"host": f"127.0.0.1:{relay.port}", "content-length": str(len(body))}
    all_headers.update(headers or {})
    return send(relay.url + path, method, all_headers, body)


def quiet_upstream(tap: TcpTap) -> int:
    """The upstream byte count once earlier traffic has settled."""
    before = -1
    while before != tap.sent_up:
        before = tap.sent_up
        time.sleep(0.2)
    return before


def records(relay: harness.Relay, **match: Any) -> list[dict[str, Any]]:
    out = []
    for record in relay.records():
        access = record.get("access")
        if access and all(access.get(k) == v for k, v in match.items()):
            out.append(access)
    return out


# -- anonymous ----------------------------------------------------------------------

def test_anonymous_get_and_list(relay: harness.Relay, upstream: Any) -> None:
    bucket = fresh(upstream, "pub", public__a=b"hello", private__b=b"no")
    reply = unsigned(relay, "GET", f"/{bucket}/public/a")
    assert reply.status == 200 and reply.body == b"hello"  # moto checked the relay's signature
    reply = unsigned(relay, "GET", f"/{bucket}?list-type=2&prefix=public/")
    assert reply.status == 200 and b"<Key>public/a</Key>" in reply.body
    assert b"private" not in reply.body
    assert records(relay, client="anonymous", operation="GetObject", status=200)


def test_anonymous_refusals(relay: harness.Relay, upstream: Any, tap: TcpTap) -> None:
    bucket = fresh(upstream, "pub", public__a=b"hello", private__b=b"no")
    other = fresh(upstream, "other", public__a=b"x")
    before = quiet_upstream(tap)
    assert unsigned(relay, "PUT", f"/{bucket}/public/new", b"data").code() == "AccessDenied"
    assert unsigned(relay, "DELETE", f"/{bucket}/public/a").code() == "AccessDenied"
    assert unsigned(relay, "GET", f"/{bucket}/private/b").code() == "AccessDenied"
    assert unsigned(relay, "GET", f"/{other}/public/a").code() == "AccessDenied"
    assert unsigned(relay, "GET", f"/{bucket}?list-type=2").code() == "AccessDenied"
    assert tap.sent_up == before
    assert keys(upstream, bucket) == ["private/b", "public/a"]
    refused = records(relay, client="anonymous", error_code="AccessDenied")
    assert len(refused) >= 5


def test_wrong_signature_is_never_anonymous(relay: harness.Relay, upstream: Any) -> None:
    bucket = fresh(upstream, "pub", public__a=b"hello")
    url = f"{relay.url}/{bucket}/public/a"
    headers = sign("GET", url, {}, "UNSIGNED-PAYLOAD", (CLASSY[0], "not-the-secret"))
    reply = send(url, "GET", headers)
    assert reply.status == 403 and reply.code() == "SignatureDoesNotMatch"
    garbage = {"host": f"127.0.0.1:{relay.port}", "authorization": "nonsense"}
    assert send(url, "GET", garbage).status == 400
    presigned = unsigned(relay, "GET", f"/{bucket}/public/a?X-Amz-Signature=00")
    assert presigned.status in (400, 403) and presigned.body != b"hello"


# -- storage class and added headers -----------------------------------------------

def test_forced_class_and_headers_on_put(relay: harness.Relay, upstream: Any) -> None:
    bucket = fresh(upstream, "data")
    classy = boto_client(relay.url, CLASSY)
    classy.put_object(Bucket=bucket, Key="k", Body=b"1", StorageClass="GLACIER")
    head = upstream.head_object(Bucket=bucket, Key="k")
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == "AES256"
    # moto answers with title-cased x-amz-meta-* names: compare names case-insensitively.
    assert {k.lower(): v for k, v in head["Metadata"].items()} == {"relayed": "by s3relay"}
    # A client without its own class: the global headers, S3's default class.
    boto_client(relay.url).put_object(Bucket=bucket, Key="plain", Body=b"2")
    head = upstream.head_object(Bucket=bucket, Key="plain")
    assert head.get("StorageClass", "STANDARD") == "STANDARD"
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"] == {}


def test_bucket_class_beats_client_class(relay: harness.Relay, upstream: Any) -> None:
    bucket = fresh(upstream, "cold")
    boto_client(relay.url, CLASSY).put_object(Bucket=bucket, Key="k", Body=b"1")
    assert upstream.head_object(Bucket=bucket, Key="k")["StorageClass"] == "GLACIER_IR"


def test_forced_class_on_multipart(relay: harness.Relay, upstream: Any) -> None:
    bucket = fresh(upstream, "data")
    classy = boto_client(relay.url, CLASSY)
    upload = classy.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = classy.upload_part(
        Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"x" * 1024
    )
    classy.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    head = upstream.head_object(Bucket=bucket, Key="mp")
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == "AES256"


def test_forced_class_on_copy(relay: harness.Relay, upstream: Any) -> None:
    bucket = fresh(upstream, "data", source=b"copied")
    assert upstream.head_object(Bucket=bucket, Key="source").get("StorageClass") in (
        None, "STANDARD"
    )
    boto_client(relay.url, CLASSY).copy_object(
        Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "source"}
    )
    head = upstream.head_object(Bucket=bucket, Key="copy")
    assert head["StorageClass"] == "STANDARD_IA"
    assert upstream.get_object(Bucket=bucket, Key="copy")["Body"].read() == b"copied"


# -- ListBuckets ------------------------------------------------------------------

def test_list_buckets_filtered(relay: harness.Relay, upstream: Any) -> None:
    mine = fresh(upstream, "mine")
    other = fresh(upstream, "other")
    names = [b["Name"] for b in boto_client(relay.url, LISTER).list_buckets()["Buckets"]]
    assert mine in names and other not in names
    assert names and all(name.startswith("tr-mine-") for name in names)
    everything = [b["Name"] for b in boto_client(relay.url).list_buckets()["Buckets"]]
    assert mine in everything and other in everything


def test_anonymous_list_buckets_filtered(relay: harness.Relay, upstream: Any) -> None:
    public = fresh(upstream, "pub")
    other = fresh(upstream, "other")
    reply = unsigned(relay, "GET", "/")
    assert reply.status == 200
    assert f"<Name>{public}</Name>".encode() in reply.body
    assert f"<Name>{other}</Name>".encode() not in reply.body
    assert int(reply.headers["content-length"]) == len(reply.body)


# -- multi-delete -------------------------------------------------------------------

def test_multi_delete_with_a_forbidden_key_deletes_nothing(
    relay: harness.Relay, upstream: Any, tap: TcpTap
) -> None:
    bucket = fresh(upstream, "mine", photos__a=b"1", photos__b=b"2", private__x=b"3")
    before = quiet_upstream(tap)
    with pytest.raises(ClientError) as info:
        boto_client(relay.url, SCOPED).delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": "photos/a"}, {"Key": "private/x"}, {"Key": "photos/b"}]},
        )
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert tap.sent_up == before
    assert keys(upstream, bucket) == ["photos/a", "photos/b", "private/x"]
    assert "multi-delete key is outside the allowed prefixes" in relay.output()


def test_multi_delete_within_prefixes_works(relay: harness.Relay, upstream: Any) -> None:
    bucket = fresh(upstream, "mine", photos__a=b"1", photos__b=b"2", private__x=b"3")
    result = boto_client(relay.url, SCOPED).delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "photos/a"}, {"Key": "photos/b"}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["photos/a", "photos/b"]
    assert keys(upstream, bucket) == ["private/x"]


def test_multi_delete_on_a_pooled_upstream_connection(relay: harness.Relay,
                                                     upstream: Any) -> None:
    """With an idle pooled connection the upstream request starts while the body completes.

    The checked body then went upstream twice: Twisted refused the excess
    write, the client's connection dropped (boto3's retry hid it).  Raw, no retry.
    """
    bucket = fresh(upstream, "mine", photos__a=b"1", private__x=b"3")
    listing = f"{relay.url}/{bucket}?prefix=photos/"
    for _ in range(2):  # leaves an idle upstream connection in the pool
        headers = sign("GET", listing, {}, "UNSIGNED-PAYLOAD", SCOPED)
        assert send(listing, "GET", headers).status == 200
    url = f"{relay.url}/{bucket}?delete"
    body = b"<Delete><Object><Key>photos/a</Key></Object></Delete>"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    headers = sign("POST", url, {"content-length": str(len(body)), "content-md5": md5},
                   "UNSIGNED-PAYLOAD", SCOPED)
    reply = send(url, "POST", headers, body)
    assert reply.status == 200 and b"<Deleted><Key>photos/a</Key>" in reply.body, reply
    assert keys(upstream, bucket) == ["private/x"]


def test_multi_delete_raw_malformed_and_too_large(
    relay: harness.Relay, upstream: Any, tap: TcpTap
) -> None:
    bucket = fresh(upstream, "mine", photos__a=b"1")
    url = f"{relay.url}/{bucket}?delete"
    before = quiet_upstream(tap)
    body = (b'<!DOCTYPE Delete [<!ENTITY e "photos/a">]>'
            b"<Delete><Object><Key>&e;</Key></Object></Delete>")
    headers = sign("POST", url, {"content-length": str(len(body))}, "UNSIGNED-PAYLOAD", SCOPED)
    assert send(url, "POST", headers, body).code() == "MalformedXML"
    big = b" " * (2 * 1024 * 1024 + 1)
    headers = sign("POST", url, {"content-length": str(len(big))}, "UNSIGNED-PAYLOAD", SCOPED)
    assert send(url, "POST", headers, big).code() == "EntityTooLarge"
    assert tap.sent_up == before
    assert keys(upstream, bucket) == ["photos/a"]


def test_multi_delete_key_split_by_an_element_is_refused(
    relay: harness.Relay, upstream: Any, tap: TcpTap
) -> None:
    """The text after <Size/> is under the client's prefix; the whole key, which
    an upstream reading the element's text deletes, is not."""
    bucket = fresh(upstream, "mine", backup__photos__zzz=b"1")
    url = f"{relay.url}/{bucket}?delete"
    body = b"<Delete><Object><Key>backup/<Size/>photos/zzz</Key></Object></Delete>"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    headers = sign("POST", url, {"content-length": str(len(body)), "content-md5": md5},
                   "UNSIGNED-PAYLOAD", SCOPED)
    before = quiet_upstream(tap)
    assert send(url, "POST", headers, body).code() == "MalformedXML"
    assert tap.sent_up == before
    assert keys(upstream, bucket) == ["backup/photos/zzz"]


def upstream_head_and_body(sent: bytes) -> tuple[dict[str, str], bytes]:
    """The last request in ``sent`` (bytes a tap saw): lowercase headers, body."""
    head, _, body = sent[sent.rindex(b"POST "):].partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


def test_multi_delete_goes_upstream_as_it_was_read(
    relay: harness.Relay, upstream: Any, tap: TcpTap
) -> None:
    """The upstream gets the request the relay read and checked, written anew
    with its own digests, not the client's bytes."""
    bucket = fresh(upstream, "mine", photos__a=b"1", photos__b=b"2", private__x=b"3")
    url = f"{relay.url}/{bucket}?delete"
    body = (b'<?xml version="1.0"?>\n<Delete>\n  <Object><Key>&#112;hotos/a</Key></Object>\n'
            b"  <Object><Key>photos/b</Key><VersionId>null</VersionId></Object>\n"
            b"  <Quiet>false</Quiet>\n</Delete>\n")
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    headers = sign("POST", url, {"content-length": str(len(body)), "content-md5": md5,
                                 "x-amz-checksum-crc32": crc}, "UNSIGNED-PAYLOAD", SCOPED)
    quiet_upstream(tap)
    tap.up_log = bytearray()
    try:
        reply = send(url, "POST", headers, body)
        assert reply.status == 200, reply
        assert tap.wait_up(tap.sent_up)  # (already there: the reply came back)
        sent_headers, sent_body = upstream_head_and_body(bytes(tap.up_log))
    finally:
        tap.up_log = None
    assert sent_body == (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Object><Key>photos/a</Key></Object>"
        b"<Object><Key>photos/b</Key><VersionId>null</VersionId></Object>"
        b"<Quiet>false</Quiet></Delete>"
    )
    assert sent_headers["content-length"] == str(len(sent_body))
    assert sent_headers["content-md5"] == base64.b64encode(hashlib.md5(sent_body).digest()).decode()
    assert sent_headers["x-amz-checksum-crc32"] == base64.b64encode(
        zlib.crc32(sent_body).to_bytes(4, "big")).decode()
    assert sent_headers["x-amz-content-sha256"] == hashlib.sha256(sent_body).hexdigest()
    assert keys(upstream, bucket) == ["private/x"]


def test_multi_delete_upstream_not_started_before_the_body_checked(
    relay: harness.Relay, upstream: Any, tap: TcpTap
) -> None:
    """The body arrives late: the upstream must still hear nothing of a refused delete."""
    bucket = fresh(upstream, "mine", photos__a=b"1", private__x=b"3")
    url = f"{relay.url}/{bucket}?delete"
    body = (b"<Delete><Object><Key>photos/a</Key></Object>"
            b"<Object><Key>private/x</Key></Object></Delete>")
    headers = sign("POST", url, {"content-length": str(len(body))}, "UNSIGNED-PAYLOAD", SCOPED)
    before = quiet_upstream(tap)

    def late() -> Iterator[bytes]:
        time.sleep(1.0)  # ample time for an upstream request to start, were it started
        yield body

    assert send(url, "POST", headers, late()).code() == "AccessDenied"
    assert tap.sent_up == before
    assert keys(upstream, bucket) == ["photos/a", "private/x"]


# -- anonymous writes, when granted; a real CLI without a key --------------------------

@pytest.fixture(scope="module")
def writer_relay(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str]
) -> Iterator[harness.Relay]:
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key)
    text += ("\n[anonymous]\nbuckets = tr-drop-*\nprefixes = tr-drop-*:in/\n"
             "operations = read, list, write\ncredentials = main\n")
    relay = harness.start_relay(workdir, text, port)
    yield relay
    harness.stop(relay.process)


def test_anonymous_put_when_write_granted(writer_relay: harness.Relay, upstream: Any) -> None:
    bucket = fresh(upstream, "drop")
    reply = unsigned(writer_relay, "PUT", f"/{bucket}/in/file", b"dropped")
    assert reply.status == 200, reply.body
    assert upstream.get_object(Bucket=bucket, Key="in/file")["Body"].read() == b"dropped"
    # A declared hash is checked: a wrong one stores nothing.
    bad = unsigned(writer_relay, "PUT", f"/{bucket}/in/bad", b"dropped",
                   {"x-amz-content-sha256": "0" * 64})
    assert bad.status == 400
    assert unsigned(writer_relay, "PUT", f"/{bucket}/out/file", b"x").code() == "AccessDenied"
    chunked = unsigned(writer_relay, "PUT", f"/{bucket}/in/chunked", b"x",
                       {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"})
    assert chunked.code() == "InvalidRequest"
    assert unsigned(writer_relay, "DELETE", f"/{bucket}/in/file").code() == "AccessDenied"
    assert keys(upstream, bucket) == ["in/file"]


def test_aws_cli_no_sign_request(writer_relay: harness.Relay, upstream: Any,
                                 tmp_path: Path) -> None:
    from tests.integration.test_e2e_cli import aws, aws_env, ok

    bucket = fresh(upstream, "drop", in__report=b"quarterly numbers\n")
    env = aws_env(tmp_path)
    out = ok(aws(writer_relay, env, "s3", "cp", f"s3://{bucket}/in/report", "-",
                 "--no-sign-request"))
    assert out.stdout == "quarterly numbers\n"
    listed = ok(aws(writer_relay, env, "s3api", "list-objects-v2", "--bucket", bucket,
                    "--prefix", "in/", "--no-sign-request"))
    assert "in/report" in listed.stdout
    refused = aws(writer_relay, env, "s3api", "delete-object", "--bucket", bucket,
                  "--key", "in/report", "--no-sign-request")
    assert refused.returncode != 0 and "AccessDenied" in refused.stderr
    assert keys(upstream, bucket) == ["in/report"]


def test_boto3_unsigned_client(relay: harness.Relay, upstream: Any) -> None:
    from botocore import UNSIGNED

    bucket = fresh(upstream, "pub", public__a=b"hello")
    anonymous = boto_client(relay.url, signature_version=UNSIGNED)
    assert anonymous.get_object(Bucket=bucket, Key="public/a")["Body"].read() == b"hello"
    assert anonymous.head_object(Bucket=bucket, Key="public/a")["ContentLength"] == 5
    names = [b["Name"] for b in anonymous.list_buckets()["Buckets"]]
    assert bucket in names and all(name.startswith("tr-pub-") for name in names)
    with pytest.raises(ClientError) as info:
        anonymous.put_object(Bucket=bucket, Key="public/new", Body=b"no")
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert keys(upstream, bucket) == ["public/a"]


def test_boto3_unsigned_put_when_write_granted(writer_relay: harness.Relay,
                                              upstream: Any) -> None:
    from botocore import UNSIGNED

    bucket = fresh(upstream, "drop")
    anonymous = boto_client(writer_relay.url, signature_version=UNSIGNED)
    anonymous.put_object(Bucket=bucket, Key="in/sdk", Body=b"from an SDK")
    assert upstream.get_object(Bucket=bucket, Key="in/sdk")["Body"].read() == b"from an SDK"
    anonymous.upload_fileobj(io.BytesIO(b"streamed" * 1000), bucket, "in/stream")
    assert upstream.get_object(Bucket=bucket, Key="in/stream")["Body"].read() == b"streamed" * 1000
