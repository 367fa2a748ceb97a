"""Upload ids through the real relay: a scoped client cannot use another key's upload.

moto, like any store that finds uploads by id alone, would let a client
allowed ``projects/alpha/`` feed, list, complete or abort an upload for
``projects/beta/secret.txt`` through a URL naming its own key.  The relay
checks the id against the key upstream first (s3relay.s3.uploads).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from botocore.exceptions import ClientError

from tests import harness
from tests.integration.conftest import boto_client, relay_config
from tests.tcptap import TcpTap

ALPHA = ("AKIDUPLOADSALPHA0001", "uploads-alpha-secret/abcdefghijklmnop")
BETA = ("AKIDUPLOADSBETA00001", "uploads-beta-secret/abcdefghijklmnopq")
PART = 5 * 1024 * 1024
_names = itertools.count()
#: A request line (a body may run straight into the next request's).
_REQUEST_LINE = re.compile(rb"(?:GET|PUT|POST|DELETE|HEAD) /[^ \r\n]* HTTP/1\.1(?=\r\n)")


def clients() -> str:
    return "".join(
        f"\n[client:{name}]\naccess_key_id = {key[0]}\nsecret_access_key = {key[1]}\n"
        f"credentials = main\nbuckets = up-*\nprefixes = up-*:projects/{name}/\n"
        "operations = read, list, write, delete, multipart\n"
        for name, key in (("alpha", ALPHA), ("beta", BETA))
    )


def start(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], tap: TcpTap,
          extra: str = "") -> harness.Relay:
    port = harness.free_port()
    text = relay_config(
        s3, f"tcp:{port}:interface=127.0.0.1", self_key, f"http://127.0.0.1:{tap.port}"
    ).replace("addressing = path\n", f"addressing = path\n{extra}")
    return harness.start_relay(workdir, text + clients(), port)


@pytest.fixture(scope="module")
def relay(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
          tap: TcpTap) -> Iterator[harness.Relay]:
    relay = start(workdir, s3, self_key, tap)
    yield relay
    harness.stop(relay.process)


@pytest.fixture
def bucket(upstream: Any) -> str:
    name = f"up-{next(_names)}"
    upstream.create_bucket(Bucket=name)
    return name


def beta_upload(relay: harness.Relay, bucket: str) -> str:
    """An upload another client started for its own key."""
    beta = boto_client(relay.url, BETA)
    return str(beta.create_multipart_upload(Bucket=bucket, Key="projects/beta/secret.txt")
               ["UploadId"])


def requests_up(tap: TcpTap, action: Callable[[], object]) -> list[str]:
    """The request lines that reached the upstream while ``action`` ran."""
    tap.up_log = bytearray()
    try:
        action()
    finally:
        sent, tap.up_log = bytes(tap.up_log), None
    return [line.decode("latin-1") for line in _REQUEST_LINE.findall(sent)]


def refused(call: Callable[[], object]) -> Callable[[], object]:
    def run() -> None:
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == "NoSuchUpload"
    return run


def test_another_keys_upload_cannot_be_fed_completed_listed_or_aborted(
    relay: harness.Relay, upstream: Any, bucket: str, tap: TcpTap
) -> None:
    upload_id = beta_upload(relay, bucket)
    alpha = boto_client(relay.url, ALPHA)
    mine = {"Bucket": bucket, "Key": "projects/alpha/x", "UploadId": upload_id}
    for call in (
        lambda: alpha.upload_part(PartNumber=1, Body=b"overwrite", **mine),
        lambda: alpha.list_parts(**mine),
        lambda: alpha.complete_multipart_upload(
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]}, **mine),
        lambda: alpha.abort_multipart_upload(**mine),
    ):
        sent = requests_up(tap, refused(call))
        # Only the check went upstream, never the request that names the id.
        assert sent and all(line.startswith("GET /") and "uploads" in line for line in sent), sent
    listed = upstream.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [
        ("projects/beta/secret.txt", upload_id)
    ]
    assert upstream.list_parts(Bucket=bucket, Key="projects/beta/secret.txt",
                               UploadId=upload_id).get("Parts", []) == []


def test_a_clients_own_multipart_upload_works_and_is_checked_once(
    relay: harness.Relay, upstream: Any, bucket: str, tap: TcpTap
) -> None:
    alpha = boto_client(relay.url, ALPHA)
    key = {"Bucket": bucket, "Key": "projects/alpha/big.bin"}
    upload_id = alpha.create_multipart_upload(**key)["UploadId"]
    first, last = b"a" * PART, b"b" * 100
    parts: list[dict[str, Any]] = []

    def upload() -> None:
        for number, data in ((1, first), (2, last)):
            etag = alpha.upload_part(PartNumber=number, Body=data, UploadId=upload_id, **key)
            parts.append({"PartNumber": number, "ETag": etag["ETag"]})
        alpha.complete_multipart_upload(UploadId=upload_id,
                                        MultipartUpload={"Parts": parts}, **key)

    sent = requests_up(tap, upload)
    assert [line.split(" ")[0] for line in sent] == ["GET", "PUT", "PUT", "POST"], sent
    assert upstream.get_object(**key)["Body"].read() == first + last


def test_stores_that_bind_upload_ids_are_not_asked(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], upstream: Any,
    bucket: str, tap: TcpTap,
) -> None:
    relay = start(workdir, s3, self_key, tap, "binds_upload_ids = yes\n")
    try:
        alpha = boto_client(relay.url, ALPHA)
        key = {"Bucket": bucket, "Key": "projects/alpha/y"}
        upload_id = alpha.create_multipart_upload(**key)["UploadId"]
        sent = requests_up(tap, lambda: alpha.abort_multipart_upload(UploadId=upload_id, **key))
        assert [line.split(" ")[0] for line in sent] == ["DELETE"], sent
    finally:
        harness.stop(relay.process)
