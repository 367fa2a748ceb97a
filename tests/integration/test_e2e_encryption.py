"""Encryption at rest through a relay process in front of the signature-checking
S3 server: round trips at every segment boundary, ranges, sizes in HEAD and
listings, what the store holds, tampering, key rotation, plaintext objects and
the operations refused under encrypted prefixes."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3relay.crypt.keys import META_KEY_ID, generate_key_file
from s3relay.crypt.layout import SEGMENT, stored_size
from tests import harness
from tests.integration.conftest import CLIENT_KEY, boto_client, relay_config
from tests.integration.test_e2e_cli import aws, aws_env, ok, s3cmd, s3cmd_config

SECURE = "crypt-secure"  # encrypted whole
MIXED = "crypt-mixed"  # encrypted under private/
PLAIN = "crypt-plain"  # not encrypted
SIZES = (0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 7, 2 * 1024 * 1024 + 3)


def data(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(b"%d" % seed).digest()
    return (block * (size // len(block) + 1))[:size]


def encryption_section(keys: list[Path], plaintext_reads: bool = False) -> str:
    return (
        f"\n[encryption]\nprefixes = {SECURE}, {MIXED}/private/\n"
        f"key_files = {', '.join(str(k) for k in keys)}\n"
        f"allow_plaintext_reads = {'yes' if plaintext_reads else 'no'}\n"
    )


@pytest.fixture(scope="module")
def keys(workdir: Path) -> dict[str, Path]:
    folder = workdir / "kek"
    folder.mkdir(exist_ok=True)
    paths = {}
    for name in ("2026-06", "2026-12"):
        paths[name] = folder / f"{name}.key"
        if not paths[name].exists():
            generate_key_file(str(paths[name]))
    return paths


def start(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], section: str,
          metrics: bool = False) -> harness.Relay:
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key) + section
    if metrics:
        text += f"\n[metrics]\nlisten = tcp:{harness.free_port()}:interface=127.0.0.1\n"
    return harness.start_relay(workdir, text, port)


def metrics_url(relay: harness.Relay) -> str:
    text = relay.log.with_suffix(".ini").read_text()
    port = text.rsplit("[metrics]\nlisten = tcp:", 1)[1].split(":", 1)[0]
    return f"http://127.0.0.1:{port}/metrics"


@pytest.fixture(scope="module")
def relay(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
          keys: dict[str, Path]) -> Iterator[harness.Relay]:
    relay = start(workdir, s3, self_key, encryption_section([keys["2026-06"]]), metrics=True)
    yield relay
    harness.stop(relay.process)


@pytest.fixture(scope="module")
def client(relay: harness.Relay, upstream: Any) -> Any:
    for name in (SECURE, MIXED, PLAIN):
        try:
            upstream.create_bucket(Bucket=name)
        except ClientError:
            pass
    return boto_client(relay.url)


def stored(upstream: Any, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
    got = upstream.get_object(Bucket=bucket, Key=key)
    return got["Body"].read(), {k.lower(): v for k, v in got["Metadata"].items()}


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_stores_ciphertext(client: Any, upstream: Any, size: int) -> None:
    body = data(size, size)
    key = f"round/{size}"
    client.put_object(Bucket=SECURE, Key=key, Body=body)
    assert client.get_object(Bucket=SECURE, Key=key)["Body"].read() == body
    assert client.head_object(Bucket=SECURE, Key=key)["ContentLength"] == size
    raw, metadata = stored(upstream, SECURE, key)
    assert len(raw) == stored_size(size)
    assert metadata[META_KEY_ID.removeprefix("x-amz-meta-")] == "2026-06"
    if size >= 32:
        assert body[:32] not in raw and body[-32:] not in raw


def test_sizes_in_listings_are_plaintext(client: Any) -> None:
    sizes = {f"list/{size}": size for size in SIZES}
    put_etags = {
        key: client.put_object(Bucket=SECURE, Key=key, Body=data(size))["ETag"]
        for key, size in sizes.items()
    }
    listed = client.list_objects_v2(Bucket=SECURE, Prefix="list/")["Contents"]
    assert {item["Key"]: item["Size"] for item in listed} == sizes
    v1 = client.list_objects(Bucket=SECURE, Prefix="list/")["Contents"]
    assert {item["Key"]: item["Size"] for item in v1} == sizes
    versions = client.list_object_versions(Bucket=SECURE, Prefix="list/")["Versions"]
    assert {item["Key"]: item["Size"] for item in versions} == sizes
    # One ETag everywhere, shown as no MD5 of the plaintext (crypt.etags).
    assert {item["Key"]: item["ETag"] for item in listed} == put_etags
    assert all(etag.endswith('-0"') for etag in put_etags.values())
    for key in sizes:
        assert client.head_object(Bucket=SECURE, Key=key)["ETag"] == put_etags[key]
        assert client.get_object(Bucket=SECURE, Key=key)["ETag"] == put_etags[key]
        assert client.head_object(Bucket=SECURE, Key=key, IfMatch=put_etags[key])
        with pytest.raises(ClientError) as info:
            client.head_object(Bucket=SECURE, Key=key, IfNoneMatch=put_etags[key])
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304


def test_only_the_prefix_is_encrypted(client: Any, upstream: Any) -> None:
    body = data(SEGMENT + 5, 7)
    client.put_object(Bucket=MIXED, Key="private/a", Body=body)
    client.put_object(Bucket=MIXED, Key="public/a", Body=body)
    client.put_object(Bucket=PLAIN, Key="a", Body=body)
    assert stored(upstream, MIXED, "private/a")[0] != body
    assert stored(upstream, MIXED, "public/a") == (body, {})
    assert stored(upstream, PLAIN, "a") == (body, {})
    listed = client.list_objects_v2(Bucket=MIXED)["Contents"]
    assert {item["Key"]: item["Size"] for item in listed} == {
        "private/a": len(body), "public/a": len(body)
    }
    for bucket, key in ((MIXED, "private/a"), (MIXED, "public/a"), (PLAIN, "a")):
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body


RANGED = 3 * SEGMENT + 11


@pytest.fixture(scope="module")
def ranged(client: Any) -> bytes:
    body = data(RANGED, 3)
    client.put_object(Bucket=SECURE, Key="ranged", Body=body)
    return body


def check_range(client: Any, body: bytes, header: str, expected: slice) -> None:
    got = client.get_object(Bucket=SECURE, Key="ranged", Range=header)
    part = body[expected]
    assert got["Body"].read() == part
    assert got["ContentLength"] == len(part)
    start = expected.start if expected.start is not None else 0
    assert got["ContentRange"] == f"bytes {start}-{start + len(part) - 1}/{len(body)}"


@pytest.mark.parametrize("first,last", [
    (0, 0), (0, SEGMENT - 1), (SEGMENT - 1, SEGMENT), (SEGMENT, SEGMENT),
    (SEGMENT + 1, 2 * SEGMENT + 1), (3 * SEGMENT, RANGED - 1), (RANGED - 1, RANGED + 100),
    (5, RANGED * 2),
])
def test_ranges_at_segment_boundaries(client: Any, ranged: bytes, first: int, last: int) -> None:
    check_range(client, ranged, f"bytes={first}-{last}", slice(first, last + 1))


def test_open_and_suffix_ranges(client: Any, ranged: bytes) -> None:
    check_range(client, ranged, f"bytes={SEGMENT}-", slice(SEGMENT, None))
    check_range(client, ranged, "bytes=-11", slice(RANGED - 11, None))
    check_range(client, ranged, f"bytes=-{SEGMENT + 12}", slice(RANGED - SEGMENT - 12, None))
    check_range(client, ranged, f"bytes=-{RANGED * 3}", slice(0, None))


def test_unsatisfiable_range_is_416(client: Any, ranged: bytes) -> None:
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=SECURE, Key="ranged", Range=f"bytes={RANGED}-")
    assert info.value.response["Error"]["Code"] == "InvalidRange"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(first=st.integers(0, RANGED - 1), length=st.integers(1, 2 * SEGMENT + 100))
def test_any_range(client: Any, ranged: bytes, first: int, length: int) -> None:
    check_range(client, ranged, f"bytes={first}-{first + length - 1}",
                slice(first, first + length))


def tampered_get(client: Any, key: str) -> str:
    """What a GET of ``key`` ends with: 'ok', or the error botocore saw."""
    try:
        client.get_object(Bucket=SECURE, Key=key)["Body"].read()
    except ClientError as e:
        return str(e.response["Error"]["Code"])
    except Exception as e:  # noqa: BLE001 -- a cut connection shows as several types
        return type(e).__name__
    return "ok"


def put_stored(upstream: Any, key: str, raw: bytes, metadata: dict[str, str]) -> None:
    upstream.put_object(Bucket=SECURE, Key=key, Body=raw, Metadata=metadata)


def test_tampering_is_detected(client: Any, upstream: Any, relay: harness.Relay) -> None:
    body = data(3 * SEGMENT + 100, 9)
    client.put_object(Bucket=SECURE, Key="victim", Body=body)
    client.put_object(Bucket=SECURE, Key="other", Body=data(3 * SEGMENT + 100, 10))
    raw, metadata = stored(upstream, SECURE, "victim")
    other_raw, other_metadata = stored(upstream, SECURE, "other")
    seg = stored_size(SEGMENT)
    flipped = bytearray(raw)
    flipped[seg + 40] ^= 1
    cases = {
        "one byte": (bytes(flipped), metadata),
        "segments swapped": (raw[seg:2 * seg] + raw[:seg] + raw[2 * seg:], metadata),
        "a segment dropped": (raw[:seg] + raw[2 * seg:], metadata),
        "truncated at a segment": (raw[:3 * seg], metadata),
        "another object's bytes": (other_raw, metadata),
        "another object's bytes and key": (other_raw, other_metadata),
        "metadata altered": (raw, {**metadata, "s3relay-data-key": other_metadata[
            "s3relay-data-key"]}),
    }
    for name, (stored_bytes, stored_metadata) in cases.items():
        put_stored(upstream, "victim", stored_bytes, stored_metadata)
        before = failures(relay)
        assert tampered_get(client, "victim") != "ok", name
        assert failures(relay) > before, name
    put_stored(upstream, "victim", raw, metadata)
    assert client.get_object(Bucket=SECURE, Key="victim")["Body"].read() == body


def failures(relay: harness.Relay) -> float:
    for line in requests.get(metrics_url(relay), timeout=10).text.splitlines():
        if line.startswith("s3relay_decryption_failures_total "):
            return float(line.split()[1])
    raise AssertionError("no s3relay_decryption_failures_total")


def test_cut_body_never_looks_complete(client: Any, upstream: Any) -> None:
    body = data(2 * SEGMENT + 9, 11)
    client.put_object(Bucket=SECURE, Key="cut", Body=body)
    raw, metadata = stored(upstream, SECURE, "cut")
    flipped = bytearray(raw)
    flipped[-5] ^= 1  # the last segment's tag
    put_stored(upstream, "cut", bytes(flipped), metadata)
    presigner = boto_client(client.meta.endpoint_url, signature_version="s3v4")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": SECURE, "Key": "cut"})
    # The connection is cut: before the head (the relay's buffered writes are
    # dropped), or short of the Content-Length; never a complete body.
    with pytest.raises((requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ConnectionError)):
        requests.get(url, timeout=10)


def test_key_rotation(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
                      keys: dict[str, Path], client: Any, upstream: Any) -> None:
    old = data(SEGMENT * 2, 12)
    client.put_object(Bucket=SECURE, Key="rotation/old", Body=old)
    rotated = start(workdir, s3, self_key,
                    encryption_section([keys["2026-12"], keys["2026-06"]]))
    try:
        new_client = boto_client(rotated.url)
        assert new_client.get_object(Bucket=SECURE, Key="rotation/old")["Body"].read() == old
        new_client.put_object(Bucket=SECURE, Key="rotation/new", Body=b"new")
        assert stored(upstream, SECURE, "rotation/new")[1]["s3relay-key-id"] == "2026-12"
        assert new_client.get_object(Bucket=SECURE, Key="rotation/new")["Body"].read() == b"new"
        # The old relay lacks the new key: it refuses, it never serves stored bytes.
        assert tampered_get(client, "rotation/new") == "InternalError"
    finally:
        harness.stop(rotated.process)


def test_plaintext_objects(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
                           keys: dict[str, Path], client: Any, upstream: Any) -> None:
    upstream.put_object(Bucket=SECURE, Key="legacy", Body=b"written before encryption")
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=SECURE, Key="legacy")
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    lenient = start(workdir, s3, self_key, encryption_section([keys["2026-06"]], True))
    try:
        got = boto_client(lenient.url).get_object(Bucket=SECURE, Key="legacy")
        assert got["Body"].read() == b"written before encryption"
    finally:
        harness.stop(lenient.process)


def test_refused_operations_store_nothing(client: Any, upstream: Any) -> None:
    client.put_object(Bucket=SECURE, Key="source", Body=b"x")
    client.put_object(Bucket=PLAIN, Key="source", Body=b"x")
    attempts = {
        "copy out": lambda: client.copy_object(
            Bucket=PLAIN, Key="copied", CopySource={"Bucket": SECURE, "Key": "source"}),
        "copy in": lambda: client.copy_object(
            Bucket=SECURE, Key="copied", CopySource={"Bucket": PLAIN, "Key": "source"}),
        "part copy": lambda: client.upload_part_copy(
            Bucket=SECURE, Key="copied", UploadId=client.create_multipart_upload(
                Bucket=SECURE, Key="copied")["UploadId"], PartNumber=1,
            CopySource={"Bucket": PLAIN, "Key": "source"}),
    }
    for name, attempt in attempts.items():
        with pytest.raises(ClientError) as info:
            attempt()
        assert info.value.response["Error"]["Code"] == "NotImplemented", name
    for bucket in (SECURE, PLAIN):
        with pytest.raises(ClientError):
            upstream.head_object(Bucket=bucket, Key="copied")


def test_a_body_that_fails_its_check_stores_nothing(client: Any, upstream: Any) -> None:
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=SECURE, Key="bad-md5", Body=b"hello",
                          ContentMD5="XrY7u+Ae7tCTyyK7j1rNww==")
    assert info.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(ClientError):
        upstream.head_object(Bucket=SECURE, Key="bad-md5")


def test_aws_cli_and_s3cmd(client: Any, relay: harness.Relay, tmp_path: Path,
                          upstream: Any) -> None:
    source = tmp_path / "file"
    source.write_bytes(data(5 * SEGMENT + 3, 13))
    env = aws_env(tmp_path)
    url = f"s3://{SECURE}/cli/file"
    ok(aws(relay, env, "s3", "cp", str(source), url))
    aws(relay, env, "s3", "cp", url, str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == source.read_bytes()
    listing = ok(aws(relay, env, "s3", "ls", f"s3://{SECURE}/cli/")).stdout
    assert str(source.stat().st_size) in listing
    assert len(stored(upstream, SECURE, "cli/file")[0]) == stored_size(5 * SEGMENT + 3)
    config = s3cmd_config(tmp_path, relay)
    big = tmp_path / "big"
    big.write_bytes(data(11 * 1024 * 1024, 14))
    for name, path in (("file", source), ("big", big)):  # one PUT; three parts
        ok(s3cmd(config, tmp_path, "put", "--multipart-chunk-size-mb=5", str(path),
                 f"s3://{SECURE}/s3cmd/{name}"))
        ok(s3cmd(config, tmp_path, "get", f"s3://{SECURE}/s3cmd/{name}",
                 str(tmp_path / "back-s")))
        assert (tmp_path / "back-s").read_bytes() == path.read_bytes()
        (tmp_path / "back-s").unlink()
        raw = stored(upstream, SECURE, f"s3cmd/{name}")[0]
        assert len(raw) == stored_size(path.stat().st_size)
    assert upstream.head_object(Bucket=SECURE, Key="s3cmd/big")["ETag"].endswith('-3"')


MiB = 1024 * 1024


def test_multipart_round_trip_and_ranges(client: Any, upstream: Any) -> None:
    body = data(12 * MiB + 3, 21)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    client.upload_fileobj(io.BytesIO(body), SECURE, "multi", Config=config)
    raw = upstream.get_object(Bucket=SECURE, Key="multi")
    assert raw["ContentLength"] == stored_size(len(body))
    assert raw["ETag"].endswith('-3"')
    assert client.head_object(Bucket=SECURE, Key="multi")["ContentLength"] == len(body)
    assert client.get_object(Bucket=SECURE, Key="multi")["Body"].read() == body
    for first, last in ((5 * MiB - 10, 5 * MiB + 10), (0, 10 * MiB + 1), (10 * MiB, len(body))):
        got = client.get_object(Bucket=SECURE, Key="multi", Range=f"bytes={first}-{last}")
        assert got["Body"].read() == body[first:last + 1]
    listed = client.list_objects_v2(Bucket=SECURE, Prefix="multi")["Contents"]
    assert listed[0]["Size"] == len(body)


def test_multipart_parts_listed_in_plaintext_and_aborted(client: Any, upstream: Any) -> None:
    upload = client.create_multipart_upload(Bucket=SECURE, Key="parts")["UploadId"]
    client.upload_part(Bucket=SECURE, Key="parts", UploadId=upload, PartNumber=1,
                       Body=data(5 * MiB))
    client.upload_part(Bucket=SECURE, Key="parts", UploadId=upload, PartNumber=2, Body=b"tail")
    parts = client.list_parts(Bucket=SECURE, Key="parts", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 5 * MiB), (2, 4)]
    upstream_ids = [u["UploadId"] for u in upstream.list_multipart_uploads(
        Bucket=SECURE, Prefix="parts").get("Uploads", [])]
    assert len(upstream_ids) == 1 and upstream_ids[0] != upload
    with pytest.raises(ClientError) as info:  # an id the relay did not hand out
        client.upload_part(Bucket=SECURE, Key="parts", UploadId=upstream_ids[0], PartNumber=3,
                           Body=b"x")
    assert info.value.response["Error"]["Code"] == "NoSuchUpload"
    client.abort_multipart_upload(Bucket=SECURE, Key="parts", UploadId=upload)
    assert not upstream.list_multipart_uploads(Bucket=SECURE, Prefix="parts").get("Uploads")


@pytest.mark.parametrize("sizes,numbers", [
    ((5 * MiB + 1, 5 * MiB + 1, 10), (1, 2, 3)),  # not a multiple of 64 KiB
    ((5 * MiB, 6 * MiB, 10), (1, 2, 3)),  # unequal
    ((5 * MiB, 10), (1, 3)),  # not numbered 1..N
])
def test_multipart_of_another_shape_is_refused(client: Any, upstream: Any,
                                               sizes: tuple[int, ...],
                                               numbers: tuple[int, ...]) -> None:
    key = f"shape-{len(sizes)}-{sizes[1]}"
    upload = client.create_multipart_upload(Bucket=SECURE, Key=key)["UploadId"]
    etags = [client.upload_part(Bucket=SECURE, Key=key, UploadId=upload, PartNumber=n,
                                Body=data(size))["ETag"] for n, size in zip(numbers, sizes)]
    with pytest.raises(ClientError) as info:
        client.complete_multipart_upload(
            Bucket=SECURE, Key=key, UploadId=upload, MultipartUpload={"Parts": [
                {"PartNumber": n, "ETag": e} for n, e in zip(numbers, etags)]})
    assert info.value.response["Error"]["Code"] == "InvalidPart"
    with pytest.raises(ClientError):
        upstream.head_object(Bucket=SECURE, Key=key)
    client.abort_multipart_upload(Bucket=SECURE, Key=key, UploadId=upload)


def test_multipart_with_aws_cli(client: Any, relay: harness.Relay, tmp_path: Path,
                                upstream: Any) -> None:
    source = tmp_path / "big"
    source.write_bytes(data(17 * MiB + 5, 22))
    env = aws_env(tmp_path)
    ok(aws(relay, env, "s3", "cp", str(source), f"s3://{SECURE}/cli/big"))
    assert upstream.head_object(Bucket=SECURE, Key="cli/big")["ETag"].endswith('-3"')
    ok(aws(relay, env, "s3", "cp", f"s3://{SECURE}/cli/big", str(tmp_path / "big-back")))
    assert (tmp_path / "big-back").read_bytes() == source.read_bytes()


RCLONE = shutil.which("rclone")


@pytest.mark.skipif(RCLONE is None, reason="rclone is not installed (.ci/setup installs it)")
def test_rclone(client: Any, relay: harness.Relay, tmp_path: Path, upstream: Any) -> None:
    assert RCLONE is not None
    env = {
        "HOME": str(tmp_path), "PATH": os.environ.get("PATH", ""),
        "RCLONE_CONFIG": str(tmp_path / "none.conf"),
        "RCLONE_CONFIG_RELAY_TYPE": "s3", "RCLONE_CONFIG_RELAY_PROVIDER": "Other",
        "RCLONE_CONFIG_RELAY_ENDPOINT": relay.url, "RCLONE_CONFIG_RELAY_REGION": "us-east-1",
        "RCLONE_CONFIG_RELAY_ACCESS_KEY_ID": CLIENT_KEY[0],
        "RCLONE_CONFIG_RELAY_SECRET_ACCESS_KEY": CLIENT_KEY[1],
        "RCLONE_CONFIG_RELAY_FORCE_PATH_STYLE": "true",
    }
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(data(3 * SEGMENT + 1, 31))
    big.write_bytes(data(11 * MiB + 7, 32))  # three 5 MiB parts
    for path in (small, big):
        for args in (["copyto", str(path), f"relay:{SECURE}/rclone/{path.name}"],
                     ["copyto", f"relay:{SECURE}/rclone/{path.name}", str(tmp_path / "back")]):
            # --s3-no-head: after a multipart upload rclone HEADs ?versionId=null (moto's
            # answer's version id), which moto refuses on an unversioned bucket.
            done = subprocess.run([RCLONE, *args, "--s3-upload-cutoff=5M", "--s3-chunk-size=5M",
                                   "--s3-no-head", "--retries=1", "--low-level-retries=1"],
                                  env=env, capture_output=True, text=True, timeout=120,
                                  check=False)
            assert done.returncode == 0, done.stderr[-3000:]
        assert (tmp_path / "back").read_bytes() == path.read_bytes()
        stored_bytes = stored(upstream, SECURE, f"rclone/{path.name}")[0]
        assert len(stored_bytes) == stored_size(path.stat().st_size)
    listing = subprocess.run([RCLONE, "lsl", f"relay:{SECURE}/rclone"], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert str(small.stat().st_size) in listing and str(big.stat().st_size) in listing
