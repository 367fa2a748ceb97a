"""Encrypted multipart uploads' documents and shapes (s3relay.crypt.uploads)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3relay.body.digests import PayloadChecker
from s3relay.body.plan import PlainBody
from s3relay.crypt.etags import stored
from s3relay.crypt.layout import SEGMENT, STORED_SEGMENT, stored_size
from s3relay.crypt.uploads import (
    MAX_COMPLETE_BODY,
    CompleteBody,
    PartsPage,
    check_parts,
    complete_body,
    parse_complete,
    plaintext_parts,
    read_parts_page,
    with_client_upload_id,
)
from s3relay.s3.errors import S3Error
from s3relay.s3.safexml import S3_NS

MD5 = "3858f62230ac3c915f300c664312c63f"
OTHER = "0123456789abcdef0123456789abcdef"
MIB = 1024 * 1024

# -- CreateMultipartUpload -----------------------------------------------------------------

CREATED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<InitiateMultipartUploadResult xmlns="{S3_NS}"><Bucket>bucket</Bucket>'
    "<Key>dir/key</Key><UploadId>VXBsb2FkIElE.abc-_</UploadId>"
    "</InitiateMultipartUploadResult>"
).encode()


def test_with_client_upload_id() -> None:
    seen: list[str] = []

    def client_id(upstream: str) -> str:
        seen.append(upstream)
        return upstream + "~s3r1~k1~TOKEN"

    rewritten = with_client_upload_id(CREATED, client_id)
    assert seen == ["VXBsb2FkIElE.abc-_"]
    assert rewritten == CREATED.replace(b"abc-_</UploadId>", b"abc-_~s3r1~k1~TOKEN</UploadId>")


def test_with_client_upload_id_rewrites_only_the_first() -> None:
    body = CREATED.replace(b"</InitiateMultipartUploadResult>",
                           b"<UploadId>second</UploadId></InitiateMultipartUploadResult>")
    rewritten = with_client_upload_id(body, lambda upstream: "client")
    assert rewritten.count(b"<UploadId>client</UploadId>") == 1
    assert rewritten.endswith(b"<UploadId>second</UploadId></InitiateMultipartUploadResult>")


# -- ListParts -----------------------------------------------------------------------------


def part(number: int, size: int, etag: str = f"&quot;{MD5}&quot;", extra: str = "") -> str:
    return (f"<Part><PartNumber>{number}</PartNumber>"
            f"<LastModified>2026-01-02T03:04:05.000Z</LastModified>"
            f"<ETag>{etag}</ETag><Size>{size}</Size>{extra}</Part>")


def list_parts(*parts: str, truncated: bool = False, next_marker: int = 2) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<ListPartsResult xmlns="{S3_NS}"><Bucket>bucket</Bucket><Key>key</Key>'
        "<UploadId>upstream-id</UploadId><PartNumberMarker>0</PartNumberMarker>"
        f"<NextPartNumberMarker>{next_marker}</NextPartNumberMarker><MaxParts>1000</MaxParts>"
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
        "<Initiator><ID>id</ID><DisplayName>me</DisplayName></Initiator>"
        "<StorageClass>STANDARD</StorageClass>" + "".join(parts) + "</ListPartsResult>"
    ).encode()


def test_plaintext_parts() -> None:
    body = list_parts(part(1, stored_size(5 * MIB)),
                      part(2, stored_size(7), etag=f'"{OTHER}"'))
    assert plaintext_parts(body) == list_parts(
        part(1, 5 * MIB, etag=f"&quot;{MD5}-0&quot;"), part(2, 7, etag=f'"{OTHER}-0"'))


@pytest.mark.parametrize("size", [STORED_SEGMENT + 1, 10, 0])
def test_plaintext_parts_leaves_a_size_no_sealed_part_has(size: int) -> None:
    assert f"<Size>{size}</Size>".encode() in plaintext_parts(list_parts(part(1, size)))


def test_plaintext_parts_leaves_an_unsealed_parts_etag() -> None:
    body = list_parts(part(1, 10))
    assert plaintext_parts(body) == body


def test_plaintext_parts_leaves_the_rest_byte_for_byte() -> None:
    empty = list_parts()
    assert plaintext_parts(empty) == empty


def test_read_parts_page() -> None:
    body = list_parts(part(1, 100, extra="<ChecksumCRC32>AAAAAA==</ChecksumCRC32>"),
                      part(2, 50))
    assert read_parts_page(body) == PartsPage(((1, 100), (2, 50)), None)


def test_read_parts_page_truncated() -> None:
    page = read_parts_page(list_parts(part(1, 100), part(7, 3), truncated=True, next_marker=7))
    assert page == PartsPage(((1, 100), (7, 3)), "7")


def test_read_parts_page_without_namespace_or_parts() -> None:
    body = b"<ListPartsResult><IsTruncated>false</IsTruncated></ListPartsResult>"
    assert read_parts_page(body) == PartsPage((), None)


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "1">]><ListPartsResult/>',
    list_parts("<Part><PartNumber>1</PartNumber><ETag>x</ETag></Part>"),
    list_parts("<Part><Size>5</Size></Part>"),
    list_parts(part(1, 5)).replace(b"<Size>5</Size>", b"<Size>five</Size>"),
    b"<ListPartsResult><Part>",
])
def test_read_parts_page_refuses(body: bytes) -> None:
    with pytest.raises(S3Error) as refused:
        read_parts_page(body)
    assert refused.value.status == 502 and refused.value.code == "InternalError"


# -- the uploaded parts' shape ---------------------------------------------------------------


def stored_parts(*plaintext_sizes: int) -> list[tuple[int, int]]:
    return [(n, stored_size(size)) for n, size in enumerate(plaintext_sizes, 1)]


@given(st.integers(0, 20 * SEGMENT))
def test_one_part_of_any_size(size: int) -> None:
    check_parts(stored_parts(size))


@given(st.integers(1, 80), st.integers(1, 5), st.data())
def test_equal_parts_of_whole_segments_and_a_last(
    segments: int, count: int, data: st.DataObject
) -> None:
    size = segments * SEGMENT
    last = data.draw(st.integers(1, size))
    check_parts(stored_parts(*[size] * count, last))
    check_parts(list(reversed(stored_parts(*[size] * count, last))))  # in any order


def test_common_client_part_sizes() -> None:
    check_parts(stored_parts(5 * MIB, 5 * MIB, 5 * MIB, 1))
    check_parts(stored_parts(8 * MIB, 8 * MIB))
    check_parts(stored_parts(15 * MIB, 3 * MIB))


@pytest.mark.parametrize("parts", [
    [],
    [(1, stored_size(SEGMENT)), (3, stored_size(5))],  # a gap
    [(2, stored_size(SEGMENT)), (3, stored_size(5))],  # not from 1
    [(1, stored_size(SEGMENT)), (1, stored_size(SEGMENT))],
    stored_parts(2 * SEGMENT, SEGMENT, 5),  # unequal
    stored_parts(SEGMENT, 2 * SEGMENT, 5),
    stored_parts(SEGMENT, SEGMENT, 2 * SEGMENT),  # the last longer
    stored_parts(SEGMENT + 1, SEGMENT + 1, 5),  # not whole segments
    stored_parts(5 * MIB - 1, 5),
    stored_parts(SEGMENT, 0),  # an empty last part
    stored_parts(0, 0),
    [(1, STORED_SEGMENT + 1)],  # no sealed part is that long
    [(1, 27)],
    [(1, stored_size(SEGMENT)), (2, STORED_SEGMENT + 5)],
])
def test_refused_shapes(parts: list[tuple[int, int]]) -> None:
    with pytest.raises(S3Error) as refused:
        check_parts(parts)
    assert refused.value.code == "InvalidPart" and refused.value.status == 400


# -- CompleteMultipartUpload -------------------------------------------------------------------


def complete(*parts: str, namespace: bool = True) -> bytes:
    xmlns = f' xmlns="{S3_NS}"' if namespace else ""
    return f"<CompleteMultipartUpload{xmlns}>{''.join(parts)}</CompleteMultipartUpload>".encode()


def named(number: int, etag: str, extra: str = "") -> str:
    return f"<Part>{extra}<ETag>{etag}</ETag><PartNumber>{number}</PartNumber></Part>"


@pytest.mark.parametrize("namespace", [True, False])
def test_parse_complete(namespace: bool) -> None:
    body = complete(named(1, f"&quot;{MD5}-0&quot;"), named(2, f'"{OTHER}"'),
                    named(3, f"\n  {MD5}-0  \n"), named(4, f'"{OTHER}-2"'), namespace=namespace)
    assert parse_complete(body) == [
        (1, f'"{MD5}"'), (2, f'"{OTHER}"'), (3, MD5), (4, f'"{OTHER}-2"')]


def test_parse_complete_drops_checksums() -> None:
    body = complete(
        named(1, f'"{MD5}-0"', "<ChecksumCRC32>AAAAAA==</ChecksumCRC32>"),
        named(2, f'"{OTHER}-0"', "<ChecksumSHA256>x</ChecksumSHA256><ChecksumCRC32C>y"
                                 "</ChecksumCRC32C>"))
    parts = parse_complete(body)
    assert parts == [(1, f'"{MD5}"'), (2, f'"{OTHER}"')]
    assert b"Checksum" not in complete_body(parts)


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "1">]>' + complete(named(1, "&e;")),
    complete(named(1, "e")).replace(b"<Part>", b'<Part id="1">'),
    complete(named(1, "e"), "<Unknown>x</Unknown>"),
    complete(named(1, "e")).replace(b"<ETag>e</ETag>", b"<ETag>e<b/></ETag>"),
    complete("<Part><PartNumber>1</PartNumber></Part>"),  # no ETag
    complete("<Part><ETag>e</ETag></Part>"),  # no PartNumber
    complete(named(1, "e")).replace(b"<PartNumber>1<", b"<PartNumber>one<"),
    f'<Other xmlns="{S3_NS}">{named(1, "e")}</Other>'.encode(),
    b'<CompleteMultipartUpload xmlns="http://example.com/">' + named(1, "e").encode()
    + b"</CompleteMultipartUpload>",
    named(1, "e").encode(),
    complete(named(1, "e"))[:-5],
])
def test_parse_complete_refuses_malformed(body: bytes) -> None:
    with pytest.raises(S3Error) as refused:
        parse_complete(body)
    assert refused.value.code == "MalformedXML" and refused.value.status == 400


@pytest.mark.parametrize("numbers", [[], [2], [1, 3], [2, 1], [1, 1], [0, 1]])
def test_parse_complete_refuses_other_numbers(numbers: list[int]) -> None:
    with pytest.raises(S3Error) as refused:
        parse_complete(complete(*(named(n, f'"{MD5}-0"') for n in numbers)))
    assert refused.value.code == "InvalidPart" and refused.value.status == 400


def test_complete_body_escapes() -> None:
    body = complete_body([(1, '"a&b<c>"')])
    assert body == (f'<CompleteMultipartUpload xmlns="{S3_NS}"><Part><PartNumber>1</PartNumber>'
                    '<ETag>"a&amp;b&lt;c&gt;"</ETag></Part></CompleteMultipartUpload>').encode()


xml_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF), min_size=1,
                   max_size=40).map(str.strip).filter(bool)


@given(st.lists(xml_text, min_size=1, max_size=20))
def test_complete_body_round_trips(etags: list[str]) -> None:
    parts = [(n, etag) for n, etag in enumerate(etags, 1)]
    assert parse_complete(complete_body(parts)) == [(n, stored(etag)) for n, etag in parts]


# -- CompleteBody ------------------------------------------------------------------------------


def complete_filter() -> CompleteBody:
    return CompleteBody(PlainBody(PayloadChecker(None, None, {})))


def test_complete_body_filter() -> None:
    body = complete(named(1, f'"{MD5}-0"', "<ChecksumCRC32>AAAAAA==</ChecksumCRC32>"),
                    named(2, f'"{OTHER}-0"'))
    held = complete_filter()
    assert [held.feed(body[i:i + 7]) for i in range(0, len(body), 7)] == [b""] * -(-len(body) // 7)
    assert held.finish() == complete_body([(1, f'"{MD5}"'), (2, f'"{OTHER}"')])


def test_complete_body_filter_refuses_a_bad_part_list() -> None:
    held = complete_filter()
    held.feed(complete(named(2, "e")))
    with pytest.raises(S3Error) as refused:
        held.finish()
    assert refused.value.code == "InvalidPart"


def test_complete_body_filter_refuses_a_large_body() -> None:
    held = complete_filter()
    held.feed(b" " * MAX_COMPLETE_BODY)  # just fits
    with pytest.raises(S3Error) as refused:
        held.feed(b" ")
    assert refused.value.code == "EntityTooLarge" and refused.value.status == 400
