"""Tests for s3relay.s3.deletexml: DeleteObjects bodies read strictly, written anew."""

from __future__ import annotations

from xml.sax.saxutils import escape

import botocore.session
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.s3.deletexml import DeleteObject, DeleteRequest, parse_delete
from s3relay.s3.errors import S3Error


def delete_objects_keys(body: bytes, max_keys: int = 1000) -> list[bytes]:
    """The keys a DeleteObjects body names, as the relay checks them."""
    return [o.key_bytes for o in parse_delete(body, max_keys).objects]


# -- DeleteObjects bodies -------------------------------------------------------------------

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def delete_body(*objects: str, ns: bool = True, quiet: str | None = None) -> bytes:
    xmlns = f' xmlns="{S3_NS}"' if ns else ""
    quiet_xml = f"<Quiet>{quiet}</Quiet>" if quiet is not None else ""
    inner = "".join(f"<Object>{o}</Object>" for o in objects)
    declaration = '<?xml version="1.0" encoding="UTF-8"?>\n'
    return f"{declaration}<Delete{xmlns}>{inner}{quiet_xml}</Delete>".encode()


@pytest.mark.parametrize("ns", [True, False], ids=["namespace", "no-namespace"])
def test_delete_objects_keys(ns: bool) -> None:
    body = delete_body(
        "<Key>a/b.txt</Key>",
        "<Key>c</Key><VersionId>3HL4kqtJlcpXroDTDmJ</VersionId>",
        "<VersionId>v</VersionId><Key>d</Key>",
        ns=ns,
        quiet="true",
    )
    assert delete_objects_keys(body) == [b"a/b.txt", b"c", b"d"]


def test_delete_objects_keys_pretty_printed_with_extras() -> None:
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<Delete xmlns="{S3_NS}">
  <Quiet>false</Quiet>
  <Object>
    <Key>  spaced  </Key>
    <ETag>"abc"</ETag>
    <LastModifiedTime>2024-01-01T00:00:00Z</LastModifiedTime>
    <Size>12</Size>
  </Object>
</Delete>
""".encode()
    assert delete_objects_keys(body) == [b"  spaced  "]


def test_delete_objects_keys_unicode_and_escapes() -> None:
    body = delete_body(
        "<Key>café/😀</Key>",
        "<Key>a &amp; b &lt;c&gt; &quot;&apos;</Key>",
        "<Key>&#x20AC;&#8364;</Key>",
        "<Key><![CDATA[<raw> & ]]></Key>",
        "<Key>a+b %2F ~</Key>",
    )
    assert delete_objects_keys(body) == [
        "café/😀".encode(), b"a & b <c> \"'", "€€".encode(), b"<raw> & ", b"a+b %2F ~",
    ]


def test_delete_objects_keys_other_encodings() -> None:
    body = "<Delete><Object><Key>é€</Key></Object></Delete>"
    utf16 = '<?xml version="1.0" encoding="UTF-16"?>' + body
    assert delete_objects_keys(utf16.encode("utf-16")) == ["é€".encode()]
    latin = '<?xml version="1.0" encoding="ISO-8859-1"?>' + body.replace("€", "")
    assert delete_objects_keys(latin.encode("latin-1")) == ["é".encode()]


def test_delete_objects_keys_as_botocore_sends_them() -> None:
    model = botocore.session.get_session().get_service_model("s3")
    serializer = botocore.serialize.create_serializer("rest-xml", include_validation=False)
    keys = ["a", "dir/café", "x & y", " lead", "😀"]
    params = {"Bucket": "b", "Delete": {"Objects": [{"Key": k} for k in keys], "Quiet": True}}
    sent = serializer.serialize_to_request(params, model.operation_model("DeleteObjects"))
    assert delete_objects_keys(sent["body"]) == [k.encode() for k in keys]


def test_delete_objects_keys_limit() -> None:
    assert len(delete_objects_keys(delete_body(*["<Key>k</Key>"] * 1000))) == 1000
    assert delete_objects_keys(delete_body("<Key>a</Key>", "<Key>b</Key>"), max_keys=2)
    for body, limit in [
        (delete_body(*["<Key>k</Key>"] * 1001), 1000),
        (delete_body("<Key>a</Key>", "<Key>b</Key>", "<Key>c</Key>"), 2),
    ]:
        malformed(body, limit)


ENTITY_ATTACKS = [
    # billion laughs
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<Delete><Object><Key>&lol3;</Key></Object></Delete>",
    # external entity
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b"<Delete><Object><Key>&xxe;</Key></Object></Delete>",
    # parameter entity / external DTD
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY % p SYSTEM "http://example.invalid/x.dtd">%p;]>'
    b"<Delete><Object><Key>k</Key></Object></Delete>",
    b'<?xml version="1.0"?><!DOCTYPE Delete SYSTEM "http://example.invalid/x.dtd">'
    b"<Delete><Object><Key>k</Key></Object></Delete>",
    # even a harmless doctype
    b"<!DOCTYPE Delete><Delete><Object><Key>k</Key></Object></Delete>",
    # an entity nobody declared
    b"<Delete><Object><Key>&nbsp;</Key></Object></Delete>",
    # a doctype hidden by another encoding
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE d [<!ENTITY e "x">]>'
    "<Delete><Object><Key>&e;</Key></Object></Delete>".encode("utf-16"),
]


def malformed(body: bytes, max_keys: int = 1000) -> None:
    with pytest.raises(S3Error) as info:
        delete_objects_keys(body, max_keys)
    assert (info.value.code, info.value.status) == ("MalformedXML", 400)
    assert info.value.message.startswith("The XML you provided was not well-formed")


@pytest.mark.parametrize("body", ENTITY_ATTACKS)
def test_delete_objects_keys_refuses_entities(body: bytes) -> None:
    malformed(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"\x00\xff\xfe",
        b"<Delete>",
        b"<Delete><Object><Key>k</Key></Object>",
        b"<Delete></Delete>",  # no objects
        delete_body(quiet="true"),
        b"<Remove><Object><Key>k</Key></Object></Remove>",
        b'<Delete xmlns="http://example.com/"><Object><Key>k</Key></Object></Delete>',
        b'<x:Delete xmlns:x="http://example.com/"><x:Object><x:Key>k</x:Key></x:Object></x:Delete>',
        delete_body("<VersionId>v</VersionId>"),  # no Key
        delete_body("<Key>a</Key><Key>b</Key>"),
        delete_body("<Key></Key>"),
        delete_body("<Key/>"),
        delete_body("<Key>a<b/></Key>"),
        delete_body("<Key>a</Key><Owner>me</Owner>"),
        delete_body("<Key>a</Key>", quiet="maybe"),
        delete_body("<Key>a</Key>", quiet="true").replace(
            b"</Delete>", b"<Quiet>true</Quiet></Delete>"
        ),
        delete_body("text<Key>a</Key>"),
        delete_body("<Key>a</Key>").replace(b"<Object>", b"stray<Object>"),
        b"<Delete><Key>k</Key></Delete>",
        b"<Delete><Object><Object><Key>k</Key></Object></Object></Delete>",
        b"<Delete><Object><Key>k</Key></Object></Delete><Delete/>",
        b"<Delete><Object><Key>\x01</Key></Object></Delete>",
        b"<Delete><Object><Key>&#0;</Key></Object></Delete>",
        b'<?xml version="1.0" encoding="no-such-codec"?><Delete><Object><Key>k</Key></Object>'
        b"</Delete>",
        b"<Delete><Object><Key>\xff\xfe</Key></Object></Delete>",  # not UTF-8
    ],
)
def test_delete_objects_keys_malformed(body: bytes) -> None:
    malformed(body)


_XML_TEXT = st.text(
    # what XML 1.0 can carry; a CR would be normalised to LF
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\ufffe\uffff")
    .filter(lambda c: c in "\t\n" or ord(c) >= 0x20),
    min_size=1,
    max_size=20,
)


@given(st.lists(_XML_TEXT, min_size=1, max_size=20), st.booleans())
def test_delete_objects_keys_round_trip(keys: list[str], ns: bool) -> None:
    body = delete_body(*[f"<Key>{escape(k)}</Key>" for k in keys], ns=ns)
    assert delete_objects_keys(body) == [k.encode("utf-8") for k in keys]


_XML_PIECES = st.sampled_from(
    ["<Delete>", "</Delete>", "<Object>", "</Object>", "<Key>", "</Key>", "<Quiet>", "</Quiet>",
     "<VersionId>", "</VersionId>", "k", "&amp;", "&e;", "<!DOCTYPE d>", "<?xml version='1.0'?>",
     f'<Delete xmlns="{S3_NS}">', "<![CDATA[x]]>", "<!-- c -->", " ", "true"]
)


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=200), st.lists(_XML_PIECES, max_size=30).map("".join)
                 .map(str.encode)))
def test_delete_objects_keys_only_s3_errors(body: bytes) -> None:
    try:
        keys = delete_objects_keys(body, max_keys=3)
    except S3Error as e:
        assert e.code == "MalformedXML"
    else:
        assert 1 <= len(keys) <= 3 and all(isinstance(k, bytes) and k for k in keys)


# -- what the check saw is what the upstream gets -------------------------------------------


@pytest.mark.parametrize(
    "inner",
    [
        "<Key>backup/<Size/>projects/alpha/zzz</Key>",  # text around a field element
        "<Key>backup/<VersionId>v</VersionId>projects/alpha/zzz</Key>",
        "<Key>a</Key><VersionId>v<Size>1</Size></VersionId>",
        "<Key>a</Key><ETag>e<Key>b</Key></ETag>",
        '<Key id="1">a</Key>',
        "<Key>a</Key><Key>b</Key>",
        "<Key>a</Key><VersionId>1</VersionId><VersionId>2</VersionId>",
    ],
)
def test_elements_inside_values_or_repeated_are_malformed(inner: str) -> None:
    with pytest.raises(S3Error) as info:
        parse_delete(delete_body(inner))
    assert (info.value.code, info.value.status) == ("MalformedXML", 400)


def test_fields_and_quiet_are_read_and_written_in_schema_order() -> None:
    body = delete_body(
        "<Size>3</Size><Key>a</Key><VersionId>v1</VersionId>", "<Key>b</Key>", quiet="True"
    )
    request = parse_delete(body)
    assert request == DeleteRequest(
        (DeleteObject("a", (("VersionId", "v1"), ("Size", "3"))), DeleteObject("b")), True
    )
    assert request.to_xml() == (
        f'<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="{S3_NS}">'
        "<Object><Key>a</Key><VersionId>v1</VersionId><Size>3</Size></Object>"
        "<Object><Key>b</Key></Object><Quiet>true</Quiet></Delete>"
    ).encode()


_KEYS = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff")
    .filter(lambda c: c in "\t\n\r" or ord(c) >= 0x20),
    min_size=1, max_size=30,
)


@given(st.lists(st.tuples(_KEYS, st.one_of(st.none(), _KEYS)), min_size=1, max_size=10),
       st.one_of(st.none(), st.booleans()))
def test_written_body_reads_back_as_the_same_request(
    objects: list[tuple[str, str | None]], quiet: bool | None
) -> None:
    request = DeleteRequest(
        tuple(DeleteObject(k, (("VersionId", v),) if v else ()) for k, v in objects), quiet
    )
    assert parse_delete(request.to_xml()) == request


def test_a_carriage_return_in_a_key_survives_the_round_trip() -> None:
    request = parse_delete(delete_body("<Key>a&#13;b\r\nc</Key>"))
    assert request.objects[0].key == "a\rb\nc"  # a literal CR LF is read as LF
    assert parse_delete(request.to_xml()) == request
