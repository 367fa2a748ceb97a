"""Tests for s3relay.s3.sigv4: AWS's published examples, botocore as an oracle, every refusal."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import quote, unquote_to_bytes, urlsplit

import botocore.auth
import botocore.config
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from s3relay.s3 import sigv4
from s3relay.s3.errors import S3Error
from tests.unit.oracle import signing_at as frozen

AK = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AMZ_DATE = "20130524T000000Z"
T0 = datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc)
REGIONS = ("us-east-1",)
HOST = "examplebucket.s3.amazonaws.com"
UTC = datetime.timezone.utc
CREDENTIAL = f"{AK}/20130524/us-east-1/s3/aws4_request"
SIG = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"

Headers = dict[str, list[str]]


@dataclasses.dataclass(frozen=True)
class Req:
    """A request as the relay receives it."""

    method: str
    path: bytes
    query: bytes
    headers: Mapping[str, Sequence[str]]

    def with_headers(self, **changes: str | None) -> Req:
        """A copy with headers (``x_amz_foo`` -> ``x-amz-foo``) set, or removed if None."""
        headers = {name: list(values) for name, values in self.headers.items()}
        for name, value in changes.items():
            name = name.replace("_", "-")
            headers.pop(name, None)
            if value is not None:
                headers[name] = [value]
        return dataclasses.replace(self, headers=headers)


def run(
    req: Req,
    now: datetime.datetime = T0,
    secrets: Mapping[str, str] | None = None,
    regions: Sequence[str] = REGIONS,
) -> sigv4.Verified:
    secrets = {AK: SECRET} if secrets is None else secrets
    return sigv4.verify(
        req.method, req.path, req.query, req.headers, now, secrets.get, regions,
        sigv4.SigningKeyCache(),
    )


def refused(
    req: Req,
    code: str,
    status: int,
    now: datetime.datetime = T0,
    secrets: Mapping[str, str] | None = None,
    regions: Sequence[str] = REGIONS,
) -> S3Error:
    """Assert ``req`` is refused with ``code``/``status``; the error must not leak secrets."""
    with pytest.raises(S3Error) as info:
        run(req, now, secrets, regions)
    error = info.value
    assert (error.code, error.status) == (code, status), (error.code, error.reason)
    assert_no_leak(error, req)
    return error


def assert_no_leak(error: S3Error, req: Req) -> None:
    """Neither the secret nor any full signature appears in what the error says."""
    text = f"{error} {error.message} {error.reason}"
    assert SECRET not in text
    for values in req.headers.values():
        for value in values:
            if "Signature=" in value:
                assert value.rsplit("Signature=", 1)[1][:64] not in text
    for _, param in sigv4.query_pairs(req.query):
        if len(param) == 64:
            assert param.decode("latin-1") not in text


def header_signed(
    method: str = "GET",
    path: str = "/bucket/key",
    query: Sequence[tuple[bytes, bytes]] = (),
    headers: Mapping[str, str] | None = None,
    now: datetime.datetime = T0,
    token: str | None = None,
    region: str = "us-east-1",
    access_key: str = AK,
    secret: str = SECRET,
) -> Req:
    """A request signed by sign_headers, the way the relay signs upstream."""
    sent = {"host": "relay.example", "x-amz-content-sha256": sigv4.EMPTY_SHA256}
    sent.update(headers or {})
    added = sigv4.sign_headers(
        method, path, query, sent, access_key, secret, token, region, now,
        sigv4.SigningKeyCache(),
    )
    sent.update(added)
    return Req(method, path.encode(), sigv4.encode_query(query).encode(),
               {name: [value] for name, value in sent.items()})


def _received(request: AWSRequest, host: str) -> Req:
    """What the relay sees of a request botocore signed (its headers, repeats kept)."""
    parts = urlsplit(request.url)
    headers: Headers = {"host": [host]}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    return Req(request.method, parts.path.encode(), parts.query.encode(), headers)


def presigned(
    url: str = f"https://{HOST}/test.txt",
    expires: int = 86400,
    when: datetime.datetime = T0,
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
    secret: str = SECRET,
    region: str = "us-east-1",
) -> Req:
    """A URL presigned by botocore, as the relay receives it."""
    request = AWSRequest("GET", url, headers=dict(headers or {}))
    signer = botocore.auth.S3SigV4QueryAuth(Credentials(AK, secret, token), "s3", region, expires)
    with frozen(when):
        signer.add_auth(request)
    return _received(request, urlsplit(request.url).netloc)


# -- AWS's published examples ----------------------------------------------------

GET_OBJECT = Req(
    "GET",
    b"/test.txt",
    b"",
    {
        "host": [HOST],
        "range": ["bytes=0-9"],
        "x-amz-content-sha256": [sigv4.EMPTY_SHA256],
        "x-amz-date": [AMZ_DATE],
        "authorization": [
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        ],
    },
)


def aws_example(method: str, path: bytes, query: bytes, headers: Mapping[str, str],
                signature: str) -> Req:
    signed = ";".join(sorted(headers))
    auth = (f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request, "
            f"SignedHeaders={signed}, Signature={signature}")
    all_headers = {name: [value] for name, value in headers.items()}
    all_headers["authorization"] = [auth]
    return Req(method, path, query, all_headers)


def test_get_object_example() -> None:
    """The 'GET Object' example, Authorization written s3cmd-style (no spaces)."""
    verified = run(GET_OBJECT)
    assert verified.access_key == AK
    assert verified.amz_date == AMZ_DATE
    assert verified.scope == sigv4.Scope("20130524", "us-east-1", "s3")
    assert verified.payload_hash == sigv4.EMPTY_SHA256
    assert verified.seed_signature == (
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert verified.signing_key == sigv4.SigningKeyCache().key(SECRET, "20130524", "us-east-1")


def test_get_object_example_by_parts() -> None:
    """The example's canonical request, string to sign and signature, step by step."""
    creq = sigv4.canonical_request(
        "GET", sigv4.canonical_uri(b"/test.txt"), sigv4.canonical_query(b""),
        GET_OBJECT.headers, ["host", "range", "x-amz-content-sha256", "x-amz-date"],
        sigv4.EMPTY_SHA256,
    )
    assert creq == (
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
        "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    sts = sigv4.string_to_sign(AMZ_DATE, "20130524/us-east-1/s3/aws4_request", creq)
    assert sts == (
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    )
    key = sigv4.SigningKeyCache().key(SECRET, "20130524", "us-east-1")
    assert sigv4.signature(key, sts) == (
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_put_object_example() -> None:
    """'PUT Object': a '$' in the key, a Date header beside x-amz-date, a body hash."""
    body_hash = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    assert body_hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    req = aws_example("PUT", b"/test$file.text", b"", {
        "date": "Fri, 24 May 2013 00:00:00 GMT",
        "host": HOST,
        "x-amz-content-sha256": body_hash,
        "x-amz-date": AMZ_DATE,
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
    }, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    assert run(req).payload_hash == body_hash
    assert sigv4.canonical_uri(b"/test$file.text") == "/test%24file.text"


@pytest.mark.parametrize(
    ("query", "signature"),
    [
        (b"lifecycle", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        (b"max-keys=2&prefix=J",
         "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
    ],
)
def test_bucket_examples(query: bytes, signature: str) -> None:
    """'GET Bucket Lifecycle' (?lifecycle) and 'Get Bucket (List Objects)'."""
    req = aws_example("GET", b"/", query, {
        "host": HOST, "x-amz-content-sha256": sigv4.EMPTY_SHA256, "x-amz-date": AMZ_DATE,
    }, signature)
    assert run(req).seed_signature == signature


PRESIGNED_EXAMPLE = Req(
    "GET",
    b"/test.txt",
    b"X-Amz-Algorithm=AWS4-HMAC-SHA256"
    b"&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    b"&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    b"&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
    {"host": [HOST]},
)


def test_presigned_example() -> None:
    verified = run(PRESIGNED_EXAMPLE, now=T0 + datetime.timedelta(hours=23))
    assert verified.payload_hash == sigv4.UNSIGNED_PAYLOAD
    assert verified.seed_signature.startswith("aeeed9bb")


def test_presigned_example_matches_botocore() -> None:
    """botocore presigns the same URL byte for byte: the oracle is calibrated."""
    assert presigned() == PRESIGNED_EXAMPLE


CHUNKED_HEADERS = {
    "content-encoding": "aws-chunked",
    "content-length": "66824",
    "host": "s3.amazonaws.com",
    "x-amz-content-sha256": sigv4.STREAMING_SIGNED,
    "x-amz-date": AMZ_DATE,
    "x-amz-decoded-content-length": "66560",
    "x-amz-storage-class": "REDUCED_REDUNDANCY",
}
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"


def test_chunked_upload_example() -> None:
    """The seed signature of the aws-chunked example, then its chunk signatures."""
    req = aws_example("PUT", b"/examplebucket/chunkObject.txt", b"", CHUNKED_HEADERS, SEED)
    verified = run(req)
    assert verified.payload_hash == sigv4.STREAMING_SIGNED
    previous = verified.seed_signature
    expected = [
        (b"a" * 65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
        (b"a" * 1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
        (b"", "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
    ]
    for chunk, chunk_signature in expected:
        sts = sigv4.chunk_string_to_sign(
            verified.amz_date, verified.scope, previous, hashlib.sha256(chunk).hexdigest()
        )
        previous = sigv4.signature(verified.signing_key, sts)
        assert previous == chunk_signature


def test_trailer_string_to_sign() -> None:
    scope = sigv4.Scope("20130524", "us-east-1", "s3")
    trailer_hash = hashlib.sha256(b"x-amz-checksum-crc32c:sOO8/Q==\n").hexdigest()
    assert sigv4.trailer_string_to_sign(AMZ_DATE, scope, "ab" * 32, trailer_hash) == (
        f"AWS4-HMAC-SHA256-TRAILER\n{AMZ_DATE}\n20130524/us-east-1/s3/aws4_request\n"
        f"{'ab' * 32}\n{trailer_hash}"
    )


def test_signing_key_example() -> None:
    """The derived-key example of the general SigV4 documentation (service iam)."""
    key = sigv4.SigningKeyCache().key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam"
    )
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


# -- canonical forms -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (b"", "/"),
        (b"/", "/"),
        (b"/a b", "/a%20b"),
        (b"/a%20b", "/a%20b"),
        (b"/a+b", "/a%2Bb"),
        (b"/a%2Fb", "/a/b"),  # a client signing "%2F" as sent passes by the verbatim path
        (b"/a%2fb", "/a/b"),
        (b"/%7E~", "/~~"),
        (b"//a/./../b/", "//a/./../b/"),
        ("/€".encode(), "/%E2%82%AC"),
        (b"/%E2%82%AC", "/%E2%82%AC"),
        (b"/%25", "/%25"),
        (b"/a=b&c", "/a%3Db%26c"),
    ],
)
def test_canonical_uri(raw: bytes, canonical: str) -> None:
    assert sigv4.canonical_uri(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (b"", ""),
        (b"acl", "acl="),
        (b"b=2&a=1&a=0", "a=0&a=1&b=2"),
        (b"a=x+y", "a=x%2By"),
        (b"a=x y", "a=x%20y"),
        (b"&&a=1&", "a=1"),
        (b"a=b=c", "a=b%3Dc"),
        (b"prefix=%7e/%2F", "prefix=~%2F%2F"),
        (b"a.=1&a%2F=2", "a%2F=2&a.=1"),  # sorted by encoded name
        (b"=v", "=v"),
    ],
)
def test_canonical_query(raw: bytes, canonical: str) -> None:
    assert sigv4.canonical_query(raw) == canonical


def test_canonical_query_exclude() -> None:
    raw = b"X-Amz-Signature=abc&X-Amz-Date=1&x-amz-signature=kept"
    assert sigv4.canonical_query(raw, frozenset({"X-Amz-Signature"})) == (
        "X-Amz-Date=1&x-amz-signature=kept"
    )


def test_query_pairs_and_encode_query() -> None:
    pairs = sigv4.query_pairs(b"z=1&acl&a=%20+&&k%3D=v%26")
    assert pairs == [(b"z", b"1"), (b"acl", b""), (b"a", b" +"), (b"k=", b"v&")]
    assert sigv4.encode_query(pairs) == "a=%20%2B&acl=&k%3D=v%26&z=1"


def test_canonical_headers() -> None:
    headers = {"x-amz-meta-a": ["  one   two\t three  ", "four"], "host": ["h"]}
    assert sigv4.canonical_headers(headers, ["host", "x-amz-meta-a", "x-amz-meta-b"]) == (
        "host:h\nx-amz-meta-a:one two three,four\nx-amz-meta-b:\n"
    )


_BINARY = st.binary(max_size=40)
_QUERYISH = st.lists(
    st.one_of(_BINARY, st.sampled_from([b"=", b"&", b"%", b"%2", b"%zz", b"+", b"%2F", b"~"])),
    max_size=12,
).map(b"".join)


@given(_BINARY)
def test_uri_encode_round_trips(value: bytes) -> None:
    encoded = sigv4.uri_encode(value, "/")
    assert unquote_to_bytes(encoded) == value
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~/%")
    assert set(encoded) <= allowed
    assert encoded.replace("/", "%2F") == sigv4.uri_encode(value, "")
    # Only %XX escapes, uppercase hex.
    for piece in encoded.split("%")[1:]:
        assert len(piece) >= 2 and piece[:2] == piece[:2].upper()


@given(_QUERYISH)
def test_canonical_forms_are_fixed_points(raw: bytes) -> None:
    """Canonical output, read back as raw input, canonicalizes to itself."""
    uri = sigv4.canonical_uri(raw)
    assert sigv4.canonical_uri(uri.encode()) == uri
    query = sigv4.canonical_query(raw)
    assert sigv4.canonical_query(query.encode()) == query
    assert sigv4.encode_query(sigv4.query_pairs(raw)) == query


_AUTH_PIECES = st.sampled_from([
    "AWS4-HMAC-SHA256 ", "AWS ", "Credential=", "SignedHeaders=", "Signature=", ",", ", ", "/",
    ";", "=", "aws4_request", "20130524", "host", SIG,
])


@given(st.one_of(st.text(), st.lists(st.one_of(_AUTH_PIECES, st.text(max_size=3))).map("".join)),
       st.text())
def test_parse_authorization_only_raises_s3error(value: str, amz_date: str) -> None:
    try:
        parsed = sigv4.parse_authorization(value, amz_date)
    except S3Error:
        return
    assert parsed.amz_date == amz_date and not parsed.presigned


_PRESIGN_NAMES = st.sampled_from([
    "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
    "X-Amz-SignedHeaders", "X-Amz-Signature", "AWSAccessKeyId", "Signature",
])


@given(st.dictionaries(st.one_of(_PRESIGN_NAMES, st.text(max_size=5)), st.text(max_size=80)))
def test_parse_presigned_only_raises_s3error(params: dict[str, str]) -> None:
    try:
        parsed = sigv4.parse_presigned(params)
    except S3Error:
        return
    assert parsed.presigned and parsed.expires is not None


@given(_QUERYISH, _QUERYISH)
def test_canonical_functions_only_raise_s3error(raw_path: bytes, raw_query: bytes) -> None:
    sigv4.canonical_uri(raw_path)
    sigv4.canonical_query(raw_query, frozenset({"X-Amz-Signature"}))


_HEADER_NAMES = st.sampled_from([
    "authorization", "x-amz-date", "date", "x-amz-content-sha256", "host", "range",
    "x-amz-meta-a",
])
_HEADER_TEXT = st.one_of(
    st.text(max_size=90),
    st.sampled_from([AMZ_DATE, "20130524T001600Z", sigv4.EMPTY_SHA256, "UNSIGNED-PAYLOAD",
                     "Fri, 24 May 2013 00:00:00 GMT", "Mon, 01 Jan 0001 00:00:00 +0100",
                     *GET_OBJECT.headers["authorization"]]),
)


@settings(max_examples=300)
@given(
    base=st.sampled_from([GET_OBJECT, PRESIGNED_EXAMPLE, Req("GET", b"", b"", {})]),
    method=st.one_of(st.sampled_from(["GET", "PUT"]), st.text(max_size=6)),
    raw_path=st.one_of(st.none(), _QUERYISH),
    raw_query=st.one_of(st.none(), _QUERYISH, st.just(PRESIGNED_EXAMPLE.query)),
    overrides=st.dictionaries(st.one_of(_HEADER_NAMES, st.text(max_size=5)),
                              st.lists(_HEADER_TEXT, max_size=2), max_size=3),
    now=st.one_of(
        st.integers(-2000, 100000).map(lambda seconds: T0 + datetime.timedelta(seconds=seconds)),
        st.datetimes(timezones=st.just(UTC)),
    ),
)
def test_verify_only_raises_s3error(
    base: Req, method: str, raw_path: bytes | None, raw_query: bytes | None,
    overrides: Headers, now: datetime.datetime,
) -> None:
    """Near-valid and garbage requests alike: verify() answers or raises S3Error, nothing else."""
    req = Req(method, base.path if raw_path is None else raw_path,
              base.query if raw_query is None else raw_query, {**base.headers, **overrides})
    try:
        verified = run(req, now=now)
    except S3Error as error:
        assert_no_leak(error, req)
        event(error.code)
    else:
        assert verified.access_key == AK
        event("accepted")


# -- parsing ---------------------------------------------------------------------

@pytest.mark.parametrize("separator", [",", ", ", " , ", ",  "])
def test_parse_authorization_separators(separator: str) -> None:
    value = separator.join([
        f"AWS4-HMAC-SHA256 Credential={CREDENTIAL}", "SignedHeaders=host;x-amz-date",
        f"Signature={SIG}",
    ])
    parsed = sigv4.parse_authorization(value, AMZ_DATE)
    assert parsed == sigv4.ParsedAuth(
        AK, sigv4.Scope("20130524", "us-east-1", "s3"), ("host", "x-amz-date"), SIG,
        AMZ_DATE, False, None,
    )


def test_parse_authorization_sigv2() -> None:
    with pytest.raises(S3Error) as info:
        sigv4.parse_authorization("AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=")
    assert (info.value.code, info.value.status) == ("InvalidRequest", 400)
    assert "Signature Version 4" in info.value.message


@pytest.mark.parametrize(
    "value",
    [
        "",
        "AWS4-HMAC-SHA256",
        f"AWS4-ECDSA-P256-SHA256 Credential={CREDENTIAL}, SignedHeaders=host, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential={CREDENTIAL}, SignedHeaders=host",
        f"AWS4-HMAC-SHA256 Credential={CREDENTIAL}, Signature={SIG}",
        f"AWS4-HMAC-SHA256 SignedHeaders=host, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential={CREDENTIAL}, SignedHeaders=host, Signature={SIG[:-1]}",
        f"AWS4-HMAC-SHA256 Credential={CREDENTIAL}, SignedHeaders=host, Signature={SIG[:-1]}g",
        f"AWS4-HMAC-SHA256 Credential={CREDENTIAL}, SignedHeaders=host, Signature={SIG}0",
        f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3, SignedHeaders=host, "
        f"Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws5_request, "
        f"SignedHeaders=host, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential=/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential={CREDENTIAL}, SignedHeaders=host;;x-amz-date, "
        f"Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential={CREDENTIAL}, SignedHeaders=, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential={CREDENTIAL}, Credential={CREDENTIAL}, "
        f"SignedHeaders=host, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential={CREDENTIAL}, SignedHeaders=host, Signature={SIG}, X=1",
        f"AWS4-HMAC-SHA256 Credential={CREDENTIAL} SignedHeaders=host Signature={SIG}",
    ],
)
def test_parse_authorization_malformed(value: str) -> None:
    with pytest.raises(S3Error) as info:
        sigv4.parse_authorization(value, AMZ_DATE)
    assert (info.value.code, info.value.status) == ("AuthorizationHeaderMalformed", 400)
    assert SIG not in info.value.reason


PRESIGN_PARAMS = {
    "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
    "X-Amz-Credential": CREDENTIAL,
    "X-Amz-Date": AMZ_DATE,
    "X-Amz-Expires": "86400",
    "X-Amz-SignedHeaders": "host",
    "X-Amz-Signature": SIG,
}


def test_parse_presigned() -> None:
    parsed = sigv4.parse_presigned(PRESIGN_PARAMS)
    assert parsed == sigv4.ParsedAuth(
        AK, sigv4.Scope("20130524", "us-east-1", "s3"), ("host",), SIG, AMZ_DATE, True, 86400
    )


@pytest.mark.parametrize("expires", ["1", "604800"])
def test_parse_presigned_expires_bounds(expires: str) -> None:
    assert sigv4.parse_presigned({**PRESIGN_PARAMS, "X-Amz-Expires": expires}).expires == int(
        expires
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"X-Amz-Expires": "604801"},
        {"X-Amz-Expires": "99999999999999999999999"},
        {"X-Amz-Expires": "-1"},
        {"X-Amz-Expires": "1e3"},
        {"X-Amz-Expires": "٣"},
        {"X-Amz-Expires": ""},
        {"X-Amz-Algorithm": "AWS4-HMAC-SHA512"},
        {"X-Amz-Credential": "AKID/20130524/us-east-1"},
        {"X-Amz-Signature": "zz"},
        {"X-Amz-SignedHeaders": ""},
    ]
    + [{name: None} for name in PRESIGN_PARAMS],
)
def test_parse_presigned_errors(changes: dict[str, str | None]) -> None:
    params = {**PRESIGN_PARAMS, **changes}
    clean = {name: value for name, value in params.items() if value is not None}
    with pytest.raises(S3Error) as info:
        sigv4.parse_presigned(clean)
    assert (info.value.code, info.value.status) == ("AuthorizationQueryParametersError", 400)


def test_parse_presigned_sigv2() -> None:
    params = {"AWSAccessKeyId": AK, "Signature": "abc=", "Expires": "1141889120"}
    with pytest.raises(S3Error) as info:
        sigv4.parse_presigned(params)
    assert (info.value.code, info.value.status) == ("InvalidRequest", 400)


# -- verify: refusals ------------------------------------------------------------


def test_anonymous() -> None:
    error = refused(Req("GET", b"/b/k", b"", {"host": ["h"]}), "AccessDenied", 403)
    assert "Anonymous" in error.message


def test_header_and_query_auth() -> None:
    req = dataclasses.replace(GET_OBJECT, query=PRESIGNED_EXAMPLE.query)
    refused(req, "InvalidArgument", 400)


def test_two_authorization_headers() -> None:
    auth = list(GET_OBJECT.headers["authorization"])
    req = dataclasses.replace(GET_OBJECT, headers={**GET_OBJECT.headers, "authorization": auth * 2})
    refused(req, "InvalidArgument", 400)


def test_sigv2_header() -> None:
    req = GET_OBJECT.with_headers(authorization=f"AWS {AK}:frJIUN8DYpKDtOLCwo//yllqDzg=")
    refused(req, "InvalidRequest", 400)


def test_sigv2_query() -> None:
    req = Req("GET", b"/b/k", b"AWSAccessKeyId=AK&Expires=1141889120&Signature=vjbyPx", {
        "host": ["h"]})
    refused(req, "InvalidRequest", 400)


def test_malformed_header_through_verify() -> None:
    req = GET_OBJECT.with_headers(authorization="AWS4-HMAC-SHA256 Credential=x")
    refused(req, "AuthorizationHeaderMalformed", 400)


def test_missing_date() -> None:
    refused(GET_OBJECT.with_headers(x_amz_date=None), "AccessDenied", 403)


@pytest.mark.parametrize("bad", ["2013-05-24T00:00:00Z", "20130524T000000", "20131324T000000Z",
                                 "20130524T250000Z", "00000101T000000Z", "２0130524T000000Z"])
def test_bad_date_header(bad: str) -> None:
    refused(GET_OBJECT.with_headers(x_amz_date=bad), "AccessDenied", 403)


def test_repeated_date_header() -> None:
    req = dataclasses.replace(
        GET_OBJECT, headers={**GET_OBJECT.headers, "x-amz-date": [AMZ_DATE, AMZ_DATE]})
    refused(req, "InvalidArgument", 400)


def test_bad_date_presigned() -> None:
    req = dataclasses.replace(
        PRESIGNED_EXAMPLE, query=PRESIGNED_EXAMPLE.query.replace(b"0524T", b"0524X"))
    refused(req, "AuthorizationQueryParametersError", 400)


def test_missing_content_sha256() -> None:
    error = refused(GET_OBJECT.with_headers(x_amz_content_sha256=None), "InvalidRequest", 400)
    assert "x-amz-content-sha256" in error.message


@pytest.mark.parametrize("bad", ["", "UNSIGNED", sigv4.EMPTY_SHA256.upper(),
                                 sigv4.EMPTY_SHA256[:-1], "STREAMING-AWS4-HMAC-SHA256-EVENTS"])
def test_bad_content_sha256(bad: str) -> None:
    refused(GET_OBJECT.with_headers(x_amz_content_sha256=bad), "InvalidArgument", 400)


def test_bad_content_sha256_presigned() -> None:
    req = presigned(headers={"x-amz-content-sha256": "nope"})
    refused(req, "InvalidArgument", 400, now=T0)


@pytest.mark.parametrize(
    ("credential", "message"),
    [
        (f"{AK}/20130524/us-east-1/ec2/aws4_request", 'incorrect service "ec2"'),
        (f"{AK}/20130525/us-east-1/s3/aws4_request", "Invalid credential date"),
        (f"{AK}/20130524/eu-west-1/s3/aws4_request",
         "the region 'eu-west-1' is wrong; expecting 'us-east-1'"),
    ],
)
def test_bad_scope(credential: str, message: str) -> None:
    auth = GET_OBJECT.headers["authorization"][0].replace(CREDENTIAL, credential)
    error = refused(GET_OBJECT.with_headers(authorization=auth), "AuthorizationHeaderMalformed",
                    400)
    assert message in error.message
    query = PRESIGNED_EXAMPLE.query.replace(
        CREDENTIAL.replace("/", "%2F").encode(), credential.replace("/", "%2F").encode())
    req = dataclasses.replace(PRESIGNED_EXAMPLE, query=query)
    error = refused(req, "AuthorizationQueryParametersError", 400)
    assert message in error.message


def test_region_message_lists_every_region() -> None:
    error = refused(GET_OBJECT, "AuthorizationHeaderMalformed", 400,
                    regions=("us-west-2", "eu-west-1"))
    assert "expecting 'eu-west-1' or 'us-west-2'" in error.message


@pytest.mark.parametrize("seconds", [-900, -1, 0, 1, 900])
def test_clock_skew_accepted(seconds: int) -> None:
    run(GET_OBJECT, now=T0 + datetime.timedelta(seconds=seconds))


@pytest.mark.parametrize("seconds", [-901, 901, 86400 * 365])
def test_clock_skew_refused(seconds: int) -> None:
    error = refused(GET_OBJECT, "RequestTimeTooSkewed", 403,
                    now=T0 + datetime.timedelta(seconds=seconds))
    assert error.message == (
        "The difference between the request time and the current time is too large."
    )


def test_naive_now_is_utc() -> None:
    run(GET_OBJECT, now=T0.replace(tzinfo=None) + datetime.timedelta(seconds=900))
    other_zone = datetime.timezone(datetime.timedelta(hours=5))
    run(GET_OBJECT, now=T0.astimezone(other_zone))


@pytest.mark.parametrize("seconds", [-900, 0, 86400])
def test_presigned_valid_window(seconds: int) -> None:
    run(PRESIGNED_EXAMPLE, now=T0 + datetime.timedelta(seconds=seconds))


def test_presigned_expired() -> None:
    now = T0 + datetime.timedelta(seconds=86401)
    error = refused(PRESIGNED_EXAMPLE, "AccessDenied", 403, now=now)
    assert error.message == "Request has expired"
    # As S3 writes it: how long the URL was valid, until when, and the time now.
    assert error.details == (
        ("X-Amz-Expires", "86400"),
        ("Expires", (T0 + datetime.timedelta(seconds=86400)).strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("ServerTime", now.strftime("%Y-%m-%dT%H:%M:%SZ")),
    )
    assert b"<X-Amz-Expires>86400</X-Amz-Expires><Expires>" in error.to_xml("ID")


def test_zero_expiry_is_well_formed_and_already_expired() -> None:
    assert sigv4.parse_presigned({**PRESIGN_PARAMS, "X-Amz-Expires": "0"}).expires == 0
    query = PRESIGNED_EXAMPLE.query.replace(b"X-Amz-Expires=86400", b"X-Amz-Expires=0")
    assert query != PRESIGNED_EXAMPLE.query
    error = refused(dataclasses.replace(PRESIGNED_EXAMPLE, query=query), "AccessDenied", 403,
                    now=T0)
    assert error.message == "Request has expired"


def test_presigned_not_yet_valid() -> None:
    refused(PRESIGNED_EXAMPLE, "AccessDenied", 403, now=T0 - datetime.timedelta(seconds=901))


def test_host_must_be_signed() -> None:
    auth = GET_OBJECT.headers["authorization"][0].replace("host;", "")
    refused(GET_OBJECT.with_headers(authorization=auth), "AuthorizationHeaderMalformed", 400)
    query = PRESIGNED_EXAMPLE.query.replace(b"SignedHeaders=host", b"SignedHeaders=range")
    refused(dataclasses.replace(PRESIGNED_EXAMPLE, query=query, headers={
        "host": [HOST], "range": ["bytes=0-1"]}), "AuthorizationQueryParametersError", 400)


def test_unsigned_amz_header() -> None:
    error = refused(GET_OBJECT.with_headers(x_amz_meta_extra="1"), "AccessDenied", 403)
    assert error.message == "There were headers present in the request which were not signed"
    assert "x-amz-meta-extra" in error.reason


def test_unsigned_amz_header_presigned() -> None:
    req = PRESIGNED_EXAMPLE.with_headers(x_amz_security_token="tok")
    error = refused(req, "AccessDenied", 403)
    assert "x-amz-security-token" in error.reason


def test_date_and_content_sha256_must_be_signed() -> None:
    for name in ("x-amz-date", "x-amz-content-sha256"):
        auth = GET_OBJECT.headers["authorization"][0].replace(f";{name}", "")
        error = refused(GET_OBJECT.with_headers(authorization=auth), "AccessDenied", 403)
        assert name in error.reason


def test_unsigned_other_headers_are_fine() -> None:
    run(GET_OBJECT.with_headers(user_agent="curl", x_amzn_trace_id="Root=1", content_type="a/b"))


def test_signed_header_absent() -> None:
    error = refused(GET_OBJECT.with_headers(range=None), "SignatureDoesNotMatch", 403)
    assert "range" in error.reason


def test_unknown_access_key() -> None:
    error = refused(GET_OBJECT, "InvalidAccessKeyId", 403, secrets={"OTHER": SECRET})
    assert AK in error.reason


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.with_headers(range="bytes=0-8"),
        lambda r: r.with_headers(host="other.example"),
        lambda r: dataclasses.replace(r, method="HEAD"),
        lambda r: dataclasses.replace(r, path=b"/test.txt2"),
        lambda r: dataclasses.replace(r, path=b"/Test.txt"),
        lambda r: dataclasses.replace(r, query=b"a=1"),
        lambda r: r.with_headers(authorization=r.headers["authorization"][0][:-1] + "0"),
    ],
)
def test_signature_mismatch(change: Callable[[Req], Req]) -> None:
    req = change(GET_OBJECT)
    error = refused(req, "SignatureDoesNotMatch", 403)
    assert "canonical request sha256" in error.reason


def test_wrong_secret() -> None:
    refused(GET_OBJECT, "SignatureDoesNotMatch", 403, secrets={AK: SECRET + "x"})


def test_presigned_mismatch() -> None:
    for req in [
        dataclasses.replace(PRESIGNED_EXAMPLE, path=b"/test.txt2"),
        dataclasses.replace(PRESIGNED_EXAMPLE, query=PRESIGNED_EXAMPLE.query + b"&a=1"),
        PRESIGNED_EXAMPLE.with_headers(host="other"),
    ]:
        refused(req, "SignatureDoesNotMatch", 403)


def test_presigned_signature_not_signed_but_others_are() -> None:
    """Only X-Amz-Signature leaves the canonical query; changing X-Amz-Expires breaks it."""
    query = PRESIGNED_EXAMPLE.query.replace(b"Expires=86400", b"Expires=86401")
    refused(dataclasses.replace(PRESIGNED_EXAMPLE, query=query), "SignatureDoesNotMatch", 403)


# -- verify: accepted variants ---------------------------------------------------


def test_sign_headers_round_trip() -> None:
    query = [(b"prefix", b"a b+c"), (b"list-type", b"2"), (b"acl", b"")]
    req = header_signed(
        "PUT", "/bucket/a%20key%2Bwith%2Fslash", query,
        {"x-amz-meta-note": "  spaced   out ", "content-type": "text/plain"},
        token="session/token+=",
    )
    assert req.headers["x-amz-security-token"] == ["session/token+="]
    auth = req.headers["authorization"][0]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request, ")
    assert ("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-note;"
            "x-amz-security-token, ") in auth
    verified = run(req)
    assert verified.payload_hash == sigv4.EMPTY_SHA256
    assert verified.seed_signature == auth[-64:]
    refused(req.with_headers(x_amz_security_token="other"), "SignatureDoesNotMatch", 403)


def test_sign_headers_without_token() -> None:
    headers = {"host": "h", "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
    added = sigv4.sign_headers("GET", "/", [], headers, AK, SECRET, None, "us-east-1", T0,
                               sigv4.SigningKeyCache())
    assert set(added) == {"x-amz-date", "authorization"}
    assert added["x-amz-date"] == AMZ_DATE


def test_sign_headers_ignores_a_stale_authorization() -> None:
    """An Authorization header passed in is replaced, never signed."""
    headers = {"host": "h", "x-amz-content-sha256": sigv4.EMPTY_SHA256,
               "authorization": "AWS4-HMAC-SHA256 stale"}
    added = sigv4.sign_headers("GET", "/b/k", [], headers, AK, SECRET, None, "us-east-1", T0,
                               sigv4.SigningKeyCache())
    assert "authorization;" not in added["authorization"]
    sent = {**headers, **added}
    run(Req("GET", b"/b/k", b"", {name: [value] for name, value in sent.items()}))


def test_sign_headers_reproduces_aws_example() -> None:
    """sign_headers over the 'GET Object' headers gives AWS's published signature."""
    headers = {"host": HOST, "range": "bytes=0-9", "x-amz-content-sha256": sigv4.EMPTY_SHA256}
    added = sigv4.sign_headers("GET", "/test.txt", [], headers, AK, SECRET, None, "us-east-1",
                               T0, sigv4.SigningKeyCache())
    assert added["authorization"].endswith(GET_OBJECT.headers["authorization"][0][-64:])


def test_sign_headers_needs_host_and_payload_hash() -> None:
    for headers in ({"host": "h"}, {"x-amz-content-sha256": sigv4.EMPTY_SHA256}):
        with pytest.raises(ValueError):
            sigv4.sign_headers("GET", "/", [], headers, AK, SECRET, None, "us-east-1", T0,
                               sigv4.SigningKeyCache())


@pytest.mark.parametrize("wire_path", ["/bucket/a%2fb", "/bucket/a+b", "/bucket/a!b$c",
                                       "/bucket/%7Euser"])
def test_path_signed_as_sent_is_accepted(wire_path: str) -> None:
    """Clients that sign the path exactly as they sent it (not S3-canonical) still pass."""
    assert sigv4.canonical_uri(wire_path.encode()) != wire_path
    run(header_signed(path=wire_path))


def test_path_fallback_is_not_a_wildcard() -> None:
    req = header_signed(path="/bucket/a%2fb")
    refused(dataclasses.replace(req, path=b"/bucket/a%2fc"), "SignatureDoesNotMatch", 403)


def test_date_header_instead_of_x_amz_date() -> None:
    """A request signed with only a Date header (botocore does this if one is set)."""
    request = AWSRequest("GET", f"https://{HOST}/k", headers={"Date": "x"})
    with frozen(T0 + datetime.timedelta(seconds=30)):
        botocore.auth.S3SigV4Auth(Credentials(AK, SECRET), "s3", "us-east-1").add_auth(request)
    req = _received(request, HOST)
    headers = req.headers
    assert "x-amz-date" not in headers and req.path == b"/k"
    assert run(req).amz_date == "20130524T000030Z"
    refused(req, "RequestTimeTooSkewed", 403, now=T0 + datetime.timedelta(seconds=931))
    auth = headers["authorization"][0].replace("date;", "")
    refused(req.with_headers(authorization=auth), "AccessDenied", 403)
    refused(req.with_headers(date="not a date"), "AccessDenied", 403)


def test_uppercase_signature_hex_accepted() -> None:
    auth = GET_OBJECT.headers["authorization"][0]
    run(GET_OBJECT.with_headers(authorization=auth[:-64] + auth[-64:].upper()))


# -- SigningKeyCache -------------------------------------------------------------


def test_signing_key_cache_reuses_and_is_bounded() -> None:
    cache = sigv4.SigningKeyCache(max_entries=2)
    first = cache.key(SECRET, "20130524", "us-east-1")
    assert cache.key(SECRET, "20130524", "us-east-1") is first
    assert cache.key(SECRET, "20130524", "us-east-1", "s3") is first
    other_region = cache.key(SECRET, "20130524", "eu-west-1")
    assert other_region != first
    cache.key(SECRET, "20130524", "us-east-1")  # most recently used now
    cache.key(SECRET, "20130525", "us-east-1")  # evicts eu-west-1
    assert len(cache) == 2
    assert cache.key(SECRET, "20130524", "us-east-1") is first
    again = cache.key(SECRET, "20130524", "eu-west-1")
    assert again == other_region and again is not other_region
    assert len(cache) == 2
    assert cache.key(SECRET + "x", "20130524", "us-east-1") != first


def test_signing_key_cache_needs_room() -> None:
    with pytest.raises(ValueError):
        sigv4.SigningKeyCache(max_entries=0)


def test_reprs_hide_key_and_signatures() -> None:
    verified = run(GET_OBJECT)
    assert SIG not in repr(verified) and verified.signing_key.hex() not in repr(verified)
    assert str(verified.signing_key) not in repr(verified)
    assert SIG not in repr(sigv4.parse_authorization(GET_OBJECT.headers["authorization"][0]))


# -- botocore as oracle ----------------------------------------------------------

_KEY_CHARS = st.one_of(
    st.sampled_from(list(" +%~=/!$&'()*,;:@?#[]\"<>^`{|}\\.")),
    st.sampled_from(["//", "./", "../", "€", "ü", "日本", "\x00", "\t", "\x7f"]),
    st.characters(blacklist_categories=("Cs",)),  # what UTF-8 encodes
)
_KEYS = st.lists(_KEY_CHARS, min_size=1, max_size=12).map("".join)
#: How a client leaves characters unencoded in the path: botocore's way, or all sub-delims.
_PATH_SAFE = st.sampled_from(["/~", "/~!$&'()*+,;=:@"])
_PARAM_TEXT = st.lists(_KEY_CHARS, max_size=6).map("".join)
_HEADER_VALUES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t  "),
    max_size=20,
)
_EXTRA_HEADER_NAMES = st.one_of(
    st.from_regex(r"x-amz-meta-[a-z0-9]{1,6}", fullmatch=True),
    st.from_regex(r"x-custom-[a-z]{1,4}", fullmatch=True),
    st.sampled_from(["content-type", "range", "if-match", "cache-control"]),
)
_SECRETS = st.text(min_size=1, max_size=40)
_WHEN = st.datetimes(
    min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2090, 1, 1),
    timezones=st.just(UTC),
).map(lambda when: when.replace(microsecond=0))
_REGIONS = st.sampled_from(["us-east-1", "eu-west-3", "ap-southeast-2", "local"])
_TOKENS = st.one_of(st.none(), st.text(alphabet="abcXYZ019+/=", min_size=1, max_size=30))


def _query_string(params: list[tuple[str, str]], bare: list[bool]) -> str:
    """The query as an SDK sends it: canonically encoded, ``name`` alone when asked."""
    pieces = []
    for (name, value), alone in zip(params, bare):
        piece = quote(name, safe="-_.~")
        if value or not (alone and name):
            piece += "=" + quote(value, safe="-_.~")
        pieces.append(piece)
    return "&".join(pieces)


def _mutations(req: Req) -> list[Req]:
    """The request with its path, query, method or host changed."""
    other_query = req.query + b"&zz=1" if req.query else b"zz=1"
    return [
        dataclasses.replace(req, path=req.path + b"x"),
        dataclasses.replace(req, query=other_query),
        dataclasses.replace(req, method="PATCH"),
        req.with_headers(host="evil.example"),
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=_KEYS,
    path_safe=_PATH_SAFE,
    params=st.lists(st.tuples(_PARAM_TEXT, _PARAM_TEXT), max_size=4),
    bare=st.lists(st.booleans(), min_size=4, max_size=4),
    extra=st.dictionaries(_EXTRA_HEADER_NAMES, _HEADER_VALUES, max_size=4),
    repeated=st.lists(_HEADER_VALUES, max_size=2),
    payload=st.sampled_from(["sha256", "unsigned", "trailer"]),
    body=st.binary(max_size=50),
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]),
    secret=_SECRETS,
    token=_TOKENS,
    region=_REGIONS,
    when=_WHEN,
    skew=st.integers(-sigv4.MAX_SKEW_SECONDS, sigv4.MAX_SKEW_SECONDS),
)
def test_botocore_header_signatures_verify(
    key: str, path_safe: str, params: list[tuple[str, str]], bare: list[bool],
    extra: dict[str, str], repeated: list[str], payload: str, body: bytes, method: str,
    secret: str, token: str | None, region: str, when: datetime.datetime, skew: int,
) -> None:
    """Whatever botocore signs, verify() accepts; any change to it is refused."""
    url = f"https://s3.example.com/bucket/{quote(key, safe=path_safe)}"
    query = _query_string(params, bare)
    request = AWSRequest(method, url + ("?" + query if query else ""), data=body)
    for name, value in extra.items():
        request.headers[name] = value
    for value in repeated:
        request.headers["x-amz-meta-repeated"] = value  # HTTPHeaders appends: a repeat
    if payload == "unsigned":
        request.context["client_config"] = botocore.config.Config(
            s3={"payload_signing_enabled": False})
    elif payload == "trailer":
        request.context["checksum"] = {
            "request_algorithm": {"in": "trailer", "name": "x-amz-checksum-crc32"}}
    with frozen(when):
        botocore.auth.S3SigV4Auth(Credentials(AK, secret, token), "s3", region).add_auth(request)
    req = _received(request, "s3.example.com")
    secrets = {AK: secret}
    now = when + datetime.timedelta(seconds=skew)

    verified = run(req, now=now, secrets=secrets, regions=[region])
    expected_payload = {
        "sha256": hashlib.sha256(body).hexdigest(),
        "unsigned": sigv4.UNSIGNED_PAYLOAD,
        "trailer": sigv4.STREAMING_UNSIGNED_TRAILER,
    }[payload]
    assert verified.payload_hash == expected_payload
    assert verified.amz_date == when.strftime("%Y%m%dT%H%M%SZ")
    assert verified.seed_signature == req.headers["authorization"][0][-64:]

    for changed in _mutations(req):
        refused(changed, "SignatureDoesNotMatch", 403, now=now, secrets=secrets, regions=[region])
    refused(req, "SignatureDoesNotMatch", 403, now=now, secrets={AK: secret + "x"},
            regions=[region])
    refused(req.with_headers(x_amz_meta_unsigned="1"), "AccessDenied", 403, now=now,
            secrets=secrets, regions=[region])
    if extra:
        name = sorted(extra)[0]
        changed_value = extra[name].strip() + "!"
        refused(req.with_headers(**{name.replace("-", "_"): changed_value}),
                "SignatureDoesNotMatch", 403, now=now, secrets=secrets, regions=[region])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=_KEYS,
    path_safe=_PATH_SAFE,
    params=st.dictionaries(
        _PARAM_TEXT.filter(lambda name: bool(name) and not name.lower().startswith("x-amz-")),
        _PARAM_TEXT, max_size=3),
    extra=st.dictionaries(_EXTRA_HEADER_NAMES, _HEADER_VALUES, max_size=3),
    secret=_SECRETS,
    token=_TOKENS,
    region=_REGIONS,
    when=_WHEN,
    expires=st.integers(1, sigv4.MAX_PRESIGN_EXPIRES),
    fraction=st.floats(0, 1),
)
def test_botocore_presigned_urls_verify(
    key: str, path_safe: str, params: dict[str, str], extra: dict[str, str], secret: str,
    token: str | None, region: str, when: datetime.datetime, expires: int, fraction: float,
) -> None:
    """Whatever URL botocore presigns, verify() accepts until it expires; changes are refused."""
    query = _query_string(list(params.items()), [True] * len(params))
    url = f"https://s3.example.com/bucket/{quote(key, safe=path_safe)}"
    req = presigned(url + ("?" + query if query else ""), expires, when, extra, token, secret,
                    region)
    secrets = {AK: secret}
    now = when + datetime.timedelta(seconds=int(expires * fraction))

    verified = run(req, now=now, secrets=secrets, regions=[region])
    assert verified.payload_hash == sigv4.UNSIGNED_PAYLOAD
    assert verified.access_key == AK

    for changed in _mutations(req):
        refused(changed, "SignatureDoesNotMatch", 403, now=now, secrets=secrets, regions=[region])
    refused(req, "SignatureDoesNotMatch", 403, now=now, secrets={AK: secret + "x"},
            regions=[region])
    refused(req, "AccessDenied", 403, now=when + datetime.timedelta(seconds=expires + 1),
            secrets=secrets, regions=[region])
