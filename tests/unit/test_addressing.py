"""Tests for s3relay.s3.addressing: which bucket and key a request names, and where it goes."""

from __future__ import annotations

from urllib.parse import quote, quote_from_bytes, unquote_to_bytes

import botocore.endpoint_provider
import botocore.utils
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.config import UpstreamConfig
from s3relay.s3.addressing import (
    Target,
    parse_target,
    upstream_location,
    virtual_hostable,
)
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
        (b"/bucket/a..b/.hidden/x.", Target("bucket", b"a..b/.hidden/x.", True)),
        (b"/bucket/.../...", Target("bucket", b".../...", True)),
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
        (Target("bkt", b"", False), ("s3.local:9000", "/bkt"), ("bkt.s3.local:9000", "/")),
        (Target("bkt", b"", True), ("s3.local:9000", "/bkt/"), ("bkt.s3.local:9000", "/")),
        (Target("bkt", b"k", True), ("s3.local:9000", "/bkt/k"), ("bkt.s3.local:9000", "/k")),
        (Target("bkt", b"a/b c+d~e", True),
         ("s3.local:9000", "/bkt/a/b%20c%2Bd~e"), ("bkt.s3.local:9000", "/a/b%20c%2Bd~e")),
        (Target("bkt", "é/€".encode(), True),
         ("s3.local:9000", "/bkt/%C3%A9/%E2%82%AC"), ("bkt.s3.local:9000", "/%C3%A9/%E2%82%AC")),
        (Target("bkt", b"%2F?#&=;", True),
         ("s3.local:9000", "/bkt/%252F%3F%23%26%3D%3B"),
         ("bkt.s3.local:9000", "/%252F%3F%23%26%3D%3B")),
        (Target("bkt", b"\x00\xff", True),
         ("s3.local:9000", "/bkt/%00%FF"), ("bkt.s3.local:9000", "/%00%FF")),
        (Target("bkt", b"//x", True), ("s3.local:9000", "/bkt///x"), ("bkt.s3.local:9000", "///x")),
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
    target = parse_target("s3.local", raw_path, HOSTNAMES, allow_dot_segments=True)
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
    target = parse_target("bucket.relay.test:8080", raw_path, HOSTNAMES, allow_dot_segments=True)
    assert target == Target("bucket", key, True)
    _, path = upstream_location(target, upstream(addressing=addressing))
    prefix = b"/bucket/" if addressing == "path" else b"/"
    assert unquote_to_bytes(path) == prefix + key


# -- which buckets go virtual-host style upstream ----------------------------------------

#: What S3 itself would take from a request's Host and path: the first Host
#: label is the bucket when the Host is not the endpoint's (moto, MinIO with a
#: domain, AWS: ``shared.team-a-data.<endpoint>`` is bucket ``shared``).
def upstream_reads(host: str, path: str, netloc: str = "s3.local:9000") -> tuple[str, bytes]:
    if host != netloc:
        return host.partition(".")[0], unquote_to_bytes(path[1:])
    bucket, _, key = path[1:].partition("/")
    return bucket, unquote_to_bytes(key)


@pytest.mark.parametrize("bucket", ["bkt", "team-a-data", "a1-b2-c3", "123", "a" * 63,
                                    "x-y", "0-0"])
def test_dns_label_buckets_go_virtual(bucket: str) -> None:
    target = Target(bucket, b"k", True)
    assert upstream_location(target, VIRTUAL) == (f"{bucket}.s3.local:9000", "/k")
    assert virtual_hostable(bucket)


@pytest.mark.parametrize("bucket", [
    "shared.team-a-data",  # a dot: the upstream would read bucket "shared"
    "shared.example.com",
    "a.b", "a..b", "x.", "192.168.1.1",
    "My-Bucket", "BKT",  # a DNS name is case-insensitive: another bucket once folded
    "under_score",
    "b", "ab", "a" * 64, "a" * 255,  # outside 3..63 (S3's own limits)
    "x-", "0-",  # ends with a hyphen: not a DNS label
])
def test_other_buckets_go_path_style_even_when_virtual(bucket: str) -> None:
    assert not virtual_hostable(bucket)
    assert upstream_location(Target(bucket, b"k", True), VIRTUAL) == (
        "s3.local:9000", f"/{bucket}/k")
    assert upstream_location(Target(bucket, b"", False), VIRTUAL) == ("s3.local:9000", f"/{bucket}")
    assert upstream_location(Target(bucket, b"", True), VIRTUAL) == ("s3.local:9000", f"/{bucket}/")


def test_dotted_bucket_cannot_reach_its_first_label() -> None:
    """The review's cases: ``*-data`` and an exact grant must not reach bucket ``shared``."""
    for name in ("shared.team-a-data", "shared.example.com"):
        for host, path in (("relay.test", f"/{name}/secret.txt"),
                           (f"{name}.relay.test", "/secret.txt")):
            target = parse_target(host, path.encode(), HOSTNAMES)
            assert upstream_reads(*upstream_location(target, VIRTUAL)) == (name, b"secret.txt")


#: Every bucket name parse_target accepts, biased towards the awkward ones.
_ACCEPTED_BUCKETS = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", fullmatch=True),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,70}", fullmatch=True),
    st.lists(st.sampled_from(["shared", "team-a-data", "a", "-", "x_y", "B", "1", "127"]),
             min_size=1, max_size=5).map(".".join).filter(lambda b: b[0].isalnum()),
)


@settings(max_examples=500)
@given(bucket=_ACCEPTED_BUCKETS, key=st.binary(max_size=16), slash=st.booleans())
def test_virtual_host_is_the_bucket_or_path_style(bucket: str, key: bytes, slash: bool) -> None:
    """For any bucket the relay accepts, under ``addressing = virtual`` the upstream
    Host's first label is exactly the bucket name, or the request is path style."""
    assert parse_target("relay.test", b"/" + bucket.encode(), HOSTNAMES).bucket == bucket
    target = Target(bucket, key, slash or bool(key))
    host, path = upstream_location(target, VIRTUAL)
    if host == VIRTUAL.netloc:
        assert path == upstream_location(target, PATH)[1]
        assert path.split("/")[1] == bucket
    else:
        assert host == f"{bucket}.{VIRTUAL.netloc}"
        assert host.split(".")[0] == bucket
        assert path == "/" + quote_from_bytes(key, safe="/")
    assert upstream_reads(host, path) == (bucket, key)


@settings(max_examples=500)
@given(bucket=_ACCEPTED_BUCKETS)
def test_virtual_hostable_is_botocores_rule(bucket: str) -> None:
    """botocore's two spellings of the rule: the legacy ``check_dns_name`` and the
    endpoint rules' ``aws.isVirtualHostableS3Bucket(Bucket, false)``."""
    assert virtual_hostable(bucket) == botocore.utils.check_dns_name(bucket)
    library = getattr(botocore.endpoint_provider, "RuleSetStandardLibrary", None)
    if library is not None:
        assert virtual_hostable(bucket) == bool(
            library({}).aws_is_virtual_hostable_s3_bucket(bucket, False))


# -- dot segments ------------------------------------------------------------------------


def dot_refused(host: str, raw_path: bytes, copy_sources: tuple[str, ...] = ()) -> S3Error:
    with pytest.raises(S3Error) as info:
        parse_target(host, raw_path, HOSTNAMES, copy_sources=copy_sources)
    assert (info.value.code, info.value.status) == ("InvalidRequest", 400)
    assert "'.' or '..'" in info.value.message
    return info.value


_DOTTED_PATHS = [
    b"/shared/../team-a-data/projects/beta/secret.txt",
    b"/shared/./secret.txt", b"/shared/..", b"/shared/.", b"/shared/x/..", b"/shared/x/./y",
    b"/shared//../x", b"/shared/../", b"/..", b"/.", b"/../team-a-data/k", b"/./shared/k",
    b"/shared/%2e%2e/team-a-data/k", b"/shared/%2E%2E/k", b"/shared/.%2e/k", b"/shared/%2e./k",
    b"/shared/%2E/k", b"/shared/%2e", b"/shared/.%2E", b"/%2e%2e/team-a-data/k",
    b"/shared/..%2Fteam-a-data/k", b"/shared/a%2F..%2Fb", b"/shared/a%2f%2e%2e%2fb",
    b"/shared/%2e%2e%2F", b"/shared%2F..%2Fteam-a-data%2Fk",
]


@pytest.mark.parametrize("raw_path", _DOTTED_PATHS)
@pytest.mark.parametrize("host", ["relay.test", "127.0.0.1:8080", "shared.relay.test"])
def test_dot_segments_refused(host: str, raw_path: bytes) -> None:
    """Path style and virtual-host style (whose whole path is the key) alike."""
    error = dot_refused(host, raw_path)
    assert "the request path" in error.message
    assert "allow_dot_segments" in error.reason


@pytest.mark.parametrize("raw_path", [p for p in _DOTTED_PATHS if p.startswith(b"/shared/")])
def test_dot_segments_allowed_by_config(raw_path: bytes) -> None:
    """``allow_dot_segments = yes``: the key is the literal bytes, as S3 reads it."""
    target = parse_target("relay.test", raw_path, HOSTNAMES, allow_dot_segments=True)
    assert target == Target("shared", unquote_to_bytes(raw_path)[len(b"/shared/"):], True)
    _, path = upstream_location(target, PATH)
    assert unquote_to_bytes(path) == unquote_to_bytes(raw_path)  # forwarded as is


@pytest.mark.parametrize("key", [b"a..b", b".hidden", b"x/.y", b"...", b".../x", b"x./y",
                                 b"%2e%2e%2e", b"..a", b"a.", b".a./b..", b"x/..y", b"x/y..",
                                 b"%252e%252e", b"a/.../b"])
def test_keys_with_dots_that_are_not_segments(key: bytes) -> None:
    for host, raw_path in (("relay.test", b"/shared/" + key), ("shared.relay.test", b"/" + key)):
        assert parse_target(host, raw_path, HOSTNAMES) == Target(
            "shared", unquote_to_bytes(key), True)


@pytest.mark.parametrize("value", [
    "shared/../team-a-data/projects/beta/secret.txt", "/shared/../team-a-data/k",
    "shared/./k", "shared/k/..", "shared/%2e%2e/team-a-data/k", "shared/%2E./k",
    "shared/.%2e/k?versionId=3", "shared/..%2Fteam-a-data/k", "/../team-a-data/k",
    "shared/%2e", "shared/k/%2E",
])
def test_dot_segments_in_copy_source_refused(value: str) -> None:
    for host, raw_path in (("relay.test", b"/dst/k"), ("dst.relay.test", b"/k")):
        error = dot_refused(host, raw_path, (value,))
        assert "x-amz-copy-source" in error.message
    # with the check off the path and copy source pass (operations parses the source)
    assert parse_target("relay.test", b"/dst/k", HOSTNAMES, allow_dot_segments=True,
                        copy_sources=(value,)) == Target("dst", b"k", True)


@pytest.mark.parametrize("value", ["shared/a..b", "shared/.hidden", "/shared/x/.y",
                                   "shared/k?versionId=..", "shared/k?versionId=.", "shared/..."])
def test_copy_sources_with_dots_that_are_not_segments(value: str) -> None:
    assert parse_target("relay.test", b"/dst/k", HOSTNAMES, copy_sources=(value,)) == Target(
        "dst", b"k", True)


def test_every_copy_source_value_is_checked() -> None:
    dot_refused("relay.test", b"/dst/k", ("shared/fine", "shared/../x"))


def test_dot_segment_refused_before_the_bucket_name() -> None:
    """``/../k`` says what is wrong with it (not InvalidBucketName)."""
    dot_refused("relay.test", b"/../k")
    dot_refused("relay.test", b"/./k")


#: Path pieces, and the ways a client may spell a "." or a "/" in the raw path.
_SEGMENTS = st.sampled_from([b".", b"..", b"...", b"a", b".a", b"a.", b"", b"x..y", b"%", b"+"])
_DOT_SPELLINGS = st.sampled_from([b".", b"%2e", b"%2E"])
_SLASH_SPELLINGS = st.sampled_from([b"/", b"%2F", b"%2f"])


@st.composite
def _spelled(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(key bytes, one raw spelling of it in a path)."""
    segments = draw(st.lists(st.one_of(_SEGMENTS, st.binary(max_size=4)), min_size=1,
                             max_size=6))
    key = b"/".join(segments)
    raw = b""
    for i, segment in enumerate(segments):
        if i:
            raw += draw(_SLASH_SPELLINGS)
        for byte in segment:
            char = bytes([byte])
            raw += draw(_DOT_SPELLINGS) if char == b"." else quote_from_bytes(char).encode()
    return key, raw


@settings(max_examples=1000)
@given(spelled=_spelled(), virtual=st.booleans())
def test_dot_segments_however_spelled(spelled: tuple[bytes, bytes], virtual: bool) -> None:
    """Refused exactly when the key has a ``.``/``..`` segment, raw or encoded; else the
    key round-trips; with ``allow_dot_segments`` it always does."""
    key, raw = spelled
    host, raw_path = ("shared.relay.test", b"/" + raw) if virtual else ("h", b"/shared/" + raw)
    dotted = any(segment in (b".", b"..") for segment in key.split(b"/"))
    if dotted:
        dot_refused(host, raw_path)
        dot_refused("h", b"/dst/k", ("shared/" + raw.decode("ascii"),))
    else:
        assert parse_target(host, raw_path, HOSTNAMES) == Target("shared", key, True)
        parse_target("h", b"/dst/k", HOSTNAMES, copy_sources=("shared/" + raw.decode("ascii"),))
    assert parse_target(host, raw_path, HOSTNAMES, allow_dot_segments=True) == Target(
        "shared", key, True)
