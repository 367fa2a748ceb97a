"""Several upstreams: bucket globs, which upstream and credential set a request
gets, the config errors, merged ListBuckets, and the Agents kept per upstream."""

from __future__ import annotations

from fnmatch import fnmatchcase
from itertools import product
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.config import ConfigError, parse_config
from s3relay.s3.listbuckets import merge_buckets
from s3relay.upstream.pools import UpstreamAgents
from s3relay.upstream.routes import globs_overlap, location_constraint

BASE = """
[upstream]
url = https://s3.eu-central-1.amazonaws.com
region = eu-central-1

[credentials:main]
access_key_id = AKIAMAIN
secret_access_key = main-secret

[credentials:west-writer]
access_key_id = AKIAWEST
secret_access_key = west-secret

[client:alice]
access_key_id = AKIDALICE
secret_access_key = alice-secret
credentials = main

[client:carol]
access_key_id = AKIDCAROL
secret_access_key = carol-secret
credentials = main, west:main
"""

WEST = """
[upstream:west]
url = https://s3.us-west-2.amazonaws.com
region = us-west-2
buckets = us-*, archive-west
credentials = west-writer
addressing = virtual
force_storage_class = GLACIER_IR
"""


def test_buckets_route_by_glob() -> None:
    config = parse_config(BASE + WEST)
    assert config.route("us-logs").name == "west"
    assert config.route("archive-west").name == "west"
    assert config.route("archive").name == "default"
    assert config.route(None).name == "default"
    west = config.route("us-logs")
    assert west.upstream.region == "us-west-2" and west.upstream.addressing == "virtual"
    assert west.transforms is not None
    assert west.transforms.headers_for("PutObject", "alice", "us-logs") == {
        "x-amz-storage-class": "GLACIER_IR"
    }


def test_which_set_signs() -> None:
    config = parse_config(BASE + WEST)
    alice, carol = config.clients["alice"], config.clients["carol"]
    west, home = config.route("us-x"), config.route("eu-x")
    assert config.credential_set(alice, west) == "west-writer"  # the upstream's
    assert config.credential_set(carol, west) == "main"  # the client's own for it
    assert config.credential_set(alice, home) == "main"
    assert config.credential_set(carol, home) == "main"


@pytest.mark.parametrize("extra, message", [
    (WEST + WEST.replace("[upstream:west]", "[upstream:west2]"), "can match the same bucket"),
    (WEST + "\n[upstream:east]\nurl = http://h\nregion = r\nbuckets = *-logs\n",
     "'*-logs' and [upstream:west]'s 'us-*'"),
    (WEST.replace("credentials = west-writer", "credentials = nope"), "no [credentials:nope]"),
    (WEST.replace("buckets = us-*, archive-west", "buckets = ,"), "names no bucket"),
    (WEST.replace("[upstream:west]", "[upstream:]"), "needs a name"),
    (WEST.replace("[upstream:west]", "[upstream:default]"), "names [upstream] itself"),
    (WEST.replace("url = https://s3.us-west-2.amazonaws.com", "url = ftp://x"), "http(s) URL"),
    (WEST.replace("buckets = us-*", "buckets = us/*"), "is not a bucket glob"),
])
def test_config_errors(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + extra)
    assert message in str(info.value)


@pytest.mark.parametrize("credentials, message", [
    ("main, east:main", "no [upstream:east]"),
    ("main, west:nope", "no [credentials:nope]"),
    ("west:main", "names no default set"),
    ("main, west:main, west:main", "once per upstream"),
    ("main, other", "one default set first"),
])
def test_client_credentials_errors(credentials: str, message: str) -> None:
    text = BASE.replace("credentials = main, west:main", f"credentials = {credentials}")
    with pytest.raises(ConfigError) as info:
        parse_config(text + WEST)
    assert message in str(info.value) and "[client:carol]" in str(info.value)


@pytest.mark.parametrize("first, second, overlap", [
    ("us-*", "*-west", True), ("us-*", "eu-*", False), ("a", "a", True), ("a", "b", False),
    ("a*b", "a*c", False), ("a*", "*b", True), ("a?c", "abc", True),
    ("a[bc]d", "a[de]d", False), ("a[bc]d", "a?d", True), ("logs", "logs-*", False),
    ("logs*", "logs", True), ("*", "anything", True), ("x*y*z", "*q*", True),
])
def test_globs_overlap(first: str, second: str, overlap: bool) -> None:
    assert globs_overlap(first, second) is overlap
    assert globs_overlap(second, first) is overlap


GLOB = st.text(alphabet="ab-*?", min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(first=GLOB, second=GLOB)
def test_globs_overlap_agrees_with_fnmatch(first: str, second: str) -> None:
    """Against every name of up to 6 characters from the globs' alphabet."""
    names = ("".join(p) for n in range(7) for p in product("ab-", repeat=n))
    both = any(fnmatchcase(n, first) and fnmatchcase(n, second) for n in names)
    if both:
        assert globs_overlap(first, second)
    elif sum(c != "*" for c in first + second) <= 6:
        assert not globs_overlap(first, second)


DOC = (b'<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult '
       b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner><ID>o</ID></Owner><Buckets>%s'
       b"</Buckets></ListAllMyBucketsResult>")


def bucket(name: bytes) -> bytes:
    return b"<Bucket><Name>%s</Name><CreationDate>2026-01-01T00:00:00.000Z</CreationDate>" \
           b"</Bucket>" % name


def test_merge_buckets_in_name_order() -> None:
    home = DOC % (bucket(b"b-home") + bucket(b"d-home"))
    merged = merge_buckets(home, [DOC % bucket(b"c-west"), DOC % bucket(b"a-west")])
    assert merged == DOC % b"".join(bucket(n) for n in (b"a-west", b"b-home", b"c-west",
                                                        b"d-home"))
    assert merge_buckets(DOC.replace(b"<Buckets>%s</Buckets>", b"<Buckets/>"),
                         [DOC % bucket(b"x")]) == DOC % bucket(b"x")


def test_location_constraint() -> None:
    assert b"<LocationConstraint>us-west-2</LocationConstraint>" in location_constraint("us-west-2")


def test_agents_are_kept_per_upstream_until_it_changes() -> None:
    made: list[Any] = []

    def make(upstream: Any) -> Any:
        made.append(upstream)
        return object()

    first = parse_config(BASE + WEST)
    agents = UpstreamAgents(make, first.routes)  # type: ignore[arg-type]
    assert list(agents) == ["default", "west"] and len(made) == 2
    default, west = agents["default"], agents["west"]
    changed = parse_config(BASE + WEST.replace("us-*", "usa-*"))  # same upstream settings
    agents.update(changed.routes)  # type: ignore[arg-type]
    assert (agents["default"], agents["west"]) == (default, west) and len(made) == 2
    moved = parse_config(BASE + WEST.replace("https://s3.us-west-2", "https://s3.us-west-1"))
    agents.update(moved.routes)  # type: ignore[arg-type]
    assert agents["west"] is not west and agents["default"] is default
    alone = BASE.replace("credentials = main, west:main", "credentials = main")
    agents.update(parse_config(alone).routes)  # type: ignore[arg-type]
    assert list(agents) == ["default"]
