"""Several upstreams behind one relay process: two signature-checking S3 servers,
each with its own keys; buckets routed by glob, ListBuckets merged, copies across
upstreams refused, one upstream stopped while the other serves, and a reload that
moves a glob."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from botocore.exceptions import ClientError

from tests import harness
from tests.integration.conftest import CLIENT_KEY, OTHER_KEY, boto_client, relay_config
from tests.integration.test_e2e_cli import aws, aws_env, ok


def start_west(workdir: Path, name: str) -> harness.S3Server:
    folder = workdir / name
    folder.mkdir(exist_ok=True)
    return harness.start_s3(folder)


def upstreams_config(s3: harness.S3Server, west: harness.S3Server, listen: str,
                     self_key: tuple[str, str], globs: str = "west-*, archive-west",
                     metrics_port: int | None = None) -> str:
    text = relay_config(s3, listen, self_key)
    # alice names the west set herself; bob relies on [upstream:west]'s.
    text = text.replace(f"access_key_id = {CLIENT_KEY[0]}\nsecret_access_key = {CLIENT_KEY[1]}\n"
                        "credentials = main\n",
                        f"access_key_id = {CLIENT_KEY[0]}\nsecret_access_key = {CLIENT_KEY[1]}\n"
                        "credentials = main, west:west-keys\n")
    text += f"""
[credentials:west-keys]
access_key_id = {west.access_key}
secret_access_key = {west.secret_key}

[upstream:west]
url = {west.url}
region = us-west-2
buckets = {globs}
credentials = west-keys
header_charset = latin-1
"""
    if metrics_port is not None:
        text += f"\n[metrics]\nlisten = tcp:{metrics_port}:interface=127.0.0.1\n"
    return text


@pytest.fixture(scope="module")
def west(workdir: Path) -> Iterator[harness.S3Server]:
    server = start_west(workdir, "west")
    yield server
    harness.stop(server.process)


@pytest.fixture(scope="module")
def relay(workdir: Path, s3: harness.S3Server, west: harness.S3Server,
          self_key: tuple[str, str]) -> Iterator[harness.Relay]:
    port = harness.free_port()
    text = upstreams_config(s3, west, f"tcp:{port}:interface=127.0.0.1", self_key)
    relay = harness.start_relay(workdir, text, port)
    yield relay
    harness.stop(relay.process)


def names(listing: dict[str, Any]) -> list[str]:
    return [b["Name"] for b in listing["Buckets"]]


def test_objects_land_where_the_bucket_routes(relay: harness.Relay, s3: harness.S3Server,
                                              west: harness.S3Server) -> None:
    client = boto_client(relay.url)
    client.create_bucket(Bucket="west-data")  # through the relay, to the west server
    client.create_bucket(Bucket="home-data")
    client.put_object(Bucket="west-data", Key="k", Body=b"to the west")
    client.put_object(Bucket="home-data", Key="k", Body=b"stays home")
    west_s3, home_s3 = west.client(), s3.client()
    assert west_s3.get_object(Bucket="west-data", Key="k")["Body"].read() == b"to the west"
    assert home_s3.get_object(Bucket="home-data", Key="k")["Body"].read() == b"stays home"
    assert "west-data" not in names(home_s3.list_buckets())
    assert west_s3.get_bucket_location(Bucket="west-data")["LocationConstraint"] == "us-west-2"
    assert client.get_object(Bucket="west-data", Key="k")["Body"].read() == b"to the west"
    # bob has no west set of his own: [upstream:west]'s signs for him.
    bob = boto_client(relay.url, OTHER_KEY)
    assert bob.get_object(Bucket="west-data", Key="k")["Body"].read() == b"to the west"


def test_list_buckets_is_the_union(relay: harness.Relay, s3: harness.S3Server,
                                   west: harness.S3Server) -> None:
    west.client().create_bucket(Bucket="archive-west")
    west.client().create_bucket(Bucket="stray-on-west")  # not routed there: not listed
    s3.client().create_bucket(Bucket="west-stray-at-home")  # routed west: not listed
    s3.client().create_bucket(Bucket="aaa-home")
    listed = names(boto_client(relay.url).list_buckets())
    assert {"archive-west", "aaa-home"} <= set(listed)
    assert "stray-on-west" not in listed and "west-stray-at-home" not in listed
    assert listed == sorted(listed)


def test_aws_cli_lists_the_union(relay: harness.Relay, s3: harness.S3Server,
                                 west: harness.S3Server, tmp_path: Path) -> None:
    west.client().create_bucket(Bucket="west-cli")
    s3.client().create_bucket(Bucket="home-cli")
    cli = ok(aws(relay, aws_env(tmp_path), "s3", "ls")).stdout
    assert "west-cli" in cli and "home-cli" in cli


def test_copy_across_upstreams_is_refused(relay: harness.Relay, s3: harness.S3Server,
                                          west: harness.S3Server) -> None:
    client = boto_client(relay.url)
    client.create_bucket(Bucket="west-copies")
    s3.client().create_bucket(Bucket="home-copies")
    client.put_object(Bucket="home-copies", Key="src", Body=b"x")
    with pytest.raises(ClientError) as info:
        client.copy_object(Bucket="west-copies", Key="dst",
                           CopySource={"Bucket": "home-copies", "Key": "src"})
    assert info.value.response["Error"]["Code"] == "InvalidRequest"
    assert "Contents" not in west.client().list_objects_v2(Bucket="west-copies")
    client.copy_object(Bucket="home-copies", Key="dst",
                       CopySource={"Bucket": "home-copies", "Key": "src"})


def test_a_stopped_upstream_stalls_only_its_buckets(workdir: Path, s3: harness.S3Server,
                                                   self_key: tuple[str, str]) -> None:
    west = start_west(workdir, "west-stopped")
    port, metrics = harness.free_port(), harness.free_port()
    relay = harness.start_relay(workdir, upstreams_config(
        s3, west, f"tcp:{port}:interface=127.0.0.1", self_key, metrics_port=metrics), port)
    try:
        client = boto_client(relay.url)
        client.create_bucket(Bucket="west-gone")
        s3.client().create_bucket(Bucket="home-alive")
        harness.stop(west.process)
        with pytest.raises(ClientError) as info:
            client.put_object(Bucket="west-gone", Key="k", Body=b"x")
        assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
        client.put_object(Bucket="home-alive", Key="k", Body=b"still here")
        with pytest.raises(ClientError) as info:
            client.list_buckets()  # never a silently shorter list
        assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
        ready = requests.get(f"http://127.0.0.1:{metrics}/readyz", timeout=10)
        detail = json.loads(ready.content)["checks"]["upstream"]["detail"]
        assert ready.status_code == 503 and "west:" in detail, detail
    finally:
        harness.stop(relay.process)
        harness.stop(west.process)


def test_reload_moves_a_glob(workdir: Path, s3: harness.S3Server, west: harness.S3Server,
                             self_key: tuple[str, str]) -> None:
    port = harness.free_port()
    listen = f"tcp:{port}:interface=127.0.0.1"
    relay = harness.start_relay(workdir, upstreams_config(s3, west, listen, self_key), port)
    try:
        s3.client().create_bucket(Bucket="moving-bucket")
        west.client().create_bucket(Bucket="moving-bucket")
        client = boto_client(relay.url)
        client.put_object(Bucket="moving-bucket", Key="where", Body=b"home")
        config = workdir / f"relay-{port}.ini"
        config.write_text(upstreams_config(s3, west, listen, self_key, "west-*, moving-*"))
        relay.process.send_signal(signal.SIGHUP)
        assert harness.eventually(lambda: "reloaded" in relay.output()), relay.output()[-2000:]
        client.put_object(Bucket="moving-bucket", Key="where", Body=b"west")
        got = west.client().get_object(Bucket="moving-bucket", Key="where")["Body"].read()
        assert got == b"west"
        home = s3.client().get_object(Bucket="moving-bucket", Key="where")["Body"].read()
        assert home == b"home"
    finally:
        harness.stop(relay.process)
