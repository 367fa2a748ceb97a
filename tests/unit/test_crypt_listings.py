"""Tests for s3relay.crypt.listings: plaintext sizes in S3 listing documents."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.crypt.layout import SEGMENT, plaintext_size, stored_size
from s3relay.crypt.listings import plaintext_listing

NS = b'<?xml version="1.0" encoding="UTF-8"?>\n'
S1, S2, S3 = stored_size(0), stored_size(5 * SEGMENT + 3), stored_size(123)
NOT_STORED = stored_size(SEGMENT) + 1  # no encrypted object has this size

V2 = NS + b"""<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">\
<Name>bucket</Name><Prefix></Prefix><KeyCount>5</KeyCount><MaxKeys>1000</MaxKeys>\
<Delimiter>/</Delimiter><IsTruncated>false</IsTruncated>\
<Contents><Key>secret/empty</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified>\
<ETag>&quot;0f343b0931126a20f133d67c2b018a3b&quot;</ETag><ChecksumAlgorithm>CRC64NVME\
</ChecksumAlgorithm><Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>secret/big.bin</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified>\
<ETag>&quot;aa-2&quot;</ETag><Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>public/same-size</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified>\
<ETag>&quot;bb&quot;</ETag><Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>secret/old-plaintext</Key><Size>%d</Size><StorageClass>STANDARD</StorageClass>\
</Contents>
<Contents><Key>secretive</Key><Size>%d</Size><Owner><ID>abc</ID><DisplayName>me</DisplayName>\
</Owner></Contents>
<CommonPrefixes><Prefix>secret/dir/</Prefix></CommonPrefixes>\
<CommonPrefixes><Prefix>public/</Prefix></CommonPrefixes></ListBucketResult>""" % (
    S1, S2, S2, NOT_STORED, S3
)


def sizes(body: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"<Size>(\d+)</Size>", body)]


def entries(body: bytes) -> dict[bytes, bytes]:
    found = re.findall(rb"<(?:Contents|Version)>.*?<Key>(.*?)</Key>.*?</(?:Contents|Version)>",
                       body, re.DOTALL)
    whole = re.findall(rb"<(?:Contents|Version)>.*?</(?:Contents|Version)>", body, re.DOTALL)
    return dict(zip(found, whole))


def only_encrypted_entries_changed(before: bytes, after: bytes, prefix: bytes) -> None:
    """Entries under ``prefix`` may differ in their size and ETag, nothing else does."""
    blank = re.compile(rb"<Size>\d+</Size>|<ETag>[^<]*</ETag>")
    assert blank.sub(b"<Size/>", before) == blank.sub(b"<Size/>", after)
    plain = {k: v for k, v in entries(before).items() if not k.startswith(prefix)}
    assert plain and all(entries(after)[k] == v for k, v in plain.items())


def test_list_objects_v2() -> None:
    after = plaintext_listing(V2, [b"secret/"])
    assert sizes(after) == [0, 5 * SEGMENT + 3, S2, NOT_STORED, S3]
    only_encrypted_entries_changed(V2, after, b"secret/")


def test_several_prefixes_and_a_whole_bucket() -> None:
    assert sizes(plaintext_listing(V2, [b"public/", b"secret/big"])) == [
        S1, 5 * SEGMENT + 3, 5 * SEGMENT + 3, NOT_STORED, S3
    ]
    assert sizes(plaintext_listing(V2, [b""])) == [0, 5 * SEGMENT + 3, 5 * SEGMENT + 3,
                                                   NOT_STORED, 123]


def test_nothing_under_the_prefixes_is_byte_for_byte() -> None:
    assert plaintext_listing(V2, [b"nothing/", b"Secret/"]) == V2
    assert plaintext_listing(V2, []) == V2


V1 = NS + b"""<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">\
<Name>bucket</Name><Prefix>s</Prefix><Marker></Marker><MaxKeys>2</MaxKeys>\
<IsTruncated>true</IsTruncated><NextMarker>secret/b</NextMarker>
<Contents><Key>secret/a</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified>\
<ETag>&quot;x&quot;</ETag><Size>%d</Size><Owner><ID>o</ID></Owner>\
<StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>shared</Key><Size>%d</Size></Contents></ListBucketResult>""" % (S3, S3)


def test_list_objects_v1() -> None:
    after = plaintext_listing(V1, [b"secret/"])
    assert sizes(after) == [123, S3]
    only_encrypted_entries_changed(V1, after, b"secret/")


VERSIONS = NS + b"""<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">\
<Name>bucket</Name><Prefix></Prefix><KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker>\
<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
<Version><Key>secret/a</Key><VersionId>v3</VersionId><IsLatest>false</IsLatest>\
<LastModified>2026-01-02T03:04:05.000Z</LastModified><ETag>&quot;x&quot;</ETag>\
<Size>%d</Size><StorageClass>STANDARD</StorageClass><Owner><ID>o</ID></Owner></Version>
<DeleteMarker><Key>secret/a</Key><VersionId>v4</VersionId><IsLatest>true</IsLatest>\
<LastModified>2026-01-03T03:04:05.000Z</LastModified><Owner><ID>o</ID></Owner></DeleteMarker>
<DeleteMarker><Key>public/b</Key><VersionId>v5</VersionId><IsLatest>true</IsLatest>\
</DeleteMarker>
<Version><Key>secret/a</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest>\
<Size>%d</Size></Version>
<Version><Key>public/b</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest>\
<Size>%d</Size></Version>
<CommonPrefixes><Prefix>secret/d/</Prefix></CommonPrefixes></ListVersionsResult>""" % (
    S2, S1, S1
)


def test_list_object_versions() -> None:
    after = plaintext_listing(VERSIONS, [b"secret/"])
    assert sizes(after) == [5 * SEGMENT + 3, 0, S1]
    only_encrypted_entries_changed(VERSIONS, after, b"secret/")
    assert after.count(b"<DeleteMarker>") == 2


MD5 = b"0f343b0931126a20f133d67c2b018a3b"


@pytest.mark.parametrize("quote", [b"&quot;", b"&#34;", b'"', b""])
def test_md5_etags_under_the_prefixes_are_shown_with_dash_0(quote: bytes) -> None:
    entry = b"<Contents><Key>%s</Key><ETag>" + quote + MD5 + quote + b"</ETag><Size>28</Size>"
    body = b"<ListBucketResult>%s</Contents>%s</Contents></ListBucketResult>" % (
        entry % b"secret/a", entry % b"public/a")
    after = plaintext_listing(body, [b"secret/"])
    assert after == body.replace(MD5, MD5 + b"-0", 1).replace(b"<Size>28<", b"<Size>0<", 1)


def test_multipart_etags_are_left_alone() -> None:
    body = (b"<ListBucketResult><Contents><Key>secret/a</Key><ETag>&quot;%s-3&quot;</ETag>"
            b"<Size>28</Size></Contents></ListBucketResult>" % MD5)
    assert plaintext_listing(body, [b"secret/"]) == body.replace(b"<Size>28<", b"<Size>0<")


def listing(key: bytes, size: int, url: bool = False) -> bytes:
    encoding = b"<EncodingType>url</EncodingType>" if url else b""
    return NS + (
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Name>b</Name>%s<Contents><Key>%s</Key><Size>%d</Size></Contents>"
        b"</ListBucketResult>" % (encoding, key, size)
    )


@pytest.mark.parametrize(
    "listed, prefix, encrypted",
    [
        (b"my+secret/a", "my secret/", True),
        (b"my%20secret/a", "my secret/", True),
        (b"my%2Bsecret/a", "my+secret/", True),
        (b"my%2Bsecret/a", "my secret/", False),
        (b"caf%C3%A9/a", "caf\u00e9/", True),
        (b"a%26b%2Fc", "a&b/", True),
        (b"dir%2Fsub", "dir/", True),
        (b"dir", "dir/", False),
    ],
)
def test_url_encoded_keys(listed: bytes, prefix: str, encrypted: bool) -> None:
    after = plaintext_listing(listing(listed, S3, url=True), [prefix.encode()])
    assert sizes(after) == [123 if encrypted else S3]


def test_keys_are_url_decoded_only_when_the_listing_says_so() -> None:
    assert sizes(plaintext_listing(listing(b"my%20secret/a", S3), [b"my secret/"])) == [S3]
    assert sizes(plaintext_listing(listing(b"my%20secret/a", S3), [b"my%20secret/"])) == [123]


@pytest.mark.parametrize(
    "listed, prefix",
    [
        (b"a&amp;b/x", "a&b/"),
        (b"&lt;tag&gt;/x", "<tag>/"),
        (b"line&#x0D;end/x", "line\rend/"),
        (b"q&quot;&apos;/x", "q\"'/"),
        (b"caf\xc3\xa9/x", "caf\u00e9/"),
        (b"caf&#xE9;/x", "caf\u00e9/"),
        (b"caf&#233;/x", "caf\u00e9/"),
    ],
)
def test_xml_escaped_keys(listed: bytes, prefix: str) -> None:
    assert sizes(plaintext_listing(listing(listed, S3), [prefix.encode()])) == [123]
    escaped = listed[: listed.index(b"/") + 1]
    if escaped != prefix.encode():  # the key as written is not the key
        assert sizes(plaintext_listing(listing(listed, S3), [escaped])) == [S3]


def test_an_escape_is_not_the_character_it_spells() -> None:
    # "&amp;lt;" is the five characters "&lt;", not "<".
    assert sizes(plaintext_listing(listing(b"&amp;lt;x", S3), [b"<"])) == [S3]
    assert sizes(plaintext_listing(listing(b"&amp;lt;x", S3), [b"&lt;"])) == [123]


@pytest.mark.parametrize(
    "listed, prefix",
    [(b"p&#x85;/x", "p\x85/"), (b"p&#x1;/x", "p\x01/"), (b"p&#133;/x", "p\x85/")],
)
def test_character_references_are_read_as_xml_not_html(listed: bytes, prefix: str) -> None:
    assert sizes(plaintext_listing(listing(listed, S3), [prefix.encode()])) == [123]


@given(st.integers(0, 10 * 1024**3))
@settings(max_examples=200, deadline=None)
def test_any_stored_size(stored: int) -> None:
    after = plaintext_listing(listing(b"secret/x", stored), [b"secret/"])
    plain = plaintext_size(stored)
    assert sizes(after) == [stored if plain is None else plain]
    if plain is None:
        assert after == listing(b"secret/x", stored)
