"""Tests for s3relay.s3.addressing: which bucket and key a request names, and where it goes."""

from __future__ import annotations

from urllib.parse import quote, quote_from_bytes, unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.config import UpstreamConfig
from s3relay.s3.addressing import Target, parse_target, upstream_location
from s3relay.s3.errors import S3Error

HOSTNAMES = ("relay.test", "s3.example.internal")


def upstream(url: str = "http://s3.local:9000", addressing: str = "path") -> UpstreamConfig:
    return UpstreamConfig(url=url, region="us-east-1", addressing=addressing, max_connections=1)


PATH = upstream()
VIRTUAL = upstream(addressing="virtual")


def refused(host: str, raw_path: bytes, code: str) -> S3Error:
    with pytest.raises(S3Error) as info:
        parse_target(host, raw_path, HOSTNAMES)
    assert info.value.code == code
    assert info.value.status == 400
    return info.value


# -- path style -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_path", "target"),
    [
        (b"/", Target(None, b"", False)),
        (b"/bucket", Target("bucket", b"", False)),
        (b"/bucket/", Target("bucket", b"", True)),
        (b"/bucket/key", Target("bucket", b"key", True)),
        (b"/bucket/a/b/c.txt", Target("bucket", b"a/b/c.txt", True)),
        (b"/bucket/a%2Fb", Target("bucket", b"a/b", True)),
        (b"/bucket/a%2fb", Target("bucket", b"a/b", True)),
        (b"/bucket/with%20space", Target("bucket", b"with space", True)),
        (b"/bucket/a+b", Target("bucket", b"a+b", True)),
        (b"/bucket/a%2Bb", Target("bucket", b"a+b", True)),
        (b"/bucket/tilde~x", Target("bucket", b"tilde~x", True)),
        (b"/bucket/%C3%A9t%C3%A9", Target("bucket", "été".encode(), True)),
        (b"/bucket/%E2%82%AC/%F0%9F%98%80", Target("bucket", "€/😀".encode(), True)),
        (b"/bucket/%FF%00", Target("bucket", b"\xff\x00", True)),
        (b"/bucket//double", Target("bucket", b"/double", True)),
        (b"/bucket/./..", Target("bucket", b"./..", True)),
        (b"/bucket/100%", Target("bucket", b"100%", True)),
        (b"/My.Bucket-1_x", Target("My.Bucket-1_x", b"", False)),
        (b"/b", Target("b", b"", False)),
    ],
)
@pytest.mark.parametrize("host", ["s3.local", "relay.test", "relay.test:8080", "127.0.0.1:80",
                                  "[::1]:8080", "[::1]", "::1", ""])
def test_path_style(host: str, raw_path: bytes, target: Target) -> None:
    assert parse_target(host, raw_path, HOSTNAMES) == target


def test_resource_strings() -> None:
    assert parse_target("h", b"/", ()).resource == "/"
    assert parse_target("h", b"/bucket", ()).resource == "/bucket"
    assert parse_target("h", b"/bucket/", ()).resource == "/bucket/"
    assert parse_target("h", b"/bucket/a%20b/%C3%A9", ()).resource == "/bucket/a b/é"
    assert parse_target("h", b"/bucket/%FF", ()).resource == "/bucket/\ufffd"


# -- virtual-host style -------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "raw_path", "target"),
    [
        ("bucket.relay.test", b"/", Target("bucket", b"", True)),
        ("bucket.relay.test", b"/key", Target("bucket", b"key", True)),
        ("bucket.relay.test:8080", b"/a/b", Target("bucket", b"a/b", True)),
        ("BUCKET.Relay.TEST", b"/Key", Target("bucket", b"Key", True)),
        ("  bucket.relay.test:443 ", b"/k", Target("bucket", b"k", True)),
        ("my.dotted.bucket.relay.test", b"/k", Target("my.dotted.bucket", b"k", True)),
        ("b.s3.example.internal", b"/x%2Fy%20z+", Target("b", b"x/y z+", True)),
        ("bucket.relay.test", b"/%E2%82%AC", Target("bucket", "€".encode(), True)),
        ("bucket.relay.test", b"//lead", Target("bucket", b"/lead", True)),
    ],
)
def test_virtual_host_style(host: str, raw_path: bytes, target: Target) -> None:
    assert parse_target(host, raw_path, HOSTNAMES) == target


@pytest.mark.parametrize("host", ["relay.test", "relay.test:8080", "notrelay.test", "xrelay.test",
                                  "bucket.relay.test.evil", "bucket.other.test"])
def test_hosts_that_are_not_virtual(host: str) -> None:
    assert parse_target(host, b"/bucket/key", HOSTNAMES) == Target("bucket", b"key", True)


def test_no_hostnames_means_path_style() -> None:
    assert parse_target("bucket.relay.test", b"/b2/k", ()) == Target("b2", b"k", True)


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "raw_path"),
    [
        ("h", b"//key"),
        ("h", b"//"),
        ("h", b"/-bucket/k"),
        ("h", b"/.bucket"),
        ("h", b"/_bucket"),
        ("h", b"/buc%20ket/k"),
        ("h", b"/buc ket"),
        ("h", b"/b%C3%A9/k"),
        ("h", b"/b%FF"),
        ("h", b"/buck$t"),
        ("h", b"/" + b"a" * 256),
        ("-bucket.relay.test", b"/k"),
        (".relay.test", b"/k"),
        ("b_%.relay.test", b"/k"),
    ],
)
def test_invalid_bucket_names(host: str, raw_path: bytes) -> None:
    error = refused(host, raw_path, "InvalidBucketName")
    assert error.message == "The specified bucket is not valid."


def test_longest_bucket_name_accepted() -> None:
    assert parse_target("h", b"/" + b"a" * 255, ()).bucket == "a" * 255


@pytest.mark.parametrize("raw_path", [b"", b"bucket/key", b"*", b"http://h/bucket/key", b"%2F"])
def test_path_must_start_with_slash(raw_path: bytes) -> None:
    error = refused("bucket.relay.test", raw_path, "InvalidURI")
    assert error.message == "Couldn't parse the specified URI."


# -- upstream location ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path_style", "virtual_style"),
    [
        (Target(None, b"", False), ("s3.local:9000", "/"), ("s3.local:9000", "/")),
        (Target("b", b"", False), ("s3.local:9000", "/b"), ("b.s3.local:9000", "/")),
        (Target("b", b"", True), ("s3.local:9000", "/b/"), ("b.s3.local:9000", "/")),
        (Target("b", b"k", True), ("s3.local:9000", "/b/k"), ("b.s3.local:9000", "/k")),
        (Target("b", b"a/b c+d~e", True),
         ("s3.local:9000", "/b/a/b%20c%2Bd~e"), ("b.s3.local:9000", "/a/b%20c%2Bd~e")),
        (Target("b", "é/€".encode(), True),
         ("s3.local:9000", "/b/%C3%A9/%E2%82%AC"), ("b.s3.local:9000", "/%C3%A9/%E2%82%AC")),
        (Target("b", b"%2F?#&=;", True),
         ("s3.local:9000", "/b/%252F%3F%23%26%3D%3B"), ("b.s3.local:9000", "/%252F%3F%23%26%3D%3B")),
        (Target("b", b"\x00\xff", True), ("s3.local:9000", "/b/%00%FF"), ("b.s3.local:9000", "/%00%FF")),
        (Target("b", b"//x", True), ("s3.local:9000", "/b///x"), ("b.s3.local:9000", "///x")),
    ],
)
def test_upstream_location(target: Target, path_style: tuple[str, str],
                           virtual_style: tuple[str, str]) -> None:
    assert upstream_location(target, PATH) == path_style
    assert upstream_location(target, VIRTUAL) == virtual_style


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://s3.local", "s3.local"),
        ("http://s3.local:80", "s3.local"),
        ("https://s3.local:443", "s3.local"),
        ("https://s3.local", "s3.local"),
        ("http://s3.local:8080", "s3.local:8080"),
        ("https://s3.local:8443", "s3.local:8443"),
        ("https://s3.local:80", "s3.local:80"),
        ("http://s3.local:443", "s3.local:443"),
        ("http://127.0.0.1:9000", "127.0.0.1:9000"),
        ("http://[::1]:9000", "[::1]:9000"),
        ("http://[::1]:80", "[::1]"),
    ],
)
def test_upstream_netloc_ports(url: str, host: str) -> None:
    target = Target("bucket", b"key", True)
    assert upstream_location(target, upstream(url)) == (host, "/bucket/key")
    assert upstream_location(target, upstream(url, "virtual")) == (f"bucket.{host}", "/key")


def test_client_style_and_upstream_style_are_independent() -> None:
    virtual = parse_target("photos.relay.test", b"/2024/a%20b.jpg", HOSTNAMES)
    path = parse_target("relay.test", b"/photos/2024/a%20b.jpg", HOSTNAMES)
    assert virtual == path
    assert upstream_location(virtual, PATH) == ("s3.local:9000", "/photos/2024/a%20b.jpg")
    assert upstream_location(path, VIRTUAL) == ("photos.s3.local:9000", "/2024/a%20b.jpg")


# -- keys round-trip byte for byte ---------------------------------------------------------


_KEYS = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=32).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.text(alphabet=" +%/~!*'()&=?#;:@$,[]", max_size=16).map(str.encode),
)


@settings(max_examples=500)
@given(key=_KEYS, safe=st.sampled_from(["", "/", "/~", "/+ "]),
       addressing=st.sampled_from(["path", "virtual"]))
def test_key_round_trip_path_style(key: bytes, safe: str, addressing: str) -> None:
    raw_path = b"/bucket/" + quote_from_bytes(key, safe=safe).encode("ascii")
    if b" " in raw_path:
        raw_path = raw_path.replace(b" ", b"%20")
    target = parse_target("s3.local", raw_path, HOSTNAMES)
    assert target == Target("bucket", key, True)
    host, path = upstream_location(target, upstream(addressing=addressing))
    prefix = b"/bucket/" if addressing == "path" else b"/"
    assert unquote_to_bytes(path) == prefix + key
    assert host == ("s3.local:9000" if addressing == "path" else "bucket.s3.local:9000")
    # The upstream path is already canonical: encoding it again changes nothing.
    assert path == quote(unquote_to_bytes(path), safe="/")
    assert path.isascii() and " " not in path and "+" not in path


@settings(max_examples=300)
@given(key=_KEYS, addressing=st.sampled_from(["path", "virtual"]))
def test_key_round_trip_virtual_host_style(key: bytes, addressing: str) -> None:
    raw_path = b"/" + quote_from_bytes(key).encode("ascii")
    target = parse_target("bucket.relay.test:8080", raw_path, HOSTNAMES)
    assert target == Target("bucket", key, True)
    _, path = upstream_location(target, upstream(addressing=addressing))
    prefix = b"/bucket/" if addressing == "path" else b"/"
    assert unquote_to_bytes(path) == prefix + key
