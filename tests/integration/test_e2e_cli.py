"""Real command-line S3 clients (awscli v1, s3cmd) through a relay process.

Each client runs as a subprocess with its own throw-away configuration, so
nothing in ~/.aws or ~/.s3cfg leaks in; what the relay stored is checked
straight upstream, not just by what the client prints.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Callable

import pytest

from tests import harness
from tests.integration.conftest import CLIENT_KEY

BIN = Path(sys.executable).parent
AWS = str(BIN / "aws")
S3CMD = str(BIN / "s3cmd")
MiB = 1024 * 1024
TIMEOUT = 90

# A small tree whose names need escaping: space, '+', unicode, nested dirs.
AWKWARD_TREE = {
    "plain.txt": b"plain\n",
    "with space.txt": b"a space in the name\n",
    "plus+sign.bin": bytes(range(256)),
    "unicode-ключ-鍵.dat": "unicode body ✓\n".encode(),
    "sub dir/nested+file name.txt": b"nested\n",
    "sub dir/deeper/é.txt": b"deeper\n",
}


def run(args: list[str], env: dict[str, str], timeout: float = TIMEOUT,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"{result.args!r} exited {result.returncode}\n"
        f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    )
    return result


def clean_env(home: Path) -> dict[str, str]:
    """The environment without any AWS_*/S3* settings of the caller, HOME in tmp."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "S3CMD", "BOTO", "HTTP_PROXY", "HTTPS_PROXY"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def aws_env(tmp_path: Path, key: tuple[str, str] = CLIENT_KEY,
            config: str | None = None) -> dict[str, str]:
    env = clean_env(tmp_path / "home")
    config_file = tmp_path / "aws-config"
    if config is not None:
        config_file.write_text(config)
    env.update(
        AWS_ACCESS_KEY_ID=key[0],
        AWS_SECRET_ACCESS_KEY=key[1],
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(config_file) if config is not None else str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_MAX_ATTEMPTS="1",
        AWS_RETRY_MODE="standard",
        AWS_PAGER="",
    )
    return env


def aws(relay: harness.Relay, env: dict[str, str], *args: str,
        ca_bundle: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [AWS, "--endpoint-url", relay.url]
    if ca_bundle is not None:
        command += ["--ca-bundle", str(ca_bundle)]
    return run(command + list(args), env, cwd=cwd)


def s3cmd_config(tmp_path: Path, relay: harness.Relay, key: tuple[str, str] = CLIENT_KEY,
                 ca_bundle: Path | None = None) -> Path:
    host = f"127.0.0.1:{relay.port}"
    tls = relay.scheme == "https"
    lines = [
        "[default]",
        f"access_key = {key[0]}",
        f"secret_key = {key[1]}",
        "access_token = ",
        f"host_base = {host}",
        f"host_bucket = {host}",
        f"use_https = {tls}",
        "signature_v2 = False",
        "bucket_location = us-east-1",
        "check_ssl_certificate = True" if ca_bundle else "check_ssl_certificate = False",
        f"ca_certs_file = {ca_bundle or ''}",
        "proxy_host = ",
        "proxy_port = 0",
        "max_retries = 1",
        "socket_timeout = 60",
        "progress_meter = False",
        "",
    ]
    path = tmp_path / "s3cfg"
    path.write_text("\n".join(lines))
    return path


def s3cmd(config: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(tmp_path / "home")
    return run([S3CMD, "-c", str(config), *args], env)


def stored(upstream: Any, bucket: str, key: str) -> bytes:
    return bytes(upstream.get_object(Bucket=bucket, Key=key)["Body"].read())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_serial = itertools.count()


def unique(prefix: str) -> str:
    """A bucket name no other test uses (for tests that create buckets through the CLI)."""
    return f"{prefix}-{os.getpid()}-{next(_serial)}"


def write_tree(root: Path, tree: dict[str, bytes]) -> None:
    # An hour old: S3 LastModified has whole seconds, and sync re-uploads a local file
    # that looks newer than its copy; with old files, only a key or size mismatch would.
    past = time.time() - 3600
    for rel, data in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (past, past))


class Sent:
    """One request as botocore's --debug log shows it: method, URL, lower-cased headers."""

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method, self.url, self.headers = method, url, headers

    def __repr__(self) -> str:
        return f"Sent({self.method} {self.url} {self.headers.get('x-amz-content-sha256')})"


def sent_requests(debug_log: str) -> list[Sent]:
    sent = []
    pattern = re.compile(r"Sending http request: <AWSPreparedRequest stream_output=\w+, "
                         r"method=(\w+), url=(\S+), headers=(\{.*\})>$")
    for line in debug_log.splitlines():
        match = pattern.search(line)
        if match:
            raw = ast.literal_eval(match.group(3))
            headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in raw.items()}
            sent.append(Sent(match.group(1), match.group(2), headers))
    return sent


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


class Endpoint:
    """A relay and the CA bundle a client needs for it (None over plain http)."""

    def __init__(self, relay: harness.Relay, ca_bundle: Path | None) -> None:
        self.relay, self.ca_bundle = relay, ca_bundle

    def aws(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return aws(self.relay, env, *args, ca_bundle=self.ca_bundle)


@pytest.fixture(params=["http", "https"])
def endpoint(request: pytest.FixtureRequest) -> Endpoint:
    """Each test twice: plain http (signed SHA-256 payloads) and https (unsigned trailers)."""
    if request.param == "http":
        return Endpoint(request.getfixturevalue("relay"), None)
    return Endpoint(request.getfixturevalue("tls_relay"), request.getfixturevalue("tls_files")[0])


# --------------------------------------------------------------------- awscli


def test_aws_mb_cp_ls_cp_down_rm(relay: harness.Relay, upstream: Any, tmp_path: Path,
                                 object_keys: Callable[[str], list[str]]) -> None:
    env = aws_env(tmp_path)
    name = unique("awscli-mb")
    result = ok(aws(relay, env, "s3", "mb", f"s3://{name}"))
    assert f"make_bucket: {name}" in result.stdout
    assert name in [b["Name"] for b in upstream.list_buckets()["Buckets"]]

    small = tmp_path / "small.txt"
    small.write_bytes(b"hello from the aws cli\n")
    big = tmp_path / "big.bin"
    big_data = os.urandom(20 * MiB + 12345)
    big.write_bytes(big_data)

    ok(aws(relay, env, "s3", "cp", str(small), f"s3://{name}/dir/small.txt"))
    ok(aws(relay, env, "s3", "cp", str(big), f"s3://{name}/dir/big.bin"))
    assert stored(upstream, name, "dir/small.txt") == small.read_bytes()
    big_stored = stored(upstream, name, "dir/big.bin")
    assert len(big_stored) == len(big_data) and sha(big_stored) == sha(big_data)
    # s3transfer's default threshold is 8 MiB, chunks 8 MiB: a 3-part multipart upload.
    etag = upstream.head_object(Bucket=name, Key="dir/big.bin")["ETag"]
    assert etag.strip('"').endswith("-3"), etag

    listing = ok(aws(relay, env, "s3", "ls", f"s3://{name}/dir/")).stdout.splitlines()
    sizes = {line.split()[-1]: int(line.split()[-2]) for line in listing}
    assert sizes == {"small.txt": small.stat().st_size, "big.bin": len(big_data)}
    buckets = ok(aws(relay, env, "s3", "ls")).stdout
    assert name in buckets.split()

    down_small, down_big = tmp_path / "down-small.txt", tmp_path / "down-big.bin"
    ok(aws(relay, env, "s3", "cp", f"s3://{name}/dir/small.txt", str(down_small)))
    ok(aws(relay, env, "s3", "cp", f"s3://{name}/dir/big.bin", str(down_big)))
    assert down_small.read_bytes() == small.read_bytes()
    assert sha(down_big.read_bytes()) == sha(big_data)

    result = ok(aws(relay, env, "s3", "rm", f"s3://{name}/dir/small.txt"))
    assert f"delete: s3://{name}/dir/small.txt" in result.stdout
    assert object_keys(name) == ["dir/big.bin"]
    ok(aws(relay, env, "s3", "rm", "--recursive", f"s3://{name}/"))
    assert object_keys(name) == []
    ok(aws(relay, env, "s3", "rb", f"s3://{name}"))
    assert name not in [b["Name"] for b in upstream.list_buckets()["Buckets"]]


def test_aws_sync_awkward_names(relay: harness.Relay, upstream: Any, bucket: str,
                                tmp_path: Path, object_keys: Callable[[str], list[str]]) -> None:
    env = aws_env(tmp_path)
    src = tmp_path / "src"
    write_tree(src, AWKWARD_TREE)
    result = ok(aws(relay, env, "s3", "sync", str(src), f"s3://{bucket}/tree"))
    assert result.stdout.count("upload: ") == len(AWKWARD_TREE)
    assert sorted(object_keys(bucket)) == sorted(f"tree/{k}" for k in AWKWARD_TREE)
    for rel, data in AWKWARD_TREE.items():
        assert stored(upstream, bucket, f"tree/{rel}") == data, rel

    # A second sync has nothing to do: listing + key comparison went through intact.
    again = ok(aws(relay, env, "s3", "sync", str(src), f"s3://{bucket}/tree"))
    assert "upload:" not in again.stdout

    # Down again into an empty directory: every name and body round-trips.
    dst = tmp_path / "dst"
    ok(aws(relay, env, "s3", "sync", f"s3://{bucket}/tree", str(dst)))
    got = {p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert got == AWKWARD_TREE

    # sync --delete removes what vanished locally, by its awkward name.
    (src / "with space.txt").unlink()
    (src / "sub dir" / "nested+file name.txt").unlink()
    result = ok(aws(relay, env, "s3", "sync", "--delete", str(src), f"s3://{bucket}/tree"))
    assert result.stdout.count("delete: ") == 2
    gone = ("with space.txt", "sub dir/nested+file name.txt")
    assert sorted(object_keys(bucket)) == sorted(f"tree/{k}" for k in AWKWARD_TREE if k not in gone)


def test_aws_s3api_put_head_get_range(relay: harness.Relay, upstream: Any, bucket: str,
                                      tmp_path: Path) -> None:
    env = aws_env(tmp_path)
    body = tmp_path / "body.bin"
    data = bytes(range(256)) * 40  # 10240 bytes
    body.write_bytes(data)
    key = "api dir/key+with ünïcode.bin"

    result = ok(aws(
        relay, env, "--debug", "s3api", "put-object", "--bucket", bucket, "--key", key,
        "--body", str(body), "--content-type", "application/x-test",
        "--metadata", "colour=blue,shape=round",
    ))
    put = json.loads(result.stdout)
    # Over plain http botocore signs the payload's SHA-256 and sends its CRC32 as a header.
    (sent,) = [r for r in sent_requests(result.stderr) if r.method == "PUT"]
    assert sent.headers["x-amz-content-sha256"] == sha(data)
    assert sent.headers["x-amz-checksum-crc32"] == crc32_b64(data)
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert stored(upstream, bucket, key) == data
    up_head = upstream.head_object(Bucket=bucket, Key=key)
    assert up_head["ContentType"] == "application/x-test"
    # moto reports metadata names title-cased even for direct uploads; compare ignoring case.
    assert {k.lower(): v for k, v in up_head["Metadata"].items()} == {"colour": "blue",
                                                                      "shape": "round"}

    head = json.loads(ok(aws(relay, env, "s3api", "head-object", "--bucket", bucket,
                             "--key", key)).stdout)
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "application/x-test"
    assert head["Metadata"] == {"colour": "blue", "shape": "round"}
    assert head["ETag"] == put["ETag"]

    out = tmp_path / "range.out"
    got = json.loads(ok(aws(relay, env, "s3api", "get-object", "--bucket", bucket, "--key", key,
                            "--range", "bytes=1000-4999", str(out))).stdout)
    assert got["ContentLength"] == 4000
    assert got["ContentRange"] == f"bytes 1000-4999/{len(data)}"
    assert out.read_bytes() == data[1000:5000]

    missing = aws(relay, env, "s3api", "head-object", "--bucket", bucket, "--key", "nope")
    assert missing.returncode != 0
    assert "404" in missing.stderr


S3V4_CONFIG = "[default]\nregion = us-east-1\ns3 =\n  signature_version = s3v4\n"


def test_aws_presign_fetch_with_urllib(relay: harness.Relay, upstream: Any, bucket: str,
                                       tmp_path: Path) -> None:
    key = "pre signed/ключ+1.txt"
    data = b"presigned through the relay\n"
    upstream.put_object(Bucket=bucket, Key=key, Body=data)
    env = aws_env(tmp_path, config=S3V4_CONFIG)
    url = ok(aws(relay, env, "s3", "presign", f"s3://{bucket}/{key}",
                 "--expires-in", "300")).stdout.strip()
    assert url.startswith(f"{relay.url}/{bucket}/"), url
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.read() == data

    # The CLI's own default (no s3v4 in the config) is a SigV2 URL, which the relay refuses.
    v2 = ok(aws(relay, aws_env(tmp_path / "v2"), "s3", "presign",
                f"s3://{bucket}/{key}")).stdout.strip()
    assert "AWSAccessKeyId=" in v2 and "X-Amz-Signature" not in v2, v2
    with pytest.raises(urllib.error.HTTPError) as v2_error:
        urllib.request.urlopen(v2, timeout=10)
    assert v2_error.value.code == 400
    assert b"<Code>InvalidRequest</Code>" in v2_error.value.read()

    # The signature covers the key: asking for another key with it is refused.
    tampered = url.replace("1.txt", "2.txt", 1)
    assert tampered != url
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(tampered, timeout=10)
    assert excinfo.value.code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in excinfo.value.read()


def test_aws_over_tls_trailer_uploads(tls_relay: harness.Relay, tls_files: tuple[Path, Path],
                                      upstream: Any, bucket: str, tmp_path: Path) -> None:
    """Over https, botocore streams aws-chunked bodies with a CRC32 trailer, unsigned."""
    env = aws_env(tmp_path)
    cert = tls_files[0]
    small = tmp_path / "small.bin"
    small_data = os.urandom(100_000)
    small.write_bytes(small_data)
    big = tmp_path / "big.bin"
    big_data = os.urandom(20 * MiB + 7)
    big.write_bytes(big_data)

    result = ok(aws(tls_relay, env, "--debug", "s3", "cp", str(small), f"s3://{bucket}/small.bin",
                    ca_bundle=cert))
    puts = [r for r in sent_requests(result.stderr) if r.method == "PUT"]
    assert len(puts) == 1, puts
    assert puts[0].headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert puts[0].headers["content-encoding"] == "aws-chunked"
    assert puts[0].headers["x-amz-trailer"] == "x-amz-checksum-crc32"

    result = ok(aws(tls_relay, env, "--debug", "s3", "cp", str(big), f"s3://{bucket}/big.bin",
                    ca_bundle=cert))
    parts = [r for r in sent_requests(result.stderr) if "partNumber=" in r.url]
    assert len(parts) == 3, parts  # 8 + 8 + 4 MiB
    for part in parts:
        assert part.headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER", part
        assert part.headers["transfer-encoding"] == "chunked", part

    # Byte-exact upstream: decoded, no "hex;..." chunk framing, no trailer lines.
    got_small = stored(upstream, bucket, "small.bin")
    assert len(got_small) == len(small_data)
    assert got_small == small_data
    head = upstream.head_object(Bucket=bucket, Key="small.bin", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(small_data)
    assert head.get("ChecksumCRC32") == crc32_b64(small_data)
    got_big = stored(upstream, bucket, "big.bin")
    assert len(got_big) == len(big_data) and sha(got_big) == sha(big_data)
    assert upstream.head_object(Bucket=bucket, Key="big.bin")["ETag"].strip('"').endswith("-3")

    down = tmp_path / "down.bin"
    ok(aws(tls_relay, env, "s3", "cp", f"s3://{bucket}/big.bin", str(down), ca_bundle=cert))
    assert sha(down.read_bytes()) == sha(big_data)

    # Without the CA bundle the self-signed certificate is refused by the CLI.
    refused = aws(tls_relay, env, "s3", "ls", f"s3://{bucket}")
    assert refused.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr


# Sizes around botocore's 64 KiB aws-chunked chunks and s3transfer's 8 MiB multipart threshold.
EDGE_SIZES = [0, 1, 65535, 65536, 65537, 8 * MiB, 8 * MiB + 1]


def test_aws_cp_edge_sizes(endpoint: Endpoint, upstream: Any, bucket: str, tmp_path: Path,
                           object_keys: Callable[[str], list[str]]) -> None:
    env = aws_env(tmp_path)
    src = tmp_path / "src"
    expected = {}
    for size in EDGE_SIZES:
        data = os.urandom(size)
        expected[f"edge/{size:08d}.bin"] = data
        (src / "edge").mkdir(parents=True, exist_ok=True)
        (src / f"edge/{size:08d}.bin").write_bytes(data)
    result = ok(endpoint.aws(env, "s3", "cp", "--recursive", str(src), f"s3://{bucket}/"))
    assert result.stdout.count("upload: ") == len(EDGE_SIZES)
    assert sorted(object_keys(bucket)) == sorted(expected)
    for key, data in expected.items():
        got = stored(upstream, bucket, key)
        assert len(got) == len(data) and got == data, key


@pytest.mark.parametrize("algorithm", ["CRC32C", "SHA1", "SHA256", "CRC64NVME"])
def test_aws_put_object_checksum_algorithms(endpoint: Endpoint, upstream: Any, bucket: str,
                                            tmp_path: Path, algorithm: str) -> None:
    env = aws_env(tmp_path)
    data = os.urandom(200_001)
    body = tmp_path / "body.bin"
    body.write_bytes(data)
    put = json.loads(ok(endpoint.aws(env, "s3api", "put-object", "--bucket", bucket,
                                     "--key", algorithm, "--body", str(body),
                                     "--checksum-algorithm", algorithm)).stdout)
    assert f"Checksum{algorithm}" in put, put
    assert stored(upstream, bucket, algorithm) == data
    if algorithm in ("SHA1", "SHA256"):
        digest = hashlib.new(algorithm.lower(), data).digest()
        assert put[f"Checksum{algorithm}"] == base64.b64encode(digest).decode()


def test_aws_stdin_upload_of_unknown_length(endpoint: Endpoint, upstream: Any, bucket: str,
                                            tmp_path: Path) -> None:
    """``aws s3 cp - s3://..`` streams stdin as a multipart upload of unknown size."""
    env = aws_env(tmp_path)
    data = os.urandom(12 * MiB + 5)
    command = [AWS, "--endpoint-url", endpoint.relay.url]
    if endpoint.ca_bundle:
        command += ["--ca-bundle", str(endpoint.ca_bundle)]
    result = subprocess.run(command + ["s3", "cp", "-", f"s3://{bucket}/from stdin ü"],
                            input=data, env=env, capture_output=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    got = stored(upstream, bucket, "from stdin ü")
    assert len(got) == len(data) and sha(got) == sha(data)
    etag = upstream.head_object(Bucket=bucket, Key="from stdin ü")["ETag"]
    assert etag.strip('"').endswith("-2"), etag  # 8 MiB + the rest


def test_aws_content_md5_checked(relay: harness.Relay, upstream: Any, bucket: str,
                                 tmp_path: Path, object_keys: Callable[[str], list[str]]) -> None:
    env = aws_env(tmp_path)
    data = os.urandom(70_000)
    body = tmp_path / "body.bin"
    body.write_bytes(data)
    good = base64.b64encode(hashlib.md5(data).digest()).decode()
    ok(aws(relay, env, "s3api", "put-object", "--bucket", bucket, "--key", "good",
           "--body", str(body), "--content-md5", good))
    assert stored(upstream, bucket, "good") == data
    wrong = base64.b64encode(hashlib.md5(b"").digest()).decode()
    result = aws(relay, env, "s3api", "put-object", "--bucket", bucket, "--key", "bad",
                 "--body", str(body), "--content-md5", wrong)
    assert result.returncode != 0
    assert "BadDigest" in result.stderr, result.stderr
    assert object_keys(bucket) == ["good"]


def test_aws_wrong_secret(endpoint: Endpoint, bucket: str, tmp_path: Path,
                          object_keys: Callable[[str], list[str]]) -> None:
    env = aws_env(tmp_path, key=(CLIENT_KEY[0], "not-the-secret"))
    small = tmp_path / "x.txt"
    small.write_bytes(b"should never arrive")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * MiB))
    result = endpoint.aws(env, "s3", "cp", str(small), f"s3://{bucket}/x.txt")
    assert result.returncode != 0
    assert "SignatureDoesNotMatch" in result.stderr, result.stderr
    result = endpoint.aws(env, "s3api", "put-object", "--bucket", bucket, "--key", "y",
                          "--body", str(small))
    assert result.returncode != 0
    assert "SignatureDoesNotMatch" in result.stderr, result.stderr
    result = endpoint.aws(env, "s3", "cp", str(big), f"s3://{bucket}/big.bin")
    assert result.returncode != 0
    assert "SignatureDoesNotMatch" in result.stderr, result.stderr
    result = endpoint.aws(env, "s3", "ls", f"s3://{bucket}")
    assert result.returncode != 0
    assert "SignatureDoesNotMatch" in result.stderr, result.stderr
    assert object_keys(bucket) == []
    log = endpoint.relay.output()
    assert f"refused PUT /{bucket}/x.txt: SignatureDoesNotMatch" in log
    assert f"refused PUT /{bucket}/y: SignatureDoesNotMatch" in log
    assert f"refused POST /{bucket}/big.bin: SignatureDoesNotMatch" in log  # ?uploads
    assert f"refused GET /{bucket}: SignatureDoesNotMatch" in log


# ---------------------------------------------------------------------- s3cmd


def test_s3cmd_mb_put_ls_get_del(relay: harness.Relay, upstream: Any, tmp_path: Path,
                                 object_keys: Callable[[str], list[str]]) -> None:
    config = s3cmd_config(tmp_path, relay)
    name = unique("s3cmd-mb")
    result = ok(s3cmd(config, tmp_path, "mb", f"s3://{name}"))
    assert f"Bucket 's3://{name}/' created" in result.stdout
    assert name in [b["Name"] for b in upstream.list_buckets()["Buckets"]]

    small = tmp_path / "small.txt"
    small.write_bytes(b"hello from s3cmd\n")
    big = tmp_path / "big.bin"
    big_data = os.urandom(20 * MiB + 999)
    big.write_bytes(big_data)
    spaced = tmp_path / "spaced.txt"
    spaced.write_bytes(b"a key with spaces\n")

    ok(s3cmd(config, tmp_path, "put", str(small), f"s3://{name}/small.txt"))
    result = ok(s3cmd(config, tmp_path, "put", "--multipart-chunk-size-mb=5", str(big),
                      f"s3://{name}/big.bin"))
    assert f"{len(big_data)} bytes" in result.stdout, result.stdout
    ok(s3cmd(config, tmp_path, "put", str(spaced), f"s3://{name}/dir with space/a key + more.txt"))

    assert stored(upstream, name, "small.txt") == small.read_bytes()
    got_big = stored(upstream, name, "big.bin")
    assert len(got_big) == len(big_data) and sha(got_big) == sha(big_data)
    assert upstream.head_object(Bucket=name, Key="big.bin")["ETag"].strip('"').endswith("-5")
    assert stored(upstream, name, "dir with space/a key + more.txt") == spaced.read_bytes()
    assert sorted(object_keys(name)) == ["big.bin", "dir with space/a key + more.txt", "small.txt"]

    listing = ok(s3cmd(config, tmp_path, "ls", "--recursive", f"s3://{name}")).stdout
    assert f"s3://{name}/small.txt" in listing
    assert f"s3://{name}/big.bin" in listing
    assert f"s3://{name}/dir with space/a key + more.txt" in listing
    assert str(len(big_data)) in listing
    assert name in ok(s3cmd(config, tmp_path, "ls")).stdout

    down_big = tmp_path / "down-big.bin"
    down_spaced = tmp_path / "down-spaced.txt"
    ok(s3cmd(config, tmp_path, "get", f"s3://{name}/big.bin", str(down_big)))
    ok(s3cmd(config, tmp_path, "get", f"s3://{name}/dir with space/a key + more.txt",
             str(down_spaced)))
    assert sha(down_big.read_bytes()) == sha(big_data)
    assert down_spaced.read_bytes() == spaced.read_bytes()

    ok(s3cmd(config, tmp_path, "del", f"s3://{name}/dir with space/a key + more.txt"))
    assert sorted(object_keys(name)) == ["big.bin", "small.txt"]
    ok(s3cmd(config, tmp_path, "del", f"s3://{name}/small.txt", f"s3://{name}/big.bin"))
    assert object_keys(name) == []
    ok(s3cmd(config, tmp_path, "rb", f"s3://{name}"))
    assert name not in [b["Name"] for b in upstream.list_buckets()["Buckets"]]


def test_s3cmd_over_tls(tls_relay: harness.Relay, tls_files: tuple[Path, Path], upstream: Any,
                        bucket: str, tmp_path: Path) -> None:
    config = s3cmd_config(tmp_path, tls_relay, ca_bundle=tls_files[0])
    data = os.urandom(6 * MiB + 3)
    path = tmp_path / "tls.bin"
    path.write_bytes(data)
    ok(s3cmd(config, tmp_path, "put", "--multipart-chunk-size-mb=5", str(path),
             f"s3://{bucket}/tls key.bin"))
    assert sha(stored(upstream, bucket, "tls key.bin")) == sha(data)
    down = tmp_path / "down.bin"
    ok(s3cmd(config, tmp_path, "get", f"s3://{bucket}/tls key.bin", str(down)))
    assert down.read_bytes() == data


def test_s3cmd_wrong_secret(relay: harness.Relay, upstream: Any, bucket: str, tmp_path: Path,
                            object_keys: Callable[[str], list[str]]) -> None:
    config = s3cmd_config(tmp_path, relay, key=(CLIENT_KEY[0], "not-the-secret"))
    small = tmp_path / "x.txt"
    small.write_bytes(b"should never arrive")
    result = s3cmd(config, tmp_path, "put", str(small), f"s3://{bucket}/x.txt")
    assert result.returncode != 0
    assert "S3 error: 403 (SignatureDoesNotMatch)" in result.stderr, result
    assert object_keys(bucket) == []
    assert f"refused PUT /{bucket}/x.txt: SignatureDoesNotMatch" in relay.output()
    # Multipart initiation is refused too, before any part is sent.
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6 * MiB))
    result = s3cmd(config, tmp_path, "put", "--multipart-chunk-size-mb=5", str(big),
                   f"s3://{bucket}/big.bin")
    assert result.returncode != 0
    assert "403" in result.stderr and "SignatureDoesNotMatch" in result.stderr, result
    assert object_keys(bucket) == []
    assert upstream.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_s3cmd_signature_form(relay: harness.Relay, upstream: Any, bucket: str,
                              tmp_path: Path) -> None:
    """s3cmd writes ``Credential=..,SignedHeaders=..`` without spaces and a hex payload hash."""
    config = s3cmd_config(tmp_path, relay)
    data = b"s3cmd signs its payload\n" * 100
    path = tmp_path / "signed.txt"
    path.write_bytes(data)
    key = "signed dir/ключ + 1.txt"
    result = ok(s3cmd(config, tmp_path, "--debug", "put", str(path), f"s3://{bucket}/{key}"))
    log = result.stdout + result.stderr
    auth = re.findall(r"'Authorization': '(AWS4-HMAC-SHA256 [^']+)'", log)
    assert auth, log[-3000:]
    assert re.fullmatch(r"AWS4-HMAC-SHA256 Credential=[^ ,]+,SignedHeaders=[^ ,]+,"
                        r"Signature=[0-9a-f]{64}", auth[-1]), auth[-1]
    assert f"'x-amz-content-sha256': '{sha(data)}'" in log
    assert stored(upstream, bucket, key) == data


def test_s3cmd_sync_and_remote_copy_awkward_names(relay: harness.Relay, upstream: Any,
                                                  bucket: str, tmp_path: Path,
                                                  object_keys: Callable[[str], list[str]]) -> None:
    config = s3cmd_config(tmp_path, relay)
    src = tmp_path / "src"
    write_tree(src, AWKWARD_TREE)
    result = ok(s3cmd(config, tmp_path, "sync", f"{src}/", f"s3://{bucket}/tree/"))
    assert result.stdout.count("upload: ") == len(AWKWARD_TREE), result.stdout
    assert sorted(object_keys(bucket)) == sorted(f"tree/{k}" for k in AWKWARD_TREE)
    for rel, data in AWKWARD_TREE.items():
        assert stored(upstream, bucket, f"tree/{rel}") == data, rel
    # s3cmd compares sizes and MD5s from the listing: a second sync uploads nothing.
    again = ok(s3cmd(config, tmp_path, "sync", f"{src}/", f"s3://{bucket}/tree/"))
    assert "upload:" not in again.stdout, again.stdout

    # Server-side copy and move: the copy source header carries the awkward name.
    ok(s3cmd(config, tmp_path, "cp", f"s3://{bucket}/tree/sub dir/nested+file name.txt",
             f"s3://{bucket}/copies/copy + ключ.txt"))
    ok(s3cmd(config, tmp_path, "mv", f"s3://{bucket}/tree/unicode-ключ-鍵.dat",
             f"s3://{bucket}/copies/moved é.dat"))
    assert stored(upstream, bucket, "copies/copy + ключ.txt") == AWKWARD_TREE[
        "sub dir/nested+file name.txt"]
    moved = stored(upstream, bucket, "copies/moved é.dat")
    assert moved == AWKWARD_TREE["unicode-ключ-鍵.dat"]
    assert "tree/unicode-ключ-鍵.dat" not in object_keys(bucket)

    # Recursive delete is a multi-object POST ?delete with a Content-MD5 body.
    ok(s3cmd(config, tmp_path, "del", "--recursive", "--force", f"s3://{bucket}/tree/"))
    assert sorted(object_keys(bucket)) == ["copies/copy + ключ.txt", "copies/moved é.dat"]
