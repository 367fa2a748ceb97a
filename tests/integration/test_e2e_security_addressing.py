"""Two ways a path could name one bucket to the relay's policy and another upstream,
through a real relay process in front of the signature-checking S3 server (moto),
with a TCP tap on the upstream link showing what reached it.

- Dotted bucket names with ``[upstream] addressing = virtual``: moto, like S3,
  takes the first label of a dotted Host as the bucket, so
  ``shared.team-a-data.localhost`` would be bucket ``shared``.  Such names go
  path style; plain ones still go in the Host.  (The upstream URL names
  ``localhost``: moto reads an IP-literal Host as path style whatever it
  holds, and ``localhost`` resolves to 127.0.0.1 only here.)
- ``.``/``..`` segments in the path or copy source: refused before anything
  reaches the upstream, unless ``[server] allow_dot_segments = yes``, when such
  a key is an ordinary S3 key.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from tests import harness
from tests.integration.conftest import HOSTNAME, boto_client, relay_config
from tests.rawclient import Reply, send, sign
from tests.tcptap import TcpTap

TEAM_A = ("AKIDSECADDRTEAMA0001", "sec-addr-team-a-secret/abcdefghijklmno")
EXACT = ("AKIDSECADDREXACT0001", "sec-addr-exact-secret/abcdefghijklmnop")
SHARER = ("AKIDSECADDRSHARE0001", "sec-addr-sharer-secret/abcdefghijklmno")

SHARED, DOTTED, PLAIN, EXACT_BUCKET = (
    "shared", "shared.team-a-data", "team-a-data", "shared.example.com")
SECRET = b"shared's secret: only for clients allowed bucket shared"
TRAVERSAL = "projects/beta/secret.txt"


def client_section(name: str, key: tuple[str, str], extra: str) -> str:
    return (f"\n[client:{name}]\naccess_key_id = {key[0]}\nsecret_access_key = {key[1]}\n"
            f"credentials = main\n{extra}\n")


@pytest.fixture(scope="module")
def buckets(upstream: Any) -> None:
    for name in (SHARED, DOTTED, PLAIN, EXACT_BUCKET):
        try:
            upstream.create_bucket(Bucket=name)
        except ClientError as e:  # the session's moto outlives a module
            assert e.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    upstream.put_object(Bucket=SHARED, Key="secret.txt", Body=SECRET)
    upstream.put_object(Bucket=DOTTED, Key="own.txt", Body=b"team a's own")
    upstream.put_object(Bucket=EXACT_BUCKET, Key="own.txt", Body=b"exact's own")
    upstream.put_object(Bucket=PLAIN, Key="plain.txt", Body=b"plain")
    upstream.put_object(Bucket=PLAIN, Key=TRAVERSAL, Body=b"team a's project secret")


@pytest.fixture(scope="module")
def wire(s3: harness.S3Server) -> Iterator[TcpTap]:
    tap = TcpTap(s3.port)
    yield tap
    tap.close()


def start(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], upstream_url: str,
          addressing: str, server_extra: str = "") -> harness.Relay:
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key, upstream_url,
                        addressing=addressing)
    text = text.replace("[server]\n", "[server]\n" + server_extra, 1)
    text += client_section("teama", TEAM_A, "buckets = *-data")
    text += client_section("exact", EXACT, f"buckets = {EXACT_BUCKET}")
    text += client_section("sharer", SHARER, f"buckets = {SHARED}")
    return harness.start_relay(workdir, text, port)


@pytest.fixture(scope="module")
def relay(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], wire: TcpTap,
          buckets: None) -> Iterator[harness.Relay]:
    """``addressing = virtual``, dot segments refused (the default)."""
    relay = start(workdir, s3, self_key, f"http://localhost:{wire.port}", "virtual")
    yield relay
    harness.stop(relay.process)


@pytest.fixture(scope="module")
def lenient(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], wire: TcpTap,
            buckets: None) -> Iterator[harness.Relay]:
    """``allow_dot_segments = yes`` (path addressing)."""
    relay = start(workdir, s3, self_key, f"http://127.0.0.1:{wire.port}", "path",
                  "allow_dot_segments = yes\n")
    yield relay
    harness.stop(relay.process)


_HEAD = re.compile(rb"([A-Z]+) (\S+) HTTP/1\.1\r\n(.*?)\r\n\r\n", re.DOTALL)


def heads(tap: TcpTap, since: int) -> list[tuple[str, str, str]]:
    """(method, path, Host) of each request head the upstream got after byte ``since``."""
    out = []
    for match in _HEAD.finditer(bytes(tap.captured[since:])):
        fields = dict(line.partition(b":")[::2] for line in match.group(3).split(b"\r\n"))
        host = {k.strip().lower(): v.strip() for k, v in fields.items()}[b"host"]
        out.append((match.group(1).decode(), match.group(2).decode(), host.decode()))
    return out


def settled(tap: TcpTap) -> int:
    """The upstream byte count once earlier traffic has stopped."""
    before = -1
    while before != tap.sent_up:
        before = tap.sent_up
        time.sleep(0.2)
    return before


def signed(relay: harness.Relay, method: str, path: str, key: tuple[str, str],
           headers: dict[str, str] | None = None, body: bytes = b"",
           host: str | None = None) -> Reply:
    """``path`` (sent as it is, dot segments and all), signed for ``host``."""
    all_headers = {"content-length": str(len(body)), **(headers or {})}
    authority = host or f"127.0.0.1:{relay.port}"
    signed_headers = sign(method, f"http://{authority}{path}", all_headers,
                          hashlib.sha256(body).hexdigest(), key)
    return send(f"{relay.url}{path}", method, signed_headers, body)


def access(relay: harness.Relay, **match: Any) -> list[dict[str, Any]]:
    return [record["access"] for record in relay.records()
            if "access" in record and all(record["access"].get(k) == v for k, v in match.items())]


# -- dotted bucket names with addressing = virtual ------------------------------------


def test_dotted_bucket_goes_path_style_plain_one_virtual(relay: harness.Relay, wire: TcpTap
                                                         ) -> None:
    client = boto_client(relay.url, TEAM_A)
    since = len(wire.captured)
    assert client.get_object(Bucket=DOTTED, Key="own.txt")["Body"].read() == b"team a's own"
    assert client.get_object(Bucket=PLAIN, Key="plain.txt")["Body"].read() == b"plain"
    assert heads(wire, since) == [
        ("GET", f"/{DOTTED}/own.txt", f"localhost:{wire.port}"),
        ("GET", "/plain.txt", f"{PLAIN}.localhost:{wire.port}"),
    ]


def test_star_data_client_cannot_read_shared_through_a_dotted_name(
    relay: harness.Relay, upstream: Any, wire: TcpTap
) -> None:
    """``buckets = *-data`` allows ``shared.team-a-data``; upstream that must stay
    that bucket, never become ``shared``."""
    client = boto_client(relay.url, TEAM_A)
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=SHARED, Key="secret.txt")
    assert info.value.response["Error"]["Code"] == "AccessDenied"  # the policy itself
    since = len(wire.captured)
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=DOTTED, Key="secret.txt")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"  # not shared's secret.txt
    listing = client.list_objects_v2(Bucket=DOTTED)
    assert [o["Key"] for o in listing.get("Contents", [])] == ["own.txt"]
    client.put_object(Bucket=DOTTED, Key="written.txt", Body=b"team a wrote")
    assert heads(wire, since) == [
        ("GET", f"/{DOTTED}/secret.txt", f"localhost:{wire.port}"),
        ("GET", f"/{DOTTED}?encoding-type=url&list-type=2", f"localhost:{wire.port}"),
        ("PUT", f"/{DOTTED}/written.txt", f"localhost:{wire.port}"),
    ]
    assert upstream.get_object(Bucket=DOTTED, Key="written.txt")["Body"].read() == b"team a wrote"
    assert [o["Key"] for o in upstream.list_objects_v2(Bucket=SHARED)["Contents"]] == [
        "secret.txt"]
    upstream.delete_object(Bucket=DOTTED, Key="written.txt")


def test_virtual_host_style_client_and_dotted_bucket(relay: harness.Relay, wire: TcpTap
                                                     ) -> None:
    """The client's own addressing does not matter: ``shared.team-a-data.relay.test``."""
    since = len(wire.captured)
    reply = signed(relay, "GET", "/secret.txt", TEAM_A,
                   host=f"{DOTTED}.{HOSTNAME}:{relay.port}")
    assert (reply.status, reply.code()) == (404, "NoSuchKey")
    assert SECRET not in reply.body
    assert heads(wire, since) == [("GET", f"/{DOTTED}/secret.txt", f"localhost:{wire.port}")]


def test_exact_grant_for_a_dotted_name_cannot_read_its_first_label(
    relay: harness.Relay, wire: TcpTap
) -> None:
    client = boto_client(relay.url, EXACT)
    since = len(wire.captured)
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=EXACT_BUCKET, Key="secret.txt")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"
    assert client.get_object(Bucket=EXACT_BUCKET, Key="own.txt")["Body"].read() == b"exact's own"
    assert [host for _, _, host in heads(wire, since)] == [f"localhost:{wire.port}"] * 2


# -- dot segments ------------------------------------------------------------------------

#: A client allowed only ``shared`` asking for team-a-data's object, spelled every way.
TRAVERSALS = [
    f"/{SHARED}/../{PLAIN}/{TRAVERSAL}",
    f"/{SHARED}/%2e%2e/{PLAIN}/{TRAVERSAL}",
    f"/{SHARED}/%2E%2E/{PLAIN}/{TRAVERSAL}",
    f"/{SHARED}/.%2e/{PLAIN}/{TRAVERSAL}",
    f"/{SHARED}/..%2F{PLAIN}%2F{TRAVERSAL.replace('/', '%2F')}",
    f"/{SHARED}/./../{PLAIN}/{TRAVERSAL}",
    f"/{SHARED}/x/..",
]


def refused_before_upstream(relay: harness.Relay, tap: TcpTap, reply: Reply,
                            where: str, before: int) -> None:
    assert (reply.status, reply.code()) == (400, "InvalidRequest"), reply
    assert f"Dot segments ('.' or '..' between slashes, also percent-encoded) are not allowed " \
           f"in {where}.".encode() in reply.body
    time.sleep(0.3)
    assert tap.sent_up == before  # not one byte upstream


@pytest.mark.parametrize("path", TRAVERSALS)
def test_dot_segments_refused_nothing_upstream(relay: harness.Relay, wire: TcpTap,
                                               path: str) -> None:
    before = settled(wire)
    reply = signed(relay, "GET", path, SHARER)
    refused_before_upstream(relay, wire, reply, "the request path", before)
    assert SECRET not in reply.body and b"project secret" not in reply.body
    assert access(relay, client=None, status=400, reason=(
        "dot segment in the request path (allow_dot_segments = no)"))


def test_dot_segments_refused_virtual_host_style(relay: harness.Relay, wire: TcpTap) -> None:
    """Virtual-host style: the whole path is the key, checked the same."""
    before = settled(wire)
    reply = signed(relay, "GET", f"/../{PLAIN}/{TRAVERSAL}", SHARER,
                   host=f"{SHARED}.{HOSTNAME}:{relay.port}")
    refused_before_upstream(relay, wire, reply, "the request path", before)


@pytest.mark.parametrize(("query", "source"), [
    ("", f"{SHARED}/../{PLAIN}/{TRAVERSAL}"),  # CopyObject
    ("", f"/{SHARED}/%2e%2e/{PLAIN}/{TRAVERSAL}"),
    ("?partNumber=1&uploadId=upload-1", f"{SHARED}/.%2E/{PLAIN}/{TRAVERSAL}"),  # UploadPartCopy
    ("?partNumber=1&uploadId=upload-1", f"{SHARED}/./{PLAIN}?versionId=1"),
])
def test_dot_segments_in_copy_source_refused(relay: harness.Relay, wire: TcpTap, upstream: Any,
                                             query: str, source: str) -> None:
    before = settled(wire)
    reply = signed(relay, "PUT", f"/{SHARED}/copied{query}", SHARER,
                   {"x-amz-copy-source": source})
    refused_before_upstream(relay, wire, reply, "x-amz-copy-source", before)
    keys = [o["Key"] for o in upstream.list_objects_v2(Bucket=SHARED)["Contents"]]
    assert "copied" not in keys


def test_keys_with_dots_but_no_dot_segments_work(relay: harness.Relay, upstream: Any) -> None:
    for key in ("a..b", ".hidden", "x/.y", "..."):
        assert signed(relay, "PUT", f"/{SHARED}/{key}", SHARER, body=b"dots").status == 200
        assert upstream.get_object(Bucket=SHARED, Key=key)["Body"].read() == b"dots"
        upstream.delete_object(Bucket=SHARED, Key=key)


def test_allow_dot_segments_relays_such_keys(lenient: harness.Relay, wire: TcpTap,
                                             upstream: Any) -> None:
    """``allow_dot_segments = yes``: ``a/../b`` is the S3 key ``a/../b``, end to end."""
    since = len(wire.captured)
    path = f"/{SHARED}/a/../b"
    put = signed(lenient, "PUT", path, SHARER, body=b"dotted key")
    assert put.status == 200, put
    got = signed(lenient, "GET", path, SHARER)
    assert (got.status, got.body) == (200, b"dotted key")
    copied = signed(lenient, "PUT", f"/{SHARED}/c/./d", SHARER,
                    {"x-amz-copy-source": f"{SHARED}/a/%2e%2e/b"})
    assert copied.status == 200, copied
    assert [(m, p) for m, p, _ in heads(wire, since)] == [
        ("PUT", path), ("GET", path), ("PUT", f"/{SHARED}/c/./d")]
    assert upstream.get_object(Bucket=SHARED, Key="a/../b")["Body"].read() == b"dotted key"
    assert upstream.get_object(Bucket=SHARED, Key="c/./d")["Body"].read() == b"dotted key"
    assert "b" not in [o["Key"] for o in upstream.list_objects_v2(Bucket=SHARED)["Contents"]]
    for key in ("a/../b", "c/./d"):
        upstream.delete_object(Bucket=SHARED, Key=key)


def test_allow_dot_segments_boto3_round_trip(lenient: harness.Relay, upstream: Any) -> None:
    """botocore sends such a key's segments as they are; with the check off it round-trips."""
    client = boto_client(lenient.url, SHARER)
    key = "dir//double/./dot/../x"
    client.put_object(Bucket=SHARED, Key=key, Body=b"awkward")
    assert client.get_object(Bucket=SHARED, Key=key)["Body"].read() == b"awkward"
    assert key in [o["Key"] for o in client.list_objects_v2(Bucket=SHARED)["Contents"]]
    assert upstream.get_object(Bucket=SHARED, Key=key)["Body"].read() == b"awkward"
    upstream.delete_object(Bucket=SHARED, Key=key)

