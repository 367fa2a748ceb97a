"""Nobody gets in: every S3 operation, badly authenticated, is refused before the upstream.

For each operation in botocore's S3 model a real botocore client sends the
request as it would for a user -- unsigned, signed with a key the relay does
not know, signed with a known key and the wrong secret, and correctly signed
but changed on its way (the path, after signing); and presigned with the
wrong secret, for every operation botocore presigns; and properly signed by
a ``read_only`` key, for every operation whose name says it changes
something.  Each must come back as the S3 error for what is wrong, and a
TCP tap between the relay and the S3 server must see not one byte of any of
them.  The operations are the relay's whole surface as clients see it: a
table row classified wrongly, a check skipped for one method or
subresource, shows up here.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import botocore.session
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from tests import harness
from tests.integration.conftest import CLIENT_KEY, relay_config
from tests.tcptap import TcpTap
from tests.unit.test_operations import MODEL, sample

#: Operations botocore sends to another host (a prefix on the endpoint's).
ELSEWHERE = {name for name in MODEL.operation_names
             if (MODEL.operation_model(name).endpoint or {}).get("hostPrefix")}

#: How a request is spoiled, and the S3 error each must get.
WAYS = {
    "anonymous": "AccessDenied",
    "unknown key": "InvalidAccessKeyId",
    "wrong secret": "SignatureDoesNotMatch",
    "changed after signing": "SignatureDoesNotMatch",
}

#: A client with ``read_only = yes``, properly signing.
READER = ("AKIDFAILCLOSEDREADER", "fail-closed-reader-secret/abcdefghijk")
#: What the names say changes something (botocore's verbs), whatever the relay's table says.
CHANGING = ("Put", "Delete", "Create", "Copy", "Upload", "Complete", "Abort", "Restore",
            "Update", "Rename")

#: Signed for another service (``s3express``): refused for the credential scope
#: before the key is looked at, as S3 does.
OTHER_SCOPE = {"ListDirectoryBuckets"}


@pytest.fixture(scope="module")
def guarded(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
            tap: TcpTap) -> Iterator[harness.Relay]:
    port = harness.free_port()
    text = relay_config(
        s3, f"tcp:{port}:interface=127.0.0.1", self_key, f"http://127.0.0.1:{tap.port}"
    ) + (f"\n[client:reader]\naccess_key_id = {READER[0]}\nsecret_access_key = {READER[1]}\n"
         "credentials = main\nread_only = yes\n")
    relay = harness.start_relay(workdir, text, port)
    yield relay
    harness.stop(relay.process)


def _change_path(request: Any, **_: Any) -> None:
    """After signing, before sending: one more character in the path."""
    scheme, rest = request.url.split("://", 1)
    host, _, path = rest.partition("/")
    request.url = f"{scheme}://{host}/{path.replace('/', '/x', 1) if '/' in path else path + 'x'}"


def client_for(url: str, way: str) -> Any:
    key = {"unknown key": ("AKIDNOBODYKNOWS00001", "whatever"), "read-only": READER,
           "wrong secret": (CLIENT_KEY[0], "not-" + CLIENT_KEY[1])}.get(way, CLIENT_KEY)
    config = Config(
        signature_version=UNSIGNED if way == "anonymous" else "s3v4",
        s3={"addressing_style": "path"}, retries={"max_attempts": 1},
        parameter_validation=False, connect_timeout=10, read_timeout=30,
    )
    made = botocore.session.get_session().create_client(
        "s3", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id=key[0], aws_secret_access_key=key[1], config=config,
    )
    if way == "changed after signing":
        made.meta.events.register("before-send.s3", _change_path)
    return made


@pytest.fixture(scope="module")
def clients(guarded: harness.Relay) -> dict[str, Any]:
    return {way: client_for(guarded.url, way) for way in (*WAYS, "read-only")}


def params(operation: str) -> dict[str, Any]:
    shape = MODEL.operation_model(operation).input_shape
    if shape is None:
        return {}
    return {m: sample(s, m) for m, s in shape.members.items() if m in shape.required_members}


def python_name(made: Any, operation: str) -> str:
    return {api: py for py, api in made.meta.method_to_api_mapping.items()}[operation]


def call(made: Any, operation: str) -> ClientError:
    with pytest.raises(ClientError) as refused:
        getattr(made, python_name(made, operation))(**params(operation))
    return refused.value


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("operation", sorted(set(MODEL.operation_names) - ELSEWHERE))
def test_refused_before_the_upstream(operation: str, way: str, clients: dict[str, Any],
                                     tap: TcpTap) -> None:
    before = tap.sent_up, tap.connections
    error = call(clients[way], operation).response
    status, code = 403, WAYS[way]
    if operation in OTHER_SCOPE and way != "anonymous":
        status, code = 400, "AuthorizationHeaderMalformed"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status, error
    if MODEL.operation_model(operation).http["method"] != "HEAD":  # no body to say why
        assert error["Error"]["Code"] == code, error
        assert error["ResponseMetadata"]["RequestId"], error
    # Had it gone up, the tap counted it before the answer could come back.
    assert (tap.sent_up, tap.connections) == before, f"{operation} ({way}) reached the upstream"


@pytest.mark.parametrize("operation", sorted(
    name for name in set(MODEL.operation_names) - ELSEWHERE - OTHER_SCOPE
    if name.startswith(CHANGING)))
def test_read_only_key_changes_nothing(operation: str, clients: dict[str, Any],
                                       tap: TcpTap) -> None:
    """Properly signed by a ``read_only`` key: every operation named for a change is refused."""
    before = tap.sent_up, tap.connections
    error = call(clients["read-only"], operation).response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403, error
    if MODEL.operation_model(operation).http["method"] != "HEAD":
        assert error["Error"]["Code"] == "AccessDenied", error
    assert (tap.sent_up, tap.connections) == before, f"{operation} reached the upstream"


def _presignable(made: Any, name: str) -> bool:
    method = MODEL.operation_model(name).http["method"]
    try:
        made.generate_presigned_url(python_name(made, name), Params=params(name),
                                    HttpMethod=method)
    except Exception:  # botocore cannot presign operations with a body to checksum
        return False
    return True


def _presignable_operations() -> list[str]:
    made = client_for("http://127.0.0.1:9", "wrong secret")
    return sorted(name for name in set(MODEL.operation_names) - ELSEWHERE
                  if _presignable(made, name))


#: The operations botocore presigns (86 of 115; not those with a body to checksum).
PRESIGNABLE = _presignable_operations()


@pytest.mark.parametrize("operation", PRESIGNABLE)
def test_presigned_with_the_wrong_secret_refused_before_the_upstream(
    operation: str, clients: dict[str, Any], tap: TcpTap
) -> None:
    """The query-string form of the same: a URL presigned with the wrong secret."""
    made = clients["wrong secret"]
    method = MODEL.operation_model(operation).http["method"]
    url = made.generate_presigned_url(python_name(made, operation), Params=params(operation),
                                      ExpiresIn=300, HttpMethod=method)
    before = tap.sent_up, tap.connections
    request = urllib.request.Request(url, method=method,
                                     data=b"" if method in ("PUT", "POST") else None)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    status = 400 if operation in OTHER_SCOPE else 403
    assert refused.value.code == status
    if method != "HEAD":
        body = refused.value.read()
        code = b"AuthorizationQueryParametersError" if status == 400 else b"SignatureDoesNotMatch"
        assert b"<Code>" + code + b"</Code>" in body, body
    assert (tap.sent_up, tap.connections) == before, f"{operation} reached the upstream"


def test_the_same_requests_signed_properly_do_reach_it(guarded: harness.Relay,
                                                       tap: TcpTap) -> None:
    """The control: the tap does see a correctly signed request."""
    proper = client_for(guarded.url, "proper")
    before = tap.sent_up
    proper.list_buckets()
    assert harness.eventually(lambda: tap.sent_up > before)
